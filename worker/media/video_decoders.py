"""The video decoders, in the order they are tried: decord, then PyAV."""

from __future__ import annotations

import io
from abc import ABC, abstractmethod
from typing import ClassVar

import av
import decord
import numpy as np

Frames = tuple[np.ndarray, list[int], list[float]]


class FrameSource(ABC):
    """An opened video: its size and rate, known before any frame is sampled."""

    name: ClassVar[str]
    total_frames: int
    fps: float
    width: int
    height: int

    @abstractmethod
    def __init__(self, data: bytes) -> None:
        """Open the file; raises when this decoder cannot read it."""

    @abstractmethod
    def read(self, indices: list[int]) -> Frames:
        """The frames at ``indices`` (RGB), the indices actually read, and their times."""


class DecordSource(FrameSource):
    name = "decord"

    def __init__(self, data: bytes) -> None:
        self._reader = decord.VideoReader(io.BytesIO(data), ctx=decord.cpu(0))
        self.total_frames = len(self._reader)
        self.fps = float(self._reader.get_avg_fps())
        # decord reports no frame size without decoding a frame.
        self.height, self.width = (int(side) for side in self._reader[0].shape[:2])

    def read(self, indices: list[int]) -> Frames:
        frames = self._reader.get_batch(indices).asnumpy()
        starts = self._reader.get_frame_timestamp(indices)[:, 0]
        return frames, indices, [round(float(start), 6) for start in starts]


class PyAVSource(FrameSource):
    """Decodes sequentially: slower than decord's seeking, but opens what FFmpeg opens."""

    name = "pyav"

    def __init__(self, data: bytes) -> None:
        self._data = data
        with av.open(io.BytesIO(data), mode="r") as container:
            if not container.streams.video:
                raise ValueError("no video stream")
            stream = container.streams.video[0]
            self.width, self.height = stream.codec_context.width, stream.codec_context.height
            # Some containers (GIF, WebM) do not store a frame count: count the packets.
            self.total_frames = stream.frames or len([p for p in container.demux(stream) if p.size])
            rate = stream.average_rate or stream.guessed_rate
            if rate:
                self.fps = float(rate)
            else:
                seconds = (container.duration or 0) / av.time_base
                self.fps = self.total_frames / seconds if seconds > 0 else 0.0

    def read(self, indices: list[int]) -> Frames:
        wanted = set(indices)
        frames: list[np.ndarray] = []
        kept: list[int] = []
        times: list[float] = []
        with av.open(io.BytesIO(self._data), mode="r") as container:
            stream = container.streams.video[0]
            stream.thread_type = "AUTO"
            first_time: float | None = None
            for position, frame in enumerate(container.decode(stream)):
                if position > indices[-1]:
                    break
                if first_time is None:
                    first_time = frame.time or 0.0
                if position in wanted:
                    # Sized like the first frame: a stream may change size midway.
                    frames.append(frame.to_ndarray(width=self.width, height=self.height, format="rgb24"))
                    kept.append(position)
                    times.append((frame.time or 0.0) - first_time)
        if not frames:
            raise ValueError("no frame could be decoded")
        return np.stack(frames), kept, times


DECODERS: tuple[type[FrameSource], ...] = (DecordSource, PyAVSource)
