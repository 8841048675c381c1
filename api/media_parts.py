"""Image and video content parts: from the request's shapes to job parts.

The gateway neither fetches nor decodes media; that happens in the worker's job
preparation, off the event loop and next to the model. Here only what is cheap is
checked: the part's shape, the URL's scheme, a ``data:`` URI's media type, the number of
items, and the decoded size of inline base64, computed from its length without decoding.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from api.errors import BadRequest, PayloadTooLarge
from shared.jobs import ImagePart, VideoPart
from shared.media_types import MediaKind, accepts, essence
from shared.settings import Settings

# Part type -> (kind, field holding a URL or data: URI, whether it may hold bare base64).
PART_TYPES: dict[str, tuple[MediaKind, str, bool]] = {
    "image_url": ("image", "image_url", False),
    "input_image": ("image", "image_url", True),
    "video_url": ("video", "video_url", False),
    "input_video": ("video", "video_url", True),
}
MAX_URL_LENGTH = 8192
_WHITESPACE = (" ", "\n", "\r", "\t")
# Checked on the ends of a payload only: enough to catch a URL or text sent as base64
# without scanning megabytes on the event loop; the worker validates all of it.
_BASE64_SAMPLE = re.compile(r"[A-Za-z0-9+/\-_=\s]*")
_SAMPLE_CHARS = 1024


@dataclass(frozen=True)
class MediaLimits:
    max_items: int
    max_image_bytes: int
    max_video_bytes: int

    @classmethod
    def from_settings(cls, settings: Settings) -> MediaLimits:
        return cls(settings.max_media_items, settings.max_image_bytes, settings.max_video_bytes)

    def max_bytes(self, kind: MediaKind) -> tuple[str, int]:
        if kind == "image":
            return "MAX_IMAGE_BYTES", self.max_image_bytes
        return "MAX_VIDEO_BYTES", self.max_video_bytes


def base64_size(text: str) -> int | None:
    """Bytes that ``text`` decodes to, or None when its length cannot be base64's."""
    length = len(text)
    # `in` is a fast scan; counting is five times slower, so only when there is something to count.
    if any(char in text for char in _WHITESPACE):
        length -= sum(text.count(char) for char in _WHITESPACE)
    if length == 0 or length % 4:
        return None
    padding = text.rstrip()[-2:].count("=")
    return length // 4 * 3 - padding


def _looks_like_base64(text: str) -> bool:
    return all(_BASE64_SAMPLE.fullmatch(sample) for sample in (text[:_SAMPLE_CHARS], text[-_SAMPLE_CHARS:]))


@dataclass
class MediaCollector:
    """Turns one request's media parts into job parts and keeps their inline payloads.

    ``inline[n]`` is the base64 text of the part whose ``inline`` field is ``n``; the
    gateway stores it beside the job rather than inside it.
    """

    limits: MediaLimits
    max_frames: int | None = None  # the request-level frame budget, if any
    inline: list[str] = field(default_factory=list)
    count: int = 0

    def convert(self, where: str, part_type: str, fields: dict[str, Any]) -> ImagePart | VideoPart:
        if part_type not in PART_TYPES:
            raise BadRequest(
                f"{where}: content part type '{part_type}' is not supported; use text, image_url, "
                "input_image, video_url or input_video.",
                param=where,
                code="invalid_content_part",
            )
        kind, url_field, takes_base64 = PART_TYPES[part_type]
        self.count += 1
        if self.count > self.limits.max_items:
            raise BadRequest(
                f"{where}: a request may carry at most {self.limits.max_items} images and videos "
                "(MAX_MEDIA_ITEMS).",
                param=where,
                code="too_many_media_items",
            )
        source = self._source(where, kind, url_field, takes_base64, fields)
        if kind == "image":
            return ImagePart(param=where, **source)
        return VideoPart(param=where, max_frames=self._frame_budget(where, fields), **source)

    def _source(
        self, where: str, kind: MediaKind, url_field: str, takes_base64: bool, fields: dict[str, Any]
    ) -> dict[str, Any]:
        b64 = fields.get("b64_json") if takes_base64 else None
        if b64 is not None:
            if not isinstance(b64, str):
                raise BadRequest(f"{where}: 'b64_json' must be a string.", param=where, code="invalid_base64")
            return {"inline": self._keep_inline(where, kind, b64)}
        url = _url_of(fields.get(url_field))
        if url is None:
            wanted = f"'{url_field}.url'" + (" or 'b64_json'" if takes_base64 else "")
            raise BadRequest(
                f"{where}: a {kind} part needs {wanted}.", param=where, code="invalid_content_part"
            )
        if url[:5].lower() == "data:":
            return {"inline": self._keep_inline(where, kind, _data_uri_payload(where, kind, url))}
        _check_url(where, url)
        return {"url": url}

    def _keep_inline(self, where: str, kind: MediaKind, payload: str) -> int:
        size = base64_size(payload)
        if size is None or not _looks_like_base64(payload):
            raise BadRequest(
                f"{where}: the {kind} data is not valid base64.", param=where, code="invalid_base64"
            )
        name, limit = self.limits.max_bytes(kind)
        if size > limit:
            raise PayloadTooLarge(
                f"{where}: the {kind} is {size} bytes, more than the {limit} allowed ({name}).",
                param=where,
                code="media_too_large",
            )
        self.inline.append(payload)
        return len(self.inline) - 1

    def _frame_budget(self, where: str, fields: dict[str, Any]) -> int | None:
        value = fields.get("max_video_frames")
        if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value < 1):
            raise BadRequest(
                f"{where}: 'max_video_frames' must be a positive integer.", param=where, code="invalid_value"
            )
        budgets = [budget for budget in (value, self.max_frames) if budget is not None]
        return min(budgets) if budgets else None


def _url_of(value: Any) -> str | None:
    """OpenAI's ``{"url": ...}`` object, or a bare string as some clients send."""
    if isinstance(value, dict):
        value = value.get("url")
    return value if isinstance(value, str) and value else None


def _data_uri_payload(where: str, kind: MediaKind, uri: str) -> str:
    """The base64 text of ``data:<media type>[;params];base64,<data>``."""
    header, comma, payload = uri[5:].partition(",")
    if not comma or len(header) > 256:
        raise BadRequest(f"{where}: not a valid data: URI.", param=where, code="invalid_data_uri")
    params = [param.strip().lower() for param in header.split(";")]
    if len(params) < 2 or params[-1] != "base64":
        raise BadRequest(
            f"{where}: a data: URI must be base64-encoded (data:<type>;base64,...).",
            param=where,
            code="invalid_data_uri",
        )
    if not accepts(kind, params[0]):
        raise BadRequest(
            f"{where}: content type '{essence(params[0])}' is not {'an' if kind == 'image' else 'a'} {kind}.",
            param=where,
            code="unsupported_media_type",
        )
    return payload


def _check_url(where: str, url: str) -> None:
    if len(url) > MAX_URL_LENGTH:
        raise BadRequest(
            f"{where}: the URL is longer than {MAX_URL_LENGTH} characters.",
            param=where,
            code="invalid_media_url",
        )
    try:
        parts = urlsplit(url)
        _ = parts.port  # raises on a malformed port
        valid = parts.scheme.lower() in ("http", "https") and bool(parts.hostname)
    except ValueError:
        valid = False
    if not valid:
        raise BadRequest(
            f"{where}: media URLs must be http(s) URLs or data: URIs.", param=where, code="invalid_media_url"
        )
