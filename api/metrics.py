"""The gateway's Prometheus metrics and its one log line per request.

Names follow vLLM's where one exists (``vllm:time_to_first_token_seconds`` becomes
``qwen3vl_time_to_first_token_seconds``; README.md has the table), but are measured here,
at the gateway, as a client sees them: a token's time is when its event was read from
the session's stream, which includes the queue, the worker and Redis.

``RequestMiddleware`` wraps every HTTP request: it counts it by route, status code and
outcome, and logs one line for it when its response (a whole stream, for a stream) is
done. The serving code fills in what only it knows (the session, its usage, TTFT) on the
request's ``RequestRecord``, found through a context variable.
"""

from __future__ import annotations

import contextvars
import logging
import time
from dataclasses import dataclass, field
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from starlette.types import ASGIApp, Message, Receive, Scope, Send

log = logging.getLogger("api.requests")

REGISTRY = CollectorRegistry(auto_describe=True)
LATENCY_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0)
TOKEN_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 1.0, 2.5)

REQUESTS = Counter(
    "qwen3vl_requests",
    "HTTP requests by route, status code and outcome.",
    ["route", "status_code", "outcome"],
    registry=REGISTRY,
)
FINISHED = Counter(
    "qwen3vl_request_success",
    "Generations followed to their end by this gateway, by finish reason (vLLM: request_success).",
    ["finished_reason"],
    registry=REGISTRY,
)
STREAMS_OPEN = Gauge(
    "qwen3vl_streams_open", "Streams and completions this gateway follows now.", registry=REGISTRY
)
RESUMES = Counter(
    "qwen3vl_resumes", "Streams resumed after an event (Last-Event-ID, starting_after).", registry=REGISTRY
)
CANCELS = Counter(
    "qwen3vl_cancels", "Cancels by kind: manual (a client asked), auto.", ["kind"], registry=REGISTRY
)
TTFT = Histogram(
    "qwen3vl_time_to_first_token_seconds",
    "From the request to its first generated token's event.",
    buckets=LATENCY_BUCKETS,
    registry=REGISTRY,
)
ITL = Histogram(
    "qwen3vl_inter_token_latency_seconds",
    "Between consecutive events of a stream, as the gateway reads them.",
    buckets=TOKEN_BUCKETS,
    registry=REGISTRY,
)
E2E = Histogram(
    "qwen3vl_e2e_request_latency_seconds",
    "From the request to the end of its generation.",
    buckets=LATENCY_BUCKETS,
    registry=REGISTRY,
)
QUEUE_TIME = Histogram(
    "qwen3vl_request_queue_time_seconds",
    "From the request to its worker's acceptance (its first event): queue and prompt preparation.",
    buckets=LATENCY_BUCKETS,
    registry=REGISTRY,
)
QUEUE_DEPTH = Gauge(
    "qwen3vl_queue_depth", "Jobs waiting in the queues (read from Redis at scrape time).", registry=REGISTRY
)
LIVE_WORKERS = Gauge(
    "qwen3vl_live_workers", "Workers announcing themselves (read at scrape time).", registry=REGISTRY
)

CLIENT_CLOSED_REQUEST = 499

# Labelled series exist from the start (at 0), so that dashboards and alerts find them.
for _kind in ("manual", "auto"):
    CANCELS.labels(_kind)
for _reason in ("stop", "length", "tool_calls", "cancelled"):
    FINISHED.labels(_reason)


def outcome_of(status_code: int) -> str:
    if status_code == CLIENT_CLOSED_REQUEST:
        return "client_closed"
    if status_code in (429, 503):
        return "rejected"  # no room now: queue, streams, or Redis
    if status_code >= 500:
        return "error"
    if status_code >= 400:
        return "invalid"
    return "ok"


@dataclass
class RequestRecord:
    """What the log line and the metrics of one request say; serving code fills it in."""

    started: float = field(default_factory=time.monotonic)
    session_id: str | None = None
    finish_reason: str | None = None
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    ttft_s: float | None = None


_record: contextvars.ContextVar[RequestRecord | None] = contextvars.ContextVar("request_record", default=None)


def current_record() -> RequestRecord:
    """This request's record (a detached one outside a request, so callers need not check)."""
    return _record.get() or RequestRecord()


class StreamMeter:
    """Times a new generation's events as they are passed to its client."""

    def __init__(self, record: RequestRecord, new: bool) -> None:
        self._record = record
        self._new = new  # a resume measures nothing of the generation's timing
        self._last: float | None = None

    def passed(self, indices: list[int], ended: bool) -> None:
        if not self._new or not indices:
            return
        now = time.monotonic()
        since_start = now - self._record.started
        if indices[0] == 0:
            QUEUE_TIME.observe(since_start)
        tokens = [i for i in indices if i > 0]
        if tokens:
            if self._record.ttft_s is None:
                self._record.ttft_s = since_start
                TTFT.observe(since_start)
            elif self._last is not None:
                ITL.observe(now - self._last)
            for _ in tokens[1:]:
                ITL.observe(0.0)  # read in the same batch: the client gets them together
            self._last = now
        if ended:
            E2E.observe(since_start)

    def finished(self, finish_reason: str | None, usage: dict[str, Any] | None) -> None:
        self._record.finish_reason = finish_reason
        if usage:
            self._record.prompt_tokens = usage.get("prompt_tokens")
            self._record.completion_tokens = usage.get("completion_tokens")
        if self._new and finish_reason:
            FINISHED.labels(finish_reason).inc()


class RequestMiddleware:
    """Counts and logs each HTTP request once its response is complete."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        record = RequestRecord()
        token = _record.set(record)
        status_code = 500

        async def send_and_note(message: Message) -> None:
            nonlocal status_code
            if message["type"] == "http.response.start":
                status_code = int(message["status"])
                for name, value in message.get("headers", ()):
                    if name.lower() == b"x-session-id" and record.session_id is None:
                        record.session_id = value.decode()
            await send(message)

        try:
            await self.app(scope, receive, send_and_note)
        finally:
            _record.reset(token)
            route = route_of(scope)
            REQUESTS.labels(route, str(status_code), outcome_of(status_code)).inc()
            if route not in QUIET_ROUTES:
                _log(scope, route, status_code, record)


QUIET_ROUTES = ("/metrics", "/health", "other")


def route_of(scope: Scope) -> str:
    """The route's path template (bounded label values), or 'other'.

    The router records the route it chose in the scope, which the middleware shares; a
    request refused before routing (no API key, too large) or matching no route is 'other'.
    """
    return str(getattr(scope.get("route"), "path", None) or "other")


def _log(scope: Scope, route: str, status_code: int, record: RequestRecord) -> None:
    fields: dict[str, Any] = {
        "method": scope.get("method"),
        "path": route,
        "status_code": status_code,
        "session_id": record.session_id,
        "finish_reason": record.finish_reason,
        "prompt_tokens": record.prompt_tokens,
        "completion_tokens": record.completion_tokens,
        "ttft_ms": round(record.ttft_s * 1000, 1) if record.ttft_s is not None else None,
        "duration_ms": round((time.monotonic() - record.started) * 1000, 1),
    }
    log.info("%s %s %d", scope.get("method"), scope.get("path"), status_code, extra=fields)
