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


class GenerationFailed(Exception):
    """Generating one request failed on the worker's side.

    Carries only a stable code for the client (``generation_failed``, or
    ``out_of_memory``); what went wrong is logged where it happened, never written into
    the session's events. (Nor is it chained as the cause: its traceback would keep the
    failed step's tensors alive while the job reports the failure.)
    """

    def __init__(self, code: str = "generation_failed") -> None:
        super().__init__(code)
        self.code = code
