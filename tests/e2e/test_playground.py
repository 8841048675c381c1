"""The playground page at GET /, driven in headless Chromium against a real stack.

The browser is Debian's chromium (scripts/bootstrap.sh installs it), driven by the PyPI
playwright package: playwright's own browser download cannot work here. Screenshots go
to .cache/test-logs/playground/ for a person to look at.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import parse_qs, urlparse

import httpx
import pytest

from tests.conftest import Stack, StackFactory
from tests.media import image_bytes, video_bytes
from tests.processes import LOG_DIR
from tests.sse import iter_events

if TYPE_CHECKING:
    from playwright.sync_api import Browser, FilePayload, Locator, Page

CHROMIUM = Path("/usr/bin/chromium")
SCREENSHOTS = LOG_DIR / "playground"
WAIT_MS = 30_000
# The last turn on the page, in the page's own terms (for wait_for_function).
LAST_TURN_JS = "[...document.querySelectorAll('.turn')].pop()"


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    if not CHROMIUM.exists():
        pytest.skip(f"no browser: {CHROMIUM} is missing (scripts/bootstrap.sh installs Debian's chromium)")
    sync_api = pytest.importorskip(
        "playwright.sync_api", reason="the playwright package is missing (see requirements-dev.txt)"
    )
    with sync_api.sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=str(CHROMIUM), headless=True)
        yield chromium
        chromium.close()


@pytest.fixture
def page(browser: Browser) -> Iterator[Page]:
    context = browser.new_context(viewport={"width": 1000, "height": 800})
    context.set_default_timeout(WAIT_MS)
    yield context.new_page()
    context.close()


def screenshot(page: Page, name: str) -> None:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SCREENSHOTS / f"{name}.png"), full_page=True)


def last_turn(page: Page) -> Locator:
    return page.locator(".turn").last


def shown_text(page: Page) -> tuple[str, str]:
    """The reasoning and the answer the last turn shows."""
    turn = last_turn(page)
    return turn.locator(".reasoning-text").text_content() or "", turn.locator(".answer").text_content() or ""


def wait_for_more_text(page: Page, than: int) -> None:
    page.wait_for_function(
        f"""(than) => {{
          const turn = {LAST_TURN_JS};
          const shown = (selector) => turn.querySelector(selector).textContent;
          return (shown('.reasoning-text') + shown('.answer')).length > than;
        }}""",
        arg=than,
    )


def wait_for_state(page: Page, state: str) -> None:
    page.wait_for_function(f"(state) => {LAST_TURN_JS}?.dataset.state === state", arg=state)


def replayed_text(stack: Stack, session_id: str) -> tuple[str, str, str | None]:
    """Reasoning, answer and finish reason of a whole session, replayed from its start."""
    url = f"{stack.gateway.url}/v1/sessions/{session_id}/stream"
    reasoning, answer, finish = [], [], None
    with httpx.stream("GET", url, timeout=30) as response:
        for event in iter_events(response):
            if event.is_done:
                break
            for choice in json.loads(event.data).get("choices", []):
                reasoning.append(choice["delta"].get("reasoning_content") or "")
                answer.append(choice["delta"].get("content") or "")
                finish = choice["finish_reason"] or finish
    return "".join(reasoning), "".join(answer), finish


def test_stream_reload_mid_stream_and_stop(stack: Stack, page: Page) -> None:
    page.goto(f"{stack.gateway.url}/")
    page.fill("#max-tokens", "20000")  # only the stop button ends it
    page.fill("#prompt", "Tell me about the sea.")
    page.click("#send")

    wait_for_more_text(page, 20)
    session_id = parse_qs(urlparse(page.url).query)["session"][0]
    assert last_turn(page).get_attribute("data-state") == "streaming"
    assert "tokens/s" in (last_turn(page).locator(".rate").text_content() or "")
    screenshot(page, "1-streaming")

    # Reload mid-stream: the page shows what it had and continues from there.
    assert httpx.get(f"{stack.gateway.url}/v1/sessions/{session_id}", timeout=5).json()["status"] == "running"
    page.reload()
    assert parse_qs(urlparse(page.url).query)["session"] == [session_id]
    reasoning, answer = shown_text(page)
    wait_for_more_text(page, len(reasoning + answer) + 20)
    last_turn(page).locator("summary").click()  # unfold the reasoning for the screenshot
    screenshot(page, "2-continued-after-reload")

    page.click("#stop")
    wait_for_state(page, "cancelled")
    assert last_turn(page).locator(".status").text_content() == "cancelled"
    screenshot(page, "3-cancelled")

    # Everything the page shows, once each: exactly the whole session, replayed.
    replay_reasoning, replay_answer, finish = replayed_text(stack, session_id)
    assert finish == "cancelled"
    assert shown_text(page) == (replay_reasoning, replay_answer)

    # A reload after the end shows the same text again, without asking for anything new.
    page.reload()
    wait_for_state(page, "cancelled")
    assert page.locator(".turn").count() == 1
    assert shown_text(page) == (replay_reasoning, replay_answer)


def test_image_and_video_upload_then_a_follow_up(stack: Stack, page: Page) -> None:
    page.goto(f"{stack.gateway.url}/")
    page.fill("#max-tokens", "8")
    page.fill("#prompt", "What is in these?")
    png: FilePayload = {"name": "grey.png", "mimeType": "image/png", "buffer": image_bytes()}
    mp4: FilePayload = {"name": "ramp.mp4", "mimeType": "video/mp4", "buffer": video_bytes()}
    page.set_input_files("#image", files=[png])
    page.set_input_files("#video", files=[mp4])
    page.click("#send")
    wait_for_state(page, "finished")
    turn = last_turn(page)
    assert turn.locator(".status").text_content() == "finished (length)"
    assert "grey.png" in (turn.locator(".attachments").text_content() or "")
    session_id = parse_qs(urlparse(page.url).query)["session"][0]
    session = httpx.get(f"{stack.gateway.url}/v1/sessions/{session_id}", timeout=5).json()
    # Both media count in the prompt: far more tokens than the words alone.
    assert session["usage"]["prompt_tokens"] > 50

    # A follow-up carries the conversation: the first turn, media included, then the new prompt.
    page.fill("#prompt", "And then?")
    page.click("#send")
    page.wait_for_function("document.querySelectorAll('.turn').length === 2")
    wait_for_state(page, "finished")
    follow_up_id = parse_qs(urlparse(page.url).query)["session"][0]
    assert follow_up_id != session_id
    follow_up = httpx.get(f"{stack.gateway.url}/v1/sessions/{follow_up_id}", timeout=5).json()
    assert follow_up["usage"]["prompt_tokens"] > session["usage"]["prompt_tokens"]
    screenshot(page, "4-media-and-follow-up")

    # After a reload both turns are shown again, once each.
    page.reload()
    wait_for_state(page, "finished")
    assert page.locator(".turn .prompt").all_text_contents() == ["What is in these?", "And then?"]


def test_the_page_sends_the_api_key_it_keeps(make_stack: StackFactory, page: Page) -> None:
    # No worker: a request with a valid key gets as far as "no worker", one without gets 401.
    private = make_stack(workers=0, API_KEYS="secret-key")
    page.goto(f"{private.gateway.url}/")  # the page itself needs no key
    page.fill("#prompt", "Hello")
    page.click("#send")
    wait_for_state(page, "error")
    assert "API key" in (last_turn(page).locator(".status").text_content() or "")

    page.fill("#api-key", "secret-key")
    page.reload()  # the key is kept across reloads
    assert page.input_value("#api-key") == "secret-key"
    page.fill("#prompt", "Hello")
    page.click("#send")
    wait_for_state(page, "error")
    assert "worker" in (last_turn(page).locator(".status").text_content() or "")
    screenshot(page, "5-api-key")


def test_the_page_shows_the_queue_position(make_stack: StackFactory, page: Page) -> None:
    # One job slot, held by another request: the page's request waits first in the queue.
    private = make_stack(WORKER_MAX_BATCH="1")
    url = private.gateway.url
    body = {"messages": [{"role": "user", "content": "Hi"}], "max_tokens": 20000, "stream": True}
    client = httpx.Client(timeout=60)
    held = client.send(
        client.build_request("POST", f"{url}/v1/chat/completions", json={**body, "session_id": "busy"}),
        stream=True,
    )
    try:
        page.goto(f"{url}/")
        page.fill("#prompt", "Hello")
        page.click("#send")
        queued = "queued: 0 requests ahead"
        page.wait_for_function(
            f"(text) => {LAST_TURN_JS}?.querySelector('.status').textContent === text", arg=queued
        )
        screenshot(page, "6-queued")
        page.click("#stop")  # a queued request is cancelled at once
        wait_for_state(page, "cancelled")
    finally:
        httpx.post(f"{url}/v1/cancel/busy", timeout=10)
        held.close()
        client.close()


def test_playground_false_leaves_the_page_out(make_stack: StackFactory) -> None:
    private = make_stack(workers=0, PLAYGROUND="false")
    assert httpx.get(f"{private.gateway.url}/", timeout=5).status_code == 404
    assert httpx.get(f"{private.gateway.url}/static/playground.js", timeout=5).status_code == 404


def test_the_page_needs_no_api_key(make_stack: StackFactory) -> None:
    private = make_stack(workers=0, API_KEYS="secret-key")
    page = httpx.get(f"{private.gateway.url}/", timeout=5)
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    script = httpx.get(f"{private.gateway.url}/static/playground.js", timeout=5)
    assert script.status_code == 200 and "javascript" in script.headers["content-type"]
    # The API itself still does.
    assert httpx.get(f"{private.gateway.url}/v1/models", timeout=5).status_code == 401
