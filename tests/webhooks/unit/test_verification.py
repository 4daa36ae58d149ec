"""Signature handling, signed with svix's own signer; one test per failure mode."""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from webhooks.deliveries import hmac_signature, sign_bytes

from siteview_devstack.signing import sign
from siteview_webhooks.verification import (
    InvalidSignatureError,
    MalformedDeliveryError,
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
    with pytest.raises(MalformedDeliveryError, match=missing):
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


NOW = datetime.now(UTC)
SIGNED = sign(BODY, TEST_WEBHOOK_SECRET, msg_id="msg_shape")
SIG = SIGNED["svix-signature"].removeprefix("v1,")


@pytest.mark.parametrize(
    ("header", "value"),
    [
        pytest.param("svix-id", "msg 1", id="id-with-a-space"),
        pytest.param("svix-id", "msg_\u00e9", id="id-not-ascii"),  # a latin-1 byte on the wire
        pytest.param("svix-id", "m" * 257, id="id-too-long"),
        pytest.param("svix-timestamp", "abc", id="timestamp-letters"),
        pytest.param("svix-timestamp", "9" * 400, id="timestamp-huge"),
        pytest.param("svix-timestamp", "1e300", id="timestamp-exponent"),
        pytest.param("svix-timestamp", "nan", id="timestamp-nan"),
        pytest.param("svix-timestamp", "-1", id="timestamp-negative"),
        pytest.param("svix-timestamp", f"{int(NOW.timestamp())}.5", id="timestamp-fraction"),
        pytest.param("svix-timestamp", "\u0661\u0662", id="timestamp-non-ascii-digits"),
        pytest.param("svix-signature", SIG, id="signature-without-version"),
        pytest.param("svix-signature", f"v1,{SIG},x", id="signature-two-commas"),
        pytest.param("svix-signature", "v1,abc", id="signature-unpadded-base64"),
        pytest.param("svix-signature", "v1,@@@@", id="signature-not-base64"),
        pytest.param("svix-signature", "v1,", id="signature-empty"),
        pytest.param("svix-signature", "v1,\u00ff\u00ff\u00ff\u00ff", id="signature-not-ascii"),
        pytest.param("svix-signature", f"v1,{SIG}\tv1,{SIG}", id="signature-tab-separated"),
        pytest.param("svix-signature", f"V1,{SIG}", id="signature-upper-case-version"),
    ],
)
def test_a_malformed_header_is_refused_as_malformed_before_any_signature(
    header: str, value: str
) -> None:
    """Each of these made svix raise something other than its verification error (a 500), or
    was refused as a bad signature (401) or even accepted, though Svix never sends it."""
    headers = {**SIGNED, header: value}
    with pytest.raises(MalformedDeliveryError, match=f"malformed {header}"):
        SignatureVerifier([TEST_WEBHOOK_SECRET]).verify(BODY, headers)


def test_every_malformed_header_is_named() -> None:
    headers = {"svix-id": "msg 1", "svix-timestamp": "x", "svix-signature": "y"}
    with pytest.raises(MalformedDeliveryError) as refused:
        SignatureVerifier([TEST_WEBHOOK_SECRET]).verify(BODY, headers)
    assert all(f"malformed {name}" in str(refused.value) for name in headers)


@pytest.mark.parametrize(
    "signature",
    [
        pytest.param("v1,{sig}", id="one-entry"),
        pytest.param("  v1,{sig}  ", id="surrounding-spaces"),
        pytest.param("v1,{sig}  v1,{sig}", id="two-spaces-between-entries"),
        pytest.param("v2,{sig} v1,{sig}", id="unknown-version-next-to-v1"),
        pytest.param("v1a,{sig} v1,{sig}", id="asymmetric-entry-next-to-v1"),
    ],
)
def test_well_formed_signature_lists_are_verified(signature: str) -> None:
    # Signed now, not at collection: a slow run must not age the timestamp past tolerance.
    signed = sign(BODY, TEST_WEBHOOK_SECRET, msg_id="msg_shape")
    sig = signed["svix-signature"].removeprefix("v1,")
    headers = {**signed, "svix-signature": signature.format(sig=sig)}
    assert SignatureVerifier([TEST_WEBHOOK_SECRET]).verify(BODY, headers) == "msg_shape"


def test_the_hmac_signer_of_the_tests_is_svixs_own() -> None:
    assert (
        hmac_signature(BODY, TEST_WEBHOOK_SECRET, msg_id="msg_shape", at=NOW)
        == sign(BODY, TEST_WEBHOOK_SECRET, msg_id="msg_shape", at=NOW)["svix-signature"]
    )


@pytest.mark.parametrize("body", [b"\xff\xfe", b'{"type": "user.created\xc3"}', b"\xed\xa0\x80"])
def test_a_genuinely_signed_body_that_is_not_utf8_is_malformed(body: bytes) -> None:
    """svix decodes the body as UTF-8 itself and raised UnicodeDecodeError (a 500)."""
    headers = sign_bytes(body, TEST_WEBHOOK_SECRET, msg_id="msg_bytes")
    with pytest.raises(MalformedDeliveryError, match="not UTF-8"):
        SignatureVerifier([TEST_WEBHOOK_SECRET]).verify(body, headers)


header_text = st.text(st.characters(codec="latin-1"), max_size=40)
base64_text = st.binary(max_size=40).map(lambda b: base64.b64encode(b).decode())
signature_entry = st.builds(
    "{},{}".format,
    st.sampled_from(["v1", "v2", "v1a", "v", "x", ""]),
    base64_text | base64_text.map(lambda t: t.rstrip("=")) | header_text,
)
header_values = {
    "svix-id": header_text,
    "svix-timestamp": header_text | st.integers(-(10**20), 10**20).map(str),
    "svix-signature": header_text | st.lists(signature_entry, max_size=3).map(" ".join),
}


@settings(max_examples=500, deadline=None)
@given(
    body=st.binary(max_size=64) | st.just(BODY),
    overrides=st.fixed_dictionaries({}, optional=header_values),
)
def test_verify_raises_nothing_but_its_two_errors(body: bytes, overrides: dict[str, str]) -> None:
    """Whatever the headers (as the server decodes them: latin-1) and body, the answer is an id,
    a malformed delivery (400) or an invalid signature (401); never another exception."""
    headers = {**sign_bytes(body, TEST_WEBHOOK_SECRET, msg_id="msg_fuzz"), **overrides}
    try:
        assert SignatureVerifier([TEST_WEBHOOK_SECRET]).verify(body, headers) == "msg_fuzz"
    except (MalformedDeliveryError, InvalidSignatureError):
        pass
