"""A worker killed mid-generation: its clients get an error and [DONE], nothing hangs."""

from __future__ import annotations

import time

import httpx
from rq.job import Job, JobStatus
from rq.registry import FailedJobRegistry
from rq.serializers import JSONSerializer

from shared import keys, session_scripts
from tests.conftest import Stack, StackFactory
from tests.processes import wait_until
from tests.sse import iter_events

HELLO = [{"role": "user", "content": "Hello"}]


def test_killed_worker_fails_the_session_and_the_rq_job(make_stack: StackFactory) -> None:
    private = make_stack()
    worker = private.workers[0]
    body = {"messages": HELLO, "max_tokens": 20000, "stream": True, "session_id": "worker-dies"}
    events = []
    with httpx.stream(
        "POST", f"{private.gateway.url}/v1/chat/completions", json=body, timeout=30
    ) as response:
        killed_at = 0.0
        for event in iter_events(response):
            events.append(event)
            if len(events) == 10:
                worker.kill()
                killed_at = time.monotonic()
        ended_after = time.monotonic() - killed_at

    assert ended_after < 10, f"the client waited {ended_after:.1f}s"
    assert events[-1].is_done
    error = events[-2].json["error"]
    assert error["type"] == "server_error" and "worker" in error["message"]
    indexes = [e.index for e in events[:-1]]
    assert indexes == list(range(len(indexes)))

    session = httpx.get(f"{private.gateway.url}/v1/sessions/worker-dies", timeout=5).json()
    assert session["status"] == "failed"
    job_id = str(private.redis.hget("qvl:session:worker-dies", "job_id"))

    def rq_failed() -> bool:
        job = Job.fetch(job_id, connection=private.rq_redis, serializer=JSONSerializer)
        return job.get_status() == JobStatus.FAILED

    wait_until(rq_failed, 15, "RQ to mark the job failed")
    registry = FailedJobRegistry("generation", connection=private.rq_redis, serializer=JSONSerializer)
    assert job_id in registry.get_job_ids()

    # Resuming the failed session replays the same ending instead of hanging.
    with httpx.stream(
        "POST",
        f"{private.gateway.url}/v1/chat/completions",
        json=body,
        headers={"Last-Event-ID": events[3].id or ""},
        timeout=30,
    ) as response:
        resumed = list(iter_events(response))
    assert [e.data for e in resumed] == [e.data for e in events[4:]]


def test_a_new_worker_serves_after_a_death(make_stack: StackFactory) -> None:
    private = make_stack()
    private.workers[0].kill()
    wait_until(lambda: private.gateway.health()["workers"] == 0, 10, "the dead worker to drop out")
    refused = httpx.post(
        f"{private.gateway.url}/v1/chat/completions", timeout=10, json={"messages": HELLO, "max_tokens": 2}
    )
    assert refused.status_code == 503
    assert refused.json()["error"]["code"] == "no_worker"
    private.add_worker()
    served = httpx.post(
        f"{private.gateway.url}/v1/chat/completions", timeout=60, json={"messages": HELLO, "max_tokens": 2}
    )
    assert served.status_code == 200


def test_two_workers_share_the_load(make_stack: StackFactory) -> None:
    private = make_stack(workers=2, WORKER_MAX_BATCH="1")
    assert private.gateway.health()["workers"] == 2
    names = ["shared-a", "shared-b"]
    body = {"messages": HELLO, "max_tokens": 20000, "stream": True}
    with httpx.Client(timeout=30) as http:
        streams = [
            http.send(
                http.build_request(
                    "POST", f"{private.gateway.url}/v1/chat/completions", json={**body, "session_id": name}
                ),
                stream=True,
            )
            for name in names
        ]

        def both_running() -> bool:
            return all(private.redis.hget(f"qvl:session:{n}", "status") == "running" for n in names)

        wait_until(both_running, 15, "both jobs to run")
        # One job slot each: the two jobs can only run at once on two different workers.
        workers = {private.redis.hget(f"qvl:session:{n}", "worker") for n in names}
        assert len(workers) == 2
        for name in names:
            http.post(f"{private.gateway.url}/v1/cancel/{name}")
        for stream in streams:
            stream.close()


def test_a_queued_session_whose_job_is_lost_fails_instead_of_hanging(stack: Stack) -> None:
    # As if a worker had taken the job and died before starting it, long enough ago for
    # RQ to have dropped it: the session is queued, its job is gone.
    create = stack.redis.register_script(session_scripts.CREATE)
    created = int(time.time()) - 60
    create(keys=keys.session_keys("lost-job"), args=["lost-job", created, "no-such-job", "", "m", 600])
    wait_until(lambda: stack.redis.hget("qvl:session:lost-job", "status") == "failed", 10, "the reaper")
    body = {"messages": HELLO, "stream": True, "session_id": "lost-job"}
    with httpx.stream("POST", f"{stack.gateway.url}/v1/chat/completions", json=body, timeout=10) as response:
        events = list(iter_events(response))
    assert "lost" in events[0].json["error"]["message"] and events[-1].is_done
