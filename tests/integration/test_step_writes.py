"""A step's event writes sent in the background, against a real Redis."""

from __future__ import annotations

import redis

from shared import keys
from shared.session_scripts import SyncScripts
from shared.settings import Settings
from tests.integration.conftest import make_job, open_session
from tests.processes import free_port
from worker.step_writes import StepWrites


def test_replies_reach_the_writers_only_when_settled(
    connection: redis.Redis, engine_settings: Settings
) -> None:
    writer = open_session(connection, engine_settings, make_job())
    writes = StepWrites(SyncScripts(connection), tolerance_seconds=5)
    try:
        writer.emit("first")
        writes.send([writer])
        connection.set(keys.session_cancel(writer.session_id), "1")
        writer.emit("second")  # the engine goes on while the first write travels
        assert writer.unwritten and not writer.cancel_requested
        writes.settle()
        # The first event is known written; the second is still the writer's to send.
        assert writer.unwritten
        writes.send([writer])
        writes.settle()
        assert not writer.unwritten and writer.cancel_requested
        stored = connection.xrange(keys.session_events(writer.session_id))
        assert [fields[b"d"] for _, fields in stored] == [b"first", b"second"]
    finally:
        writes.close()


def test_writes_that_failed_in_flight_are_sent_again(
    connection: redis.Redis, engine_settings: Settings
) -> None:
    writer = open_session(connection, engine_settings, make_job())
    # Nothing listens on this port: every attempt fails until the tolerance is spent.
    nowhere = redis.Redis(port=free_port(), socket_connect_timeout=0.2)
    failing = StepWrites(SyncScripts(nowhere), tolerance_seconds=0.3)
    writer.emit("kept")
    failing.send([writer])
    failing.close()  # logs the failure instead of raising it
    assert writer.unwritten
    writes = StepWrites(SyncScripts(connection), tolerance_seconds=5)
    try:
        writes.send([writer])
        writes.settle()
    finally:
        writes.close()
    assert not writer.unwritten
    assert connection.xlen(keys.session_events(writer.session_id)) == 1
