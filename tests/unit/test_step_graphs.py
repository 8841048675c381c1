"""StepGraphs without CUDA: each shape's own inputs, refilled every step, dropped with the buffers."""

from __future__ import annotations

import torch

from tests.unit.test_batch import CPU, prefilled
from worker.batch import SlotBatch
from worker.step_graphs import COLUMN_BUCKET, StepGraphs, bucketed_shape


class Forward:
    """A step's stand-in: notes the tensors it was given, returns the token ids as its states."""

    def __init__(self) -> None:
        self.inputs: list[tuple[int, int, int]] = []  # data pointers of ids, positions, mask

    def __call__(
        self, input_ids: torch.Tensor, position_ids: torch.Tensor, mask: torch.Tensor
    ) -> torch.Tensor:
        self.inputs.append((input_ids.data_ptr(), position_ids.data_ptr(), mask.data_ptr()))
        return input_ids.float()


def step(graphs: StepGraphs, batch: SlotBatch, tokens: list[int]) -> torch.Tensor:
    mask = batch.prepare_step()
    rows = mask.shape[0]
    ids = torch.tensor(tokens + [0] * (rows - len(tokens))).unsqueeze(1)
    hidden = graphs.run(batch, ids, torch.arange(rows))
    batch.advance()
    return hidden


def test_a_shape_reads_each_steps_inputs_from_the_same_tensors() -> None:
    batch, forward = SlotBatch(bucketed_shape), Forward()
    batch.add(prefilled(3, 1), 3, CPU)
    batch.add(prefilled(4, 2), 4, CPU)
    batch.add(prefilled(5, 3), 5, CPU)
    graphs = StepGraphs(forward, CPU)
    first = step(graphs, batch, [11, 12, 13])
    second = step(graphs, batch, [21, 22, 23])
    assert graphs.captures == 1 and not graphs.capturing
    assert forward.inputs[0] == forward.inputs[1]  # one shape: the same owned tensors
    assert first[:, 0].tolist() == [11, 12, 13, 0] and second[:, 0].tolist() == [21, 22, 23, 0]
    assert batch.step[2].shape == (4, COLUMN_BUCKET)
    assert first.data_ptr() != second.data_ptr()  # the caller's own tensors


def test_a_shape_is_set_up_again_once_the_batch_replaces_its_buffers() -> None:
    batch, forward = SlotBatch(bucketed_shape), Forward()
    batch.add(prefilled(3, 1), 3, CPU)
    graphs = StepGraphs(forward, CPU)
    step(graphs, batch, [1])
    step(graphs, batch, [2])
    assert graphs.captures == 1
    # More rows than the buffers have room for: new buffers, and a new shape besides.
    for seed in range(2, 12):
        batch.add(prefilled(3, seed), 3, CPU)
    step(graphs, batch, list(range(11)))
    assert graphs.captures == 2
    # Back to one row: a shape seen before, but the buffers shrank, so it is set up again.
    batch.free(list(range(1, 11)))
    step(graphs, batch, [3])
    assert graphs.captures == 3
