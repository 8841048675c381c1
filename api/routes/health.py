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
    """503 while Redis is unreachable: no request can be served, whatever the workers do."""
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
            "redisReachable": False,
            "workers": 0,
            "queueDepth": None,
            "streams": services.admission.open,
        }
        return JSONResponse(body, status_code=503)
    return JSONResponse(
        {
            "ok": True,
            "modelReady": workers > 0,
            "modelId": settings.model_name,
            "error": None,
            "redisReachable": True,
            "workers": workers,
            "queueDepth": depth,
            "streams": services.admission.open,
        }
    )


@router.get("/v1/models")
async def list_models(services: ServicesDep, caller: CallerDep) -> dict[str, Any]:
    return {
        "object": "list",
        "data": [{"id": services.settings.model_name, "object": "model", "created": 0, "owned_by": "qwen"}],
    }
