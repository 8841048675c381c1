"""The incremental detokenizer, on the real Qwen vocabulary."""

from __future__ import annotations

from typing import Any

import pytest

from worker.detokenizer import MAX_PENDING_TOKENS, IncrementalDetokenizer


@pytest.mark.parametrize("text", ["Hello world", "naïve café — 日本語 🙂 𠜎🫠", "  spaces\n\nand\tlines "])
def test_pieces_join_to_the_full_decode(tokenizer: Any, text: str) -> None:
    ids = tokenizer.encode(text)
    detokenizer = IncrementalDetokenizer(tokenizer)
    pieces = [detokenizer.push(token) for token in ids]
    pieces.append(detokenizer.flush())
    assert "".join(pieces) == text
    assert not any("\ufffd" in piece for piece in pieces)


def test_multibyte_character_is_held_back_until_complete(tokenizer: Any) -> None:
    ids = tokenizer.encode("𠜎")
    assert len(ids) > 1  # an emoji spans several byte-level tokens
    detokenizer = IncrementalDetokenizer(tokenizer)
    pieces = [detokenizer.push(token) for token in ids]
    assert pieces[:-1] == [""] * (len(ids) - 1) and pieces[-1] == "𠜎"


class CountingDecoder:
    """The real tokenizer, counting how much decoding the detokenizer asks of it."""

    def __init__(self, tokenizer: Any) -> None:
        self._tokenizer = tokenizer
        self.calls = 0
        self.ids_decoded = 0
        self.widest = 0

    def decode(self, token_ids: list[int], skip_special_tokens: bool = False) -> str:
        self.calls += 1
        self.ids_decoded += len(token_ids)
        self.widest = max(self.widest, len(token_ids))
        return str(self._tokenizer.decode(token_ids, skip_special_tokens=skip_special_tokens))


def byte_token(tokenizer: Any, byte: int) -> int:
    # Byte-level BPE spells the bytes 0xa1-0xac and 0xae-0xff as the characters of the same code.
    assert 0xA1 <= byte <= 0xFF and byte != 0xAD
    return int(tokenizer.convert_tokens_to_ids(chr(byte)))


RUN_LENGTH = 5_000


@pytest.mark.parametrize(
    "run",
    [
        "lead_and_continuation",  # e6 a5 e6 a5 ...: each pair starts a character never finished
        "continuation_only",  # a5 a5 ...: bytes that cannot start a character
        "special_tokens",  # skipped when decoding: text that never grows
    ],
)
def test_a_run_that_never_completes_costs_bounded_decoding(tokenizer: Any, run: str) -> None:
    if run == "lead_and_continuation":
        fragment = [byte_token(tokenizer, 0xE6), byte_token(tokenizer, 0xA5)]
    elif run == "continuation_only":
        fragment = [byte_token(tokenizer, 0xA5)]
    else:
        fragment = [tokenizer.convert_tokens_to_ids("<|vision_pad|>")]
    ids = tokenizer.encode("Hello 日本 ") + fragment * (RUN_LENGTH // len(fragment))
    ids += tokenizer.encode(" world 🙂 after")
    decoder = CountingDecoder(tokenizer)
    detokenizer = IncrementalDetokenizer(decoder)
    pieces = [detokenizer.push(token) for token in ids]
    pieces.append(detokenizer.flush())
    # A window of at most the last released piece and the pending tokens, whatever the run.
    assert decoder.widest <= 2 * MAX_PENDING_TOKENS
    assert decoder.calls <= 2 * len(ids)
    assert decoder.ids_decoded <= 4 * MAX_PENDING_TOKENS * len(ids)
    output, full = "".join(pieces), tokenizer.decode(ids, skip_special_tokens=True)
    assert output.startswith("Hello 日本 ") and output.endswith(" world 🙂 after")
    assert output.replace("\ufffd", "") == full.replace("\ufffd", "")
    if run != "special_tokens":
        assert output.count("\ufffd") >= RUN_LENGTH // len(fragment) // 2


def test_the_backend_decode_releases_what_the_wrapper_decode_would(tokenizer: Any) -> None:
    text = "Ça coûte 5 €, 🙂 <think> and spaces  twice.\nNext line: 𠜎 done"
    ids = [*tokenizer.encode(text), tokenizer.convert_tokens_to_ids("<|im_end|>"), 220, 220]

    class WrapperOnly:  # the same tokenizer, seen only through transformers' decode
        def decode(self, token_ids: list[int], skip_special_tokens: bool = False) -> str:
            return str(tokenizer.decode(token_ids, skip_special_tokens=skip_special_tokens))

    fast, slow = IncrementalDetokenizer(tokenizer), IncrementalDetokenizer(WrapperOnly())
    assert fast._fast is not None and slow._fast is None
    assert [fast.push(t) for t in ids] + [fast.flush()] == [slow.push(t) for t in ids] + [slow.flush()]
