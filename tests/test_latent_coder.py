"""The nested-interval latent coder on synthetic CompressAI-style tables (no torch needed):
nesting, exact round trips, honest truncation at every cut, overhead, determinism."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("constriction")
pytest.importorskip("scipy")

from plugins.learned.coding import intervals  # noqa: E402
from plugins.learned.coding import latent as lc  # noqa: E402
from plugins.learned.coding.bits import (  # noqa: E402
    Reader,
    put_varint,
    read_varint,
    unzigzag,
    zigzag,
)
from plugins.learned.levels import PlonqLevels  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
SIGMA = np.exp(np.linspace(np.log(0.11), np.log(40.0), 12))


def gaussian_tables(sigma: np.ndarray, precision: int = 16):
    """CompressAI-like tables: pmf of N(0, s) over integers in [-c, c] plus an overflow bin,
    every frequency >= 1, summing to 2**precision."""
    total = 1 << precision
    c = np.ceil(sigma * 6.1).astype(np.int64)
    width = int(2 * c.max() + 3)
    cdf = np.zeros((len(sigma), width), dtype=np.int64)
    for i, (s, ci) in enumerate(zip(sigma, c, strict=True)):
        n = np.arange(-ci, ci + 1)
        upper = np.array([0.5 * math.erfc(-(k + 0.5) / (s * math.sqrt(2))) for k in n])
        lower = np.array([0.5 * math.erfc(-(k - 0.5) / (s * math.sqrt(2))) for k in n])
        pmf = np.append(upper - lower, 1.0 - upper[-1] + lower[0])
        freq = np.maximum(1, np.round(pmf * (total - len(pmf))).astype(np.int64))
        freq[np.argmax(freq)] += total - freq.sum()
        cdf[i, : len(freq) + 1] = np.concatenate([[0], np.cumsum(freq)])
    return cdf, 2 * c + 3, -c


@pytest.fixture(scope="module")
def tables():
    cdf, length, offset = gaussian_tables(SIGMA)
    return lc.build_tables(cdf, length, offset, PlonqLevels(4), SIGMA, "mean")


def sample(tables, count: int, seed: int = 0, outliers: int = 3):
    rng = np.random.default_rng(seed)
    idx = np.sort(rng.integers(0, len(SIGMA), size=count))[::-1].copy()
    fine = np.rint(rng.normal(0.0, SIGMA[idx] * 1.3)).astype(np.int64)
    picks = rng.choice(count, size=outliers, replace=False)
    fine[picks] = tables.c[idx[picks]] + np.array([1, 7, 100000])[:outliers]
    fine[picks[:1]] *= -1
    return fine, idx


def test_log_table_is_exact():
    table = lc.log_table()
    reference = [0] + [(x**16).bit_length() - 1 for x in range(1, 65537)]
    assert table.tolist() == reference
    assert table[1] == 0 and table[2] == 16 and table[65536] == 256
    for x in (3, 1000, 12345, 65535):
        assert table[x] == math.floor(16 * math.log2(x) + 1e-12)
        q = int(table[x])
        assert 2**q <= x**16 < 2 ** (q + 1)


def test_varints_and_zigzag():
    for value in (0, 1, 127, 128, 300, 2**40):
        out = bytearray()
        put_varint(out, value)
        assert read_varint(bytes(out), 0) == (value, len(out))
        assert read_varint(bytes(out[:-1]), 0) is None
    for value in (-300, -1, 0, 1, 299):
        assert unzigzag(zigzag(value)) == value
    from bench.codec import PrefixTooShort

    with pytest.raises(PrefixTooShort):
        Reader(b"\x80").varint()


def test_levels_are_nested_and_end_on_the_integers(tables):
    for level in range(1, tables.num_levels + 1):
        parents = np.arange(tables.level_offset[level - 1], tables.level_offset[level])
        for p in parents:
            first, count = tables.first_child[p], tables.n_children[p]
            real = count - 1 if level == 1 else count  # roots carry the escape child
            kids = np.arange(first, first + real)
            assert tables.lo[kids[0]] == tables.lo[p] and tables.hi[kids[-1]] == tables.hi[p]
            assert np.all(tables.lo[kids[1:]] == tables.hi[kids[:-1]] + 1)
            assert tables.freq[kids].sum() == tables.freq[p]
    last = np.arange(tables.level_offset[-2], tables.level_offset[-1])
    assert np.all(tables.lo[last] == tables.hi[last])
    assert np.all(tables.recon[last] == tables.lo[last])


def test_round_trip_and_honest_truncation(tables):
    fine, idx = sample(tables, 4000)
    units = 256 * lc.UNITS_PER_BIT
    data, stats = lc.encode_latent(tables, fine, idx, units)
    assert stats.escapes == 3
    state = lc.decode_latent(tables, data, 0, idx, units)
    assert state.complete and state.end == len(data)
    assert np.array_equal(lc.reconstruct(tables, state), fine.astype(np.float64))
    cuts = sorted(set(np.linspace(0, len(data), 60).astype(int)) | {1, 2, 3})
    previous = -1
    for cut in cuts:
        part = lc.decode_latent(tables, data[:cut], 0, idx, units)
        assert part.end <= cut
        # every element's decoded interval contains its true value: no garbage past a cut
        known = ~part.escaped
        bins = part.bins[known]
        assert np.all((tables.lo[bins] <= fine[known]) | (tables.c[idx[known]] < abs(fine[known])))
        inside = known & (np.abs(fine) <= tables.c[idx])
        assert np.all(tables.lo[part.bins[inside]] <= fine[inside])
        assert np.all(tables.hi[part.bins[inside]] >= fine[inside])
        assert np.array_equal(part.escape_value[part.escaped], fine[part.escaped])
        assert part.stats.chunks >= previous
        previous = part.stats.chunks


def test_overhead_is_small_and_chunking_is_deterministic(tables):
    fine, idx = sample(tables, 30000, seed=1, outliers=0)
    units = 1024 * lc.UNITS_PER_BIT
    data, stats = lc.encode_latent(tables, fine, idx, units)
    assert stats.chunks > 10
    # about one length byte per chunk, well under a byte of coder flush per chunk
    assert stats.overhead_bytes < 1.6 * stats.chunks
    assert stats.overhead_bytes < 0.03 * len(data)
    again, _ = lc.encode_latent(tables, fine, idx, units)
    assert again == data
    untrimmed, raw = lc.encode_latent(tables, fine, idx, units, trim=False)
    assert len(untrimmed) >= len(data)
    state = lc.decode_latent(tables, untrimmed, 0, idx, units)
    assert np.array_equal(lc.reconstruct(tables, state), fine.astype(np.float64))


def test_interval_means():
    from scipy import integrate

    for a, b, s in ((-0.5, 0.5, 1.0), (0.5, 3.5, 1.0), (2.5, 4.5, 0.3), (-7.5, -3.5, 2.0)):
        num = integrate.quad(lambda x, s=s: x * math.exp(-0.5 * (x / s) ** 2), a, b)[0]
        den = integrate.quad(lambda x, s=s: math.exp(-0.5 * (x / s) ** 2), a, b)[0]
        got = intervals.gaussian_interval_mean(np.array([a]), np.array([b]), np.array([s]))[0]
        assert got == pytest.approx(num / den, rel=1e-6, abs=1e-9)
        lam = math.sqrt(2) / s
        num = integrate.quad(lambda x, lam=lam: x * math.exp(-lam * abs(x)), a, b)[0]
        den = integrate.quad(lambda x, lam=lam: math.exp(-lam * abs(x)), a, b)[0]
        got = intervals.laplace_interval_mean(np.array([a]), np.array([b]), np.array([lam]))[0]
        assert got == pytest.approx(num / den, rel=1e-6, abs=1e-9)
    # far tails stay finite and inside the interval
    far = intervals.gaussian_interval_mean(np.array([40.5]), np.array([np.inf]), np.array([0.11]))
    assert np.isfinite(far).all() and far[0] >= 40.5
    mid = lc.interval_reconstruction("midpoint", np.array([2]), np.array([5]), np.array([1.0]))
    assert mid[0] == 3.5


DECODE_SCRIPT = r"""
import json, sys
import numpy as np
sys.path.insert(0, sys.argv[1])
from tests.test_latent_coder import SIGMA, gaussian_tables
from plugins.learned.coding import latent as lc
from plugins.learned.levels import PlonqLevels
cdf, length, offset = gaussian_tables(SIGMA)
tables = lc.build_tables(cdf, length, offset, PlonqLevels(4), SIGMA, "mean")
job = json.loads(open(sys.argv[2]).read())
data = bytes.fromhex(job["data"])
idx = np.array(job["idx"], dtype=np.int64)
out = []
for cut in job["cuts"]:
    state = lc.decode_latent(tables, data[:cut], 0, idx, job["units"])
    out.append(lc.reconstruct(tables, state).tolist())
print(json.dumps(out))
"""


def test_decodes_identically_in_a_fresh_process(tables, tmp_path):
    fine, idx = sample(tables, 3000, seed=2)
    units = 512 * lc.UNITS_PER_BIT
    data, _ = lc.encode_latent(tables, fine, idx, units)
    cuts = [0, len(data) // 3, len(data) // 2 + 1, len(data)]
    job = tmp_path / "job.json"
    job.write_text(
        json.dumps({"data": data.hex(), "idx": idx.tolist(), "cuts": cuts, "units": units})
    )
    done = subprocess.run(
        [sys.executable, "-c", DECODE_SCRIPT, str(ROOT), str(job)],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=ROOT,
    )
    assert done.returncode == 0, done.stderr
    fresh = json.loads(done.stdout)
    for cut, values in zip(cuts, fresh, strict=True):
        here = lc.reconstruct(tables, lc.decode_latent(tables, data[:cut], 0, idx, units))
        assert np.array_equal(np.array(values), here)


def test_a_cut_inside_a_level_has_refined_the_widest_priors_first(tables):
    fine, idx = sample(tables, 6000, seed=3, outliers=0)
    order = lc.refinement_order(idx[::-1])  # idx was sorted descending: reversing scrambles it
    assert np.all(np.diff(idx[::-1][order]) <= 0)
    units = 128 * lc.UNITS_PER_BIT
    data, stats = lc.encode_latent(tables, fine, idx, units)
    assert stats.chunks_per_level[1] > 2
    # find a cut in the middle of level 2: after level 1 and some level-2 chunks
    for cut in range(len(data)):
        part = lc.decode_latent(tables, data[:cut], 0, idx, units)
        if part.stats.levels_complete == 1 and part.stats.chunks > stats.chunks_per_level[0] + 1:
            break
    else:
        pytest.fail("no cut inside level 2")
    at_level2 = part.bins >= tables.level_offset[2]
    coded = np.flatnonzero(tables.n_children[_level1_bins(tables, fine, idx)] > 1)
    # the refined elements are a prefix of level 2's coding order (largest scale first)
    done = np.intersect1d(np.flatnonzero(at_level2), coded)
    assert 0 < len(done) < len(coded)
    assert np.array_equal(done, coded[: len(done)])
    assert idx[done].min() >= idx[np.setdiff1d(coded, done)].max()


def _level1_bins(tables, fine, idx):
    c = tables.c[idx]
    flat = tables.fine_offset[idx] + np.clip(fine, -c, c) + c
    return tables.bin_of_fine[0][flat]
