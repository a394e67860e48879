"""Rate limits at the HTTP edge of the platform APIs: 429 in the envelope, RateLimit-* headers
(draft-ietf-httpapi-ratelimit-headers)."""

from __future__ import annotations

from authserver.errors import ApiError, rate_limit_exceeded
from authserver.ratelimit import Limits, Verdict


async def enforce(limits: Limits, own: Verdict, org_id: str) -> Verdict:
    """The credential's own verdict, then its organisation's limit; 429 when either is spent."""
    if own.retry_after is not None:
        raise _too_many(own)
    if org_id:
        org = await limits.organization.check(org_id, stats=False)
        if org.retry_after is not None:
            raise _too_many(org)
    return own


def ratelimit_headers(verdict: Verdict) -> dict[str, str]:
    if not verdict.limit:
        return {}
    return {"ratelimit-limit": str(verdict.limit), "ratelimit-remaining": str(verdict.remaining),
            "ratelimit-reset": str(verdict.reset)}


def raw_ratelimit_headers(verdict: Verdict) -> list[tuple[bytes, bytes]]:
    """`ratelimit_headers` as ASGI header pairs (forward-auth builds its answer's headers)."""
    if not verdict.limit:
        return []
    return [(b"ratelimit-limit", b"%d" % verdict.limit),
            (b"ratelimit-remaining", b"%d" % verdict.remaining),
            (b"ratelimit-reset", b"%d" % verdict.reset)]


def _too_many(verdict: Verdict) -> ApiError:
    assert verdict.retry_after is not None
    error = rate_limit_exceeded(verdict.retry_after, verdict.name)
    error.headers.update(ratelimit_headers(verdict))
    return error
