"""The attachment renewer stops when asked, even if a renewal swallowed its cancellation."""

from __future__ import annotations

import asyncio

from api.attachments import Attachments


def test_a_renewer_whose_cancellation_was_swallowed_still_stops() -> None:
    async def scenario() -> None:
        attachments = Attachments()
        renewing = asyncio.Event()
        swallowed: list[bool] = []

        async def touch_that_swallows_a_cancel(
            sessions: list[tuple[str, float]],
        ) -> list[BaseException | None]:
            renewing.set()
            try:
                await asyncio.sleep(10)
            except asyncio.CancelledError:
                if swallowed:
                    raise
                swallowed.append(True)  # the first one, as redis-py may when it meets the reply
            return [None] * len(sessions)

        attachments.attach("session", 0.3, touch_that_swallows_a_cancel, due=0.0)
        task = asyncio.create_task(attachments.run())
        await asyncio.wait_for(renewing.wait(), 5)
        # What the stream hub's close does: stop, then cancel.
        attachments.stop()
        task.cancel()
        # Without the stop the loop would sweep on, renewing every 0.1 s, and never end.
        done, _ = await asyncio.wait({task}, timeout=2)
        assert swallowed and task in done

    asyncio.run(scenario())
