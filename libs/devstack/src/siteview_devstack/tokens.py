"""`siteview-dev-token`: mint a session token signed with the development key, shaped like
Clerk's (`sub`, `sid`, `iss`, `azp`, `exp`, `nbf`, `iat`, `v`). Only a service running with
APP_ENV=development and no CLERK_JWT_KEY / CLERK_JWKS_URL trusts it."""

from __future__ import annotations

import argparse
import os
import time
import uuid
from pathlib import Path
from typing import Any

import jwt

from siteview_common.dev import DEV_ISSUER, DEV_JWT_KID
from siteview_devstack.dev_key import DEV_JWT_PRIVATE_KEY


def mint_token(
    sub: str,
    *,
    private_key: str = DEV_JWT_PRIVATE_KEY,
    kid: str = DEV_JWT_KID,
    issuer: str = DEV_ISSUER,
    azp: str | None = "http://localhost:3000",
    ttl: int = 3600,
    now: float | None = None,
    **extra: Any,
) -> str:
    issued = int(now if now is not None else time.time())
    claims: dict[str, Any] = {
        "sub": sub,
        "sid": f"sess_{uuid.uuid4().hex[:24]}",
        "iss": issuer,
        "iat": issued,
        "nbf": issued - 5,
        "exp": issued + ttl,
        "v": 2,
    }
    if azp:
        claims["azp"] = azp
    claims.update(extra)
    return jwt.encode(claims, private_key, algorithm="RS256", headers={"kid": kid})


def main() -> None:
    parser = argparse.ArgumentParser(prog="siteview-dev-token", description=__doc__)
    parser.add_argument("sub", help="the Clerk user id the token speaks for, e.g. user_123")
    parser.add_argument("--ttl", type=int, default=3600, help="lifetime in seconds")
    parser.add_argument("--azp", default="http://localhost:3000", help="authorized party")
    parser.add_argument("--aud", default=None, help="audience (e.g. convex)")
    parser.add_argument("--iss", default=None, help="issuer (default: CLERK_ISSUER, else dev)")
    parser.add_argument(
        "--key",
        type=Path,
        default=None,
        help="PEM private key to sign with (default: the dev key); its public half is what "
        "the services must have in CLERK_JWT_KEY",
    )
    parser.add_argument("--kid", default=DEV_JWT_KID, help="key id for the JWT header")
    args = parser.parse_args()
    extra = {"aud": args.aud} if args.aud else {}
    print(
        mint_token(
            args.sub,
            private_key=args.key.read_text() if args.key else DEV_JWT_PRIVATE_KEY,
            kid=args.kid,
            issuer=args.iss or os.environ.get("CLERK_ISSUER") or DEV_ISSUER,
            ttl=args.ttl,
            azp=args.azp,
            **extra,
        )
    )


if __name__ == "__main__":
    main()
