"""keys: list, generate, rotate, retire."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from authserver import audit
from authserver.cli.common import cli_actor, command, database, out, show_time
from authserver.clock import SystemClock
from authserver.config import Settings
from authserver.keyring import Keyring


def _keyring(settings: Settings) -> Keyring:
    return Keyring(Path(settings.keys_dir), settings.tokens.access_token_lifetime)


def _audit(settings: Settings, action: str, kid: str, details: dict[str, Any]) -> None:
    """Key files are the keyring's store; the audit log is the database's."""
    with database(settings).session(write=True) as session:
        audit.record(session, cli_actor(), action, kid, SystemClock().now(), details=details)


def cmd_keys_list(args: argparse.Namespace, settings: Settings) -> int:
    now = SystemClock().now()
    ring = _keyring(settings)
    ring.load(now)
    views = ring.snapshot(now).views
    rows = [{"kid": v.kid, "alg": v.alg, "state": v.state, "created_at": v.created_at,
             "activate_at": v.activate_at, "stops_signing_at": v.stops_signing_at,
             "unpublish_at": v.unpublish_at} for v in views]
    lines = [f"{'KID':44} {'ALG':6} {'STATE':9} {'SIGNS FROM':20} {'SIGNS UNTIL':20} UNPUBLISHED"]
    lines += [f"{v.kid:44} {v.alg:6} {v.state:9} {show_time(v.activate_at):20} "
              f"{show_time(v.stops_signing_at):20} {show_time(v.unpublish_at)}" for v in views]
    out(args, rows, "\n".join(lines) if views else "no keys")
    return 0


def cmd_keys_generate(args: argparse.Namespace, settings: Settings) -> int:
    now = SystemClock().now()
    ring = _keyring(settings)
    ring.load(now)
    key = ring.generate(args.alg or settings.signing.algorithm, now, activate_at=None)
    _audit(settings, "signing_key.generate", key.kid, {"alg": key.alg})
    out(args, {"kid": key.kid, "alg": key.alg, "state": "published"},
         f"generated {key.alg} key {key.kid}: published, standby (use `keys rotate --kid` to "
         "make it sign)")
    return 0


def cmd_keys_rotate(args: argparse.Namespace, settings: Settings) -> int:
    clock = SystemClock()
    key = _keyring(settings).rotate(args.alg or settings.signing.algorithm, clock.now(),
                                    settings.signing.propagation_delay, kid=args.kid,
                                    clock=clock.now)
    _audit(settings, "signing_key.rotate", key.kid,
           {"alg": key.alg, "activate_at": key.activate_at})
    out(args, {"kid": key.kid, "alg": key.alg, "activate_at": key.activate_at},
         f"key {key.kid} ({key.alg}) is published and signs from {show_time(key.activate_at)}; "
         "the current key retires then")
    return 0


def cmd_keys_retire(args: argparse.Namespace, settings: Settings) -> int:
    key = _keyring(settings).retire(args.kid, SystemClock().now())
    _audit(settings, "signing_key.retire", key.kid, {})
    out(args, {"kid": key.kid, "retired_at": key.retired_at},
         f"key {key.kid} no longer signs; it stays published until its tokens have expired")
    return 0


def add_commands(sub: Any) -> None:
    keys = sub.add_parser("keys", help="signing keys").add_subparsers(dest="sub", required=True)
    command(keys, "list", cmd_keys_list, "list keys and their lifecycle state")
    gen = command(keys, "generate", cmd_keys_generate, "add a published standby key")
    gen.add_argument("--alg", choices=["RS256", "ES256", "EdDSA", "PS256"])
    rot = command(keys, "rotate", cmd_keys_rotate,
                  "schedule a new (or the standby --kid) key to sign after the propagation delay")
    rot.add_argument("--alg", choices=["RS256", "ES256", "EdDSA", "PS256"])
    rot.add_argument("--kid", help="a standby key to promote instead of generating one")
    ret = command(keys, "retire", cmd_keys_retire, "stop a key from signing")
    ret.add_argument("kid")
