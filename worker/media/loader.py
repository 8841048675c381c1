"""Turns a job's image and video parts into decoded media, or a verdict naming the bad part.

In three passes, so that what is cheap to refuse is refused before what is costly starts:
1. the bytes: every URL fetched at once, under one deadline for the request, and the
   inline parts read from Redis;
2. the headers: each item's format, size, frame count and duration, and the request's
   total pixels, checked before anything is decoded;
3. the pixels, within the worker's budget of pixels decoded at once.
"""

from __future__ import annotations

import base64
import binascii
import re
import time
from collections.abc import Callable, Iterator
from concurrent.futures import FIRST_EXCEPTION, ThreadPoolExecutor, wait
from contextlib import contextmanager

import redis
from PIL import Image

from shared.jobs import GenerationJob, ImagePart, VideoPart
from shared.settings import Settings
from worker import metrics
from worker.errors import InvalidRequest
from worker.media.budget import ConcurrentPixels, check_request_pixels
from worker.media.errors import MediaCancelled, MediaError
from worker.media.fetch import Deadline, Fetcher, FetchLimits
from worker.media.images import open_image, read_image
from worker.media.isolation import start_forkserver
from worker.media.network import HostPolicy
from worker.media.video import OpenedVideo, VideoClip, VideoLimits, open_video, read_video

Media = Image.Image | VideoClip
MediaPart = ImagePart | VideoPart
_WHITESPACE = re.compile(rb"\s+")
# How often a request waiting for its URLs looks whether it was cancelled meanwhile.
CANCEL_CHECK_SECONDS = 0.5


def never_cancelled() -> bool:
    return False


def decode_base64(text: bytes) -> bytes:
    """Standard or URL-safe base64; line breaks (as `base64` writes them) are allowed."""
    text = _WHITESPACE.sub(b"", text)
    altchars = b"-_" if b"-" in text or b"_" in text else None
    try:
        return base64.b64decode(text, altchars=altchars, validate=True)
    except binascii.Error as error:
        raise MediaError(f"the data is not valid base64 ({error}).", "invalid_base64") from error


@contextmanager
def naming(part: MediaPart) -> Iterator[None]:
    """A MediaError becomes the request's verdict, naming the content part."""
    try:
        yield
    except MediaError as error:
        raise InvalidRequest(f"{part.param}: {error}", part.param, error.code) from error


class MediaLoader:
    def __init__(self, connection: redis.Redis, settings: Settings) -> None:
        self._redis = connection
        self._settings = settings
        # Every media job slot may fetch all the URLs of its request at once.
        concurrent_fetches = settings.worker_max_batch * max(1, settings.max_media_items)
        self._fetcher = Fetcher(HostPolicy.from_hosts(settings.allowed_media_hosts), concurrent_fetches)
        self._decoding = ConcurrentPixels(settings.max_worker_media_pixels)
        start_forkserver()

    def close(self) -> None:
        self._fetcher.close()

    def load(self, job: GenerationJob, cancelled: Callable[[], bool] = never_cancelled) -> list[Media]:
        """The job's media in prompt order; raises InvalidRequest for a bad one.

        While its URLs are fetched, ``cancelled`` is asked every CANCEL_CHECK_SECONDS: a
        true answer raises MediaCancelled at once, so that a cancelled request does not
        hold its job slot until the fetch deadline.

        The inline media stay in Redis: a worker that takes the job over after this one
        dies needs them too; they go with the session.
        """
        parts = job.media_parts()
        if not parts:
            return []
        started = time.perf_counter()
        files = self._read_all(job, parts, cancelled)
        if any(part.url is not None for part in parts):
            metrics.MEDIA_FETCH.observe(time.perf_counter() - started)
        opened: list[Image.Image | OpenedVideo] = []
        for part, data in zip(parts, files, strict=True):
            with naming(part):
                opened.append(self._open(part, data))
        costs = [_pixels(item) for item in opened]
        over = check_request_pixels(costs, self._settings.max_request_media_pixels)
        if over is not None:
            with naming(parts[over.position]):
                raise over.error
        with self._decoding.hold(sum(costs)):
            decoded: list[Media] = []
            for part, item in zip(parts, opened, strict=True):
                with naming(part):
                    started = time.perf_counter()
                    decoded.append(self._decode(part, item))
                    metrics.MEDIA_DECODE.labels(part.type).observe(time.perf_counter() - started)
            return decoded

    def _read_all(
        self, job: GenerationJob, parts: list[MediaPart], cancelled: Callable[[], bool]
    ) -> list[bytes]:
        """Every part's bytes: the URLs all at once, the inline ones meanwhile."""
        deadline = Deadline.after(self._settings.media_fetch_deadline_seconds, "MEDIA_FETCH_DEADLINE_SECONDS")
        remote = [position for position, part in enumerate(parts) if part.url is not None]
        # The threads end by the deadline at the latest; a refusal does not wait for them.
        pool = ThreadPoolExecutor(max_workers=max(1, len(remote)), thread_name_prefix="media-fetch")
        try:
            fetches = {position: pool.submit(self._fetch, parts[position], deadline) for position in remote}
            files: dict[int, bytes] = {}
            for position, part in enumerate(parts):
                if part.url is None:
                    with naming(part):
                        files[position] = self._inline(job, part)
            pending = set(fetches.values())
            while pending:
                done, pending = wait(pending, CANCEL_CHECK_SECONDS, return_when=FIRST_EXCEPTION)
                if any(fetch.exception() is not None for fetch in done):
                    break
                if pending and cancelled():
                    raise MediaCancelled
            for fetch in fetches.values():  # the first refusal in prompt order, among those done
                if fetch.done() and fetch.exception() is not None:
                    fetch.result()
            files.update((position, fetch.result()) for position, fetch in fetches.items())
            return [files[position] for position in range(len(parts))]
        finally:
            pool.shutdown(wait=False, cancel_futures=True)

    def _fetch(self, part: MediaPart, deadline: Deadline) -> bytes:
        assert part.url is not None
        name, max_bytes = self._byte_limit(part)
        limits = FetchLimits(max_bytes, name, self._settings.media_fetch_timeout_seconds)
        with naming(part):
            return self._fetcher.fetch(part.url, part.type, limits, deadline)

    def _inline(self, job: GenerationJob, part: MediaPart) -> bytes:
        text = self._redis.hget(job.inline_media_key, str(part.inline)) if job.inline_media_key else None
        if not isinstance(text, bytes):
            raise MediaError("the inline data is no longer available.", "media_expired")
        data = decode_base64(text)
        name, max_bytes = self._byte_limit(part)
        if len(data) > max_bytes:
            raise MediaError(f"the {part.type} is larger than {max_bytes} bytes ({name}).", "media_too_large")
        return data

    def _byte_limit(self, part: MediaPart) -> tuple[str, int]:
        if isinstance(part, ImagePart):
            return "MAX_IMAGE_BYTES", self._settings.max_image_bytes
        return "MAX_VIDEO_BYTES", self._settings.max_video_bytes

    def _open(self, part: MediaPart, data: bytes) -> Image.Image | OpenedVideo:
        if isinstance(part, ImagePart):
            return open_image(data, self._settings.max_image_pixels)
        return open_video(data, self._video_limits(part))

    def _decode(self, part: MediaPart, item: Image.Image | OpenedVideo) -> Media:
        if isinstance(item, OpenedVideo):
            assert isinstance(part, VideoPart)
            return read_video(item, self._video_limits(part))
        return read_image(item)

    def _video_limits(self, part: VideoPart) -> VideoLimits:
        settings = self._settings
        # A request may ask for fewer frames than the cap, never more.
        frames = min(part.max_frames or settings.max_video_frames, settings.max_video_frames)
        return VideoLimits(
            frames,
            settings.max_video_seconds,
            settings.max_image_pixels,
            settings.media_decode_timeout_seconds,
            settings.media_decode_memory_bytes,
        )


def _pixels(item: Image.Image | OpenedVideo) -> int:
    if isinstance(item, OpenedVideo):
        return item.pixels
    return item.width * item.height
