"""The Starlette application: routes, middleware and error handlers, and nothing else."""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractAsyncContextManager

from sqlalchemy.exc import SQLAlchemyError
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.routing import Route
from starlette.types import ASGIApp, Receive, Scope, Send

from authserver.errors import ApiError, OAuthError
from authserver.web.account import AccountPages
from authserver.web.admin_api import API_PREFIX
from authserver.web.admin_ops import OperatorEndpoints
from authserver.web.apikeys import ApiKeyEndpoints
from authserver.web.approvals import ApprovalEndpoints
from authserver.web.clients_admin import ClientEndpoints
from authserver.web.errors import (
    handle_api_error,
    handle_http_exception,
    handle_oauth_error,
    handle_store_error,
    handle_unexpected,
)
from authserver.web.feed import FEED_PATH, FeedEndpoint
from authserver.web.forward_auth import FORWARD_AUTH_PATH, ForwardAuth
from authserver.web.forward_auth import METHODS as FORWARD_AUTH_METHODS
from authserver.web.middleware import RequestIdMiddleware
from authserver.web.oauth import OAuthEndpoints
from authserver.web.observability import (
    HEALTH_PATH,
    METRICS_PATH,
    READY_PATH,
    Health,
    MetricsEndpoint,
)
from authserver.web.openapi import OPENAPI_PATH, openapi_document
from authserver.web.organizations import OrganizationEndpoints
from authserver.web.registration import REGISTRATION_PATH, RegistrationEndpoints
from authserver.web.users_admin import UserEndpoints
from authserver.web.wellknown import JWKS_PATH, USERINFO_PATH, WellKnown

Lifespan = Callable[[Starlette], AbstractAsyncContextManager[None]]


class App(Starlette):
    """Starlette, with exact paths answered by plain ASGI handlers before the middleware stack
    and the router: each handler gives itself a request id and renders its own errors."""

    fast_paths: dict[str, ASGIApp]

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            handler = self.fast_paths.get(scope["path"])
            if handler is not None:
                await handler(scope, receive, send)
                return
        await super().__call__(scope, receive, send)


def build_app(
    *, wellknown: WellKnown, oauth: OAuthEndpoints,
    registration: RegistrationEndpoints | None = None, feed: FeedEndpoint | None = None,
    api_keys: ApiKeyEndpoints | None = None, orgs: OrganizationEndpoints | None = None,
    admin_clients: ClientEndpoints | None = None, operator: OperatorEndpoints | None = None,
    users: UserEndpoints | None = None,
    forward_auth: ForwardAuth | None = None,
    health: Health | None = None, metrics: MetricsEndpoint | None = None,
    people: AccountPages | None = None, lifespan: Lifespan | None = None,
) -> App:
    """`registration` is None when registration is closed: nothing mounted, nothing advertised."""
    # Starlette tries routes in order (a regex match each): the hot ones first.
    routes = [
        Route("/token", oauth.token, methods=["POST"]),
        Route(JWKS_PATH, wellknown.jwks, methods=["GET"]),
        Route("/.well-known/oauth-authorization-server", wellknown.authorization_server,
              methods=["GET"]),
        Route("/.well-known/openid-configuration", wellknown.authorization_server,
              methods=["GET"]),
        Route("/.well-known/oauth-protected-resource", wellknown.protected_resource,
              methods=["GET"]),
        Route("/revoke", oauth.revoke, methods=["POST"]),
        Route("/introspect", oauth.introspect, methods=["POST"]),
    ]
    if people is None:  # [authorization] off: the endpoint answers unsupported_response_type
        routes.append(Route("/authorize", oauth.authorize, methods=["GET", "POST"]))
    else:  # docs/authorization.md
        routes += [
            Route("/authorize", people.authorize, methods=["GET", "POST"]),
            Route("/authorize/decision", people.decision, methods=["POST"]),
            Route(USERINFO_PATH, people.userinfo, methods=["GET", "POST"]),
            Route("/login", people.login_page, methods=["GET"]),
            Route("/login", people.login, methods=["POST"]),
            Route("/logout", people.logout, methods=["POST"]),
            Route("/account", people.account, methods=["GET"]),
            Route("/account/consents/revoke", people.revoke_consent, methods=["POST"]),
        ]
    if health is not None:  # docs/observability.md
        routes += [Route(HEALTH_PATH, health.healthz, methods=["GET"]),
                   Route(READY_PATH, health.readyz, methods=["GET"])]
    if metrics is not None:
        routes.append(Route(METRICS_PATH, metrics.metrics, methods=["GET"]))
    if feed is not None:
        routes.append(Route(FEED_PATH, feed.poll, methods=["POST"]))
    if registration is not None:
        routes += [
            Route(REGISTRATION_PATH, registration.register, methods=["POST"]),
            Route(REGISTRATION_PATH + "/{client_id}", registration.configuration,
                  methods=["GET", "PUT", "DELETE"]),
        ]
    if api_keys is not None:
        routes += [
            Route(OPENAPI_PATH, openapi_document, methods=["GET"]),
            Route(API_PREFIX + "/api-key", api_keys.self_inspection, methods=["GET"]),
            Route(API_PREFIX + "/api-keys", api_keys.list_keys, methods=["GET"]),
            Route(API_PREFIX + "/api-keys", api_keys.create_key, methods=["POST"]),
            Route(API_PREFIX + "/api-keys/{key_id}", api_keys.show_key, methods=["GET"]),
            Route(API_PREFIX + "/api-keys/{key_id}", api_keys.update_key, methods=["PATCH"]),
            Route(API_PREFIX + "/api-keys/{key_id}/rotate", api_keys.rotate_key,
                  methods=["POST"]),
            Route(API_PREFIX + "/api-keys/{key_id}/revoke", api_keys.revoke_key,
                  methods=["POST"]),
        ]
    if orgs is not None:
        routes += [
            Route(API_PREFIX + "/organizations", orgs.list_orgs, methods=["GET"]),
            Route(API_PREFIX + "/organizations", orgs.create_org, methods=["POST"]),
            Route(API_PREFIX + "/organizations/{org_id}", orgs.show_org, methods=["GET"]),
            Route(API_PREFIX + "/organizations/{org_id}", orgs.update_org, methods=["PATCH"]),
            Route(API_PREFIX + "/organizations/{org_id}", orgs.delete_org, methods=["DELETE"]),
            Route(API_PREFIX + "/usage", orgs.usage, methods=["GET"]),
        ]
    if admin_clients is not None:
        c = admin_clients
        routes += [
            Route(API_PREFIX + "/clients", c.list_clients, methods=["GET"]),
            Route(API_PREFIX + "/clients", c.create_client, methods=["POST"]),
            Route(API_PREFIX + "/clients/{client_id}", c.show_client, methods=["GET"]),
            Route(API_PREFIX + "/clients/{client_id}", c.update_client, methods=["PATCH"]),
            Route(API_PREFIX + "/clients/{client_id}", c.delete_client, methods=["DELETE"]),
            Route(API_PREFIX + "/clients/{client_id}/disable", c.set_disabled, methods=["POST"]),
            Route(API_PREFIX + "/clients/{client_id}/enable", c.set_disabled, methods=["POST"]),
            Route(API_PREFIX + "/clients/{client_id}/rotate-secret", c.rotate_secret,
                  methods=["POST"]),
        ]
    if operator is not None:
        o = operator
        routes += [
            Route(API_PREFIX + "/registration-tokens", o.list_registration_tokens,
                  methods=["GET"]),
            Route(API_PREFIX + "/registration-tokens", o.create_registration_token,
                  methods=["POST"]),
            Route(API_PREFIX + "/registration-tokens/{token_id}/revoke",
                  o.revoke_registration_token, methods=["POST"]),
            Route(API_PREFIX + "/signing-keys", o.list_signing_keys, methods=["GET"]),
            Route(API_PREFIX + "/signing-keys/rotate", o.rotate_signing_key, methods=["POST"]),
            Route(API_PREFIX + "/signing-keys/{kid}/retire", o.retire_signing_key,
                  methods=["POST"]),
            Route(API_PREFIX + "/audit-events", o.audit_events, methods=["GET"]),
        ]
        ap = ApprovalEndpoints(o.deps)  # quorum approval (docs/approvals.md)
        routes += [
            Route(API_PREFIX + "/approvals", ap.list_requests, methods=["GET"]),
            Route(API_PREFIX + "/approvals/{request_id}", ap.show_request, methods=["GET"]),
            Route(API_PREFIX + "/approvals/{request_id}/approve", ap.approve, methods=["POST"]),
            Route(API_PREFIX + "/approvals/{request_id}/reject", ap.reject, methods=["POST"]),
            Route(API_PREFIX + "/approvals/{request_id}/reveal", ap.reveal, methods=["POST"]),
        ]
    if users is not None:  # people (docs/admin-api.md)
        u = users
        routes += [
            Route(API_PREFIX + "/users", u.list_users, methods=["GET"]),
            Route(API_PREFIX + "/users", u.create_user, methods=["POST"]),
            Route(API_PREFIX + "/users/{user_id}", u.show_user, methods=["GET"]),
            Route(API_PREFIX + "/users/{user_id}", u.update_user, methods=["PATCH"]),
            Route(API_PREFIX + "/users/{user_id}", u.delete_user, methods=["DELETE"]),
            Route(API_PREFIX + "/users/{user_id}/disable", u.set_status, methods=["POST"]),
            Route(API_PREFIX + "/users/{user_id}/enable", u.set_status, methods=["POST"]),
            Route(API_PREFIX + "/users/{user_id}/consents", u.list_consents, methods=["GET"]),
            Route(API_PREFIX + "/users/{user_id}/consents", u.revoke_consent,
                  methods=["DELETE"]),
        ]
    if forward_auth is not None:  # Envoy's form; the plain one is a fast path, below
        routes.append(Route(FORWARD_AUTH_PATH + "/{path:path}", forward_auth.check,
                            methods=list(FORWARD_AUTH_METHODS)))
    app = App(
        routes=routes,
        middleware=[Middleware(RequestIdMiddleware)],
        exception_handlers={
            OAuthError: handle_oauth_error,
            ApiError: handle_api_error,
            HTTPException: handle_http_exception,
            SQLAlchemyError: handle_store_error,  # the store down: 503, not 500
            Exception: handle_unexpected,
        },
        lifespan=lifespan,
    )
    app.fast_paths = {FORWARD_AUTH_PATH: forward_auth} if forward_auth is not None else {}
    return app


