"""Clients the benchmark runs in processes of their own, on the load generator's CPU.

`e2e GATEWAY USERS_API SPEC`: at a steady rate, post a signed `user.updated` for one of the
users in SPEC (a JSON file: users with their tokens and current versions, the rate, the
duration) and poll that user's `GET /users/me` until the new version is visible; prints the
latencies from the gateway's 2xx to visibility, in ms, as a JSON list.

`live GATEWAY USERS_API SPEC`: the same posts, with every user's `GET /users/me/live` stream
open; prints the latencies from the gateway's 2xx to the push carrying the new version, in ms.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import httpx

from siteview_devstack.signing import sign

POLL_SECONDS = 0.001


Visible = Callable[[httpx.AsyncClient, dict[str, Any], int, float], Awaitable[float]]


async def steady(
    client: httpx.AsyncClient, gateway: str, spec: dict[str, Any], visible: Visible
) -> list[float]:
    """Post a signed `user.updated` per 1/rate s, each for the next user; `visible` waits
    until that version is seen and answers the ms from the gateway's 2xx."""
    users: list[dict[str, Any]] = spec["users"]
    template: dict[str, Any] = spec["template"]
    rate, seconds, secret = float(spec["rate"]), float(spec["seconds"]), spec["secret"]

    async def one(user: dict[str, Any], body: bytes, version: int) -> float:
        response = await client.post(
            f"{gateway}/webhooks/clerk", content=body, headers=sign(body, secret)
        )
        response.raise_for_status()
        return await visible(client, user, version, time.perf_counter())

    tasks = []
    started = time.perf_counter()
    for i in range(int(rate * seconds)):
        user = users[i % len(users)]
        user["version"] += 1
        template["data"].update(id=user["id"], updated_at=user["version"])
        body = json.dumps(template).encode()
        await asyncio.sleep(max(0.0, started + i / rate - time.perf_counter()))
        tasks.append(asyncio.create_task(one(user, body, user["version"])))
    return list(await asyncio.gather(*tasks))


def client_for(users: int) -> httpx.AsyncClient:
    limits = httpx.Limits(max_connections=64 + users, max_keepalive_connections=64 + users)
    return httpx.AsyncClient(timeout=30, limits=limits)


async def e2e(gateway: str, users_api: str, spec: dict[str, Any]) -> list[float]:
    async def polled(
        client: httpx.AsyncClient, user: dict[str, Any], version: int, acked: float
    ) -> float:
        headers = {"Authorization": f"Bearer {user['token']}"}
        while True:
            seen = await client.get(f"{users_api}/users/me", headers=headers)
            if seen.status_code == 200 and seen.json().get("updatedAt", 0) >= version:
                return (time.perf_counter() - acked) * 1000
            await asyncio.sleep(POLL_SECONDS)

    async with client_for(0) as client:
        return await steady(client, gateway, spec, polled)


async def live(gateway: str, users_api: str, spec: dict[str, Any]) -> list[float]:
    """Each user's stream is read from before the first post; a push is timed when it
    arrives, and matched to the post of the version it carries (or a later one)."""
    arrivals: dict[str, list[tuple[int, float]]] = {u["id"]: [] for u in spec["users"]}
    changed = asyncio.Condition()

    async def read(client: httpx.AsyncClient, user: dict[str, Any], opened: asyncio.Event) -> None:
        headers = {"Authorization": f"Bearer {user['token']}"}
        async with client.stream("GET", f"{users_api}/users/me/live", headers=headers) as stream:
            stream.raise_for_status()
            opened.set()
            async for line in stream.aiter_lines():
                if line.startswith("data:") and (value := json.loads(line[5:])) is not None:
                    async with changed:
                        arrivals[user["id"]].append((value["updatedAt"], time.perf_counter()))
                        changed.notify_all()

    async def pushed(
        client: httpx.AsyncClient, user: dict[str, Any], version: int, acked: float
    ) -> float:
        async with changed:
            await changed.wait_for(lambda: any(v >= version for v, _ in arrivals[user["id"]]))
            at = min(t for v, t in arrivals[user["id"]] if v >= version)
        return max(0.0, at - acked) * 1000

    async with client_for(len(spec["users"])) as client:
        opened = [asyncio.Event() for _ in spec["users"]]
        readers = [
            asyncio.create_task(read(client, user, event))
            for user, event in zip(spec["users"], opened, strict=True)
        ]
        await asyncio.gather(*(event.wait() for event in opened))
        try:
            return await steady(client, gateway, spec, pushed)
        finally:
            for reader in readers:
                reader.cancel()
            await asyncio.gather(*readers, return_exceptions=True)


if __name__ == "__main__":
    probe = {"e2e": e2e, "live": live}[sys.argv[1]]
    spec = json.loads(Path(sys.argv[4]).read_text())
    print(json.dumps(asyncio.run(probe(sys.argv[2], sys.argv[3], spec))))
