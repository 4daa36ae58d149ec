"""Signature handling, signed with svix's own signer; one test per failure mode."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from siteview_devstack.signing import sign
from siteview_webhooks.verification import (
    InvalidSignatureError,
    MissingSvixHeadersError,
    SignatureVerifier,
)
from support import EXAMPLES, OLD_WEBHOOK_SECRET, TEST_WEBHOOK_SECRET

BODY = (EXAMPLES / "user.created.json").read_bytes()
VECTOR: dict[str, Any] = json.loads((EXAMPLES / "_signing-example.json").read_text())


def test_a_genuine_delivery_yields_its_svix_id() -> None:
    headers = sign(BODY, TEST_WEBHOOK_SECRET, msg_id="msg_1")
    assert SignatureVerifier([TEST_WEBHOOK_SECRET]).verify(BODY, headers) == "msg_1"


@pytest.mark.parametrize("missing", ["svix-id", "svix-timestamp", "svix-signature"])
def test_each_missing_header_is_reported(missing: str) -> None:
    headers = sign(BODY, TEST_WEBHOOK_SECRET)
    del headers[missing]
    with pytest.raises(MissingSvixHeadersError, match=missing):
        SignatureVerifier([TEST_WEBHOOK_SECRET]).verify(BODY, headers)


def test_a_signature_by_another_secret_is_refused() -> None:
    headers = sign(BODY, OLD_WEBHOOK_SECRET)
    with pytest.raises(InvalidSignatureError):
        SignatureVerifier([TEST_WEBHOOK_SECRET]).verify(BODY, headers)


def test_the_body_is_verified_byte_for_byte() -> None:
    headers = sign(BODY, TEST_WEBHOOK_SECRET)
    compact = json.dumps(json.loads(BODY), separators=(",", ":")).encode()
    with pytest.raises(InvalidSignatureError):
        SignatureVerifier([TEST_WEBHOOK_SECRET]).verify(compact, headers)


@pytest.mark.parametrize("skew", [timedelta(seconds=-301), timedelta(seconds=301)])
def test_a_timestamp_outside_five_minutes_is_refused(skew: timedelta) -> None:
    headers = sign(BODY, TEST_WEBHOOK_SECRET, at=datetime.now(UTC) + skew)
    with pytest.raises(InvalidSignatureError, match="timestamp"):
        SignatureVerifier([TEST_WEBHOOK_SECRET]).verify(BODY, headers)


def test_a_timestamp_inside_the_tolerance_is_accepted() -> None:
    headers = sign(BODY, TEST_WEBHOOK_SECRET, at=datetime.now(UTC) - timedelta(seconds=290))
    assert SignatureVerifier([TEST_WEBHOOK_SECRET]).verify(BODY, headers)


def test_during_a_rotation_either_secret_verifies_a_doubly_signed_delivery() -> None:
    new = sign(BODY, TEST_WEBHOOK_SECRET, msg_id="msg_rot")
    old = sign(
        BODY,
        OLD_WEBHOOK_SECRET,
        msg_id="msg_rot",
        at=datetime.fromtimestamp(int(new["svix-timestamp"]), UTC),
    )
    both = {**new, "svix-signature": f"{new['svix-signature']} {old['svix-signature']}"}
    assert SignatureVerifier([OLD_WEBHOOK_SECRET]).verify(BODY, both) == "msg_rot"
    assert SignatureVerifier([TEST_WEBHOOK_SECRET]).verify(BODY, both) == "msg_rot"
    # a gateway configured with both secrets accepts a delivery signed by only one of them
    verifier = SignatureVerifier([OLD_WEBHOOK_SECRET, TEST_WEBHOOK_SECRET])
    assert verifier.verify(BODY, new) == "msg_rot"
    assert verifier.verify(BODY, old) == "msg_rot"


def test_clerks_signing_vector_matches_at_its_own_time(monkeypatch: pytest.MonkeyPatch) -> None:
    """The published vector was signed in the past: check it with the clock at its timestamp."""
    import standardwebhooks.webhooks as std

    frozen = datetime.fromtimestamp(int(VECTOR["headers_single_secret"]["svix-timestamp"]), UTC)

    class Clock(datetime):
        @classmethod
        def now(cls, tz: Any = None) -> datetime:
            return frozen

    monkeypatch.setattr(std, "datetime", Clock)
    old, new = VECTOR["secrets"]["old"], VECTOR["secrets"]["new"]
    rotation, single = VECTOR["headers_during_rotation"], VECTOR["headers_single_secret"]
    assert SignatureVerifier([new]).verify(BODY, rotation) == rotation["svix-id"]
    assert SignatureVerifier([old]).verify(BODY, rotation) == rotation["svix-id"]
    with pytest.raises(InvalidSignatureError):
        SignatureVerifier([old]).verify(BODY, single)
