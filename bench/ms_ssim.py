"""MS-SSIM of 8-bit RGB images, as pytorch-msssim defines it, with compiled streaming kernels.

The definition is pytorch-msssim's ``ms_ssim`` with its defaults and data_range 255 (Wang et al.
2003): five scales weighted 0.0448, 0.2856, 0.3001, 0.2363, 0.1333; an 11-tap Gaussian window
(sigma 1.5, normalised; the taps ``_W0`` .. ``_W5`` below) applied separably with no padding
(valid output only); K1 = 0.01, K2 = 0.03; between scales a 2x2 average pooling that pads an
odd side with one zero row/column in front and divides by 4 (PyTorch's ``avg_pool2d`` with
padding ``side % 2`` and ``count_include_pad``); the contrast-structure means of scales 1-4 and
the SSIM mean of scale 5 are clipped at 0 (ReLU) per channel before the weighted product; the
three RGB channels' values are averaged.

:class:`MsSsimReference` holds what depends on the original alone (its pyramid and its
Gaussian-filtered mean and variance at every scale) and the reconstruction's work buffers, so
that scoring a reconstruction allocates no image-sized array and filters only its own three maps
(y, y*y, x*y). The pyramids are stored in float32, which holds their values exactly
(:data:`PLANE_DTYPE`); every computation is float64. The kernels stream, in pytorch-msssim's
order: for each output row, the 11 input rows below it are filtered down (every column, the
products formed on the fly), then filtered across and the map's terms summed in the same loop,
so that no map is ever stored and the working set (a band of 11 rows) stays in the cache. Numba
compiles them with ``error_model="numpy"`` (a division by zero gives inf/NaN instead of a Python
exception; the denominators here are at least C1 or C2 > 0), which lets the divisions
vectorise, and with reassociation, so sums may be added in another order than pytorch-msssim's;
the values agree with it run in float64 within 3e-15 on JPEG 2000's Kodak reconstructions
(benchmarks/metrics_speed.py; tests/test_metrics.py asserts 1e-6).
"""

from __future__ import annotations

import numba as nb
import numpy as np

#: MS-SSIM with pytorch-msssim's defaults (5 scales, 11x11 Gaussian window) needs both sides
#: larger than (11 - 1) * 2**4 = 160 pixels.
MS_SSIM_MIN_SIDE = 161

MS_SSIM_WEIGHTS = (0.0448, 0.2856, 0.3001, 0.2363, 0.1333)
K1, K2 = 0.01, 0.03
DATA_RANGE = 255.0
_C1, _C2 = (K1 * DATA_RANGE) ** 2, (K2 * DATA_RANGE) ** 2

#: Taps of the window, centre ``_W5``, ``_W4`` .. ``_W0`` outwards, exactly as pytorch-msssim
#: holds them: computed and normalised in float32, so the 11 taps sum to 1 - 3.1e-8. With an
#: exactly normalised float64 window the MS-SSIM values move by up to 5e-7 (the variance
#: ``E[x^2] - mu^2`` of values near 255 is sensitive to the window's sum).
_W0, _W1, _W2, _W3, _W4, _W5 = (
    float.fromhex(h)
    for h in (
        "0x1.0d957p-10",
        "0x1.f1fe02p-8",
        "0x1.26eb18p-5",
        "0x1.bff0fep-4",
        "0x1.b43c3ep-3",
        "0x1.10656p-2",
    )
)
#: The window's length; a valid filtering shortens each side by ``_TAPS - 1``.
_TAPS = 11

#: Numba options of the float kernels (see the module docstring).
_KERNEL = {"cache": True, "fastmath": {"reassoc", "contract"}, "error_model": "numpy"}


@nb.njit(inline="always", **_KERNEL)
def _window(v0, v1, v2, v3, v4, v5, v6, v7, v8, v9, v10):  # noqa: ANN001, ANN202 - numba scalars
    """``sum_k w[k] * v_k`` of 11 float64 values, the symmetric taps paired (the one order of
    operations every kernel uses; inlined into the loops, which then vectorise)."""
    return (
        _W5 * v5
        + _W4 * (v4 + v6)
        + _W3 * (v3 + v7)
        + _W2 * (v2 + v8)
        + _W1 * (v1 + v9)
        + _W0 * (v0 + v10)
    )


@nb.njit(inline="always", **_KERNEL)
def _window_at(row: np.ndarray, j: int) -> float:
    """:func:`_window` of ``row[j:j + 11]``."""
    return _window(
        row[j], row[j + 1], row[j + 2], row[j + 3], row[j + 4], row[j + 5],
        row[j + 6], row[j + 7], row[j + 8], row[j + 9], row[j + 10],
    )  # fmt: skip


@nb.njit(inline="always", **_KERNEL)
def _column(plane: np.ndarray, i: int, j: int) -> tuple:
    """``plane[i:i + 11, j]`` as 11 float64 values: products are formed in float64 (a float32
    product of pyramid values could round)."""
    return (
        np.float64(plane[i, j]), np.float64(plane[i + 1, j]), np.float64(plane[i + 2, j]),
        np.float64(plane[i + 3, j]), np.float64(plane[i + 4, j]), np.float64(plane[i + 5, j]),
        np.float64(plane[i + 6, j]), np.float64(plane[i + 7, j]), np.float64(plane[i + 8, j]),
        np.float64(plane[i + 9, j]), np.float64(plane[i + 10, j]),
    )  # fmt: skip


@nb.njit(**_KERNEL)
def _filter_across(row: np.ndarray, out: np.ndarray) -> None:
    """``out[j] = sum_k w[k] * row[j + k]``, ``j < len(out) <= len(row) - 10``."""
    for j in range(out.shape[0]):
        out[j] = _window_at(row, j)


@nb.njit(**_KERNEL)
def _filter_down_moments(
    x: np.ndarray,
    y: np.ndarray,
    i: int,
    mean_y: np.ndarray,
    moment_yy: np.ndarray,
    moment_xy: np.ndarray,
) -> None:
    """Row ``i`` of the vertical filtering (``sum_k w[k] * plane[i + k, j]``, every column) of
    ``y``, ``y * y`` and ``x * y`` into ``mean_y``, ``moment_yy`` and ``moment_xy``; the
    products are formed on the fly, in float64. ``x`` and ``y`` are (H, W), the outputs
    (>= W,)."""
    for j in range(y.shape[1]):
        y0, y1, y2, y3, y4, y5, y6, y7, y8, y9, y10 = _column(y, i, j)
        x0, x1, x2, x3, x4, x5, x6, x7, x8, x9, x10 = _column(x, i, j)
        mean_y[j] = _window(y0, y1, y2, y3, y4, y5, y6, y7, y8, y9, y10)
        moment_yy[j] = _window(
            y0 * y0, y1 * y1, y2 * y2, y3 * y3, y4 * y4, y5 * y5,
            y6 * y6, y7 * y7, y8 * y8, y9 * y9, y10 * y10,
        )  # fmt: skip
        moment_xy[j] = _window(
            x0 * y0, x1 * y1, x2 * y2, x3 * y3, x4 * y4, x5 * y5,
            x6 * y6, x7 * y7, x8 * y8, x9 * y9, x10 * y10,
        )  # fmt: skip


@nb.njit(**_KERNEL)
def _mean_and_variance_into(
    plane: np.ndarray, rows: np.ndarray, mean: np.ndarray, variance: np.ndarray
) -> None:
    """Gaussian-filtered mean ``mu`` and ``E[x^2] - mu^2`` of one (H, W) plane into ``mean`` and
    ``variance``, float64, each (H - 10, W - 10). Work buffer: ``rows`` (>= 3, >= W).

    The moments kernel is shared with the reconstructions', so its third map (here the square
    again) is made and left unused: a cost paid once per image."""
    width = mean.shape[1]
    down, down_square, unused = rows[0], rows[1], rows[2]
    for i in range(mean.shape[0]):
        _filter_down_moments(plane, plane, i, down, down_square, unused)
        mean_row, variance_row = mean[i], variance[i]
        _filter_across(down, mean_row)
        _filter_across(down_square, variance_row)
        for j in range(width):
            variance_row[j] -= mean_row[j] * mean_row[j]


@nb.njit(**_KERNEL)
def _scale_means(
    original: np.ndarray,
    mean_x: np.ndarray,
    variance_x: np.ndarray,
    planes: np.ndarray,
    ssim: bool,
    rows: np.ndarray,
    out: np.ndarray,
) -> None:
    """Per channel, the mean of the SSIM map (``ssim``) or else of the contrast-structure map
    ``(2 s_xy + C2) / (s_x^2 + s_y^2 + C2)``, into ``out`` (C,); the SSIM map is that times
    ``(2 mu_x mu_y + C1) / (mu_x^2 + mu_y^2 + C1)``.

    ``original`` and ``planes`` are the original's and the reconstruction's (C, H, W) planes
    (:data:`PLANE_DTYPE`) at one scale; ``mean_x`` and ``variance_x`` the original's filtered
    statistics (:func:`_mean_and_variance_into`), (C, H - 10, W - 10), float64. Work buffer:
    ``rows`` (>= 3, >= W), float64. Each output row is filtered down (full width), then across
    and summed in one loop, so the maps are never stored.
    """
    channels, height, width = mean_x.shape
    down_y, down_yy, down_xy = rows[0], rows[1], rows[2]
    for c in range(channels):
        total = 0.0
        for i in range(height):
            _filter_down_moments(original[c], planes[c], i, down_y, down_yy, down_xy)
            mean_row, variance_row = mean_x[c, i], variance_x[c, i]
            for j in range(width):
                mu2 = _window_at(down_y, j)
                moment_yy = _window_at(down_yy, j)
                moment_xy = _window_at(down_xy, j)
                mu1 = mean_row[j]
                value = (2.0 * (moment_xy - mu1 * mu2) + _C2) / (
                    variance_row[j] + moment_yy - mu2 * mu2 + _C2
                )
                if ssim:
                    value *= (2.0 * mu1 * mu2 + _C1) / (mu1 * mu1 + mu2 * mu2 + _C1)
                total += value
        out[c] = total / (height * width)


@nb.njit(cache=True)
def _pool_into(planes: np.ndarray, out: np.ndarray) -> None:
    """2x2 average pooling of (C, H, W) planes into ``out`` (C, (H + 1) // 2, (W + 1) // 2); an
    odd side gets one zero row/column in front, and every window divides by 4.

    Equal to ``torch.nn.functional.avg_pool2d(x, 2, padding=(H % 2, W % 2))`` (zeros counted);
    exact in any order and in float32, as the values are multiples of 4**-level below 256.
    """
    channels, height, width = planes.shape
    top, left = height % 2, width % 2
    out[:] = 0.0
    for c in range(channels):
        for i in range(height):
            row = out[c, (i + top) // 2]
            source = planes[c, i]
            if left:
                row[0] += source[0]
            for j in range(left, width, 2):
                row[(j + left) // 2] += source[j] + source[j + 1]
    out *= 0.25


#: Type of the pyramids' planes: float32 holds their values exactly (multiples of 4**-level
#: below 256 need at most 16 significant bits), halves their memory traffic against float64,
#: and the kernels widen each value to float64 as they read it, so the values are those of
#: float64 planes, bit for bit.
PLANE_DTYPE = np.float32


@nb.njit(cache=True)
def planes_into(image: np.ndarray, out: np.ndarray) -> None:
    """(H, W, C) uint8 image -> ``out`` (C, H, W) planes (:data:`PLANE_DTYPE`), exact."""
    height, width, channels = image.shape
    flat = image.reshape(height, width * channels)
    for c in range(channels):
        for i in range(height):
            source, target = flat[i], out[c, i]
            for j in range(width):
                target[j] = source[j * channels + c]


def _pyramid_shapes(channels: int, height: int, width: int) -> list[tuple[int, int, int]]:
    """(C, H, W) of the planes at each of the five scales."""
    shapes = [(channels, height, width)]
    for _ in MS_SSIM_WEIGHTS[1:]:
        height, width = (height + 1) // 2, (width + 1) // 2
        shapes.append((channels, height, width))
    return shapes


class MsSsimReference:
    """An original's pyramid and filtered statistics, and the buffers that scoring one of its
    reconstructions uses (so one instance is not for concurrent use)."""

    def __init__(self, original: np.ndarray) -> None:
        """``original``: (C, H, W) C-contiguous planes (:func:`planes_into`), both sides at least
        :data:`MS_SSIM_MIN_SIDE`; kept, not copied."""
        channels, height, width = original.shape
        if original.dtype != PLANE_DTYPE or not original.flags.c_contiguous:
            raise ValueError(f"planes must be C-contiguous {np.dtype(PLANE_DTYPE).name}")
        if min(height, width) < MS_SSIM_MIN_SIDE:
            raise ValueError(
                f"MS-SSIM needs sides of at least {MS_SSIM_MIN_SIDE}: {height}x{width}"
            )
        shapes = _pyramid_shapes(channels, height, width)
        self._rows = np.empty((3, width))
        self._values = np.empty(channels)
        self._original = [original] + [np.empty(shape, PLANE_DTYPE) for shape in shapes[1:]]
        self._pyramid = [np.empty(shape, PLANE_DTYPE) for shape in shapes[1:]]
        self._mean = [np.empty((c, h - (_TAPS - 1), w - (_TAPS - 1))) for c, h, w in shapes]
        self._variance = [np.empty_like(mean) for mean in self._mean]
        for level, planes in enumerate(self._original):
            if level:
                _pool_into(self._original[level - 1], planes)
            for c in range(channels):
                _mean_and_variance_into(
                    planes[c], self._rows, self._mean[level][c], self._variance[level][c]
                )

    def score(self, reconstruction: np.ndarray) -> float:
        """MS-SSIM of a reconstruction given as (C, H, W) planes (:func:`planes_into`), not
        modified, against the original."""
        factors = np.ones(len(self._values))
        last = len(MS_SSIM_WEIGHTS) - 1
        planes = reconstruction
        for level, weight in enumerate(MS_SSIM_WEIGHTS):
            if level:
                _pool_into(planes, self._pyramid[level - 1])
                planes = self._pyramid[level - 1]
            _scale_means(
                self._original[level],
                self._mean[level],
                self._variance[level],
                planes,
                level == last,
                self._rows,
                self._values,
            )
            for c, value in enumerate(self._values.tolist()):
                factors[c] *= max(value, 0.0) ** weight
        return float(np.mean(factors))
