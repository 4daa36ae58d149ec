"""A signed-in caller of the videos API, for the videos end-to-end tests."""

from __future__ import annotations

from typing import Any

import httpx

from support import KeyPair


class Caller:
    """One signed-in user of the videos API (or nobody, when `user_id` is None)."""

    def __init__(self, client: httpx.AsyncClient, key: KeyPair, user_id: str | None) -> None:
        self.client = client
        self.user_id = user_id or ""
        self.headers = {"Authorization": f"Bearer {key.token(user_id)}"} if user_id else {}

    async def request(
        self, method: str, path: str, *, headers: dict[str, str] | None = None, **kwargs: Any
    ) -> httpx.Response:
        return await self.client.request(
            method, path, headers={**self.headers, **(headers or {})}, **kwargs
        )

    async def create(self, title: str = "A video", url: str = "https://example.com/v") -> Any:
        response = await self.request("POST", "/videos", json={"title": title, "url": url})
        assert response.status_code == 201, response.text
        return response.json()

    async def page(self, **params: Any) -> Any:
        response = await self.request("GET", "/videos", params=params)
        assert response.status_code == 200, response.text
        return response.json()

    async def video(self) -> str:
        """A new video's id."""
        return str((await self.create("Site walk", "https://example.com/walk"))["id"])

    async def splat(self, video_id: str, **kwargs: Any) -> dict[str, Any]:
        response = await self.request("POST", f"/videos/{video_id}/splats", **kwargs)
        assert response.status_code == 202, response.text
        body: dict[str, Any] = response.json()
        return body

    async def read(self, splat_id: str) -> dict[str, Any]:
        response = await self.request("GET", f"/splats/{splat_id}")
        assert response.status_code == 200, response.text
        body: dict[str, Any] = response.json()
        return body
