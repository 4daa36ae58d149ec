"""Bad input, generated rather than listed: arbitrary envelopes into the event parser, arbitrary
and tampered cursors into the pagination codec, schemathesis's requests against every
service's OpenAPI, and the JWT attack list against an authenticated API. Nothing crashes, no
request is answered 5xx, every answer conforms to the schema, no attack gets in."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import schemathesis
from faults.reliability import Record
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import ValidationError
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from conftest import Backend, Stack, service_env
from siteview_common.auth import _pem_to_jwk
from siteview_common.events import PublishedEvent, Topics, route
from siteview_common.pagination import MAX_CURSOR_LENGTH, CursorCodec, InvalidCursorError, Position
from siteview_devstack.broker import free_port
from siteview_devstack.processes import ProcessSpec, Supervisor
from support import TEST_AZP, TEST_ISSUER, KeyPair, example, new_user_id, served

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(300)]

EXAMPLES = 400
FUZZ = settings(
    max_examples=EXAMPLES,
    deadline=None,
    database=None,
    suppress_health_check=list(HealthCheck),
)

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner, max_size=4)
    ),
    max_leaves=20,
)
ENVELOPE_FIELDS = ("type", "object", "data", "timestamp", "instance_id", "event_attributes")


@st.composite
def envelopes(draw: st.DrawFn) -> Any:
    """A Clerk example with some fields replaced, removed or added; or any JSON value."""
    if draw(st.booleans()):
        return draw(json_values)
    event = example(draw(st.sampled_from(["user.created", "user.deleted", "session.created"])))
    for name in draw(st.lists(st.sampled_from(ENVELOPE_FIELDS), max_size=3)):
        if draw(st.booleans()):
            event.pop(name, None)
        else:
            event[name] = draw(json_values)
    if isinstance(event.get("data"), dict) and draw(st.booleans()):
        event["data"][draw(st.sampled_from(["id", "user_id", "payer", "deleted"]))] = draw(
            json_values
        )
    return event


def test_the_envelope_parser_refuses_or_routes_anything(record: Record) -> None:
    scenario = record("10-envelope", "10. Bad input: the envelope parser (hypothesis)")
    scenario.injected = (
        f"{EXAMPLES} generated envelopes (Clerk's examples with fields replaced, removed or "
        "added, and arbitrary JSON), and as many arbitrary byte strings, into "
        "`PublishedEvent` (events.py), then `route` on whatever parsed"
    )
    tally: Counter[str] = Counter()

    @FUZZ
    @given(envelopes(), st.binary(max_size=200))
    def check(envelope: Any, raw: bytes) -> None:
        for value in (
            {"svixId": "msg_1", "receivedAt": 1, "event": envelope},
            raw,
        ):
            tally["inputs tried"] += 1
            try:
                if isinstance(value, bytes):
                    published = PublishedEvent.model_validate_json(value)
                else:
                    published = PublishedEvent.model_validate(value)
            except ValidationError:
                tally["refused (validation error)"] += 1
                continue
            where = route(published.event, published.svix_id)
            assert where.topic in Topics.ALL and where.key
            value_published = published.to_json()  # what a worker reads parses back to itself
            assert PublishedEvent.model_validate_json(value_published).to_json() == value_published
            tally["parsed and routed"] += 1

    try:
        check()
    except Exception:
        tally["crashes"] += 1
        raise
    finally:
        keys = ("inputs tried", "parsed and routed", "refused (validation error)", "crashes")
        scenario.counts = {k: tally[k] for k in keys}
    scenario.observe(
        "every input either parsed, routed to one of the three topics with a non-empty key, "
        "and its published value parsed back to the same bytes, or was refused with a "
        "validation error; no other exception"
    )


def test_the_pagination_cursor_refuses_anything_it_did_not_sign(record: Record) -> None:
    scenario = record("11-cursor", "11. Bad input: the pagination cursor (hypothesis)")
    scenario.injected = (
        f"{EXAMPLES} arbitrary strings (up to {MAX_CURSOR_LENGTH + 20} characters) and "
        f"{EXAMPLES} genuine cursors with one character changed, inserted or removed, into "
        "`CursorCodec.decode` (pagination.py)"
    )
    codec = CursorCodec("faults-cursor-secret")
    tally: Counter[str] = Counter()

    @FUZZ
    @given(
        st.text(max_size=MAX_CURSOR_LENGTH + 20),
        st.integers(min_value=-(2**53), max_value=2**53) | st.none(),
        st.text(max_size=20),
        st.integers(min_value=0, max_value=200),
        st.sampled_from(["replace", "insert", "delete"]),
        st.characters(),
    )
    def check(text: str, key: int | None, id_: str, at: int, edit: str, char: str) -> None:
        genuine = codec.encode("users", Position(key, id_))
        at %= len(genuine)
        edited = {
            "replace": genuine[:at] + char + genuine[at + 1 :],
            "insert": genuine[:at] + char + genuine[at:],
            "delete": genuine[:at] + genuine[at + 1 :],
        }[edit]
        for cursor in (text, edited):
            tally["inputs tried"] += 1
            if cursor == genuine:
                assert codec.decode("users", cursor) == Position(key, id_)
                tally["accepted (genuine)"] += 1
                continue
            with pytest.raises(InvalidCursorError):
                codec.decode("users", cursor)
            tally["refused"] += 1
        assert codec.decode("users", genuine) == Position(key, id_)

    try:
        check()
    except Exception:
        tally["failures"] += 1
        raise
    finally:
        scenario.counts = {
            k: tally[k] for k in ("inputs tried", "accepted (genuine)", "refused", "failures")
        }
    scenario.observe(
        "every string not produced by the codec was refused with InvalidCursorError; every "
        "genuine cursor decoded to its position"
    )


#: What every answer to a generated request must satisfy.
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
]
SCHEMA_EXAMPLES = 30


def summary(exc: BaseException) -> str:
    """Schemathesis's failure in one line: what was checked, what was received."""
    keep = ("- ", "Received", "Documented", "[")
    lines = [line.strip() for line in str(exc).splitlines() if line.strip().startswith(keep)]
    return " ".join(lines)[:300] or str(exc).splitlines()[0]


def fuzz(operation: Any, url: str, headers: dict[str, str], tally: Counter[str]) -> None:
    """Schemathesis's requests for one operation, valid and invalid by the schema, each
    answer checked against `CHECKS`; raises on the first answer that fails one."""
    strategy = st.one_of(
        operation.as_strategy(GenerationMode.POSITIVE),
        operation.as_strategy(GenerationMode.NEGATIVE),
    )

    @settings(FUZZ, max_examples=SCHEMA_EXAMPLES)
    @given(case=strategy)
    def check(case: schemathesis.Case) -> None:
        response = case.call(base_url=url, headers=headers)
        tally["requests"] += 1
        tally[f"{response.status_code // 100}xx"] += 1
        case.validate_response(response, checks=CHECKS, headers=headers)

    check()


def test_every_service_answers_generated_requests_without_5xx_and_as_documented(
    stack: Stack, signing_key: KeyPair, record: Record
) -> None:
    scenario = record("12-openapi", "12. Bad input: every service's OpenAPI (schemathesis)")
    services = {"webhooks": "gateway"} | {
        name: name.removesuffix("-api") for name in stack.urls if name.endswith("-api")
    }
    token = signing_key.token(new_user_id())
    tally: Counter[str] = Counter()
    failures: list[str] = []
    per_service = []
    for name in services:
        url = stack.urls[name]
        schema = schemathesis.openapi.from_url(f"{url}/openapi.json")
        # A live route's stream never ends: read its first event (the current value, checked
        # against the documented event schema) instead of waiting out the request timeout.
        schema.config.max_stream_events = 1
        operations = [result.ok() for result in schema.get_all_operations()]
        per_service.append(f"{services[name]}: {len(operations)} operations")
        for operation in operations:
            try:
                fuzz(operation, url, {"Authorization": f"Bearer {token}"}, tally)
            except (Exception, BaseExceptionGroup) as exc:
                failures.append(f"{operation.label}: {summary(exc)}")
    scenario.injected = (
        f"up to {SCHEMA_EXAMPLES} generated requests (valid and invalid by the schema) per "
        f"operation of each /openapi.json in the running system ({'; '.join(per_service)}), "
        "with a valid session token"
    )
    scenario.counts = {
        "requests": tally["requests"],
        **{k: tally[k] for k in ("2xx", "3xx", "4xx")},
        "5xx": tally["5xx"],
        "failed checks": len(failures),
    }
    scenario.observe(
        "checked on every answer: no 5xx, the status code, content type, headers and body "
        "as the operation documents them"
    )
    for failure in failures:
        scenario.observe(f"FAILED {failure}")
    assert failures == []


# --- the JWT attack list against an authenticated API ----------------------------------------


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unsigned(header: dict[str, Any], claims: dict[str, Any]) -> str:
    return f"{_b64(json.dumps(header).encode())}.{_b64(json.dumps(claims).encode())}"


AUDIENCE = "siteview-faults"


def _claims(sub: str) -> dict[str, Any]:
    now = int(time.time())
    return {
        "sub": sub,
        "iss": TEST_ISSUER,
        "azp": TEST_AZP,
        "aud": AUDIENCE,
        "iat": now,
        "nbf": now - 5,
        "exp": now + 600,
    }


def attacks(key: KeyPair, sub: str) -> dict[str, str]:
    """Each attack on the session token, by name: none of them may get in."""
    valid = key.token(sub, aud=AUDIENCE)
    head, payload, signature = valid.split(".")
    tampered = json.loads(base64.urlsafe_b64decode(payload + "=="))
    tampered["sub"] = new_user_id()
    hs256 = _unsigned({"alg": "HS256", "typ": "JWT", "kid": key.kid}, _claims(sub))
    mac = hmac.new(key.public_pem.encode(), hs256.encode(), hashlib.sha256).digest()
    stranger = KeyPair(kid="unknown-kid")
    impostor = KeyPair(kid=key.kid)
    return {
        "alg none": _unsigned({"alg": "none", "typ": "JWT", "kid": key.kid}, _claims(sub)) + ".",
        "HS256 with the public key as secret": f"{hs256}.{_b64(mac)}",
        "expired": key.token(sub, aud=AUDIENCE, now=time.time() - 3600, ttl=600),
        "wrong issuer": key.token(sub, aud=AUDIENCE, issuer="https://clerk.attacker.test"),
        "wrong azp": key.token(sub, aud=AUDIENCE, azp="https://attacker.test"),
        "wrong audience": key.token(sub, aud="another-audience"),
        "no audience": key.token(sub),
        "unknown kid": stranger.token(sub, aud=AUDIENCE),
        "known kid, another key": impostor.token(sub, aud=AUDIENCE),
        "tampered payload": f"{head}.{_b64(json.dumps(tampered).encode())}.{signature}",
        "signature stripped": f"{head}.{payload}.",
        "not a JWT": "not-a-jwt",
    }


@pytest.fixture
def jwks_api(backend: Backend, signing_key: KeyPair, run_id: str) -> Iterator[str]:
    """A users API verifying tokens against a JWKS (by `kid`) with an audience configured."""
    jwk = _pem_to_jwk(signing_key.public_pem) | {"kid": signing_key.kid, "use": "sig"}

    async def keys(request: Request) -> JSONResponse:
        return JSONResponse({"keys": [jwk]})

    with served(Starlette(routes=[Route("/.well-known/jwks.json", keys)])) as jwks:
        env = service_env(backend, signing_key, run_id)
        env.pop("CLERK_JWT_KEY")
        env.update(CLERK_JWKS_URL=f"{jwks}/.well-known/jwks.json", CLERK_AUDIENCE=AUDIENCE)
        supervisor = Supervisor(env, echo=False)
        spec = ProcessSpec("users-api-jwks", "siteview_users", ("api",), free_port())
        supervisor.start(spec, {"MONGODB_DATABASE": f"jwt_{uuid.uuid4().hex[:8]}"})
        try:
            supervisor.wait_ready(timeout=60)
            yield f"http://127.0.0.1:{spec.port}"
        finally:
            supervisor.stop_all()


def test_the_jwt_attack_list_gets_nowhere(
    jwks_api: str, signing_key: KeyPair, record: Record
) -> None:
    scenario = record("13-jwt", "13. Bad input: the JWT attack list")
    sub = new_user_id()
    listed = attacks(signing_key, sub)
    scenario.injected = (
        f"{len(listed)} forged or broken session tokens ({', '.join(listed)}) against "
        "GET /users/me of a users API verifying against a JWKS by `kid`, with an audience set"
    )

    def me(token: str) -> httpx.Response:
        return httpx.get(
            f"{jwks_api}/users/me", headers={"Authorization": f"Bearer {token}"}, timeout=10
        )

    genuine = me(signing_key.token(sub, aud=AUDIENCE))
    answers = {name: me(token).status_code for name, token in listed.items()}
    scenario.counts = {
        "attacks": len(answers),
        "refused 401": sum(1 for s in answers.values() if s == 401),
        "let in": sum(1 for s in answers.values() if s < 300 or s == 404),
        "5xx": sum(1 for s in answers.values() if s >= 500),
    }
    scenario.observe(
        f"the genuine token: {genuine.status_code} (the user has no profile yet: past the "
        "token check); every attack: "
        + ", ".join(f"{name} {status}" for name, status in answers.items())
    )
    assert genuine.status_code == 404, genuine.text
    assert answers == dict.fromkeys(listed, 401)
