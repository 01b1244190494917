"""Target-rate grid, byte budgets and metrics."""

from __future__ import annotations

import math

import numpy as np
import pytest
from conftest import kodak_crop

from bench.grid import DEFAULT_BPP_GRID, budget_bytes, parse_bpp_grid
from bench.metrics import luma, ms_ssim_rgb, psnr_rgb, psnr_y


def test_default_grid_is_point_one_to_two():
    assert (
        DEFAULT_BPP_GRID[0] == 0.1 and DEFAULT_BPP_GRID[-1] == 2.0 and len(DEFAULT_BPP_GRID) == 20
    )


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("0.25,0.5,1", (0.25, 0.5, 1.0)),
        ("1, 0.5,0.5", (0.5, 1.0)),
        ("0.1:0.5:0.1", (0.1, 0.2, 0.3, 0.4, 0.5)),
        ("0.5:2:0.5", (0.5, 1.0, 1.5, 2.0)),
    ],
)
def test_parse_bpp_grid(text, expected):
    assert parse_bpp_grid(text) == expected


@pytest.mark.parametrize("text", ["", "0,1", "-1", "1:0.5:0.1", "0.1:1", "nan"])
def test_parse_bpp_grid_rejects_nonsense(text):
    with pytest.raises(ValueError):
        parse_bpp_grid(text)


def test_budget_is_the_floor_of_bpp_times_pixels_over_eight():
    for bpp in DEFAULT_BPP_GRID:
        for h, w in ((512, 768), (37, 53), (1, 1)):
            exact = round(bpp * h * w / 8, 6)
            assert budget_bytes(bpp, h, w) == math.floor(exact)
    assert budget_bytes(0.3, 512, 768) == 14745
    assert budget_bytes(0.7, 512, 768) == 34406


def test_psnr_rgb_and_y_on_known_errors():
    a = kodak_crop("kodim01.png", 0, 0, 32, 32)
    assert psnr_rgb(a, a) == math.inf
    b = a.astype(int)
    b[..., 0] = np.clip(b[..., 0] + 3, 0, 255)
    b = b.astype(np.uint8)
    mse = np.mean((a.astype(float) - b) ** 2)
    assert psnr_rgb(a, b) == pytest.approx(10 * math.log10(255**2 / mse))
    dy = luma(a) - luma(b)
    assert psnr_y(a, b) == pytest.approx(10 * math.log10(255**2 / np.mean(dy**2)))
    grey = np.repeat(a[..., :1], 3, axis=2)
    assert luma(grey) == pytest.approx(grey[..., 0].astype(float))


def test_ms_ssim_is_nan_for_small_images_and_in_range_otherwise():
    small = kodak_crop("kodim01.png", 0, 0, 64, 96)
    assert math.isnan(ms_ssim_rgb(small, small))
    big = kodak_crop("kodim01.png", 0, 0, 192, 176)
    noisy = np.clip(big.astype(int) + np.random.default_rng(0).integers(-8, 9, big.shape), 0, 255)
    value = ms_ssim_rgb(big, noisy.astype(np.uint8))
    assert 0.9 < value < 1.0
    assert ms_ssim_rgb(big, big) == pytest.approx(1.0, abs=1e-6)


def test_metrics_refuse_mismatched_inputs():
    a = kodak_crop("kodim01.png", 0, 0, 8, 8)
    with pytest.raises(ValueError):
        psnr_rgb(a, a[:4])
    with pytest.raises(ValueError):
        psnr_rgb(a, a.astype(np.float32))
