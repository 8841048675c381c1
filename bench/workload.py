"""What every measured system is asked to do: one prompt, one output length, one sampling."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

# How a system that allows it is made to produce exactly max_tokens tokens:
# "eos-off" takes the end-of-sequence tokens away (eos_token_id None), at no cost per step;
# "min-new-tokens" masks them with generate()'s min_new_tokens, whose logits processor
# rebuilds a vocabulary-wide mask at every step (about a quarter of the step time of the
# tiny checkpoint on CPU).
LengthForcing = Literal["eos-off", "min-new-tokens"]
LENGTH_FORCINGS: tuple[LengthForcing, ...] = ("eos-off", "min-new-tokens")

DEFAULT_PROMPT = "Write a short story about a lighthouse keeper who finds a message in a bottle."


@dataclass(frozen=True)
class Workload:
    """Plain sampling (temperature 1, no top-p or top-k cut) by default: every system draws
    from the same full distribution, and none of them gets to skip the sampling work."""

    prompt: str = DEFAULT_PROMPT
    max_tokens: int = 64
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = 0
    length_forcing: LengthForcing = "eos-off"

    @property
    def messages(self) -> list[dict[str, str]]:
        return [{"role": "user", "content": self.prompt}]

    def sampling(self) -> dict[str, Any]:
        return {"temperature": self.temperature, "top_p": self.top_p, "top_k": self.top_k}

    def exact_length(self, max_tokens: int) -> dict[str, Any]:
        """The generate() arguments that force ``max_tokens`` output tokens."""
        if self.length_forcing == "min-new-tokens":
            return {"min_new_tokens": max_tokens}
        return {"eos_token_id": None}

    def describe_sampling(self) -> str:
        top_k = "off" if self.top_k == 0 else self.top_k
        return f"temperature {self.temperature}, top_p {self.top_p}, top_k {top_k}"
