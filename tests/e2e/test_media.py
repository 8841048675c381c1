"""Images and videos in every form the API takes, through the official openai client."""

from __future__ import annotations

import io
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import openai
import pytest
from openai.types.chat import ChatCompletion
from PIL import Image

from shared import keys
from tests.conftest import Stack, StackFactory
from tests.media import ConnectionRecorder, MediaServer, Route, b64, data_uri, image_bytes, video_bytes
from tests.processes import TINY_MODEL_DIR, wait_until
from tests.sse import iter_events

PNG = image_bytes((64, 48), "RGB", "PNG", (200, 30, 30))
JPEG = image_bytes((96, 64), "RGB", "JPEG", (30, 30, 200))
MP4 = video_bytes(frames=40, fps=10)

Content = list[dict[str, Any]]


def complete(client: openai.OpenAI, messages: list[dict[str, Any]], **extra: Any) -> ChatCompletion:
    # Parts such as input_image or video_url are extensions the client's types do not know.
    loose: Any = messages
    completion: ChatCompletion = client.chat.completions.create(
        model="m", messages=loose, max_tokens=2, **extra
    )
    return completion


def ask(client: openai.OpenAI, content: Content, **extra: Any) -> ChatCompletion:
    return complete(client, [{"role": "user", "content": content}], **extra)


def prompt_tokens(completion: ChatCompletion) -> int:
    assert completion.usage is not None
    return completion.usage.prompt_tokens


def text(value: str) -> dict[str, Any]:
    return {"type": "text", "text": value}


def image_url(url: str) -> dict[str, Any]:
    return {"type": "image_url", "image_url": {"url": url}}


def video_url(url: str, **fields: Any) -> dict[str, Any]:
    return {"type": "video_url", "video_url": {"url": url}, **fields}


FORMS: dict[str, Callable[[MediaServer], dict[str, Any]]] = {
    "image_url http": lambda server: image_url(server.serve("/form.png", Route(PNG, "image/png"))),
    "image_url data": lambda _: image_url(data_uri(PNG, "image/png")),
    "input_image b64_json": lambda _: {"type": "input_image", "b64_json": b64(PNG)},
    "video_url http": lambda server: video_url(server.serve("/form.mp4", Route(MP4, "video/mp4"))),
    "video_url data": lambda _: video_url(data_uri(MP4, "video/mp4")),
    "input_video b64_json": lambda _: {"type": "input_video", "b64_json": b64(MP4)},
}


@pytest.mark.parametrize("form", FORMS)
def test_each_content_form_is_served_and_costs_its_visual_tokens(
    client: openai.OpenAI, media_server: MediaServer, form: str
) -> None:
    baseline = prompt_tokens(ask(client, [text("What is this?")]))
    completion = ask(client, [text("What is this?"), FORMS[form](media_server)])

    assert completion.choices[0].finish_reason in ("length", "stop")
    # <|vision_start|>, at least one pad token, <|vision_end|>
    assert prompt_tokens(completion) >= baseline + 3


def test_prompt_tokens_count_exactly_the_image_pad_tokens(client: openai.OpenAI) -> None:
    from transformers import AutoProcessor

    processor = AutoProcessor.from_pretrained(TINY_MODEL_DIR)  # type: ignore[no-untyped-call]
    grid = processor.image_processor(images=[Image.open(io.BytesIO(JPEG))])["image_grid_thw"]
    pads = int(grid[0].prod()) // processor.image_processor.merge_size**2

    baseline = prompt_tokens(ask(client, [text("Describe.")]))
    with_image = prompt_tokens(ask(client, [text("Describe."), image_url(data_uri(JPEG, "image/jpeg"))]))
    assert with_image == baseline + 2 + pads
    bigger = image_url(data_uri(image_bytes((320, 240), "RGB", "PNG"), "image/png"))
    assert prompt_tokens(ask(client, [text("Describe."), bigger])) > with_image


def test_two_images_and_a_video_with_history_and_a_system_message(
    client: openai.OpenAI, media_server: MediaServer
) -> None:
    earlier = media_server.serve("/earlier.jpg", Route(JPEG, "image/jpeg"))
    clip = media_server.serve("/clip.mp4", Route(MP4, "video/mp4"))
    conversation: list[dict[str, Any]] = [
        {"role": "system", "content": "You describe pictures and clips."},
        {"role": "user", "content": [text("First this one."), image_url(earlier)]},
        {"role": "assistant", "content": "A blue picture."},
        {
            "role": "user",
            "content": [
                text("Now these:"),
                {"type": "input_image", "b64_json": b64(PNG)},
                video_url(clip),
                text("What changed?"),
            ],
        },
    ]
    completion = complete(client, conversation)
    assert completion.choices[0].finish_reason in ("length", "stop")
    single = prompt_tokens(ask(client, [text("Now these:"), {"type": "input_image", "b64_json": b64(PNG)}]))
    assert prompt_tokens(completion) > single

    loose: Any = conversation
    stream = client.chat.completions.create(
        model="m", messages=loose, max_tokens=2, stream=True, stream_options={"include_usage": True}
    )
    chunks = list(stream)
    assert chunks[0].choices[0].delta.role == "assistant"
    assert chunks[-1].usage is not None and chunks[-1].usage.prompt_tokens == prompt_tokens(completion)


def test_a_request_may_lower_the_frame_count_but_not_raise_it(
    client: openai.OpenAI, media_server: MediaServer
) -> None:
    url = media_server.serve("/frames.mp4", Route(MP4, "video/mp4"))
    default = prompt_tokens(ask(client, [video_url(url)]))  # MAX_VIDEO_FRAMES = 16 of 40
    four = prompt_tokens(ask(client, [video_url(url)], extra_body={"max_video_frames": 4}))
    two = prompt_tokens(ask(client, [video_url(url, max_video_frames=2)], extra_body={"max_video_frames": 4}))
    raised = prompt_tokens(ask(client, [video_url(url)], extra_body={"max_video_frames": 1000}))

    assert two < four < default
    assert raised == default


def test_streamed_media_request_starts_once_the_worker_accepts_it(stack: Stack) -> None:
    body = {
        "messages": [{"role": "user", "content": [text("Hi"), image_url(data_uri(PNG, "image/png"))]}],
        "max_tokens": 3,
        "stream": True,
        "session_id": "media-stream",
    }
    with httpx.stream("POST", f"{stack.gateway.url}/v1/chat/completions", json=body, timeout=60) as response:
        assert response.status_code == 200
        events = list(iter_events(response))
    assert events[-1].is_done
    assert events[0].json["choices"][0]["delta"]["role"] == "assistant"
    # The inline image is kept while the session is open (another worker may need it) and
    # deleted when it ends.
    assert stack.redis.hget(keys.session_meta("media-stream"), "status") == "finished"
    assert not stack.redis.exists(keys.session_media("media-stream"))


def test_slow_media_hold_no_text_request_back_and_a_cancel_ends_their_wait(make_stack: StackFactory) -> None:
    # One row of batch: a request whose image URL never answers holds it while it waits.
    # The fetch deadline is far beyond the test: a cancel must end the wait, not the deadline.
    private = make_stack(
        WORKER_MAX_BATCH="1", MEDIA_FETCH_DEADLINE_SECONDS="120", MEDIA_FETCH_TIMEOUT_SECONDS="120"
    )
    silent = ConnectionRecorder()
    url = private.gateway.url
    slow = {
        "messages": [{"role": "user", "content": [text("Hi"), image_url(silent.url("/slow.png"))]}],
        "max_tokens": 3,
        "session_id": "slow-media",
    }
    try:
        with ThreadPoolExecutor(1) as pool:
            waiting = pool.submit(httpx.post, f"{url}/v1/chat/completions", json=slow, timeout=60)
            wait_until(lambda: silent.connections > 0, 20, "the worker to fetch the slow image")
            answer = httpx.post(
                f"{url}/v1/chat/completions",
                json={"messages": [{"role": "user", "content": "Hi"}], "max_tokens": 3},
                timeout=60,
            )
            assert answer.status_code == 200
            # Served while the media request was still waiting for its image.
            assert private.redis.hget(keys.session_meta("slow-media"), "status") == "running"
            httpx.post(f"{url}/v1/cancel/slow-media", timeout=10)
            cancelled = waiting.result(timeout=60)
            assert cancelled.status_code == 200
            assert cancelled.json()["choices"][0]["finish_reason"] == "cancelled"
            assert private.redis.hget(keys.session_meta("slow-media"), "status") == "cancelled"
            # The worker's one media job slot is free again: the next media request is served.
            inline = [text("Hi"), image_url(data_uri(PNG, "image/png"))]
            again = httpx.post(
                f"{url}/v1/chat/completions",
                json={"messages": [{"role": "user", "content": inline}], "max_tokens": 3},
                timeout=30,
            )
            assert again.status_code == 200
            # A response (Responses API) cancelled while its image is fetched ends as cancelled.
            response = httpx.post(
                f"{url}/v1/responses",
                json={
                    "input": [
                        {
                            "role": "user",
                            "content": [{"type": "input_image", "image_url": silent.url("/slow2.png")}],
                        }
                    ],
                    "background": True,
                    "max_output_tokens": 3,
                },
                timeout=10,
            ).json()
            wait_until(lambda: silent.connections > 1, 20, "the worker to fetch the second slow image")
            ended = httpx.post(f"{url}/v1/responses/{response['id']}/cancel", timeout=30).json()
            assert ended["status"] == "cancelled"
    finally:
        silent.stop()
