"""Svix signature verification: a gate, before anything reads the body.

The three Svix headers' shapes and the body's encoding are checked here first, so svix's
verifier only ever sees input it can handle: anything malformed is refused as such (400), and
only a well-formed delivery can fail on its signature (401).

Clerk signs with every active secret during a rotation (the old one stays valid for 24 h), so
the gateway holds one `svix.Webhook` per configured secret and accepts the first that verifies.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from svix.webhooks import Webhook, WebhookVerificationError

SVIX_HEADERS = ("svix-id", "svix-timestamp", "svix-signature")

#: Svix message ids are `msg_` and a base62 string; a custom id is at most 256 characters.
_ID = re.compile(r"[\x21-\x7e]{1,256}")
#: Unix time in whole seconds (ten digits last until the year 2286).
_TIMESTAMP = re.compile(r"[0-9]{1,10}")
#: One signature entry: a version (`v1`, or e.g. `v1a` for asymmetric keys) and padded base64.
_SIGNATURE = re.compile(r"v[0-9]{1,3}[a-z]?,([A-Za-z0-9+/]+={0,2})")

_EXPECTED = {
    "svix-id": "1 to 256 visible ASCII characters",
    "svix-timestamp": "Unix time in whole seconds",
    "svix-signature": "space-separated v1,<base64> entries",
}


class MalformedDeliveryError(ValueError):
    """A Svix header is missing or malformed, or the body is not UTF-8."""


class InvalidSignatureError(ValueError):
    pass


@dataclass(frozen=True, slots=True)
class SvixHeaders:
    id: str
    timestamp: str
    signature: str

    def as_dict(self) -> dict[str, str]:
        return {
            "svix-id": self.id,
            "svix-timestamp": self.timestamp,
            "svix-signature": self.signature,
        }


def _well_formed(name: str, value: str) -> bool:
    if name == "svix-id":
        return _ID.fullmatch(value) is not None
    if name == "svix-timestamp":
        return _TIMESTAMP.fullmatch(value) is not None
    return all(_signature_entry(entry) for entry in _entries(value))


def _entries(signature: str) -> list[str]:
    return [entry for entry in signature.split(" ") if entry]


def _signature_entry(entry: str) -> bool:
    match = _SIGNATURE.fullmatch(entry)
    return match is not None and len(match.group(1)) % 4 == 0


def read_svix_headers(headers: Mapping[str, str]) -> SvixHeaders:
    """The three Svix headers, each of the shape Svix sends, or a `MalformedDeliveryError`."""
    values = {name: headers.get(name, "").strip(" \t") for name in SVIX_HEADERS}
    missing = [name for name, value in values.items() if not value]
    if missing:
        raise MalformedDeliveryError(f"missing header(s): {', '.join(missing)}")
    malformed = [name for name, value in values.items() if not _well_formed(name, value)]
    if malformed:
        raise MalformedDeliveryError(
            "; ".join(f"malformed {name}: expected {_EXPECTED[name]}" for name in malformed)
        )
    return SvixHeaders(
        id=values["svix-id"],
        timestamp=values["svix-timestamp"],
        signature=" ".join(_entries(values["svix-signature"])),
    )


def decode_body(body: bytes) -> str:
    """Svix signs the body as text: a body that is not UTF-8 cannot be a genuine delivery."""
    try:
        return body.decode("utf-8")
    except UnicodeDecodeError:
        raise MalformedDeliveryError("the body is not UTF-8") from None


class SignatureVerifier:
    def __init__(self, secrets: Sequence[str]) -> None:
        if not secrets:
            raise ValueError("at least one webhook secret is required")
        self._webhooks = [Webhook(secret) for secret in secrets]

    def verify(self, body: bytes, headers: Mapping[str, str]) -> str:
        """The Svix message id of a genuine delivery; a `MalformedDeliveryError` for malformed
        headers or body, decided before any signature is computed; else an
        `InvalidSignatureError`."""
        svix = read_svix_headers(headers)
        text = decode_body(body)
        reason = "no matching signature"
        for webhook in self._webhooks:
            try:
                webhook.verify(text, svix.as_dict())
            except WebhookVerificationError as exc:
                reason = str(exc)
                if "timestamp" in reason:  # the same for every secret
                    break
                continue
            return svix.id
        raise InvalidSignatureError(reason)
