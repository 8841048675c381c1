"""Which video container a file is, told from its first bytes, before any decoder sees it.

FFmpeg guesses formats by itself, and some of its formats are not media but instructions
to fetch more: an HLS playlist (`#EXTM3U`) or DASH manifest names segment URLs, an
`ffconcat` script names files, an SDP description opens network streams. FFmpeg then
connects to those URLs, from a worker inside the network. So only the containers below
are accepted, recognised by their magic bytes, and the decoder is forced to use the
matching demuxer rather than left to probe.
"""

from __future__ import annotations

import struct

from worker.media.errors import MediaError

# The demuxer FFmpeg must use for each accepted container.
MP4 = "mov"  # MP4, MOV, 3GP, M4V: one ISO base media demuxer
MATROSKA = "matroska"  # MKV and WebM
AVI = "avi"
GIF = "gif"
DEMUXERS = (MP4, MATROSKA, AVI, GIF)

# QuickTime files written before `ftyp` existed start with one of these atoms instead.
_QUICKTIME_ATOMS = (b"ftyp", b"moov", b"mdat", b"wide")
_EBML = b"\x1a\x45\xdf\xa3"
_GIF = (b"GIF87a", b"GIF89a")
# Formats refused by name, so that the error says what the data was.
_NAMED_REFUSALS = (
    (b"#EXTM3U", "an HLS playlist"),
    (b"ffconcat", "an FFmpeg concat script"),
    (b"<?xml", "an XML document (such as a DASH manifest)"),
    (b"<MPD", "a DASH manifest"),
    (b"v=0", "an SDP session description"),
)
ACCEPTED = "MP4/MOV, WebM/MKV, AVI or animated GIF"


def sniff_video(data: bytes) -> str:
    """The FFmpeg demuxer for ``data``; a MediaError for anything else."""
    if data[4:8] in _QUICKTIME_ATOMS:
        return MP4
    if data.startswith(_EBML):
        return MATROSKA
    if data[:4] == b"RIFF" and data[8:12] == b"AVI ":
        return AVI
    if data[:6] in _GIF:
        return GIF
    raise MediaError(
        f"the data is {_describe(data)}, not a video container this server accepts ({ACCEPTED}).",
        "invalid_video",
    )


def gif_canvas(data: bytes) -> tuple[int, int]:
    """A GIF's logical screen size: every frame FFmpeg decodes is a canvas of this size.

    FFmpeg's demuxer leaves the size to the decoder, so it is read here from the header
    instead of decoding a frame to learn it.
    """
    width, height = struct.unpack_from("<HH", data, 6)
    return int(width), int(height)


def _describe(data: bytes) -> str:
    head = data[:64].lstrip(b"\xef\xbb\xbf \t\r\n")  # a text file may start with a BOM or blank lines
    for magic, name in _NAMED_REFUSALS:
        if head.startswith(magic):
            return name
    if not data:
        return "empty"
    if _looks_like_text(data[:512]):
        return "text"
    return "of an unknown format"


def _looks_like_text(sample: bytes) -> bool:
    # Control bytes are what binary formats are full of and text has none of.
    return all(byte >= 0x20 or byte in b"\t\r\n" for byte in sample)
