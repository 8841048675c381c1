"""The benchmark's pure parts: percentiles, what a stream counts, targets, tables, soak and
slow-media verdicts."""

from __future__ import annotations

import argparse
import dataclasses
import itertools
import random
from typing import Any

import pytest

from bench.analysis import targets
from bench.load import Stream, summarise
from bench.real_size import Variant, parse_args
from bench.report import table
from bench.results import BaselineResult, BenchResults, LevelResult, ServerResult
from bench.slow_media_report import PendingCheck, SlowMediaResult, render
from bench.soak_check import Outcome, Replay, SeenEvent, error_key, judge, tally
from bench.soak_client import index_of, rejection_code
from bench.soak_faults import schedule
from bench.sse import Frame, FrameParser
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


def _events(*indices: int, text: str = "x") -> list[SeenEvent]:
    return [SeenEvent(index, f'{{"n":{index},"t":"{text}"}}') for index in indices]


ERROR_EVENT = '{"error":{"message":"gone","type":"server_error","param":null,"code":"worker_lost"}}'


def test_a_stream_equal_to_its_replay_is_clean() -> None:
    seen = _events(0, 1, 2)
    verdict = judge(seen, client_done=True, replay=Replay(tuple(seen), complete=True))
    assert verdict.outcome is Outcome.FINISHED and verdict.clean
    assert (verdict.duplicated, verdict.missing, verdict.mismatch) == ((), (), None)


def test_an_index_seen_twice_is_duplicated_and_mismatched() -> None:
    seen = _events(0, 1, 1, 2)
    verdict = judge(seen, client_done=True, replay=Replay(tuple(_events(0, 1, 2)), complete=True))
    assert verdict.duplicated == (1,)
    assert verdict.missing == ()
    assert verdict.mismatch == "position 2: client has index 1, replay has 2"
    assert not verdict.clean


def test_a_gap_in_indices_is_missing() -> None:
    verdict = judge(_events(0, 3), client_done=True, replay=Replay(tuple(_events(0, 1, 2, 3)), complete=True))
    assert verdict.missing == (1, 2)
    assert verdict.mismatched


def test_different_data_under_the_same_index_is_a_mismatch() -> None:
    replay = Replay(tuple(_events(0, 1, text="replayed")), complete=True)
    verdict = judge(_events(0, 1), client_done=True, replay=replay)
    assert verdict.mismatch == "index 0: the client's data differs from the replay's"


def test_a_replay_with_more_events_after_the_clients_end_is_a_mismatch() -> None:
    verdict = judge(_events(0, 1), client_done=True, replay=Replay(tuple(_events(0, 1, 2)), complete=False))
    assert verdict.mismatch == "the replay has 1 event(s) after the client's end"


def test_an_unfinished_client_only_needs_to_be_a_prefix_of_the_replay() -> None:
    verdict = judge(_events(0, 1), client_done=False, replay=Replay(tuple(_events(0, 1, 2)), complete=False))
    assert verdict.outcome is Outcome.HUNG
    assert verdict.mismatch is None
    shorter_replay = judge(
        _events(0, 1, 2), client_done=False, replay=Replay(tuple(_events(0, 1)), complete=True)
    )
    assert shorter_replay.mismatch == "client has 1 event(s) beyond the replay's end"


def test_an_error_end_event_counts_by_its_code() -> None:
    seen = [*_events(0, 1), SeenEvent(2, ERROR_EVENT)]
    verdict = judge(seen, client_done=True, replay=Replay(tuple(seen), complete=True))
    assert (verdict.outcome, verdict.error_code) == (Outcome.ERRORED, "worker_lost")
    assert error_key({"type": "server_error", "code": None}) == "server_error"


def test_tally_counts_each_finding_once_per_session() -> None:
    clean = judge(_events(0, 1), True, Replay(tuple(_events(0, 1)), complete=True))
    errored = judge([SeenEvent(0, ERROR_EVENT)], True, Replay((SeenEvent(0, ERROR_EVENT),), complete=True))
    broken = judge(_events(0, 0, 2), True, Replay(tuple(_events(0, 1, 2)), complete=True))
    hung = judge(_events(0), False, Replay(tuple(_events(0)), complete=False))
    result = tally(
        ["no_worker (HTTP 503)"], [(clean, False), (errored, False), (broken, False), (hung, True)]
    )
    assert (result.started, result.accepted, result.rejected) == (5, 4, 1)
    assert (result.finished, result.errored, result.hung, result.lost) == (2, 1, 1, 1)
    assert (result.duplicated, result.missing, result.mismatched) == (1, 1, 1)
    assert result.errors_by_code == {"worker_lost": 1}
    assert result.rejections_by_code == {"no_worker (HTTP 503)": 1}
    assert not result.clean
    assert tally([], [(clean, False)]).clean


def test_frame_parser_keeps_ids_and_drops_an_unfinished_event() -> None:
    parser = FrameParser()
    lines = [": ping", "id: s:0", "data: {}", "", "data: [DONE]", "", "id: s:1", 'data: {"cut']
    frames = [frame for frame in map(parser.feed, lines) if frame is not None]
    assert frames == [Frame("s:0", "{}"), Frame(None, "[DONE]")]


def test_event_ids_and_error_responses_are_read() -> None:
    assert index_of("chatcmpl-a:7", "chatcmpl-a") == 7
    assert index_of("chatcmpl-b:7", "chatcmpl-a") == -1
    assert index_of(None, "chatcmpl-a") == -1
    body = b'{"error":{"message":"m","type":"service_unavailable","param":null,"code":"no_worker"}}'
    assert rejection_code(503, body) == "no_worker (HTTP 503)"
    assert rejection_code(502, b"Bad Gateway") == "no code (HTTP 502)"


def test_faults_rotate_and_stay_inside_the_load() -> None:
    plan = schedule(["worker-kill", "redis-pause"], 60.0, (10.0, 15.0), random.Random(1))
    assert [item.name for item in plan] == ["worker-kill", "redis-pause"] * (len(plan) // 2) + (
        ["worker-kill"] if len(plan) % 2 else []
    )
    assert [item.turn for item in plan[:4]] == [0, 0, 1, 1]
    assert all(10.0 <= later.at_s - earlier.at_s <= 15.0 for earlier, later in itertools.pairwise(plan))
    assert 4 <= len(plan) <= 5 and plan[-1].at_s < 60.0
    assert schedule([], 60.0, (10.0, 15.0), random.Random(1)) == []


def _pending(**changes: Any) -> PendingCheck:
    held = PendingCheck(
        sent=16,
        media_slots=16,
        connections_at_start=10,
        connections_accepted=10,
        connections_open=10,
        statuses={"running": 16},
        streams_open=16,
    )
    return dataclasses.replace(held, **changes)


def test_media_requests_that_stayed_pending_have_no_problem() -> None:
    assert _pending().problems() == []
    # More requests than media job slots: the others wait in the media queue.
    assert _pending(sent=20, statuses={"running": 16, "queued": 4}, streams_open=20).problems() == []


def test_a_media_request_that_ended_during_phase_b_is_a_problem() -> None:
    assert _pending(connections_at_start=0, connections_accepted=0, connections_open=0).problems()
    assert _pending(connections_accepted=11, connections_open=10).problems()
    assert _pending(connections_open=9).problems()
    assert _pending(statuses={"running": 15, "failed": 1}).problems()
    assert _pending(statuses={"running": 12, "queued": 4}).problems()
    assert _pending(streams_open=15).problems()


def test_slow_media_report_gives_the_ratio_of_b_to_a() -> None:
    settings = {"clients": 8, "max_tokens": 64, "duration_s": 20.0, "max_batch": 16}
    settings |= {"media_deadline_s": 120.0, "cpus": 2}
    result = SlowMediaResult(settings, _level(8, 400.0, 100.0), _level(8, 380.0, 120.0), _pending())
    assert result.tokens_per_s_ratio == pytest.approx(0.95)
    assert result.ttft_p50_ratio == pytest.approx(1.2)
    text = render(result)
    assert "B/A: tok/s 0.95, TTFT p50 1.20" in text
    assert "NOT PENDING" not in text
    assert "NOT PENDING" in render(
        SlowMediaResult(settings, result.text_only, result.beside_media, _pending(streams_open=3))
    )


def test_real_size_variants_name_eager_apart_from_the_workers_default() -> None:
    # On a GPU the worker's default replays CUDA graphs: "eager" must turn them off.
    assert Variant.parse("eager").settings == {"WORKER_CUDA_GRAPHS": "false"}
    assert Variant.parse("default").settings == {}
    both = Variant.parse("WORKER_CUDA_GRAPHS=true,WORKER_PREFILL_CHUNK_TOKENS=2048")
    assert both.settings == {"WORKER_CUDA_GRAPHS": "true", "WORKER_PREFILL_CHUNK_TOKENS": "2048"}
    assert [variant.name for variant in parse_args([]).variant] == ["eager", "default"]
    with pytest.raises(argparse.ArgumentTypeError):
        Variant.parse("MAX_BATCH=4")
