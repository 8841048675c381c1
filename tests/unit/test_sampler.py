from __future__ import annotations

import torch

from shared.jobs import SamplingParams
from worker.sampler import RowSampling, resolve, sample_next

VOCAB = 1000
CPU = torch.device("cpu")


def logits(rows: int = 1) -> torch.Tensor:
    torch.manual_seed(0)
    return torch.randn(rows, VOCAB)


def test_greedy_takes_the_argmax() -> None:
    scores = logits(2)
    rows = [RowSampling(temperature=0.0, top_p=1.0, top_k=0)] * 2
    assert sample_next(scores.clone(), rows, [[], []]) == scores.argmax(dim=-1).tolist()


def test_top_k_one_is_greedy_and_top_k_limits_candidates() -> None:
    scores = logits()
    assert sample_next(scores.clone(), [RowSampling(1.0, 1.0, 1)], [[]]) == [int(scores.argmax())]
    best5 = set(scores[0].topk(5).indices.tolist())
    for _ in range(50):
        assert sample_next(scores.clone(), [RowSampling(1.0, 1.0, 5)], [[]])[0] in best5


def test_top_p_keeps_the_smallest_sufficient_prefix() -> None:
    scores = torch.full((1, VOCAB), -10.0)
    scores[0, 3], scores[0, 4] = 10.0, 9.0  # token 3 has most of the mass
    for _ in range(50):
        assert sample_next(scores.clone(), [RowSampling(1.0, 0.5, 0)], [[]]) == [3]


def test_rows_keep_their_own_settings() -> None:
    scores = logits(2)
    rows = [RowSampling(0.0, 1.0, 0), RowSampling(1.0, 1.0, 3)]
    best3 = set(scores[1].topk(3).indices.tolist())
    for _ in range(20):
        first, second = sample_next(scores.clone(), rows, [[], []])
        assert first == int(scores[0].argmax()) and second in best3


def test_seeded_rows_are_reproducible_in_any_batch() -> None:
    scores = logits(3)

    def seeded(seed: int) -> RowSampling:
        return resolve(SamplingParams(max_new_tokens=1, temperature=1.0, seed=seed), None, CPU)

    alone = sample_next(scores[:1].clone(), [seeded(5)], [[]])
    together = sample_next(scores.clone(), [seeded(5), RowSampling(1.0, 1.0, 0), seeded(9)], [[], [], []])
    assert together[0] == alone[0]


def test_logit_bias_and_penalties() -> None:
    scores = logits()
    forced = RowSampling(0.0, 1.0, 0, logit_bias={42: 100.0})
    assert sample_next(scores.clone(), [forced], [[]]) == [42]
    banned = RowSampling(0.0, 1.0, 0, logit_bias={int(scores.argmax()): -100.0})
    assert sample_next(scores.clone(), [banned], [[]]) != [int(scores.argmax())]
    best = int(scores.argmax())
    repeated = RowSampling(0.0, 1.0, 0, presence_penalty=2.0, frequency_penalty=2.0)
    assert sample_next(scores.clone(), [repeated], [[best, best]]) != [best]


def test_defaults_come_from_the_checkpoint() -> None:
    class Defaults:
        do_sample = True
        temperature = 0.6
        top_p = 0.95
        top_k = 20

    row = resolve(SamplingParams(max_new_tokens=1), Defaults(), CPU)
    assert (row.temperature, row.top_p, row.top_k) == (0.6, 0.95, 20)
    explicit = resolve(SamplingParams(max_new_tokens=1, temperature=0.0, top_k=0), Defaults(), CPU)
    assert explicit.greedy and explicit.top_k == 0


def test_plain_sampling_over_a_real_size_vocabulary_follows_the_softmax() -> None:
    torch.manual_seed(1)
    vocab = 151_936  # drawn in two levels: a block, then a token inside it
    scores = (torch.randn(1, vocab) * 3).expand(64, vocab).contiguous()
    expected = torch.softmax(scores[0], dim=-1)
    counts = torch.zeros(vocab)
    rows = [RowSampling(1.0, 1.0, 0)] * 64
    for _ in range(400):
        counts += torch.bincount(torch.tensor(sample_next(scores.clone(), rows, [[]] * 64)), minlength=vocab)
    top = expected.topk(100).indices
    observed = counts[top] / counts.sum()
    total_variation = float((observed - expected[top]).abs().sum() / 2)
    assert total_variation < 0.03, total_variation
