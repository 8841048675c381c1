"""GET /: a browser page to chat with the model (PLAYGROUND=false leaves it out).

The page is static (no build step) and talks to the gateway only through the public API,
as any other client does. It is outside /v1/, so it needs no API key: the page asks the
person for one and sends it on its own /v1 calls.
"""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter
from fastapi.responses import FileResponse

STATIC = Path(__file__).resolve().parent.parent / "static"

router = APIRouter(include_in_schema=False)


@router.get("/")
async def page() -> FileResponse:
    # no-cache: a browser revalidates (ETag) instead of keeping a page older than the gateway.
    return FileResponse(STATIC / "playground.html", headers={"Cache-Control": "no-cache"})


@router.get("/static/playground.js")
async def script() -> FileResponse:
    return FileResponse(
        STATIC / "playground.js", media_type="text/javascript", headers={"Cache-Control": "no-cache"}
    )
