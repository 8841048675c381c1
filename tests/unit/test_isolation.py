"""The decode child: a deadline, a memory ceiling, no new files or sockets, results intact."""

from __future__ import annotations

import multiprocessing
import os
import signal
import socket
import time

import numpy as np
import pytest

from worker.media.errors import MediaError
from worker.media.isolation import ChildLimits, run_isolated

LIMITS = ChildLimits(timeout_seconds=30, memory_bytes=2 * 1024**3)


# Run in the child: module-level so that the child can import them.
def gradient(height: int, width: int) -> np.ndarray:
    return np.arange(height * width * 3, dtype=np.uint32).reshape(height, width, 3).astype(np.uint8)


def hang() -> None:
    time.sleep(3600)


def allocate(size: int) -> int:
    return len(bytearray(size))


def connect(port: int) -> None:
    socket.create_connection(("127.0.0.1", port), timeout=5).close()


def read_file(path: str) -> bytes:
    with open(path, "rb") as file:
        return file.read()


def crash() -> None:
    os.kill(os.getpid(), signal.SIGSEGV)


def refuse() -> None:
    raise MediaError("the video is no good.", "invalid_video")


def test_the_result_comes_back_whole_and_writable() -> None:
    frames = run_isolated(gradient, (480, 640), LIMITS, "video")
    assert np.array_equal(frames, gradient(480, 640))
    frames[0, 0, 0] = 7  # the processor may write into the frames


def test_a_call_past_its_deadline_is_killed() -> None:
    with pytest.raises(MediaError) as raised:
        run_isolated(hang, (), ChildLimits(timeout_seconds=0.5, memory_bytes=LIMITS.memory_bytes), "video")
    assert raised.value.code == "media_decode_timeout"
    assert "MEDIA_DECODE_TIMEOUT_SECONDS" in str(raised.value)
    assert multiprocessing.active_children() == []


def test_memory_past_the_ceiling_is_refused() -> None:
    with pytest.raises(MediaError) as raised:
        run_isolated(allocate, (3 * 1024**3,), LIMITS, "video")
    assert raised.value.code == "media_too_large"
    assert "MEDIA_DECODE_MEMORY_BYTES" in str(raised.value)
    assert run_isolated(allocate, (10**6,), LIMITS, "video") == 10**6


def test_the_child_can_open_no_socket_and_no_file() -> None:
    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(0.2)
    try:
        with pytest.raises(MediaError) as raised:
            run_isolated(connect, (listener.getsockname()[1],), LIMITS, "video")
        assert "Too many open files" in str(raised.value)
        with pytest.raises(socket.timeout):
            listener.accept()  # nothing ever connected
    finally:
        listener.close()
    with pytest.raises(MediaError) as raised:
        run_isolated(read_file, ("/etc/hostname",), LIMITS, "video")
    assert raised.value.code == "invalid_video"


def test_a_crash_is_an_invalid_file() -> None:
    with pytest.raises(MediaError) as raised:
        run_isolated(crash, (), LIMITS, "video")
    assert raised.value.code == "invalid_video" and "SIGSEGV" in str(raised.value)


def test_media_errors_keep_their_code() -> None:
    with pytest.raises(MediaError) as raised:
        run_isolated(refuse, (), LIMITS, "video")
    assert raised.value.code == "invalid_video" and str(raised.value) == "the video is no good."
