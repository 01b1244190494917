"""Distortion metrics on 8-bit RGB reconstructions.

All functions take ``(H, W, 3)`` ``uint8`` arrays of the same shape (original first) and compare
them exactly as stored: no rescaling, no colour conversion beyond what is stated.

:class:`ImageScorer` holds what depends on the original alone (its luma and its MS-SSIM
statistics, :class:`bench.ms_ssim.MsSsimReference`) and reuses its buffers, so that scoring the
many reconstructions of one image costs only their own share. The one-shot functions
(:func:`psnr_rgb`, :func:`psnr_y`, :func:`ms_ssim_rgb`) give the same values.

MS-SSIM is the definition pytorch-msssim implements (see :mod:`bench.ms_ssim`); pytorch-msssim
stays the test oracle (tests/test_metrics.py: equal within 1e-6 on real reconstructions).
"""

from __future__ import annotations

import math

import numba as nb
import numpy as np

from bench.ms_ssim import MS_SSIM_MIN_SIDE, PLANE_DTYPE, MsSsimReference, planes_into

#: Full-range BT.601 (JFIF) luma weights of R, G, B.
LUMA_WEIGHTS = (0.299, 0.587, 0.114)


def _check_pair(original: np.ndarray, reconstruction: np.ndarray) -> None:
    if original.shape != reconstruction.shape:
        raise ValueError(f"shape mismatch: {original.shape} vs {reconstruction.shape}")
    if original.dtype != np.uint8 or reconstruction.dtype != np.uint8:
        raise ValueError("metrics are defined on uint8 images")


def _psnr_from_mse(mse: float) -> float:
    return math.inf if mse == 0 else 10.0 * math.log10(255.0**2 / mse)


@nb.njit(cache=True)
def _squared_error_sum_flat(original: np.ndarray, reconstruction: np.ndarray) -> int:
    """Sum of squared differences of two 1-D uint8 arrays, exact (int64)."""
    total = 0
    for k in range(original.shape[0]):
        diff = np.int64(original[k]) - np.int64(reconstruction[k])
        total += diff * diff
    return total


def _squared_error_sum(original: np.ndarray, reconstruction: np.ndarray) -> int:
    """Sum of squared differences of two uint8 arrays of one shape, exact."""
    return _squared_error_sum_flat(original.reshape(-1), reconstruction.reshape(-1))


def psnr_rgb(original: np.ndarray, reconstruction: np.ndarray) -> float:
    """PSNR in dB over all pixels and the three RGB channels (peak 255); ``inf`` if identical.

    The squared-error sum is exact, so the value equals a float64 ``mean(diff**2)``'s.
    """
    _check_pair(original, reconstruction)
    return _psnr_from_mse(_squared_error_sum(original, reconstruction) / original.size)


@nb.njit(cache=True)
def _luma_into(planes: np.ndarray, out: np.ndarray) -> None:
    """``out = (0.299 R + 0.587 G) + 0.114 B`` in float64, IEEE operations in that order, from
    (3, H, W) planes."""
    wr, wg, wb = LUMA_WEIGHTS
    red, green, blue = planes[0], planes[1], planes[2]
    for i in range(out.shape[0]):
        for j in range(out.shape[1]):
            y = wr * np.float64(red[i, j]) + wg * np.float64(green[i, j])
            out[i, j] = y + wb * np.float64(blue[i, j])


def _planes(image: np.ndarray) -> np.ndarray:
    """(H, W, C) uint8 -> (C, H, W) planes (:func:`bench.ms_ssim.planes_into`)."""
    out = np.empty((image.shape[2], *image.shape[:2]), PLANE_DTYPE)
    planes_into(np.ascontiguousarray(image), out)
    return out


def luma(image: np.ndarray) -> np.ndarray:
    """Full-range BT.601 (JFIF) luma ``0.299 R + 0.587 G + 0.114 B`` as float64, range 0..255.

    Bit-identical to evaluating the expression left to right on float64 RGB with numpy.
    """
    out = np.empty(image.shape[:2])
    _luma_into(_planes(image), out)
    return out


@nb.njit(cache=True)
def _luma_squared_errors(original_luma: np.ndarray, planes: np.ndarray, out: np.ndarray) -> None:
    """``out = (original_luma - luma)**2`` elementwise, float64, as numpy computes it, the luma
    that of (3, H, W) planes (as :func:`_luma_into`)."""
    wr, wg, wb = LUMA_WEIGHTS
    red, green, blue = planes[0], planes[1], planes[2]
    for i in range(out.shape[0]):
        for j in range(out.shape[1]):
            y = wr * np.float64(red[i, j]) + wg * np.float64(green[i, j])
            diff = original_luma[i, j] - (y + wb * np.float64(blue[i, j]))
            out[i, j] = diff * diff


def _psnr_luma(original_luma: np.ndarray, planes: np.ndarray, squared: np.ndarray) -> float:
    """PSNR-Y of a reconstruction's (3, H, W) planes, ``squared`` a float64 buffer of the luma's
    shape; ``np.mean`` of the squared errors keeps numpy's summation order (the value of the
    float64 numpy formula)."""
    _luma_squared_errors(original_luma, planes, squared)
    return _psnr_from_mse(float(np.mean(squared)))


def psnr_y(original: np.ndarray, reconstruction: np.ndarray) -> float:
    """PSNR in dB of the full-range BT.601 luma (see :func:`luma`), unrounded."""
    _check_pair(original, reconstruction)
    original_luma = luma(original)
    return _psnr_luma(original_luma, _planes(reconstruction), np.empty_like(original_luma))


class ImageScorer:
    """PSNR-RGB, PSNR-Y and MS-SSIM of reconstructions of one original (H, W, 3) uint8.

    Built once per image; :meth:`scores` then costs only the reconstruction's share (the
    original's luma and MS-SSIM statistics are computed here, once, and the work buffers are
    reused, so one scorer is not for concurrent use). Each reconstruction is converted once to
    planes that PSNR-Y and MS-SSIM both read. MS-SSIM is NaN for images with a side below
    :data:`MS_SSIM_MIN_SIDE`.
    """

    def __init__(self, original: np.ndarray) -> None:
        _check_pair(original, original)
        self.original = original
        self._contiguous = np.ascontiguousarray(original)
        original_planes = _planes(self._contiguous)
        self._luma = np.empty(original.shape[:2])
        _luma_into(original_planes, self._luma)
        self._squared = np.empty_like(self._luma)
        self._planes = np.empty_like(original_planes)
        self._ms_ssim = (
            MsSsimReference(original_planes)
            if min(original.shape[:2]) >= MS_SSIM_MIN_SIDE
            else None
        )

    def _ms_ssim_of(self, planes: np.ndarray) -> float:
        return math.nan if self._ms_ssim is None else self._ms_ssim.score(planes)

    def ms_ssim(self, reconstruction: np.ndarray) -> float:
        """MS-SSIM in [0, 1] (see :mod:`bench.ms_ssim`), NaN below the minimum side."""
        _check_pair(self.original, reconstruction)
        planes_into(np.ascontiguousarray(reconstruction), self._planes)
        return self._ms_ssim_of(self._planes)

    def scores(self, reconstruction: np.ndarray) -> dict[str, float]:
        """``{"psnr_rgb", "psnr_y", "ms_ssim"}`` of ``reconstruction`` against the original."""
        _check_pair(self.original, reconstruction)
        reconstruction = np.ascontiguousarray(reconstruction)
        squared_error_sum = _squared_error_sum(self._contiguous, reconstruction)
        planes_into(reconstruction, self._planes)
        return {
            "psnr_rgb": _psnr_from_mse(squared_error_sum / reconstruction.size),
            "psnr_y": _psnr_luma(self._luma, self._planes, self._squared),
            "ms_ssim": self._ms_ssim_of(self._planes),
        }


def load_kernels() -> None:
    """Compile or load from numba's disk cache every metrics kernel; workers call it at start
    so that no unit's metrics time includes it."""
    image = np.zeros((MS_SSIM_MIN_SIDE, MS_SSIM_MIN_SIDE, 3), dtype=np.uint8)
    ImageScorer(image).scores(image)


def ms_ssim_rgb(original: np.ndarray, reconstruction: np.ndarray) -> float:
    """MS-SSIM (pytorch-msssim's definition, data_range 255, RGB channels averaged), in [0, 1].

    Returns NaN for images with a side below :data:`MS_SSIM_MIN_SIDE`, where the five-scale
    pyramid is undefined. Scoring several reconstructions of one image: :class:`ImageScorer`.
    """
    _check_pair(original, reconstruction)
    if min(original.shape[:2]) < MS_SSIM_MIN_SIDE:
        return math.nan
    return MsSsimReference(_planes(original)).score(_planes(reconstruction))
