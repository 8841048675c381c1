"""Start a worker: ``python -m worker``. Loads the model once, then serves RQ jobs."""

from __future__ import annotations

import logging
import os
import socket
import uuid

import redis
from rq.serializers import JSONSerializer

from shared.settings import get_settings
from worker.jobs import WorkerRuntime, install
from worker.media.loader import MediaLoader
from worker.model import load_model
from worker.presence import Presence
from worker.rq_worker import GpuWorker
from worker.session_writer import SessionScripts


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    # httpx logs every media URL it fetches, signed query strings included.
    logging.getLogger("httpx").setLevel(logging.WARNING)
    settings = get_settings()
    connection = redis.Redis.from_url(settings.redis_url)
    loaded = load_model(settings)
    name = settings.worker_name or f"{socket.gethostname()}.{os.getpid()}.{uuid.uuid4().hex[:6]}"
    GpuWorker.lease_seconds = settings.worker_lease_seconds
    rq_worker = GpuWorker([settings.queue_name], connection=connection, name=name, serializer=JSONSerializer)
    presence = Presence(connection, settings, name, on_beat=rq_worker.beat)
    media = MediaLoader(connection, settings)
    install(WorkerRuntime(settings, loaded, connection, SessionScripts(connection), presence, name, media))
    # Announce the worker only once the model is loaded: /health's modelReady relies on it.
    presence.beat()
    presence.start()
    try:
        rq_worker.work(with_scheduler=False)
    finally:
        presence.stop()
        media.close()


if __name__ == "__main__":
    main()
