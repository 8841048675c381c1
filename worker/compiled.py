"""The language model's decoding steps compiled with ``torch.compile``, behind a setting.

Eager transformers launches every kernel of a decoding step from Python; compiled, the
step's small operations are fused (on a GPU, ``reduce-overhead`` also captures CUDA
graphs). Only decoding steps run compiled (inside ``compiled_steps``), at the few shapes
worker.step_graphs buckets them into; prefills run eagerly. A prompt's length is new at
nearly every prefill, and ``reduce-overhead`` records a CUDA graph for every new shape,
so compiled prefills would record graphs without end; on a big prompt, launches are not
what costs. Compiling can fail: an operation the compiler does not support, a missing C
compiler, a backend error. A failure must not cost a request, so the first one turns
the compiled forward back into the eager one for good (logged), and the call that
failed runs eagerly. Where the compiled code ran in pieces (graph breaks), some layers may
have written their step into the cache before the failure; the eager call writes the same
columns again (worker.batch: a row's length moves on only once its step has completed).

Dynamic shapes (``dynamic=True``): the step's rows and columns change with the batch's
bucket; without it each bucket would compile again (tens of seconds on a small CPU), while
``reduce-overhead`` only records a graph per bucket.

``reduce-overhead`` cannot capture the step as a whole: the step writes the batch's
key/value buffers in place, and inductor skips CUDA graphs for inputs it mutates (seen on
an H200). A mode without graphs of its own (``default``, ``max-autotune-no-cudagraphs``)
with WORKER_CUDA_GRAPHS has worker.step_graphs capture the compiled step instead: the
compiled code runs once before each capture, so it compiles outside it.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Callable, Iterator
from typing import Any, get_args

import torch

from shared.settings import CompileMode

log = logging.getLogger(__name__)

# The values WORKER_COMPILE takes besides "" (off): torch.compile's modes.
MODES = tuple(mode for mode in get_args(CompileMode) if mode)
# The modes that capture CUDA graphs of their own; under the others (fused kernels, no
# graphs) the engine can capture the compiled step itself (WORKER_CUDA_GRAPHS).
OWN_GRAPHS_MODES = ("reduce-overhead", "max-autotune")


class CompiledForward:
    """Calls the compiled forward in decoding steps until it fails once; the eager one otherwise."""

    def __init__(self, eager: Callable[..., Any], compiled: Callable[..., Any]) -> None:
        self.eager = eager
        self._compiled: Callable[..., Any] | None = compiled
        self._stepping = threading.local()  # the engine's thread is in a decoding step

    @property
    def active(self) -> bool:
        return self._compiled is not None

    @contextlib.contextmanager
    def steps(self) -> Iterator[None]:
        self._stepping.on = True
        try:
            yield
        finally:
            self._stepping.on = False

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        if self._compiled is not None and getattr(self._stepping, "on", False):
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


def _compiled_forward(model: Any) -> CompiledForward | None:
    forward = getattr(model.model.language_model, "forward", None)
    return forward if isinstance(forward, CompiledForward) else None


def compiled_steps(model: Any) -> contextlib.AbstractContextManager[None]:
    """The language model's calls inside run compiled, where it is (a decoding step)."""
    forward = _compiled_forward(model)
    return forward.steps() if forward is not None else contextlib.nullcontext()


def is_compiled(model: Any) -> bool:
    forward = _compiled_forward(model)
    return forward is not None and forward.active
