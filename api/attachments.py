"""Keeps followed sessions marked as attached, for all of a gateway's followers at once.

A session counts as attached while a gateway renews its attached key (auto-cancel watches
it). Renewing per follower costs a round trip per stream and second, most of the CPU an
idle stream costs; here each followed session is renewed once per period however many
follow it, and the renewals due together go out in one pipelined round trip.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

log = logging.getLogger(__name__)

# Renews many sessions (id, hold seconds) at once; answers what each renewal raised, or None.
TouchMany = Callable[[list[tuple[str, float]]], Awaitable[list[BaseException | None]]]

# How often the sweep looks for renewals that are due.
SWEEP_SECONDS = 0.25
TOUCHES_PER_ROUND_TRIP = 500


@dataclass(eq=False)
class _Attachment:
    session_id: str
    hold_seconds: float
    touch: TouchMany
    due: float
    followers: int = 1


class Attachments:
    def __init__(self) -> None:
        self._sessions: dict[str, _Attachment] = {}
        self._stopping = False

    def attach(self, session_id: str, hold_seconds: float, touch: TouchMany, due: float) -> None:
        """Keep renewing the session (first at ``due``, monotonic) until ``detach``."""
        attachment = self._sessions.get(session_id)
        if attachment is None:
            self._sessions[session_id] = _Attachment(session_id, hold_seconds, touch, due)
            return
        attachment.followers += 1
        attachment.hold_seconds = min(attachment.hold_seconds, hold_seconds)
        attachment.due = min(attachment.due, due)

    def detach(self, session_id: str) -> None:
        attachment = self._sessions.get(session_id)
        if attachment is not None:
            attachment.followers -= 1
            if attachment.followers <= 0:
                del self._sessions[session_id]

    def stop(self) -> None:
        """End ``run`` at its next sweep. Cancelling it is not enough on its own: redis-py can
        let a cancellation pass while a reply arrives, and the loop would go on for good."""
        self._stopping = True

    async def run(self) -> None:
        while not self._stopping:
            await asyncio.sleep(SWEEP_SECONDS)
            now = time.monotonic()
            due: dict[TouchMany, list[_Attachment]] = {}
            for attachment in self._sessions.values():
                if attachment.due <= now:
                    due.setdefault(attachment.touch, []).append(attachment)
            for touch, attachments in due.items():
                for first in range(0, len(attachments), TOUCHES_PER_ROUND_TRIP):
                    await self._renew(touch, attachments[first : first + TOUCHES_PER_ROUND_TRIP], now)

    async def _renew(self, touch: TouchMany, attachments: list[_Attachment], now: float) -> None:
        try:
            outcomes = await touch([(a.session_id, a.hold_seconds) for a in attachments])
        except Exception as error:  # the whole round trip failed
            outcomes = [error] * len(attachments)
        for attachment, outcome in zip(attachments, outcomes, strict=True):
            if outcome is not None:
                # Redis unreachable, most likely: the followers notice it on their own reads.
                log.debug("renewing attached session %s failed: %s", attachment.session_id, outcome)
                continue
            # A third of the hold: two renewals may be late before the mark lapses.
            attachment.due = now + attachment.hold_seconds / 3
