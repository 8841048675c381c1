"""The language model's forward pass compiled with ``torch.compile``, behind a setting.

Eager transformers launches every kernel of a decoding step from Python; compiled, the
step's small operations are fused (on a GPU, ``reduce-overhead`` also captures CUDA
graphs). Compiling can fail: an operation the compiler does not support, a missing C
compiler, a backend error. A failure must not cost a request, so the first one turns
the compiled forward back into the eager one for good (logged), and the call that
failed runs eagerly. Where the compiled code ran in pieces (graph breaks), some layers may
have written their step into the cache before the failure; the eager call writes the same
columns again (worker.batch: a row's length moves on only once its step has completed).

Dynamic shapes (``dynamic=True``): batch size, prompt length and cache length change at
every join, departure and step; without it each new shape would compile again.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any, get_args

import torch

from shared.settings import CompileMode

log = logging.getLogger(__name__)

# The values WORKER_COMPILE takes besides "" (off): torch.compile's modes.
MODES = tuple(mode for mode in get_args(CompileMode) if mode)


class CompiledForward:
    """Calls the compiled forward until it fails once, then the eager one."""

    def __init__(self, eager: Callable[..., Any], compiled: Callable[..., Any]) -> None:
        self.eager = eager
        self._compiled: Callable[..., Any] | None = compiled

    @property
    def active(self) -> bool:
        return self._compiled is not None

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        if self._compiled is not None:
            try:
                return self._compiled(*args, **kwargs)
            except Exception:
                log.exception("the compiled forward pass failed; running eagerly from now on")
                self._compiled = None
        return self.eager(*args, **kwargs)


def compile_language_model(model: Any, mode: str, backend: str | Callable[..., Any] = "inductor") -> None:
    """Replace the text model's forward with a compiled one that falls back to eager."""
    if mode not in MODES:
        raise ValueError(f"unknown compile mode {mode!r}; one of {', '.join(MODES)}")
    language_model = model.model.language_model
    eager = language_model.forward
    compiled = torch.compile(eager, mode=mode, dynamic=True, backend=backend)
    language_model.forward = CompiledForward(eager, compiled)
    log.info("language model compiled with torch.compile (mode %s); the first steps compile it", mode)


def is_compiled(model: Any) -> bool:
    forward = getattr(model.model.language_model, "forward", None)
    return isinstance(forward, CompiledForward) and forward.active
