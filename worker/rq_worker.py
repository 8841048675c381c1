"""The RQ worker classes: jobs run in the worker's own process, next to the loaded model."""

from __future__ import annotations

import logging
import math
from typing import Any

from rq.job import Job
from rq.queue import Queue
from rq.timeouts import TimerDeathPenalty
from rq.worker import SimpleWorker, WorkerStatus

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

    def stop_after_current_job(self) -> None:
        # RQ's own request_stop installs signal handlers, which only the main thread may do.
        self._stop_requested = True

    @property
    def busy(self) -> bool:
        return bool(self.get_state() == WorkerStatus.BUSY)
