"""Clients the benchmark runs in processes of their own, on the load generator's CPU.

`e2e GATEWAY USERS_API SPEC`: at a steady rate, post a signed `user.updated` for one of the
users in SPEC (a JSON file: users with their tokens and current versions, the rate, the
duration) and poll that user's `GET /users/me` until the new version is visible; prints the
latencies from the gateway's 2xx to visibility, in ms, as a JSON list.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from pathlib import Path
from typing import Any

import httpx

from siteview_devstack.signing import sign

POLL_SECONDS = 0.001


async def one(
    client: httpx.AsyncClient,
    gateway: str,
    users_api: str,
    secret: str,
    user: dict[str, Any],
    body: bytes,
    version: int,
) -> float:
    response = await client.post(
        f"{gateway}/webhooks/clerk", content=body, headers=sign(body, secret)
    )
    response.raise_for_status()
    acked = time.perf_counter()
    headers = {"Authorization": f"Bearer {user['token']}"}
    while True:
        seen = await client.get(f"{users_api}/users/me", headers=headers)
        if seen.status_code == 200 and seen.json().get("updatedAt", 0) >= version:
            return (time.perf_counter() - acked) * 1000
        await asyncio.sleep(POLL_SECONDS)


async def e2e(gateway: str, users_api: str, spec: dict[str, Any]) -> list[float]:
    users: list[dict[str, Any]] = spec["users"]
    template: dict[str, Any] = spec["template"]
    rate, seconds, secret = float(spec["rate"]), float(spec["seconds"]), spec["secret"]
    limits = httpx.Limits(max_connections=64, max_keepalive_connections=64)
    async with httpx.AsyncClient(timeout=30, limits=limits) as client:
        tasks = []
        started = time.perf_counter()
        for i in range(int(rate * seconds)):
            user = users[i % len(users)]
            user["version"] += 1
            template["data"].update(id=user["id"], updated_at=user["version"])
            body = json.dumps(template).encode()
            due = started + i / rate
            await asyncio.sleep(max(0.0, due - time.perf_counter()))
            tasks.append(
                asyncio.create_task(
                    one(client, gateway, users_api, secret, user, body, user["version"])
                )
            )
        return list(await asyncio.gather(*tasks))


if __name__ == "__main__":
    if sys.argv[1] == "e2e":
        spec = json.loads(Path(sys.argv[4]).read_text())
        print(json.dumps(asyncio.run(e2e(sys.argv[2], sys.argv[3], spec))))
