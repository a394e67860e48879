"""approvals: list, show, approve, reject quorum-approval requests (docs/approvals.md). The CLI
acts as the operator: it sees every organisation's requests, and approves as `cli:<login>`."""

from __future__ import annotations

import argparse
import json
from typing import Any

from authserver import approvals
from authserver.approvals import ApprovalView
from authserver.cli.common import CliError, cli_actor, command, database, out, show_time
from authserver.clock import SystemClock
from authserver.config import Settings
from authserver.scopes import ScopeCatalog


def _text(view: ApprovalView) -> str:
    data = view.public_dict()
    lines = []
    for name, value in data.items():
        if name.endswith("_at"):
            value = show_time(value)
        elif name == "approvals":
            value = ", ".join(f"{a['by']} ({show_time(a['at'])})" for a in value) or "-"
        elif name == "rejection" and value is not None:
            value = f"{value['by']} ({show_time(value['at'])}): {value['reason'] or '-'}"
        elif isinstance(value, dict):
            value = json.dumps(value, sort_keys=True)
        lines.append(f"{name:18} {value if value not in (None, '') else '-'}")
    return "\n".join(lines)


def cmd_list(args: argparse.Namespace, settings: Settings) -> int:
    if args.state is not None and args.state not in approvals.STATES:
        raise CliError(f"--state: one of {', '.join(approvals.STATES)}")
    now = SystemClock().now()
    with database(settings).session() as session:
        views = approvals.list_requests(session, now, args.org, state=args.state)
    lines = [f"{'ID':21} {'STATE':9} {'ACTION':26} {'APPROVALS':9} {'ORG':22} REQUESTED BY"]
    lines += [f"{v.id:21} {v.state:9} {v.action:26} "
              f"{f'{len(v.approvals)}/{v.required_approvals}':9} {v.org_id:22} "
              f"{v.requested_by}" for v in views]
    out(args, [v.public_dict() for v in views],
        "\n".join(lines) if views else "no approval requests")
    return 0


def cmd_show(args: argparse.Namespace, settings: Settings) -> int:
    now = SystemClock().now()
    with database(settings).session() as session:
        view = approvals.get_request(session, args.request_id, None, now)
    out(args, view.public_dict(), _text(view))
    return 0


def cmd_approve(args: argparse.Namespace, settings: Settings) -> int:
    now = SystemClock().now()
    with database(settings).session(write=True) as session:
        view = approvals.approve(session, settings.approvals, args.request_id, None, now,
                                 cli_actor(), ScopeCatalog(settings))
    note = {"pending": f"approved; {view.public_dict()['approvals_needed']} more needed",
            "approved": "approved: the requester can now reveal the key (once)",
            "executed": f"approved and done: {view.action} {view.target}"}[view.state]
    out(args, view.public_dict(), f"{note}\n\n{_text(view)}")
    return 0


def cmd_reject(args: argparse.Namespace, settings: Settings) -> int:
    now = SystemClock().now()
    with database(settings).session(write=True) as session:
        view = approvals.reject(session, args.request_id, None, now, cli_actor(),
                                args.reason or "")
    out(args, view.public_dict(), f"rejected\n\n{_text(view)}")
    return 0


def add_commands(sub: Any) -> None:
    group = sub.add_parser("approvals", help="quorum approval of gated admin actions"
                           ).add_subparsers(dest="sub", required=True)
    listing = command(group, "list", cmd_list, "list approval requests (oldest first)")
    listing.add_argument("--org", help="only this organisation's")
    listing.add_argument("--state", help=f"only this state: {', '.join(approvals.STATES)}")
    show = command(group, "show", cmd_show, "show one approval request")
    show.add_argument("request_id")
    approve = command(group, "approve", cmd_approve,
                      "approve a request (the final approval of a delete runs it)")
    approve.add_argument("request_id")
    reject = command(group, "reject", cmd_reject, "reject a request (one rejection ends it)")
    reject.add_argument("request_id")
    reject.add_argument("--reason", help="why (kept in the request and the audit log)")
