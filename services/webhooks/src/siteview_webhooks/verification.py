"""Svix signature verification: a gate, before anything reads the body.

Clerk signs with every active secret during a rotation (the old one stays valid for 24 h), so
the gateway holds one `svix.Webhook` per configured secret and accepts the first that verifies.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from svix.webhooks import Webhook, WebhookVerificationError

SVIX_HEADERS = ("svix-id", "svix-timestamp", "svix-signature")


class MissingSvixHeadersError(ValueError):
    pass


class InvalidSignatureError(ValueError):
    pass


class SignatureVerifier:
    def __init__(self, secrets: Sequence[str]) -> None:
        if not secrets:
            raise ValueError("at least one webhook secret is required")
        self._webhooks = [Webhook(secret) for secret in secrets]

    def verify(self, body: bytes, headers: Mapping[str, str]) -> str:
        """The Svix message id of a genuine delivery, or one of the two errors above."""
        svix_headers = {name: headers.get(name, "") for name in SVIX_HEADERS}
        missing = [name for name, value in svix_headers.items() if not value]
        if missing:
            raise MissingSvixHeadersError(f"missing header(s): {', '.join(missing)}")
        reason = "no matching signature"
        for webhook in self._webhooks:
            try:
                webhook.verify(body, svix_headers)
            except WebhookVerificationError as exc:
                reason = str(exc)
                if "timestamp" in reason:  # the same for every secret
                    break
                continue
            return svix_headers["svix-id"]
        raise InvalidSignatureError(reason)
