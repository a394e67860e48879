"""The component schemas and error responses of the admin API's OpenAPI document
(`authserver.web.openapi`): what each endpoint answers, member by member.

Response objects list every member they carry (`additionalProperties: false`), so a member an
endpoint adds or drops fails `tests/test_openapi.py` until the schema here follows.
"""

from __future__ import annotations

from typing import Any

from authserver.web.admin_ops import ALGORITHMS

Schema = dict[str, Any]

STR: Schema = {"type": "string"}
STR_OR_NULL: Schema = {"type": ["string", "null"]}
INT: Schema = {"type": "integer"}
STRS: Schema = {"type": "array", "items": STR}
TIME: Schema = {"type": "number", "description": "Unix seconds"}
TIME_OR_NULL: Schema = {"type": ["number", "null"], "description": "Unix seconds"}


def ref(name: str) -> Schema:
    return {"$ref": f"#/components/schemas/{name}"}


def enum(*values: str) -> Schema:
    return {"type": "string", "enum": list(values)}


def record(text: str, optional: tuple[str, ...] = (), /, **members: Schema) -> Schema:
    """A response object: every member present (except the `optional` ones), nothing else."""
    return {"type": "object", "description": text, "properties": members,
            "required": [m for m in members if m not in optional],
            "additionalProperties": False}


def listing(item: str) -> Schema:
    return record(f"Every {item} the caller may see, in one answer (not paged).",
                  data={"type": "array", "items": ref(item)})


def page(item: str) -> Schema:
    return record(f"One page of {item} objects; `next_cursor` is set when the page is full: "
                  "send it back as `cursor` for the next one (it may then come back empty).",
                  data={"type": "array", "items": ref(item)}, next_cursor=STR_OR_NULL)


RATE_LIMITS: Schema = {
    "type": "object", "additionalProperties": False,
    "description": "Own limits over the configured defaults, e.g. {\"burst\": \"60/minute\"}.",
    "properties": {"hourly": STR, "burst": STR},
}

SCHEMAS: dict[str, Schema] = {
    "ApiKey": record(
        "An API key as an operator sees it; never the key itself.",
        id=STR, org_id=STR, name=STR, environment=enum("live", "test"), permissions=STRS,
        ip_allowlist=STRS, expires_at=TIME_OR_NULL, rate_limits=RATE_LIMITS,
        status=enum("active", "revoked", "expired"), created_by=STR, created_at=TIME,
        updated_at=TIME, revoked_at=TIME_OR_NULL, replaced_by=STR_OR_NULL,
        last_used_at=TIME_OR_NULL),
    "ApiKeySelf": record(
        "The calling API key's own settings.",
        id=STR, name=STR, org_id=STR, environment=enum("live", "test"), permissions=STRS,
        ip_allowlist=STRS, expires_at=TIME_OR_NULL),
    "NewApiKey": record("The key, shown this once; only its digest is stored.",
                        api_key=ref("ApiKey"), key=STR),
    "ApiKeyPage": page("ApiKey"),
    "Organization": record("An organisation; `org_default` is the operator's.",
                           id=STR, name=STR, status=enum("active", "disabled"),
                           created_at=TIME),
    "OrganizationPage": page("Organization"),
    "UsageRow": record("Allowed forward-auth requests of one subject on one UTC day.",
                       subject=STR, org_id=STR, day={"type": "string", "format": "date"},
                       reads=INT, writes=INT, credits=INT),
    "UsageReport": record(
        "One page of rows (newest day first; `next_cursor` as in every paged list) and the "
        "totals per organisation id over every row the filters select.",
        data={"type": "array", "items": ref("UsageRow")}, next_cursor=STR_OR_NULL,
        totals={"type": "object", "additionalProperties": record(
            "Totals of one organisation.", reads=INT, writes=INT, credits=INT)}),
    "Client": record(
        "An OAuth client; never its secret.",
        client_id=STR, org_id=STR, name=STR,
        token_endpoint_auth_method=enum("client_secret_basic", "client_secret_post",
                                        "private_key_jwt", "none"),
        grant_types=STRS, scope={"type": "string", "description": "space-separated, sorted"},
        ip_allow=STRS, resources=STRS, jwks={"type": ["object", "null"]},
        jwks_uri=STR_OR_NULL, status=enum("active", "disabled"), created_at=TIME,
        updated_at=TIME, tokens_valid_after=TIME, origin=enum("admin", "dcr"),
        last_used_at=TIME_OR_NULL, rate_limits=RATE_LIMITS, redirect_uris=STRS),
    "NewClient": record("The client and its secret, shown this once (null for "
                        "private_key_jwt clients).",
                        client=ref("Client"), client_secret=STR_OR_NULL),
    "ClientSecret": record("The new secret, shown this once; the old one stops working.",
                           client_id=STR, client_secret=STR),
    "ClientPage": page("Client"),
    "RegistrationToken": record(
        "An initial access token (RFC 7591 §3); never the token itself.",
        id=STR, description=STR, scope={"type": "string", "description": "space-separated"},
        max_uses={"type": ["integer", "null"]}, uses=INT, expires_at=TIME_OR_NULL,
        revoked_at=TIME_OR_NULL, created_at=TIME,
        state=enum("active", "revoked", "expired", "used up")),
    "NewRegistrationToken": record("The token, shown this once; only its digest is stored.",
                                   registration_token=ref("RegistrationToken"), token=STR),
    "RegistrationTokenPage": page("RegistrationToken"),
    "SigningKey": record(
        "A signing key's place in its lifecycle (published → active → retired → expired).",
        kid=STR, alg=enum(*ALGORITHMS),
        state=enum("published", "active", "retired", "expired"),
        created_at=TIME, activate_at=TIME_OR_NULL, stops_signing_at=TIME_OR_NULL,
        unpublish_at=TIME_OR_NULL),
    "SigningKeyList": listing("SigningKey"),
    "RotatedSigningKey": record("The key that signs from `activate_at` on.",
                                kid=STR, alg=enum(*ALGORITHMS), activate_at=TIME),
    "RetiredSigningKey": record("Stopped signing; stays published until its tokens expire.",
                                kid=STR, retired_at=TIME),
    "AuditEvent": record(
        "Who did what to what, with which outcome.",
        id=INT, at=TIME, actor={"type": "string", "description": "api_key:<id>, client:<id>, "
                                "cli, cli:<login>, user:<id>, system, anonymous"},
        action=STR, target=STR, org_id=STR_OR_NULL, outcome=STR, source=STR_OR_NULL,
        request_id=STR_OR_NULL, details={"type": "object"}),
    "AuditEventPage": page("AuditEvent"),
    "Approval": record(
        "A request for a gated action (docs/approvals.md); `payload` holds the action's "
        "arguments, never a secret.",
        id=STR, action=enum("api_key.create", "api_key.create.privileged",
                            "api_key.update.privileged", "organization.delete",
                            "client.delete"),
        org_id=STR, target={"type": "string", "description": "The organisation or client to "
                            "delete, the key to change, or the new key's name"},
        requested_by=STR, payload={"type": "object"},
        state=enum("pending", "approved", "rejected", "expired", "executed"),
        required_approvals=INT,
        approvals_needed={"type": "integer", "description": "Approvals still missing (0 "
                          "unless pending)"},
        approvals={"type": "array", "items": record("One approval.", by=STR, at=TIME)},
        rejection={**record("Who rejected, when, why.", by=STR, at=TIME, reason=STR),
                   "type": ["object", "null"]},
        created_at=TIME, expires_at={**TIME, "description": "Unix seconds; for an approved "
                                     "key request, the end of its reveal window"},
        decided_at=TIME_OR_NULL, executed_at=TIME_OR_NULL,
        result={**STR_OR_NULL, "description": "The new key's id, or the changed or deleted "
                "object's"}),
    "ApprovalPage": page("Approval"),
    "User": record(
        "A person: an admin UI operator (role admin) or a user of the interactive flows "
        "(role user); never a password or its hash.",
        id=STR, username=STR, email=STR_OR_NULL, email_verified={"type": "boolean"},
        name=STR, role=enum("admin", "user"), org_id=STR,
        status=enum("active", "disabled"), created_at=TIME, last_login_at=TIME_OR_NULL),
    "UserPage": page("User"),
    "Consent": record("What the person allowed a client, until revoked or `expires_at`.",
                      client_id={"type": "string", "description": "A registered client id or "
                                 "a Client ID Metadata Document URL"},
                      scopes=STRS, granted_at=TIME, expires_at=TIME_OR_NULL),
    "ConsentList": listing("Consent"),
    "RevealedApiKey": record("The approved key, made now and shown this once.",
                             approval=ref("Approval"), api_key=ref("ApiKey"), key=STR),
    "Error": record("The platform error envelope.", error=record(
        "What went wrong.", ("details",),
        type=enum("invalid_request_error", "authentication_error", "permission_error",
                  "not_found_error", "rate_limit_error", "api_error"),
        code=STR, message=STR, status=INT, request_id=STR,
        details={"type": "object", "description": "present only when there are details"})),
}

# status → (description, error type, codes, required details)
ERRORS: dict[str, tuple[str, str, tuple[str, ...], Schema | None]] = {
    "400": ("Malformed JSON, wrong Content-Type, a bad field or query parameter (the message "
            "names it)", "invalid_request_error", ("invalid_request",), None),
    "401": ("No credential, or an invalid, expired or revoked one; `details.reason` says why "
            "for API keys", "authentication_error",
            ("invalid_api_key", "expired_api_key", "invalid_token"), None),
    "403": ("The credential lacks the permission (`details.required`), or the route is for "
            "the operator organisation only", "permission_error",
            ("insufficient_permissions",),
            record("Always present.", required=STR)),
    "404": ("No such object, or one of an organisation the caller cannot see",
            "not_found_error", ("not_found", "organization_not_found"), None),
    "409": ("The change contradicts the current state", "invalid_request_error",
            ("conflict",), None),
    "413": ("The body is larger than `server.max_body_bytes`", "invalid_request_error",
            ("invalid_request",), None),
    "429": ("A rate limit of the credential or its organisation is spent",
            "rate_limit_error", ("rate_limit_exceeded",),
            record("Always present.", retry_after=INT, limit=STR)),
    "503": ("The store or the key files are unavailable; nothing was changed; retry",
            "api_error", ("temporarily_unavailable",), None),
}
HEADERS = {
    "401": {"WWW-Authenticate": {"required": True, "schema": STR, "description":
                                 'ApiKey realm="authserver", header="x-api-key", or a '
                                 "Bearer challenge for access tokens"}},
    "429": {"Retry-After": {"required": True, "schema": INT}},
}


def error_response(status: str) -> Schema:
    description, type_, codes, details = ERRORS[status]
    error: Schema = {"properties": {"status": {"const": int(status)}, "type": {"const": type_},
                                    "code": enum(*codes)}}
    if details is not None:
        error["properties"]["details"] = details
        error["required"] = ["details"]
    body = {"allOf": [ref("Error"), {"properties": {"error": error}}]}
    response: Schema = {"description": description,
                        "content": {"application/json": {"schema": body}}}
    if status in HEADERS:
        response["headers"] = HEADERS[status]
    return response


RESPONSES: dict[str, Schema] = {f"E{s}": error_response(s) for s in ERRORS}
RESPONSES["E500"] = {"description": "An unexpected failure (code server_error); the log has "
                     "the details under the request id",
                     "content": {"application/json": {"schema": ref("Error")}}}
