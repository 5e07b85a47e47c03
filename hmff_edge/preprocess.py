"""The one image preprocessing shared by training, calibration, verification and serving.

TF-free (Pillow + numpy) so that the device runtime computes exactly the pixels the model
was calibrated and verified on. Resizing is Pillow's bilinear filter on the RGB image.
"""

from __future__ import annotations

import io
import os
from collections.abc import Sequence

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from hmff_edge.errors import DataError

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".ppm", ".tif", ".tiff")

# Refuse decompression bombs early: an image larger than this many pixels is never a
# classifier input (Pillow's own default warns at ~89M and errors at twice that).
MAX_IMAGE_PIXELS = 64_000_000
Image.MAX_IMAGE_PIXELS = MAX_IMAGE_PIXELS


def load_rgb(
    source: str | os.PathLike | bytes,
    size: int | tuple[int, int] | None = None,
    *,
    max_pixels: int = MAX_IMAGE_PIXELS,
) -> np.ndarray:
    """Decode an image (path or encoded bytes) to a ``uint8`` HxWx3 RGB array.

    The EXIF orientation tag is applied first (phone photos are stored sideways with a tag
    saying so). 16-bit and 32-bit integer images are rescaled to 8 bits (``/257`` maps
    0..65535 onto 0..255), float images are read as 0..1. Grayscale, palette, CMYK and RGBA
    images are converted to RGB (alpha is composited on black, the same as dropping it).
    ``size`` is ``(height, width)`` or one int for square. Raises :class:`DataError` naming
    the source when it cannot be decoded.
    """
    label = "<bytes>" if isinstance(source, bytes | bytearray) else str(source)
    try:
        fh = io.BytesIO(source) if isinstance(source, bytes | bytearray) else open(source, "rb")  # noqa: SIM115
        with fh, Image.open(fh) as img:
            w, h = img.size
            if w * h > max_pixels:
                raise DataError(
                    f"image {label} has {w}x{h} pixels, more than the {max_pixels} allowed"
                )
            img = to_rgb8(ImageOps.exif_transpose(img))
            return resize_pixels(img, size)
    except DataError:
        raise
    except Image.DecompressionBombError as exc:
        raise DataError(f"image {label} is too large to decode safely: {exc}") from exc
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as exc:
        raise DataError(f"cannot decode image {label}: {exc}") from exc


# Modes whose samples exceed 8 bits; Pillow's own convert("RGB") clips them to 255.
_WIDE_INT_MODES = ("I", "I;16", "I;16L", "I;16B", "I;16N")


def to_rgb8(img: Image.Image) -> Image.Image:
    """Any Pillow image as 8-bit RGB, high-bit-depth samples rescaled instead of clipped."""
    if img.mode in _WIDE_INT_MODES:
        a = np.asarray(img).astype(np.float32)
        top = 65535.0 if img.mode.startswith("I;16") or a.max(initial=0) <= 65535 else 2**32 - 1
        img = Image.fromarray(np.clip(np.rint(a * (255.0 / top)), 0, 255).astype(np.uint8))
    elif img.mode == "F":
        a = np.asarray(img, np.float32)
        img = Image.fromarray(np.clip(np.rint(a * 255.0), 0, 255).astype(np.uint8))
    return img.convert("RGB")


def resize_pixels(img: Image.Image | np.ndarray, size: int | tuple[int, int] | None) -> np.ndarray:
    """An RGB image (Pillow or uint8 HxWx3) at ``size`` with Pillow's bilinear filter, as the
    uint8 array every stage (training, calibration, serving) feeds the model."""
    if isinstance(img, np.ndarray):
        if size is None or img.shape[:2] == ((size, size) if isinstance(size, int) else tuple(size)):
            return np.asarray(img, np.uint8)
        img = Image.fromarray(img).convert("RGB")
    if size is not None:
        hh, ww = (size, size) if isinstance(size, int) else size
        if (img.height, img.width) != (hh, ww):
            img = img.resize((ww, hh), Image.Resampling.BILINEAR)
    return np.asarray(img, dtype=np.uint8)


def normalize(
    pixels: np.ndarray, mean: Sequence[float], std: Sequence[float]
) -> np.ndarray:
    """``x = (pixel / 255 - mean) / std`` per channel, as float32 (any leading dims)."""
    x = pixels.astype(np.float32) / np.float32(255.0)
    return (x - np.asarray(mean, np.float32)) / np.asarray(std, np.float32)


def quantize(x: np.ndarray, scale: float, zero_point: int, dtype: str) -> np.ndarray:
    """Float tensor to the integer input of a full-integer model."""
    info = np.iinfo(np.dtype(dtype))
    q = np.round(x / np.float32(scale)) + zero_point
    return np.clip(q, info.min, info.max).astype(dtype)


def dequantize(q: np.ndarray, scale: float, zero_point: int) -> np.ndarray:
    return (q.astype(np.float32) - np.float32(zero_point)) * np.float32(scale)


def list_images(folder: str | os.PathLike) -> list[str]:
    """All files with an image extension below ``folder``, sorted for determinism."""
    out = []
    for root, _dirs, files in os.walk(folder):
        out.extend(os.path.join(root, f) for f in files if f.lower().endswith(IMAGE_EXTENSIONS))
    return sorted(out)
