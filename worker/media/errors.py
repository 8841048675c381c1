"""The errors the media modules raise: a client's media that cannot be used, or a request
that was cancelled while its media were being fetched."""

from __future__ import annotations


class MediaError(Exception):
    """Carries an OpenAI error code; the loader adds which content part it was."""

    def __init__(self, message: str, code: str) -> None:
        super().__init__(message)
        self.code = code


class MediaCancelled(Exception):
    """The session was cancelled while its media were still being fetched."""
