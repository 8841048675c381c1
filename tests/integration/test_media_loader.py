"""The media loader against a real Redis and a real local HTTP server."""

from __future__ import annotations

import io
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
import redis
from PIL import Image

from shared.jobs import ChatMessage, GenerationJob, ImagePart, SamplingParams, TextPart, VideoPart
from shared.settings import Settings
from tests.media import (
    ConnectionRecorder,
    MediaServer,
    Route,
    b64,
    hls_playlist,
    image_bytes,
    video_bytes,
)
from tests.processes import RedisServer
from worker.errors import InvalidRequest
from worker.media.loader import MediaLoader
from worker.media.video import VideoClip

MEDIA_KEY = "qvl:job:test:media"
PNG = image_bytes((32, 24))


@pytest.fixture(scope="module")
def server() -> Iterator[MediaServer]:
    local = MediaServer()
    yield local
    local.stop()


@pytest.fixture
def connection(redis_server: RedisServer) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(redis_server.url(13))
    client.flushdb()
    yield client
    client.close()


@pytest.fixture
def make_loader(connection: redis.Redis) -> Iterator[Any]:
    loaders: list[MediaLoader] = []

    def make(**overrides: Any) -> MediaLoader:
        settings = Settings(allowed_media_hosts=["127.0.0.1"], **overrides)
        loaders.append(MediaLoader(connection, settings))
        return loaders[-1]

    yield make
    for loader in loaders:
        loader.close()


def job_with(*parts: ImagePart | VideoPart, inline: bool = False) -> GenerationJob:
    return GenerationJob(
        session_id="media-loader",
        model="tiny",
        created=0,
        messages=[ChatMessage(role="user", content=[TextPart(text="Look:"), *parts])],
        sampling=SamplingParams(max_new_tokens=1),
        inline_media_key=MEDIA_KEY if inline else None,
    )


def store_inline(connection: redis.Redis, *files: bytes) -> None:
    connection.hset(MEDIA_KEY, mapping={str(n): b64(data) for n, data in enumerate(files)})


def refusal(loader: MediaLoader, job: GenerationJob) -> InvalidRequest:
    with pytest.raises(InvalidRequest) as raised:
        loader.load(job)
    return raised.value


def test_urls_and_inline_parts_load_in_prompt_order(
    server: MediaServer, connection: redis.Redis, make_loader: Any
) -> None:
    url = server.serve("/a.png", Route(PNG, "image/png"))
    store_inline(connection, video_bytes(frames=6))
    job = job_with(
        ImagePart(url=url, param="messages[0].content[1]"),
        VideoPart(inline=0, param="messages[0].content[2]"),
        inline=True,
    )
    image, clip = make_loader().load(job)
    assert isinstance(image, Image.Image) and image.size == (32, 24)
    assert isinstance(clip, VideoClip) and clip.total_frames == 6


def test_inline_media_stay_for_a_worker_that_takes_the_job_over(
    connection: redis.Redis, make_loader: Any
) -> None:
    store_inline(connection, PNG)
    job = job_with(ImagePart(inline=0, param="messages[0].content[1]"), inline=True)
    make_loader().load(job)
    assert connection.hexists(MEDIA_KEY, "0")
    assert len(make_loader().load(job)) == 1  # a second worker rebuilding the same job


def test_the_urls_of_a_request_are_fetched_at_once(server: MediaServer, make_loader: Any) -> None:
    # Each answers after 1 s: one after the other they would overrun the 2 s request deadline.
    parts = [
        ImagePart(url=server.serve(f"/slow-{n}.png", Route(PNG, "image/png", delay=1)), param=f"p{n}")
        for n in range(3)
    ]
    loader = make_loader(media_fetch_deadline_seconds=2.0, media_fetch_timeout_seconds=10)
    assert len(loader.load(job_with(*parts))) == 3


def test_the_request_deadline_bounds_every_download(server: MediaServer, make_loader: Any) -> None:
    url = server.serve("/stalled.png", Route(PNG, "image/png", delay=30))
    loader = make_loader(media_fetch_deadline_seconds=0.5, media_fetch_timeout_seconds=10)
    error = refusal(loader, job_with(ImagePart(url=url, param="messages[0].content[1]")))
    assert error.param == "messages[0].content[1]" and error.code == "media_fetch_failed"
    assert "MEDIA_FETCH_DEADLINE_SECONDS" in str(error)


def test_an_hls_playlist_by_url_is_refused_and_its_segments_never_fetched(
    server: MediaServer, make_loader: Any
) -> None:
    recorder = ConnectionRecorder()
    try:
        playlist = hls_playlist(recorder.url("/segment.ts"))
        url = server.serve("/clip.m3u8", Route(playlist, "video/mp4"))  # a server that lies about it
        error = refusal(make_loader(), job_with(VideoPart(url=url, param="messages[0].content[1]")))
        assert error.param == "messages[0].content[1]" and error.code == "invalid_video"
        assert "HLS playlist" in str(error)
        assert recorder.connections == 0
        assert server.requests.count("/clip.m3u8") == 1
    finally:
        recorder.stop()


def test_the_request_pixel_budget_is_checked_before_anything_is_decoded(
    connection: redis.Redis, make_loader: Any
) -> None:
    # The first image's pixels are corrupt: decoding it would fail. The budget error comes
    # first, naming the second image, so nothing was decoded.
    noise = Image.frombytes("RGB", (64, 64), np.random.default_rng(0).bytes(64 * 64 * 3))
    buffer = io.BytesIO()
    noise.save(buffer, "PNG")
    corrupt = buffer.getvalue()[:6000]  # the header intact, the pixel data cut short
    large = image_bytes((100, 100), "L", "PNG")
    store_inline(connection, corrupt, large)
    job = job_with(
        ImagePart(inline=0, param="messages[0].content[1]"),
        ImagePart(inline=1, param="messages[0].content[2]"),
        inline=True,
    )
    error = refusal(make_loader(max_request_media_pixels=10_000), job)
    assert error.param == "messages[0].content[2]" and error.code == "media_too_large"
    assert "MAX_REQUEST_MEDIA_PIXELS" in str(error) and "14096" in str(error)
    assert refusal(make_loader(), job).code == "invalid_image"  # within budget: decoded, refused


def test_video_frames_count_in_the_request_budget(connection: redis.Redis, make_loader: Any) -> None:
    store_inline(connection, video_bytes(frames=20, size=(64, 48)))
    job = job_with(VideoPart(inline=0, param="messages[0].content[1]", max_frames=10), inline=True)
    error = refusal(make_loader(max_request_media_pixels=64 * 48 * 10 - 1), job)
    assert error.code == "media_too_large" and str(64 * 48 * 10) in str(error)
    (clip,) = make_loader(max_request_media_pixels=64 * 48 * 10).load(job)
    assert isinstance(clip, VideoClip) and len(clip.indices) == 10


def test_a_decode_past_its_deadline_is_a_verdict_naming_the_part(
    connection: redis.Redis, make_loader: Any
) -> None:
    store_inline(connection, video_bytes(frames=8))
    job = job_with(VideoPart(inline=0, param="messages[0].content[1]"), inline=True)
    error = refusal(make_loader(media_decode_timeout_seconds=0.001), job)
    assert error.param == "messages[0].content[1]" and error.code == "media_decode_timeout"
    assert len(make_loader().load(job)) == 1  # the next request is served
