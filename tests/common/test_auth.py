"""Clerk session-token verification, one test per way a token can be wrong, and the cache of
verified tokens: bounded, re-checking the times of every token it returns, holding no refused
token."""

from __future__ import annotations

import base64
import json
import threading
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx
import jwt
import pytest
from fastapi import APIRouter, FastAPI
from jwt.algorithms import RSAAlgorithm

from siteview_common.auth import (
    ClerkTokenVerifier,
    InvalidTokenError,
    TokenPolicy,
    bearer_token,
)
from siteview_common.deps import CurrentUser
from siteview_common.settings import CommonSettings
from siteview_common.webapp import create_app
from support import TEST_AZP, TEST_ISSUER, KeyPair, served

USER = "user_auth_test"
POLICY = TokenPolicy(issuer=TEST_ISSUER, authorized_parties=(TEST_AZP,), leeway=5)


@pytest.fixture(scope="module")
def key() -> KeyPair:
    return KeyPair("kid-a")


@pytest.fixture(scope="module")
def verifier(key: KeyPair) -> ClerkTokenVerifier:
    return ClerkTokenVerifier(POLICY, public_key=key.public_pem)


async def test_a_valid_token_yields_the_user(key: KeyPair, verifier: ClerkTokenVerifier) -> None:
    claims = await verifier.verify(key.token(USER))
    assert claims.user_id == USER
    assert claims.session_id and claims.session_id.startswith("sess_")


def _unsigned(claims: dict[str, Any]) -> str:
    def part(obj: dict[str, Any]) -> str:
        return base64.urlsafe_b64encode(json.dumps(obj).encode()).rstrip(b"=").decode()

    return f"{part({'alg': 'none', 'typ': 'JWT'})}.{part(claims)}."


def _claims(**overrides: Any) -> dict[str, Any]:
    now = int(time.time())
    claims = {"sub": USER, "iss": TEST_ISSUER, "azp": TEST_AZP, "iat": now, "exp": now + 60}
    claims.update(overrides)
    return claims


async def test_alg_none_is_refused(verifier: ClerkTokenVerifier) -> None:
    with pytest.raises(InvalidTokenError):
        await verifier.verify(_unsigned(_claims()))


async def test_hs256_signed_with_the_public_key_is_refused(
    key: KeyPair, verifier: ClerkTokenVerifier
) -> None:
    # The classic confusion attack: HMAC keyed with the (public) RSA key text.
    header = {"alg": "HS256", "typ": "JWT"}
    signing_input = ".".join(
        base64.urlsafe_b64encode(json.dumps(p).encode()).rstrip(b"=").decode()
        for p in (header, _claims())
    )
    import hashlib
    import hmac

    mac = hmac.new(key.public_pem.encode(), signing_input.encode(), hashlib.sha256).digest()
    token = f"{signing_input}.{base64.urlsafe_b64encode(mac).rstrip(b'=').decode()}"
    with pytest.raises(InvalidTokenError):
        await verifier.verify(token)


@pytest.mark.parametrize(
    "overrides",
    [
        {"issuer": "https://evil.example"},
        {"azp": "https://evil.example"},
        {"azp": None},
        {"ttl": -60},
        {"now": time.time() + 120},  # nbf/iat in the future
    ],
    ids=["wrong-iss", "wrong-azp", "missing-azp", "expired", "not-yet-valid"],
)
async def test_policy_violations_are_refused(
    key: KeyPair, verifier: ClerkTokenVerifier, overrides: dict[str, Any]
) -> None:
    with pytest.raises(InvalidTokenError):
        await verifier.verify(key.token(USER, **overrides))


async def test_expiry_within_the_leeway_is_accepted(
    key: KeyPair, verifier: ClerkTokenVerifier
) -> None:
    token = key.token(USER, ttl=-2)
    assert (await verifier.verify(token)).user_id == USER


async def test_a_token_signed_by_another_key_is_refused(verifier: ClerkTokenVerifier) -> None:
    with pytest.raises(InvalidTokenError):
        await verifier.verify(KeyPair("kid-a").token(USER))


async def test_audience_is_checked_only_when_configured(key: KeyPair) -> None:
    convex = ClerkTokenVerifier(
        TokenPolicy(issuer=TEST_ISSUER, audience="convex"), public_key=key.public_pem
    )
    assert (await convex.verify(key.token(USER, aud="convex"))).user_id == USER
    with pytest.raises(InvalidTokenError):
        await convex.verify(key.token(USER, aud="other"))
    with pytest.raises(InvalidTokenError):
        await convex.verify(key.token(USER))
    lax = ClerkTokenVerifier(TokenPolicy(issuer=TEST_ISSUER), public_key=key.public_pem)
    assert (await lax.verify(key.token(USER, aud="anything"))).user_id == USER


async def test_missing_sub_is_refused(key: KeyPair) -> None:
    token = jwt.encode(
        {k: v for k, v in _claims().items() if k != "sub"},
        key.private_pem,
        algorithm="RS256",
        headers={"kid": key.kid},
    )
    verifier = ClerkTokenVerifier(TokenPolicy(), public_key=key.public_pem)
    with pytest.raises(InvalidTokenError):
        await verifier.verify(token)


@pytest.mark.parametrize("header", [None, "", "Basic abc", "Bearer", "Bearer  "])
def test_bearer_header_must_carry_a_token(header: str | None) -> None:
    with pytest.raises(InvalidTokenError):
        bearer_token(header)


def test_bearer_token_is_extracted() -> None:
    assert bearer_token("Bearer abc.def.ghi") == "abc.def.ghi"


class JWKS:
    """A local JWKS endpoint whose key set can rotate, counting fetches."""

    def __init__(self) -> None:
        self.keys: list[KeyPair] = []
        self.fetches = 0
        jwks = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                jwks.fetches += 1
                body = json.dumps({"keys": [jwks.jwk(k) for k in jwks.keys]}).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/.well-known/jwks.json"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    @staticmethod
    def jwk(key: KeyPair) -> dict[str, Any]:
        public = RSAAlgorithm(RSAAlgorithm.SHA256).prepare_key(key.public_pem)
        data: dict[str, Any] = json.loads(RSAAlgorithm.to_jwk(public))
        data.update(kid=key.kid, use="sig", alg="RS256")
        return data


@pytest.fixture
def jwks() -> Iterator[JWKS]:
    server = JWKS()
    yield server
    server.server.shutdown()


async def test_jwks_keys_are_cached_and_an_unknown_kid_refetches_once(jwks: JWKS) -> None:
    old, new = KeyPair("kid-old"), KeyPair("kid-new")
    jwks.keys = [old]
    verifier = ClerkTokenVerifier(POLICY, jwks_url=jwks.url, jwks_refetch_cooldown=0)
    assert (await verifier.verify(old.token(USER))).user_id == USER
    assert (await verifier.verify(old.token(USER))).user_id == USER
    assert jwks.fetches == 1
    jwks.keys = [old, new]  # Clerk rotated its signing key
    assert (await verifier.verify(new.token(USER))).user_id == USER
    assert jwks.fetches == 2


async def test_unknown_kids_refetch_at_most_once_per_cooldown(jwks: JWKS) -> None:
    known = KeyPair("kid-known")
    jwks.keys = [known]
    verifier = ClerkTokenVerifier(POLICY, jwks_url=jwks.url, jwks_refetch_cooldown=60)
    assert (await verifier.verify(known.token(USER))).user_id == USER
    for _ in range(5):
        with pytest.raises(InvalidTokenError):
            await verifier.verify(KeyPair(f"kid-forged-{_}").token(USER))
    assert jwks.fetches == 1


async def test_a_kid_the_jwks_does_not_have_is_refused(jwks: JWKS) -> None:
    jwks.keys = [KeyPair("kid-1")]
    verifier = ClerkTokenVerifier(POLICY, jwks_url=jwks.url)
    with pytest.raises(InvalidTokenError):
        await verifier.verify(KeyPair("kid-unknown").token(USER))


async def test_an_unreachable_jwks_is_an_invalid_token_not_a_crash() -> None:
    verifier = ClerkTokenVerifier(POLICY, jwks_url="http://127.0.0.1:9/.well-known/jwks.json")
    with pytest.raises(InvalidTokenError):
        await verifier.verify(KeyPair("kid-x").token(USER))


# A verified token is remembered with its claims; every later use checks its times again.


def _expiring_token(key: KeyPair) -> tuple[str, float]:
    """A token already past `exp` but still within the 5 s leeway for at least another
    second; and when the leeway runs out."""
    now = int(time.time())
    token = key.token(USER, ttl=-3, now=now)  # exp = now - 3: accepted until now + 2
    return token, now - 3 + POLICY.leeway


def _sleep_until(moment: float) -> None:
    time.sleep(max(0.0, moment - time.time()) + 0.05)


async def test_a_cached_token_is_refused_once_it_expires(key: KeyPair) -> None:
    verifier = ClerkTokenVerifier(POLICY, public_key=key.public_pem)
    token, refused_from = _expiring_token(key)
    assert (await verifier.verify(token)).user_id == USER
    assert (await verifier.verify(token)).user_id == USER  # from the cache
    _sleep_until(refused_from)
    with pytest.raises(InvalidTokenError, match="expired"):
        await verifier.verify(token)
    with pytest.raises(InvalidTokenError, match="expired"):
        await verifier.verify(token)


def test_a_cached_token_that_expired_answers_401(key: KeyPair) -> None:
    verifier = ClerkTokenVerifier(POLICY, public_key=key.public_pem)
    router = APIRouter()

    @router.get("/whoami")
    async def whoami(user: CurrentUser) -> dict[str, str]:
        return {"sub": user.user_id}

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        app.state.verifier = verifier
        yield

    app = create_app(
        title="auth-under-test",
        settings=CommonSettings(),
        lifespan=lifespan,
        checks={},
        routers=[router],
    )
    token, refused_from = _expiring_token(key)
    headers = {"Authorization": f"Bearer {token}"}
    with served(app) as url, httpx.Client(base_url=url, headers=headers) as client:
        assert client.get("/whoami").json() == {"sub": USER}
        assert client.get("/whoami").json() == {"sub": USER}
        assert verifier.cached_tokens == 1
        _sleep_until(refused_from)
        response = client.get("/whoami")
    assert response.status_code == 401
    assert response.json() == {"detail": "missing or invalid session token"}
    assert response.headers["WWW-Authenticate"] == "Bearer"


async def test_another_token_of_the_same_user_is_verified_on_its_own(key: KeyPair) -> None:
    verifier = ClerkTokenVerifier(POLICY, public_key=key.public_pem)
    first = await verifier.verify(key.token(USER))
    for refused in (
        KeyPair("kid-a").token(USER),  # same sub and kid, another key
        key.token(USER, ttl=-60),  # expired
        key.token(USER, azp="https://evil.example"),
    ):
        with pytest.raises(InvalidTokenError):
            await verifier.verify(refused)
    second = await verifier.verify(key.token(USER))
    assert second.user_id == USER
    assert second.session_id != first.session_id
    assert verifier.cached_tokens == 2


@pytest.mark.parametrize(
    "bad",
    [
        lambda key: KeyPair(key.kid).token(USER),
        lambda key: key.token(USER, ttl=-60),
        lambda key: key.token(USER, now=time.time() + 120),
        lambda key: key.token(USER, azp="https://evil.example"),
        lambda key: key.token(USER, issuer="https://evil.example"),
        lambda key: _unsigned(_claims()),
    ],
    ids=["other-key", "expired", "not-yet-valid", "wrong-azp", "wrong-iss", "alg-none"],
)
async def test_a_refused_token_is_never_cached(key: KeyPair, bad: Any) -> None:
    verifier = ClerkTokenVerifier(POLICY, public_key=key.public_pem)
    token = bad(key)
    for _ in range(2):
        with pytest.raises(InvalidTokenError):
            await verifier.verify(token)
    assert verifier.cached_tokens == 0


async def test_the_cache_is_bounded(key: KeyPair) -> None:
    verifier = ClerkTokenVerifier(POLICY, public_key=key.public_pem, cache_size=3)
    for _ in range(5):
        await verifier.verify(key.token(USER))
    assert verifier.cached_tokens == 3


async def test_jwks_verified_tokens_are_cached_too(jwks: JWKS) -> None:
    signer = KeyPair("kid-cached")
    jwks.keys = [signer]
    verifier = ClerkTokenVerifier(POLICY, jwks_url=jwks.url, jwks_refetch_cooldown=0)
    token = signer.token(USER)
    assert (await verifier.verify(token)).user_id == USER
    assert verifier.cached_tokens == 1
    with pytest.raises(InvalidTokenError):
        await verifier.verify(KeyPair("kid-cached").token(USER))  # a forged twin of the kid
    assert (await verifier.verify(token)).user_id == USER
    assert verifier.cached_tokens == 1
