"""PyAV, opened so that it can only read the bytes it is given; runs in the decode child.

Every container is opened from memory with its demuxer forced (the one `containers`
sniffed), FFmpeg's protocol and format whitelists empty of anything else, and nested
opens (a playlist's segments, a movie's external references) refused by PyAV's own I/O
hook: three separate reasons why no URL or file is ever opened. FFmpeg's `max_pixels`
makes its decoders refuse frames larger than the limit, also while it probes the streams.

PyAV alone decodes. decord (the previous decoder) bundles FFmpeg 4.1, which opens the
URLs of an HLS playlist by itself and blocks in C where no timeout reaches; its seeking is
matched here by seeking to the keyframe before each sampled frame.
"""

from __future__ import annotations

import bisect
import io
from dataclasses import dataclass
from fractions import Fraction
from typing import Any

import av
import numpy as np

from worker.media.containers import GIF, gif_canvas

Frames = tuple[np.ndarray, list[int], list[float]]
# Decoder threads per video; more buys little on short clips and each costs address space.
DECODER_THREADS = 2


@dataclass(frozen=True)
class VideoProbe:
    """What the container's packets say, counted and measured rather than read from headers."""

    width: int
    height: int
    frame_count: int
    seconds: float  # from the first packet's start to the last packet's end
    fps: float  # frame_count / seconds: the clip's average rate
    time_base: Fraction
    # Every frame's timestamp in presentation order, and the keyframes'; None when the
    # container has no timestamps, in which case frames are told apart by counting.
    frame_pts: tuple[int, ...] | None
    keyframe_pts: tuple[int, ...]


def _refuse_nested_open(url: str, flags: int, options: dict[str, str]) -> Any:
    raise PermissionError(f"the file refers to '{url[:100]}'; media may not refer to other files")


def open_container(data: bytes, demuxer: str, max_pixels: int) -> Any:
    return av.open(
        io.BytesIO(data),
        mode="r",
        format=demuxer,
        # Reaches the stream probing's decoders too: no oversized frame is decoded to learn a size.
        options={"max_pixels": str(max_pixels)},
        container_options={
            # Names no protocol: a nested URL of any scheme is refused.
            "protocol_whitelist": "none",
            "format_whitelist": demuxer,
        },
        io_open=_refuse_nested_open,
    )


def probe_video(data: bytes, demuxer: str, max_pixels: int) -> VideoProbe:
    """Frame size, count and duration, from the headers and the packets.

    Only FFmpeg's stream probing may decode a first frame (for a codec whose headers leave
    something out), and `max_pixels` bounds it.
    """
    with open_container(data, demuxer, max_pixels) as container:
        if not container.streams.video:
            raise ValueError("the file has no video stream")
        stream = container.streams.video[0]
        width, height = stream.codec_context.width, stream.codec_context.height
        if demuxer == GIF:
            width, height = gif_canvas(data)
        if not width or not height:
            raise ValueError("the frame size cannot be read")
        packets = _Packets()
        if width * height <= max_pixels:  # too large anyway: the caller refuses it unread
            for packet in container.demux(stream):
                packets.add(packet)
        time_base = Fraction(stream.time_base) if stream.time_base else Fraction(1, 1)
        seconds = packets.seconds(time_base)
        header_rate = float(stream.average_rate or stream.guessed_rate or 0)
        if seconds <= 0 and header_rate > 0:
            seconds = packets.count / header_rate
        return VideoProbe(
            width=width,
            height=height,
            frame_count=packets.count,
            seconds=seconds,
            fps=packets.count / seconds if seconds > 0 else 0.0,
            time_base=time_base,
            frame_pts=tuple(sorted(packets.pts)) if packets.timed else None,
            keyframe_pts=tuple(sorted(packets.keyframes)),
        )


class _Packets:
    def __init__(self) -> None:
        self.count = 0
        self.pts: list[int] = []
        self.keyframes: list[int] = []
        self.timed = True
        self._end = 0

    def add(self, packet: Any) -> None:
        # Empty packets flush the demuxer; discarded ones (before an edit list's start) are never shown.
        if not packet.size or packet.is_discard:
            return
        self.count += 1
        if packet.pts is None:
            self.timed = False
            return
        self.pts.append(packet.pts)
        self._end = max(self._end, packet.pts + (packet.duration or 0))
        if packet.is_keyframe:
            self.keyframes.append(packet.pts)

    def seconds(self, time_base: Fraction) -> float:
        if not self.timed or not self.pts:
            return 0.0
        start, last = min(self.pts), max(self.pts)
        end: float = self._end if self._end > last else last
        if end == last and self.count > 1:  # no durations: one more average interval for the last frame
            end = last + (last - start) / (self.count - 1)
        return float(end - start) * float(time_base)


def read_frames(data: bytes, demuxer: str, probe: VideoProbe, indices: list[int], max_pixels: int) -> Frames:
    """The frames at ``indices`` (RGB, sized like the first frame), the indices read, their times."""
    with open_container(data, demuxer, max_pixels) as container:
        stream = container.streams.video[0]
        # Decoding: frames over the limit mid-stream (a size change) are refused too.
        stream.codec_context.options = {"max_pixels": str(max_pixels)}
        stream.thread_type = "AUTO"
        stream.codec_context.thread_count = DECODER_THREADS
        reader = _FrameReader(container, stream, probe)
        seekable = probe.frame_pts is not None and demuxer != GIF and len(probe.keyframe_pts) > 1
        if seekable:
            try:
                return reader.by_timestamp(indices)
            except _SeekMissed:
                container.seek(0, stream=stream)  # the index misled the seek: count from the start
        return reader.in_order(indices)


class _SeekMissed(Exception):
    pass


class _FrameReader:
    def __init__(self, container: Any, stream: Any, probe: VideoProbe) -> None:
        self._container, self._stream, self._probe = container, stream, probe
        first = probe.frame_pts[0] if probe.frame_pts else 0
        self._start = float(first * probe.time_base)

    def _picture(self, frame: Any) -> np.ndarray:
        # Sized like the first frame: a stream may change size midway.
        return np.asarray(
            frame.to_ndarray(width=self._probe.width, height=self._probe.height, format="rgb24")
        )

    def _time(self, frame: Any, index: int) -> float:
        if frame.time is None:
            return index / self._probe.fps if self._probe.fps else 0.0
        return round(float(frame.time) - self._start, 6)

    def in_order(self, indices: list[int]) -> Frames:
        """Decodes from the start, counting frames: for files without usable timestamps."""
        wanted = set(indices)
        frames: list[np.ndarray] = []
        kept: list[int] = []
        times: list[float] = []
        first_time: float | None = None
        for position, frame in enumerate(self._container.decode(self._stream)):
            if position > indices[-1]:
                break
            if first_time is None and frame.time is not None:
                # Times count from the first frame shown, whatever the file's start time.
                first_time = float(frame.time)
                self._start = first_time
            if position in wanted:
                frames.append(self._picture(frame))
                kept.append(position)
                times.append(self._time(frame, position))
        if not frames:
            raise ValueError("no frame could be decoded")
        return np.stack(frames), kept, times

    def by_timestamp(self, indices: list[int]) -> Frames:
        """Seeks to the keyframe before each sampled frame unless it is already on the way."""
        assert self._probe.frame_pts is not None
        frames: list[np.ndarray] = []
        times: list[float] = []
        decoded: Any = None
        current: Any = None  # the last frame decoded, not yet past a target
        for index in indices:
            target = self._probe.frame_pts[index]
            keyframe = _last_at_or_before(self._probe.keyframe_pts, target)
            if decoded is None or (
                current is not None and current.pts is not None and keyframe > current.pts
            ):
                self._container.seek(keyframe, stream=self._stream, backward=True)
                decoded = self._container.decode(self._stream)
                current = next(decoded, None)
                if current is None or current.pts is None or current.pts > target:
                    raise _SeekMissed
            while current is not None and current.pts is not None and current.pts < target:
                current = next(decoded, None)
            if current is None or current.pts is None:
                break  # the file ends early (truncated): keep what was read
            frames.append(self._picture(current))
            times.append(self._time(current, index))
        if not frames:
            raise ValueError("no frame could be decoded")
        return np.stack(frames), indices[: len(frames)], times


def _last_at_or_before(sorted_values: tuple[int, ...], value: int) -> int:
    return sorted_values[max(0, bisect.bisect_right(sorted_values, value) - 1)]
