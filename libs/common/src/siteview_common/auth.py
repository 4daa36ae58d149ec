"""Clerk session-token verification: RS256 only, networkless PEM or JWKS by `kid`.

Tokens are verified at request time (they live 60 s) and never travel through Kafka. A token
that verified is remembered (by its exact text, in a bounded LRU cache) with its claims, so the
requests a client sends with it skip the RS256 check; every such hit checks `exp` and `nbf`
against the clock again, with the same leeway, so an expired token is refused all the same. A
refused token is never remembered.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass, field
from typing import Any

import anyio.to_thread
import jwt
from cachetools import LRUCache
from jwt import PyJWKClient
from jwt.algorithms import RSAAlgorithm

from siteview_common.settings import ClerkAuthSettings

log = logging.getLogger(__name__)

ALGORITHMS = ["RS256"]
#: How many verified tokens a process remembers (about 2 KiB each, with their claims).
TOKEN_CACHE_SIZE = 10_000


class InvalidTokenError(Exception):
    """The token is missing, malformed, forged, expired or not meant for us."""


@dataclass(frozen=True, slots=True)
class ClerkClaims:
    user_id: str
    session_id: str | None
    claims: dict[str, Any] = field(repr=False)


@dataclass(frozen=True, slots=True)
class _Verified:
    """A token that passed every check, with the times that bound its validity."""

    claims: ClerkClaims
    exp: int
    nbf: int | None


@dataclass(frozen=True, slots=True)
class TokenPolicy:
    issuer: str | None = None
    authorized_parties: tuple[str, ...] = ()
    audience: str | None = None
    leeway: float = 5.0


class ClerkTokenVerifier:
    """Verifies `Authorization: Bearer` session tokens the way Clerk's SDKs do."""

    def __init__(
        self,
        policy: TokenPolicy,
        public_key: str | None = None,
        jwks_url: str | None = None,
        jwks_refetch_cooldown: float = 10.0,
        cache_size: int = TOKEN_CACHE_SIZE,
    ) -> None:
        if not public_key and not jwks_url:
            raise ValueError("a public key or a JWKS URL is required")
        self._policy = policy
        #: Verified tokens by their text; only the event loop's thread reads or writes it.
        self._verified: LRUCache[str, _Verified] = LRUCache(maxsize=cache_size)
        self._key = jwt.PyJWK.from_dict(_pem_to_jwk(public_key)) if public_key else None
        # PyJWKClient caches the key set and refetches once on an unknown `kid` (rotation),
        # at most once per cooldown, so forged kids cannot turn into a fetch storm.
        self._jwks = (
            PyJWKClient(
                jwks_url,
                cache_keys=True,
                lifespan=300,
                timeout=5,
                cooldown_duration=jwks_refetch_cooldown,
            )
            if jwks_url
            else None
        )

    @classmethod
    def from_settings(cls, settings: ClerkAuthSettings) -> ClerkTokenVerifier:
        return cls(
            TokenPolicy(
                issuer=settings.token_issuer,
                authorized_parties=settings.clerk_authorized_parties,
                audience=settings.clerk_audience,
                leeway=settings.clerk_leeway_seconds,
            ),
            public_key=settings.jwt_public_key,
            jwks_url=settings.clerk_jwks_url,
            jwks_refetch_cooldown=settings.clerk_jwks_refetch_cooldown_seconds,
        )

    @property
    def cached_tokens(self) -> int:
        """How many verified tokens are remembered."""
        return len(self._verified)

    async def verify(self, token: str) -> ClerkClaims:
        """The token's claims, or `InvalidTokenError`. A token verified before only has its
        times checked again; JWKS fetches run off the event loop."""
        cached = self._verified.get(token)
        if cached is not None:
            self._check_times(token, cached)
            return cached.claims
        if self._key is not None:
            claims = self._decode(token, self._key)
        else:
            claims = await anyio.to_thread.run_sync(self._verify_with_jwks, token)
        # `exp` (required) and `nbf` (when present) read as PyJWT read them when it checked them.
        nbf = claims.claims.get("nbf")
        self._verified[token] = _Verified(
            claims, int(claims.claims["exp"]), None if nbf is None else int(nbf)
        )
        return claims

    def _check_times(self, token: str, verified: _Verified) -> None:
        """PyJWT's own `exp` and `nbf` rules, against the clock now; an expired token is
        forgotten."""
        now, leeway = time.time(), self._policy.leeway
        if verified.exp <= now - leeway:
            self._verified.pop(token, None)
            raise InvalidTokenError("Signature has expired")
        if verified.nbf is not None and verified.nbf > now + leeway:
            raise InvalidTokenError("The token is not yet valid (nbf)")

    def _verify_with_jwks(self, token: str) -> ClerkClaims:
        assert self._jwks is not None
        try:
            key = self._jwks.get_signing_key_from_jwt(token)
        except jwt.PyJWKClientConnectionError as exc:
            log.warning("JWKS fetch failed: %s", exc)
            raise InvalidTokenError("signing keys unavailable") from exc
        except (jwt.PyJWKClientError, jwt.DecodeError) as exc:
            raise InvalidTokenError("unknown signing key") from exc
        return self._decode(token, key)

    def _decode(self, token: str, key: jwt.PyJWK) -> ClerkClaims:
        policy = self._policy
        try:
            claims: dict[str, Any] = jwt.decode(
                token,
                key,
                algorithms=ALGORITHMS,
                issuer=policy.issuer,
                audience=policy.audience,
                leeway=policy.leeway,
                options={
                    "require": ["sub", "exp", "iat"],
                    "verify_aud": policy.audience is not None,
                    "verify_iss": policy.issuer is not None,
                },
            )
        except jwt.InvalidTokenError as exc:
            raise InvalidTokenError(str(exc)) from exc
        if policy.authorized_parties and claims.get("azp") not in policy.authorized_parties:
            raise InvalidTokenError("azp is not an authorized party")
        sub = claims.get("sub")
        if not isinstance(sub, str) or not sub:
            raise InvalidTokenError("sub is missing")
        if claims.get("act"):
            log.info("impersonated session", extra={"sub": sub, "actor": claims["act"]})
        sid = claims.get("sid")
        return ClerkClaims(
            user_id=sub, session_id=sid if isinstance(sid, str) else None, claims=claims
        )


def warn_about_policy(settings: ClerkAuthSettings) -> None:
    """At start: say so once when production accepts tokens meant for any origin."""
    if not settings.clerk_authorized_parties and not settings.is_development:
        log.warning(
            "CLERK_AUTHORIZED_PARTIES is unset: the azp claim is not checked, so a session "
            "token minted for any origin of this Clerk instance is accepted"
        )


def _pem_to_jwk(pem: str) -> dict[str, Any]:
    """A JWK dict for an RSA public key in PEM, so the PEM and JWKS paths share one decoder."""
    public_key = RSAAlgorithm(RSAAlgorithm.SHA256).prepare_key(pem)
    jwk: dict[str, Any] = json.loads(RSAAlgorithm.to_jwk(public_key))
    jwk["alg"] = "RS256"
    return jwk


def bearer_token(authorization: str | None) -> str:
    """The token of an `Authorization: Bearer <token>` header, or `InvalidTokenError`."""
    if not authorization:
        raise InvalidTokenError("missing Authorization header")
    scheme, _, token = authorization.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise InvalidTokenError("expected a Bearer token")
    return token.strip()


#: Clerk's session cookie: the same session token, set on the application's own domain.
SESSION_COOKIE = "__session"


def session_token(authorization: str | None, cookie: str | None) -> str:
    """The token of the `Authorization: Bearer` header, else of the `__session` cookie (the
    header wins whenever it is sent, even when it is malformed), or `InvalidTokenError`."""
    if authorization:
        return bearer_token(authorization)
    if cookie and cookie.strip():
        return cookie.strip()
    raise InvalidTokenError("missing Authorization header and __session cookie")
