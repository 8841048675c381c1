"""Start a worker: ``python -m worker``. Loads the model once, then serves RQ jobs."""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import socket
import sys
import threading
import time
import uuid

import redis
from rq.serializers import JSONSerializer

from shared.logs import configure_logging
from shared.queueing import QueueKind, generation_queues, queue_name
from shared.redis_connection import sync_client
from shared.redis_retry import retry_through_outage
from shared.session_scripts import SyncScripts
from shared.settings import Settings, get_settings
from worker import device_defaults, metrics
from worker.engine import Engine
from worker.jobs import WorkerRuntime, install
from worker.media.loader import MediaLoader
from worker.model import LoadedModel, load_model
from worker.presence import Presence
from worker.rq_worker import GpuWorker, JobSlot
from worker.threads import configure_cpu_threads

log = logging.getLogger("worker")


def _slots(settings: Settings, connection: redis.Redis, name: str) -> list[JobSlot]:
    """One job slot per row of the batch for each queue: text requests keep theirs while
    requests with media wait for their downloads and decoding."""
    return [
        JobSlot(
            [queue_name(settings, kind)],
            connection=connection,
            name=f"{name}.{kind.value}.{index}",
            serializer=JSONSerializer,
        )
        for kind in QueueKind
        for index in range(settings.worker_max_batch)
    ]


def worker_status(settings: Settings, loaded: LoadedModel, engine: Engine) -> dict[str, str | int]:
    running, waiting = engine.occupancy
    return {
        "model": settings.model_name,
        "running": running,
        "waiting": waiting,
        "max_batch": settings.worker_max_batch,
        "context": loaded.max_context_tokens,
    }


def _wait_for_signal() -> None:
    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())
    stop.wait()


def main() -> None:
    settings = get_settings()
    configure_logging(settings.log_format)
    metrics.serve(settings.worker_metrics_port)
    # Every job slot holds a connection in a blocking dequeue and uses more while it runs;
    # redis-py's default pool of 100 is too small for a wide batch.
    connection = sync_client(settings, max_connections=100 + 8 * settings.worker_max_batch)
    configure_cpu_threads(settings.worker_torch_threads, settings.device_map)
    loaded = load_model(settings)
    name = settings.worker_name or f"{socket.gethostname()}.{os.getpid()}.{uuid.uuid4().hex[:6]}"
    GpuWorker.lease_seconds = settings.worker_lease_seconds
    tolerance = settings.redis_outage_tolerance_seconds
    # RQ's worker reads from Redis as it is built: a worker started during an outage waits.
    slots = retry_through_outage(lambda: _slots(settings, connection, name), tolerance, "worker start")
    engine = Engine(
        loaded,
        connection,
        settings.worker_max_batch,
        settings.redis_outage_tolerance_seconds,
        device_defaults.prefill_chunk_tokens(settings.worker_prefill_chunk_tokens, loaded.device),
        device_defaults.cuda_graphs(settings.worker_cuda_graphs, loaded.device, loaded.compiled_graphs),
        greedy_scan=settings.worker_greedy_bf16_scan,
    )

    def beat_slots() -> None:
        for slot in slots:
            slot.beat()

    scripts = SyncScripts(connection)
    presence = Presence(
        connection,
        scripts,
        settings,
        name,
        on_beat=beat_slots,
        can_consume=lambda: engine.alive and any(slot.serving for slot in slots),
        status=lambda: worker_status(settings, loaded, engine),
    )
    media = MediaLoader(connection, settings)
    runtime = WorkerRuntime(
        settings,
        loaded,
        connection,
        scripts,
        presence,
        engine,
        name,
        media,
        generation_queues(settings, connection),
    )
    install(runtime)
    engine.start()
    for slot in slots:
        slot.serving = True  # until its loop says otherwise
        threading.Thread(target=slot.serve, args=(tolerance,), name=slot.name, daemon=True).start()
    # Announce the worker only once the model is loaded: /health's modelReady relies on it.
    retry_through_outage(presence.beat, tolerance, "worker start")
    presence.start()
    log.info("worker %s ready with %d job slots", name, len(slots))

    _wait_for_signal()
    drain(runtime, slots)
    presence.stop()
    engine.stop()
    media.close()
    log.info("worker %s stopped", name)
    _exit_now()


def _exit_now() -> None:
    """End the process without the interpreter's teardown.

    Everything that matters is done: sessions handed over, presence removed, the media
    processes closed. What is left is freeing the model and the native libraries' thread
    pools, which took about 2 s of the 2.4 s a stop took (measured on a 2-core CPU), time
    that a rolling restart or a scale-down would spend waiting on a process with nothing to do.
    """
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


def drain(runtime: WorkerRuntime, slots: list[JobSlot]) -> None:
    """Stop taking jobs and hand every running session over to another worker.

    A handed-over session is queued again at the front and continues on another worker
    from its next event, so a rolling restart costs its clients a pause, not an error.
    Jobs a slot still takes while it stops are handed straight back.
    """
    log.info("shutting down: handing running sessions over to other workers")
    runtime.draining.set()
    for slot in slots:
        slot.stop_after_current_job()
    runtime.engine.hand_over()
    deadline = time.monotonic() + runtime.settings.worker_drain_seconds
    while any(slot.busy_locally for slot in slots) and time.monotonic() < deadline:
        time.sleep(0.1)
    for slot in slots:
        with contextlib.suppress(redis.RedisError):
            slot.register_death()


if __name__ == "__main__":
    main()
