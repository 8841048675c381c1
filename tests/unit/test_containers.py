"""Only known video containers reach the decoder; playlists and scripts are refused by name."""

from __future__ import annotations

import pytest

from tests.media import gif_bytes, hls_playlist, video_bytes
from worker.media.containers import AVI, GIF, MATROSKA, MP4, gif_canvas, sniff_video
from worker.media.errors import MediaError


@pytest.mark.parametrize(
    ("data", "demuxer"),
    [
        (video_bytes(frames=2, container="mp4"), MP4),
        (video_bytes(frames=2, container="mov"), MP4),
        (video_bytes(frames=2, container="matroska"), MATROSKA),
        (video_bytes(frames=2, container="webm", codec="libvpx-vp9"), MATROSKA),
        (video_bytes(frames=2, container="avi"), AVI),
        (gif_bytes(frames=2), GIF),
    ],
)
def test_accepted_containers_get_their_demuxer(data: bytes, demuxer: str) -> None:
    assert sniff_video(data) == demuxer


@pytest.mark.parametrize(
    ("data", "named"),
    [
        (hls_playlist("http://127.0.0.1:9/segment.ts"), "an HLS playlist"),
        (b"\xef\xbb\xbf\n#EXTM3U\n#EXTINF:1,\nhttp://x/a.ts\n", "an HLS playlist"),
        (b"ffconcat version 1.0\nfile /etc/passwd\n", "an FFmpeg concat script"),
        (b"v=0\r\no=- 0 0 IN IP4 127.0.0.1\r\nm=video 5004 RTP/AVP 96\r\n", "an SDP session description"),
        (b'<?xml version="1.0"?><MPD></MPD>', "DASH manifest"),
        (b"just some words\n", "text"),
        (b"", "empty"),
        (bytes(range(256)) * 4, "an unknown format"),
    ],
)
def test_everything_else_is_refused_and_named(data: bytes, named: str) -> None:
    with pytest.raises(MediaError) as raised:
        sniff_video(data)
    assert raised.value.code == "invalid_video"
    assert named in str(raised.value) and "MP4/MOV" in str(raised.value)


def test_the_gif_canvas_is_read_from_the_header() -> None:
    assert gif_canvas(gif_bytes(size=(40, 30))) == (40, 30)
