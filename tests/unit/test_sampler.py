from __future__ import annotations

import pytest
import torch

from shared.jobs import SamplingParams
from worker.sampler import RowSampling, best_tokens, resolve, sample_next, seeded_uniform

VOCAB = 1000


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


def seeded(seed: int, **settings: float) -> RowSampling:
    return resolve(SamplingParams(max_new_tokens=1, temperature=1.0, seed=seed, **settings), None)


def test_seeded_rows_are_reproducible_in_any_batch() -> None:
    scores = logits(3)
    alone = sample_next(scores[:1].clone(), [seeded(5)], [[]])
    together = sample_next(scores.clone(), [seeded(5), RowSampling(1.0, 1.0, 0), seeded(9)], [[], [], []])
    assert together[0] == alone[0]


NEIGHBOURS = {
    "top_k": RowSampling(1.0, 1.0, 5),
    "top_p": RowSampling(1.0, 0.8, 0),
    "top_k_and_top_p": RowSampling(0.7, 0.9, 40),
    "greedy": RowSampling(0.0, 1.0, 0),
    "seeded_top_k": seeded(3, top_k=7),
}


@pytest.mark.parametrize("vocab", [VOCAB, 151_936])  # the real size is drawn in two levels
@pytest.mark.parametrize("settings", [{}, {"top_k": 50}, {"top_p": 0.9}, {"top_k": 100, "top_p": 0.5}])
def test_a_seeded_row_samples_the_same_beside_any_other_row(vocab: int, settings: dict[str, float]) -> None:
    torch.manual_seed(2)
    scores = torch.randn(1, vocab)
    others = torch.randn(len(NEIGHBOURS), vocab)

    def run(neighbours: list[RowSampling], index: int) -> int:
        batch = torch.cat([others[: len(neighbours)], scores])
        rows = [*neighbours, seeded(11, **settings)]
        return sample_next(batch, rows, [[]] * len(rows), [index] * len(rows))[-1]

    for index in range(20):
        alone = run([], index)
        for name, neighbour in NEIGHBOURS.items():
            assert run([neighbour], index) == alone, name
        assert run(list(NEIGHBOURS.values()), index) == alone
    assert len({run([], index) for index in range(20)}) > 1  # the draws do vary with the index


def test_a_seeded_draw_is_a_pure_function_of_seed_index_and_logits() -> None:
    scores = logits()
    row = seeded(21, top_k=200)
    in_order = [sample_next(scores.clone(), [row], [[]], [index])[0] for index in range(30)]
    # A fresh row asked for index 17 directly, as a resumed sequence would be.
    assert sample_next(scores.clone(), [seeded(21, top_k=200)], [[]], [17]) == [in_order[17]]
    # Without explicit indices the index is the length of the history.
    assert sample_next(scores.clone(), [seeded(21, top_k=200)], [[0] * 17]) == [in_order[17]]
    backwards = [sample_next(scores.clone(), [row], [[]], [index])[0] for index in reversed(range(30))]
    assert backwards[::-1] == in_order
    other_seed = [sample_next(scores.clone(), [seeded(22, top_k=200)], [[]], [i])[0] for i in range(30)]
    assert other_seed != in_order


def test_seeded_uniforms_are_fixed_values_in_the_unit_interval() -> None:
    # Fixed values: a change of the hash would silently change every seeded output.
    draws = [seeded_uniform(seed, index) for seed in (0, -1, 2**64 - 1) for index in range(1000)]
    assert all(0.0 <= draw < 1.0 for draw in draws)
    assert len(set(draws)) > 2990
    assert [seeded_uniform(7, index) * 2**24 for index in range(3)] == [3368672, 9424281, 8597936]


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

    row = resolve(SamplingParams(max_new_tokens=1), Defaults())
    assert (row.temperature, row.top_p, row.top_k) == (0.6, 0.95, 20)
    explicit = resolve(SamplingParams(max_new_tokens=1, temperature=0.0, top_k=0), Defaults())
    assert explicit.greedy and explicit.top_k == 0


@pytest.mark.parametrize("seeded_rows", [False, True])
def test_plain_sampling_over_a_real_size_vocabulary_follows_the_softmax(seeded_rows: bool) -> None:
    torch.manual_seed(1)
    vocab = 151_936  # drawn in two levels: a block, then a token inside it
    scores = (torch.randn(1, vocab) * 3).expand(64, vocab).contiguous()
    expected = torch.softmax(scores[0], dim=-1)
    counts = torch.zeros(vocab)
    rows = [seeded(seed) if seeded_rows else RowSampling(1.0, 1.0, 0) for seed in range(64)]
    for step in range(400):
        tokens = sample_next(scores.clone(), rows, [[]] * 64, [step] * 64)
        counts += torch.bincount(torch.tensor(tokens), minlength=vocab)
    top = expected.topk(100).indices
    observed = counts[top] / counts.sum()
    total_variation = float((observed - expected[top]).abs().sum() / 2)
    assert total_variation < 0.03, total_variation


def test_penalties_on_a_growing_history_match_a_fresh_count_at_every_step() -> None:
    """The counts kept step by step give the tokens that counting the whole history gives."""
    torch.manual_seed(3)
    vocab, steps = 50, 40
    logits = torch.randn(steps, vocab) * 3

    def row() -> RowSampling:
        return RowSampling(
            temperature=0.0,
            top_p=1.0,
            top_k=0,
            presence_penalty=1.5,
            frequency_penalty=0.7,
            repetition_penalty=1.3,
            logit_bias={7: 2.0, 9: -1.0},
            prompt_ids=[1, 2, 3],
        )

    kept, fresh = row(), row()
    growing: list[int] = []
    for step in range(steps):
        token = sample_next(logits[step : step + 1].clone(), [kept], [growing])[0]
        again = sample_next(logits[step : step + 1].clone(), [fresh], [list(growing)])[0]
        assert token == again
        growing.append(token)
    assert len(set(growing)) > 5  # the penalties pushed it around the vocabulary


def test_best_tokens_is_argmax_including_ties_and_nan() -> None:
    vocab = 151_936  # the real vocabulary: split into blocks
    logits = torch.randn(6, vocab, generator=torch.Generator().manual_seed(3))
    logits[1, 5000] = logits[1, 90_000] = 50.0  # a tie across blocks: the first wins
    logits[2, 7] = logits[2, 8] = 50.0  # a tie inside a block
    logits[3] = float("-inf")
    logits[4, 1234] = float("nan")
    logits[5, 151_935] = 60.0  # the very last token
    assert torch.equal(best_tokens(logits), logits.argmax(dim=-1))
    odd = torch.randn(3, 1009)  # a prime width: no blocks
    assert torch.equal(best_tokens(odd), odd.argmax(dim=-1))


def test_plain_sampling_keeps_to_the_allowed_tokens_when_whole_blocks_are_forbidden() -> None:
    vocab = 151_936  # blocks of 1,187: most of them entirely forbidden below
    scores = torch.full((3, vocab), float("-inf"))
    allowed = torch.tensor([5, 70_000, 151_935])
    scores[:, allowed] = torch.tensor([0.0, 1.0, 2.0])
    rows = [RowSampling(temperature=1.0, top_p=1.0, top_k=0, seed=seed) for seed in range(3)]
    for index in range(20):
        tokens = sample_next(scores.clone(), rows, [[]] * 3, [index] * 3)
        assert set(tokens) <= set(allowed.tolist())
