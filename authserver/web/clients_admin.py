"""OAuth clients in the admin API (`/api/v1/clients`): the same domain functions as the CLI.

Permissions `clients.read|create|update|delete`; a caller sees the clients of its own
organisation (the operator's, every one) and can give a client only scopes it holds itself,
since a client's token may call this API with its scopes as permissions.
"""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from authserver import approvals, clients
from authserver.clients import ClientRecord
from authserver.errors import invalid_body, not_found
from authserver.web.admin_api import (
    AdminApi,
    Caller,
    body_limits,
    body_str,
    body_strs,
    decode_cursor,
    page,
    page_size,
)

_STATUSES = ("active", "disabled")
_ORIGINS = ("admin", "dcr")


def _scopes(body: dict[str, Any]) -> tuple[str, ...] | None:
    """`scope` as a space-separated string (RFC 7591 style) or `scopes` as an array."""
    if "scope" in body and "scopes" in body:
        raise invalid_body("scope and scopes: give one")
    if "scope" in body:
        scope = body_str(body, "scope")
        return None if scope is None else tuple(scope.split())
    return body_strs(body, "scopes")


class ClientEndpoints(AdminApi):
    async def _own(self, caller: Caller, client_id: str, change: bool = True) -> ClientRecord:
        """The client, 404 also when it belongs to an organisation the caller cannot see. To
        change it, the caller must hold every scope it has: otherwise rotating its secret (or
        loosening its allowlist) would hand the caller those scopes."""
        record = await self.read(lambda s: clients.get_client(s, client_id))
        if caller.org_filter() not in (None, record.org_id):
            raise not_found(f"no client {client_id}")
        if change:
            caller.may_grant(tuple(sorted(record.scopes)))
        return record

    async def list_clients(self, request: Request) -> Response:
        caller = await self.caller(request)
        caller.need("clients", "read")
        query = request.query_params
        org_id = query.get("org_id") or caller.org_filter()
        caller.in_scope(org_id)
        status, origin = query.get("status"), query.get("origin")
        if status not in (None, *_STATUSES):
            raise invalid_body("status: active or disabled")
        if origin not in (None, *_ORIGINS):
            raise invalid_body("origin: admin or dcr")
        limit = page_size(request)
        after = decode_cursor(request, (float, str))
        found = await self.read(lambda s: clients.list_clients(
            s, org_id, origin, status=status, name_contains=query.get("q"),
            after=(after[0], after[1]) if after else None, limit=limit))
        return self.respond(request, page(found, limit, lambda c: (c.created_at, c.client_id),
                                          ClientRecord.public_dict))

    async def create_client(self, request: Request) -> Response:
        caller = await self.caller(request)
        caller.need("clients", "create")
        body = await self.body(request)
        scopes = _scopes(body) or ()
        caller.may_grant(scopes)
        org_id = body_str(body, "org_id") or caller.org_id
        caller.in_scope(org_id)
        jwks = body.get("jwks")
        if jwks is not None and not isinstance(jwks, dict):
            raise invalid_body("jwks: must be a JWK Set object")
        method = body_str(body, "token_endpoint_auth_method") or (
            "private_key_jwt" if jwks or body.get("jwks_uri") else "client_secret_basic")
        spec = clients.ClientSpec(
            name=body_str(body, "name") or "", scopes=scopes,
            ip_allow=body_strs(body, "ip_allow") or (),
            resources=body_strs(body, "resources") or (),
            auth_method=method,  # type: ignore[arg-type]  # checked by the domain
            jwks=jwks, jwks_uri=body_str(body, "jwks_uri"), org_id=org_id,
            rate_limits=body_limits(body) or (),
            grant_types=body_strs(body, "grant_types") or ("client_credentials",),
            redirect_uris=body_strs(body, "redirect_uris") or ())
        now = self.now()
        record, secret = await self.write(lambda s: clients.create_client(
            s, self.catalog, spec, now, actor=caller.actor))
        return self.respond(request, {"client": record.public_dict(), "client_secret": secret},
                            201)

    async def show_client(self, request: Request) -> Response:
        caller = await self.caller(request)
        caller.need("clients", "read")
        record = await self._own(caller, request.path_params["client_id"], change=False)
        return self.respond(request, record.public_dict())

    async def update_client(self, request: Request) -> Response:
        caller = await self.caller(request)
        caller.need("clients", "update")
        client_id = request.path_params["client_id"]
        await self._own(caller, client_id)
        body = await self.body(request)
        scopes = _scopes(body)
        if scopes is not None:
            caller.may_grant(scopes)
        change = clients.ClientUpdate(
            name=body_str(body, "name"), scopes=scopes, ip_allow=body_strs(body, "ip_allow"),
            resources=body_strs(body, "resources"), rate_limits=body_limits(body),
            redirect_uris=body_strs(body, "redirect_uris"))
        now = self.now()
        record = await self.write(lambda s: clients.update_client(
            s, self.catalog, client_id, change, now, caller.actor))
        self.client_cache.invalidate([client_id])
        return self.respond(request, record.public_dict())

    async def set_disabled(self, request: Request) -> Response:
        caller = await self.caller(request)
        caller.need("clients", "update")
        client_id = request.path_params["client_id"]
        await self._own(caller, client_id)
        disable = request.url.path.endswith("/disable")
        now = self.now()
        record = await self.write(lambda s: clients.set_disabled(
            s, client_id, disable, now, caller.actor))
        self.client_cache.invalidate([client_id])
        return self.respond(request, record.public_dict())

    async def rotate_secret(self, request: Request) -> Response:
        caller = await self.caller(request)
        caller.need("clients", "update")
        client_id = request.path_params["client_id"]
        await self._own(caller, client_id)
        now = self.now()
        secret = await self.write(lambda s: clients.rotate_secret(
            s, client_id, now, caller.actor))
        self.client_cache.invalidate([client_id])
        return self.respond(request, {"client_id": client_id, "client_secret": secret})

    async def delete_client(self, request: Request) -> Response:
        caller = await self.caller(request)
        caller.need("clients", "delete")
        client_id = request.path_params["client_id"]
        await self._own(caller, client_id)
        now = self.now()
        gate = self.settings.approvals
        if gate.gates("client.delete"):  # 202: deleted on the final approval
            view = await self.write(lambda s: approvals.request_client_delete(
                s, gate, client_id, now, caller.actor))
            return self.respond(request, view.public_dict(), 202)
        await self.write(lambda s: clients.delete_client(s, client_id, now, caller.actor))
        self.client_cache.invalidate([client_id])
        return Response(status_code=204, headers={"cache-control": "no-store"})
