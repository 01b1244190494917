"""Distortion metrics on 8-bit RGB reconstructions.

All functions take two ``(H, W, 3)`` ``uint8`` arrays of the same shape (original first) and
compare them exactly as stored: no rescaling, no colour conversion beyond what is stated.
"""

from __future__ import annotations

import math

import numpy as np

#: MS-SSIM with pytorch-msssim's defaults (5 scales, 11x11 Gaussian window) needs both sides
#: larger than (11 - 1) * 2**4 = 160 pixels.
MS_SSIM_MIN_SIDE = 161


def _check_pair(original: np.ndarray, reconstruction: np.ndarray) -> None:
    if original.shape != reconstruction.shape:
        raise ValueError(f"shape mismatch: {original.shape} vs {reconstruction.shape}")
    if original.dtype != np.uint8 or reconstruction.dtype != np.uint8:
        raise ValueError("metrics are defined on uint8 images")


def _psnr_from_mse(mse: float) -> float:
    return math.inf if mse == 0 else 10.0 * math.log10(255.0**2 / mse)


def psnr_rgb(original: np.ndarray, reconstruction: np.ndarray) -> float:
    """PSNR in dB over all pixels and the three RGB channels (peak 255); ``inf`` if identical."""
    _check_pair(original, reconstruction)
    diff = original.astype(np.float64) - reconstruction.astype(np.float64)
    return _psnr_from_mse(float(np.mean(diff * diff)))


def luma(image: np.ndarray) -> np.ndarray:
    """Full-range BT.601 (JFIF) luma ``0.299 R + 0.587 G + 0.114 B`` as float64, range 0..255."""
    rgb = image.astype(np.float64)
    return 0.299 * rgb[..., 0] + 0.587 * rgb[..., 1] + 0.114 * rgb[..., 2]


def psnr_y(original: np.ndarray, reconstruction: np.ndarray) -> float:
    """PSNR in dB of the full-range BT.601 luma (see :func:`luma`), unrounded."""
    _check_pair(original, reconstruction)
    diff = luma(original) - luma(reconstruction)
    return _psnr_from_mse(float(np.mean(diff * diff)))


def ms_ssim_rgb(original: np.ndarray, reconstruction: np.ndarray) -> float:
    """MS-SSIM (pytorch-msssim, data_range 255, RGB channels averaged), in [0, 1].

    Returns NaN for images with a side below :data:`MS_SSIM_MIN_SIDE`, where the five-scale
    pyramid is undefined.
    """
    _check_pair(original, reconstruction)
    if min(original.shape[:2]) < MS_SSIM_MIN_SIDE:
        return math.nan
    import torch
    from pytorch_msssim import ms_ssim

    def to_tensor(a: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(np.ascontiguousarray(a.transpose(2, 0, 1))).float()[None]

    with torch.no_grad():
        value = ms_ssim(to_tensor(original), to_tensor(reconstruction), data_range=255.0)
    return float(value)
