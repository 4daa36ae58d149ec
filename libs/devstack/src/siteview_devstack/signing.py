"""`siteview-dev-sign FILE`: sign a webhook body as Clerk (Svix) would, printing the three
Svix headers one per line, ready for `curl -H @headers`. Uses svix's own signer."""

from __future__ import annotations

import argparse
import os
import uuid
from datetime import UTC, datetime
from pathlib import Path

from svix.webhooks import Webhook

from siteview_common.dev import DEV_WEBHOOK_SECRET


def sign(
    body: bytes, secret: str, *, msg_id: str | None = None, at: datetime | None = None
) -> dict[str, str]:
    msg_id = msg_id or f"msg_{uuid.uuid4().hex}"
    at = at or datetime.now(UTC)
    signature = Webhook(secret).sign(msg_id, at, body.decode())
    return {
        "svix-id": msg_id,
        "svix-timestamp": str(int(at.timestamp())),
        "svix-signature": signature,
    }


def main() -> None:
    parser = argparse.ArgumentParser(prog="siteview-dev-sign", description=__doc__)
    parser.add_argument("file", type=Path, help="the JSON body to sign (sent byte for byte)")
    parser.add_argument("--id", dest="msg_id", default=None, help="Svix message id to reuse")
    parser.add_argument(
        "--secret",
        default=None,
        help="signing secret (default: first of CLERK_WEBHOOK_SIGNING_SECRET, else the dev one)",
    )
    args = parser.parse_args()
    configured = os.environ.get("CLERK_WEBHOOK_SIGNING_SECRET") or os.environ.get(
        "CLERK_WEBHOOK_SECRET"
    )
    secret = args.secret or (
        configured.replace(",", " ").split()[0] if configured else DEV_WEBHOOK_SECRET
    )
    for name, value in sign(args.file.read_bytes(), secret, msg_id=args.msg_id).items():
        print(f"{name}: {value}")


if __name__ == "__main__":
    main()
