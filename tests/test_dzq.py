"""DZQ: the Laplacian formulas, the embedded layers, rate targeting, and the codec with real
weights on Kodak crops."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from bench.testing import ConformanceSuite
from plugins.learned.testing import (
    SKIP_REASON,
    assert_fresh_process_decodes_alike,
    dependencies_missing,
    test_weights_spec,
)

ROOT = Path(__file__).resolve().parents[1]
WEIGHTS = test_weights_spec()
MISSING = dependencies_missing()
needs_model = [
    pytest.mark.skipif(MISSING is not None, reason=str(MISSING)),
    pytest.mark.skipif(WEIGHTS is None, reason=SKIP_REASON),
]


def kodak(name: str, top: int, left: int, height: int, width: int) -> np.ndarray:
    from bench.images import load_rgb

    image = load_rgb(ROOT / "datasets" / "kodak" / name)
    return np.ascontiguousarray(image[top : top + height, left : left + width])


# -- formulas (no model needed) -------------------------------------------------------------


def test_det_exp_matches_exp():
    from plugins.dzq.codec import det_exp

    for x in (0.0, 1e-9, 0.3, 0.6931471805599453, 1.0, 7.25, 39.9, 300.0):
        assert det_exp(x) == pytest.approx(math.exp(x), rel=1e-14)


def test_rounding_offset_limits_and_centroid_condition():
    from scipy import integrate

    from plugins.dzq.codec import rounding_offset

    assert rounding_offset(1e-6) == pytest.approx(0.5, abs=1e-6)
    assert rounding_offset(100.0) == pytest.approx(0.01, rel=1e-12)
    values = [rounding_offset(t) for t in np.geomspace(1e-4, 80, 60)]
    assert all(0 < v <= 0.5 for v in values) and values == sorted(values, reverse=True)
    # the uniform reconstruction point j*D is the Laplacian centroid of its bin
    for sigma, step in ((1.0, 1.0), (0.5, 3.0), (4.0, 2.5)):
        lam = math.sqrt(2) / sigma
        theta = rounding_offset(lam * step)
        for j in (1, 2, 5):
            a, b = (j - theta) * step, (j + 1 - theta) * step
            num = integrate.quad(lambda x, lam=lam: x * math.exp(-lam * x), a, b)[0]
            den = integrate.quad(lambda x, lam=lam: math.exp(-lam * x), a, b)[0]
            assert num / den == pytest.approx(j * step, rel=1e-9)


def test_layers_embed_and_dead_zone_grows_as_the_prior_narrows():
    from plugins.dzq.codec import DzqLayers

    sigma = tuple(np.geomspace(0.11, 64, 20))
    layers = DzqLayers((1536, 640, 320, 256), sigma)
    n = np.arange(-60, 61)
    zero_width = []
    for i in range(len(sigma)):
        scale = np.full_like(n, i)
        q1 = layers.labels(1, n, scale)
        zero_width.append(np.count_nonzero(q1 == 0))
        assert np.all(np.diff(q1) >= 0)  # monotone: bins are runs
        assert np.array_equal(layers.labels(4, n, scale), n)  # last layer: the base grid
    assert zero_width == sorted(zero_width, reverse=True)
    assert zero_width[0] > zero_width[-1]


# -- with the model --------------------------------------------------------------------------


@pytest.fixture(scope="module")
def dzq():
    from plugins.dzq.codec import DzqCodec

    return DzqCodec(weights=WEIGHTS)


@pytest.mark.slow
class TestDzqConformance(ConformanceSuite):
    codec = "dzq"
    params = {"weights": WEIGHTS}
    pytestmark = needs_model


@needs_model[0]
@needs_model[1]
def test_layer_rates_hit_their_targets(dzq):
    from plugins.learned.coding import latent as lc
    from plugins.learned.nested import cached_tables

    image = kodak("kodim21.png", 150, 200, 192, 256)
    base = dzq.base
    analysis = base.analyse(image)
    hyper = analysis.hyper
    order = lc.refinement_order(hyper.indexes)
    fine = np.rint(analysis.y - hyper.means).reshape(-1).astype(np.int64)[order]
    idx = hyper.indexes.reshape(-1).astype(np.int64)[order]
    scheme, header = dzq.choose_scheme(base, analysis, fine, idx)
    assert scheme.step_units[-1] == 256 and list(scheme.step_units) == sorted(
        scheme.step_units, reverse=True
    )
    tables = cached_tables(base, scheme, "laplace")
    full = lc.partition_bits(base.grid, scheme, scheme.num_levels, fine, idx)
    for level, fraction in enumerate(dzq.rate_fractions, start=1):
        bits = lc.partition_bits(base.grid, scheme, level, fine, idx)
        assert bits <= fraction * full * 1.001
        assert bits >= fraction * full * 0.6  # the rate moves in jumps with the step
        assert bits == pytest.approx(lc.bin_bits(tables, level, fine, idx).sum(), rel=1e-9)
    # the stream's layer boundaries: decoding all chunks of layer k gives layer k's bins
    data, stats = dzq.encode_with_stats(image)
    assert len(stats.chunks_per_level) == 4


@needs_model[0]
@needs_model[1]
def test_configurable_layers_and_absolute_targets(dzq):
    from bench.metrics import psnr_rgb
    from plugins.dzq.codec import DzqCodec

    image = kodak("kodim08.png", 300, 300, 96, 128)
    three = DzqCodec(weights=WEIGHTS, layers=3, layer_bpp=(0.3, 0.8))
    data = three.encode(image)
    decoded = three.decode_full(data)
    assert decoded.state.stats.levels_complete == 3
    assert np.array_equal(decoded.image, dzq.decode(dzq.encode(image)))  # same full quality
    half = three.decode(data[: len(data) // 2])
    assert psnr_rgb(image, half) < psnr_rgb(image, decoded.image)
    with pytest.raises(ValueError):
        DzqCodec(weights=WEIGHTS, layers=3, rate_fractions=(0.5, 0.2))


@needs_model[0]
@needs_model[1]
def test_decodes_identically_in_a_fresh_process(dzq, tmp_path):
    image = kodak("kodim20.png", 250, 380, 40, 56)
    assert_fresh_process_decodes_alike(dzq, "plugins.dzq.codec:DzqCodec", WEIGHTS, image, tmp_path)
