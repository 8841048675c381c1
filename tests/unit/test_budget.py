"""Pixel budgets: the request's total, and what one worker decodes at once."""

from __future__ import annotations

import threading

from worker.media.budget import ConcurrentPixels, check_request_pixels


def test_the_item_that_crosses_the_request_budget_is_named() -> None:
    assert check_request_pixels([40, 50, 10], budget=100) is None
    over = check_request_pixels([40, 50, 11, 5], budget=100)
    assert over is not None and over.position == 2
    assert over.error.code == "media_too_large"
    assert "106 pixels" in str(over.error) and "MAX_REQUEST_MEDIA_PIXELS" in str(over.error)


def test_a_request_waits_until_its_pixels_fit() -> None:
    budget = ConcurrentPixels(100)
    entered = threading.Event()

    def second_request() -> None:
        with budget.hold(30):
            entered.set()

    with budget.hold(80):
        waiting = threading.Thread(target=second_request)
        waiting.start()
        assert not entered.wait(0.3)  # 80 + 30 > 100: it waits
        assert budget.used == 80
    waiting.join()
    assert entered.is_set() and budget.used == 0


def test_a_request_larger_than_the_budget_runs_alone() -> None:
    budget = ConcurrentPixels(100)
    with budget.hold(500):
        assert budget.used == 100
    assert budget.used == 0
