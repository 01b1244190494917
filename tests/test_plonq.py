"""PLONQ, Naive Scaling and the base model's own stream, with real weights on Kodak crops."""

from __future__ import annotations

import subprocess
import sys
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

pytestmark = [
    pytest.mark.skipif(MISSING is not None, reason=str(MISSING)),
    pytest.mark.skipif(WEIGHTS is None, reason=SKIP_REASON),
]


def kodak(name: str, top: int = 0, left: int = 0, height: int = 10**6, width: int = 10**6):
    from bench.images import load_rgb

    image = load_rgb(ROOT / "datasets" / "kodak" / name)
    return np.ascontiguousarray(image[top : top + height, left : left + width])


@pytest.fixture(scope="module")
def plonq():
    from plugins.plonq.codec import PlonqCodec

    return PlonqCodec(weights=WEIGHTS)


@pytest.fixture(scope="module")
def msh():
    from plugins.learned.ladder import BaseModelLadder

    return BaseModelLadder(weights=WEIGHTS)


@pytest.mark.slow
class TestPlonqConformance(ConformanceSuite):
    codec = "plonq"
    params = {"weights": WEIGHTS}


@pytest.mark.slow
class TestMshConformance(ConformanceSuite):
    codec = "msh"
    params = {"weights": WEIGHTS}


@pytest.mark.slow
class TestNaiveScalingConformance(ConformanceSuite):
    codec = "plonq-naive"
    params = {"weights": WEIGHTS, "scales": [4.0, 1.0]}


def test_plugin_import_is_light_and_registers_codecs():
    code = (
        "import sys; import plugins.plonq, plugins.dzq; "
        "assert 'torch' not in sys.modules and 'compressai' not in sys.modules; "
        "from bench.registry import load_registry; r = load_registry(entry_points=False); "
        "print(sorted(n for n in r.codecs if n in ('plonq', 'plonq-naive', 'msh', 'dzq')))"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=120
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "['dzq', 'msh', 'plonq', 'plonq-naive']"


def test_the_grid_is_nested_with_an_uneven_centre_bin():
    from plugins.learned.levels import PlonqLevels

    levels = PlonqLevels(4)
    n = np.arange(-40, 41)
    for level, step in zip(range(1, 5), (8, 4, 2, 1), strict=True):
        assert levels.step(level) == step
        q = levels.labels(level, n, np.zeros_like(n))
        assert np.count_nonzero(q == 0) == 2 * step - 1  # the centre (dead-zone) bin
        assert np.count_nonzero(q == 1) == step and n[q == 1].min() == step
        assert np.all(n[q == 2][0] == 2 * step)  # grid point k*step opens bin k
        if level > 1:  # every coarser bin is a union of finer bins
            coarse = levels.labels(level - 1, n, np.zeros_like(n))
            for label in np.unique(q):
                assert len(np.unique(coarse[q == label])) == 1
    assert np.array_equal(levels.labels(4, n, np.zeros_like(n)), n)


def test_finest_level_matches_the_base_model(plonq, msh):
    from bench.metrics import psnr_rgb

    image = kodak("kodim19.png", 200, 200, 256, 256)
    full = plonq.encode(image)
    base = msh.encode_at(image, "base")
    ours, theirs = plonq.decode(full), msh.decode(base)
    assert len(full) <= 1.03 * len(base)
    assert abs(psnr_rgb(image, ours) - psnr_rgb(image, theirs)) <= 0.05


def test_naive_scaling_at_scale_one_is_the_base_model(msh):
    """Each table row coded with its own table: s = 1 costs what the base model's stream costs
    (version 1 grouped rows under the wrong tables and was five times larger)."""
    from bench.metrics import psnr_rgb
    from plugins.learned.ladder import NaiveScalingLadder

    image = kodak("kodim19.png", 200, 200, 256, 256)
    naive = NaiveScalingLadder(weights=WEIGHTS)
    ours, base = naive.encode_at(image, 1.0), msh.encode_at(image, "base")
    assert abs(len(ours) - len(base)) <= 0.01 * len(base)
    assert psnr_rgb(image, naive.decode(ours)) == pytest.approx(
        psnr_rgb(image, msh.decode(base)), abs=0.05
    )
    sizes = [len(naive.encode_at(image, s)) for s in naive.settings()]
    assert sizes == sorted(sizes)  # coarser scale, fewer bytes


def test_prefixes_refine_from_the_prior_mean(plonq):
    from bench.metrics import psnr_rgb

    image = kodak("kodim23.png", 100, 300, 128, 128)
    data, stats = plonq.encode_with_stats(image)
    first = plonq.decode_full(data)
    header = first.header_bytes
    head = plonq.decode_full(data[:header])
    assert head.state.stats.chunks == 0
    assert sum(stats.chunks_per_level) == first.state.stats.chunks
    psnrs = [
        psnr_rgb(image, plonq.decode(data[:c]))
        for c in np.linspace(header, len(data), 8).astype(int)
    ]
    assert psnrs[-1] > psnrs[0] + 1.0
    assert max(max(psnrs[:i]) - p for i, p in enumerate(psnrs) if i) < 0.25


def test_memo_gives_the_same_pixels(plonq):
    from plugins.plonq.codec import PlonqCodec

    memo = PlonqCodec(weights=WEIGHTS, memo=True)
    image = kodak("kodim05.png", 40, 40, 64, 80)
    data = plonq.encode(image)
    assert memo.encode(image) == data
    for cut in (len(data) // 2, len(data) // 2 + 1, len(data)):
        assert np.array_equal(memo.decode(data[:cut]), plonq.decode(data[:cut]))
        assert np.array_equal(memo.decode(data[:cut]), plonq.decode(data[:cut]))


def test_info_reports_weights_and_size(plonq):
    from bench.hashing import sha256_file
    from plugins.learned.weights import resolve

    info = plonq.info()
    resolved = resolve(WEIGHTS)
    assert info.weights.sha256 == sha256_file(resolved.path)
    assert info.weights.source in ("bundled", "user")
    assert info.num_parameters > 1_000_000
    assert info.weights_bytes == resolved.path.stat().st_size
    assert "NOT the paper's" in info.weights.description
    assert info.parameters["steps"] == [8, 4, 2, 1]


def test_other_weights_are_refused(plonq, tmp_path):
    image = kodak("kodim01.png", 0, 0, 16, 16)
    data = bytearray(plonq.encode(image))
    data[3] ^= 0xFF  # first byte of the weights sha256 prefix (after tag, H, W)
    with pytest.raises(ValueError, match="weights"):
        plonq.decode(bytes(data))


def test_decodes_identically_in_a_fresh_process(plonq, tmp_path):
    image = kodak("kodim15.png", 300, 100, 48, 72)
    assert_fresh_process_decodes_alike(
        plonq, "plugins.plonq.codec:PlonqCodec", WEIGHTS, image, tmp_path
    )
