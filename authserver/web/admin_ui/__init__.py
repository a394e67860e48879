"""The admin web UI at /admin: server-rendered pages (Jinja2, `templates/admin/`) over the same
domain functions as the CLI and the admin API.

Sign-in: a person with role `admin` (argon2id password, lockout with backoff). The session is a
random cookie value (`HttpOnly`, `SameSite=Lax`, `Secure` when the issuer is https) of which
only a digest is stored. Every form carries the session's CSRF token, and a POST without it
(or from another origin) is refused with 403. A person of another organisation than the
operator's sees only that organisation.

`base` holds the plumbing (session, CSRF, sign-in); each other module one group of pages.
"""

from __future__ import annotations

from typing import Any

from starlette.routing import Route

from authserver.web.admin_ui.approvals import ApprovalPages
from authserver.web.admin_ui.base import PREFIX, no_icon
from authserver.web.admin_ui.clients import ClientPages
from authserver.web.admin_ui.dashboard import DashboardPage
from authserver.web.admin_ui.keys import ApiKeyPages
from authserver.web.admin_ui.operator import OperatorPages
from authserver.web.admin_ui.orgs import OrganizationPages
from authserver.web.admin_ui.users import UserPages

__all__ = ["PREFIX", "AdminUi", "routes"]


class AdminUi(DashboardPage, ClientPages, ApiKeyPages, OperatorPages, OrganizationPages,
              ApprovalPages, UserPages):
    """Every page of the admin UI (one instance per app)."""


def routes(ui: AdminUi) -> list[Any]:
    p = PREFIX
    return [
        Route(f"{p}/admin.js", ui.script, methods=["GET"]),
        Route(f"{p}/admin.css", ui.style, methods=["GET"]),
        Route("/favicon.ico", no_icon, methods=["GET"]),
        Route(f"{p}/login", ui.login_page, methods=["GET"]),
        Route(f"{p}/login", ui.login, methods=["POST"]),
        Route(f"{p}/logout", ui.page(ui.logout), methods=["POST"]),
        Route(p, ui.page(ui.dashboard), methods=["GET"]),
        Route(f"{p}/clients", ui.page(ui.client_list), methods=["GET"]),
        Route(f"{p}/clients", ui.page(ui.client_create), methods=["POST"]),
        Route(f"{p}/clients/{{client_id}}", ui.page(ui.client_detail), methods=["GET"]),
        Route(f"{p}/clients/{{client_id}}", ui.page(ui.client_update), methods=["POST"]),
        Route(f"{p}/clients/{{client_id}}/{{action}}", ui.page(ui.client_action),
              methods=["POST"]),
        Route(f"{p}/registered-clients", ui.page(ui.registered_list), methods=["GET"]),
        Route(f"{p}/api-keys", ui.page(ui.key_list), methods=["GET"]),
        Route(f"{p}/api-keys", ui.page(ui.key_create), methods=["POST"]),
        Route(f"{p}/api-keys/{{key_id}}", ui.page(ui.key_detail), methods=["GET"]),
        Route(f"{p}/api-keys/{{key_id}}", ui.page(ui.key_update), methods=["POST"]),
        Route(f"{p}/api-keys/{{key_id}}/{{action}}", ui.page(ui.key_action), methods=["POST"]),
        Route(f"{p}/keys", ui.page(ui.signing_keys), methods=["GET"]),
        Route(f"{p}/keys/rotate", ui.page(ui.rotate_key), methods=["POST"]),
        Route(f"{p}/registration-tokens", ui.page(ui.token_list), methods=["GET"]),
        Route(f"{p}/registration-tokens", ui.page(ui.token_create), methods=["POST"]),
        Route(f"{p}/registration-tokens/{{token_id}}/revoke", ui.page(ui.token_revoke),
              methods=["POST"]),
        Route(f"{p}/organizations", ui.page(ui.org_list), methods=["GET"]),
        Route(f"{p}/organizations", ui.page(ui.org_create), methods=["POST"]),
        Route(f"{p}/organizations/{{org_id}}/{{action}}", ui.page(ui.org_action),
              methods=["POST"]),
        Route(f"{p}/users", ui.page(ui.user_list), methods=["GET"]),
        Route(f"{p}/users", ui.page(ui.user_create), methods=["POST"]),
        Route(f"{p}/users/{{user_id}}", ui.page(ui.user_detail), methods=["GET"]),
        Route(f"{p}/users/{{user_id}}/{{action}}", ui.page(ui.user_action), methods=["POST"]),
        Route(f"{p}/approvals", ui.page(ui.approval_list), methods=["GET"]),
        Route(f"{p}/approvals/{{request_id}}", ui.page(ui.approval_detail), methods=["GET"]),
        Route(f"{p}/approvals/{{request_id}}/{{action}}", ui.page(ui.approval_action),
              methods=["POST"]),
        Route(f"{p}/audit", ui.page(ui.audit_log), methods=["GET"]),
    ]
