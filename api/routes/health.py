"""GET /health and GET /v1/models."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from redis.exceptions import RedisError

from api.deps import CallerDep, ServicesDep
from api.metrics import LIVE_WORKERS, QUEUE_DEPTH, REGISTRY, STREAMS_OPEN

router = APIRouter()


@router.get("/health")
async def health(services: ServicesDep) -> JSONResponse:
    """503 while Redis is unreachable: no request can be served, whatever the workers do."""
    settings = services.settings
    try:
        statuses = await services.queue.worker_statuses()
        workers = len(statuses)
        depth = await services.queue.depth()
        oldest = await services.queue.oldest_queued_seconds()
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
            "liveWorkers": statuses,
            "queueDepth": depth,
            "oldestQueuedSeconds": round(oldest, 3) if oldest is not None else None,
            "streams": services.admission.open,
        }
    )


@router.get("/metrics")
async def metrics(services: ServicesDep) -> Response:
    """Prometheus metrics; the queue and the workers are read from Redis now."""
    STREAMS_OPEN.set(services.admission.open)
    try:
        live_workers, depth = await services.queue.capacity()
        QUEUE_DEPTH.set(depth)
        LIVE_WORKERS.set(live_workers)
    except RedisError:
        pass  # the scrape still shows this gateway's own figures
    return Response(generate_latest(REGISTRY), media_type=CONTENT_TYPE_LATEST)


@router.get("/v1/models")
async def list_models(services: ServicesDep, caller: CallerDep) -> dict[str, Any]:
    """The served model and its context: the smallest any live worker serves (vLLM's field)."""
    statuses = await services.queue.worker_statuses()
    contexts = [s["contextLength"] for s in statuses if s["contextLength"] is not None]
    context = min(contexts) if contexts else services.settings.max_model_len
    model = {
        "id": services.settings.model_name,
        "object": "model",
        "created": 0,
        "owned_by": "qwen",
        "root": services.settings.model_repo_id,
        "max_model_len": context,
    }
    return {"object": "list", "data": [model]}
