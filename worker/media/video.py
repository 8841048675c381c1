"""Samples a video file into frames spread over the whole clip, with their true times.

In two steps, so that a request's budgets are checked before any frame is decoded:
`open_video` sniffs the container and probes it (frame size from the headers, frame
count and duration by reading the packets, not from the headers' claims); `read_video`
decodes the sampled frames. Both run PyAV in a child process (`isolation`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from worker.media.containers import sniff_video
from worker.media.errors import MediaError
from worker.media.images import check_frame_size
from worker.media.isolation import ChildLimits, run_isolated
from worker.media.video_decoders import VideoProbe, probe_video, read_frames

BACKEND = "pyav"


@dataclass(frozen=True)
class VideoLimits:
    max_frames: int
    max_seconds: float
    max_pixels: int
    timeout_seconds: float = 60.0  # per child process: the probe, then the decoding
    memory_bytes: int = 4 * 1024**3

    @property
    def child(self) -> ChildLimits:
        return ChildLimits(self.timeout_seconds, self.memory_bytes)


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


@dataclass(frozen=True)
class OpenedVideo:
    """A probed video within the per-item limits, not yet decoded."""

    data: bytes
    demuxer: str
    probe: VideoProbe
    indices: list[int]  # the frames that will be decoded

    @property
    def pixels(self) -> int:
        """What decoding it costs: pixels per frame times the frames sampled."""
        return self.probe.width * self.probe.height * len(self.indices)


def sample_indices(total_frames: int, count: int) -> list[int]:
    """``count`` frame indices spread evenly from the first frame to the last.

    The same rule (rounded linspace over the whole clip) as Qwen's own video sampling, so
    the model sees clips the way it was trained to.
    """
    count = max(1, min(count, total_frames))
    return [int(index) for index in np.linspace(0, total_frames - 1, count).round()]


def open_video(data: bytes, limits: VideoLimits) -> OpenedVideo:
    demuxer = sniff_video(data)
    probe = run_isolated(probe_video, (data, demuxer, limits.max_pixels), limits.child, "video")
    check_frame_size(probe.width, probe.height, limits.max_pixels, "video")
    if probe.frame_count < 1 or probe.fps <= 0:
        raise MediaError("the video has no frames.", "invalid_video")
    if probe.seconds > limits.max_seconds:
        raise MediaError(
            f"the video lasts {probe.seconds:.1f} s, more than {limits.max_seconds:g} s (MAX_VIDEO_SECONDS).",
            "media_too_large",
        )
    return OpenedVideo(data, demuxer, probe, sample_indices(probe.frame_count, limits.max_frames))


def read_video(video: OpenedVideo, limits: VideoLimits) -> VideoClip:
    args = (video.data, video.demuxer, video.probe, video.indices, limits.max_pixels)
    frames, indices, timestamps = run_isolated(read_frames, args, limits.child, "video")
    probe = video.probe
    return VideoClip(frames, indices, timestamps, probe.frame_count, probe.fps, BACKEND)


def decode_video(data: bytes, limits: VideoLimits) -> VideoClip:
    return read_video(open_video(data, limits), limits)
