"""The one error the media modules raise: a client's media that cannot be used."""

from __future__ import annotations


class MediaError(Exception):
    """Carries an OpenAI error code; the loader adds which content part it was."""

    def __init__(self, message: str, code: str) -> None:
        super().__init__(message)
        self.code = code
