"""The webhook endpoint: read the raw bytes (bounded), hand them to the handler, map its one
outcome or one exception to one status code."""

from __future__ import annotations

import logging
from typing import Any

from fastapi import APIRouter, HTTPException, Request, Response

from siteview_webhooks.handlers import (
    ForeignInstanceError,
    NotAClerkEventError,
    PublishTimeoutError,
    accept_delivery,
)
from siteview_webhooks.verification import InvalidSignatureError, MalformedDeliveryError

log = logging.getLogger(__name__)

router = APIRouter(tags=["webhooks"])

ERRORS: dict[int | str, dict[str, Any]] = {
    400: {
        "description": "a Svix header missing or malformed, a body that is not UTF-8, or a "
        "genuinely signed body that is not a Clerk event"
    },
    401: {"description": "bad signature, timestamp outside ±5 min, or another Clerk instance"},
    413: {"description": "body over the size limit"},
    503: {"description": "the broker did not acknowledge in time; Clerk retries"},
}


def declares_more_than(content_length: str, limit: int) -> bool:
    """Whether a Content-Length of ASCII digits (of any length) exceeds `limit`."""
    if not (content_length.isascii() and content_length.isdigit()):
        return False  # absent; the server's parser refuses any other spelling
    digits = content_length.lstrip("0")
    return len(digits) > len(str(limit)) or int(digits or "0") > limit


async def read_body(request: Request, limit: int) -> bytes:
    if declares_more_than(request.headers.get("content-length", ""), limit):
        raise HTTPException(413, "body too large")
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise HTTPException(413, "body too large")
        chunks.append(chunk)
    return b"".join(chunks)


@router.post("/webhooks/clerk", status_code=202, responses=ERRORS)
@router.post("/clerk-users-webhook", status_code=202, responses=ERRORS, include_in_schema=False)
async def clerk_webhook(request: Request) -> Response:
    """Verify a Svix-signed Clerk delivery and publish it; 2xx only after the broker's ack."""
    state = request.app.state
    body = await read_body(request, state.settings.webhook_max_body_bytes)
    try:
        accepted = await accept_delivery(
            body,
            request.headers,
            verifier=state.verifier,
            publisher=state.publisher,
            instance_id=state.settings.clerk_instance_id,
        )
    except (MalformedDeliveryError, NotAClerkEventError) as exc:
        raise HTTPException(400, str(exc)) from None
    except InvalidSignatureError:
        raise HTTPException(401, "invalid signature") from None
    except ForeignInstanceError:
        raise HTTPException(401, "event of another Clerk instance") from None
    except PublishTimeoutError:
        log.warning("publish timed out; answering 503 so Clerk retries")
        raise HTTPException(503, "event not accepted, retry later") from None
    log.info(
        "event published",
        extra={"svixId": accepted.svix_id, "type": accepted.event_type, "topic": accepted.topic},
    )
    return Response(status_code=202)
