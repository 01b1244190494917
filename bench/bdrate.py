"""Bjontegaard delta metrics (BD-rate, BD-PSNR) between two rate-distortion curves.

Conventions (the same as the ``bjontegaard`` package, version 1.3.0, and JVET CTC practice):

* Rates are in bpp (any positive unit works: BD-rate is a ratio and BD-PSNR only sees
  ``log10(rate)`` differences); distortion is PSNR in dB.
* Rates enter as ``log10(rate)``. The base of the logarithm does not change any result: BD-rate
  converts the mean log-rate difference back with the same base, and BD-PSNR is an average over an
  interval, which does not depend on a linear rescaling of that interval.
* BD-rate interpolates ``log10(rate)`` as a function of PSNR; BD-PSNR interpolates PSNR as a
  function of ``log10(rate)``. Each curve's interpolant is integrated exactly over the overlap of
  the two curves' ranges along the independent variable (the intersection, never extrapolated),
  and the difference of the integrals is divided by the interval's length.
* BD-rate in percent is ``(10 ** mean_log10_difference - 1) * 100``; negative means the test
  curve needs fewer bits for the same quality.
* ``method="pchip"`` (JVET CTC): piecewise cubic Hermite interpolation
  (:class:`scipy.interpolate.PchipInterpolator`) through the points; needs at least 2 points per
  curve. ``method="cubic"`` (VCEG-M33): least-squares third-order polynomial fit; needs at least
  4 points per curve.

Undefined results are reported, not raised: :class:`BDResult` then holds ``value = nan``,
``overlap = None`` and a human-readable ``reason``.

Few points: a defined result from a curve with fewer than :data:`MIN_POINTS_IN_OVERLAP` points
inside the overlap (on the axis integrated over) keeps its value and carries a ``warning``
naming the counts: such a figure rests on an interpolant that few measurements pin down (two
points give a straight line in log-rate). It warns rather than refuses, so that a coarse grid
still gives a number, marked as rough wherever it is shown.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike
from scipy.interpolate import PchipInterpolator

#: Interpolation methods accepted by :func:`bd_rate` and :func:`bd_psnr`.
METHODS = ("pchip", "cubic")

_MIN_POINTS = {"pchip": 2, "cubic": 4}

#: Fewer points than this inside the overlap, on either curve, make a result carry a ``warning``.
MIN_POINTS_IN_OVERLAP = 4


@dataclass(frozen=True)
class BDResult:
    """Outcome of a Bjontegaard delta computation.

    ``value``: BD-rate in percent (negative = test saves bits) or BD-PSNR in dB (positive = test
    has higher quality); NaN when undefined.
    ``overlap``: the interval integrated over, as ``(low, high)``: PSNR in dB for BD-rate, rate in
    bpp (not its logarithm) for BD-PSNR; ``None`` when undefined.
    ``reason``: why ``value`` is NaN; ``""`` when it is defined.
    ``warning``: for a defined value, why it is rough (too few points in the overlap, see the
    module docstring); ``""`` otherwise.
    """

    value: float
    overlap: tuple[float, float] | None
    reason: str = ""
    warning: str = ""


def _undefined(reason: str) -> BDResult:
    return BDResult(value=math.nan, overlap=None, reason=reason)


def _plural(n: int, word: str) -> str:
    return f"{n} {word}" + ("" if n == 1 else "s")


def _clean_curve(
    name: str, rate: ArrayLike, psnr: ArrayLike, method: str
) -> tuple[np.ndarray, np.ndarray] | str:
    """Drop non-finite points, sort by rate and validate.

    Returns ``(rate, psnr)`` as float64 arrays sorted by increasing rate, or the reason the curve
    cannot be used.
    """
    r = np.asarray(rate, dtype=np.float64).ravel()
    p = np.asarray(psnr, dtype=np.float64).ravel()
    if r.shape != p.shape:
        raise ValueError(f"{name}: {r.size} rates but {p.size} PSNR values")
    finite = np.isfinite(r) & np.isfinite(p)
    dropped = int(r.size - np.count_nonzero(finite))
    r, p = r[finite], p[finite]
    if np.any(r <= 0):
        bad = float(r[r <= 0][0])
        return f"non-positive rate: {name} has rate {bad:g} bpp (rates must be > 0)"
    need = _MIN_POINTS[method]
    if r.size < need:
        note = f" ({dropped} non-finite dropped)" if dropped else ""
        return (
            f"too few points: {name} has {_plural(int(r.size), 'finite point')}{note}, "
            f"{method} needs at least {need}"
        )
    order = np.argsort(r, kind="stable")
    r, p = r[order], p[order]
    dr, dp = np.diff(r), np.diff(p)
    if np.any(dr == 0):
        i = int(np.flatnonzero(dr == 0)[0])
        return (
            f"non-invertible curve: {name} has duplicate rate {r[i]:g} bpp "
            f"(PSNR {p[i]:g} and {p[i + 1]:g} dB)"
        )
    if np.any(dp <= 0):
        i = int(np.flatnonzero(dp <= 0)[0])
        what = "a duplicate PSNR" if dp[i] == 0 else "PSNR decreasing with rate"
        return (
            f"non-invertible curve: {name} has {what} ({p[i]:g} dB at {r[i]:g} bpp, "
            f"then {p[i + 1]:g} dB at {r[i + 1]:g} bpp); PSNR must strictly increase with rate"
        )
    return r, p


def _mean_difference(
    x_anchor: np.ndarray,
    y_anchor: np.ndarray,
    x_test: np.ndarray,
    y_test: np.ndarray,
    low: float,
    high: float,
    method: str,
) -> float:
    """Mean of ``f_test - f_anchor`` over ``[low, high]``; ``x`` strictly increasing."""
    if method == "pchip":
        area_anchor = PchipInterpolator(x_anchor, y_anchor).integrate(low, high)
        area_test = PchipInterpolator(x_test, y_test).integrate(low, high)
    else:
        # Least-squares cubic; Polynomial.fit maps x onto [-1, 1] internally for conditioning,
        # which yields the same polynomial as a plain fit on the raw x.
        prim_anchor = np.polynomial.Polynomial.fit(x_anchor, y_anchor, 3).integ()
        prim_test = np.polynomial.Polynomial.fit(x_test, y_test, 3).integ()
        area_anchor = prim_anchor(high) - prim_anchor(low)
        area_test = prim_test(high) - prim_test(low)
    return float((area_test - area_anchor) / (high - low))


def _few_points_warning(
    x_anchor: np.ndarray, x_test: np.ndarray, low: float, high: float, names: tuple[str, str]
) -> str:
    """The warning for curves with fewer than MIN_POINTS_IN_OVERLAP points in [low, high]."""
    counts = [int(np.count_nonzero((x >= low) & (x <= high))) for x in (x_anchor, x_test)]
    if min(counts) >= MIN_POINTS_IN_OVERLAP:
        return ""
    return (
        f"few points: {names[0]} has {counts[0]} and {names[1]} {counts[1]} in the overlap "
        f"(fewer than {MIN_POINTS_IN_OVERLAP}): a rough figure"
    )


def _bd(
    anchor_rate: ArrayLike,
    anchor_psnr: ArrayLike,
    test_rate: ArrayLike,
    test_psnr: ArrayLike,
    method: str,
    metric: str,
    names: tuple[str, str] = ("anchor", "test"),
) -> BDResult:
    if method not in METHODS:
        raise ValueError(f"unknown BD method {method!r}; expected one of {METHODS}")
    anchor = _clean_curve(names[0], anchor_rate, anchor_psnr, method)
    test = _clean_curve(names[1], test_rate, test_psnr, method)
    if isinstance(anchor, str):
        return _undefined(anchor)
    if isinstance(test, str):
        return _undefined(test)
    (ra, pa), (rt, pt) = anchor, test

    if metric == "rate":
        a_lo, a_hi, t_lo, t_hi = pa[0], pa[-1], pt[0], pt[-1]
        axis, unit = "PSNR", "dB"
    else:
        a_lo, a_hi, t_lo, t_hi = ra[0], ra[-1], rt[0], rt[-1]
        axis, unit = "rate", "bpp"
    low, high = float(max(a_lo, t_lo)), float(min(a_hi, t_hi))
    if not high > low:
        kind = "zero-length overlap" if high == low else "no overlap"
        return _undefined(
            f"{kind}: {names[0]} {axis} {a_lo:g}..{a_hi:g} {unit}, "
            f"{names[1]} {t_lo:g}..{t_hi:g} {unit}"
        )

    if metric == "rate":
        warning = _few_points_warning(pa, pt, low, high, names)
        diff = _mean_difference(pa, np.log10(ra), pt, np.log10(rt), low, high, method)
        with np.errstate(over="ignore"):
            value = float((np.power(10.0, diff) - 1.0) * 100.0)
    else:
        warning = _few_points_warning(ra, rt, low, high, names)
        lo_log, hi_log = math.log10(low), math.log10(high)
        value = _mean_difference(np.log10(ra), pa, np.log10(rt), pt, lo_log, hi_log, method)
    if not math.isfinite(value):
        return _undefined(f"numerically undefined: BD-{axis} evaluated to {value}")
    return BDResult(value=float(value), overlap=(low, high), warning=warning)


def bd_rate(
    anchor_rate: ArrayLike,
    anchor_psnr: ArrayLike,
    test_rate: ArrayLike,
    test_psnr: ArrayLike,
    method: str = "pchip",
    *,
    names: tuple[str, str] = ("anchor", "test"),
) -> BDResult:
    """BD-rate of the test curve against the anchor, in percent.

    Rates in bpp (any positive unit), PSNR in dB, each curve as two equally long 1-D sequences in
    any order. Points with a non-finite rate or PSNR (NaN from undecodable truncations, ``inf``
    PSNR from lossless points) are dropped before fitting. ``log10(rate)`` is interpolated as a
    function of PSNR and integrated over the PSNR overlap of the two curves; the result is
    ``(10 ** mean_difference - 1) * 100`` (negative = test saves bits). ``overlap`` is that PSNR
    interval in dB.

    Returns NaN with a ``reason`` (never raises) when: a curve has too few finite points (< 2
    for ``"pchip"``, < 4 for ``"cubic"``), a rate is <= 0, a curve is not strictly increasing
    in both rate and PSNR after sorting by rate (duplicate rates or PSNRs, or PSNR falling),
    or the PSNR ranges do not overlap or only touch.

    A defined value carries a ``warning`` when either curve has fewer than
    :data:`MIN_POINTS_IN_OVERLAP` points inside the PSNR overlap. ``names`` (anchor, test) name
    the curves in reasons and warnings.

    Raises ``ValueError`` only for caller errors: an unknown ``method`` or a curve whose rate and
    PSNR sequences differ in length.
    """
    return _bd(anchor_rate, anchor_psnr, test_rate, test_psnr, method, "rate", names)


def bd_psnr(
    anchor_rate: ArrayLike,
    anchor_psnr: ArrayLike,
    test_rate: ArrayLike,
    test_psnr: ArrayLike,
    method: str = "pchip",
    *,
    names: tuple[str, str] = ("anchor", "test"),
) -> BDResult:
    """BD-PSNR of the test curve against the anchor, in dB (positive = test has higher PSNR).

    Inputs, dropping of non-finite points and the undefined cases are as for :func:`bd_rate`.
    PSNR is interpolated as a function of ``log10(rate)`` and averaged over the overlap of the
    two curves' rate ranges; ``overlap`` is that interval as rates in bpp (not their logarithm);
    the few-points ``warning`` counts points inside that rate interval.
    """
    return _bd(anchor_rate, anchor_psnr, test_rate, test_psnr, method, "psnr", names)


def mean_finite(values: Iterable[float]) -> tuple[float, int]:
    """Mean of the finite entries of ``values`` and how many there were.

    NaN and infinities (e.g. undefined per-image BD-rates) are skipped; returns ``(nan, 0)`` when
    no entry is finite.
    """
    arr = np.asarray(list(values), dtype=np.float64).ravel()
    finite = arr[np.isfinite(arr)]
    if finite.size == 0:
        return math.nan, 0
    return float(np.mean(finite)), int(finite.size)
