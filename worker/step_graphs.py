"""Decoding steps at a few fixed shapes, each captured once as a CUDA graph and replayed.

Eager transformers launches every kernel of a step from Python: for a 2B model at small
batch on a GPU, the launches take longer than the kernels. A CUDA graph records a step's
kernels once and replays them with one launch. A graph is fixed to its tensors' shapes and
addresses, so:

- the step runs at a bucketed shape (``step_shape``): rows rounded up to 1, 2, 4, 8, then
  a multiple of 8; columns to a multiple of ``COLUMN_BUCKET`` (worker.batch pads the
  rows and masks the columns);
- its inputs (token ids, positions, each row's write column, the mask) are copied into
  tensors the graph owns before each replay;
- the key/value buffers are the batch's own: a graph captured before the batch replaced
  them (``SlotBatch.generation``) is dropped, and that shape is captured again.

Capturing runs the step once first (on a side stream, as CUDA requires): that run writes
the step's keys and values, and the replay that follows writes the same ones again.
A capture that fails turns the graphs off for good (logged); that step, and every one
after it, runs eagerly at the same shapes.

Without CUDA there is nothing to capture: the steps still run at the fixed shapes, from
the owned input tensors, which is what lets the tests check this path's arithmetic
against ``generate()`` on a CPU.
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

from worker.batch import SlotBatch

log = logging.getLogger(__name__)

COLUMN_BUCKET = 256
ROW_STEP = 8  # above 8 rows, a bucket every 8
MAX_GRAPHS = 48  # the least recently used beyond this are dropped


def bucket_rows(rows: int) -> int:
    if rows <= ROW_STEP:
        return 1 << max(0, rows - 1).bit_length()
    return -(-rows // ROW_STEP) * ROW_STEP


def bucketed_shape(rows: int, columns: int) -> tuple[int, int]:
    """The fixed shape a step of ``rows`` rows over ``columns`` columns runs at."""
    return bucket_rows(rows), -(-columns // COLUMN_BUCKET) * COLUMN_BUCKET


# (input_ids [rows, 1], position_ids [3, rows, 1], mask [rows, 1, 1, columns]) -> hidden [rows, size]
StepForward = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]


@dataclass
class Captured:
    """One shape's owned inputs, and its graph (None where nothing is captured)."""

    input_ids: torch.Tensor
    positions: torch.Tensor
    index_rows: torch.Tensor
    index_columns: torch.Tensor
    mask: torch.Tensor
    graph: Any = None
    hidden: torch.Tensor | None = None

    @classmethod
    def like(cls, step: tuple[torch.Tensor, torch.Tensor, torch.Tensor], input_ids: torch.Tensor) -> Captured:
        index_rows, index_columns, mask = step
        positions = index_columns.new_zeros(index_columns.shape)
        return cls(input_ids.clone(), positions, index_rows.clone(), index_columns.clone(), mask.clone())

    def load(self, batch: SlotBatch, input_ids: torch.Tensor, positions: torch.Tensor) -> None:
        """Copy this step's inputs into the owned tensors, and point the batch's step at them."""
        _, index_columns, mask = batch.step
        self.input_ids.copy_(input_ids)
        self.positions.copy_(positions)
        self.index_columns.copy_(index_columns)
        self.mask.copy_(mask)
        batch.step = (self.index_rows, self.index_columns, self.mask)

    def run(self, forward: StepForward) -> torch.Tensor:
        position_ids = self.positions.view(1, -1, 1).expand(3, -1, -1)
        return forward(self.input_ids, position_ids, self.mask[:, None, None, :])


class StepGraphs:
    """Runs the batch's decoding steps from the graph of their shape, capturing it the first time."""

    def __init__(self, forward: StepForward, device: torch.device, max_graphs: int = MAX_GRAPHS) -> None:
        self._forward = forward
        self._capturing = device.type == "cuda"
        self._max_graphs = max_graphs
        self._graphs: OrderedDict[tuple[int, int], Captured] = OrderedDict()
        self._generation = -1
        self._pool = torch.cuda.graph_pool_handle() if self._capturing else None
        self.captures = 0  # graphs captured (or, without CUDA, shapes set up) so far

    @property
    def capturing(self) -> bool:
        return self._capturing

    def run(self, batch: SlotBatch, input_ids: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
        """The step's hidden states ([rows, size]), a tensor of the caller's own.

        ``batch.prepare_step()`` has run: its step is the shape's, and ``input_ids``
        ([rows, 1]) and ``positions`` ([rows]) fill every row of it.
        """
        if batch.generation != self._generation:
            self._graphs.clear()  # they write into buffers the batch no longer has
            self._generation = batch.generation
            # The last graph gone frees the pool they shared, and capturing into a freed
            # pool's handle fails (an internal assert of torch's allocator): a new one.
            self._pool = torch.cuda.graph_pool_handle() if self._capturing else None
        rows, columns = batch.step[2].shape
        key = (rows, columns)
        captured = self._graphs.get(key)
        if captured is None:
            return self._capture(key, batch, input_ids, positions)
        self._graphs.move_to_end(key)
        captured.load(batch, input_ids, positions)
        if captured.graph is None:
            return captured.run(self._forward)
        captured.graph.replay()
        assert captured.hidden is not None
        return captured.hidden.clone()

    def _capture(
        self, key: tuple[int, int], batch: SlotBatch, input_ids: torch.Tensor, positions: torch.Tensor
    ) -> torch.Tensor:
        captured = Captured.like(batch.step, input_ids)
        captured.load(batch, input_ids, positions)
        self.captures += 1
        if len(self._graphs) >= self._max_graphs:
            self._graphs.popitem(last=False)
        self._graphs[key] = captured
        if not self._capturing:
            return captured.run(self._forward)
        try:
            return self._record(captured)
        except Exception:
            log.exception("capturing a decoding step as a CUDA graph failed; decoding eagerly from now on")
            self._capturing = False
            self._graphs.clear()
            return captured.run(self._forward)

    def _record(self, captured: Captured) -> torch.Tensor:
        side = torch.cuda.Stream()  # type: ignore[no-untyped-call]
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            captured.run(self._forward)  # warm-up: the step itself, eagerly
        torch.cuda.current_stream().wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        # Thread-local: the jobs' threads move new prompts to the GPU meanwhile, and a
        # global capture would fail their calls (and itself) rather than let them run.
        with torch.cuda.graph(graph, pool=self._pool, capture_error_mode="thread_local"):
            captured.hidden = captured.run(self._forward)
        captured.graph = graph
        graph.replay()
        log.info("decoding step captured as a CUDA graph: %d rows, %d columns", *captured.mask.shape)
        return captured.hidden.clone()
