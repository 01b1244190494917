"""CDF 9/7 wavelet for SPIHT: lifting, whole-sample symmetric extension, non-expansive.

The biorthogonal Cohen-Daubechies-Feauveau 9/7 pair (the filters of the SPIHT paper, of JPEG 2000's
irreversible path, and PyWavelets' ``bior4.4``), computed by its four lifting steps (Daubechies
and Sweldens) with the JPEG 2000 constants, in numba.

Boundaries
    Whole-sample symmetric extension (``x[-i] = x[i]``, ``x[N-1+i] = x[N-1-i]``) applied inside
    every lifting step, as in JPEG 2000 Part 1 Annex F. The transform is non-expansive for every
    length: a signal of ``N`` samples gives ``ceil(N/2)`` low-pass (even samples) and
    ``floor(N/2)`` high-pass (odd samples) coefficients, odd ``N`` included. A length-1 signal is
    a single low-pass sample (multiplied by the low-pass DC gain, so that the pyramid's gains stay
    uniform).

Normalisation
    After lifting, the low band is scaled to DC gain sqrt(2) and the high band to Nyquist gain
    sqrt(2) (the normalisation of ``bior4.4``: analysis filters with norm close to 1), so the
    transform is close to orthonormal, which is what SPIHT's bit-plane ordering assumes. The
    residual non-orthonormality is measured by :func:`band_weights` (synthesis norms between 0.97
    and 1.09 for 5 levels); the codec can compensate it (``weighted=True``, off by default: it
    changed PSNR by at most 0.02 dB on Kodak).

Layout
    :func:`forward` returns the Mallat layout of the actual (unpadded) band sizes: after level
    ``l`` the current low band of ``h x w`` samples is replaced by LL ``ceil(h/2) x ceil(w/2)``
    (top left), HL (horizontal high-pass) top right, LH bottom left, HH bottom right.
    :func:`band_rects` lists these rectangles. SPIHT's trees need a dyadic layout; the codec copies
    the bands into a zero-padded dyadic array (see :mod:`plugins.spiht.passes`).
"""

from __future__ import annotations

import math
from functools import cache

import numba as nb
import numpy as np

# JPEG 2000 Part 1 (Annex F) lifting constants of the CDF 9/7 pair.
ALPHA = -1.586134342059924
BETA = -0.052980118572961
GAMMA = 0.882911075530934
DELTA = 0.443506852043971
K = 1.230174104914001
#: Scale factors giving DC gain sqrt(2) (low) and Nyquist gain sqrt(2) (high). Unscaled lifting
#: has DC gain K and Nyquist gain 2/K.
SCALE_LOW = math.sqrt(2.0) / K
SCALE_HIGH = K / math.sqrt(2.0)


@nb.njit(cache=True)
def _lift_step(x, n, parity, c):
    """``x[i] += c * (x[i-1] + x[i+1])`` for ``i = parity, parity+2, ...`` with WSS extension."""
    for i in range(parity, n, 2):
        left = x[i - 1] if i > 0 else x[1]
        right = x[i + 1] if i + 1 < n else x[i - 1]
        x[i] += c * (left + right)


@nb.njit(cache=True)
def _fwd_1d(x, n, tmp):
    """Forward 9/7 on ``x[:n]`` in place; result deinterleaved: low half then high half."""
    if n == 1:
        x[0] *= SCALE_LOW * K
        return
    _lift_step(x, n, 1, ALPHA)
    _lift_step(x, n, 0, BETA)
    _lift_step(x, n, 1, GAMMA)
    _lift_step(x, n, 0, DELTA)
    nl = (n + 1) // 2
    for k in range(nl):
        tmp[k] = x[2 * k] * SCALE_LOW
    for k in range(n // 2):
        tmp[nl + k] = x[2 * k + 1] * SCALE_HIGH
    for i in range(n):
        x[i] = tmp[i]


@nb.njit(cache=True)
def _inv_1d(x, n, tmp):
    """Inverse of :func:`_fwd_1d` on ``x[:n]`` in place."""
    if n == 1:
        x[0] /= SCALE_LOW * K
        return
    nl = (n + 1) // 2
    for k in range(nl):
        tmp[2 * k] = x[k] / SCALE_LOW
    for k in range(n // 2):
        tmp[2 * k + 1] = x[nl + k] / SCALE_HIGH
    for i in range(n):
        x[i] = tmp[i]
    _lift_step(x, n, 0, -DELTA)
    _lift_step(x, n, 1, -GAMMA)
    _lift_step(x, n, 0, -BETA)
    _lift_step(x, n, 1, -ALPHA)


@nb.njit(cache=True)
def _vstep(a, h, w, parity, c):
    """Vertical lifting step on the top-left ``h x w`` block, row by row (cache friendly)."""
    for i in range(parity, h, 2):
        up = i - 1 if i > 0 else 1
        down = i + 1 if i + 1 < h else i - 1
        for j in range(w):
            a[i, j] += c * (a[up, j] + a[down, j])


@nb.njit(cache=True)
def _fwd_cols(a, h, w, tmp2):
    if h == 1:
        for j in range(w):
            a[0, j] *= SCALE_LOW * K
        return
    _vstep(a, h, w, 1, ALPHA)
    _vstep(a, h, w, 0, BETA)
    _vstep(a, h, w, 1, GAMMA)
    _vstep(a, h, w, 0, DELTA)
    hl = (h + 1) // 2
    for k in range(hl):
        for j in range(w):
            tmp2[k, j] = a[2 * k, j] * SCALE_LOW
    for k in range(h // 2):
        for j in range(w):
            tmp2[hl + k, j] = a[2 * k + 1, j] * SCALE_HIGH
    for i in range(h):
        for j in range(w):
            a[i, j] = tmp2[i, j]


@nb.njit(cache=True)
def _inv_cols(a, h, w, tmp2):
    if h == 1:
        for j in range(w):
            a[0, j] /= SCALE_LOW * K
        return
    hl = (h + 1) // 2
    for k in range(hl):
        for j in range(w):
            tmp2[2 * k, j] = a[k, j] / SCALE_LOW
    for k in range(h // 2):
        for j in range(w):
            tmp2[2 * k + 1, j] = a[hl + k, j] / SCALE_HIGH
    for i in range(h):
        for j in range(w):
            a[i, j] = tmp2[i, j]
    _vstep(a, h, w, 0, -DELTA)
    _vstep(a, h, w, 1, -GAMMA)
    _vstep(a, h, w, 0, -BETA)
    _vstep(a, h, w, 1, -ALPHA)


@nb.njit(cache=True)
def forward(image, levels):
    """``levels``-level 2-D forward transform of a float64 ``(H, W)`` array (a new array)."""
    a = image.copy()
    height, width = a.shape
    tmp = np.empty(max(height, width), np.float64)
    tmp2 = np.empty((height, width), np.float64)
    h, w = height, width
    for _ in range(levels):
        for i in range(h):
            _fwd_1d(a[i], w, tmp)
        _fwd_cols(a, h, w, tmp2)
        h, w = (h + 1) // 2, (w + 1) // 2
    return a


@nb.njit(cache=True)
def inverse(coeffs, levels):
    """Inverse of :func:`forward` (a new array)."""
    a = coeffs.copy()
    height, width = a.shape
    tmp = np.empty(max(height, width), np.float64)
    tmp2 = np.empty((height, width), np.float64)
    hs = np.empty(levels + 1, np.int64)
    ws = np.empty(levels + 1, np.int64)
    hs[0], ws[0] = height, width
    for k in range(levels):
        hs[k + 1], ws[k + 1] = (hs[k] + 1) // 2, (ws[k] + 1) // 2
    for k in range(levels - 1, -1, -1):
        h, w = hs[k], ws[k]
        _inv_cols(a, h, w, tmp2)
        for i in range(h):
            _inv_1d(a[i], w, tmp)
    return a


def band_rects(height: int, width: int, levels: int) -> list[tuple[int, str, int, int, int, int]]:
    """The bands of :func:`forward`'s layout: ``(level, kind, top, left, rows, cols)``.

    ``level`` 1 is the finest; ``kind`` is ``"LL"`` (only at ``level == levels``, or level 0
    when ``levels == 0``), ``"HL"``, ``"LH"`` or ``"HH"``. Bands may be empty (0 rows or cols).
    """
    rects = []
    h, w = height, width
    for level in range(1, levels + 1):
        hl, wl = (h + 1) // 2, (w + 1) // 2
        rects += [
            (level, "HL", 0, wl, hl, w - wl),
            (level, "LH", hl, 0, h - hl, wl),
            (level, "HH", hl, wl, h - hl, w - wl),
        ]
        h, w = hl, wl
    rects.append((levels, "LL", 0, 0, h, w))
    return rects


@cache
def synthesis_norms_1d(levels: int) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """L2 norms of the 1-D synthesis basis functions: ``(low[l], high[l])`` for ``l = 0..levels``.

    ``low[l]`` is the low-pass function after ``l`` levels (``low[0] = 1``), ``high[l]`` the
    high-pass function of level ``l`` (``high[0]`` unused, 1). Measured on an impulse far from the
    boundaries.
    """
    n = 1 << (levels + 6)
    low, high = [1.0], [1.0]
    for level in range(1, levels + 1):
        for kind in ("low", "high"):
            coeffs = np.zeros(n)
            size = n >> level
            coeffs[size // 2 + (size if kind == "high" else 0)] = 1.0
            signal = _inverse_1d(coeffs, level)
            (low if kind == "low" else high).append(float(np.sqrt(np.sum(signal * signal))))
    return tuple(low), tuple(high)


def _inverse_1d(coeffs: np.ndarray, levels: int) -> np.ndarray:
    """``levels``-level 1-D inverse of a signal (helper of :func:`synthesis_norms_1d`)."""
    a = coeffs.astype(np.float64).copy()
    n = a.shape[0]
    tmp = np.empty(n)
    sizes = [n]
    for _ in range(levels):
        sizes.append((sizes[-1] + 1) // 2)
    for k in range(levels - 1, -1, -1):
        _inv_1d(a, sizes[k], tmp)
    return a


def band_weights(levels: int) -> dict[tuple[int, str], float]:
    """Synthesis-basis L2 norm of every 2-D band ``(level, kind)`` (the MSE weight of a unit
    error in that band's coefficients), from the separable 1-D norms."""
    low, high = synthesis_norms_1d(levels)
    weights = {}
    for level in range(1, levels + 1):
        weights[(level, "HL")] = low[level] * high[level]
        weights[(level, "LH")] = high[level] * low[level]
        weights[(level, "HH")] = high[level] * high[level]
    weights[(levels, "LL")] = low[levels] * low[levels]
    return weights
