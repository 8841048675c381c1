"""Frame sampling spreads over the whole clip and hands the processor the true times."""

from __future__ import annotations

import io
import struct
from fractions import Fraction

import av
import numpy as np
import pytest

from tests.media import (
    ConnectionRecorder,
    frame_shade,
    gif_bytes,
    hls_playlist,
    video_bytes,
    with_gif_canvas,
)
from worker.media.errors import MediaError
from worker.media.isolation import ChildLimits, run_isolated
from worker.media.video import VideoLimits, decode_video, sample_indices
from worker.media.video_decoders import open_container, probe_video
from worker.prompt import processor_kwargs, video_metadata

LIMITS = VideoLimits(max_frames=16, max_seconds=600, max_pixels=1_000_000)


@pytest.mark.parametrize(("total", "count"), [(100, 16), (24, 4), (17, 16), (5, 16), (1, 16), (300, 1)])
def test_sampling_spans_first_to_last_frame_evenly(total: int, count: int) -> None:
    indices = sample_indices(total, count)
    assert len(indices) == min(total, count)
    assert indices == sorted(set(indices))
    assert indices[0] == 0
    if len(indices) > 1:
        assert indices[-1] == total - 1
        gaps = np.diff(indices)
        assert gaps.max() - gaps.min() <= 1  # even spacing, up to rounding


def test_decoded_frames_are_the_sampled_ones_with_true_times() -> None:
    clip = decode_video(video_bytes(frames=40, fps=10), VideoLimits(8, 600, 1_000_000))

    assert clip.backend == "pyav"
    assert clip.total_frames == 40 and clip.fps == pytest.approx(10)
    assert clip.indices == sample_indices(40, 8)
    assert clip.indices[-1] == 39  # the end of the clip, not the first 8 frames
    assert clip.frames.shape == (8, 48, 64, 3) and clip.frames.dtype == np.uint8
    # Each frame's colour says which frame of the clip it is.
    shades = [int(frame[..., 0].mean()) for frame in clip.frames]
    assert shades == pytest.approx([frame_shade(i, 40) for i in clip.indices], abs=6)
    # Frame i of a 10 fps clip starts at i / 10 s.
    assert clip.timestamps == pytest.approx([i / 10 for i in clip.indices], abs=1e-3)


def test_processor_gets_the_clip_metadata_and_no_resampling() -> None:
    clip = decode_video(video_bytes(frames=30, fps=Fraction(15, 2)), LIMITS)
    kwargs = processor_kwargs([clip])

    assert kwargs["do_sample_frames"] is False
    (metadata,) = kwargs["video_metadata"]
    assert metadata.fps == pytest.approx(7.5)
    assert metadata.total_num_frames == 30
    assert metadata.duration == pytest.approx(4.0)
    assert metadata.frames_indices == clip.indices
    # What the processor writes into the prompt is what the decoder measured.
    assert metadata.timestamps == pytest.approx(clip.timestamps, abs=1e-3)
    assert video_metadata(clip).width == 64 and video_metadata(clip).height == 48


def test_the_frame_count_is_capped() -> None:
    clip = decode_video(video_bytes(frames=24), VideoLimits(3, 600, 1_000_000))
    assert clip.indices == [0, 12, 23]
    short = decode_video(video_bytes(frames=2), LIMITS)
    assert short.indices == [0, 1]


@pytest.mark.parametrize(
    ("container", "codec"),
    [("mov", "libx264"), ("matroska", "libx264"), ("webm", "libvpx-vp9"), ("avi", "mpeg4")],
)
def test_every_accepted_container_decodes(container: str, codec: str) -> None:
    clip = decode_video(
        video_bytes(frames=12, fps=6, container=container, codec=codec), VideoLimits(4, 600, 10**6)
    )
    assert clip.total_frames == 12 and clip.fps == pytest.approx(6, rel=0.02)
    shades = [int(frame[..., 0].mean()) for frame in clip.frames]
    assert shades == pytest.approx([frame_shade(i, 12) for i in clip.indices], abs=8)


def test_frames_between_keyframes_are_found_after_seeking() -> None:
    # A keyframe every 5 frames: the reader seeks to the one before each sampled frame.
    clip = decode_video(video_bytes(frames=90, fps=10, keyframe_interval=5), VideoLimits(7, 600, 10**6))
    assert clip.indices == sample_indices(90, 7)
    shades = [int(frame[..., 0].mean()) for frame in clip.frames]
    assert shades == pytest.approx([frame_shade(i, 90) for i in clip.indices], abs=6)
    assert clip.timestamps == pytest.approx([i / 10 for i in clip.indices], abs=1e-3)


def test_an_animated_gif_decodes() -> None:
    clip = decode_video(gif_bytes(frames=10, frame_ms=100), VideoLimits(4, 600, 1_000_000))

    assert clip.total_frames == 10
    assert clip.indices == sample_indices(10, 4)
    shades = [int(frame[0, 0, 0]) for frame in clip.frames]
    assert shades == pytest.approx([frame_shade(i, 10) for i in clip.indices], abs=6)
    assert clip.timestamps == pytest.approx([i / 10 for i in clip.indices], abs=1e-3)


def test_a_clip_longer_than_the_limit_is_refused() -> None:
    long_clip = video_bytes(frames=13, fps=Fraction(1, 5))  # 65 s
    with pytest.raises(MediaError) as raised:
        decode_video(long_clip, VideoLimits(4, max_seconds=60, max_pixels=1_000_000))
    assert raised.value.code == "media_too_large"
    assert "MAX_VIDEO_SECONDS" in str(raised.value)


def test_frames_larger_than_the_pixel_limit_are_refused() -> None:
    with pytest.raises(MediaError) as raised:
        decode_video(video_bytes(size=(128, 96)), VideoLimits(4, 600, max_pixels=128 * 95))
    assert "MAX_IMAGE_PIXELS" in str(raised.value)


def with_declared_duration(mkv: bytes, seconds: float) -> bytes:
    """The Matroska file with its Segment Info's Duration element claiming ``seconds``."""
    data = bytearray(mkv)
    at = data.index(b"\x44\x89")  # the Duration element's ID
    assert data[at + 2] == 0x88  # an 8-byte float, in milliseconds (the default timestamp scale)
    data[at + 3 : at + 11] = struct.pack(">d", seconds * 1000)
    return bytes(data)


@pytest.mark.parametrize("claimed", [10**6, 0.5])
def test_the_duration_is_measured_not_read_from_the_header(claimed: float) -> None:
    lying = with_declared_duration(video_bytes(frames=30, fps=10, container="matroska"), claimed)
    with av.open(io.BytesIO(lying), mode="r", format="matroska") as container:
        assert container.duration is not None
        assert container.duration / av.time_base == pytest.approx(claimed)  # what the header says
    clip = decode_video(lying, VideoLimits(4, max_seconds=60, max_pixels=10**6))
    assert clip.total_frames == 30 and clip.duration == pytest.approx(3.0)
    with pytest.raises(MediaError, match=r"lasts 3\.0 s"):
        decode_video(lying, VideoLimits(4, max_seconds=2, max_pixels=10**6))


def test_frames_declared_huge_are_refused_before_any_is_decoded() -> None:
    # 900 bytes declaring 12000x12000 frames: decoding one would take 576 MB.
    bomb = with_gif_canvas(gif_bytes(frames=10), 12000, 12000)
    with pytest.raises(MediaError) as raised:
        decode_video(bomb, VideoLimits(4, 600, max_pixels=40_000_000))
    assert raised.value.code == "media_too_large"
    assert "12000x12000" in str(raised.value) and "MAX_IMAGE_PIXELS" in str(raised.value)


def test_an_hls_playlist_is_refused_and_nothing_is_fetched() -> None:
    recorder = ConnectionRecorder()
    try:
        playlist = hls_playlist(recorder.url("/segment.ts"))
        with pytest.raises(MediaError) as raised:
            decode_video(playlist, LIMITS)
        assert raised.value.code == "invalid_video" and "HLS playlist" in str(raised.value)
        # Even told to read it as HLS, the decoder opens nothing: not in this process...
        with pytest.raises(Exception, match=r"refers to|Invalid|not permitted"):
            open_container(playlist, "hls", 10**6)
        # ...nor in the decode child, where no socket can be opened at all.
        with pytest.raises(MediaError):
            run_isolated(probe_video, (playlist, "hls", 10**6), ChildLimits(10, 2 * 1024**3), "video")
        assert recorder.connections == 0
    finally:
        recorder.stop()


def test_a_decode_past_its_deadline_is_killed() -> None:
    limits = VideoLimits(4, 600, 10**6, timeout_seconds=0.001)
    with pytest.raises(MediaError) as raised:
        decode_video(video_bytes(frames=8), limits)
    assert raised.value.code == "media_decode_timeout"
    assert "MEDIA_DECODE_TIMEOUT_SECONDS" in str(raised.value)


@pytest.mark.parametrize("data", [b"", b"not a video at all" * 50, bytes(5000)])
def test_undecodable_data_is_a_media_error(data: bytes) -> None:
    with pytest.raises(MediaError) as raised:
        decode_video(data, LIMITS)
    assert raised.value.code == "invalid_video"


def test_a_truncated_clip_is_a_media_error() -> None:
    whole = video_bytes(frames=30)
    with pytest.raises(MediaError):
        decode_video(whole[: len(whole) // 2], LIMITS)
