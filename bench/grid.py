"""Target rates: the bpp grid a run cuts at, and the byte budget of each point."""

from __future__ import annotations

import math
from collections.abc import Sequence

#: 0.1, 0.2, ..., 2.0 bits per pixel.
DEFAULT_BPP_GRID: tuple[float, ...] = tuple(round(0.1 * i, 10) for i in range(1, 21))


def parse_bpp_grid(text: str) -> tuple[float, ...]:
    """Parse ``"0.25,0.5,1"`` or ``"start:stop:step"`` (stop included) into sorted bpp values.

    Raises ``ValueError`` for empty, non-positive or non-finite values.
    """
    text = text.strip()
    if ":" in text:
        parts = text.split(":")
        if len(parts) != 3:
            raise ValueError(f"bpp range must be start:stop:step, got {text!r}")
        start, stop, step = (float(p) for p in parts)
        if step <= 0 or stop < start:
            raise ValueError(f"bpp range {text!r} is empty")
        count = int(math.floor((stop - start) / step + 1e-9)) + 1
        values = [round(start + i * step, 10) for i in range(count)]
    else:
        values = [float(p) for p in text.split(",") if p.strip()]
    return validate_grid(values)


def validate_grid(values: Sequence[float]) -> tuple[float, ...]:
    """Return the values sorted and de-duplicated; ``ValueError`` if any is not positive."""
    if not values:
        raise ValueError("the bpp grid is empty")
    for v in values:
        if not math.isfinite(v) or v <= 0:
            raise ValueError(f"bpp values must be positive and finite, got {v}")
    return tuple(sorted(set(values)))


def budget_bytes(bpp: float, height: int, width: int) -> int:
    """Bytes handed to the decoder at ``bpp``: ``floor(bpp * H * W / 8)``.

    A tiny relative epsilon keeps values such as 0.3 * 768 * 512 / 8 from flooring one byte low
    because of binary floating point.
    """
    exact = bpp * height * width / 8.0
    return int(math.floor(exact * (1 + 1e-12)))
