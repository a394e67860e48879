"""The OpenAPI 3.1 description of the admin API (`/api/v1`): its paths and operations here, the
schemas in `openapi_schemas`. Built once in code and served as pre-serialised bytes at
`GET /api/v1/openapi.json` (public: it describes, it grants nothing).

`tests/test_openapi.py` holds it to the router (same paths and methods) and validates real
responses against it, so an endpoint that changes fails there until this document follows.
"""

from __future__ import annotations

import copy
from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import Response

from authserver.web.admin_api import API_PREFIX, MAX_PAGE
from authserver.web.admin_ops import ALGORITHMS
from authserver.web.openapi_schemas import (
    RATE_LIMITS,
    RESPONSES,
    SCHEMAS,
    STR,
    STRS,
    Schema,
    enum,
    ref,
)

OPENAPI_PATH = API_PREFIX + "/openapi.json"


def _input(text: str, required: tuple[str, ...] = (), /, **members: Schema) -> Schema:
    """A request body. Unknown members are ignored; a member sent as null counts as absent."""
    schema: Schema = {"type": "object", "description": text, "properties": members}
    if required:
        schema["required"] = list(required)
    return schema


def _query(name: str, schema: Schema, description: str) -> Schema:
    return {"name": name, "in": "query", "required": False, "schema": schema,
            "description": description}


ORG_ID = _query("org_id", STR, "Only this organisation (the operator's callers: any; others: "
                "their own, else 404)")
LIMIT = _query("limit", {"type": "integer", "minimum": 1, "maximum": MAX_PAGE, "default": 100},
               "Page size")
CURSOR = _query("cursor", STR, "The `next_cursor` of the previous page")


def _path(name: str) -> Schema:
    return {"name": name, "in": "path", "required": True, "schema": STR}


def _json(name: str) -> Schema:
    """A JSON answer of the component schema `name`."""
    return {"description": SCHEMAS[name]["description"],
            "content": {"application/json": {"schema": ref(name)}}}


def _op(op_id: str, tag: str, summary: str, permission: str | None,
        ok: dict[str, Schema], errors: str = "", *, body: Schema | None = None,
        optional_body: bool = False, query: tuple[Schema, ...] = (), operator: bool = False,
        description: str = "") -> Schema:
    """One operation. Any authenticated call may answer 401, 429, 503 and 500; one that needs
    a permission also 403; one with a JSON body also 400 and 413."""
    statuses = {"401", "429", "503", "500", *errors.split()}
    roles = [permission] if permission else []
    security = [{"apiKey": roles}, {"apiKeyQuery": roles}]
    notes = [description]
    if permission:
        statuses.add("403")
        security.append({"accessToken": roles})
        operator_note = " and a caller of the operator organisation (`org_default`)"
        notes.insert(0, f"Needs the permission `{permission}`{operator_note * operator}.")
    if body is not None:
        statuses |= {"400", "413"}
    operation: Schema = {
        "operationId": op_id, "tags": [tag], "summary": summary,
        "description": " ".join(notes).strip(), "security": security,
        "responses": {**ok, **{s: {"$ref": f"#/components/responses/E{s}"}
                               for s in sorted(statuses)}},
    }
    if permission:
        operation["x-permission"] = permission
    if query:
        operation["parameters"] = list(query)
    if body is not None:
        operation["requestBody"] = {"required": not optional_body,
                                    "content": {"application/json": {"schema": body}}}
    return operation


EXPIRY: dict[str, Schema] = {
    "expires_in": {"type": "number", "description": "Seconds from now (wins over expires_at)"},
    "expires_at": {"type": ["number", "null"], "description": "Unix seconds"},
}
API_KEY_FIELDS: dict[str, Schema] = {
    "name": {"type": "string", "minLength": 1, "maxLength": 200},
    "permissions": {**STRS, "description": "resource.action, with * wildcards; only ones the "
                    "caller holds itself"},
    "ip_allowlist": {**STRS, "description": "IP addresses or CIDRs"},
    **EXPIRY, "rate_limits": RATE_LIMITS,
}
CLIENT_FIELDS: dict[str, Schema] = {
    "name": {"type": "string", "minLength": 1, "maxLength": 200},
    "scope": {"type": "string", "description": "Space-separated (RFC 7591 style); or `scopes`"},
    "scopes": {**STRS, "description": "Only scopes the caller holds itself"},
    "ip_allow": {**STRS, "description": "IP addresses or CIDRs"},
    "resources": {**STRS, "description": "Allowed RFC 8707 resource (audience) URIs"},
    "rate_limits": RATE_LIMITS,
    "redirect_uris": {**STRS, "description": "Exact redirect URIs of the authorization code "
                      "flow (https, or http on loopback with any port)"},
}
_KEY, _CLIENT, _APR = _path("key_id"), _path("client_id"), _path("request_id")
_USER = _path("user_id")
USER_FIELDS: dict[str, Schema] = {
    "name": {"type": "string", "maxLength": 200},
    "email": {"type": "string", "maxLength": 320, "description": "An address like "
              "alice@example.com (\"\" removes it on a change)"},
    "email_verified": {"type": "boolean"},
    "role": {**enum("admin", "user"), "description": "`admin` (the admin UI) needs a caller "
             "holding `*`"},
    "password": {"type": "string", "minLength": 12, "maxLength": 1024,
                 "description": "Stored as an argon2id hash only"},
}


def _approval(what: str) -> Schema:
    return {"description": f"Quorum approval is required: {what} waits for the approval "
            "request in the body (docs/approvals.md)",
            "content": {"application/json": {"schema": ref("Approval")}}}

PATHS: dict[str, Schema] = {
    "/openapi.json": {"get": {
        "operationId": "getOpenApi", "tags": ["meta"], "summary": "This document",
        "security": [],
        "responses": {"200": {
            "description": "The OpenAPI 3.1 document of /api/v1",
            "headers": {"Cache-Control": {"required": True, "schema": STR}},
            "content": {"application/json": {"schema": {"type": "object"}}}}}}},
    "/api-key": {"get": _op(
        "getOwnApiKey", "api-keys", "The calling API key's own settings", None,
        {"200": _json("ApiKeySelf")},
        description="Authenticated by the key itself (no permission needed); an access token "
        "gets 401 `invalid_api_key`.")},
    "/api-keys": {
        "get": _op("listApiKeys", "api-keys", "List API keys (oldest first)", "api-keys.read",
                   {"200": _json("ApiKeyPage")}, "400 404",
                   query=(ORG_ID, _query("include_revoked", {"type": "boolean"},
                                         "Also revoked keys (`true` or `1`)"), LIMIT, CURSOR)),
        "post": _op("createApiKey", "api-keys", "Create an API key", "api-keys.create",
                    {"201": _json("NewApiKey"), "202": _approval("a key")}, "404",
                    body=_input("A new key.", ("name", "permissions"), **API_KEY_FIELDS,
                                org_id={"type": "string", "description": "Default: the "
                                        "caller's organisation"},
                                environment=enum("live", "test"))),
    },
    "/api-keys/{key_id}": {
        "parameters": [_KEY],
        "get": _op("getApiKey", "api-keys", "Show an API key", "api-keys.read",
                   {"200": _json("ApiKey")}, "404"),
        "patch": _op("updateApiKey", "api-keys", "Change an API key", "api-keys.update",
                     {"200": _json("ApiKey"),
                      "202": _approval("raising the key to privileged permissions")},
                     "404 409",
                     body={**_input("At least one member; `\"expires_at\": null` removes the "
                                    "expiry.", **API_KEY_FIELDS), "minProperties": 1},
                     description="A revoked, expired or rotated-out key cannot change (409). "
                     "While `api_key.create.privileged` is gated, a change that gives the key "
                     "privileged permissions it lacks (`*`, an api_key_only scope, or a "
                     "wildcard covering one) waits for approval (202); the whole change is "
                     "made on the final approval."),
    },
    "/api-keys/{key_id}/rotate": {"parameters": [_KEY], "post": _op(
        "rotateApiKey", "api-keys", "Rotate an API key", "api-keys.update",
        {"201": _json("NewApiKey")}, "404 409", optional_body=True,
        body=_input("Optional.", grace_period={
            "type": "number", "minimum": 0, "maximum": 30 * 86400,
            "description": "Seconds the old key keeps working (default 0: revoked at once)"}),
        description="A new key with the same settings; the caller must hold every permission "
        "of the key.")},
    "/api-keys/{key_id}/revoke": {"parameters": [_KEY], "post": _op(
        "revokeApiKey", "api-keys", "Revoke an API key (a repeat is a no-op)", "api-keys.delete",
        {"200": _json("ApiKey")}, "404")},
    "/organizations": {
        "get": _op("listOrganizations", "organizations", "List organisations (oldest first)",
                   "organizations.read", {"200": _json("OrganizationPage")}, "400",
                   query=(LIMIT, CURSOR)),
        "post": _op("createOrganization", "organizations", "Create an organisation",
                    "organizations.create", {"201": _json("Organization")},
                    operator=True, body=_input("A new organisation.", ("name",),
                                               name=CLIENT_FIELDS["name"])),
    },
    "/organizations/{org_id}": {
        "parameters": [_path("org_id")],
        "get": _op("getOrganization", "organizations", "Show an organisation",
                   "organizations.read", {"200": _json("Organization")}, "404"),
        "patch": _op("updateOrganization", "organizations", "Rename, disable or enable",
                     "organizations.update", {"200": _json("Organization")}, "404",
                     body=_input("Any of:", name=CLIENT_FIELDS["name"],
                                 disabled={"type": "boolean"}),
                     description="`disabled` needs a caller of the operator organisation, "
                     "which itself cannot be disabled (403)."),
        "delete": _op("deleteOrganization", "organizations", "Delete an organisation",
                      "organizations.delete", {"204": {"description": "Deleted"},
                                               "202": _approval("the deletion")}, "404 409",
                      operator=True,
                      description="Only an organisation without clients, live API keys or "
                      "people (409 names what is left), never `org_default` (409)."),
    },
    "/usage": {"get": _op(
        "getUsage", "usage", "Usage per subject and day, totals per organisation", "usage.read",
        {"200": _json("UsageReport")}, "400 404",
        query=(ORG_ID, _query("subject", STR, "An API key id or client id"),
               _query("since", {"type": "string", "format": "date"}, "First day (UTC)"),
               _query("until", {"type": "string", "format": "date"}, "Last day (UTC)"),
               LIMIT, CURSOR))},
    "/clients": {
        "get": _op("listClients", "clients", "List OAuth clients (oldest first)", "clients.read",
                   {"200": _json("ClientPage")}, "400 404",
                   query=(ORG_ID, _query("status", enum("active", "disabled"), "This state only"),
                          _query("origin", enum("admin", "dcr"), "admin API/CLI, or "
                                 "RFC 7591 self-registration"),
                          _query("q", STR, "Name contains"), LIMIT, CURSOR)),
        "post": _op("createClient", "clients", "Create an OAuth client", "clients.create",
                    {"201": _json("NewClient")}, "404",
                    body=_input(
                        "A new client; with `jwks` or `jwks_uri` it defaults to "
                        "private_key_jwt.", ("name",), **CLIENT_FIELDS,
                        token_endpoint_auth_method=enum("client_secret_basic",
                                                        "client_secret_post",
                                                        "private_key_jwt", "none"),
                        grant_types={**STRS, "description": "client_credentials (default), "
                                     "authorization_code, refresh_token; `none` (a public "
                                     "client) only without client_credentials"},
                        jwks={"type": "object", "description": "Public JWK Set"},
                        jwks_uri={"type": "string", "format": "uri"},
                        org_id={"type": "string", "description": "Default: the caller's "
                                "organisation"})),
    },
    "/clients/{client_id}": {
        "parameters": [_CLIENT],
        "get": _op("getClient", "clients", "Show a client", "clients.read",
                   {"200": _json("Client")}, "404"),
        "patch": _op("updateClient", "clients", "Change a client", "clients.update",
                     {"200": _json("Client")}, "404",
                     body=_input("Any of the members; changing scopes, the allowlist or "
                                 "resources cuts off the client's earlier tokens.",
                                 **CLIENT_FIELDS)),
        "delete": _op("deleteClient", "clients", "Delete a client (its tokens die)",
                      "clients.delete", {"204": {"description": "Deleted"},
                                         "202": _approval("the deletion")}, "404"),
    },
    "/clients/{client_id}/disable": {"parameters": [_CLIENT], "post": _op(
        "disableClient", "clients", "Disable a client (its tokens die)", "clients.update",
        {"200": _json("Client")}, "404")},
    "/clients/{client_id}/enable": {"parameters": [_CLIENT], "post": _op(
        "enableClient", "clients", "Enable a client", "clients.update",
        {"200": _json("Client")}, "404")},
    "/clients/{client_id}/rotate-secret": {"parameters": [_CLIENT], "post": _op(
        "rotateClientSecret", "clients", "A new client secret", "clients.update",
        {"200": _json("ClientSecret")}, "400 404",
        description="400 for a client that has no secret (private_key_jwt).")},
    "/users": {
        "get": _op("listUsers", "users", "List people (oldest first)", "users.read",
                   {"200": _json("UserPage")}, "400 404",
                   query=(ORG_ID, _query("role", enum("admin", "user"), "This role only"),
                          _query("status", enum("active", "disabled"), "This state only"),
                          LIMIT, CURSOR)),
        "post": _op("createUser", "users", "Create a person", "users.create",
                    {"201": _json("User")}, "404 409",
                    body=_input("A new person; `role` defaults to `user`, `org_id` to the "
                                "caller's organisation.", ("username", "password"),
                                username={"type": "string", "maxLength": 200,
                                          "description": "a-z 0-9 . _ @ + - (lower-cased)"},
                                **USER_FIELDS, org_id=STR),
                    description="409 when the username is taken; 403 for role `admin` unless "
                    "the caller holds `*`."),
    },
    "/users/{user_id}": {
        "parameters": [_USER],
        "get": _op("getUser", "users", "Show a person", "users.read", {"200": _json("User")},
                   "404"),
        "patch": _op("updateUser", "users", "Change a person", "users.update",
                     {"200": _json("User")}, "404",
                     body=_input("Any of the members; a new email is unverified unless "
                                 "`email_verified` comes with it; a new password clears a "
                                 "lockout.", **USER_FIELDS),
                     description="Making a person an admin, or setting an admin's password, "
                     "needs a caller holding `*` (403)."),
        "delete": _op("deleteUser", "users", "Delete a person (their tokens die)",
                      "users.delete", {"204": {"description": "Deleted"}}, "404",
                      description="Every token the person holds is cut off first; their "
                      "consents, refresh tokens and sessions go with them."),
    },
    "/users/{user_id}/disable": {"parameters": [_USER], "post": _op(
        "disableUser", "users", "Disable a person (their tokens die)", "users.update",
        {"200": _json("User")}, "404",
        description="Every token the person holds is cut off, their refresh tokens revoked "
        "and their browser sessions ended; a repeat is a no-op.")},
    "/users/{user_id}/enable": {"parameters": [_USER], "post": _op(
        "enableUser", "users", "Enable a person", "users.update", {"200": _json("User")},
        "404", description="Tokens cut off while disabled stay dead.")},
    "/users/{user_id}/consents": {
        "parameters": [_USER],
        "get": _op("listUserConsents", "users", "The person's live consents", "users.read",
                   {"200": _json("ConsentList")}, "404"),
        "delete": _op("revokeUserConsent", "users", "Revoke a consent (its tokens die)",
                      "users.update", {"204": {"description": "Revoked (a repeat is a "
                                               "no-op)"}}, "400 404",
                      query=({**_query("client_id", STR, "The client"), "required": True},),
                      description="Ends the consent and every token the person holds for "
                      "the client; 404 when the person never consented to it."),
    },
    "/registration-tokens": {
        "get": _op("listRegistrationTokens", "registration-tokens",
                   "List initial access tokens (oldest first)", "registration-tokens.read",
                   {"200": _json("RegistrationTokenPage")}, "400", operator=True,
                   query=(LIMIT, CURSOR)),
        "post": _op("createRegistrationToken", "registration-tokens",
                    "Create an initial access token", "registration-tokens.create",
                    {"201": _json("NewRegistrationToken")}, operator=True,
                    body=_input(
                        "All optional.",
                        scopes={**STRS, "description": "Ceiling of the clients it registers "
                                "(default: registration.open_scopes)"},
                        max_uses={"type": "integer", "minimum": 1},
                        expires_in={"type": "number", "exclusiveMinimum": 0},
                        description={"type": "string", "maxLength": 200})),
    },
    "/registration-tokens/{token_id}/revoke": {"parameters": [_path("token_id")], "post": _op(
        "revokeRegistrationToken", "registration-tokens", "Revoke an initial access token",
        "registration-tokens.delete", {"200": _json("RegistrationToken")}, "404",
        operator=True)},
    "/signing-keys": {"get": _op(
        "listSigningKeys", "signing-keys", "List signing keys", "signing-keys.read",
        {"200": _json("SigningKeyList")},
        description="Any organisation's caller with the permission may list them.")},
    "/signing-keys/rotate": {"post": _op(
        "rotateSigningKey", "signing-keys", "Rotate the signing key", "signing-keys.update",
        {"201": _json("RotatedSigningKey")}, "404 409", operator=True,
        optional_body=True,
        body=_input("Optional.", alg={**enum(*ALGORITHMS), "description": "Default: "
                                     "signing.algorithm"},
                    kid={"type": "string", "description": "A published standby key to "
                         "schedule instead of a new one"}),
        description="A new key (or the standby `kid`) is published now and signs after the "
        "propagation delay; the current one retires then.")},
    "/signing-keys/{kid}/retire": {"parameters": [_path("kid")], "post": _op(
        "retireSigningKey", "signing-keys", "Stop a key from signing", "signing-keys.update",
        {"200": _json("RetiredSigningKey")}, "404 409", operator=True,
        description="The active signer cannot retire (409): rotate instead.")},
    "/audit-events": {"get": _op(
        "listAuditEvents", "audit-events", "Read the audit log (newest first)",
        "audit-events.read", {"200": _json("AuditEventPage")}, "400 404",
        query=(_query("actor", STR, "Exact"),
               _query("action", STR, "Exact, or a prefix when it ends in `.`"),
               _query("target", STR, "Exact"), ORG_ID, _query("outcome", STR, "Exact"),
               _query("since", {"type": "number"}, "Unix seconds, inclusive"),
               _query("until", {"type": "number"}, "Unix seconds"), LIMIT, CURSOR))},
    "/approvals": {"get": _op(
        "listApprovals", "approvals", "List approval requests (oldest first)",
        "approvals.read", {"200": _json("ApprovalPage")}, "400 404",
        query=(ORG_ID, _query("state", enum("pending", "approved", "rejected", "expired",
                                            "executed"), "This state only"), LIMIT, CURSOR))},
    "/approvals/{request_id}": {"parameters": [_APR], "get": _op(
        "getApproval", "approvals", "Show an approval request", "approvals.read",
        {"200": _json("Approval")}, "404")},
    "/approvals/{request_id}/approve": {"parameters": [_APR], "post": _op(
        "approveApproval", "approvals", "Approve a request", "approvals.update",
        {"200": _json("Approval")}, "404 409",
        description="Also needs what the action needs: `api-keys.create` and every "
        "permission of the key; `organizations.delete` in the operator organisation; "
        "`clients.delete` and every scope of the client. The requester, and credentials it "
        "made, cannot approve (403); each approves once (409). The final approval of a "
        "delete runs it.")},
    "/approvals/{request_id}/reject": {"parameters": [_APR], "post": _op(
        "rejectApproval", "approvals", "Reject a request (one rejection ends it)",
        "approvals.update", {"200": _json("Approval")}, "404 409", optional_body=True,
        body=_input("Optional.", reason={"type": "string", "maxLength": 500}),
        description="The requester may withdraw its own request this way.")},
    "/approvals/{request_id}/reveal": {"parameters": [_APR], "post": _op(
        "revealApproval", "approvals", "Make and show an approved API key, once",
        "api-keys.create", {"201": _json("RevealedApiKey")}, "400 404 409",
        description="For the requester only (403 for anyone else), and only once: a second "
        "reveal is 409. 400 for a request that is not an API key request.")},
}

DESCRIPTION = """\
The admin API of authserver: OAuth clients, organisations, API keys, usage, people, initial
access tokens, signing keys, the audit log and quorum approval of gated actions. Paths are relative
to the server's issuer URL.

Callers authenticate with an API key (`x-api-key` header) or an access token of this server
(`Authorization: Bearer`), whose scopes serve as permissions (`resource.action`, wildcards
`*`). A caller sees its own organisation only, except callers of the operator organisation
(`org_default`), which see every one. A credential can hand out only permissions it holds.

Errors use one envelope (`Error`), an unexpected failure (500 `server_error`) too. Every answer
carries `Cache-Control: no-store` (this document: `public`) and `X-Request-Id`; an API key sent
in the query string (deprecated) gets `Deprecation: true` and a `Warning`. See
docs/admin-api.md.
"""


def document() -> dict[str, Any]:
    """The OpenAPI 3.1 document (a new dict each call)."""
    return copy.deepcopy({
        "openapi": "3.1.0",
        "info": {"title": "authserver admin API", "version": "1", "description": DESCRIPTION},
        "tags": [{"name": t} for t in ("clients", "organizations", "api-keys", "usage",
                                       "users", "registration-tokens", "signing-keys",
                                       "audit-events", "approvals", "meta")],
        "paths": {API_PREFIX + path: item for path, item in PATHS.items()},
        "components": {
            "schemas": SCHEMAS, "responses": RESPONSES,
            "securitySchemes": {
                "apiKey": {"type": "apiKey", "in": "header", "name": "x-api-key",
                           "description": "An API key (`as_live_…`, `as_test_…`)"},
                "apiKeyQuery": {"type": "apiKey", "in": "query", "name": "x-api-key",
                                "description": "Deprecated: the key in the query string, "
                                "while api_keys.allow_query_parameter is true"},
                "accessToken": {"type": "http", "scheme": "bearer", "bearerFormat": "JWT",
                                "description": "An access token of this server (RFC 9068); "
                                "its scopes are the permissions, its org_id the "
                                "organisation"},
            },
        },
    })


_BODY = orjson.dumps(document())


async def openapi_document(request: Request) -> Response:
    return Response(_BODY, 200, {"cache-control": "public, max-age=300"}, "application/json")
