"""orgs: create, list, show, rename, disable/enable, delete."""

from __future__ import annotations

import argparse
from typing import Any

from authserver import organizations
from authserver.cli.common import cli_actor, command, database, out, show_time
from authserver.clock import SystemClock
from authserver.config import Settings


def _org_text(record: organizations.OrgRecord) -> str:
    return (f"{'id':11} {record.id}\n{'name':11} {record.name}\n{'status':11} {record.status}\n"
            f"{'created_at':11} {show_time(record.created_at)}")


def cmd_orgs_create(args: argparse.Namespace, settings: Settings) -> int:
    with database(settings).session(write=True) as session:
        record = organizations.create_org(session, args.name, SystemClock().now(), cli_actor())
    out(args, record.public_dict(), _org_text(record))
    return 0


def cmd_orgs_list(args: argparse.Namespace, settings: Settings) -> int:
    with database(settings).session() as session:
        records = organizations.list_orgs(session)
    lines = [f"{'ID':22} {'STATUS':9} {'CREATED':20} NAME"]
    lines += [f"{r.id:22} {r.status:9} {show_time(r.created_at):20} {r.name}" for r in records]
    out(args, [r.public_dict() for r in records],
        "\n".join(lines) if records else "no organisations")
    return 0


def cmd_orgs_show(args: argparse.Namespace, settings: Settings) -> int:
    with database(settings).session() as session:
        record = organizations.get_org(session, args.org_id)
    out(args, record.public_dict(), _org_text(record))
    return 0


def cmd_orgs_rename(args: argparse.Namespace, settings: Settings) -> int:
    with database(settings).session(write=True) as session:
        record = organizations.rename_org(session, args.org_id, args.name, SystemClock().now(),
                                          cli_actor())
    out(args, record.public_dict(), _org_text(record))
    return 0


def cmd_orgs_disable(args: argparse.Namespace, settings: Settings) -> int:
    with database(settings).session(write=True) as session:
        record = organizations.set_org_disabled(session, args.org_id, args.disable,
                                                SystemClock().now(), cli_actor())
    text = f"organisation {record.id} is {record.status}"
    if args.disable:
        text += "; its clients' tokens are cut off and its API keys refused"
    out(args, record.public_dict(), text)
    return 0


def cmd_orgs_delete(args: argparse.Namespace, settings: Settings) -> int:
    """Not gated by [approvals]: the CLI holds the database's own credentials (docs)."""
    with database(settings).session(write=True) as session:
        record = organizations.delete_org(session, args.org_id, SystemClock().now(),
                                          cli_actor())
    out(args, record.public_dict(), f"organisation {record.id} ({record.name}) is deleted")
    return 0


def add_commands(sub: Any) -> None:
    orgs = sub.add_parser("orgs", help="organisations (owners of clients and API keys)"
                          ).add_subparsers(dest="sub", required=True)
    create = command(orgs, "create", cmd_orgs_create, "create an organisation")
    create.add_argument("--name", required=True)
    command(orgs, "list", cmd_orgs_list, "list organisations")
    show = command(orgs, "show", cmd_orgs_show, "show one organisation")
    show.add_argument("org_id")
    rename = command(orgs, "rename", cmd_orgs_rename, "rename an organisation")
    rename.add_argument("org_id")
    rename.add_argument("--name", required=True)
    for name, disable, help_ in (
        ("disable", True, "disable an organisation: its clients' tokens are cut off and its "
                          "API keys refused"),
        ("enable", False, "re-enable an organisation (cut-off tokens stay invalid)"),
    ):
        p = command(orgs, name, cmd_orgs_disable, help_)
        p.add_argument("org_id")
        p.set_defaults(disable=disable)
    delete = command(orgs, "delete", cmd_orgs_delete, "delete an organisation that has no "
                     "clients, live API keys or people left (never org_default)")
    delete.add_argument("org_id")
