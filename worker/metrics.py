"""The worker's Prometheus metrics, served on WORKER_METRICS_PORT (0: not served).

Named after vLLM's engine metrics where one exists (``vllm:num_requests_running`` becomes
``qwen3vl_num_requests_running``; README.md has the table). The engine thread updates them
at every step; the job threads count what they run, and media fetches and decodes.
"""

from __future__ import annotations

import logging

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server

log = logging.getLogger(__name__)

REGISTRY = CollectorRegistry(auto_describe=True)
STEP_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 1.0)
SLOW_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 24, 32, 48, 64, 96, 128)

RUNNING = Gauge("qwen3vl_num_requests_running", "Sequences in the decoding batch.", registry=REGISTRY)
WAITING = Gauge("qwen3vl_num_requests_waiting", "Sequences waiting for room in the batch.", registry=REGISTRY)
BATCH_SIZE = Histogram(
    "qwen3vl_batch_size", "Rows decoded by each decoding step.", buckets=BATCH_BUCKETS, registry=REGISTRY
)
DECODE_STEP = Histogram(
    "qwen3vl_decode_step_seconds", "One decoding step of the batch.", buckets=STEP_BUCKETS, registry=REGISTRY
)
PREFILL = Histogram(
    "qwen3vl_prefill_seconds",
    "Prefill of one request, by the media it holds.",
    ["kind"],
    buckets=SLOW_BUCKETS,
    registry=REGISTRY,
)
PROMPT_TOKENS = Counter("qwen3vl_prompt_tokens", "Prompt tokens prefilled.", registry=REGISTRY)
GENERATION_TOKENS = Counter("qwen3vl_generation_tokens", "Tokens generated.", registry=REGISTRY)
KV_CACHE_BYTES = Gauge(
    "qwen3vl_kv_cache_bytes", "Bytes of key/value cache the batch holds now.", registry=REGISTRY
)
KV_CACHE_BUDGET_BYTES = Gauge(
    "qwen3vl_kv_cache_budget_bytes", "Bytes of key/value cache the batch may hold.", registry=REGISTRY
)
MEDIA_FETCH = Histogram(
    "qwen3vl_media_fetch_seconds",
    "Download of one request's media URLs.",
    buckets=SLOW_BUCKETS,
    registry=REGISTRY,
)
MEDIA_DECODE = Histogram(
    "qwen3vl_media_decode_seconds",
    "Decoding of one image or video.",
    ["kind"],
    buckets=SLOW_BUCKETS,
    registry=REGISTRY,
)
GREEDY_SCAN_ROWS = Counter(
    "qwen3vl_greedy_scan_rows",
    "Greedy rows picked from bfloat16 logits: decided by the scan's bound, or left to float32 logits.",
    ["outcome"],
    registry=REGISTRY,
)
JOBS = Counter("qwen3vl_jobs", "Jobs run by this worker, by how they ended.", ["outcome"], registry=REGISTRY)


# Labelled series exist from the start (at 0), so that dashboards and alerts find them.
for _kind in ("text", "image", "video"):
    PREFILL.labels(_kind)
for _kind in ("image", "video"):
    MEDIA_DECODE.labels(_kind)
for _outcome in ("decided", "float32"):
    GREEDY_SCAN_ROWS.labels(_outcome)


def serve(port: int) -> None:
    """Serve /metrics on ``port`` from a thread of its own; 0 serves nothing."""
    if port == 0:
        return
    try:
        start_http_server(port, registry=REGISTRY)
    except OSError as error:  # another worker on this host has the port: keep serving jobs
        log.warning("metrics not served: port %d is not free (%s)", port, error)
        return
    log.info("metrics on http://0.0.0.0:%d/metrics", port)
