"""clients: create, list, show, update, disable/enable, delete, rotate-secret."""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from authserver import clients, registration
from authserver.cli.common import (
    CliError,
    cli_actor,
    command,
    database,
    out,
    rate_limit_pairs,
    show_time,
)
from authserver.clock import SystemClock
from authserver.config import Settings
from authserver.scopes import ScopeCatalog


def _client_text(record: clients.ClientRecord) -> str:
    data = record.public_dict()
    return "\n".join(f"{k:27} {v if v not in (None, [], '') else '-'}" for k, v in data.items()
                     if k != "jwks")


def _jwks_file(path: str | None) -> dict[str, Any] | None:
    if path is None:
        return None
    try:
        value = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise CliError(f"--jwks-file: cannot read a JSON JWK Set from {path}: {exc}") from exc
    return value if isinstance(value, dict) else {"keys": value}


def scope_list(values: Sequence[str] | None) -> tuple[str, ...] | None:
    if values is None:
        return None
    return tuple(s for value in values for s in value.split() if s)


def cmd_clients_create(args: argparse.Namespace, settings: Settings) -> int:
    jwks = _jwks_file(args.jwks_file)
    method: clients.AuthMethod = args.auth_method or (
        "private_key_jwt" if jwks or args.jwks_uri else "client_secret_basic")
    spec = clients.ClientSpec(
        name=args.name, scopes=scope_list(args.scope) or (), ip_allow=tuple(args.ip_allow or ()),
        resources=tuple(args.resource or ()), auth_method=method, jwks=jwks,
        jwks_uri=args.jwks_uri, org_id=args.org,
        rate_limits=rate_limit_pairs(args.rate_limit) or (),
        grant_types=tuple(args.grant_type or ("client_credentials",)),
        redirect_uris=tuple(args.redirect_uri or ()),
    )
    with database(settings).session(write=True) as session:
        record, secret = clients.create_client(session, ScopeCatalog(settings), spec,
                                               SystemClock().now(), actor=cli_actor())
    data = {**record.public_dict(), "client_secret": secret}
    text = _client_text(record)
    if secret:
        text += f"\nclient_secret               {secret}\n\nThe secret is shown only now; store it."
    out(args, data, text)
    return 0


def cmd_clients_list(args: argparse.Namespace, settings: Settings) -> int:
    if args.registered:
        return _list_registered(args, settings)
    with database(settings).session() as session:
        records = clients.list_clients(session, args.org)
    lines = [f"{'CLIENT_ID':28} {'STATUS':9} {'METHOD':20} {'NAME':24} SCOPE"]
    lines += [f"{r.client_id:28} {r.status:9} {r.auth_method:20} {r.name[:24]:24} "
              f"{' '.join(sorted(r.scopes))}" for r in records]
    out(args, [r.public_dict() for r in records], "\n".join(lines) if records else "no clients")
    return 0


def _list_registered(args: argparse.Namespace, settings: Settings) -> int:
    with database(settings).session() as session:
        found = registration.list_registered(session)
    lines = [f"{'CLIENT_ID':28} {'STATUS':9} {'NAME':22} {'SOFTWARE':24} {'LAST USED':20} "
             "ORIGIN"]
    lines += [f"{r.client.client_id:28} {r.client.status:9} {r.client.name[:22]:22} "
              f"{r.software[:24]:24} {show_time(r.client.last_used_at):20} {r.origin}"
              for r in found]
    out(args, [r.public_dict() for r in found],
        "\n".join(lines) if found else "no self-registered clients")
    return 0


def cmd_clients_show(args: argparse.Namespace, settings: Settings) -> int:
    with database(settings).session() as session:
        record = clients.get_client(session, args.client_id)
    out(args, record.public_dict(), _client_text(record))
    return 0


def cmd_clients_update(args: argparse.Namespace, settings: Settings) -> int:
    change = clients.ClientUpdate(
        name=args.name, scopes=scope_list(args.scope),
        ip_allow=() if args.clear_ip_allow else (tuple(args.ip_allow) if args.ip_allow else None),
        resources=() if args.clear_resources else (
            tuple(args.resource) if args.resource else None),
        rate_limits=() if args.clear_rate_limits else rate_limit_pairs(args.rate_limit),
    )
    with database(settings).session(write=True) as session:
        record = clients.update_client(session, ScopeCatalog(settings), args.client_id, change,
                                       SystemClock().now(), cli_actor())
    out(args, record.public_dict(), _client_text(record))
    return 0


def cmd_clients_disable(args: argparse.Namespace, settings: Settings) -> int:
    with database(settings).session(write=True) as session:
        record = clients.set_disabled(session, args.client_id, args.disable, SystemClock().now(),
                                      cli_actor())
    out(args, record.public_dict(), f"client {record.client_id} is {record.status}")
    return 0


def cmd_clients_delete(args: argparse.Namespace, settings: Settings) -> int:
    with database(settings).session(write=True) as session:
        clients.delete_client(session, args.client_id, SystemClock().now(), cli_actor())
    out(args, {"deleted": args.client_id},
         f"client {args.client_id} deleted; its tokens are cut off")
    return 0


def cmd_clients_rotate_secret(args: argparse.Namespace, settings: Settings) -> int:
    with database(settings).session(write=True) as session:
        secret = clients.rotate_secret(session, args.client_id, SystemClock().now(), cli_actor())
    out(args, {"client_id": args.client_id, "client_secret": secret},
         f"client_secret {secret}\n\nThe old secret no longer works. This one is shown only now.")
    return 0


def add_commands(sub: Any) -> None:
    cl = sub.add_parser("clients", help="OAuth clients").add_subparsers(dest="sub", required=True)
    create = command(cl, "create", cmd_clients_create, "create a client; prints its secret once")
    create.add_argument("--name", required=True)
    create.add_argument("--scope", action="append", help='scopes, e.g. "a b" (repeatable)')
    create.add_argument("--ip-allow", action="append", metavar="CIDR")
    create.add_argument("--resource", action="append", metavar="URL")
    create.add_argument("--jwks-uri", metavar="URL", help="private_key_jwt keys by URL")
    create.add_argument("--jwks-file", metavar="PATH", help="private_key_jwt keys (JWK Set)")
    create.add_argument("--auth-method", choices=[*clients.AUTH_METHODS, "none"],
                        help="none: a public client (authorization code with PKCE only)")
    create.add_argument("--grant-type", action="append",
                        choices=["client_credentials", "authorization_code", "refresh_token"],
                        help="repeatable; default client_credentials")
    create.add_argument("--redirect-uri", action="append", metavar="URL",
                        help="for authorization_code (repeatable; https, or http on loopback)")
    create.add_argument("--org", default="org_default")
    create.add_argument("--rate-limit", action="append", metavar="KIND=RATE",
                        help="hourly=1000/hour or burst=60/minute (repeatable; default: "
                             "[rate_limits] client_hourly and client_burst)")
    lst = command(cl, "list", cmd_clients_list, "list clients")
    lst.add_argument("--org")
    lst.add_argument("--registered", action="store_true",
                     help="only self-registered (RFC 7591) clients, with software, last use "
                          "and origin")
    show = command(cl, "show", cmd_clients_show, "show one client")
    show.add_argument("client_id")
    upd = command(cl, "update", cmd_clients_update,
                  "change a client; scope, IP or resource changes cut off its tokens")
    upd.add_argument("client_id")
    upd.add_argument("--name")
    upd.add_argument("--scope", action="append")
    upd.add_argument("--ip-allow", action="append", metavar="CIDR")
    upd.add_argument("--clear-ip-allow", action="store_true")
    upd.add_argument("--resource", action="append", metavar="URL")
    upd.add_argument("--clear-resources", action="store_true")
    limits = upd.add_mutually_exclusive_group()
    limits.add_argument("--rate-limit", action="append", metavar="KIND=RATE",
                        help="replaces the client's own limits (repeatable)")
    limits.add_argument("--clear-rate-limits", action="store_true",
                        help="back to the [rate_limits] defaults")
    for name, disable in (("disable", True), ("enable", False)):
        p = command(cl, name, cmd_clients_disable, f"{name} a client")
        p.add_argument("client_id")
        p.set_defaults(disable=disable)
    delete = command(cl, "delete", cmd_clients_delete, "delete a client and cut off its tokens")
    delete.add_argument("client_id")
    rs = command(cl, "rotate-secret", cmd_clients_rotate_secret, "issue a new client secret")
    rs.add_argument("client_id")
