"""Sign any body as Svix does, including bodies that are not UTF-8 (svix's own signer takes
text, so it cannot sign those: they get the same HMAC from standardwebhooks, the library svix
wraps; `test_verification` checks both give the same signature)."""

from __future__ import annotations

import base64
from datetime import UTC, datetime

from standardwebhooks.webhooks import hmac_data

from siteview_devstack.signing import sign
from support import example

#: The Clerk instance the webhooks tests' own gateway accepts.
INSTANCE = example("user.created")["instance_id"]


def hmac_signature(body: bytes, secret: str, *, msg_id: str, at: datetime) -> str:
    """`v1,<base64>`: HMAC-SHA256 over `{id}.{timestamp}.{body}` with the secret's key bytes."""
    key = base64.b64decode(secret.removeprefix("whsec_"))
    signed = f"{msg_id}.{int(at.timestamp())}.".encode() + body
    return "v1," + base64.b64encode(hmac_data(key, signed)).decode()


def sign_bytes(
    body: bytes, secret: str, *, msg_id: str, at: datetime | None = None
) -> dict[str, str]:
    """The three Svix headers of a genuine delivery of `body`."""
    at = at or datetime.now(UTC)
    try:
        body.decode("utf-8")
    except UnicodeDecodeError:
        return {
            "svix-id": msg_id,
            "svix-timestamp": str(int(at.timestamp())),
            "svix-signature": hmac_signature(body, secret, msg_id=msg_id, at=at),
        }
    return sign(body, secret, msg_id=msg_id, at=at)
