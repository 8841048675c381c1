"""Samples a video file into frames spread over the whole clip, with their true times.

decord decodes (it seeks straight to the sampled frames); when it cannot open or read a
file (an animated GIF, AV1 in its older FFmpeg, ...), PyAV decodes it instead.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from worker.media.errors import MediaError
from worker.media.images import check_frame_size
from worker.media.video_decoders import DECODERS, FrameSource


@dataclass(frozen=True)
class VideoLimits:
    max_frames: int
    max_seconds: float
    max_pixels: int


@dataclass
class VideoClip:
    frames: np.ndarray  # (n, height, width, 3) uint8 RGB, in clip order
    indices: list[int]  # each frame's index in the clip
    timestamps: list[float]  # each frame's start, in seconds, as the decoder reports it
    total_frames: int
    fps: float  # average frame rate of the clip: index / fps is a frame's time
    backend: str

    @property
    def duration(self) -> float:
        return self.total_frames / self.fps


def sample_indices(total_frames: int, count: int) -> list[int]:
    """``count`` frame indices spread evenly from the first frame to the last.

    The same rule (rounded linspace over the whole clip) as Qwen's own video sampling, so
    the model sees clips the way it was trained to.
    """
    count = max(1, min(count, total_frames))
    return [int(index) for index in np.linspace(0, total_frames - 1, count).round()]


def decode_video(data: bytes, limits: VideoLimits) -> VideoClip:
    failures: list[str] = []
    for decoder in DECODERS:
        try:
            source = decoder(data)
        except Exception as error:  # this decoder cannot open it: try the next one
            failures.append(f"{decoder.name}: {error}")
            continue
        _check(source, limits)
        indices = sample_indices(source.total_frames, limits.max_frames)
        try:
            frames, indices, timestamps = source.read(indices)
        except Exception as error:
            failures.append(f"{decoder.name}: {error}")
            continue
        return VideoClip(frames, indices, timestamps, source.total_frames, source.fps, decoder.name)
    detail = "; ".join(failure.splitlines()[0][:200] for failure in failures)
    raise MediaError(f"the data is not a video this server can decode ({detail}).", "invalid_video")


def _check(source: FrameSource, limits: VideoLimits) -> None:
    if source.total_frames < 1 or source.fps <= 0:
        raise MediaError("the video has no frames.", "invalid_video")
    seconds = source.total_frames / source.fps
    if seconds > limits.max_seconds:
        raise MediaError(
            f"the video lasts {seconds:.1f} s, more than {limits.max_seconds:g} s (MAX_VIDEO_SECONDS).",
            "media_too_large",
        )
    check_frame_size(source.width, source.height, limits.max_pixels, "video")
