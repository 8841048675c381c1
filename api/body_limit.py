"""Refuses request bodies over MAX_REQUEST_BODY_BYTES with a 413, before they are parsed.

The JSON body is parsed on the event loop, so its size bounds how long one request can
hold the loop; a declared Content-Length over the limit is refused without reading
anything, and a chunked body is cut off as soon as it passes the limit.
"""

from __future__ import annotations

from starlette.exceptions import HTTPException
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from api.errors import PayloadTooLarge


def too_large(limit: int) -> PayloadTooLarge:
    return PayloadTooLarge(f"The request body is larger than {limit} bytes (MAX_REQUEST_BODY_BYTES).")


class BodySizeLimit:
    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope["headers"]).get(b"content-length", b"")
        if declared.isdigit() and int(declared) > self.max_bytes:
            error = too_large(self.max_bytes)
            response = JSONResponse(
                error.body(), status_code=error.status_code, headers={"Connection": "close"}
            )
            await response(scope, receive, send)
            return
        received = 0

        async def receive_within_limit() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    # FastAPI passes HTTPExceptions raised while it reads the body on to the
                    # error handlers; any other exception there would become a generic 400.
                    raise HTTPException(413, too_large(self.max_bytes).message)
            return message

        await self.app(scope, receive_within_limit, send)
