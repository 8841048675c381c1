"""WORKER_CUDA_GRAPHS: decoding steps at fixed shapes, from inputs the step owns.

Without CUDA nothing is captured, but everything else of the path runs: the bucketed
shapes with their padding rows and masked columns, the inputs copied into each shape's
own tensors, the shapes dropped when the batch's buffers are replaced. So its arithmetic
is checked here on a CPU: every step's logits against one forward pass of the model over
the prompt and the tokens drawn (the tiny checkpoint's greedy tokens barely depend on
their context, its logits do), and the tokens against generate().
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from typing import Any

import pytest
import redis
import torch
from PIL import Image
from torch.utils._python_dispatch import TorchDispatchMode

from shared.jobs import GenerationJob, ImagePart
from tests.integration.conftest import SequenceFactory, decode, make_job
from tests.integration.test_engine import PROMPTS, job, no_eos, reference_tokens
from worker.engine import Engine
from worker.media.loader import Media
from worker.model import LoadedModel
from worker.sequence import Sequence
from worker.step_graphs import COLUMN_BUCKET, StepGraphs
from worker.verdict import prepare


class LogitsRecordingEngine(Engine):
    """An engine at fixed shapes that keeps every row's logits, step by step."""

    def __init__(self, loaded: LoadedModel, connection: redis.Redis) -> None:
        super().__init__(loaded, connection, max_batch=8, cuda_graphs=True)
        self.logits: dict[int, list[torch.Tensor]] = {}

    def _sample(self, logits: torch.Tensor, sequences: list[Sequence]) -> None:
        for row, sequence in enumerate(sequences):
            self.logits.setdefault(id(sequence), []).append(logits[row].clone())
        super()._sample(logits, sequences)

    @property
    def graphs(self) -> StepGraphs:
        # On a CPU the shapes are set up without capture; on a GPU no capture may have failed.
        assert self._graphs is not None
        assert self._graphs.capturing == (self._loaded.device.type == "cuda")
        return self._graphs


# Operators a CUDA graph capture cannot hold: each reads device data back to the host (a
# sync, which fails the capture, and a value the graph would then replay frozen), or makes
# a tensor from host data (a copy from host memory, whose value the graph would freeze).
HOST_BOUND_OPS = frozenset(
    {
        "aten::item",  # .item(), int(t), bool(t) (under inference mode, as the engine runs)
        "aten::_local_scalar_dense",  # the same, outside it
        "aten::nonzero",
        "aten::masked_select",
        "aten::_unique2",
        "aten::unique_consecutive",
        "aten::unique_dim",
        "aten::lift_fresh",  # torch.tensor(host data)
    }
)


class HostBoundOps(TorchDispatchMode):  # type: ignore[no-untyped-call]
    """Counts the operators run while it is active, and apart those of ``HOST_BOUND_OPS``."""

    def __init__(self) -> None:
        super().__init__()  # type: ignore[no-untyped-call]
        self.host_bound: Counter[str] = Counter()
        self.operators = 0

    def __torch_dispatch__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
        self.operators += 1
        name = func._schema.name
        if name in HOST_BOUND_OPS:
            self.host_bound[name] += 1
        return func(*args, **(kwargs or {}))


class StepRecordingEngine(Engine):
    """An engine at fixed shapes whose steps (what a GPU captures as graphs) are watched."""

    def __init__(self, loaded: LoadedModel, connection: redis.Redis) -> None:
        super().__init__(loaded, connection, max_batch=8, cuda_graphs=True)
        self.watch = HostBoundOps()

    def _step_forward(
        self, input_ids: torch.Tensor, position_ids: torch.Tensor, mask: torch.Tensor
    ) -> torch.Tensor:
        with self.watch:
            return super()._step_forward(input_ids, position_ids, mask)


@pytest.fixture
def graphed(loaded: LoadedModel, connection: redis.Redis) -> Iterator[LogitsRecordingEngine]:
    engine = LogitsRecordingEngine(loaded, connection)
    engine.start()
    yield engine
    engine.stop()


def teacher_forced_logits(
    loaded: LoadedModel, request: GenerationJob, generated: list[int], media: list[Media] | None = None
) -> torch.Tensor:
    """The model's logits for each drawn token, from one pass over the prompt and the tokens."""
    inputs = dict(prepare(loaded, request, media).inputs)
    prompt_length = inputs["input_ids"].shape[1]
    drawn = torch.tensor([generated[:-1]])
    inputs["input_ids"] = torch.cat([inputs["input_ids"], drawn], dim=1)
    inputs["attention_mask"] = torch.ones_like(inputs["input_ids"])
    if "mm_token_type_ids" in inputs:
        text = torch.zeros_like(drawn, dtype=inputs["mm_token_type_ids"].dtype)
        inputs["mm_token_type_ids"] = torch.cat([inputs["mm_token_type_ids"], text], dim=1)
    with torch.inference_mode():
        logits: torch.Tensor = loaded.model(**inputs).logits[0]
    return logits[prompt_length - 1 :]


def assert_logits_match(engine: LogitsRecordingEngine, sequence: Sequence, expected: torch.Tensor) -> None:
    steps = torch.stack(engine.logits[id(sequence)])
    assert steps.shape == expected.shape
    torch.testing.assert_close(steps, expected, atol=2e-4, rtol=1e-4)


def test_fixed_shape_steps_compute_the_models_logits_across_joins_departures_and_a_column_bucket(
    loaded: LoadedModel, sequence_for: SequenceFactory, graphed: LogitsRecordingEngine
) -> None:
    # One row runs past the first column bucket; the others join and leave meanwhile.
    lengths = (COLUMN_BUCKET + 20, 25, 60)
    bias = no_eos(loaded)
    requests = [
        job(text, n, temperature=0.0, logit_bias=bias) for text, n in zip(PROMPTS, lengths, strict=True)
    ]
    sequences = [sequence_for(request) for request in requests]
    with ThreadPoolExecutor(len(sequences)) as pool:
        list(pool.map(partial(decode, graphed), sequences))
    for request, sequence, n in zip(requests, sequences, lengths, strict=True):
        assert len(sequence.generated) == n
        assert sequence.generated == reference_tokens(loaded, request)
        assert_logits_match(graphed, sequence, teacher_forced_logits(loaded, request, sequence.generated))
    # Hundreds of steps ran from a handful of shapes (each set up once per buffer generation).
    assert 2 <= graphed.graphs.captures <= 12


def test_image_and_text_rows_at_fixed_shapes_compute_the_models_logits(
    loaded: LoadedModel, sequence_for: SequenceFactory, graphed: LogitsRecordingEngine
) -> None:
    image = Image.radial_gradient("L").convert("RGB").resize((96, 64))
    with_image = make_job("Describe", max_new_tokens=30, temperature=0.0, logit_bias=no_eos(loaded))
    with_image.messages[0].content.append(
        ImagePart(url="http://media.test/picture.png", param="messages[0].content[1]")
    )
    text_only = job(PROMPTS[1], 30, temperature=0.0, logit_bias=no_eos(loaded))
    media: list[list[Media]] = [[image], []]
    sequences = [sequence_for(with_image, media[0]), sequence_for(text_only)]
    with ThreadPoolExecutor(2) as pool:
        list(pool.map(partial(decode, graphed), sequences))
    for request, sequence, items in zip([with_image, text_only], sequences, media, strict=True):
        assert sequence.generated == reference_tokens(loaded, request, items)
        expected = teacher_forced_logits(loaded, request, sequence.generated, items)
        assert_logits_match(graphed, sequence, expected)


def test_a_shape_set_up_for_one_request_computes_the_next_ones_steps_from_their_own_inputs(
    loaded: LoadedModel, sequence_for: SequenceFactory, graphed: LogitsRecordingEngine
) -> None:
    # One request after another reuse the same shapes: a step that read stale inputs
    # (an earlier step's tokens, positions or mask) would compute other logits.
    for text in (PROMPTS[0], PROMPTS[2], PROMPTS[1]):
        request = job(text, 20, temperature=0.0, logit_bias=no_eos(loaded))
        sequence = sequence_for(request)
        decode(graphed, sequence)
        assert_logits_match(graphed, sequence, teacher_forced_logits(loaded, request, sequence.generated))
    # The batch kept its buffers between them: one shape, set up once.
    assert graphed.graphs.captures == 1


def test_the_watch_sees_host_reads_and_tensors_made_from_host_data() -> None:
    watch = HostBoundOps()
    with torch.inference_mode(), watch:
        made = torch.tensor([3, 0, 5])
        int(made.sum())
        made.nonzero()
    assert watch.host_bound == Counter({"aten::lift_fresh": 1, "aten::item": 1, "aten::nonzero": 1})


def test_a_fixed_shape_step_reads_nothing_back_to_the_host(
    loaded: LoadedModel, sequence_for: SequenceFactory, connection: redis.Redis
) -> None:
    """What a CUDA graph capture needs of the step, checked where no GPU is: a transformers
    release (or a change to the batch's cache) that read a length back with ``.item()``
    would fail every capture on a GPU, and the steps would run eagerly."""
    engine = StepRecordingEngine(loaded, connection)
    engine.start()
    try:
        requests = [
            job(text, n, temperature=0.0, logit_bias=no_eos(loaded))
            for text, n in zip(PROMPTS[:2], (12, 5), strict=True)
        ]
        with ThreadPoolExecutor(2) as pool:
            list(pool.map(partial(decode, engine), [sequence_for(request) for request in requests]))
    finally:
        engine.stop()
    assert engine.watch.operators > 100  # the steps ran under the watch
    assert engine.watch.host_bound == Counter()
