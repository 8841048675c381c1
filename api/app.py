"""The gateway application."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

from fastapi import FastAPI
from fastapi.middleware.cors import CORSMiddleware
from redis.asyncio import Redis

from api.body_limit import BodySizeLimit
from api.deps import Services
from api.errors import install_error_handlers
from api.job_queue import JobQueue
from api.reaper import Reaper
from api.routes import chat, health, sessions
from api.session_store import SessionStore
from shared.settings import Settings, get_settings


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or get_settings()

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        # Every follower holds a connection in a blocking XREAD: the pool must hold them all.
        redis = Redis.from_url(
            settings.redis_url, decode_responses=True, max_connections=settings.gateway_redis_connections
        )
        services = Services(settings, redis, SessionStore(redis, settings), JobQueue(settings, redis))
        app.state.services = services
        reaper = asyncio.create_task(Reaper(redis, services.store, services.queue, settings).run())
        try:
            yield
        finally:
            reaper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await reaper
            services.queue.close()
            await redis.aclose()

    app = FastAPI(title="Qwen3-VL inference gateway", lifespan=lifespan)
    # Added first so that it runs inside CORS: a 413 still carries the CORS headers.
    app.add_middleware(BodySizeLimit, max_bytes=settings.max_request_body_bytes)
    app.add_middleware(
        CORSMiddleware,
        allow_origins=settings.cors_allow_origins,
        allow_methods=["*"],
        allow_headers=["*"],
        expose_headers=["X-Session-Id"],
    )
    install_error_handlers(app)
    for module in (health, chat, sessions):
        app.include_router(module.router)
    return app
