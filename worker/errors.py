"""The worker's verdict on a request it cannot serve."""

from __future__ import annotations


class InvalidRequest(Exception):
    """The request cannot be served as asked (the client's fault, not the worker's).

    The job turns it into an error event at index 0, which the gateway answers as a 400.
    """

    def __init__(self, message: str, param: str | None = None, code: str = "invalid_request") -> None:
        super().__init__(message)
        self.param = param
        self.code = code
