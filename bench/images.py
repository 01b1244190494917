"""Reading images from disk into the array layout every codec receives."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError


class ImageReadError(Exception):
    """An image file cannot be read as 8-bit RGB; the message names the file and the reason."""


def load_rgb(path: str | Path, data: bytes | None = None) -> np.ndarray:
    """Read an image as an ``(H, W, 3)`` ``uint8`` RGB array.

    ``data``: the file's bytes, read instead of ``path`` (which then only names it in errors).

    Greyscale and palette images are expanded to RGB. Images with an alpha channel or more than
    8 bits per sample (16-bit greyscale, and 16-bit RGB, which Pillow would silently read as
    8-bit) raise :class:`ImageReadError` (a codec comparison on silently converted data is not
    honest).
    """
    path = Path(path)
    try:
        with Image.open(path if data is None else io.BytesIO(data)) as im:
            raw_modes = {str(getattr(tile, "args", None) or tile[3]) for tile in im.tile}
            if any(";16" in raw or ";48" in raw or ";64" in raw for raw in raw_modes):
                raise ImageReadError(
                    f"{path}: 16-bit samples ({im.format} {', '.join(sorted(raw_modes))}); "
                    "convert it to 8-bit RGB first"
                )
            im.load()
            mode = im.mode
            if mode in ("RGBA", "LA", "PA") or "transparency" in im.info:
                raise ImageReadError(f"{path}: has an alpha channel ({mode}); remove it first")
            if mode in ("I", "I;16", "I;16B", "I;16L", "F") or mode.startswith("I;"):
                raise ImageReadError(f"{path}: {mode} samples are not 8-bit")
            rgb = im.convert("RGB") if mode != "RGB" else im
            array = np.asarray(rgb, dtype=np.uint8)
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise ImageReadError(f"{path}: cannot read image ({exc})") from None
    return np.ascontiguousarray(array)


def save_png(path: str | Path, image: np.ndarray) -> None:
    """Write an ``(H, W, 3)`` ``uint8`` array losslessly as PNG."""
    Image.fromarray(image, "RGB").save(path, format="PNG")
