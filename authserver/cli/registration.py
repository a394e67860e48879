"""registration-tokens: create, list, revoke; registration: reap."""

from __future__ import annotations

import argparse
from typing import Any

from authserver import registration
from authserver.cli.clients import scope_list
from authserver.cli.common import cli_actor, command, database, out, parse_seconds, show_time
from authserver.clock import SystemClock
from authserver.config import Settings
from authserver.scopes import ScopeCatalog


def cmd_tokens_create(args: argparse.Namespace, settings: Settings) -> int:
    expires_in = parse_seconds(args.expires_in, "--expires-in") if args.expires_in else None
    with database(settings).session(write=True) as session:
        new = registration.create_access_token(
            session, ScopeCatalog(settings), SystemClock().now(),
            scopes=scope_list(args.scope) or tuple(settings.registration.open_scopes),
            max_uses=args.max_uses, expires_in=expires_in, description=args.description or "",
            actor=cli_actor(),
        )
    view = new.view
    out(args, {**view.public_dict(view.created_at), "token": new.token},
        f"initial access token {view.id}\n"
        f"  scope      {' '.join(view.scopes) or '(none)'}\n"
        f"  max uses   {view.max_uses or 'unlimited'}\n"
        f"  expires    {show_time(view.expires_at) if view.expires_at else 'never'}\n\n"
        f"{new.token}\n\nThe token is shown only now. Software registers with "
        "`Authorization: Bearer <token>`.")
    return 0


def cmd_tokens_list(args: argparse.Namespace, settings: Settings) -> int:
    now = SystemClock().now()
    with database(settings).session() as session:
        views = registration.list_access_tokens(session)
    lines = [f"{'ID':22} {'STATE':8} {'USES':9} {'EXPIRES':20} {'SCOPE':24} DESCRIPTION"]
    lines += [f"{v.id:22} {v.state(now):8} {f'{v.uses}/{v.max_uses or chr(8734)}':9} "
              f"{show_time(v.expires_at):20} {' '.join(v.scopes)[:24]:24} {v.description}"
              for v in views]
    out(args, [v.public_dict(now) for v in views],
        "\n".join(lines) if views else "no initial access tokens")
    return 0


def cmd_tokens_revoke(args: argparse.Namespace, settings: Settings) -> int:
    with database(settings).session(write=True) as session:
        view = registration.revoke_access_token(session, args.id, SystemClock().now(),
                                                cli_actor())
    out(args, view.public_dict(SystemClock().now()),
        f"initial access token {view.id} is revoked; clients it registered stay")
    return 0


def cmd_reap(args: argparse.Namespace, settings: Settings) -> int:
    now = SystemClock().now()
    rules = settings.registration
    margin = settings.cache.last_used_flush_interval
    with database(settings).session(write=True) as session:
        if args.dry_run:
            stale = registration.stale_clients(session, rules, now, margin)
            count = len(stale)
            ids = [client_id for client_id, _ in stale]
        else:
            count = registration.reap(session, rules, now, margin)
            ids = []
    verb = "would reap" if args.dry_run else "reaped"
    out(args, {"reaped": count, "dry_run": args.dry_run, "client_ids": ids},
        "\n".join([f"{verb} {count} unused self-registered client(s)", *ids]))
    return 0


def add_commands(sub: Any) -> None:
    tokens = sub.add_parser(
        "registration-tokens", help="initial access tokens for client registration"
    ).add_subparsers(dest="sub", required=True)
    create = command(tokens, "create", cmd_tokens_create,
                     "create an initial access token; prints it once")
    create.add_argument("--scope", action="append",
                        help="scopes its clients may hold (default: registration.open_scopes)")
    create.add_argument("--max-uses", type=int, metavar="N",
                        help="how many clients it may register (default: unlimited)")
    create.add_argument("--expires-in", metavar="DURATION",
                        help="e.g. 3600, 15m, 24h, 7d (default: never)")
    create.add_argument("--description")
    command(tokens, "list", cmd_tokens_list, "list initial access tokens (never the tokens)")
    revoke = command(tokens, "revoke", cmd_tokens_revoke, "stop a token registering clients")
    revoke.add_argument("id")

    reg = sub.add_parser("registration", help="self-registered clients").add_subparsers(
        dest="sub", required=True)
    reap = command(reg, "reap", cmd_reap,
                   "delete self-registered clients that never got a token or went idle")
    reap.add_argument("--dry-run", action="store_true", help="list them, delete nothing")
