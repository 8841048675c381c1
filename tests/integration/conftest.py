"""The tiny model loaded in-process, and a running engine writing to a real Redis."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from typing import Any

import pytest
import redis

from shared.jobs import ChatMessage, GenerationJob, SamplingParams, TextPart
from shared.session_scripts import Create, SyncScripts
from shared.settings import Settings
from tests.processes import RedisServer
from worker.engine import Engine
from worker.generation import build_sequence
from worker.media.loader import Media
from worker.model import LoadedModel, load_model
from worker.sequence import Outcome, Sequence
from worker.session_writer import SessionWriter

# Where the tiny model runs: a CPU, or (TEST_DEVICE_MAP=cuda) a GPU, where the engine's
# tests then capture and replay CUDA graphs for real, against generate() on the same device.
TEST_DEVICE_MAP = os.environ.get("TEST_DEVICE_MAP", "cpu")


@pytest.fixture(scope="session")
def engine_settings(redis_server: RedisServer, tiny_model: str) -> Settings:
    return Settings(
        model_repo_id=tiny_model,
        device_map=TEST_DEVICE_MAP,
        torch_dtype="float32",
        redis_url=redis_server.url(14),
    )


@pytest.fixture(scope="session")
def loaded(engine_settings: Settings) -> LoadedModel:
    return load_model(engine_settings)


@pytest.fixture
def connection(engine_settings: Settings) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(engine_settings.redis_url)
    client.flushdb()
    yield client
    client.close()


@pytest.fixture
def engine(loaded: LoadedModel, connection: redis.Redis) -> Iterator[Engine]:
    started = Engine(loaded, connection, max_batch=8)
    started.start()
    yield started
    started.stop()


def make_job(text: str = "Hello", **sampling: Any) -> GenerationJob:
    return GenerationJob(
        session_id=f"engine-{time.monotonic_ns()}",
        model="tiny",
        created=0,
        messages=[ChatMessage(role="user", content=[TextPart(text=text)])],
        sampling=SamplingParams(**{"max_new_tokens": 12, **sampling}),
    )


WORKER = "engine-test-worker"


def decode(engine: Engine, sequence: Sequence) -> Outcome:
    """Run a sequence to its end (it must not be interrupted)."""
    outcome = engine.run(sequence)
    assert outcome is not None, f"interrupted: {sequence.interrupted}"
    return outcome


def open_session(connection: redis.Redis, settings: Settings, job: GenerationJob) -> SessionWriter:
    """A queued session for the job, started by this test's worker: what a job would do."""
    scripts = SyncScripts(connection)
    job_id = f"job-{job.session_id}"
    create = Create(
        job.session_id,
        now=0,
        request_id=job_id,
        owner="test",
        model=job.model,
        keep_seconds=600,
        job_payload=job.model_dump_json(),
    )
    scripts.run(create)
    writer = SessionWriter(scripts, settings, job, WORKER)
    assert writer.start(job_id).status == "running"
    return writer


class SequenceFactory:
    def __init__(self, loaded: LoadedModel, connection: redis.Redis, settings: Settings) -> None:
        self.loaded, self.connection, self.settings = loaded, connection, settings

    def __call__(self, job: GenerationJob, media: list[Media] | None = None) -> Sequence:
        writer = open_session(self.connection, self.settings, job)
        writer.emit(writer.chunks.role())
        return build_sequence(self.loaded, job, writer, media)


@pytest.fixture
def sequence_for(loaded: LoadedModel, connection: redis.Redis, engine_settings: Settings) -> SequenceFactory:
    return SequenceFactory(loaded, connection, engine_settings)
