"""Optional API keys: with API_KEYS set, every /v1 call needs one of them as a bearer token.

A session remembers a digest of the key that created it (its owner) and is visible only
to that key; without API_KEYS every caller is the same anonymous owner.
"""

from __future__ import annotations

import hashlib
import hmac

from fastapi import Request

from api.errors import Unauthorized
from shared.settings import Settings

ANONYMOUS = ""


def owner_of(api_key: str) -> str:
    return hashlib.sha256(api_key.encode()).hexdigest()[:32]


def authenticate(request: Request, settings: Settings) -> str:
    """Return the caller's owner id, or raise 401."""
    if not settings.api_keys:
        return ANONYMOUS
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    given = token.strip().encode()
    if scheme.lower() != "bearer" or not any(
        hmac.compare_digest(given, key.encode()) for key in settings.api_keys
    ):
        raise Unauthorized("Incorrect API key provided.")
    return owner_of(token.strip())
