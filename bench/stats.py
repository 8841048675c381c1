"""Percentiles of latency samples."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass


def percentile(values: Sequence[float], q: float) -> float | None:
    """The q-th percentile (0-100) with linear interpolation, as numpy's default."""
    if not values:
        return None
    ordered = sorted(values)
    rank = (len(ordered) - 1) * q / 100
    low, high = math.floor(rank), math.ceil(rank)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


@dataclass(frozen=True)
class Percentiles:
    """p50 / p95 (and max) of a set of samples, in milliseconds."""

    p50: float | None
    p95: float | None
    max: float | None
    samples: int

    @classmethod
    def of_seconds(cls, values: Sequence[float]) -> Percentiles:
        ms = [value * 1000 for value in values]
        p50, p95 = percentile(ms, 50), percentile(ms, 95)
        return cls(p50, p95, max(ms) if ms else None, len(ms))
