"""usage: requests and credits per API key / client and organisation, per UTC day."""

from __future__ import annotations

import argparse
import re
from typing import Any

from authserver.cli.common import CliError, command, database, out
from authserver.config import Settings
from authserver.usage import usage_report

_DAY = re.compile(r"^\d{4}-\d{2}-\d{2}$")


def cmd_usage(args: argparse.Namespace, settings: Settings) -> int:
    for name in ("since", "until"):
        value = getattr(args, name)
        if value is not None and not _DAY.match(value):
            raise CliError(f"--{name}: a day like 2026-11-24")
    with database(settings).session() as session:
        rows, totals = usage_report(session, org_id=args.org, subject=args.subject,
                                    since=args.since, until=args.until)
    lines = [f"{'DAY':10} {'SUBJECT':40} {'ORG':22} {'READS':>8} {'WRITES':>8} {'CREDITS':>9}"]
    lines += [f"{r.day:10} {r.subject:40} {r.org_id:22} {r.reads:>8} {r.writes:>8} "
              f"{r.credits:>9}" for r in rows]
    lines += [f"{'total':10} {'':40} {org:22} {t['reads']:>8} {t['writes']:>8} "
              f"{t['credits']:>9}" for org, t in sorted(totals.items())]
    out(args, {"data": [r.as_dict() for r in rows], "totals": totals},
        "\n".join(lines) if rows else "no usage recorded")
    return 0


def add_commands(sub: Any) -> None:
    usage = command(sub, "usage", cmd_usage,
                    "usage per API key / client and organisation, per UTC day (counted at "
                    "forward-auth; written by the server every last_used_flush_interval)")
    usage.add_argument("--org", help="one organisation")
    usage.add_argument("--subject", help="one API key id or client id")
    usage.add_argument("--since", help="first day, YYYY-MM-DD (UTC)")
    usage.add_argument("--until", help="last day, YYYY-MM-DD (UTC)")
