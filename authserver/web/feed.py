"""The RFC 8936 poll endpoint of the revocation feed."""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Awaitable
from typing import Any

import anyio
import orjson
from starlette.requests import Request
from starlette.responses import Response

from authserver.config import Settings
from authserver.errors import InvalidRequest
from authserver.feed import PollRequest
from authserver.oauth.feed import FeedService
from authserver.web.errors import NO_STORE
from authserver.web.middleware import client_address
from authserver.web.registration import json_object

FEED_PATH = "/sets/poll"
_RECEIVER = re.compile(r"^[A-Za-z0-9._-]{1,64}$")
MAX_ACKS = 1000


def poll_request(body: dict[str, Any]) -> PollRequest:
    """RFC 8936 §2.4 members, type-checked; others are ignored."""
    ack = body.get("ack", [])
    if not isinstance(ack, list) or not all(isinstance(j, str) for j in ack):
        raise InvalidRequest("ack: must be an array of SET jti strings")
    errors = body.get("setErrs", {})
    if not isinstance(errors, dict):
        raise InvalidRequest("setErrs: must be an object keyed by SET jti")
    if len(ack) + len(errors) > MAX_ACKS:
        raise InvalidRequest(f"ack and setErrs: at most {MAX_ACKS} jtis per poll")
    max_events = body.get("maxEvents")
    if max_events is not None and (isinstance(max_events, bool)
                                   or not isinstance(max_events, int) or max_events < 0):
        raise InvalidRequest("maxEvents: must be a non-negative integer")
    immediately = body.get("returnImmediately", False)
    if not isinstance(immediately, bool):
        raise InvalidRequest("returnImmediately: must be true or false")
    receiver = body.get("receiver", "default")
    if not isinstance(receiver, str) or not _RECEIVER.match(receiver):
        raise InvalidRequest("receiver: 1 to 64 characters of A-Z a-z 0-9 . _ -")
    return PollRequest(tuple(ack), errors, max_events, immediately, receiver)


class FeedEndpoint:
    def __init__(self, settings: Settings, service: FeedService) -> None:
        self.service = service
        self.max_body = settings.server.max_body_bytes
        self.trusted = [ipaddress.ip_network(c, strict=False)
                        for c in settings.server.trusted_proxies]

    async def poll(self, request: Request) -> Response:
        receiver = await self.service.receiver(request.headers.get("authorization"),
                                               client_address(request.scope, self.trusted))
        body = poll_request(await json_object(request, self.max_body, InvalidRequest))
        if body.return_immediately:
            answer = await self.service.poll(receiver, body)
        else:
            answer = await _unless_disconnected(request, self.service.poll(receiver, body))
        return Response(orjson.dumps(answer), 200, NO_STORE, "application/json")


async def _unless_disconnected(
    request: Request, work: Awaitable[dict[str, object]]
) -> dict[str, object]:
    """`work`'s answer; a long poll whose client went away is stopped (the SETs it would have
    carried stay unacknowledged, so they are sent again)."""
    answer: dict[str, object] = {"sets": {}, "moreAvailable": False}

    async with anyio.create_task_group() as tg:
        async def listen() -> None:
            while (await request.receive())["type"] != "http.disconnect":
                pass
            tg.cancel_scope.cancel()

        tg.start_soon(listen)
        answer = await work
        tg.cancel_scope.cancel()
    return answer
