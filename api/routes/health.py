"""GET /health and GET /v1/models."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from fastapi.responses import JSONResponse
from redis.exceptions import RedisError

from api.deps import CallerDep, ServicesDep

router = APIRouter()


@router.get("/health")
async def health(services: ServicesDep) -> JSONResponse:
    settings = services.settings
    try:
        workers = await services.queue.live_workers()
        depth = await services.queue.depth()
    except RedisError as error:
        body = {
            "ok": False,
            "modelReady": False,
            "modelId": settings.model_name,
            "error": f"Redis unavailable: {error}",
            "workers": 0,
            "queueDepth": None,
        }
        return JSONResponse(body, status_code=503)
    return JSONResponse(
        {
            "ok": True,
            "modelReady": workers > 0,
            "modelId": settings.model_name,
            "error": None,
            "workers": workers,
            "queueDepth": depth,
        }
    )


@router.get("/v1/models")
async def list_models(services: ServicesDep, caller: CallerDep) -> dict[str, Any]:
    return {
        "object": "list",
        "data": [{"id": services.settings.model_name, "object": "model", "created": 0, "owned_by": "qwen"}],
    }
