"""How much key/value cache the engine's batch may hold, and what a sequence costs in it.

Every row of the batch's cache has room for the longest row (worker.batch: one slot
per row, all as wide as the buffers), so a batch of ``rows`` rows costs ``rows x
longest`` token slots. A row can grow to its prompt plus its whole
completion budget, so the engine reserves that much per row from the start: the batch
can then never outgrow the budget, however its rows' outputs turn out.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from typing import Any

import torch

from shared.settings import Settings

log = logging.getLogger(__name__)

# Without a GPU the KV cache lives in RAM next to everything else: keep it modest.
CPU_AUTOMATIC_CAP_BYTES = 4 * 1024**3


def kv_bytes_per_token(text_config: Any, dtype: torch.dtype) -> int:
    """Bytes one token takes in the cache: a key and a value per layer and KV head."""
    heads = getattr(text_config, "num_key_value_heads", None) or text_config.num_attention_heads
    head_dim = getattr(text_config, "head_dim", None) or (
        text_config.hidden_size // text_config.num_attention_heads
    )
    element = torch.empty((), dtype=dtype).element_size()
    return int(text_config.num_hidden_layers) * int(heads) * int(head_dim) * 2 * element


def _available_ram_bytes() -> int:
    try:
        with open("/proc/meminfo") as meminfo:
            for line in meminfo:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")


def automatic_kv_bytes(device: torch.device, fraction: float) -> int:
    """The budget when none is set: a fraction of the memory free now (after the model loaded)."""
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return int(free * fraction)
    return min(CPU_AUTOMATIC_CAP_BYTES, int(_available_ram_bytes() * fraction))


@dataclass(frozen=True)
class KvBudget:
    bytes_per_token: int
    total_bytes: int

    @classmethod
    def for_model(
        cls, settings: Settings, text_config: Any, dtype: torch.dtype, device: torch.device
    ) -> KvBudget:
        per_token = kv_bytes_per_token(text_config, dtype)
        total = settings.kv_cache_bytes or automatic_kv_bytes(device, settings.kv_cache_fraction)
        budget = cls(per_token, total)
        log.info(
            "KV cache budget: %.2f GiB, %d bytes per token: %d token slots",
            total / 1024**3,
            per_token,
            budget.capacity_tokens,
        )
        return budget

    @property
    def capacity_tokens(self) -> int:
        """The longest single sequence the budget holds (prompt and completion)."""
        return self.total_bytes // self.bytes_per_token

    def batch_bytes(self, rows: int, longest: int) -> int:
        return rows * longest * self.bytes_per_token

    def fits(self, rows: int, longest: int) -> bool:
        """Whether a batch of ``rows`` rows, the longest ``longest`` tokens, fits."""
        return self.batch_bytes(rows, longest) <= self.total_bytes
