"""Optional API keys: with API_KEYS set, every /v1 call needs one of them as a bearer token.

The key is checked by an ASGI middleware from the request's headers alone, before anything
reads the body: a caller without a valid key cannot make the gateway receive (let alone
parse) up to MAX_REQUEST_BODY_BYTES of JSON.

A session remembers a digest of the key that created it (its owner) and is visible only
to that key; without API_KEYS every caller is the same anonymous owner.
"""

from __future__ import annotations

import hashlib
import hmac

from starlette.datastructures import Headers
from starlette.requests import HTTPConnection
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Receive, Scope, Send

from api.errors import Unauthorized

ANONYMOUS = ""
PROTECTED_PREFIX = "/v1/"
# Where the middleware leaves the caller's owner id for the routes (``request.state``).
CALLER_STATE = "caller"


def owner_of(api_key: str) -> str:
    return hashlib.sha256(api_key.encode()).hexdigest()[:32]


def caller_of(authorization: str | None, api_keys: list[str]) -> str | None:
    """The owner id an Authorization header stands for; None if it names no valid key."""
    if not api_keys:
        return ANONYMOUS
    scheme, _, token = (authorization or "").partition(" ")
    given = token.strip().encode()
    if scheme.lower() != "bearer" or not any(hmac.compare_digest(given, key.encode()) for key in api_keys):
        return None
    return owner_of(token.strip())


def authenticated_caller(connection: HTTPConnection) -> str:
    """The owner id ApiKeyAuth found for this request."""
    caller: str = connection.scope["state"][CALLER_STATE]
    return caller


class ApiKeyAuth:
    """Refuses /v1 requests without a valid key with a 401, without receiving their body."""

    def __init__(self, app: ASGIApp, api_keys: list[str]) -> None:
        self.app = app
        self.api_keys = api_keys

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not scope["path"].startswith(PROTECTED_PREFIX):
            await self.app(scope, receive, send)
            return
        caller = caller_of(Headers(scope=scope).get("authorization"), self.api_keys)
        if caller is None:
            error = Unauthorized("Incorrect API key provided.")
            # The body was never read: close the connection rather than drain it.
            response = JSONResponse(
                error.body(), status_code=error.status_code, headers={"Connection": "close"}
            )
            await response(scope, receive, send)
            return
        scope.setdefault("state", {})[CALLER_STATE] = caller
        await self.app(scope, receive, send)
