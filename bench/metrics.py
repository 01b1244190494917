"""Distortion metrics on 8-bit RGB reconstructions.

All functions take ``(H, W, 3)`` ``uint8`` arrays of the same shape (original first) and compare
them exactly as stored: no rescaling, no colour conversion beyond what is stated.

:class:`ImageScorer` holds what depends on the original alone (its luma, its MS-SSIM pyramid and
the Gaussian-filtered mean and variance at every scale), so that scoring the many
reconstructions of one image costs only their own share. The one-shot functions
(:func:`psnr_rgb`, :func:`psnr_y`, :func:`ms_ssim_rgb`) give the same values.

MS-SSIM is the definition pytorch-msssim implements (Wang et al. 2003, as its ``ms_ssim`` with
defaults and data_range 255): five scales weighted 0.0448, 0.2856, 0.3001, 0.2363, 0.1333; an
11-tap Gaussian window (sigma 1.5, normalised; :data:`_WINDOW`) applied separably with no
padding (valid output only); K1 = 0.01, K2 = 0.03; between scales a 2x2 average pooling that
pads an odd side with one zero row/column in front and divides by 4 (PyTorch's ``avg_pool2d``
with padding ``side % 2`` and ``count_include_pad``); the contrast-structure means of scales 1-4
and the SSIM mean of scale 5 are clipped at 0 (ReLU) per channel before the weighted product;
the three RGB channels' values are averaged. Here compiled (numba) float64 kernels filter each
plane separably and sum the per-pixel terms row by row without storing the maps;
pytorch-msssim (float32) stays the test oracle (tests/test_metrics.py: equal within 1e-6 on real
reconstructions; measured differences are below 1e-7).
"""

from __future__ import annotations

import math

import numba as nb
import numpy as np

#: MS-SSIM with pytorch-msssim's defaults (5 scales, 11x11 Gaussian window) needs both sides
#: larger than (11 - 1) * 2**4 = 160 pixels.
MS_SSIM_MIN_SIDE = 161

MS_SSIM_WEIGHTS = (0.0448, 0.2856, 0.3001, 0.2363, 0.1333)
K1, K2 = 0.01, 0.03
DATA_RANGE = 255.0
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
def _squared_error_sum(original: np.ndarray, reconstruction: np.ndarray) -> int:
    """Sum of squared differences of two (H, W, C) uint8 arrays, exact (int64)."""
    total = 0
    height, width, channels = original.shape
    for i in range(height):
        for j in range(width):
            for c in range(channels):
                diff = np.int64(original[i, j, c]) - np.int64(reconstruction[i, j, c])
                total += diff * diff
    return total


def psnr_rgb(original: np.ndarray, reconstruction: np.ndarray) -> float:
    """PSNR in dB over all pixels and the three RGB channels (peak 255); ``inf`` if identical.

    The squared-error sum is exact, so the value equals a float64 ``mean(diff**2)``'s.
    """
    _check_pair(original, reconstruction)
    return _psnr_from_mse(_squared_error_sum(original, reconstruction) / original.size)


@nb.njit(cache=True)
def _luma_into(image: np.ndarray, out: np.ndarray) -> None:
    """``out = (0.299 R + 0.587 G) + 0.114 B`` in float64, IEEE operations in that order."""
    wr, wg, wb = LUMA_WEIGHTS
    for i in range(out.shape[0]):
        for j in range(out.shape[1]):
            out[i, j] = wr * np.float64(image[i, j, 0]) + wg * np.float64(image[i, j, 1])
            out[i, j] += wb * np.float64(image[i, j, 2])


def luma(image: np.ndarray) -> np.ndarray:
    """Full-range BT.601 (JFIF) luma ``0.299 R + 0.587 G + 0.114 B`` as float64, range 0..255.

    Bit-identical to evaluating the expression left to right on float64 RGB with numpy.
    """
    out = np.empty(image.shape[:2])
    _luma_into(image, out)
    return out


@nb.njit(cache=True)
def _luma_squared_errors(original_luma: np.ndarray, image: np.ndarray, out: np.ndarray) -> None:
    """``out = (original_luma - luma(image))**2`` elementwise, float64, as numpy computes it."""
    wr, wg, wb = LUMA_WEIGHTS
    for i in range(out.shape[0]):
        for j in range(out.shape[1]):
            y = wr * np.float64(image[i, j, 0]) + wg * np.float64(image[i, j, 1])
            y += wb * np.float64(image[i, j, 2])
            diff = original_luma[i, j] - y
            out[i, j] = diff * diff


def _psnr_luma(original_luma: np.ndarray, reconstruction: np.ndarray) -> float:
    """PSNR-Y; ``np.mean`` of the squared errors keeps numpy's summation order (same value)."""
    squared = np.empty(original_luma.shape)
    _luma_squared_errors(original_luma, reconstruction, squared)
    return _psnr_from_mse(float(np.mean(squared)))


def psnr_y(original: np.ndarray, reconstruction: np.ndarray) -> float:
    """PSNR in dB of the full-range BT.601 luma (see :func:`luma`), unrounded."""
    _check_pair(original, reconstruction)
    return _psnr_luma(luma(original), reconstruction)


#: The 11-tap Gaussian window (sigma 1.5) exactly as pytorch-msssim holds it: computed and
#: normalised in float32, so its taps sum to 1 - 3.1e-8. With the exactly normalised float64
#: window the MS-SSIM values move by up to 5e-7 (the variance ``E[x^2] - mu^2`` of values near
#: 255 is sensitive to the window's sum); with these taps they agree within 1e-7.
_WINDOW = np.array(
    [
        float.fromhex(h)
        for h in (
            "0x1.0d957p-10",
            "0x1.f1fe02p-8",
            "0x1.26eb18p-5",
            "0x1.bff0fep-4",
            "0x1.b43c3ep-3",
            "0x1.10656p-2",
            "0x1.b43c3ep-3",
            "0x1.bff0fep-4",
            "0x1.26eb18p-5",
            "0x1.f1fe02p-8",
            "0x1.0d957p-10",
        )
    ]
)


#: Numba flags of the kernels: reassociation lets the sums vectorise (the order of additions
#: may differ from pytorch-msssim's; the values agree within 1e-6, see the module docstring).
_FAST = {"reassoc", "contract"}


@nb.njit(cache=True, fastmath=_FAST)
def _filter_row(row: np.ndarray, w: np.ndarray, out: np.ndarray) -> None:
    """``out[j] = sum_k w[k] * row[j + k]`` for the symmetric 11-tap window ``w``."""
    for j in range(out.shape[0]):
        out[j] = (
            w[5] * row[j + 5]
            + w[4] * (row[j + 4] + row[j + 6])
            + w[3] * (row[j + 3] + row[j + 7])
            + w[2] * (row[j + 2] + row[j + 8])
            + w[1] * (row[j + 1] + row[j + 9])
            + w[0] * (row[j] + row[j + 10])
        )


@nb.njit(cache=True, fastmath=_FAST)
def _filter_column_row(rows: np.ndarray, i: int, w: np.ndarray, out: np.ndarray) -> None:
    """``out[j] = sum_k w[k] * rows[i + k, j]``: row ``i`` of the valid vertical filtering."""
    r0, r1, r2, r3, r4, r5 = (
        rows[i],
        rows[i + 1],
        rows[i + 2],
        rows[i + 3],
        rows[i + 4],
        rows[i + 5],
    )
    r6, r7, r8, r9, r10 = rows[i + 6], rows[i + 7], rows[i + 8], rows[i + 9], rows[i + 10]
    for j in range(out.shape[0]):
        out[j] = (
            w[5] * r5[j]
            + w[4] * (r4[j] + r6[j])
            + w[3] * (r3[j] + r7[j])
            + w[2] * (r2[j] + r8[j])
            + w[1] * (r1[j] + r9[j])
            + w[0] * (r0[j] + r10[j])
        )


@nb.njit(cache=True, fastmath=_FAST)
def _mean_and_variance(plane: np.ndarray, w: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Gaussian-filtered mean ``mu`` and ``E[x^2] - mu^2`` of one (H, W) float64 plane, each
    (H - 10, W - 10) (valid filtering)."""
    height, width = plane.shape[0] - 10, plane.shape[1] - 10
    across = np.empty((plane.shape[0], width))
    across_sq = np.empty((plane.shape[0], width))
    squares = np.empty(plane.shape[1])
    for r in range(plane.shape[0]):
        _filter_row(plane[r], w, across[r])
        for j in range(plane.shape[1]):
            squares[j] = plane[r, j] * plane[r, j]
        _filter_row(squares, w, across_sq[r])
    mean = np.empty((height, width))
    variance = np.empty((height, width))
    for i in range(height):
        _filter_column_row(across, i, w, mean[i])
        _filter_column_row(across_sq, i, w, variance[i])
        for j in range(width):
            variance[i, j] -= mean[i, j] * mean[i, j]
    return mean, variance


@nb.njit(cache=True, fastmath=_FAST)
def _row_sums(
    mean_x: np.ndarray,
    variance_x: np.ndarray,
    mean_y: np.ndarray,
    moment_yy: np.ndarray,
    moment_xy: np.ndarray,
    c1: float,
    c2: float,
) -> tuple[float, float]:
    """Sums over one output row of the SSIM and contrast-structure maps."""
    ssim_sum = 0.0
    cs_sum = 0.0
    for j in range(mean_x.shape[0]):
        mu1 = mean_x[j]
        mu2 = mean_y[j]
        cs = (2.0 * (moment_xy[j] - mu1 * mu2) + c2) / (
            variance_x[j] + moment_yy[j] - mu2 * mu2 + c2
        )
        cs_sum += cs
        ssim_sum += cs * (2.0 * mu1 * mu2 + c1) / (mu1 * mu1 + mu2 * mu2 + c1)
    return ssim_sum, cs_sum


@nb.njit(cache=True, fastmath=_FAST)
def _ssim_and_cs(
    original: np.ndarray,
    mean_x: np.ndarray,
    variance_x: np.ndarray,
    plane: np.ndarray,
    w: np.ndarray,
    c1: float,
    c2: float,
) -> tuple[float, float]:
    """Means of the SSIM map and the contrast-structure map of one channel at one scale.

    ``original`` and ``plane`` are (H, W) float64; ``mean_x`` and ``variance_x`` are the
    original's filtered statistics (:func:`_mean_and_variance`), (H - 10, W - 10). The maps are
    never stored: each output row is summed as it is made.
    """
    rows, columns = plane.shape
    height, width = mean_x.shape
    across_y = np.empty((rows, width))
    across_yy = np.empty((rows, width))
    across_xy = np.empty((rows, width))
    products = np.empty(columns)
    for r in range(rows):
        _filter_row(plane[r], w, across_y[r])
        for j in range(columns):
            products[j] = plane[r, j] * plane[r, j]
        _filter_row(products, w, across_yy[r])
        for j in range(columns):
            products[j] = original[r, j] * plane[r, j]
        _filter_row(products, w, across_xy[r])
    mean_y = np.empty(width)
    moment_yy = np.empty(width)
    moment_xy = np.empty(width)
    ssim_sum = 0.0
    cs_sum = 0.0
    for i in range(height):
        _filter_column_row(across_y, i, w, mean_y)
        _filter_column_row(across_yy, i, w, moment_yy)
        _filter_column_row(across_xy, i, w, moment_xy)
        ssim_row, cs_row = _row_sums(mean_x[i], variance_x[i], mean_y, moment_yy, moment_xy, c1, c2)
        ssim_sum += ssim_row
        cs_sum += cs_row
    count = height * width
    return ssim_sum / count, cs_sum / count


@nb.njit(cache=True)
def _pool(planes: np.ndarray) -> np.ndarray:
    """2x2 average pooling of (C, H, W) float64 planes; an odd side gets one zero row/column in
    front, and every window divides by 4.

    Equal to ``torch.nn.functional.avg_pool2d(x, 2, padding=(H % 2, W % 2))`` (zeros counted);
    exact, as the inputs are multiples of 4**-level below 256.
    """
    channels, height, width = planes.shape
    top, left = height % 2, width % 2
    out = np.zeros((channels, (height + top) // 2, (width + left) // 2))
    for c in range(channels):
        for i in range(height):
            row = out[c, (i + top) // 2]
            source = planes[c, i]
            if left:
                row[0] += source[0]
            for j in range(left, width, 2):
                row[(j + left) // 2] += source[j] + source[j + 1]
    out *= 0.25
    return out


@nb.njit(cache=True)
def _planes(image: np.ndarray) -> np.ndarray:
    """(H, W, C) uint8 -> (C, H, W) float64."""
    height, width, channels = image.shape
    out = np.empty((channels, height, width))
    for c in range(channels):
        for i in range(height):
            for j in range(width):
                out[c, i, j] = image[i, j, c]
    return out


class _MsSsimReference:
    """The original's MS-SSIM pyramid and its filtered mean and variance at every scale."""

    def __init__(self, original: np.ndarray) -> None:
        self.scales: list[tuple[np.ndarray, list[tuple[np.ndarray, np.ndarray]]]] = []
        planes = _planes(original)
        for level in range(len(MS_SSIM_WEIGHTS)):
            stats = [_mean_and_variance(plane, _WINDOW) for plane in planes]
            self.scales.append((planes, stats))
            if level < len(MS_SSIM_WEIGHTS) - 1:
                planes = _pool(planes)

    def score(self, reconstruction: np.ndarray) -> float:
        """MS-SSIM of ``reconstruction`` (H, W, 3) uint8 against the original."""
        c1, c2 = (K1 * DATA_RANGE) ** 2, (K2 * DATA_RANGE) ** 2
        planes = _planes(reconstruction)
        factors = np.ones(planes.shape[0])
        last = len(MS_SSIM_WEIGHTS) - 1
        for level, (weight, (original, stats)) in enumerate(
            zip(MS_SSIM_WEIGHTS, self.scales, strict=True)
        ):
            for c, (mean_x, variance_x) in enumerate(stats):
                ssim, cs = _ssim_and_cs(original[c], mean_x, variance_x, planes[c], _WINDOW, c1, c2)
                factors[c] *= max(ssim if level == last else cs, 0.0) ** weight
            if level < last:
                planes = _pool(planes)
        return float(np.mean(factors))


class ImageScorer:
    """PSNR-RGB, PSNR-Y and MS-SSIM of reconstructions of one original (H, W, 3) uint8.

    Built once per image; :meth:`scores` then costs only the reconstruction's share (the
    original's luma and MS-SSIM statistics are computed here, once). MS-SSIM is NaN for images
    with a side below :data:`MS_SSIM_MIN_SIDE`.
    """

    def __init__(self, original: np.ndarray) -> None:
        _check_pair(original, original)
        self.original = original
        self._luma = luma(original)
        self._ms_ssim = (
            _MsSsimReference(original) if min(original.shape[:2]) >= MS_SSIM_MIN_SIDE else None
        )

    def ms_ssim(self, reconstruction: np.ndarray) -> float:
        """MS-SSIM in [0, 1] (see the module docstring), NaN below the minimum side."""
        _check_pair(self.original, reconstruction)
        return math.nan if self._ms_ssim is None else self._ms_ssim.score(reconstruction)

    def scores(self, reconstruction: np.ndarray) -> dict[str, float]:
        """``{"psnr_rgb", "psnr_y", "ms_ssim"}`` of ``reconstruction`` against the original."""
        _check_pair(self.original, reconstruction)
        return {
            "psnr_rgb": _psnr_from_mse(
                _squared_error_sum(self.original, reconstruction) / self.original.size
            ),
            "psnr_y": _psnr_luma(self._luma, reconstruction),
            "ms_ssim": self.ms_ssim(reconstruction),
        }


def load_kernels() -> None:
    """Compile or load from numba's disk cache every metrics kernel (about 1 s on first use in
    a process); workers call it at start so that no unit's metrics time includes it."""
    image = np.zeros((MS_SSIM_MIN_SIDE, MS_SSIM_MIN_SIDE, 3), dtype=np.uint8)
    ImageScorer(image).scores(image)
    psnr_rgb(image, image)


def ms_ssim_rgb(original: np.ndarray, reconstruction: np.ndarray) -> float:
    """MS-SSIM (pytorch-msssim's definition, data_range 255, RGB channels averaged), in [0, 1].

    Returns NaN for images with a side below :data:`MS_SSIM_MIN_SIDE`, where the five-scale
    pyramid is undefined. Scoring several reconstructions of one image: :class:`ImageScorer`.
    """
    _check_pair(original, reconstruction)
    if min(original.shape[:2]) < MS_SSIM_MIN_SIDE:
        return math.nan
    return _MsSsimReference(original).score(reconstruction)
