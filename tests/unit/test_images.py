"""Images of every common mode and format decode to upright RGB."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from tests.media import image_bytes
from worker.media.errors import MediaError
from worker.media.images import decode_image

MAX_PIXELS = 1_000_000


def corner(image: Image.Image) -> tuple[int, ...]:
    pixel = image.getpixel((0, 0))
    assert isinstance(pixel, tuple)
    return tuple(int(channel) for channel in pixel)


@pytest.mark.parametrize(
    ("mode", "fmt", "color"),
    [
        ("RGB", "JPEG", (200, 10, 10)),
        ("RGB", "WEBP", (200, 10, 10)),
        ("L", "PNG", 77),
        ("1", "BMP", 1),
        ("P", "GIF", 3),
        ("CMYK", "JPEG", (0, 255, 255, 0)),
        ("CMYK", "TIFF", (0, 255, 255, 0)),
        ("LA", "PNG", (50, 255)),
        ("RGBA", "PNG", (10, 200, 10, 255)),
        ("I;16", "PNG", 40000),
    ],
)
def test_every_mode_becomes_rgb(mode: str, fmt: str, color: int | tuple[int, ...]) -> None:
    image = decode_image(image_bytes((20, 10), mode, fmt, color), MAX_PIXELS)
    assert image.mode == "RGB" and image.size == (20, 10)


def test_sixteen_bit_grayscale_is_scaled_not_clipped() -> None:
    image = decode_image(image_bytes((8, 8), "I;16", "PNG", 32896), MAX_PIXELS)
    assert image.getpixel((0, 0)) == (128, 128, 128)


def test_cmyk_red_stays_red() -> None:
    red, green, blue = corner(decode_image(image_bytes((8, 8), "CMYK", "TIFF", (0, 255, 255, 0)), MAX_PIXELS))
    assert red > 200 and green < 50 and blue < 50


def test_transparency_is_shown_on_white() -> None:
    transparent = decode_image(image_bytes((8, 8), "RGBA", "PNG", (0, 0, 0, 0)), MAX_PIXELS)
    assert transparent.getpixel((0, 0)) == (255, 255, 255)
    half = decode_image(image_bytes((8, 8), "RGBA", "PNG", (0, 0, 0, 128)), MAX_PIXELS)
    assert half.getpixel((0, 0)) == pytest.approx((127, 127, 127), abs=1)
    palette = Image.new("P", (8, 8), 0)
    palette.info["transparency"] = 0
    buffer = io.BytesIO()
    palette.save(buffer, "PNG", transparency=0)
    assert decode_image(buffer.getvalue(), MAX_PIXELS).getpixel((0, 0)) == (255, 255, 255)


def test_exif_orientation_is_applied() -> None:
    # Orientation 6: the camera was turned; the stored 40x20 picture shows upright as 20x40.
    image = decode_image(image_bytes((40, 20), "RGB", "JPEG", (0, 0, 255), exif_orientation=6), MAX_PIXELS)
    assert image.size == (20, 40)


def test_animated_images_give_their_first_frame() -> None:
    frames = [Image.new("RGB", (8, 8), (255, 0, 0)), Image.new("RGB", (8, 8), (0, 0, 255))]
    buffer = io.BytesIO()
    frames[0].save(buffer, "GIF", save_all=True, append_images=frames[1:])
    red, _, blue = corner(decode_image(buffer.getvalue(), MAX_PIXELS))
    assert red > 200 and blue < 50


def test_too_many_pixels_are_refused_before_decoding() -> None:
    huge = image_bytes((2000, 1000), "L", "PNG", 0)
    with pytest.raises(MediaError) as raised:
        decode_image(huge, max_pixels=1_000_000)
    assert raised.value.code == "media_too_large"
    assert "2000x1000" in str(raised.value) and "MAX_IMAGE_PIXELS" in str(raised.value)


def test_extreme_aspect_ratios_are_refused() -> None:
    with pytest.raises(MediaError) as raised:
        decode_image(image_bytes((1000, 2), "L", "PNG", 0), MAX_PIXELS)
    assert "aspect ratio" in str(raised.value)


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"GIF89a but not really",
        np.random.default_rng(0).bytes(3000),
        image_bytes((64, 64), "RGB", "PNG")[:-200],  # truncated
        image_bytes((64, 64), "RGB", "JPEG")[:300],
    ],
)
def test_corrupt_data_is_a_media_error(data: bytes) -> None:
    with pytest.raises(MediaError) as raised:
        decode_image(data, MAX_PIXELS)
    assert raised.value.code == "invalid_image"


@pytest.mark.parametrize(
    "data",
    [
        b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 10 10\n",  # Pillow would run Ghostscript
        b"P6\n2 2\n255\n" + bytes(12),  # PPM: readable, but not a format clients send
    ],
)
def test_formats_outside_the_list_are_refused_unread(data: bytes) -> None:
    with pytest.raises(MediaError) as raised:
        decode_image(data, MAX_PIXELS)
    assert raised.value.code == "invalid_image" and "PNG, JPEG" in str(raised.value)
