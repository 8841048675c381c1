"""Dependencies shared by the routes, as ``Annotated`` aliases."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Request
from redis.asyncio import Redis

from api.auth import authenticate
from api.job_queue import JobQueue
from api.session_store import SessionStore
from shared.settings import Settings


@dataclass
class Services:
    settings: Settings
    redis: Redis
    store: SessionStore
    queue: JobQueue


def get_services(request: Request) -> Services:
    services: Services = request.app.state.services
    return services


ServicesDep = Annotated[Services, Depends(get_services)]


def get_caller(request: Request, services: ServicesDep) -> str:
    return authenticate(request, services.settings)


CallerDep = Annotated[str, Depends(get_caller)]
