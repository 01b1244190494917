"""Colour transform of the SPIHT codec: the JPEG 2000 irreversible colour transform (ICT).

RGB samples are level-shifted by -128 and mapped to Y, Cb, Cr with the ICT of JPEG 2000 Part 1
(Annex G; the BT.601 YCbCr matrix). The decoder applies the inverse matrix, adds 128, rounds half
up and clips to 0..255. A grey image (R = G = B everywhere) is coded as one component, Y = R - 128
(the ICT would give exactly that Y and zero chroma).
"""

from __future__ import annotations

import numba as nb
import numpy as np

#: RGB -> YCbCr (rows Y, Cb, Cr).
ICT = np.array(
    [
        [0.299, 0.587, 0.114],
        [-0.168736, -0.331264, 0.5],
        [0.5, -0.418688, -0.081312],
    ]
)
#: YCbCr -> RGB (rows R, G, B).
ICT_INV = np.array(
    [
        [1.0, 0.0, 1.402],
        [1.0, -0.344136, -0.714136],
        [1.0, 1.772, 0.0],
    ]
)


def is_grey(image: np.ndarray) -> bool:
    r, g, b = image[..., 0], image[..., 1], image[..., 2]
    return bool(np.array_equal(r, g) and np.array_equal(g, b))


@nb.njit(cache=True)
def forward(image, grey):
    """``(H, W, 3)`` uint8 -> ``(ncomp, H, W)`` float64 level-shifted components."""
    h, w, _ = image.shape
    if grey:
        out = np.empty((1, h, w), np.float64)
        for i in range(h):
            for j in range(w):
                out[0, i, j] = np.float64(image[i, j, 0]) - 128.0
        return out
    out = np.empty((3, h, w), np.float64)
    m = ICT
    for i in range(h):
        for j in range(w):
            r = np.float64(image[i, j, 0]) - 128.0
            g = np.float64(image[i, j, 1]) - 128.0
            b = np.float64(image[i, j, 2]) - 128.0
            for c in range(3):
                out[c, i, j] = m[c, 0] * r + m[c, 1] * g + m[c, 2] * b
    return out


@nb.njit(cache=True)
def _to_u8(x):
    v = np.floor(x + 128.5)
    if v < 0.0:
        return np.uint8(0)
    if v > 255.0:
        return np.uint8(255)
    return np.uint8(v)


@nb.njit(cache=True)
def inverse(comps):
    """``(ncomp, H, W)`` float64 components -> ``(H, W, 3)`` uint8 RGB."""
    ncomp, h, w = comps.shape
    out = np.empty((h, w, 3), np.uint8)
    m = ICT_INV
    for i in range(h):
        for j in range(w):
            if ncomp == 1:
                v = _to_u8(comps[0, i, j])
                out[i, j, 0] = v
                out[i, j, 1] = v
                out[i, j, 2] = v
            else:
                y = comps[0, i, j]
                cb = comps[1, i, j]
                cr = comps[2, i, j]
                for c in range(3):
                    out[i, j, c] = _to_u8(m[c, 0] * y + m[c, 1] * cb + m[c, 2] * cr)
    return out
