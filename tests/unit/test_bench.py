"""The benchmark's pure parts: percentiles, what a stream counts, targets, tables."""

from __future__ import annotations

from bench.analysis import targets
from bench.load import Stream, summarise
from bench.report import table
from bench.results import BaselineResult, BenchResults, LevelResult, ServerResult
from bench.stats import Percentiles, percentile


def test_percentile_interpolates_like_numpy() -> None:
    assert percentile([], 50) is None
    assert percentile([3.0], 95) == 3.0
    assert percentile([1.0, 2.0, 3.0, 4.0], 50) == 2.5
    assert percentile([float(n) for n in range(101)], 95) == 95.0


def test_stream_counts_text_chunks_and_usage() -> None:
    stream = Stream(start=0.0)
    stream.read_chunk({"choices": [{"delta": {"role": "assistant", "content": ""}}]}, 0.01)
    stream.read_chunk({"choices": [{"delta": {"reasoning_content": "a"}}]}, 0.02)
    stream.read_chunk({"choices": [{"delta": {"content": "b"}, "finish_reason": "length"}]}, 0.05)
    stream.read_chunk({"choices": [], "usage": {"completion_tokens": 3, "prompt_tokens": 7}}, 0.06)
    assert stream.token_times == [0.02, 0.05]
    assert stream.ok and stream.tokens == 3 and stream.prompt_tokens == 7


def test_summary_leaves_prefix_chunks_out_of_latencies() -> None:
    stream = Stream(start=0.0, end=1.0, token_times=[0.001, 0.1, 0.2], finish_reason="stop")
    level = summarise(1, [stream], prefix_chunks=1)
    assert level.ttft_ms.p50 is not None and round(level.ttft_ms.p50) == 100
    assert level.itl_ms.samples == 1
    assert level.tokens_per_s == 3.0


def test_a_stream_without_finish_reason_failed() -> None:
    level = summarise(1, [Stream(start=0.0, end=1.0, token_times=[0.5])], prefix_chunks=0)
    assert (level.ok, level.failed) == (0, 1)
    assert level.first_error == "the stream ended without a finish_reason"


def _level(concurrency: int, tokens_per_s: float, ttft_ms: float) -> LevelResult:
    ms = Percentiles(ttft_ms, ttft_ms, ttft_ms, 1)
    return LevelResult(concurrency, 1, 1, 0, ms, ms, 64, 1.0, tokens_per_s, 10, None)


def test_targets_compare_with_baseline_and_peer() -> None:
    baseline = BaselineResult(
        1, 10, 64, 100.0, Percentiles(20.0, 20.0, 20.0, 1), Percentiles.of_seconds([]), {}
    )
    ours = ServerResult("ours", 0, [_level(1, 95.0, 25.0), _level(16, 250.0, 90.0)])
    peer = ServerResult("transformers serve", 1, [_level(1, 90.0, 20.0), _level(16, 260.0, 80.0)])
    results = BenchResults(settings={}, baseline=baseline, servers=[ours, peer])
    met = {check.name: check.met for check in targets(results)}
    assert met["one stream vs in-process baseline"] is True
    assert met["time to first token, c=1 (p50)"] is True
    assert met["c16 vs c1 tok/s"] is False
    assert met["tok/s vs transformers serve"] is False
    assert met["concurrent SSE streams on one gateway"] is None


def test_table_aligns_text_left_and_numbers_right() -> None:
    lines = table(["name", "tok/s"], [["ours", 1234.5], ["transformers serve", None]], indent="").splitlines()
    assert lines[0] == "name                  tok/s"
    assert lines[2] == "ours                1,234.5"
    assert lines[3] == "transformers serve        -"
