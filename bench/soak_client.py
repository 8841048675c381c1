"""A soak client: streams a completion and resumes it on any gateway until it ends.

Each request names its own session id, so that a client whose POST broke before the
response headers can still find the session. Resuming is what a browser's EventSource
does: ``GET /v1/sessions/{id}/stream`` with ``Last-Event-ID`` set to the last event id it
got, on whichever gateway answers, with a growing pause between attempts.
"""

from __future__ import annotations

import asyncio
import json
import random
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import httpx

from bench.soak_check import Replay, SeenEvent
from bench.sse import sse_frames
from shared.events import format_event_id, parse_event_id

DONE = "[DONE]"
FIRST_PAUSE_SECONDS = 0.2
LONGEST_PAUSE_SECONDS = 3.0
PAUSE_AFTER_REJECTION_SECONDS = 0.5
# A resume answered 404 this many times in a row means the service has forgotten the session.
NOT_FOUND_LIMIT = 3


@dataclass(frozen=True)
class Request:
    """What every soak request asks for, but its length and seed."""

    prompt: str
    min_tokens: int
    max_tokens: int
    temperature: float

    def body(self, session_id: str, rng: random.Random) -> dict[str, Any]:
        return {
            "model": "soak",
            "messages": [{"role": "user", "content": self.prompt}],
            "stream": True,
            "max_tokens": rng.randint(self.min_tokens, self.max_tokens),
            "temperature": self.temperature,
            "seed": rng.randint(0, 2**31 - 1),
            "session_id": session_id,
        }


@dataclass
class SessionLog:
    """Everything one client saw of one session, across all its connections."""

    session_id: str
    events: list[SeenEvent] = field(default_factory=list)
    done: bool = False  # got [DONE]
    accepted: bool | None = None  # None: the POST broke before it said
    rejection: str | None = None  # why the POST was refused, when it was
    lost: bool = False
    connections: int = 0
    drops: Counter[str] = field(default_factory=Counter)  # why a connection ended early

    @property
    def last_event_id(self) -> str | None:
        return format_event_id(self.session_id, self.events[-1].index) if self.events else None


@dataclass
class Client:
    http: httpx.AsyncClient
    gateways: list[str]
    request: Request

    async def run_session(self, log: SessionLog, rng: random.Random, gateway: int) -> None:
        """POST, then resume until [DONE]; the caller bounds how long this may take."""
        if await self._post(log, rng, gateway):
            return
        if log.rejection is None:
            await self._resume(log, gateway + 1)
        if log.rejection is not None:
            await asyncio.sleep(PAUSE_AFTER_REJECTION_SECONDS)

    async def _post(self, log: SessionLog, rng: random.Random, gateway: int) -> bool:
        url = f"{self.gateways[gateway % len(self.gateways)]}/v1/chat/completions"
        try:
            async with self.http.stream("POST", url, json=self.request.body(log.session_id, rng)) as response:
                log.connections += 1
                if response.status_code != 200:
                    log.accepted = False
                    log.rejection = rejection_code(response.status_code, await response.aread())
                    return False
                log.accepted = True
                if await self._read(response, log):
                    return True
                log.drops["closed without [DONE]"] += 1
        except (httpx.ConnectError, httpx.ConnectTimeout):
            # Nothing reached a gateway, so no session can exist.
            log.accepted = False
            log.rejection = "connect_error"
        except httpx.HTTPError as error:
            log.drops[type(error).__name__] += 1
        return False

    async def _resume(self, log: SessionLog, gateway: int) -> None:
        pause = FIRST_PAUSE_SECONDS
        not_found = 0
        while not log.done:
            url = f"{self.gateways[gateway % len(self.gateways)]}/v1/sessions/{log.session_id}/stream"
            gateway += 1
            headers = {"Last-Event-ID": last} if (last := log.last_event_id) else {}
            got_before = len(log.events)
            try:
                async with self.http.stream("GET", url, headers=headers) as response:
                    log.connections += 1
                    if response.status_code == 404:
                        not_found += 1
                        if not_found >= NOT_FOUND_LIMIT:
                            self._give_up_on_unknown(log)
                            return
                    elif response.status_code != 200:
                        await response.aread()
                        log.drops[f"HTTP {response.status_code}"] += 1
                    else:
                        not_found = 0
                        log.accepted = True
                        if await self._read(response, log):
                            return
                        log.drops["closed without [DONE]"] += 1
            except httpx.HTTPError as error:
                log.drops[type(error).__name__] += 1
            pause = (
                FIRST_PAUSE_SECONDS if len(log.events) > got_before else min(pause * 2, LONGEST_PAUSE_SECONDS)
            )
            await asyncio.sleep(pause)

    @staticmethod
    def _give_up_on_unknown(log: SessionLog) -> None:
        if log.accepted:
            log.lost = True
        else:
            # The POST broke before the gateway created the session.
            log.accepted = False
            log.rejection = "dropped_before_accepted"

    @staticmethod
    async def _read(response: httpx.Response, log: SessionLog) -> bool:
        """Record the response's events; True when it ended with [DONE]."""
        async for frame in sse_frames(response):
            if frame.data == DONE:
                log.done = True
                return True
            log.events.append(SeenEvent(index_of(frame.id, log.session_id), frame.data))
        return False


def index_of(event_id: str | None, session_id: str) -> int:
    """The event's index; -1 for an id that is missing or names another session."""
    try:
        named, index = parse_event_id(event_id or "")
    except ValueError:
        return -1
    return index if named == session_id else -1


def rejection_code(status: int, body: bytes) -> str:
    """The error code of an HTTP error response, with its status."""
    try:
        error = json.loads(body).get("error") or {}
    except (json.JSONDecodeError, AttributeError):
        error = {}
    code = error.get("code") or error.get("type") if isinstance(error, dict) else None
    return f"{code or 'no code'} (HTTP {status})"


@dataclass(frozen=True)
class FinalReplay:
    """A session's replay from its first event, or why there is none."""

    replay: Replay | None  # None: no gateway could give one
    found: bool  # False: every gateway says the session does not exist
    status: str | None  # the session's status, as GET /v1/sessions/{id} says


async def final_replay(
    http: httpx.AsyncClient, gateways: list[str], session_id: str, idle_s: float, attempts: int = 5
) -> FinalReplay:
    """Read the whole session again, stopping after ``idle_s`` without an event.

    A session still running never ends its stream, so the replay of a hung session stops
    when no event came for ``idle_s`` and is marked incomplete.
    """
    replay: Replay | None = None
    for attempt in range(attempts):
        gateway = gateways[attempt % len(gateways)]
        events: list[SeenEvent] = []
        try:
            url = f"{gateway}/v1/sessions/{session_id}/stream"
            async with http.stream("GET", url, timeout=httpx.Timeout(idle_s, connect=10.0)) as response:
                if response.status_code == 404:
                    return FinalReplay(None, False, None)
                if response.status_code == 200:
                    async for frame in sse_frames(response):
                        if frame.data == DONE:
                            replay = Replay(tuple(events), complete=True)
                            break
                        events.append(SeenEvent(index_of(frame.id, session_id), frame.data))
                    else:
                        replay = Replay(tuple(events), complete=False)
        except httpx.ReadTimeout:
            replay = Replay(tuple(events), complete=False)
        except httpx.HTTPError:
            pass
        if replay is not None:
            return FinalReplay(replay, True, await session_status(http, gateway, session_id))
        await asyncio.sleep(1.0)
    return FinalReplay(None, True, None)


async def session_status(http: httpx.AsyncClient, gateway: str, session_id: str) -> str | None:
    try:
        response = await http.get(f"{gateway}/v1/sessions/{session_id}", timeout=10.0)
        return str(response.json().get("status")) if response.status_code == 200 else None
    except (httpx.HTTPError, ValueError):
        return None
