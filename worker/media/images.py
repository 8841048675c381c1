"""Decodes an image file into the upright RGB picture the processor expects.

Images are decoded in the worker's own process, unlike videos (`isolation`): a child
costs 20-50 ms to start where a small PNG decodes in 0.1 ms, and Pillow's work is
bounded before it starts: only the formats below are opened (no plugin that runs an
external program, such as EPS through Ghostscript), and the size from the header is
checked against MAX_IMAGE_PIXELS and the request's budget before any pixel is decoded;
only the first frame of an animated file is read.
"""

from __future__ import annotations

import io

import numpy as np
from PIL import Image, ImageOps

from worker.media.errors import MediaError

# Qwen's resizing refuses anything more elongated than this.
MAX_ASPECT_RATIO = 200
# Transparent areas are shown on white, as image viewers do; converting RGBA straight to RGB
# would put them on black, and black text on a transparent background would vanish.
BACKGROUND = (255, 255, 255)
_HIGH_DEPTH_GRAYSCALE = ("I", "I;16", "I;16B", "I;16L", "I;16N")
# Pillow's names for the formats clients send.
FORMATS = ("PNG", "JPEG", "WEBP", "GIF", "BMP", "TIFF")


def check_frame_size(width: int, height: int, max_pixels: int, what: str) -> None:
    if width < 1 or height < 1:
        raise MediaError(f"the {what} has no pixels.", f"invalid_{what}")
    if width * height > max_pixels:
        raise MediaError(
            f"the {what} is {width}x{height}, more than {max_pixels} pixels (MAX_IMAGE_PIXELS).",
            "media_too_large",
        )
    if max(width, height) / min(width, height) > MAX_ASPECT_RATIO:
        raise MediaError(
            f"the {what} is {width}x{height}; its aspect ratio must be below {MAX_ASPECT_RATIO}.",
            f"invalid_{what}",
        )


def open_image(data: bytes, max_pixels: int) -> Image.Image:
    """The image with its header read and its size checked, its pixels not yet decoded."""
    try:
        image = Image.open(io.BytesIO(data), formats=FORMATS)
    except Image.DecompressionBombError as error:
        raise MediaError(f"the image has too many pixels: {error}", "media_too_large") from error
    except Exception as error:
        raise MediaError(
            f"the data is not an image in a format this server can read ({', '.join(FORMATS)}).",
            "invalid_image",
        ) from error
    # The header gives the size: refuse a decompression bomb before decoding its pixels.
    check_frame_size(image.width, image.height, max_pixels, "image")
    return image


def decode_image(data: bytes, max_pixels: int) -> Image.Image:
    return read_image(open_image(data, max_pixels))


def read_image(image: Image.Image) -> Image.Image:
    try:
        image.load()
        return to_rgb(ImageOps.exif_transpose(image))
    except Exception as error:
        # Truncated or corrupt pixel data; Pillow raises OSError, SyntaxError, ValueError...
        raise MediaError(f"the image could not be decoded ({error}).", "invalid_image") from error


def to_rgb(image: Image.Image) -> Image.Image:
    """RGB for every mode: alpha on white, palette, CMYK, 1-bit and 16-bit grayscale."""
    if image.mode == "RGB":
        return image
    if image.mode in _HIGH_DEPTH_GRAYSCALE:
        # Pillow's conversion to 8 bits clips instead of scaling: 16-bit images turn white.
        levels = np.asarray(image).astype(np.float32) / 257.0
        return Image.fromarray(np.clip(levels, 0, 255).astype(np.uint8)).convert("RGB")
    if image.mode == "F":
        return Image.fromarray(np.clip(np.asarray(image), 0, 255).astype(np.uint8)).convert("RGB")
    if image.mode in ("RGBA", "LA", "PA", "La", "RGBa") or "transparency" in image.info:
        rgba = image.convert("RGBA")
        canvas = Image.new("RGBA", rgba.size, (*BACKGROUND, 255))
        return Image.alpha_composite(canvas, rgba).convert("RGB")
    return image.convert("RGB")
