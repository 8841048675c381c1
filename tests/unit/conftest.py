"""The real Qwen vocabulary, from the tiny checkpoint, for tests of token-level logic."""

from __future__ import annotations

from typing import Any

import pytest
from transformers import AutoTokenizer


@pytest.fixture(scope="session")
def tokenizer(tiny_model: str) -> Any:
    return AutoTokenizer.from_pretrained(tiny_model)
