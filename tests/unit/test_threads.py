"""The worker's torch thread count on a CPU."""

from __future__ import annotations

from worker.threads import available_cores, cpu_threads


def test_a_setting_wins() -> None:
    assert cpu_threads(3, cores=2) == 3


def test_by_default_one_core_is_left_to_the_gateway_and_redis() -> None:
    assert cpu_threads(0, cores=2) == 1
    assert cpu_threads(0, cores=16) == 15


def test_a_single_core_still_gets_a_thread() -> None:
    assert cpu_threads(0, cores=1) == 1


def test_available_cores_counts_what_this_process_may_use() -> None:
    assert available_cores() >= 1
