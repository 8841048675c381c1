"""Prometheus metrics of the gateway and a worker, /health and /v1/models, the dashboard.

A private stack whose worker serves its metrics; both are scraped before and after a
known set of requests (one that runs to its length, one refused, one cancelled mid-stream,
one resumed), and the counters must have moved exactly as those requests drove them.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from pathlib import Path

import httpx
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import Stack, StackFactory
from tests.processes import free_port
from tests.sse import iter_events

ROOT = Path(__file__).resolve().parents[2]
DASHBOARD = ROOT / "docker" / "grafana" / "dashboards" / "qwen3vl.json"
HELLO = [{"role": "user", "content": "Hello"}]
NO_EOS = {"151643": -100, "151645": -100}

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def scrape(url: str) -> Samples:
    text = httpx.get(f"{url}/metrics", timeout=10).text
    samples: Samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples


def delta(before: Samples, after: Samples, name: str, **labels: str) -> float:
    key = (name, tuple(sorted(labels.items())))
    return after.get(key, 0.0) - before.get(key, 0.0)


def worker_url(port: int) -> str:
    return f"http://127.0.0.1:{port}"


def test_counters_move_exactly_as_the_requests_drove_them(make_stack: StackFactory) -> None:
    port = free_port()
    private = make_stack(WORKER_METRICS_PORT=str(port))
    gateway = private.gateway.url
    gateway_before, worker_before = scrape(gateway), scrape(worker_url(port))

    url = f"{gateway}/v1/chat/completions"
    done = httpx.post(url, json={"messages": HELLO, "max_tokens": 8, "logit_bias": NO_EOS}, timeout=60)
    assert done.status_code == 200
    refused = httpx.post(url, json={"messages": HELLO, "temperature": 3}, timeout=60)
    assert refused.status_code == 400
    body = {"messages": HELLO, "max_tokens": 2000, "stream": True, "session_id": "metrics-cancel"}
    with httpx.stream("POST", url, json=body, timeout=60) as response:
        events = iter_events(response)
        for _ in range(5):
            next(events)
        assert httpx.post(f"{gateway}/v1/cancel/metrics-cancel", timeout=10).status_code == 200
        rest = list(events)
    assert rest[-2].json["choices"][0]["finish_reason"] == "cancelled"
    resume = {"Last-Event-ID": "metrics-cancel:3"}
    with httpx.stream("GET", f"{gateway}/v1/sessions/metrics-cancel/stream", headers=resume, timeout=30) as r:
        assert len(list(iter_events(r))) > 1
    cancelled = httpx.get(f"{gateway}/v1/sessions/metrics-cancel", timeout=10).json()["usage"]

    gateway_after, worker_after = scrape(gateway), scrape(worker_url(port))

    def g(name: str, **labels: str) -> float:
        return delta(gateway_before, gateway_after, name, **labels)

    def w(name: str, **labels: str) -> float:
        return delta(worker_before, worker_after, name, **labels)

    chat = {"route": "/v1/chat/completions"}
    assert g("qwen3vl_requests_total", **chat, status_code="200", outcome="ok") == 2
    assert g("qwen3vl_requests_total", **chat, status_code="400", outcome="invalid") == 1
    assert g("qwen3vl_requests_total", route="/v1/cancel/{session_id}", status_code="200", outcome="ok") == 1
    assert (
        g("qwen3vl_requests_total", route="/v1/sessions/{session_id}/stream", status_code="200", outcome="ok")
        == 1
    )
    assert g("qwen3vl_resumes_total") == 1
    # Read from Redis at the scrape: the stack's one worker, nothing queued.
    assert gateway_after[("qwen3vl_live_workers", ())] == 1
    assert gateway_after[("qwen3vl_queue_depth", ())] == 0
    assert g("qwen3vl_cancels_total", kind="manual") == 1
    assert g("qwen3vl_request_success_total", finished_reason="length") == 1
    assert g("qwen3vl_request_success_total", finished_reason="cancelled") == 1
    for histogram in ("time_to_first_token", "e2e_request_latency", "request_queue_time"):
        assert g(f"qwen3vl_{histogram}_seconds_count") == 2, histogram
    assert g("qwen3vl_inter_token_latency_seconds_count") > 0

    assert w("qwen3vl_jobs_total", outcome="finished") == 1
    assert w("qwen3vl_jobs_total", outcome="cancelled") == 1
    assert w("qwen3vl_generation_tokens_total") == 8 + cancelled["completion_tokens"]
    prompt = done.json()["usage"]["prompt_tokens"]
    assert w("qwen3vl_prompt_tokens_total") == prompt + cancelled["prompt_tokens"]
    assert w("qwen3vl_prefill_seconds_count", kind="text") == 2
    assert w("qwen3vl_decode_step_seconds_count") == w("qwen3vl_batch_size_count") > 0
    assert worker_after[("qwen3vl_kv_cache_budget_bytes", ())] > 0
    assert worker_after[("qwen3vl_num_requests_running", ())] == 0

    # The dashboard queries only metrics that exist.
    names = {name for name, _ in gateway_after} | {name for name, _ in worker_after}
    queried = Counter(
        name
        for panel in json.loads(DASHBOARD.read_text())["panels"]
        for target in panel["targets"]
        for name in re.findall(r"qwen3vl_[a-z0-9_]+", target["expr"])
    )
    missing = [name for name in queried if name not in names]
    assert not missing, f"the dashboard queries metrics no scrape shows: {missing}"


def test_health_lists_the_workers_and_models_give_the_context(stack: Stack) -> None:
    health = httpx.get(f"{stack.gateway.url}/health", timeout=10).json()
    (worker,) = health["liveWorkers"]
    assert worker["model"] == stack.env["MODEL_REPO_ID"]
    assert worker["maxBatch"] > 0 and worker["running"] >= 0 and worker["contextLength"] > 0
    assert health["oldestQueuedSeconds"] is None and health["queueDepth"] == 0
    models = httpx.get(f"{stack.gateway.url}/v1/models", timeout=10).json()["data"]
    assert models[0]["max_model_len"] == worker["contextLength"]


def test_a_queued_job_has_an_age(make_stack: StackFactory) -> None:
    private = make_stack(WORKER_MAX_BATCH="1")
    url = f"{private.gateway.url}/v1/chat/completions"
    long = {"messages": HELLO, "max_tokens": 3000, "stream": True, "logit_bias": NO_EOS, "session_id": "busy"}
    with httpx.stream("POST", url, json=long, timeout=60) as running:
        next(iter_events(running))
        waiting = {"messages": HELLO, "max_tokens": 4, "stream": True, "session_id": "waits"}
        with httpx.stream("POST", url, json=waiting, timeout=60):
            health = httpx.get(f"{private.gateway.url}/health", timeout=10).json()
            assert health["queueDepth"] >= 1
            assert health["oldestQueuedSeconds"] is not None and health["oldestQueuedSeconds"] >= 0
            assert health["liveWorkers"][0]["running"] == 1
            httpx.post(f"{private.gateway.url}/v1/cancel/waits", timeout=10)
        httpx.post(f"{private.gateway.url}/v1/cancel/busy", timeout=10)
