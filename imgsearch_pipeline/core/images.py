"""Decoding, validating and normalising post images."""

import io
import warnings
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

DEFAULT_MAX_PIXELS = 40_000_000  # ~6300 x 6300; larger is treated as a decompression bomb

CONTENT_TYPES = {
    "JPEG": ("image/jpeg", ".jpg"),
    "PNG": ("image/png", ".png"),
    "GIF": ("image/gif", ".gif"),
    "WEBP": ("image/webp", ".webp"),
    "BMP": ("image/bmp", ".bmp"),
    "TIFF": ("image/tiff", ".tif"),
    "MPO": ("image/jpeg", ".jpg"),
}


class ImageRejected(ValueError):
    """An image that cannot be used; ``reason`` is short and fit for a report."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True)
class ImageInfo:
    format: str
    content_type: str
    extension: str
    width: int
    height: int


def _open(data: bytes | None, max_pixels: int) -> Image.Image:
    if data is None:
        raise ImageRejected("missing image")
    if len(data) == 0:
        raise ImageRejected("empty image (0 bytes)")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data))
    except UnidentifiedImageError:
        raise ImageRejected("not an image: unrecognised format") from None
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise ImageRejected("too many pixels (decompression bomb)") from None
    except Exception as exc:  # Pillow raises many kinds on hostile headers
        raise ImageRejected(f"unreadable image header: {exc}") from None
    width, height = image.size
    if width * height > max_pixels:
        raise ImageRejected(f"too many pixels: {width}x{height} > {max_pixels}")
    if image.format not in CONTENT_TYPES:
        raise ImageRejected(f"unsupported format: {image.format}")
    return image


def _decode(image: Image.Image) -> Image.Image:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image.load()
    except Exception as exc:
        raise ImageRejected(f"corrupt image data: {exc}") from None
    return image


def inspect_image(data: bytes | None, max_pixels: int = DEFAULT_MAX_PIXELS) -> ImageInfo:
    """Fully decode ``data`` to prove it is usable; raise ImageRejected with a reason if not."""
    image = _decode(_open(data, max_pixels))
    content_type, extension = CONTENT_TYPES[image.format]
    width, height = ImageOps.exif_transpose(image).size
    return ImageInfo(image.format, content_type, extension, width, height)


def load_rgb(data: bytes | None, max_pixels: int = DEFAULT_MAX_PIXELS) -> Image.Image:
    """Decode to an upright 8-bit RGB image (first frame, EXIF rotation applied)."""
    return to_rgb(_decode(_open(data, max_pixels)))


def to_rgb(image: Image.Image) -> Image.Image:
    """Normalise any Pillow mode to RGB: alpha over white, 16-bit scaled, CMYK converted."""
    image = ImageOps.exif_transpose(image)
    mode = image.mode
    if mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        array = np.asarray(image, dtype=np.float64)
        top = 65535.0 if mode.startswith("I;16") or array.max() > 255 else 255.0
        array = np.clip(array / top * 255.0, 0, 255).astype(np.uint8)
        image = Image.fromarray(array, mode="L")
    if mode == "P":
        image = image.convert("RGBA")
    if image.mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        image = Image.alpha_composite(background, rgba)
    return image.convert("RGB")
