"""The worker's heartbeat: proof of life for the gateways, renewed from a side thread.

A background thread renews the worker's entry in the live-worker set and the lease of
every session it is generating for, in one round trip. The main thread may be deep inside
a long prefill, so liveness must not depend on it; when the process dies the beats stop
and the leases expire, which is how the gateways learn that a worker died. A worker that
cannot take jobs (its job slots are waiting for Redis to come back) stops announcing
itself, so that /health does not count it.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

import redis

from shared import keys
from shared.session_scripts import RenewLeases, SyncScripts
from shared.settings import Settings

log = logging.getLogger(__name__)


class Presence(threading.Thread):
    def __init__(
        self,
        connection: redis.Redis,
        scripts: SyncScripts,
        settings: Settings,
        worker_name: str,
        on_beat: Callable[[], None] | None = None,
        can_consume: Callable[[], bool] = lambda: True,
        status: Callable[[], dict[str, str | int]] | None = None,
    ) -> None:
        super().__init__(name="presence", daemon=True)
        self._redis = connection
        self._scripts = scripts
        self._lease_ms = int(settings.worker_lease_seconds * 1000)
        self._interval = settings.heartbeat_interval_seconds
        self._name = worker_name
        self._on_beat = on_beat
        self._can_consume = can_consume
        self._status = status
        self._sessions: set[str] = set()
        self._lock = threading.Lock()
        self._stopped = threading.Event()

    def hold(self, session_id: str) -> None:
        with self._lock:
            self._sessions.add(session_id)

    def release(self, session_id: str) -> None:
        with self._lock:
            self._sessions.discard(session_id)

    def beat(self) -> None:
        with self._lock:
            sessions = tuple(sorted(self._sessions))
        pipe = self._redis.pipeline(transaction=False)
        now = time.time()
        if self._can_consume():
            pipe.zadd(keys.live_workers(), {self._name: now + self._lease_ms / 1000})
            if self._status is not None:
                # What /health shows of this worker; it expires with the worker's presence.
                fields = [part for item in self._status().items() for part in item]
                pipe.hset(keys.worker_info(self._name), items=fields)
                pipe.pexpire(keys.worker_info(self._name), self._lease_ms)
        else:
            pipe.zrem(keys.live_workers(), self._name)
        # Workers that died without deregistering: drop them once their presence expired.
        pipe.zremrangebyscore(keys.live_workers(), "-inf", now)
        if sessions:
            self._scripts.queue(RenewLeases(self._name, self._lease_ms, sessions), pipe)
        pipe.execute()
        if self._on_beat is not None:
            self._on_beat()

    def run(self) -> None:
        while not self._stopped.wait(self._interval):
            try:
                self.beat()
            except redis.RedisError as error:  # an outage must not end the heartbeat for good
                log.warning("heartbeat failed: %s", error)
            except Exception:
                log.exception("heartbeat failed")

    def stop(self) -> None:
        self._stopped.set()
        try:
            self._redis.zrem(keys.live_workers(), self._name)
        except redis.RedisError:
            log.warning("could not deregister worker %s", self._name)
