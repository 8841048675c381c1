"""The RQ worker classes: jobs run in the worker's own process, next to the loaded model."""

from __future__ import annotations

import contextlib
import logging
import math
import threading
from typing import Any

import redis
from rq.job import Job
from rq.queue import Queue
from rq.timeouts import TimerDeathPenalty
from rq.worker import SimpleWorker

from shared.redis_retry import backoff_delays

log = logging.getLogger(__name__)


class GpuWorker(SimpleWorker):
    """A SimpleWorker (no fork per job: the model stays loaded) with a short RQ lease.

    RQ's own heartbeat for a running job is only renewed between jobs by a SimpleWorker,
    so the lease is kept short and renewed by the worker's presence thread through
    ``beat``; if the process dies, the job's entry in RQ's started registry expires within
    seconds and RQ's registry cleanup (run by the gateways) moves it to the failed registry.
    """

    lease_seconds: float = 5.0

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._running_job: Job | None = None

    def get_heartbeat_ttl(self, job: Job) -> int:
        return max(1, math.ceil(self.lease_seconds))

    def heartbeat(self, timeout: int | None = None, pipeline: Any = None) -> None:
        """RQ's heartbeat (the worker hash's last_heartbeat and its TTL) in one round trip.

        Called without a pipeline, RQ sends its two commands one after the other, and it
        beats three times per job (before and after taking one, and after running it): six
        round trips of the job's thread, each a turn at the GIL the engine then waits for.
        """
        if pipeline is not None:
            super().heartbeat(timeout, pipeline=pipeline)
            return
        with self.connection.pipeline(transaction=False) as batch:
            super().heartbeat(timeout, pipeline=batch)
            batch.execute()

    def execute_job(self, job: Job, queue: Queue) -> None:
        self._running_job = job
        try:
            super().execute_job(job, queue)
        finally:
            self._running_job = None

    def beat(self) -> None:
        job = self._running_job
        if job is None or self.execution is None:
            return
        try:
            self.maintain_heartbeats(job)
        except Exception:  # the job may have ended between the check and the beat
            log.debug("RQ heartbeat skipped", exc_info=True)


class JobSlot(GpuWorker):
    """One of the worker process's job threads: an RQ worker that runs in a thread.

    A process runs one slot per job it may hold at once (WORKER_MAX_BATCH), all feeding
    the same engine, so RQ still sees every job started, finished or failed on its own.
    Signals belong to the main thread, and job timeouts use a timer instead of SIGALRM.
    """

    death_penalty_class = TimerDeathPenalty

    def _install_signal_handlers(self) -> None:
        pass

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # True while RQ's work loop runs; false while the slot waits for Redis to come back.
        self.serving = False

    def stop_after_current_job(self) -> None:
        # RQ's own request_stop installs signal handlers, which only the main thread may do.
        self._stop_requested = True

    def serve(self, outage_tolerance_seconds: float) -> None:
        """Run RQ's work loop, and run it again whenever it quits on an error.

        RQ's loop quits on any Redis error outside its blocking dequeue (a step of its job
        bookkeeping during a Redis restart): left alone, a short outage would end the slot
        for good. Before starting again the slot must be registered dead, or RQ refuses to
        register the same name; that and the restart wait for Redis with backoff.
        """
        while not self._stop_requested:
            self.serving = True
            try:
                self.work(with_scheduler=False)
            except Exception:
                log.warning("job slot %s stopped on an error", self.name, exc_info=True)
            finally:
                self.serving = False
            if self._stop_requested:
                return
            self._wait_until_registered_dead(outage_tolerance_seconds)

    def _wait_until_registered_dead(self, outage_tolerance_seconds: float) -> None:
        # Past the tolerance the slot keeps waiting (more slowly): a worker that cannot
        # consume stops announcing itself, so nothing is sent to it meanwhile.
        delays = backoff_delays(outage_tolerance_seconds)
        while not self._stop_requested:
            try:
                with contextlib.suppress(Exception):
                    self.unsubscribe()  # type: ignore[no-untyped-call]
                self.register_death()  # type: ignore[no-untyped-call]
                return
            except redis.RedisError:
                delay = delays()
                threading.Event().wait(delay if delay is not None else outage_tolerance_seconds / 4)

    @property
    def busy_locally(self) -> bool:
        """Whether the slot is running a job now (known without asking Redis)."""
        return self._running_job is not None
