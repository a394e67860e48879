"""audit: read the audit log, newest first."""

from __future__ import annotations

import argparse
import json
from typing import Any

from authserver import audit
from authserver.cli.common import CliError, command, database, out, parse_time, show_time
from authserver.config import Settings


def cmd_audit(args: argparse.Namespace, settings: Settings) -> int:
    if not 1 <= args.limit <= 1000:
        raise CliError("--limit: 1 to 1000")
    query = audit.AuditQuery(
        actor=args.actor, action=args.action, target=args.target, org_id=args.org,
        outcome=args.outcome,
        since=parse_time(args.since, "--since") if args.since else None,
        until=parse_time(args.until, "--until") if args.until else None,
        before_id=args.before, limit=args.limit)
    with database(settings).session() as session:
        entries = audit.read(session, query)
    cursor = entries[-1].id if len(entries) == args.limit else None
    lines = [f"{'ID':>7} {'AT':20} {'ACTOR':28} {'ACTION':26} {'TARGET':28} {'OUTCOME':8} "
             "SOURCE  DETAILS"]
    lines += [f"{e.id:>7} {show_time(e.at):20} {e.actor[:28]:28} {e.action[:26]:26} "
              f"{e.target[:28]:28} {e.outcome:8} {e.source or '-'}  "
              f"{json.dumps(e.details, sort_keys=True)[:80]}" for e in entries]
    if cursor is not None:
        lines.append(f"(more: --before {cursor})")
    out(args, {"data": [e.as_dict() for e in entries], "next_before": cursor},
        "\n".join(lines) if entries else "no audit entries")
    return 0


def add_commands(sub: Any) -> None:
    p = command(sub, "audit", cmd_audit, "read the audit log, newest first")
    p.add_argument("--actor", help="e.g. cli:alice, api_key:key_..., anonymous")
    p.add_argument("--action", help="exact (client.update), or a prefix ending in . (client.)")
    p.add_argument("--target", help="a client, key, organisation or signing key id")
    p.add_argument("--org", help="one organisation")
    p.add_argument("--outcome", choices=["success", "failure", "denied"])
    p.add_argument("--since", help="epoch seconds or ISO 8601 (UTC unless it says otherwise)")
    p.add_argument("--until", help="epoch seconds or ISO 8601")
    p.add_argument("--before", type=int, metavar="ID", help="entries older than this id (paging)")
    p.add_argument("--limit", type=int, default=100)
