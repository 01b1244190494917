"""Tests for bench.bdrate: agreement with the reference ``bjontegaard`` package, hand-checked
values, and the undefined (NaN) cases."""

from __future__ import annotations

import math
import warnings

import bjontegaard
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bench.bdrate import METHODS, BDResult, bd_psnr, bd_rate, mean_finite

TOL = 1e-6


def _reference(metric: str, ra, pa, rt, pt, method: str) -> float:
    """The ``bjontegaard`` 1.3.0 value, called apples-to-apples with ours.

    ``require_matching_points=False``: the package by default raises when anchor and test have a
    different number of points; we accept that, and it does not change the value.
    ``min_overlap=0``: only silences the package's low-overlap warning; it does not change the
    value (the package integrates over the intersection whatever the overlap).
    ``interpolators`` stays at its default (False) so a bare float comes back.
    """
    fn = bjontegaard.bd_rate if metric == "rate" else bjontegaard.bd_psnr
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return float(fn(ra, pa, rt, pt, method, require_matching_points=False, min_overlap=0))


def _curve(log_rate0: float, psnr0: float, steps, slopes) -> tuple[np.ndarray, np.ndarray]:
    """A strictly increasing RD curve: log10-rate steps and PSNR slopes in dB per decade."""
    steps = np.asarray(steps, dtype=np.float64)
    slopes = np.asarray(slopes, dtype=np.float64)
    log_rate = log_rate0 + np.concatenate([[0.0], np.cumsum(steps)])
    psnr = psnr0 + np.concatenate([[0.0], np.cumsum(steps * slopes)])
    return 10.0**log_rate, psnr


def _random_curve(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    n = int(rng.integers(4, 9))
    return _curve(
        rng.uniform(-1.5, -0.5),
        rng.uniform(25.0, 32.0),
        rng.uniform(0.05, 0.4, n - 1),
        rng.uniform(4.0, 30.0, n - 1),
    )


@st.composite
def curves(draw) -> tuple[np.ndarray, np.ndarray]:
    n = draw(st.integers(4, 8))
    unit = st.floats(0.0, 1.0)
    steps = [0.05 + 0.35 * draw(unit) for _ in range(n - 1)]
    slopes = [4.0 + 26.0 * draw(unit) for _ in range(n - 1)]
    return _curve(-1.5 + draw(unit), 25.0 + 7.0 * draw(unit), steps, slopes)


def _check_against_reference(ra, pa, rt, pt) -> int:
    """Compare all four (metric, method) pairs; return how many were defined."""
    defined = 0
    for method in METHODS:
        for metric, ours in (("rate", bd_rate), ("psnr", bd_psnr)):
            got = ours(ra, pa, rt, pt, method=method)
            ref = _reference(metric, ra, pa, rt, pt, method)
            if metric == "rate":
                lo, hi = max(min(pa), min(pt)), min(max(pa), max(pt))
            else:
                lo, hi = max(min(ra), min(rt)), min(max(ra), max(rt))
            if hi > lo:
                assert got.value == pytest.approx(ref, abs=TOL, rel=0), (metric, method)
                assert got.overlap == (lo, hi)
                assert got.reason == ""
                defined += 1
            else:
                assert math.isnan(got.value) and got.overlap is None and got.reason
    return defined


@settings(max_examples=200, deadline=None, database=None, derandomize=True)
@given(anchor=curves(), test=curves())
def test_agrees_with_bjontegaard_hypothesis(anchor, test):
    _check_against_reference(*anchor, *test)


def test_agrees_with_bjontegaard_seeded():
    rng = np.random.default_rng(20240611)
    defined = 0
    for _ in range(250):
        ra, pa = _random_curve(rng)
        rt, pt = _random_curve(rng)
        defined += _check_against_reference(ra, pa, rt, pt)
    assert defined > 0.9 * 250 * 4  # the generator mostly yields overlapping curves


def test_input_order_and_types_do_not_matter():
    rng = np.random.default_rng(7)
    ra, pa = _random_curve(rng)
    rt, pt = _random_curve(rng)
    ia, it = rng.permutation(len(ra)), rng.permutation(len(rt))
    for method in METHODS:
        for fn in (bd_rate, bd_psnr):
            want = fn(ra, pa, rt, pt, method)
            shuffled = fn(list(ra[ia]), list(pa[ia]), list(rt[it]), list(pt[it]), method)
            assert shuffled.value == pytest.approx(want.value, abs=1e-9)
            assert shuffled.overlap == want.overlap


# ---- hand-checked values ----------------------------------------------------------------------

ANCHOR_RATE = [0.1, 0.25, 0.5, 1.0, 2.0]
ANCHOR_PSNR = [28.0, 31.5, 34.0, 37.0, 40.5]


@pytest.mark.parametrize("method", METHODS)
def test_identical_curves_give_zero(method):
    for fn in (bd_rate, bd_psnr):
        res = fn(ANCHOR_RATE, ANCHOR_PSNR, ANCHOR_RATE, ANCHOR_PSNR, method)
        assert res.value == pytest.approx(0.0, abs=1e-12)
        assert res.reason == ""


@pytest.mark.parametrize("method", METHODS)
def test_half_rate_gives_minus_fifty_percent(method):
    half = [r / 2 for r in ANCHOR_RATE]
    res = bd_rate(ANCHOR_RATE, ANCHOR_PSNR, half, ANCHOR_PSNR, method)
    assert res.value == pytest.approx(-50.0, abs=1e-9)
    assert res.overlap == (28.0, 40.5)
    # and the anchor needs twice the test's rate: +100 %
    back = bd_rate(half, ANCHOR_PSNR, ANCHOR_RATE, ANCHOR_PSNR, method)
    assert back.value == pytest.approx(100.0, abs=1e-9)


@pytest.mark.parametrize("method", METHODS)
def test_plus_one_db_gives_bd_psnr_one(method):
    up = [p + 1.0 for p in ANCHOR_PSNR]
    res = bd_psnr(ANCHOR_RATE, ANCHOR_PSNR, ANCHOR_RATE, up, method)
    assert res.value == pytest.approx(1.0, abs=1e-9)
    assert res.overlap == (0.1, 2.0)


def test_two_point_pchip_is_linear_in_log_rate():
    # anchor: PSNR = 30 + 10 log10(r); test: 1 dB better everywhere on 1..10 bpp.
    # BD-PSNR = 1 dB; BD-rate: log10-rate is lower by 0.1 everywhere -> 10**-0.1 - 1.
    res = bd_psnr([1.0, 10.0], [30.0, 40.0], [1.0, 10.0], [31.0, 41.0])
    assert res.value == pytest.approx(1.0, abs=1e-12)
    res = bd_rate([1.0, 10.0], [30.0, 40.0], [1.0, 10.0], [31.0, 41.0])
    assert res.value == pytest.approx((10**-0.1 - 1) * 100, abs=1e-10)
    assert res.overlap == (31.0, 40.0)


def test_overlap_is_intersection_of_ranges():
    ra, pa = [0.1, 0.3, 0.9, 2.7], [27.0, 31.0, 35.0, 39.0]
    rt, pt = [0.2, 0.5, 1.2, 3.0], [30.0, 33.0, 36.0, 41.0]
    for method in METHODS:
        assert bd_rate(ra, pa, rt, pt, method).overlap == (30.0, 39.0)
        assert bd_psnr(ra, pa, rt, pt, method).overlap == (0.2, 2.7)


def test_nan_points_are_dropped():
    ra, pa = [0.1, 0.3, 0.9, 2.7, 5.0], [27.0, 31.0, 35.0, 39.0, 42.0]
    rt, pt = [0.2, 0.5, 1.2, 3.0], [30.0, 33.0, 36.0, 41.0]
    want = bd_rate(ra, pa, rt, pt)
    # NaN PSNR (undecodable), NaN rate, and inf PSNR (lossless) points are all ignored
    got = bd_rate(
        ra + [0.05, math.nan, 9.0], pa + [math.nan, 30.5, math.inf], rt, pt, method="pchip"
    )
    assert got == want
    assert got.reason == ""


# ---- undefined cases ----------------------------------------------------------------------------


def _assert_undefined(res: BDResult, *words: str) -> None:
    assert isinstance(res, BDResult)
    assert math.isnan(res.value)
    assert res.overlap is None
    assert res.reason
    for word in words:
        assert word in res.reason, res.reason


@pytest.mark.parametrize("method", METHODS)
def test_no_overlap_in_psnr(method):
    ra, pa = [0.1, 0.2, 0.4, 0.8], [30.1, 32.0, 33.5, 35.0]
    rt, pt = [0.1, 0.2, 0.4, 0.8], [36.2, 37.0, 38.5, 40.0]
    res = bd_rate(ra, pa, rt, pt, method)
    _assert_undefined(res, "no overlap", "30.1..35 dB", "36.2..40 dB")
    assert not math.isnan(bd_psnr(ra, pa, rt, pt, method).value)  # rates do overlap


@pytest.mark.parametrize("method", METHODS)
def test_no_overlap_in_rate(method):
    ra, pa = [0.1, 0.2, 0.3, 0.4], [30.0, 32.0, 34.0, 36.0]
    rt, pt = [1.0, 2.0, 3.0, 4.0], [30.0, 32.0, 34.0, 36.0]
    _assert_undefined(bd_psnr(ra, pa, rt, pt, method), "no overlap", "bpp")


@pytest.mark.parametrize("method", METHODS)
def test_zero_length_overlap(method):
    ra, pa = [0.1, 0.2, 0.4, 0.8], [30.0, 32.0, 33.5, 35.0]
    rt, pt = [0.8, 1.6, 3.2, 6.4], [35.0, 37.0, 38.5, 40.0]
    _assert_undefined(bd_rate(ra, pa, rt, pt, method), "zero-length overlap")
    _assert_undefined(bd_psnr(ra, pa, rt, pt, method), "zero-length overlap")


def test_too_few_points():
    for fn in (bd_rate, bd_psnr):
        _assert_undefined(fn([0.5], [30.0], [0.5, 1.0], [31.0, 35.0]), "too few", "anchor")
        _assert_undefined(fn([], [], [0.5, 1.0], [31.0, 35.0]), "too few")
        # three points are enough for pchip but not for the cubic fit
        three = ([0.25, 0.5, 1.0], [29.0, 32.0, 35.0])
        assert not math.isnan(fn(*three, *three, method="pchip").value)
        _assert_undefined(fn(*three, *three, method="cubic"), "too few", "cubic", "4")


@pytest.mark.parametrize("method", METHODS)
def test_non_finite_leaving_too_few_points(method):
    ra = [0.1, math.nan, 0.4, math.inf, 1.6]
    pa = [30.0, 31.0, math.nan, 36.0, -math.inf]
    rt, pt = [0.1, 0.2, 0.4, 0.8], [30.0, 32.0, 34.0, 36.0]
    for fn in (bd_rate, bd_psnr):
        _assert_undefined(fn(ra, pa, rt, pt, method), "too few", "non-finite")
        _assert_undefined(fn(rt, pt, ra, pa, method), "too few", "test")
        all_nan = [math.nan] * 5
        _assert_undefined(fn(ra, all_nan, rt, pt, method), "too few")


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("bad", [0.0, -0.2])
def test_non_positive_rate(method, bad):
    rt, pt = [0.1, 0.2, 0.4, 0.8], [30.0, 32.0, 34.0, 36.0]
    ra = [bad, 0.2, 0.4, 0.8, 1.6]
    pa = [29.0, 32.0, 34.0, 36.0, 38.0]
    for fn in (bd_rate, bd_psnr):
        _assert_undefined(fn(ra, pa, rt, pt, method), "non-positive rate")


@pytest.mark.parametrize("method", METHODS)
def test_non_invertible_curves(method):
    rt, pt = [0.1, 0.2, 0.4, 0.8, 1.6], [30.0, 32.0, 34.0, 36.0, 38.0]
    duplicate_rate = ([0.1, 0.2, 0.2, 0.8, 1.6], [30.0, 31.0, 33.0, 36.0, 38.0])
    duplicate_psnr = ([0.1, 0.2, 0.4, 0.8, 1.6], [30.0, 33.0, 33.0, 36.0, 38.0])
    falling_psnr = ([0.1, 0.2, 0.4, 0.8, 1.6], [30.0, 34.0, 33.0, 36.0, 38.0])
    for fn in (bd_rate, bd_psnr):
        _assert_undefined(fn(*duplicate_rate, rt, pt, method), "duplicate rate", "anchor")
        _assert_undefined(fn(rt, pt, *duplicate_psnr, method), "duplicate PSNR", "test")
        _assert_undefined(fn(*falling_psnr, rt, pt, method), "non-invertible", "decreasing")


def test_caller_errors_raise():
    with pytest.raises(ValueError, match="method"):
        bd_rate([0.1, 1.0], [30.0, 40.0], [0.1, 1.0], [30.0, 40.0], method="akima")
    with pytest.raises(ValueError, match="anchor"):
        bd_psnr([0.1, 1.0, 2.0], [30.0, 40.0], [0.1, 1.0], [30.0, 40.0])


# ---- mean_finite --------------------------------------------------------------------------------


def test_mean_finite():
    assert mean_finite([1.0, math.nan, 3.0, math.inf]) == (2.0, 2)
    assert mean_finite(np.array([-10.0, -20.0])) == (-15.0, 2)
    value, count = mean_finite([math.nan, -math.inf])
    assert math.isnan(value) and count == 0
    value, count = mean_finite([])
    assert math.isnan(value) and count == 0


# ---- few points in the overlap ----------------------------------------------------------------


def test_fewer_than_four_points_in_the_overlap_warn_and_keep_the_value():
    # issue 18: `--bpp 0.5,1` gave a BD-rate from two points per curve with no word of warning
    two_a, two_t = ([0.5, 1.0], [30.0, 34.0]), ([0.5, 1.0], [30.0, 34.0])
    for fn in (bd_rate, bd_psnr):
        result = fn(*two_a, *two_t, names=("spiht", "jpeg2000"))
        assert math.isfinite(result.value) and not result.reason
        assert result.warning == (
            "few points: spiht has 2 and jpeg2000 2 in the overlap (fewer than 4): a rough figure"
        )
    # five points each, but the test curve covers only the top of the anchor's PSNR range:
    # 3 anchor points (33..37 dB) and all 5 test points lie in the overlap
    ra, pa = [0.1, 0.2, 0.4, 0.8, 1.6], [29.0, 31.0, 33.0, 35.0, 37.0]
    rt, pt = [0.5, 0.6, 0.8, 1.0, 1.2], [33.0, 34.0, 35.0, 36.0, 37.0]
    result = bd_rate(ra, pa, rt, pt)
    assert result.overlap == (33.0, 37.0)
    assert "anchor has 3 and test 5 in the overlap" in result.warning
    full = _curve(-1.0, 28.0, [0.15] * 5, [10.0] * 5)
    assert bd_rate(*full, *full).warning == "" == bd_psnr(*full, *full).warning
    assert bd_rate([0.5], [30.0], *two_t).warning == ""  # undefined: a reason, no warning


def test_names_label_reasons():
    falling = ([0.1, 0.2, 0.4, 0.8], [30.0, 34.0, 33.0, 36.0])
    rising = ([0.1, 0.2, 0.4, 0.8], [30.0, 32.0, 34.0, 36.0])
    result = bd_rate(*rising, *falling, names=("`spiht`", "`plonq` on kodim20.png"))
    assert result.reason.startswith("non-invertible curve: `plonq` on kodim20.png has PSNR")
