"""Dependencies shared by the routes, as ``Annotated`` aliases."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Header, Query, Request
from redis.asyncio import Redis

from api.admission import StreamAdmission
from api.auth import authenticated_caller
from api.job_queue import JobQueue
from api.session_store import SessionStore
from api.stream_hub import StreamHub
from shared.settings import Settings


@dataclass
class Services:
    settings: Settings
    redis: Redis
    store: SessionStore
    queue: JobQueue
    hub: StreamHub
    admission: StreamAdmission


def get_services(request: Request) -> Services:
    services: Services = request.app.state.services
    return services


ServicesDep = Annotated[Services, Depends(get_services)]


def get_caller(request: Request) -> str:
    return authenticated_caller(request)


CallerDep = Annotated[str, Depends(get_caller)]


def get_last_event_id(
    header: Annotated[str | None, Header(alias="Last-Event-ID")] = None,
    query: Annotated[str | None, Query(alias="last_event_id")] = None,
) -> str | None:
    """Where a client resumes: the SSE header (what EventSource sends), else the query."""
    return header or query


LastEventIdDep = Annotated[str | None, Depends(get_last_event_id)]
