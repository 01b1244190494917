"""Where an element is reconstructed inside its current interval of the latent residual
``y - mu``: the conditional mean of the Gaussian prior (stable in the tails), of a Laplacian with
the same variance (DZQ), or the midpoint. Values only move pixels, never how a stream parses."""

from __future__ import annotations

import math

import numpy as np

_SQRT2 = math.sqrt(2.0)
_INV_SQRT2PI = 1.0 / math.sqrt(2.0 * math.pi)


def gaussian_interval_mean(a: np.ndarray, b: np.ndarray, sigma: np.ndarray) -> np.ndarray:
    """``E[X | a < X < b]`` for ``X ~ N(0, sigma^2)``, stable in the tails (``b`` may be inf)."""
    from scipy.special import erfcx, ndtr

    a = np.asarray(a, np.float64)
    b = np.asarray(b, np.float64)
    sigma = np.broadcast_to(np.asarray(sigma, np.float64), a.shape)
    flip = b <= 0
    lo = np.where(flip, -b, a) / sigma
    hi = np.where(flip, -a, b) / sigma
    out = np.empty_like(lo)
    tail = lo >= 0
    # both bounds on the positive side: scale numerator and denominator by exp(lo^2 / 2)
    lt, ht = lo[tail], hi[tail]
    with np.errstate(over="ignore", invalid="ignore"):
        decay = np.exp(-0.5 * (ht - lt) * (ht + lt))
        decay = np.where(np.isfinite(ht), decay, 0.0)
        num = _INV_SQRT2PI * (1.0 - decay)
        den = 0.5 * (erfcx(lt / _SQRT2) - decay * np.where(np.isfinite(ht), erfcx(ht / _SQRT2), 0))
        out[tail] = num / den
    lm, hm = lo[~tail], hi[~tail]
    num = _INV_SQRT2PI * (np.exp(-0.5 * lm * lm) - np.exp(-0.5 * hm * hm))
    den = ndtr(hm) - ndtr(lm)
    out[~tail] = num / den
    out = np.clip(np.nan_to_num(out * sigma, nan=0.0), np.where(flip, -b, a), np.where(flip, -a, b))
    return np.where(flip, -out, out)


def _laplace_one_sided(a: np.ndarray, w: np.ndarray, lam: np.ndarray) -> np.ndarray:
    """Centroid of ``lam * exp(-lam x)`` restricted to ``[a, a + w]``, ``a >= 0`` (``w`` may be
    inf): ``a + 1/lam - w / (exp(lam w) - 1)`` (memoryless, independent of ``a``)."""
    x = lam * w
    with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
        tail = 1.0 / lam - w / np.expm1(x)
        series = w * (0.5 - x / 12.0)
    off = np.where(x < 1e-4, series, np.where(np.isfinite(x), tail, 1.0 / lam))
    return a + off


def laplace_interval_mean(a: np.ndarray, b: np.ndarray, lam: np.ndarray) -> np.ndarray:
    """``E[X | a < X < b]`` for a Laplacian ``X`` with density ``lam/2 * exp(-lam |x|)``."""
    a = np.asarray(a, np.float64)
    b = np.asarray(b, np.float64)
    lam = np.broadcast_to(np.asarray(lam, np.float64), a.shape)
    flip = b <= 0
    lo = np.where(flip, -b, a)
    hi = np.where(flip, -a, b)
    pos = _laplace_one_sided(np.maximum(lo, 0.0), hi - np.maximum(lo, 0.0), lam)
    # an interval around 0: mix the two one-sided centroids by their masses
    with np.errstate(over="ignore", invalid="ignore"):
        m_pos = -np.expm1(-lam * hi)
        m_neg = -np.expm1(lam * np.minimum(lo, 0.0))
        neg = -_laplace_one_sided(np.zeros_like(lo), -np.minimum(lo, 0.0), lam)
        mixed = (m_pos * pos + m_neg * neg) / (m_pos + m_neg)
    out = np.where(lo >= 0, pos, np.nan_to_num(mixed, nan=0.0))
    out = np.clip(out, lo, hi)
    return np.where(flip, -out, out)


RECONSTRUCTIONS = ("mean", "midpoint", "laplace")


def interval_reconstruction(
    mode: str, lo: np.ndarray, hi: np.ndarray, sigma: np.ndarray
) -> np.ndarray:
    """Reconstruction of ``y - mu`` known to lie in the fine bins ``lo..hi`` (interval
    ``[lo - 1/2, hi + 1/2]``) for a prior scale ``sigma``.

    ``mean``: conditional mean of the Gaussian prior ``N(0, sigma^2)`` over the interval;
    ``midpoint``: the interval's midpoint; ``laplace``: conditional mean of the Laplacian with
    the same variance (``lambda = sqrt(2) / sigma``), used by DZQ.
    """
    a = np.asarray(lo, np.float64) - 0.5
    b = np.asarray(hi, np.float64) + 0.5
    if mode == "mean":
        return gaussian_interval_mean(a, b, sigma)
    if mode == "midpoint":
        return 0.5 * (a + b)
    if mode == "laplace":
        return laplace_interval_mean(a, b, _SQRT2 / np.asarray(sigma, np.float64))
    raise ValueError(f"unknown reconstruction {mode!r} (choose from {RECONSTRUCTIONS})")
