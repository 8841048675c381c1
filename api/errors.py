"""One error hierarchy and one renderer producing OpenAI's error object."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from api.outage import UNREACHABLE
from shared.events import error_object


class APIError(Exception):
    status_code = 500
    error_type = "server_error"
    code: str | None = None

    def __init__(
        self,
        message: str,
        param: str | None = None,
        code: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.param = param
        self.code = code or self.code
        self.headers = headers

    def body(self) -> dict[str, Any]:
        return error_object(self.message, self.error_type, self.code, self.param)


class BadRequest(APIError):
    status_code = 400
    error_type = "invalid_request_error"


class Unauthorized(APIError):
    status_code = 401
    error_type = "authentication_error"
    code = "invalid_api_key"


class NotFound(APIError):
    status_code = 404
    error_type = "not_found_error"
    code = "not_found"


class PayloadTooLarge(APIError):
    status_code = 413
    error_type = "invalid_request_error"
    code = "payload_too_large"


class QueueFull(APIError):
    status_code = 429
    error_type = "rate_limit_error"
    code = "queue_full"


class NoWorker(APIError):
    status_code = 503
    error_type = "service_unavailable"
    code = "no_worker"


class StreamsFull(APIError):
    status_code = 503
    error_type = "service_unavailable"
    code = "too_many_streams"


class KeyStreamsFull(APIError):
    status_code = 429
    error_type = "rate_limit_error"
    code = "too_many_streams_for_key"


class RedisUnavailable(APIError):
    """Redis, which holds every session and the queue, cannot be reached: nothing can be served."""

    status_code = 503
    error_type = "service_unavailable"
    code = "redis_unavailable"
    RETRY_AFTER_SECONDS = 5

    def __init__(self, message: str, param: str | None = None, code: str | None = None) -> None:
        super().__init__(message, param, code, headers={"Retry-After": str(self.RETRY_AFTER_SECONDS)})


class GenerationFailed(APIError):
    status_code = 500
    error_type = "server_error"
    code = "generation_failed"


_STATUS_TYPES = {
    400: BadRequest,
    401: Unauthorized,
    404: NotFound,
    413: PayloadTooLarge,
    429: QueueFull,
    503: NoWorker,
}


def from_error_event(error: dict[str, Any]) -> APIError:
    """Rebuild the APIError of an error event that a worker or gateway wrote to a stream."""
    by_type: dict[Any, type[APIError]] = {
        BadRequest.error_type: BadRequest,
        NotFound.error_type: NotFound,
        RedisUnavailable.error_type: RedisUnavailable,
    }
    cls = by_type.get(error.get("type"), GenerationFailed)
    return cls(str(error.get("message", "generation failed")), error.get("param"), error.get("code"))


def _render(error: APIError) -> JSONResponse:
    return JSONResponse(error.body(), status_code=error.status_code, headers=error.headers)


def _describe_validation_error(exc: RequestValidationError) -> APIError:
    first = exc.errors()[0] if exc.errors() else {}
    if first.get("type") == "json_invalid":
        return BadRequest("The request body is not valid JSON.", code="invalid_json")
    location = [str(part) for part in first.get("loc", ()) if part != "body"]
    param = ".".join(location) or None
    message = first.get("msg", "Invalid request.")
    if param:
        message = f"Invalid value for '{param}': {message}"
    return BadRequest(message, param=param, code="invalid_value")


def install_error_handlers(app: FastAPI) -> None:
    async def on_api_error(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, APIError)
        return _render(exc)

    async def on_validation_error(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, RequestValidationError)
        return _render(_describe_validation_error(exc))

    async def on_http_error(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, StarletteHTTPException)
        cls = _STATUS_TYPES.get(exc.status_code, BadRequest if exc.status_code < 500 else APIError)
        error = cls(str(exc.detail), headers=dict(exc.headers or {}))
        error.status_code = exc.status_code
        return _render(error)

    async def on_redis_unreachable(request: Request, exc: Exception) -> JSONResponse:
        return _render(RedisUnavailable("The service cannot reach its Redis; try again shortly."))

    async def on_unexpected_error(request: Request, exc: Exception) -> JSONResponse:
        return _render(APIError("The server had an error while processing the request."))

    app.add_exception_handler(APIError, on_api_error)
    app.add_exception_handler(RequestValidationError, on_validation_error)
    app.add_exception_handler(StarletteHTTPException, on_http_error)
    for unreachable in UNREACHABLE:
        app.add_exception_handler(unreachable, on_redis_unreachable)
    app.add_exception_handler(Exception, on_unexpected_error)
