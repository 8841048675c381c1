"""Frame sampling spreads over the whole clip and hands the processor the true times."""

from __future__ import annotations

from fractions import Fraction

import numpy as np
import pytest

from tests.media import frame_shade, gif_bytes, video_bytes
from worker.media.errors import MediaError
from worker.media.video import VideoLimits, decode_video, sample_indices
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

    assert clip.backend == "decord"
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


def test_pyav_decodes_what_decord_cannot_open() -> None:
    clip = decode_video(gif_bytes(frames=10, frame_ms=100), VideoLimits(4, 600, 1_000_000))

    assert clip.backend == "pyav"
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


@pytest.mark.parametrize("data", [b"", b"not a video at all" * 50, bytes(5000)])
def test_undecodable_data_is_a_media_error(data: bytes) -> None:
    with pytest.raises(MediaError) as raised:
        decode_video(data, LIMITS)
    assert raised.value.code == "invalid_video"


def test_a_truncated_clip_is_a_media_error() -> None:
    whole = video_bytes(frames=30)
    with pytest.raises(MediaError):
        decode_video(whole[: len(whole) // 2], LIMITS)
