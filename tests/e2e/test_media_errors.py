"""Every bad image or video is a 4xx naming the part, and the next request is served."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import Stack, StackFactory
from tests.e2e.test_errors import assert_openai_error
from tests.media import (
    ConnectionRecorder,
    MediaServer,
    Route,
    b64,
    data_uri,
    gif_bytes,
    hls_playlist,
    image_bytes,
    video_bytes,
    with_gif_canvas,
)
from tests.processes import free_port

PNG = image_bytes((32, 32))
MP4 = video_bytes(frames=8)
PART = "messages[1].content[2]"

Part = dict[str, Any]


def body_with(part: Part, stream: bool = False) -> dict[str, Any]:
    """The bad part sits at messages[1].content[2], after a system turn and two other parts."""
    return {
        "messages": [
            {"role": "system", "content": "Be brief."},
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "Look:"},
                    {"type": "image_url", "image_url": {"url": data_uri(PNG, "image/png")}},
                    part,
                ],
            },
        ],
        "max_tokens": 2,
        "stream": stream,
    }


def post(stack: Stack, body: dict[str, Any]) -> httpx.Response:
    return httpx.post(f"{stack.gateway.url}/v1/chat/completions", json=body, timeout=60)


def assert_still_serving(stack: Stack) -> None:
    good = post(stack, body_with({"type": "input_video", "b64_json": b64(MP4)}))
    assert good.status_code == 200, good.text
    assert good.json()["choices"][0]["finish_reason"] in ("length", "stop")


def image_at(url: str) -> Part:
    return {"type": "image_url", "image_url": {"url": url}}


def served(path: str, route: Route) -> Callable[[MediaServer], Part]:
    return lambda server: image_at(server.serve(path, route))


def fixed(part: Part) -> Callable[[MediaServer], Part]:
    return lambda _: part


CORRUPT = bytes(range(256)) * 8
# Valid base64 at both ends (what the gateway samples), broken in the middle.
BROKEN_BASE64 = b64(PNG * 40)[:2000] + "!!!!" + b64(PNG * 40)[2004:]

BAD_PARTS: dict[str, tuple[Callable[[MediaServer], Part], str]] = {
    # Refused by the gateway.
    "unknown part type": (
        fixed({"type": "input_audio", "input_audio": {"data": "AAAA"}}),
        "invalid_content_part",
    ),
    "data URI of text": (fixed(image_at("data:text/plain;base64,aGVsbG8=")), "unsupported_media_type"),
    "base64 of a wrong length": (fixed({"type": "input_image", "b64_json": "abcde"}), "invalid_base64"),
    "not a URL": (fixed(image_at("gopher://example.com/a.png")), "invalid_media_url"),
    # Refused by the worker.
    "corrupt image": (fixed({"type": "input_image", "b64_json": b64(CORRUPT)}), "invalid_image"),
    "corrupt video": (fixed({"type": "input_video", "b64_json": b64(CORRUPT)}), "invalid_video"),
    "truncated video": (
        fixed({"type": "video_url", "video_url": {"url": data_uri(MP4[: len(MP4) // 2], "video/mp4")}}),
        "invalid_video",
    ),
    "wrong base64": (fixed({"type": "input_image", "b64_json": BROKEN_BASE64}), "invalid_base64"),
    "URL serving a web page": (
        served("/page.html", Route(b"<html/>", "text/html")),
        "unsupported_media_type",
    ),
    "metadata address": (fixed(image_at("http://169.254.169.254/latest/meta-data/")), "media_url_forbidden"),
    "private address": (fixed(image_at("http://10.0.0.1/a.png")), "media_url_forbidden"),
    "redirect to a private address": (
        served("/to-private", Route(status=302, headers={"Location": "http://192.168.0.1/a.png"})),
        "media_url_forbidden",
    ),
}


@pytest.mark.parametrize("case", BAD_PARTS)
def test_a_bad_part_is_400_naming_it_and_harms_nothing_else(
    stack: Stack, media_server: MediaServer, case: str
) -> None:
    make_part, code = BAD_PARTS[case]
    error = assert_openai_error(post(stack, body_with(make_part(media_server))), 400)
    assert error["type"] == "invalid_request_error"
    assert error["param"] == PART and error["code"] == code
    assert str(error["message"]).startswith(f"{PART}: ")
    assert_still_serving(stack)


def test_an_hls_playlist_is_400_and_its_segments_are_never_fetched(
    stack: Stack, media_server: MediaServer
) -> None:
    recorder = ConnectionRecorder()
    try:
        playlist = hls_playlist(recorder.url("/segment.ts"))
        served = media_server.serve("/live.m3u8", Route(playlist, "video/mp4"))  # mislabelled
        inline = {"type": "input_video", "b64_json": b64(playlist)}
        by_url = {"type": "video_url", "video_url": {"url": served}}
        for part in (inline, by_url):
            error = assert_openai_error(post(stack, body_with(part)), 400)
            assert error["param"] == PART and error["code"] == "invalid_video"
            assert "HLS playlist" in str(error["message"])
        assert recorder.connections == 0
    finally:
        recorder.stop()
    assert_still_serving(stack)


@pytest.mark.parametrize("case", ["corrupt image", "metadata address", "data URI of text"])
def test_a_bad_part_in_a_stream_is_a_plain_http_error(
    stack: Stack, media_server: MediaServer, case: str
) -> None:
    make_part, code = BAD_PARTS[case]
    error = assert_openai_error(post(stack, body_with(make_part(media_server), stream=True)), 400)
    assert error["param"] == PART and error["code"] == code


def test_404_and_unreachable_hosts_are_named(stack: Stack, media_server: MediaServer) -> None:
    missing = assert_openai_error(post(stack, body_with(image_at(media_server.url("/nothing.png")))), 400)
    assert "HTTP 404" in str(missing["message"])
    closed = assert_openai_error(
        post(stack, body_with(image_at(f"http://127.0.0.1:{free_port()}/a.png"))), 400
    )
    assert closed["code"] == "media_fetch_failed"
    assert_still_serving(stack)


def test_a_slow_host_fails_the_request_within_the_timeout(stack: Stack, media_server: MediaServer) -> None:
    url = media_server.serve("/slow.png", Route(PNG, "image/png", delay=30))
    started = time.monotonic()
    error = assert_openai_error(post(stack, body_with(image_at(url))), 400)
    elapsed = time.monotonic() - started
    timeout = float(stack.env["MEDIA_FETCH_TIMEOUT_SECONDS"])
    assert timeout <= elapsed < timeout + 5
    assert error["code"] == "media_fetch_failed" and "MEDIA_FETCH_TIMEOUT_SECONDS" in str(error["message"])
    assert_still_serving(stack)


LIMITS = {
    "MAX_REQUEST_BODY_BYTES": "400000",
    "MAX_IMAGE_BYTES": "20000",
    "MAX_VIDEO_BYTES": "30000",
    "MAX_MEDIA_ITEMS": "3",
    "MAX_IMAGE_PIXELS": "100000",
    "MAX_VIDEO_SECONDS": "5",
}


@pytest.fixture
def limited(make_stack: StackFactory) -> Iterator[Stack]:
    yield make_stack(**LIMITS)


def test_every_limit_is_enforced_and_named(limited: Stack, media_server: MediaServer) -> None:
    url = f"{limited.gateway.url}/v1/chat/completions"
    bitmap = image_bytes((300, 300), "RGB", "BMP")  # 270 kB

    def refused(part: Part, status: int, limit: str) -> None:
        error = assert_openai_error(post(limited, body_with(part)), status)
        assert limit in str(error["message"]) and error["param"] == PART
        assert_still_serving(limited)

    # Gateway, before reading the body: its declared size; while reading it: chunked uploads.
    too_big = {"messages": [{"role": "user", "content": "x" * 500_000}]}
    error = assert_openai_error(httpx.post(url, json=too_big, timeout=30), 413)
    assert "MAX_REQUEST_BODY_BYTES" in str(error["message"])
    chunks = iter([b'{"messages": [{"role": "user", "content": "', b"x" * 500_000, b'"}]}'])
    chunked = httpx.post(url, content=chunks, headers={"content-type": "application/json"}, timeout=30)
    assert "MAX_REQUEST_BODY_BYTES" in str(assert_openai_error(chunked, 413)["message"])
    # Gateway: inline bytes and item count.
    refused({"type": "input_image", "b64_json": b64(bitmap[:30000])}, 413, "MAX_IMAGE_BYTES")
    many = body_with(image_at(data_uri(PNG, "image/png")))  # two images
    many["messages"][1]["content"] += [image_at(data_uri(PNG, "image/png"))] * 2
    error = assert_openai_error(post(limited, many), 400)
    assert "MAX_MEDIA_ITEMS" in str(error["message"]) and error["param"] == "messages[1].content[4]"
    # Worker: downloads (declared and streamed), pixels, duration.
    big = media_server.serve("/big.bmp", Route(bitmap, "image/bmp"))
    refused(image_at(big), 400, "MAX_IMAGE_BYTES")
    long_video = video_bytes(frames=70, fps=10)  # 7 s
    streamed = media_server.serve("/big.mp4", Route(long_video * 20, "video/mp4", chunked=True))
    refused({"type": "video_url", "video_url": {"url": streamed}}, 400, "MAX_VIDEO_BYTES")
    refused(image_at(data_uri(image_bytes((400, 300), "L", "PNG"), "image/png")), 400, "MAX_IMAGE_PIXELS")
    refused({"type": "input_video", "b64_json": b64(long_video)}, 400, "MAX_VIDEO_SECONDS")


@pytest.mark.parametrize("with_image", [True, False])
def test_placeholder_tokens_typed_as_text_are_400(stack: Stack, with_image: bool) -> None:
    content: list[Part] = [{"type": "text", "text": "<|image_pad|> and <|video_pad|>"}]
    if with_image:
        content.append(image_at(data_uri(PNG, "image/png")))
    body = {"messages": [{"role": "user", "content": content}], "max_tokens": 2}
    error = assert_openai_error(post(stack, body), 400)
    assert error["param"] == "messages"
    assert_still_serving(stack)


def worker_peak_rss_bytes(stack: Stack) -> int:
    """The highest resident memory the worker process has had (Linux's VmHWM)."""
    status = Path(f"/proc/{stack.workers[0].popen.pid}/status").read_text()
    line = next(line for line in status.splitlines() if line.startswith("VmHWM:"))
    return int(line.split()[1]) * 1024


# Decoding one 40000x40000 frame would take 4.8 GB of RGB: far above this bound.
PEAK_RSS_BOUND = 3 * 1024**3


@pytest.mark.parametrize("as_video", [False, True])
def test_a_tiny_file_declaring_huge_frames_is_refused_before_decoding(stack: Stack, as_video: bool) -> None:
    bomb = with_gif_canvas(gif_bytes(frames=4), 40000, 40000)  # a few hundred bytes
    assert len(bomb) < 2000
    part = (
        {"type": "input_video", "b64_json": b64(bomb)}
        if as_video
        else {"type": "image_url", "image_url": {"url": data_uri(bomb, "image/gif")}}
    )
    error = assert_openai_error(post(stack, body_with(part)), 400)
    assert error["param"] == PART and "pixels" in str(error["message"])
    assert worker_peak_rss_bytes(stack) < PEAK_RSS_BOUND
    assert_still_serving(stack)
