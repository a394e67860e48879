"""users: create, list, set-password, disable, enable, delete (also `admin create-user`); init:
the first admin key."""

from __future__ import annotations

import argparse
import getpass
import sys
from pathlib import Path
from typing import Any

from sqlalchemy import select

from authserver import apikeys, users
from authserver.cli.common import CliError, cli_actor, command, database, out, show_time
from authserver.clock import SystemClock
from authserver.config import Settings
from authserver.keyring import Keyring
from authserver.people import accounts
from authserver.scopes import ScopeCatalog
from authserver.storage.models import DEFAULT_ORG_ID, ApiKey


def read_password(from_stdin: bool) -> str:
    """From standard input (one line) when asked or when it is not a terminal; otherwise
    prompted twice without echo."""
    if from_stdin or not sys.stdin.isatty():
        password = sys.stdin.readline().rstrip("\r\n")
    else:
        password = getpass.getpass("Password: ")
        if getpass.getpass("Repeat it: ") != password:
            raise CliError("the passwords differ")
    users.check_password(password)
    return password


def cmd_users_create(args: argparse.Namespace, settings: Settings) -> int:
    password = read_password(args.password_stdin)
    with database(settings).session(write=True) as session:
        record = users.create_user(session, args.username, password, SystemClock().now(),
                                   cli_actor(), role=args.role, org_id=args.org,
                                   email=args.email, name=args.name or "")
    out(args, record.public_dict(),
        f"user {record.username} ({record.id}, {record.role}) created in {record.org_id}")
    return 0


def cmd_users_list(args: argparse.Namespace, settings: Settings) -> int:
    with database(settings).session() as session:
        records = users.list_users(session, args.org)
    lines = [f"{'ID':22} {'ROLE':6} {'STATUS':9} {'ORG':22} {'LAST LOGIN':20} USERNAME"]
    lines += [f"{r.id:22} {r.role:6} {r.status:9} {r.org_id:22} "
              f"{show_time(r.last_login_at):20} {r.username}" for r in records]
    out(args, [r.public_dict() for r in records], "\n".join(lines) if records else "no users")
    return 0


def cmd_users_set_password(args: argparse.Namespace, settings: Settings) -> int:
    password = read_password(args.password_stdin)
    with database(settings).session(write=True) as session:
        found = [u for u in users.list_users(session) if u.username == args.username.lower()]
        if not found:
            raise CliError(f"no user {args.username}")
        users.set_password(session, found[0].id, password, SystemClock().now(), cli_actor())
    out(args, {"id": found[0].id}, f"password of {found[0].username} changed; lock cleared")
    return 0


def cmd_users_status(args: argparse.Namespace, settings: Settings) -> int:
    """Disabling cuts off every token the person holds and ends their sessions."""
    status = "disabled" if args.sub == "disable" else "active"
    with database(settings).session(write=True) as session:
        found = users.user_by_username(session, args.username)
        record = accounts.set_status(session, found.id, status, SystemClock().now(),
                                     cli_actor())
    note = "; every token they held is cut off" if status == "disabled" else ""
    out(args, record.public_dict(), f"user {record.username} ({record.id}) {status}{note}")
    return 0


def cmd_users_delete(args: argparse.Namespace, settings: Settings) -> int:
    with database(settings).session(write=True) as session:
        found = users.user_by_username(session, args.username)
        record = accounts.delete_user(session, found.id, SystemClock().now(), cli_actor())
    out(args, {"id": record.id, "deleted": True},
        f"user {record.username} ({record.id}) deleted; every token they held is cut off")
    return 0


def cmd_init(args: argparse.Namespace, settings: Settings) -> int:
    """Migrate, make sure a signing key exists, and create the first operator API key (`*`
    in the operator organisation), printed once. Refused once such a key exists."""
    now = SystemClock().now()
    keyring = Keyring(Path(settings.keys_dir), settings.tokens.access_token_lifetime)
    keyring.ensure_signer(settings.signing.algorithm, now)
    with database(settings).session(write=True) as session:
        existing = session.scalars(select(ApiKey.id).where(
            ApiKey.org_id == DEFAULT_ORG_ID, ApiKey.status == "active")).all()
        if existing and not args.force:
            raise CliError(f"the operator organisation already has API keys ({', '.join(existing)}"
                           "); use `api-keys create`, or `init --force` for another admin key")
        record, key = apikeys.create_key(
            session, ScopeCatalog(settings),
            apikeys.ApiKeySpec(name=args.name, org_id=DEFAULT_ORG_ID, permissions=("*",)),
            settings.api_keys.prefix, now, cli_actor(), action="api_key.init")
    if args.json:
        out(args, {"api_key": record.public_dict(now), "key": key}, "")
    else:
        print(f"admin API key {record.id} created (permission *, organisation {DEFAULT_ORG_ID}).")
        print("It is shown only now; store it:", file=sys.stderr)
        print(key)
    return 0


def _create_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--username", required=True)
    p.add_argument("--role", choices=list(users.ROLES), default="admin")
    p.add_argument("--org", default=DEFAULT_ORG_ID)
    p.add_argument("--email")
    p.add_argument("--name")
    p.add_argument("--password-stdin", action="store_true",
                   help="read the password from the first line of standard input")


def add_commands(sub: Any) -> None:
    grp = sub.add_parser("users", help="people (admin UI operators, users of the "
                         "interactive flows)").add_subparsers(dest="sub", required=True)
    _create_options(command(grp, "create", cmd_users_create,
                            "create a user; the password is prompted (or read from stdin)"))
    lst = command(grp, "list", cmd_users_list, "list users")
    lst.add_argument("--org")
    pw = command(grp, "set-password", cmd_users_set_password,
                 "set a user's password (and clear a lock)")
    pw.add_argument("--username", required=True)
    pw.add_argument("--password-stdin", action="store_true")
    for name, handler, help_ in (
            ("disable", cmd_users_status, "disable a user: every token they hold is cut off "
             "and their sessions end"),
            ("enable", cmd_users_status, "enable a user again (cut-off tokens stay dead)"),
            ("delete", cmd_users_delete, "delete a user; every token they hold is cut off")):
        command(grp, name, handler, help_).add_argument("username")
    admin = sub.add_parser("admin", help="administration shortcuts").add_subparsers(
        dest="sub", required=True)
    _create_options(command(admin, "create-user", cmd_users_create,
                            "create an admin user (as `users create`)"))
    init = command(sub, "init", cmd_init,
                   "first start: migrate, a signing key, and an admin API key printed once")
    init.add_argument("--name", default="admin (init)")
    init.add_argument("--force", action="store_true",
                      help="create another admin key even if the operator has keys")
