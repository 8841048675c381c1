"""Which declared content types count as an image or a video.

The gateway applies it to the media type of a ``data:`` URI, the worker to the
Content-Type of a download, so both refuse the same things: a web page or a JSON error
behind a media URL is named as such instead of failing later as an undecodable file.
"""

from __future__ import annotations

from typing import Literal

MediaKind = Literal["image", "video"]

# Types that say nothing about the content; the decoder decides.
_UNSPECIFIED = frozenset({"", "application/octet-stream", "binary/octet-stream"})
# Containers some servers label as application/*.
_VIDEO_APPLICATION_TYPES = frozenset({"application/mp4", "application/ogg", "application/x-matroska"})


def essence(content_type: str) -> str:
    """``image/PNG; charset=x`` -> ``image/png``."""
    return content_type.split(";", 1)[0].strip().lower()


def accepts(kind: MediaKind, content_type: str) -> bool:
    media_type = essence(content_type)
    if media_type in _UNSPECIFIED or media_type.startswith(f"{kind}/"):
        return True
    return kind == "video" and media_type in _VIDEO_APPLICATION_TYPES
