"""The demo page (examples/web) in headless Chromium, served by `make dev`'s supervisor run as
`make dev` runs it (a process of its own, on free ports): a developer pastes a dev session
token, the page opens the videos and payments live streams with the `__session` cookie, and a
payment attempt turning paid at the gateway shows as paid on the page without a reload.

Chromium is Debian's (/usr/bin/chromium: `python -m siteview_devstack.browser` installs it;
`make test` does that first, and leaves these tests out, saying so, where it cannot). Playwright
only drives it (`executable_path`): it never downloads a browser of its own."""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from dataclasses import dataclass

import httpx
import pytest
from devstack.test_dev_supervisor import BANNER, DevCommand, dev_command, dev_ports
from payments.billing import CREATED_AT, attempt_event, new_id
from playwright.sync_api import Browser, Page, sync_playwright

from siteview_common.dev import DEV_WEBHOOK_SECRET
from siteview_devstack.broker import free_port
from siteview_devstack.browser import CHROMIUM, LAUNCH_ARGS
from siteview_devstack.tokens import mint_token
from support import Gateway, new_user_id, user_event

#: Correctness bounds, not performance checks: how long the page may take to show a change.
SHOWN_WITHIN_MS = 15_000

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(300)]


@dataclass(frozen=True)
class Dev:
    command: DevCommand
    base: int
    page_url: str

    @property
    def gateway(self) -> Gateway:
        return Gateway(f"http://127.0.0.1:{self.base}", secret=DEV_WEBHOOK_SECRET)

    @property
    def videos_api(self) -> str:
        return f"http://127.0.0.1:{self.base + 3}"


@pytest.fixture(scope="module")
def dev() -> Iterator[Dev]:
    """`make dev` with every service, the page on a free port of its own."""
    base, *_, args = dev_ports("users,payments,videos")
    page_port = free_port()
    with dev_command(*args, "--web-port", str(page_port)) as command:
        command.wait_for(BANNER)
        # The banner names the page, and the APIs it streams from (not on the usual ports).
        match = re.search(r"demo page (\S+)", command.output())
        assert match, command.output()
        page_url = match[1]
        assert page_url == (
            f"http://127.0.0.1:{page_port}/?videos=http://127.0.0.1:{base + 3}"
            f"&payments=http://127.0.0.1:{base + 2}"
        )
        yield Dev(command, base, page_url)


@pytest.fixture(scope="module")
def chromium() -> Iterator[Browser]:
    if not CHROMIUM.exists():
        pytest.fail(
            f"{CHROMIUM} is missing: `.venv/bin/python -m siteview_devstack.browser` installs "
            "it (make test does so before its first pass)"
        )
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=[*LAUNCH_ARGS])
        try:
            yield browser
        finally:
            browser.close()


@pytest.fixture
def page(chromium: Browser) -> Iterator[Page]:
    """A tab of a fresh profile (no cookies)."""
    context = chromium.new_context()
    try:
        yield context.new_page()
    finally:
        context.close()


def open_with_token(page: Page, url: str, token: str) -> list[str]:
    """Open the page, mark its window, paste `token` and connect; the main frame's
    navigations from then on (a reload would add one, and lose the mark)."""
    navigations: list[str] = []
    page.on("framenavigated", lambda frame: navigations.append(frame.url))
    page.goto(url)
    page.evaluate("window.loadMark = 'loaded once'")
    page.fill("#token", token)
    page.click("#connect")
    return navigations


def test_the_page_shows_the_videos_and_a_payment_turning_paid_without_a_reload(
    dev: Dev, page: Page
) -> None:
    user_id = new_user_id()
    token = mint_token(user_id)  # what `.venv/bin/siteview-dev-token <user id>` prints
    gateway = dev.gateway
    created = user_event("user.created", user_id, updated_at=CREATED_AT - 60_000)
    assert gateway.deliver(created).status_code == 202
    response = httpx.post(
        f"{dev.videos_api}/videos",
        json={"title": "Demo day", "url": "https://example.com/watch/demo"},
        headers={"Authorization": f"Bearer {token}"},
        timeout=10,
    )
    assert response.status_code == 201, response.text
    video = response.json()

    navigations = open_with_token(page, dev.page_url, token)
    shown = page.wait_for_selector(f'[data-video-id="{video["id"]}"]', timeout=SHOWN_WITHIN_MS)
    assert shown is not None
    assert shown.inner_text().startswith("Demo day")
    [cookie] = [c for c in page.context.cookies() if c["name"] == "__session"]
    assert (cookie["value"], cookie["domain"], cookie["path"]) == (token, "127.0.0.1", "/")
    assert cookie["sameSite"] == "Lax"

    attempt_id, payment_id = new_id("pa"), new_id("pay")
    pending = attempt_event(
        user_id,
        status="pending",
        attempt_id=attempt_id,
        payment_id=payment_id,
        updated_at=CREATED_AT,
        kind="paymentAttempt.updated",
    )
    assert gateway.deliver(pending).status_code == 202
    row = page.wait_for_selector(
        f'[data-attempt-id="{attempt_id}"][data-status="pending"]', timeout=SHOWN_WITHIN_MS
    )
    assert row is not None

    paid = attempt_event(
        user_id,
        status="paid",
        attempt_id=attempt_id,
        payment_id=payment_id,
        updated_at=CREATED_AT + 4_000,
    )
    assert gateway.deliver(paid).status_code == 202
    accepted = time.monotonic()
    page.wait_for_selector(
        f'[data-attempt-id="{attempt_id}"][data-status="paid"]', timeout=SHOWN_WITHIN_MS
    )
    shown_after = time.monotonic() - accepted
    print(
        f"\ngateway 202 for paymentAttempt.updated (paid) -> 'paid' on the page: "
        f"{shown_after * 1000:.0f} ms"
    )

    # The same row changed in place: no reload, no navigation, the window is the one we marked.
    assert row.evaluate("node => node.isConnected")
    assert row.get_attribute("data-status") == "paid"
    assert row.get_attribute("data-payment-id") == payment_id
    badge = row.query_selector(".badge")
    assert badge is not None and badge.inner_text() == "paid"
    assert page.evaluate("window.loadMark") == "loaded once"
    assert navigations == [dev.page_url]
    # Both streams are live, and the videos list still shows the video.
    for stream in ("videos", "payments"):
        assert page.get_attribute(f'.state[data-stream="{stream}"]', "data-state") == "live"
    assert page.query_selector(f'[data-video-id="{video["id"]}"]') is not None


def test_an_expired_token_shows_the_session_expired_state(dev: Dev, page: Page) -> None:
    expired = mint_token(new_user_id(), now=time.time() - 7200)  # expired an hour ago
    open_with_token(page, dev.page_url, expired)
    for stream in ("videos", "payments"):
        state = page.wait_for_selector(
            f'.state[data-stream="{stream}"][data-state="unauthorized"]',
            timeout=SHOWN_WITHIN_MS,
        )
        assert state is not None
        assert "session expired or invalid" in state.inner_text()
    assert page.query_selector("[data-video-id], [data-attempt-id]") is None
