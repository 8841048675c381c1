"""Runs a decoding function in a child process with a deadline and a memory ceiling.

FFmpeg's demuxers and decoders are large C code fed by clients' bytes: a file can make
them loop, allocate without end or crash, and C code cannot be interrupted from Python.
So each call runs in its own process, which is killed at the deadline; the job thread
that waits for it is free again at once, with an error naming the limit.

Children are forked from a forkserver: a small process started once (a fresh
interpreter, without the worker's model or threads) with the decoder modules already
imported, so a child costs a fork (milliseconds), not an interpreter start. Inside the
child, before the function runs:
- RLIMIT_AS caps its address space (MEDIA_DECODE_MEMORY_BYTES); an allocation past it
  fails and becomes a "too large" error;
- RLIMIT_NOFILE drops to 0: the descriptors it already has (the pipe to the parent) keep
  working, but no file or socket can be opened at all, whatever the decoder is told;
- no core dump is written if it crashes.

Results come back through a pipe; large arrays (decoded frames) travel as raw buffers
out of band (pickle protocol 5), written straight from and into their final memory.
"""

from __future__ import annotations

import errno
import multiprocessing
import pickle
import resource
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from multiprocessing import forkserver
from multiprocessing.connection import Connection
from typing import Any, TypeVar, cast

from worker.media.errors import MediaError

T = TypeVar("T")
# Imported once in the forkserver so that every child starts with them loaded. A child can
# open no file, not even a module's: the modules PyAV imports only when it first meets a
# stream of their kind are listed too.
PRELOADED_MODULES = [
    "worker.media.video_decoders",
    *(f"av.{kind}.{part}" for kind in ("video", "audio", "subtitles") for part in ("stream", "codeccontext")),
]
_context = multiprocessing.get_context("forkserver")
_context.set_forkserver_preload(PRELOADED_MODULES)
# multiprocessing's bookkeeping of children is not made for several threads starting them at once.
_start_lock = threading.Lock()


def start_forkserver() -> None:
    """Start the forkserver now (it takes about a second) rather than at the first video."""
    forkserver.ensure_running()


@dataclass(frozen=True)
class ChildLimits:
    timeout_seconds: float
    memory_bytes: int


def run_isolated(function: Callable[..., T], args: tuple[Any, ...], limits: ChildLimits, what: str) -> T:
    """``function(*args)`` in a child; MediaError for a failure, a timeout or too much memory.

    ``function`` and its arguments must be picklable (a module-level function). ``what``
    ("video") words the errors.
    """
    receiver, sender = _context.Pipe(duplex=False)
    child = _context.Process(
        target=_child_main, args=(sender, limits.memory_bytes, function, args), daemon=True
    )
    deadline = time.monotonic() + limits.timeout_seconds
    with _start_lock:
        child.start()
    sender.close()
    try:
        if not receiver.poll(max(0.0, deadline - time.monotonic())):
            raise MediaError(
                f"decoding the {what} took longer than {limits.timeout_seconds:g} s "
                "(MEDIA_DECODE_TIMEOUT_SECONDS).",
                "media_decode_timeout",
            )
        try:
            return cast(T, _receive(receiver, limits, what))
        except (EOFError, OSError):
            child.join(1)
            raise _crashed(child.exitcode, what) from None
    finally:
        receiver.close()
        if child.is_alive():
            child.kill()
        child.join()
        child.close()


def _receive(receiver: Connection, limits: ChildLimits, what: str) -> Any:
    message = receiver.recv()
    status = message[0]
    if status == "ok":
        _, payload, sizes = message
        buffers = []
        for size in sizes:
            buffer = bytearray(size)  # writable, so the arrays built on it are too
            receiver.recv_bytes_into(buffer)
            buffers.append(buffer)
        return pickle.loads(payload, buffers=buffers)
    if status == "media_error":
        raise MediaError(message[1], message[2])
    if status == "memory":
        raise MediaError(
            f"decoding the {what} needs more than {limits.memory_bytes} bytes of memory "
            "(MEDIA_DECODE_MEMORY_BYTES).",
            "media_too_large",
        )
    raise MediaError(f"the data is not a {what} this server can decode ({message[1]}).", f"invalid_{what}")


def _crashed(exitcode: int | None, what: str) -> MediaError:
    how = f"signal {signal.Signals(-exitcode).name}" if exitcode and exitcode < 0 else f"status {exitcode}"
    return MediaError(f"the {what} could not be decoded: the decoder stopped ({how}).", f"invalid_{what}")


def _confine(memory_bytes: int) -> None:
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    resource.setrlimit(resource.RLIMIT_AS, (memory_bytes, memory_bytes))
    resource.setrlimit(resource.RLIMIT_NOFILE, (0, 0))


def _describe(error: Exception) -> str:
    return f"{type(error).__name__}: {error}".splitlines()[0][:300]


def _child_main(
    sender: Connection, memory_bytes: int, function: Callable[..., Any], args: tuple[Any, ...]
) -> None:
    _confine(memory_bytes)
    try:
        result = function(*args)
        buffers: list[pickle.PickleBuffer] = []
        payload = pickle.dumps(result, protocol=5, buffer_callback=buffers.append)
        views = [buffer.raw() for buffer in buffers]
        sender.send(("ok", payload, [view.nbytes for view in views]))
        for view in views:
            sender.send_bytes(view)
    except MediaError as error:
        sender.send(("media_error", str(error), error.code))
    except MemoryError:
        sender.send(("memory",))
    except OSError as error:
        # A thread whose stack cannot be mapped fails with EAGAIN, not ENOMEM.
        if error.errno in (errno.ENOMEM, errno.EAGAIN):
            sender.send(("memory",))
        else:
            sender.send(("failed", _describe(error)))
    except Exception as error:
        sender.send(("failed", _describe(error)))
    finally:
        sender.close()
