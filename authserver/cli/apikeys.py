"""api-keys: create, list, show, update, rotate, revoke. A key is printed once, when it is made."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from authserver import apikeys, organizations
from authserver.apikeys import ApiKeyRecord
from authserver.cli.common import (
    CliError,
    cli_actor,
    command,
    database,
    out,
    parse_seconds,
    parse_time,
    rate_limit_pairs,
    show_time,
)
from authserver.clock import SystemClock
from authserver.config import Settings
from authserver.scopes import ScopeCatalog

SHOWN_ONCE = ("authserver: this API key is shown only now and will not be shown again; "
              "store it in a secret manager.")
_TIMES = ("expires_at", "created_at", "updated_at", "revoked_at", "last_used_at")


def _key_text(record: ApiKeyRecord, now: float) -> str:
    lines = []
    for name, value in record.public_dict(now).items():
        if name in _TIMES:
            value = show_time(value)
        elif name == "rate_limits":
            value = " ".join(f"{k}={v}" for k, v in sorted(value.items())) or "(defaults)"
        elif isinstance(value, list):
            value = " ".join(value)
        lines.append(f"{name:13} {value if value not in (None, '') else '-'}")
    return "\n".join(lines)


def _key_id(value: str, settings: Settings) -> str:
    """The id to act on; a pasted key is refused without echoing it."""
    if apikeys.looks_like_key(value, settings.api_keys.prefix):
        raise CliError("expected a key id (key_...), not the key itself; the key is not "
                       "repeated here, and if it was typed into a shared shell history, "
                       "rotate it")
    return value


def _expiry(args: argparse.Namespace, now: float) -> float | None:
    if args.expires_in is not None:
        return now + parse_seconds(args.expires_in, "--expires-in")
    if args.expires_at is not None:
        return parse_time(args.expires_at, "--expires-at")
    return None


def _show_key(args: argparse.Namespace, record: ApiKeyRecord, key: str, now: float,
              extra: dict[str, Any] | None = None, note: str = "") -> None:
    """The one place a key is printed: stdout, with the warning on stderr in text mode."""
    data = {"api_key": record.public_dict(now), "key": key, **(extra or {})}
    text = f"{_key_text(record, now)}\n\n{key}"
    out(args, data, f"{note}\n\n{text}" if note else text)
    if not args.json:
        print(SHOWN_ONCE, file=sys.stderr)


def cmd_keys_create(args: argparse.Namespace, settings: Settings) -> int:
    now = SystemClock().now()
    spec = apikeys.ApiKeySpec(
        name=args.name, org_id=args.org, permissions=tuple(args.permission),
        environment=args.environment, ip_allow=tuple(args.ip_allow or ()),
        expires_at=_expiry(args, now), rate_limits=rate_limit_pairs(args.rate_limit) or (),
    )
    with database(settings).session(write=True) as session:
        record, key = apikeys.create_key(session, ScopeCatalog(settings), spec,
                                         settings.api_keys.prefix, now, cli_actor())
    _show_key(args, record, key, now)
    return 0


def cmd_keys_list(args: argparse.Namespace, settings: Settings) -> int:
    now = SystemClock().now()
    with database(settings).session() as session:
        if args.org is not None:
            organizations.get_org(session, args.org)  # a mistyped id is an error, not "none"
        records = apikeys.list_keys(session, args.org, include_revoked=args.include_revoked)
    lines = [f"{'ID':16} {'STATUS':8} {'ENV':4} {'ORG':20} {'EXPIRES':20} {'NAME':24} "
             "PERMISSIONS"]
    lines += [f"{r.id:16} {r.state(now):8} {r.environment:4} {r.org_id:20} "
              f"{show_time(r.expires_at):20} {r.name[:24]:24} {' '.join(r.permissions)}"
              for r in records]
    out(args, [r.public_dict(now) for r in records],
        "\n".join(lines) if records else "no API keys")
    return 0


def cmd_keys_show(args: argparse.Namespace, settings: Settings) -> int:
    now = SystemClock().now()
    with database(settings).session() as session:
        record = apikeys.get_key(session, _key_id(args.key_id, settings))
    out(args, record.public_dict(now), _key_text(record, now))
    return 0


def cmd_keys_update(args: argparse.Namespace, settings: Settings) -> int:
    now = SystemClock().now()
    if not any((args.name is not None, args.permission, args.ip_allow, args.clear_ip_allow,
                args.expires_in, args.expires_at, args.no_expiry, args.rate_limit,
                args.clear_rate_limits)):
        raise CliError("nothing to change: give --name, --permission, --ip-allow, "
                       "--clear-ip-allow, --expires-in, --expires-at, --no-expiry, "
                       "--rate-limit or --clear-rate-limits")
    change = apikeys.ApiKeyUpdate(
        name=args.name,
        permissions=tuple(args.permission) if args.permission else None,
        ip_allow=() if args.clear_ip_allow else (tuple(args.ip_allow) if args.ip_allow else None),
        expires_at=_expiry(args, now), clear_expiry=args.no_expiry,
        rate_limits=() if args.clear_rate_limits else rate_limit_pairs(args.rate_limit),
    )
    with database(settings).session(write=True) as session:
        record = apikeys.update_key(session, ScopeCatalog(settings),
                                    _key_id(args.key_id, settings), change, now, cli_actor())
    out(args, record.public_dict(now), _key_text(record, now))
    return 0


def cmd_keys_rotate(args: argparse.Namespace, settings: Settings) -> int:
    now = SystemClock().now()
    grace = parse_seconds(args.grace_period, "--grace-period", zero_ok=True)
    key_id = _key_id(args.key_id, settings)
    with database(settings).session(write=True) as session:
        record, key = apikeys.rotate_key(session, key_id, settings.api_keys.prefix, now,
                                         cli_actor(), grace=grace)
        old = apikeys.get_key(session, key_id)
    if old.state(now) == "active":
        note = f"{key_id} keeps working until {show_time(old.expires_at)}; its replacement:"
    else:
        note = f"{key_id} is revoked; its replacement:"
    _show_key(args, record, key, now, {"previous": old.public_dict(now)}, note)
    return 0


def cmd_keys_revoke(args: argparse.Namespace, settings: Settings) -> int:
    now = SystemClock().now()
    with database(settings).session(write=True) as session:
        record = apikeys.revoke_key(session, _key_id(args.key_id, settings), now, cli_actor())
    out(args, record.public_dict(now), f"API key {record.id} is revoked")
    return 0


def _expiry_options(parser: argparse.ArgumentParser, *, clearable: bool) -> None:
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--expires-in", metavar="DURATION",
                       help="e.g. 3600, 15m, 24h, 90d (default: never)")
    group.add_argument("--expires-at", metavar="TIME",
                       help="ISO 8601 (UTC unless it has an offset) or seconds since the epoch")
    if clearable:
        group.add_argument("--no-expiry", action="store_true", help="remove the expiry")


def add_commands(sub: Any) -> None:
    keys = sub.add_parser("api-keys", help="API keys of organisations").add_subparsers(
        dest="sub", required=True)
    create = command(keys, "create", cmd_keys_create, "create an API key; prints it once")
    create.add_argument("--org", required=True, help="the owning organisation (org_...)")
    create.add_argument("--name", required=True)
    create.add_argument("--permission", action="append", required=True, metavar="P",
                        help="resource.action, *.action, resource.*, * or a named scope "
                             "(repeatable)")
    create.add_argument("--environment", choices=list(apikeys.ENVIRONMENTS), default="live")
    create.add_argument("--ip-allow", action="append", metavar="CIDR")
    _expiry_options(create, clearable=False)
    create.add_argument("--rate-limit", action="append", metavar="KIND=RATE",
                        help="hourly=1000/hour or burst=60/minute (repeatable; default: "
                             "[rate_limits] api_key_hourly and api_key_burst)")

    lst = command(keys, "list", cmd_keys_list, "list API keys (never the keys)")
    lst.add_argument("--org")
    lst.add_argument("--include-revoked", action="store_true")

    show = command(keys, "show", cmd_keys_show, "show one API key (never the key)")
    show.add_argument("key_id")

    upd = command(keys, "update", cmd_keys_update, "change an API key; options given replace")
    upd.add_argument("key_id")
    upd.add_argument("--name")
    upd.add_argument("--permission", action="append", metavar="P",
                     help="replaces every permission (repeatable)")
    ip = upd.add_mutually_exclusive_group()
    ip.add_argument("--ip-allow", action="append", metavar="CIDR",
                    help="replaces the allowlist (repeatable)")
    ip.add_argument("--clear-ip-allow", action="store_true", help="allow every address")
    _expiry_options(upd, clearable=True)
    limits = upd.add_mutually_exclusive_group()
    limits.add_argument("--rate-limit", action="append", metavar="KIND=RATE",
                        help="replaces the key's own limits (repeatable)")
    limits.add_argument("--clear-rate-limits", action="store_true",
                        help="back to the [rate_limits] defaults")

    rotate = command(keys, "rotate", cmd_keys_rotate,
                     "a new key with the same settings, printed once; the old one is revoked "
                     "now or expires after the grace period")
    rotate.add_argument("key_id")
    rotate.add_argument("--grace-period", default="0", metavar="DURATION",
                        help="how long the old key keeps working, e.g. 3600, 15m, 24h "
                             "(default: 0, revoked at once; at most 30d)")

    revoke = command(keys, "revoke", cmd_keys_revoke, "revoke an API key at once")
    revoke.add_argument("key_id")
