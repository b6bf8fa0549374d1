"""Decoding, validating and normalising post images.

Every function here is safe on hostile bytes: anything unusable raises ``ImageRejected``
with a short reason, never another exception, so one bad row cannot stop a run.
"""

import contextlib
import io
import warnings
from dataclasses import dataclass

import numpy as np
from PIL import Image, UnidentifiedImageError

DEFAULT_MAX_PIXELS = 40_000_000  # ~6300 x 6300; larger is treated as a decompression bomb
DEFAULT_MIN_SIDE = 8  # tracking pixels and spacers carry nothing to search for

# Our own limit (``max_pixels``) is checked on every header, so Pillow's warning for
# images above its default limit says nothing new. Pillow's hard error (twice its limit)
# still applies and is reported as a decompression bomb. The filter is set once here:
# warnings.catch_warnings() is not thread-safe and images are checked on a thread pool.
warnings.filterwarnings("ignore", category=Image.DecompressionBombWarning)

CONTENT_TYPES = {
    "JPEG": ("image/jpeg", ".jpg"),
    "PNG": ("image/png", ".png"),
    "GIF": ("image/gif", ".gif"),
    "WEBP": ("image/webp", ".webp"),
    "BMP": ("image/bmp", ".bmp"),
    "TIFF": ("image/tiff", ".tif"),
    "MPO": ("image/jpeg", ".jpg"),
}

# EXIF orientation -> the transpose that makes the picture upright (as ImageOps.exif_transpose).
_TRANSPOSE = {
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_270,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}
_EXIF_ORIENTATION = 0x0112
_SIXTEEN_BIT = ("I;16", "I;16B", "I;16L", "I;16N")


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
    width: int  # upright, i.e. after the EXIF rotation
    height: int


def _open(data: bytes | None, max_pixels: int) -> Image.Image:
    """Read the header only: format and size are checked before any pixel is decoded."""
    if data is None:
        raise ImageRejected("missing image")
    if len(data) == 0:
        raise ImageRejected("empty image (0 bytes)")
    if not data.strip(b"\x00"):
        raise ImageRejected(f"not an image: {len(data)} null bytes")
    try:
        image = Image.open(io.BytesIO(data))
    except UnidentifiedImageError:
        raise ImageRejected("not an image: unrecognised format") from None
    except Image.DecompressionBombError:
        raise ImageRejected("too many pixels (decompression bomb)") from None
    except Exception as exc:  # Pillow raises many kinds on hostile headers
        raise ImageRejected(f"unreadable image header: {_short(exc)}") from None
    width, height = image.size
    if width * height > max_pixels:
        raise ImageRejected(f"too many pixels: {width}x{height} > {max_pixels:,} (decompression bomb)")
    if image.format not in CONTENT_TYPES:
        # Checked before load(): some plugins (EPS) would run external programs to decode.
        raise ImageRejected(f"unsupported format: {image.format}")
    return image


def _decode(image: Image.Image) -> Image.Image:
    try:
        image.load()
    except Exception as exc:
        raise ImageRejected(f"corrupt image data: {_short(exc)}") from None
    return image


def _short(exc: BaseException) -> str:
    text = str(exc) or type(exc).__name__
    return text if len(text) <= 160 else text[:157] + "..."


def orientation(image: Image.Image) -> int:
    """The EXIF orientation (1-8); 1 when absent or unreadable (a broken EXIF is ignored)."""
    try:
        value = image.getexif().get(_EXIF_ORIENTATION, 1)
    except Exception:
        return 1
    return value if isinstance(value, int) and value in range(1, 9) else 1


def upright_size(image: Image.Image) -> tuple[int, int]:
    """(width, height) after the EXIF rotation, without transposing any pixels."""
    width, height = image.size
    return (height, width) if orientation(image) in (5, 6, 7, 8) else (width, height)


def inspect_image(
    data: bytes | None, max_pixels: int = DEFAULT_MAX_PIXELS, min_side: int = DEFAULT_MIN_SIDE
) -> ImageInfo:
    """Fully decode ``data`` to prove it is usable; raise ImageRejected with a reason if not."""
    image = _decode(_open(data, max_pixels))
    if min(image.size) < min_side:
        raise ImageRejected(f"too small: {image.width}x{image.height} (min side {min_side} px)")
    content_type, extension = CONTENT_TYPES[image.format]
    width, height = upright_size(image)
    return ImageInfo(image.format, content_type, extension, width, height)


def load_rgb(data: bytes | None, max_pixels: int = DEFAULT_MAX_PIXELS,
             fit: int | None = None) -> Image.Image:
    """Decode to an upright 8-bit RGB image (first frame, EXIF rotation applied).

    With ``fit``, the image is only decoded as large as needed to keep both sides >= ``fit``
    (the size is checked on the header first): JPEG decodes at 1/2, 1/4 or 1/8 scale in the
    decoder itself (draft mode), other formats are box-reduced by an integer factor at once."""
    image = _open(data, max_pixels)
    if fit is not None:
        _draft(image, fit)
    image = _decode(image)
    if fit is not None:
        image = _reduce(image, fit)
    try:
        return to_rgb(image)
    except Exception as exc:
        raise ImageRejected(f"cannot convert {image.mode} image to RGB: {_short(exc)}") from None


def decode_cost(data: bytes, fit: int) -> int:
    """Pixels that ``load_rgb(data, fit=fit)`` will decode, from the header alone (JPEG
    decodes at up to 1/8 scale); 0 when the header is unreadable (rejected cheaply later)."""
    try:
        image = Image.open(io.BytesIO(data))
        width, height = image.size
    except Exception:
        return 0
    scale = 1
    if image.format == "JPEG":
        while scale < 8 and min(width, height) // (scale * 2) >= fit:
            scale *= 2
    return (width // scale) * (height // scale)


def _draft(image: Image.Image, fit: int) -> None:
    if image.format == "JPEG" and image.mode in ("RGB", "L", "CMYK"):
        with contextlib.suppress(Exception):  # a draft is an optimisation only
            image.draft(image.mode, (fit, fit))


def _reduce(image: Image.Image, fit: int) -> Image.Image:
    factor = min(image.width // fit, image.height // fit)
    if factor < 2 or image.mode not in ("RGB", "RGBA", "L", "LA", "CMYK", "I;16", "I", "F"):
        return image
    try:
        return image.reduce(factor)
    except Exception:  # keep the full image: correct, only slower
        return image


def _grey_16_or_32_bit_to_8_bit(image: Image.Image) -> Image.Image:
    """16-bit and 32-bit grey scaled to 8 bits by the range its mode can hold."""
    array = np.asarray(image, dtype=np.float64)
    if image.mode in _SIXTEEN_BIT:
        top = 65535.0
    elif image.mode == "F" and array.size and np.nanmax(array) <= 1.0:
        top = 1.0  # float images in [0, 1]
    else:
        peak = float(np.nanmax(array)) if array.size else 0.0
        top = 255.0 if peak <= 255 else 65535.0 if peak <= 65535 else peak
    array = np.nan_to_num(array / top * 255.0, nan=0.0)
    return Image.fromarray(np.clip(array, 0, 255).astype(np.uint8), mode="L")


def to_rgb(image: Image.Image) -> Image.Image:
    """Normalise any image to upright 8-bit RGB: first frame, EXIF rotation, alpha over
    white, 16-bit scaled, palette and CMYK converted."""
    if image.tell() != 0:
        image.seek(0)
    method = _TRANSPOSE.get(orientation(image))
    if method is not None:
        image = image.transpose(method)
    if image.mode in _SIXTEEN_BIT or image.mode in ("I", "F"):
        image = _grey_16_or_32_bit_to_8_bit(image)
    if image.mode == "P":
        image = image.convert("RGBA")
    if image.mode in ("La", "RGBa"):  # premultiplied alpha: un-premultiply first
        image = image.convert("RGBA" if image.mode == "RGBa" else "LA")
    if image.mode in ("RGBA", "LA", "PA"):
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        image = Image.alpha_composite(background, rgba)
    return image.convert("RGB")
