"""A decoding step's event writes, sent while the engine computes the next step.

Waiting for every step's round trip to Redis left the model idle for that long: at 16
streams on two cores, a quarter of the engine thread's time. One batch of writes is in
flight at a time, sent by a thread of its own; the engine takes its replies (a cancel
requested, a session lost, Redis behind) at its next flush, so a writer's state is only
ever changed by the engine thread, and a cancel is seen one step later than before.
"""

from __future__ import annotations

import logging
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass

from shared.session_scripts import Append, AppendReply, SyncScripts
from worker.session_writer import SessionWriter, take_replies, write_together

log = logging.getLogger(__name__)


@dataclass
class InFlight:
    writers: list[SessionWriter]
    calls: list[Append]
    replies: Future[list[AppendReply]]


class StepWrites:
    def __init__(self, scripts: SyncScripts, tolerance_seconds: float) -> None:
        self._scripts = scripts
        self._tolerance = tolerance_seconds
        self._sender = ThreadPoolExecutor(max_workers=1, thread_name_prefix="event-writes")
        self._in_flight: InFlight | None = None

    def send(self, writers: list[SessionWriter]) -> None:
        """Send what these writers hold and Redis does not (at most one send in flight)."""
        assert self._in_flight is None, "settle the writes in flight first"
        if not writers:
            return
        calls = [writer.append_call() for writer in writers]
        replies = self._sender.submit(write_together, self._scripts, calls, self._tolerance)
        self._in_flight = InFlight(writers, calls, replies)

    def settle(self) -> None:
        """Wait for the writes in flight and give each writer its reply.

        Raises what the writes raised (Redis gone for longer than the outage tolerance);
        the writers then still hold those events as unwritten, and a later write sends
        them again, which Redis recognises as a replay.
        """
        in_flight, self._in_flight = self._in_flight, None
        if in_flight is not None:
            take_replies(in_flight.writers, in_flight.calls, in_flight.replies.result())

    def drain(self) -> None:
        """Settle, logging a failure instead of raising it: before the writers change hands."""
        try:
            self.settle()
        except Exception:
            log.warning("event writes in flight failed; their events are written again later", exc_info=True)

    def close(self) -> None:
        self.drain()
        self._sender.shutdown(wait=True)
