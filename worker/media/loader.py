"""Turns a job's image and video parts into decoded media, or a verdict naming the bad part."""

from __future__ import annotations

import base64
import binascii
import re

import redis
from PIL import Image

from shared.jobs import GenerationJob, ImagePart, VideoPart
from shared.settings import Settings
from worker.errors import InvalidRequest
from worker.media.errors import MediaError
from worker.media.fetch import Fetcher, FetchLimits
from worker.media.images import decode_image
from worker.media.network import HostPolicy
from worker.media.video import VideoClip, VideoLimits, decode_video

Media = Image.Image | VideoClip
_WHITESPACE = re.compile(rb"\s+")


def decode_base64(text: bytes) -> bytes:
    """Standard or URL-safe base64; line breaks (as `base64` writes them) are allowed."""
    text = _WHITESPACE.sub(b"", text)
    altchars = b"-_" if b"-" in text or b"_" in text else None
    try:
        return base64.b64decode(text, altchars=altchars, validate=True)
    except binascii.Error as error:
        raise MediaError(f"the data is not valid base64 ({error}).", "invalid_base64") from error


class MediaLoader:
    def __init__(self, connection: redis.Redis, settings: Settings) -> None:
        self._redis = connection
        self._settings = settings
        self._fetcher = Fetcher(HostPolicy.from_hosts(settings.allowed_media_hosts))

    def close(self) -> None:
        self._fetcher.close()

    def load(self, job: GenerationJob) -> list[Media]:
        """The job's media in prompt order; raises InvalidRequest for the first bad one."""
        try:
            return [self._load(job, part) for part in job.media_parts()]
        finally:
            if job.inline_media_key:
                # Read once: the bytes leave Redis as soon as the worker has them.
                self._redis.delete(job.inline_media_key)

    def _load(self, job: GenerationJob, part: ImagePart | VideoPart) -> Media:
        try:
            data = self._bytes(job, part)
            if isinstance(part, ImagePart):
                return decode_image(data, self._settings.max_image_pixels)
            return decode_video(data, self._video_limits(part))
        except MediaError as error:
            raise InvalidRequest(f"{part.param}: {error}", part.param, error.code) from error

    def _bytes(self, job: GenerationJob, part: ImagePart | VideoPart) -> bytes:
        limit_name, max_bytes = (
            ("MAX_IMAGE_BYTES", self._settings.max_image_bytes)
            if isinstance(part, ImagePart)
            else ("MAX_VIDEO_BYTES", self._settings.max_video_bytes)
        )
        if part.url is not None:
            limits = FetchLimits(max_bytes, limit_name, self._settings.media_fetch_timeout_seconds)
            return self._fetcher.fetch(part.url, part.type, limits)
        text = self._redis.hget(job.inline_media_key, str(part.inline)) if job.inline_media_key else None
        if not isinstance(text, bytes):
            raise MediaError("the inline data is no longer available.", "media_expired")
        data = decode_base64(text)
        if len(data) > max_bytes:
            raise MediaError(
                f"the {part.type} is larger than {max_bytes} bytes ({limit_name}).", "media_too_large"
            )
        return data

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
