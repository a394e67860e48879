"""The `authserver` command: serve, migrate, keys, clients, config."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy.engine import make_url

from authserver import clients
from authserver.clock import SystemClock
from authserver.config import ConfigError, Settings, load_settings
from authserver.config_example import render_example
from authserver.errors import Conflict, Invalid, NotFound
from authserver.keyring import KeyFileError, Keyring
from authserver.scopes import ScopeCatalog
from authserver.storage.db import Database
from authserver.wiring import create_app, prepare_storage

Handler = Callable[[argparse.Namespace, Settings], int]


class CliError(Exception):
    """Reported on stderr with exit status 2."""


def _out(args: argparse.Namespace, data: Any, text: str) -> None:
    print(json.dumps(data, indent=2, sort_keys=True) if args.json else text)


def _time(value: float | None) -> str:
    if value is None:
        return "-"
    return datetime.fromtimestamp(value, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _database(settings: Settings) -> Database:
    db = Database(settings.effective_database_url)
    prepare_storage(db)
    return db


# -- serve / migrate / config ------------------------------------------------------------------


def cmd_serve(args: argparse.Namespace, settings: Settings) -> int:
    import uvicorn

    host = args.host or settings.server.host
    port = args.port if args.port is not None else settings.server.port
    app = create_app(settings)
    uvicorn.run(app, host=host, port=port, log_level=settings.logging.level.lower(),
                proxy_headers=False, server_header=False)
    return 0


def cmd_migrate(args: argparse.Namespace, settings: Settings) -> int:
    db = Database(settings.effective_database_url)
    db.migrate()
    print(f"database is up to date ({db.url.render_as_string(hide_password=True)})")
    return 0


def cmd_config_example(args: argparse.Namespace, settings: Settings) -> int:
    sys.stdout.write(render_example())
    return 0


def cmd_config_show(args: argparse.Namespace, settings: Settings) -> int:
    data = settings.model_dump()
    if settings.database_url:
        url = make_url(settings.database_url)
        data["database_url"] = url.render_as_string(hide_password=True)
    print(json.dumps(data, indent=2))
    return 0


# -- keys ---------------------------------------------------------------------------------------


def _keyring(settings: Settings) -> Keyring:
    return Keyring(Path(settings.keys_dir), settings.tokens.access_token_lifetime)


def cmd_keys_list(args: argparse.Namespace, settings: Settings) -> int:
    now = SystemClock().now()
    ring = _keyring(settings)
    ring.load(now)
    views = ring.snapshot(now).views
    rows = [{"kid": v.kid, "alg": v.alg, "state": v.state, "created_at": v.created_at,
             "activate_at": v.activate_at, "stops_signing_at": v.stops_signing_at,
             "unpublish_at": v.unpublish_at} for v in views]
    lines = [f"{'KID':44} {'ALG':6} {'STATE':9} {'SIGNS FROM':20} {'SIGNS UNTIL':20} UNPUBLISHED"]
    lines += [f"{v.kid:44} {v.alg:6} {v.state:9} {_time(v.activate_at):20} "
              f"{_time(v.stops_signing_at):20} {_time(v.unpublish_at)}" for v in views]
    _out(args, rows, "\n".join(lines) if views else "no keys")
    return 0


def cmd_keys_generate(args: argparse.Namespace, settings: Settings) -> int:
    now = SystemClock().now()
    ring = _keyring(settings)
    ring.load(now)
    key = ring.generate(args.alg or settings.signing.algorithm, now, activate_at=None)
    _out(args, {"kid": key.kid, "alg": key.alg, "state": "published"},
         f"generated {key.alg} key {key.kid}: published, standby (use `keys rotate --kid` to "
         "make it sign)")
    return 0


def cmd_keys_rotate(args: argparse.Namespace, settings: Settings) -> int:
    now = SystemClock().now()
    key = _keyring(settings).rotate(args.alg or settings.signing.algorithm, now,
                                    settings.signing.propagation_delay, kid=args.kid)
    _out(args, {"kid": key.kid, "alg": key.alg, "activate_at": key.activate_at},
         f"key {key.kid} ({key.alg}) is published and signs from {_time(key.activate_at)}; "
         "the current key retires then")
    return 0


def cmd_keys_retire(args: argparse.Namespace, settings: Settings) -> int:
    key = _keyring(settings).retire(args.kid, SystemClock().now())
    _out(args, {"kid": key.kid, "retired_at": key.retired_at},
         f"key {key.kid} no longer signs; it stays published until its tokens have expired")
    return 0


# -- clients ------------------------------------------------------------------------------------


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


def _scope_list(values: Sequence[str] | None) -> tuple[str, ...] | None:
    if values is None:
        return None
    return tuple(s for value in values for s in value.split() if s)


def cmd_clients_create(args: argparse.Namespace, settings: Settings) -> int:
    jwks = _jwks_file(args.jwks_file)
    method: clients.AuthMethod = args.auth_method or (
        "private_key_jwt" if jwks or args.jwks_uri else "client_secret_basic")
    spec = clients.ClientSpec(
        name=args.name, scopes=_scope_list(args.scope) or (), ip_allow=tuple(args.ip_allow or ()),
        resources=tuple(args.resource or ()), auth_method=method, jwks=jwks,
        jwks_uri=args.jwks_uri, org_id=args.org,
    )
    with _database(settings).session() as session:
        record, secret = clients.create_client(session, ScopeCatalog(settings), spec,
                                               SystemClock().now())
    data = {**record.public_dict(), "client_secret": secret}
    text = _client_text(record)
    if secret:
        text += f"\nclient_secret               {secret}\n\nThe secret is shown only now; store it."
    _out(args, data, text)
    return 0


def cmd_clients_list(args: argparse.Namespace, settings: Settings) -> int:
    with _database(settings).session() as session:
        records = clients.list_clients(session, args.org)
    lines = [f"{'CLIENT_ID':28} {'STATUS':9} {'METHOD':20} {'NAME':24} SCOPE"]
    lines += [f"{r.client_id:28} {r.status:9} {r.auth_method:20} {r.name[:24]:24} "
              f"{' '.join(sorted(r.scopes))}" for r in records]
    _out(args, [r.public_dict() for r in records], "\n".join(lines) if records else "no clients")
    return 0


def cmd_clients_show(args: argparse.Namespace, settings: Settings) -> int:
    with _database(settings).session() as session:
        record = clients.get_client(session, args.client_id)
    _out(args, record.public_dict(), _client_text(record))
    return 0


def cmd_clients_update(args: argparse.Namespace, settings: Settings) -> int:
    change = clients.ClientUpdate(
        name=args.name, scopes=_scope_list(args.scope),
        ip_allow=() if args.clear_ip_allow else (tuple(args.ip_allow) if args.ip_allow else None),
        resources=() if args.clear_resources else (
            tuple(args.resource) if args.resource else None),
    )
    with _database(settings).session() as session:
        record = clients.update_client(session, ScopeCatalog(settings), args.client_id, change,
                                       SystemClock().now())
    _out(args, record.public_dict(), _client_text(record))
    return 0


def cmd_clients_disable(args: argparse.Namespace, settings: Settings) -> int:
    with _database(settings).session() as session:
        record = clients.set_disabled(session, args.client_id, args.disable, SystemClock().now())
    _out(args, record.public_dict(), f"client {record.client_id} is {record.status}")
    return 0


def cmd_clients_delete(args: argparse.Namespace, settings: Settings) -> int:
    with _database(settings).session() as session:
        clients.delete_client(session, args.client_id, SystemClock().now())
    _out(args, {"deleted": args.client_id},
         f"client {args.client_id} deleted; its tokens are cut off")
    return 0


def cmd_clients_rotate_secret(args: argparse.Namespace, settings: Settings) -> int:
    with _database(settings).session() as session:
        secret = clients.rotate_secret(session, args.client_id, SystemClock().now())
    _out(args, {"client_id": args.client_id, "client_secret": secret},
         f"client_secret {secret}\n\nThe old secret no longer works. This one is shown only now.")
    return 0


# -- parser -------------------------------------------------------------------------------------


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="authserver", description=__doc__)
    parser.add_argument("--config", help="TOML file (default: $AUTHSERVER_CONFIG, then "
                                         "./authserver.toml, then built-in defaults)")
    parser.add_argument("--json", action="store_true", help="print JSON instead of text")
    sub = parser.add_subparsers(dest="command", required=True)

    def command(
        group: Any, name: str, handler: Handler, help_: str
    ) -> argparse.ArgumentParser:
        p: argparse.ArgumentParser = group.add_parser(name, help=help_, description=help_)
        p.set_defaults(handler=handler)
        return p

    serve = command(sub, "serve", cmd_serve, "run the server (migrates the SQLite default)")
    serve.add_argument("--host")
    serve.add_argument("--port", type=int)
    command(sub, "migrate", cmd_migrate, "apply pending database migrations")

    config = sub.add_parser("config", help="configuration").add_subparsers(
        dest="sub", required=True)
    command(config, "example", cmd_config_example, "print config.example.toml")
    command(config, "show", cmd_config_show, "print the effective settings")

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

    cl = sub.add_parser("clients", help="OAuth clients").add_subparsers(dest="sub", required=True)
    create = command(cl, "create", cmd_clients_create, "create a client; prints its secret once")
    create.add_argument("--name", required=True)
    create.add_argument("--scope", action="append", help='scopes, e.g. "a b" (repeatable)')
    create.add_argument("--ip-allow", action="append", metavar="CIDR")
    create.add_argument("--resource", action="append", metavar="URL")
    create.add_argument("--jwks-uri", metavar="URL", help="private_key_jwt keys by URL")
    create.add_argument("--jwks-file", metavar="PATH", help="private_key_jwt keys (JWK Set)")
    create.add_argument("--auth-method", choices=list(clients.AUTH_METHODS))
    create.add_argument("--org", default="org_default")
    lst = command(cl, "list", cmd_clients_list, "list clients")
    lst.add_argument("--org")
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
    for name, disable in (("disable", True), ("enable", False)):
        p = command(cl, name, cmd_clients_disable, f"{name} a client")
        p.add_argument("client_id")
        p.set_defaults(disable=disable)
    delete = command(cl, "delete", cmd_clients_delete, "delete a client and cut off its tokens")
    delete.add_argument("client_id")
    rs = command(cl, "rotate-secret", cmd_clients_rotate_secret, "issue a new client secret")
    rs.add_argument("client_id")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        settings = load_settings(args.config)
    except ConfigError as exc:
        print(f"authserver: {exc}", file=sys.stderr)
        return 2
    logging.basicConfig(level=settings.logging.level,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("alembic").setLevel(logging.WARNING)
    handler: Handler = args.handler
    try:
        return handler(args, settings)
    except (CliError, Invalid, NotFound, Conflict, KeyFileError, RuntimeError) as exc:
        print(f"authserver: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
