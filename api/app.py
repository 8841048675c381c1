"""The gateway application."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

from fastapi import FastAPI
from fastapi.middleware.cors import CORSMiddleware

from api.admission import StreamAdmission
from api.auth import ApiKeyAuth
from api.body_limit import BodySizeLimit
from api.deps import Services
from api.errors import install_error_handlers
from api.job_queue import JobQueue
from api.metrics import RequestMiddleware
from api.reaper import Reaper
from api.redis_clients import command_client, reader_client
from api.routes import chat, health, playground, responses, sessions
from api.session_store import SessionStore
from api.stream_hub import StreamHub
from shared.settings import Settings, get_settings


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or get_settings()

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        redis = command_client(settings)
        hub = StreamHub(redis, lambda: reader_client(settings), settings.redis_outage_tolerance_seconds)
        admission = StreamAdmission(settings.max_streams_per_gateway, settings.max_streams_per_key)
        services = Services(
            settings, redis, SessionStore(redis, settings), JobQueue(settings, redis), hub.start(), admission
        )
        app.state.services = services
        reaper = asyncio.create_task(Reaper(redis, services.store, services.queue, settings).run())
        try:
            yield
        finally:
            reaper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await reaper
            await hub.close()
            services.queue.close()
            await redis.aclose()

    app = FastAPI(title="Qwen3-VL inference gateway", lifespan=lifespan)
    # Added first so that they run inside CORS: a 401 or a 413 still carries the CORS
    # headers. The key is checked first: without one, nothing about the body matters.
    app.add_middleware(BodySizeLimit, max_bytes=settings.max_request_body_bytes)
    app.add_middleware(ApiKeyAuth, api_keys=settings.api_keys)
    app.add_middleware(
        CORSMiddleware,
        allow_origins=settings.cors_allow_origins,
        allow_methods=["*"],
        allow_headers=["*"],
        expose_headers=["X-Session-Id"],
    )
    # Outermost: every request is counted and logged, refused ones included.
    app.add_middleware(RequestMiddleware)
    install_error_handlers(app)
    for module in (health, chat, sessions, responses):
        app.include_router(module.router)
    if settings.playground:
        app.include_router(playground.router)
    return app
