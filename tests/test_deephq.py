"""DeepHQ-MS: the hierarchical quantizer's splits and the progressive coder on the real base
model's tables, the codec on Kodak crops with parameter files made here, the parameter file
format, the registry, and the step-2/3 trainer (tiny real runs, the real CLI).

The shipped DeepHQ weights may not exist yet: every test but one builds its own parameters
(:func:`make_params`: the trainer's initial step ladder with per-channel jitter and nested
masks, or a tiny real training run); the one test of the default weights skips until
the file of ``plugins.deephq.DEFAULT_WEIGHTS`` exists in ``plugins/deephq/weights/``.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from conftest import bench_command, kodak_crop
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bench.codec import CodecUnavailable, PrefixTooShort
from bench.testing import ConformanceSuite
from plugins.deephq import DEFAULT_WEIGHTS
from plugins.learned.testing import (
    SKIP_REASON,
    assert_fresh_process_decodes_alike,
    dependencies_missing,
    test_weights_spec,
)

ROOT = Path(__file__).resolve().parents[1]
TRAIN = ROOT.parent / "shared" / "datasets" / "train"
TRAIN_SOURCES = (  # (file, top, left): 160x160 crops for the tiny training runs
    ("bsds500/test/100007.jpg", 40, 60),
    ("bsds500/test/100039.jpg", 100, 20),
    ("mcmaster18/01.png", 200, 150),
)
WEIGHTS = test_weights_spec()  # the base model's weights
MISSING = dependencies_missing()
DEFAULT_DEEPHQ = (
    ROOT / "plugins" / "deephq" / "weights" / f"{DEFAULT_WEIGHTS.split(':', 1)[1]}.safetensors"
)
LAYERS = 8
CROP = ("kodim23.png", 200, 300, 64, 64)

pytestmark = [
    pytest.mark.skipif(MISSING is not None, reason=str(MISSING)),
    pytest.mark.skipif(WEIGHTS is None, reason=SKIP_REASON),
]
needs_train_data = pytest.mark.skipif(
    not all((TRAIN / s).is_file() for s, _, _ in TRAIN_SOURCES),
    reason=f"training images not present under {TRAIN}",
)


# -- helpers ----------------------------------------------------------------------------------


def make_params(base, seed: int):
    """Steps: the trainer's initial ladder ``2 ** ((L - 1 - l) / 2)`` (11.3 ... 1.4, then 1)
    times 0.8-1.25 per layer and channel (float32-exact, at least 1, 1 in the last layer), so
    that splits meet slivers; nested thresholds: some channels selected from layer 1, some never
    (threshold > 0 at the last layer), the others in between."""
    from plugins.deephq.params import DeepHQParams

    rng = np.random.default_rng(seed)
    ladder = np.array([2.0 ** ((LAYERS - 1 - k) / 2) for k in range(LAYERS)])[:, None]
    steps = np.maximum(ladder * rng.uniform(0.8, 1.25, (LAYERS, base.M)), 1.0)
    steps[-1] = 1.0
    steps = steps.astype(np.float32).astype(np.float64)
    top = rng.integers(0, 30, base.M)
    drops = rng.integers(0, 6, (LAYERS, base.M))
    drops[0] = 0
    thr = np.maximum(top - np.cumsum(drops, axis=0), 0)
    thr[:, :8] = 0  # always selected
    thr[:, 8:16] = 64  # never selected
    return DeepHQParams(steps, thr, base.resolved.sha256)


def save_params(params, path: Path) -> str:
    from plugins.deephq import params as dp

    dp.save(params, path, {"base_weights": WEIGHTS})
    return str(path)


@pytest.fixture(autouse=True)
def _keep_torch_threads():
    """The trainers set torch's thread count for the whole process: put it back after each test
    (later tests compare decodes across processes)."""
    import torch

    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)


def header_length(data: bytes) -> int:
    """Bytes of the DeepHQ header (tag, H, W, 2 x 4 sha bytes, flags, chunk, len(z), z)."""
    from plugins.learned.coding.bits import Reader

    reader = Reader(data)
    reader.byte()
    reader.varint(), reader.varint()
    reader.take(8)
    reader.byte()
    reader.varint()
    reader.take(reader.varint())
    return reader.pos


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    from bench.metrics import psnr_rgb

    return psnr_rgb(a, b)


def fine_indices(codec, image):
    """What the encoder codes: fine indices, scale indexes and channels in refinement order."""
    base = codec.base
    analysis = base.analyse(image)
    order, idx, ch = codec.latent_order(analysis.hyper)
    fine = np.rint(analysis.y - analysis.hyper.means).reshape(-1).astype(np.int64)[order]
    return fine, idx, ch


@pytest.fixture(scope="module")
def base():
    from plugins.learned.model_io import BaseModel

    return BaseModel.get(WEIGHTS)


@pytest.fixture(scope="module")
def tables(base):
    """The base model's integer CDF rows, support half-widths and scale table."""
    return SimpleNamespace(
        cdf=np.asarray(base.cdf, np.int64),
        c=-np.asarray(base.offset, np.int64),
        sigma=np.asarray(base.scale_table, np.float64),
    )


def context(tables, steps, thresholds, sliver_fraction=None, grid=None):
    from plugins.deephq import coder

    extra = {} if sliver_fraction is None else {"sliver_fraction": sliver_fraction}
    extra.update({} if grid is None else {"grid": grid})
    return coder.CoderContext(
        cdf=tables.cdf,
        c=tables.c,
        steps=np.asarray(steps, np.float64),
        mask_index_threshold=np.asarray(thresholds, np.int64),
        sigma=tables.sigma,
        **extra,
    )


@pytest.fixture(scope="module")
def params_file(base, tmp_path_factory) -> str:
    return save_params(make_params(base, 0), tmp_path_factory.mktemp("deephq") / "p0.safetensors")


@pytest.fixture(scope="module")
def codec(params_file):
    from plugins.deephq.codec import DeepHQCodec

    return DeepHQCodec(weights=params_file, order="scale")


@pytest.fixture(scope="module")
def crop():
    return kodak_crop(*CROP)


@pytest.fixture(scope="module")
def encoded(codec, crop):
    return codec.encode_with_stats(crop)


# -- the quantizer: splitting an interval ----------------------------------------------------


def _labels(n: np.ndarray, d: float, grid: str = "mid-tread") -> np.ndarray:
    """The module doc's labels, written out: ``floor(n / D + 1/2)``, or ``trunc(n / D)``."""
    if grid == "dead-zone":
        return np.trunc(n / d).astype(np.int64)
    return np.floor(n / d + 0.5).astype(np.int64)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_split_children_are_the_label_runs_of_the_parent(tables, data):
    """For random parents in a real scale index's support, random steps and every level: the
    children tile the parent, each boundary is a label change (the ones missing are merged
    slivers at the edges), no edge child is a sliver, and the frequencies are the base model's
    integer CDF mass (plus the escape at level 1)."""
    from plugins.deephq import coder

    level = data.draw(st.integers(1, LAYERS), label="level")
    channels = 3
    step_value = st.one_of(
        st.floats(1.0, 3.0), st.floats(1.0, 40.0), st.sampled_from([1.0, 1.5, 2.0, 2.5, 4.0, 8.0])
    )
    steps = np.ones((LAYERS, channels))
    if level < LAYERS:
        steps[level - 1] = data.draw(st.lists(step_value, min_size=channels, max_size=channels))
    tau = data.draw(st.sampled_from([coder.SLIVER_FRACTION] * 3 + [0.0, 0.9]), label="tau")
    grid = data.draw(st.sampled_from(coder.GRIDS), label="grid")
    ctx = context(tables, steps, np.zeros((LAYERS, channels)), tau, grid)

    rows = []
    for _ in range(data.draw(st.integers(1, 6), label="parents")):
        if rows and data.draw(st.booleans()):
            rows.append(rows[data.draw(st.integers(0, len(rows) - 1))])  # a shared parent
            continue
        i = data.draw(st.integers(0, len(tables.c) - 1))
        c = int(tables.c[i])
        lo = data.draw(st.integers(-c, c))
        width = data.draw(st.one_of(st.integers(0, 40), st.integers(0, 2 * c)))
        rows.append((i, data.draw(st.integers(0, channels - 1)), lo, min(c, lo + width)))
    idx, ch, lo, hi = (np.array(col, np.int64) for col in zip(*rows, strict=True))
    n = len(rows)
    el = coder.Elements(
        idx, ch, lo.copy(), hi.copy(), np.full(n, level - 1), np.zeros(n, bool), np.zeros(n, int)
    )
    ids = np.array(data.draw(st.permutations(range(n))), np.int64)
    sp = coder.split(ctx, el, ids, level)
    values = np.array([data.draw(st.integers(lo[e], hi[e])) for e in ids], np.int64)
    chosen = sp.symbols(values)
    logt = np.log2

    assert (sp.escape is not None) == (level == 1)
    for p, e in enumerate(ids):
        g, i, c, d = sp.group[p], idx[e], int(tables.c[idx[e]]), steps[level - 1, ch[e]]
        first, count = sp.first[g], sp.count[g]
        starts, ends = sp.starts[first : first + count], sp.ends[first : first + count]
        freq = sp.freq[first : first + count]
        # contiguous, non-empty, exactly the parent
        assert count >= 1 and starts[0] == lo[e] and ends[-1] == hi[e]
        assert np.all(ends >= starts) and np.all(starts[1:] == ends[:-1] + 1)
        # the grid's labels: boundaries are label changes; a change that is not a boundary is
        # an edge sliver merged into its neighbour
        span = np.arange(lo[e], hi[e] + 1)
        lab = _labels(span, d, grid)
        changes = span[1:][lab[1:] != lab[:-1]]
        assert set(starts[1:].tolist()) <= set(changes.tolist())
        for m in sorted(set(changes.tolist()) - set(starts[1:].tolist())):
            head = m == changes[0] and m - lo[e] < tau * d
            tail = m == changes[-1] and hi[e] - m + 1 < tau * d
            assert head or tail, (m, changes, lo[e], hi[e], d)
        if count >= 2:
            assert ends[0] - starts[0] + 1 >= tau * d
            assert ends[-1] - starts[-1] + 1 >= tau * d
        if d == 1.0 and tau <= 1.0:
            assert count == hi[e] - lo[e] + 1  # the base grid: single integers
        # frequencies: the parent's CDF mass, split exactly
        assert np.array_equal(freq, tables.cdf[i, ends + c + 1] - tables.cdf[i, starts + c])
        assert np.all(freq > 0)
        mass = tables.cdf[i, hi[e] + c + 1] - tables.cdf[i, lo[e] + c]
        assert freq.sum() == mass
        escape = tables.cdf[i, 2 * c + 2] - tables.cdf[i, 2 * c + 1] if level == 1 else 0
        assert sp.total[g] == mass + escape
        if level == 1:
            assert sp.escape[g] == escape > 0
        row = sp.probs(p, p + 1)[0]
        assert np.array_equal(row[:count], freq) and row.sum() == sp.total[g]
        # expected cost: the entropy of the row in 1/16 bit, from the integer log table
        probs = row[row > 0] / row.sum()
        entropy_units = -16 * float((probs * logt(probs)).sum())
        assert abs(sp.weight[p] - entropy_units) < 2
        # the child holding each value
        assert starts[chosen[p]] <= values[p] <= ends[chosen[p]]
    # a group is a parent: same channel, scale index and interval
    key = [(ch[e], idx[e], lo[e], hi[e]) for e in ids]
    for a in range(n):
        for b in range(n):
            assert (sp.group[a] == sp.group[b]) == (key[a] == key[b])
    # refine: what gets a symbol has two children or more (roots: the escape child too); the
    # rest moves down a level for free, its interval unchanged; final intervals wait
    one_child = np.zeros(n, bool)
    one_child[ids] = sp.count[sp.group] == 1
    el.level[:] = level - 1
    coded, refined = coder.refine(ctx, el, level, level)
    todo = (lo != hi) | (level == 1)
    needs_symbol = todo & ((level == 1) | ~one_child)
    assert sorted(coded.tolist()) == np.flatnonzero(needs_symbol).tolist()
    assert (refined is None) == (not needs_symbol.any())
    if refined is not None and level > 1:
        assert np.all(refined.count[refined.group] >= 2)
    assert np.array_equal(el.lo, lo) and np.array_equal(el.hi, hi)
    assert np.array_equal(el.level, np.where(todo & ~needs_symbol, level, level - 1))


# -- the coder on synthetic latents -----------------------------------------------------------


def synthetic_latent(tables, rng, count: int, channels: int):
    """Scale indexes in refinement order (descending), channels, fine indices drawn around 0
    with the prior's spread, and three outliers beyond the support (escapes)."""
    idx = np.sort(rng.integers(0, len(tables.c), count))[::-1].copy()
    ch = rng.integers(0, channels, count)
    fine = np.rint(rng.normal(0.0, tables.sigma[idx] * 1.3)).astype(np.int64)
    picks = rng.choice(count, size=3, replace=False)
    fine[picks] = tables.c[idx[picks]] + np.array([1, 7, 100_000])
    fine[picks[0]] *= -1
    return fine, idx, ch


def _state(el) -> tuple[np.ndarray, ...]:
    return el.lo, el.hi, el.level, el.escaped, el.escape_value


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    seed=st.integers(0, 2**32 - 1),
    variant=st.sampled_from(["steps <= 2", "wide steps", "wide steps, no slivers"]),
    layers=st.sampled_from([1, 3, 8]),
    cuts=st.lists(st.floats(0.0, 1.0), min_size=2, max_size=6),
    grid=st.sampled_from(["mid-tread", "dead-zone"]),
)
def test_coder_round_trip_and_honest_truncation(tables, seed, variant, layers, cuts, grid):
    """Full decode gives every selected element's fine index (or escaped value) and leaves the
    never-selected at their root (reconstructed at the prior mean); the coded probabilities
    multiply to the base model's own. A cut stream decodes to intervals holding the true
    values, exactly what the stream stopped after the same chunk decodes to, nested as the
    prefix grows, with every element of a completed layer at that layer's level."""
    from plugins.deephq import coder
    from plugins.learned.coding import latent as lc

    rng = np.random.default_rng(seed)
    channels = 5
    steps = np.ones((layers, channels))
    wide = variant.startswith("wide")
    no_slivers = variant.endswith("no slivers")
    steps[:-1] = rng.uniform(1.0, 24.0 if wide else 2.0, (layers - 1, channels))
    thr = np.minimum.accumulate(rng.integers(0, 40, (layers, channels)), axis=0)
    thr[:, 0] = 0
    ctx = context(tables, steps, thr, 0.0 if no_slivers else None, grid)
    fine, idx, ch = synthetic_latent(tables, rng, int(rng.integers(200, 1500)), channels)
    units = int(rng.choice([64, 256, 1024])) * lc.UNITS_PER_BIT
    c = tables.c[idx]
    inside = np.abs(fine) <= c
    selected = idx >= thr[-1, ch]

    data, stats = coder.encode(ctx, fine, idx, ch, units)
    full = coder.decode(ctx, data, 0, idx, ch, units)
    # the cuts' decodes share one layout (it depends on idx and ch alone; the codec caches it
    # per stream the same way): preparing it is most of a small latent's decode time
    layout = coder.prepare(ctx, idx, ch)
    el = full.elements
    assert full.complete and full.end == len(data)
    assert full.stats.chunks == stats.chunks and full.stats.symbols == stats.symbols
    assert np.array_equal(el.escaped, selected & ~inside)
    assert full.stats.escapes == stats.escapes == int((selected & ~inside).sum())
    assert np.array_equal(el.escape_value[el.escaped], fine[el.escaped])
    done = selected & inside
    assert np.all(el.lo[done] == fine[done]) and np.all(el.hi[done] == fine[done])
    assert np.all(el.level[~selected] == 0)
    assert np.array_equal(el.lo[~selected], -c[~selected])
    assert np.array_equal(el.hi[~selected], c[~selected])
    for mode in ("mean", "midpoint"):
        expected = np.where(selected, fine, 0).astype(np.float64)
        assert np.array_equal(coder.reconstruct(ctx, el, mode), expected)
        assert np.array_equal(full.reconstruct(mode), expected)
    # conditional probabilities multiply to the base model's probability of each fine index
    col = np.clip(fine, -c, c) + c
    f = np.where(
        inside,
        tables.cdf[idx, col + 1] - tables.cdf[idx, col],
        tables.cdf[idx, 2 * c + 2] - tables.cdf[idx, 2 * c + 1],
    )
    assert stats.ideal_bits == pytest.approx(float(-np.log2(f[selected] / 65536.0).sum()), 1e-9)

    lengths = sorted({round(u * len(data)) for u in cuts} | {0, max(len(data) - 1, 0)})
    previous = None
    for k in lengths:
        part = coder.decode(ctx, data[:k], 0, idx, ch, units, layout)
        p = part.elements
        assert part.end <= k and part.complete == (k == len(data))
        # nothing wrong past the cut: every interval holds the true value
        known = inside & ~p.escaped
        assert np.all((p.lo[known] <= fine[known]) & (fine[known] <= p.hi[known]))
        assert np.all(p.escaped <= (selected & ~inside))
        assert np.array_equal(p.escape_value[p.escaped], fine[p.escaped])
        assert np.all(p.level[~inside & ~p.escaped] == 0)
        # the cut decodes as the stream stopped after its last complete chunk
        stopped = coder.decode(ctx, data[: part.end], 0, idx, ch, units, layout)
        assert stopped.stats.chunks == part.stats.chunks
        for a, b in zip(_state(p), _state(stopped.elements), strict=True):
            assert np.array_equal(a, b)
        # the decoder's per-node reconstruction is that of the interval state, to the bit
        for mode in ("mean", "midpoint"):
            assert part.reconstruct(mode).tobytes() == coder.reconstruct(ctx, p, mode).tobytes()
        if part.end > 0:  # and that chunk ends exactly there
            shorter = coder.decode(ctx, data[: part.end - 1], 0, idx, ch, units, layout)
            assert shorter.stats.chunks == part.stats.chunks - 1
        # layer by layer: a completed layer has brought its selected elements to its level
        done_layers = part.stats.levels_complete
        final = p.escaped | ((p.lo == p.hi) & (p.level > 0))
        if done_layers:
            sel = idx >= thr[done_layers - 1, ch]
            assert np.all((p.level[sel] >= done_layers) | final[sel])
            if no_slivers:  # one label of that layer's step
                d = steps[done_layers - 1, ch]
                ok = sel & ~p.escaped
                lab = (_labels(p.lo[ok], d[ok], grid), _labels(p.hi[ok], d[ok], grid))
                assert np.array_equal(*lab)
        if done_layers < layers:
            later = idx < thr[done_layers, ch]  # not selected yet in the layer being sent
            assert np.all(p.level[later] == 0)
        assert np.all(p.level <= min(done_layers + 1, layers))
        # refinement only: intervals nest as the prefix grows
        if previous is not None:
            assert part.stats.chunks >= previous.stats.chunks
            q = previous.elements
            assert np.all(p.lo >= q.lo) and np.all(p.hi <= q.hi) and np.all(p.level >= q.level)
            assert np.all(p.escaped >= q.escaped)
        previous = part


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    seed=st.integers(0, 2**32 - 1),
    layers=st.sampled_from([1, 4, 8]),
    cuts=st.lists(st.floats(0.0, 1.0), min_size=2, max_size=5),
    grid=st.sampled_from(["mid-tread", "dead-zone"]),
    gains=st.booleans(),
)
def test_slope_order_round_trip_and_honest_truncation(tables, seed, layers, cuts, grid, gains):
    """The slope order codes every element to its fine index (or escape) with the base model's
    probabilities; each sub-pass comes in falling key order (channel gain x node slope), every
    key reaching its pass's threshold, passes in order; a cut decodes to intervals holding the
    true values, as the stream stopped after the same chunk, nested as the prefix grows."""
    from plugins.deephq import coder
    from plugins.learned.coding import latent as lc

    rng = np.random.default_rng(seed)
    channels = 5
    steps = np.ones((layers, channels))
    steps[:-1] = 2.0 ** rng.integers(0, 8, (layers - 1, channels))
    steps[:-1] = np.sort(steps[:-1], axis=0)[::-1]
    gain = rng.uniform(0.5, 2.0, channels) if gains else None
    ctx = coder.CoderContext(
        cdf=tables.cdf, c=tables.c, steps=steps, mask_index_threshold=np.zeros((layers, channels)),
        sigma=tables.sigma, grid=grid, order="slope", channel_gain=gain,
    )  # fmt: skip
    fine, idx, ch = synthetic_latent(tables, rng, int(rng.integers(200, 1200)), channels)
    units = int(rng.choice([64, 256, 1024])) * lc.UNITS_PER_BIT
    c = tables.c[idx]
    inside = np.abs(fine) <= c

    data, stats = coder.encode(ctx, fine, idx, ch, units)
    assert coder.encode(ctx, fine, idx, ch, units)[0] == data
    full = coder.decode(ctx, data, 0, idx, ch, units)
    el = full.elements
    assert full.complete and full.end == len(data) and full.stats.chunks == stats.chunks
    assert np.array_equal(el.escaped, ~inside)
    assert np.array_equal(el.escape_value[el.escaped], fine[el.escaped])
    assert np.all(el.lo[inside] == fine[inside]) and np.all(el.hi[inside] == fine[inside])
    col = np.clip(fine, -c, c) + c
    f = np.where(
        inside,
        tables.cdf[idx, col + 1] - tables.cdf[idx, col],
        tables.cdf[idx, 2 * c + 2] - tables.cdf[idx, 2 * c + 1],
    )
    assert stats.ideal_bits == pytest.approx(float(-np.log2(f / 65536.0).sum()), 1e-9)

    # the order: walk the schedule as the encoder does
    layout = coder.prepare(ctx, idx, ch)
    forest, node = layout.forest, layout.roots.copy()
    escaped = np.zeros(len(idx), bool)
    weight = np.ones(channels) if gain is None else gain
    thresholds = coder.slope_thresholds(weight[ch] * forest.priority[node])
    last = (0, 0)
    for j, level, coded, parents in coder.schedule(layout, node, escaped):
        assert (j, level) > last and len(coded)
        last = (j, level)
        key = weight[ch[coded]] * forest.priority[parents]
        assert np.all(np.diff(key) <= 0) and np.all(key >= thresholds[j - 1])
        assert np.all(forest.level[parents] == level - 1)
        esc = ~inside[coded] if level == 1 else np.zeros(len(coded), bool)
        child = coder._child_holding(forest, parents, np.clip(fine[coded], -c[coded], c[coded]))
        node[coded[~esc]] = child[~esc]
        escaped[coded[esc]] = True
    assert np.all(escaped | forest.final[node])

    lengths = sorted({round(u * len(data)) for u in cuts} | {0, max(len(data) - 1, 0)})
    previous = None
    for k in lengths:
        part = coder.decode(ctx, data[:k], 0, idx, ch, units, layout)
        p = part.elements
        known = inside & ~p.escaped
        assert np.all((p.lo[known] <= fine[known]) & (fine[known] <= p.hi[known]))
        stopped = coder.decode(ctx, data[: part.end], 0, idx, ch, units, layout)
        for a, b in zip(_state(p), _state(stopped.elements), strict=True):
            assert np.array_equal(a, b)
        if previous is not None:
            q = previous.elements
            assert np.all(p.lo >= q.lo) and np.all(p.hi <= q.hi)
            assert np.all(p.escaped >= q.escaped)
        previous = part


def test_a_one_child_node_borrows_its_descendants_slope(tables):
    """A root whose first level has one child (a step wider than its support) would gain
    nothing from its own symbol (the escape's): its slope looks one level further, diluted by
    that symbol's cost, so it stays below its child's."""
    from plugins.deephq import coder

    ctx = coder.CoderContext(
        cdf=tables.cdf, c=tables.c, steps=np.array([[4096.0], [1.0]]),
        mask_index_threshold=np.zeros((2, 1)), sigma=tables.sigma, order="slope",
    )  # fmt: skip
    scales = np.arange(len(tables.c))
    forest = coder.prepare(ctx, scales, np.zeros_like(scales)).forest
    roots = np.arange(len(scales))
    child = forest.first_child[roots]
    assert np.all(forest.count[roots] == 1) and np.all(forest.weight[roots] > 0)
    assert np.all(forest.priority[roots] > 0)
    assert np.all(forest.priority[roots] < forest.priority[child])
    assert np.all(forest.priority[forest.final] == 0)
    # wider priors gain more per bit at their first split (above the narrowest few, whose
    # supports are 3 or 5 integers)
    by_scale = forest.priority[child][::-1]
    assert np.all(np.diff(by_scale[10:]) > 0)


def test_slope_thresholds_are_exact_and_falling():
    from plugins.deephq.coder import slope_thresholds

    keys = np.array([0.0, 3.0e-3, 0.7, 5.0, 40.0])
    out = slope_thresholds(keys)
    assert out[-1] == -1.0 and np.all(np.diff(out) < 0)
    assert out[0] > keys.max() and out[-2] < 3.0e-3 <= out[-3]
    assert {float(np.frexp(t)[0]) for t in out[:-1]} == {0.5, 0.75}
    assert slope_thresholds(np.zeros(3)) == [-1.0]


def test_dead_zone_power_of_two_grids_nest_exactly(tables):
    """Dead-zone steps 16, 8, 4, 2, 1 from the root of every scale index: every interval below
    the root's edge children is one whole bin ``{n: trunc(n / D) = j}`` of its level's step;
    each splits into two bins of the next step, the centre bin into three (PLONQ's nesting)."""
    from plugins.deephq import coder

    ladder = [16.0, 8.0, 4.0, 2.0, 1.0]
    ctx = context(tables, [[d] for d in ladder], np.zeros((len(ladder), 1)), grid="dead-zone")
    idx = np.flatnonzero(tables.c >= 40)
    zero = np.zeros(len(idx), np.int64)
    c = tables.c[idx]
    el = coder.Elements(idx, zero, -c, c.copy(), zero.copy(), zero > 0, zero.copy())
    parents = coder.split(ctx, el, np.arange(len(idx)), 1)
    for level in range(2, len(ladder) + 1):
        d_parent = ladder[level - 2]
        inner = [
            (int(idx[e]), int(parents.starts[k]), int(parents.ends[k]))
            for e in range(len(idx))
            for k in range(parents.first[parents.group[e]], parents.first[parents.group[e]]
                           + parents.count[parents.group[e]])
            if -c[e] < parents.starts[k] and parents.ends[k] < c[e]
        ]  # fmt: skip
        assert inner
        i, lo, hi = (np.array(col, np.int64) for col in zip(*inner, strict=True))
        label = _labels(lo, d_parent, "dead-zone")
        assert np.array_equal(label, _labels(hi, d_parent, "dead-zone"))
        first = np.where(
            label > 0,
            label * d_parent,
            np.where(label < 0, (label - 1) * d_parent + 1, 1 - d_parent),
        )
        last = np.where(
            label > 0,
            (label + 1) * d_parent - 1,
            np.where(label < 0, label * d_parent, d_parent - 1),
        )
        assert np.array_equal(lo, first) and np.array_equal(hi, last)  # whole bins
        n = len(i)
        el = coder.Elements(i, np.zeros(n, np.int64), lo, hi, np.full(n, level - 1),
                            np.zeros(n, bool), np.zeros(n, np.int64))  # fmt: skip
        parents = coder.split(ctx, el, np.arange(n), level)
        counts = parents.count[parents.group]
        assert np.array_equal(counts, np.where(label == 0, 3, 2)), level
        idx, c = i, tables.c[i]


def test_a_split_merged_to_one_child_costs_no_symbol(tables):
    """Steps 3, 2.5, 1: level 1 puts n = 3 in [2, 4]; at level 2 the labels of 2, 3, 4 are
    1, 1, 2, and [4] is a sliver (1 < 0.5 * 2.5) merged back: one child. It must move down
    for free (the first version coded it with a one-entry distribution, which constriction
    refuses: encode raised "Probability distribution not normalizable")."""
    from plugins.deephq import coder
    from plugins.learned.coding import latent as lc

    i = int(np.flatnonzero(tables.c >= 8)[0])
    ctx = context(tables, [[3.0], [2.5], [1.0]], np.zeros((3, 1)))
    one, zero = np.array([i]), np.zeros(1, np.int64)
    el = coder.Elements(one, zero, np.array([2]), np.array([4]), np.array([1]), zero > 0, zero)
    assert coder.split(ctx, el, zero, 2).count.tolist() == [1]
    units = 1024 * lc.UNITS_PER_BIT
    data, stats = coder.encode(ctx, np.array([3]), one, zero, units)
    assert stats.symbols == 2  # levels 1 and 3
    state = coder.decode(ctx, data, 0, one, zero, units)
    assert state.complete and state.elements.lo[0] == state.elements.hi[0] == 3
    half = coder.decode(ctx, data[: state.end - 1], 0, one, zero, units).elements
    assert (half.lo[0], half.hi[0], half.level[0]) == (2, 4, 2)  # level 2 came for free


# -- the codec ----------------------------------------------------------------------------------


def test_header_and_every_prefix_shorter_than_it(codec, encoded, crop, base):
    from plugins.deephq.codec import TAG

    data, _ = encoded
    header = header_length(data)
    assert data[0] == TAG
    assert data[3:7] == base.sha_prefix  # after tag, H and W (64): one varint byte each
    assert data[7:11].hex() == codec.sha256[:8]
    assert data[11] == 1  # masks on, mean reconstruction
    for k in range(header):
        with pytest.raises(PrefixTooShort):
            codec.decode(data[:k])
    decoded = codec.decode_full(data[:header])
    image, state = decoded.image, decoded.state
    assert image.shape == crop.shape and image.dtype == np.uint8
    assert state.stats.chunks == 0 and not state.complete
    assert np.all(state.elements.level == 0)  # everything at the prior mean
    assert set(decoded.seconds) == {"header+z+hyper", "latent", "reconstruction+synthesis"}


def test_encode_is_deterministic_and_prefixes_refine(codec, params_file, encoded, crop):
    from plugins.deephq.codec import DeepHQCodec

    data, stats = encoded
    assert codec.encode(crop) == data
    assert DeepHQCodec(weights=params_file, order="scale").encode(crop) == data  # a new one
    header = header_length(data)
    cuts = sorted(set(np.linspace(header, len(data), 6).astype(int).tolist()))
    quality, chunks = [], []
    for k in cuts:
        decoded = codec.decode_full(data[:k])
        image, state = decoded.image, decoded.state
        assert image.shape == crop.shape and image.dtype == np.uint8
        quality.append(psnr(crop, image))
        chunks.append(state.stats.chunks)
        if k in cuts[2:4]:  # the cut decodes as the stream stopped after its last chunk
            assert np.array_equal(codec.decode(data[: state.end]), image)
    assert chunks == sorted(chunks) and chunks[-1] == stats.chunks
    assert quality[-1] > quality[0] + 3.0
    assert max(max(quality[:i]) - q for i, q in enumerate(quality) if i) < 0.25
    # the chunk size travels in the stream: smaller chunks, the same latent at the end
    small = DeepHQCodec(weights=params_file, chunk_bits=256, order="scale")
    more, more_stats = small.encode_with_stats(crop)
    assert more[12] == 256 // 64 and data[12] == 1024 // 64
    assert more_stats.chunks > stats.chunks
    assert np.array_equal(codec.decode(more), codec.decode(data))


def test_a_dead_zone_file_codes_its_own_grid_to_the_same_end(codec, encoded, crop, base, tmp_path):
    """The same steps and masks with ``grid=dead-zone`` in the file: another stream (the header
    names the file), prefixes that decode and refine, the same full-stream latent; the codec's
    parameters name the grid."""
    from bench.codec import CorruptStream
    from plugins.deephq import params as dp
    from plugins.deephq.codec import DeepHQCodec

    p = codec.params
    same = dp.DeepHQParams(p.steps, p.mask_index_threshold, p.base_sha256, {"grid": "dead-zone"})
    path = save_params(same, tmp_path / "dz.safetensors")
    dz = DeepHQCodec(weights=path, order="scale")
    assert dz.context(True, "scale").grid == "dead-zone"
    assert codec.context(True, "scale").grid == "mid-tread"
    assert (dz.parameters()["grid"], codec.parameters()["grid"]) == ("dead-zone", "mid-tread")
    data, (mid, _) = dz.encode(crop), encoded
    assert data != mid
    assert np.array_equal(dz.decode(data), codec.decode(mid))  # both end at the base's grid
    header = header_length(data)
    quality = [
        psnr(crop, dz.decode(data[:k])) for k in np.linspace(header, len(data), 5).astype(int)
    ]
    assert quality[-1] > quality[0] + 3.0 and quality == sorted(quality)
    with pytest.raises(CorruptStream):
        codec.decode(data)  # the header binds the stream to its parameter file


def test_full_stream_is_the_base_grid_for_selected_elements(codec, encoded, crop):
    """Selected elements end at the encoder's own fine index (or escaped value), the others at
    the prior mean: the decoder state matches the analysis of the image."""
    from plugins.deephq import coder

    data, _ = encoded
    state = codec.decode_full(data).state
    el = state.elements
    fine, idx, ch = fine_indices(codec, crop)
    selected = idx >= codec.params.mask_index_threshold[-1, ch]
    assert state.complete and 0 < selected.sum() < len(selected)
    assert np.array_equal(el.escaped & ~selected, np.zeros_like(el.escaped))
    done = selected & ~el.escaped
    assert np.array_equal(el.lo[done], fine[done]) and np.array_equal(el.hi[done], fine[done])
    assert np.array_equal(el.escape_value[el.escaped], fine[el.escaped])
    assert np.all(el.level[~selected] == 0)
    rel = coder.reconstruct(codec.context(True, "scale"), el, "mean")
    assert np.all(rel[~selected] == 0.0)


def test_masks_off_and_zero_thresholds_end_at_the_base_model(codec, params_file, encoded, crop):
    """Without selection (the ablation, or thresholds all 0) every element reaches the base
    grid: the full stream decodes to PLONQ's full-stream image and costs the base model's ideal
    bits; the decoder reads the masks flag from the stream."""
    from plugins.deephq import params as dp
    from plugins.deephq.codec import DeepHQCodec
    from plugins.plonq.codec import PlonqCodec

    data, _ = encoded
    plonq = PlonqCodec(weights=WEIGHTS)
    plonq_data, plonq_stats = plonq.encode_with_stats(crop)
    reference = plonq.decode(plonq_data)

    ablation = DeepHQCodec(weights=params_file, masks=False, order="scale")
    off, off_stats = ablation.encode_with_stats(crop)
    assert off != data and off[11] == 0  # flags: masks off
    assert ablation.parameters()["masks"] is False
    image = codec.decode(off)  # a masks-on codec follows the stream's flag
    assert np.array_equal(image, ablation.decode(off))
    assert np.array_equal(image, reference)
    assert not np.array_equal(codec.decode(data), reference)  # some elements never selected
    assert off_stats.ideal_bits == pytest.approx(plonq_stats.ideal_bits, rel=1e-9)
    mid = header_length(off) + (len(off) - header_length(off)) // 3
    assert psnr(crop, ablation.decode(off[:mid])) < psnr(crop, image)

    zero = dp.load(params_file).without_masks()
    zero_file = save_params(zero, Path(params_file).with_name("zero.safetensors"))
    zeros = DeepHQCodec(weights=zero_file, order="scale")
    assert "mask thresholds" not in zeros.added_parameters()
    full = zeros.encode(crop)
    assert full[11] == 1 and np.array_equal(zeros.decode(full), reference)
    # midpoint reconstruction: the same base-grid image at the end, other pixels on the way
    midpoint = DeepHQCodec(weights=zero_file, reconstruction="midpoint", order="scale")
    stream = midpoint.encode(crop)
    assert stream[11] == 1 | 1 << 1
    assert np.array_equal(midpoint.decode(stream), reference)
    cut = header_length(stream) + (len(stream) - header_length(stream)) // 2
    assert stream[:11] == full[:11] and stream[12:] == full[12:]  # only the flag differs
    assert not np.array_equal(midpoint.decode(stream[:cut]), zeros.decode(full[:cut]))


def test_slope_order_codes_every_element_and_sends_its_flag(codec, params_file, encoded, crop):
    """The default order (slope) has no masks: its full stream decodes to PLONQ's full-stream
    image at the base model's ideal bits; the order's flag travels in the header (a codec made
    for the layered order decodes the stream alike), and its prefixes refine."""
    from plugins.deephq.codec import DeepHQCodec
    from plugins.plonq.codec import PlonqCodec

    slope = DeepHQCodec(weights=params_file)
    assert slope.parameters()["order"] == "slope" and slope.parameters()["channel_gains"] is False
    assert "mask thresholds" not in slope.added_parameters()
    data, stats = slope.encode_with_stats(crop)
    assert data[11] == 1 | 1 << 3 and data != encoded[0]
    plonq = PlonqCodec(weights=WEIGHTS)
    plonq_data, plonq_stats = plonq.encode_with_stats(crop)
    assert np.array_equal(slope.decode(data), plonq.decode(plonq_data))
    assert stats.ideal_bits == pytest.approx(plonq_stats.ideal_bits, rel=1e-9)
    assert np.array_equal(codec.decode(data), slope.decode(data))
    header = header_length(data)
    cuts = sorted(set(np.linspace(header, len(data), 6).astype(int).tolist()))
    quality = [psnr(crop, slope.decode(data[:k])) for k in cuts]
    assert quality[-1] > quality[0] + 3.0
    assert max(max(quality[:i]) - q for i, q in enumerate(quality) if i) < 0.25


def test_channel_gains_weigh_the_slope_order(base, params_file, crop, tmp_path):
    """Gains in the file reorder the slope order's stream (the same full-stream image), count
    as added parameters there and not in the layered order; bad gains are refused."""
    from dataclasses import replace

    from plugins.deephq import coder
    from plugins.deephq import params as dp
    from plugins.deephq.codec import DeepHQCodec

    p = dp.load(params_file)
    gains = np.linspace(0.5, 4.0, base.M).astype(np.float32).astype(np.float64)
    path = save_params(replace(p, channel_gain=gains), tmp_path / "g.safetensors")
    assert np.array_equal(dp.load(path).channel_gain, gains)
    assert dp.load(params_file).channel_gain is None
    weighted, plain = DeepHQCodec(weights=path), DeepHQCodec(weights=params_file)
    a, b = weighted.encode(crop), plain.encode(crop)
    assert a[header_length(a) :] != b[header_length(b) :]
    assert np.array_equal(weighted.decode(a), plain.decode(b))
    assert weighted.added_parameters()["channel gains"] == base.M
    assert weighted.parameters()["channel_gains"] is True
    assert "channel gains" not in DeepHQCodec(weights=path, order="scale").added_parameters()
    for bad in (np.ones(3), -gains, np.where(np.arange(base.M) == 5, np.nan, gains)):
        with pytest.raises(ValueError, match="channel gains"):
            replace(p, channel_gain=bad)
    with pytest.raises(ValueError, match="slope order"):
        coder.CoderContext(
            cdf=np.zeros((1, 4), np.int64), c=np.ones(1, np.int64), steps=p.steps,
            mask_index_threshold=p.mask_index_threshold, sigma=np.ones(1), order="slope",
        )  # fmt: skip


def test_header_errors(codec, encoded, base, tmp_path):
    from plugins.deephq.codec import DeepHQCodec

    data, _ = encoded
    for bad, match in (
        (b"\x51" + data[1:], "not a deephq stream"),
        (data[:3] + bytes([data[3] ^ 0xFF]) + data[4:], "base weights"),
        (data[:7] + bytes([data[7] ^ 0xFF]) + data[8:], "DeepHQ weights"),
        (data[:11] + bytes([data[11] | 0x10]) + data[12:], "flags"),
        (data[:11] + bytes([0b110]) + data[12:], "flags"),  # reconstruction code 3
        (data[:1] + b"\x00" + data[2:], "image size"),
    ):
        with pytest.raises(ValueError, match=match) as info:
            codec.decode(bad)
        assert not isinstance(info.value, PrefixTooShort)
    other = DeepHQCodec(weights=save_params(make_params(base, 1), tmp_path / "p1.safetensors"))
    with pytest.raises(ValueError, match="DeepHQ weights") as info:
        codec.decode(other.encode(kodak_crop("kodim01.png", 0, 0, 16, 16)))
    assert not isinstance(info.value, PrefixTooShort)
    with pytest.raises(ValueError, match="reconstruction"):
        DeepHQCodec(weights=codec.weights_spec, reconstruction="laplace")
    with pytest.raises(ValueError, match="chunk_bits"):
        DeepHQCodec(weights=codec.weights_spec, chunk_bits=100)


def test_parameters_of_another_base_or_width_are_unavailable(base, tmp_path):
    from plugins.deephq.codec import DeepHQCodec
    from plugins.deephq.params import DeepHQParams

    good = make_params(base, 2)
    foreign = DeepHQParams(good.steps, good.mask_index_threshold, "ab" * 32)
    codec = DeepHQCodec(weights=save_params(foreign, tmp_path / "foreign.safetensors"))
    with pytest.raises(CodecUnavailable, match="base weights sha256 abababab"):
        codec.encode(kodak_crop("kodim01.png", 0, 0, 8, 8))
    narrow = DeepHQParams(good.steps[:, :8], good.mask_index_threshold[:, :8], good.base_sha256)
    codec = DeepHQCodec(weights=save_params(narrow, tmp_path / "narrow.safetensors"))
    with pytest.raises(CodecUnavailable, match="8 channels"):
        codec.encode(kodak_crop("kodim01.png", 0, 0, 8, 8))


@pytest.mark.parametrize("order", ["scale", "slope"])
def test_decodes_identically_in_a_fresh_process(params_file, base, order, tmp_path):
    """A new process (the slope order's keys recomputed from scratch, with channel gains)
    decodes the same pixels from every prefix."""
    from dataclasses import replace

    from plugins.deephq import params as dp
    from plugins.deephq.codec import DeepHQCodec

    gains = np.linspace(3.0, 0.5, base.M).astype(np.float32).astype(np.float64)
    weighted = replace(dp.load(params_file), channel_gain=gains)
    path = save_params(weighted, tmp_path / "g.safetensors")
    image = kodak_crop("kodim15.png", 300, 100, 40, 56)
    assert_fresh_process_decodes_alike(
        DeepHQCodec(weights=path, order=order), "plugins.deephq.codec:DeepHQCodec", path, image,
        tmp_path,
    )  # fmt: skip


def test_info_reports_both_weights_files_and_added_parameters(codec, params_file, base):
    from bench.hashing import sha256_file

    info = codec.info()
    added = {"steps": (LAYERS - 1) * base.M, "mask thresholds": LAYERS * base.M}
    assert info.name == "deephq" and info.parameters["added_parameters"] == added
    assert info.parameters["layers"] == LAYERS and info.parameters["masks"] is True
    assert info.num_parameters == base.num_parameters + sum(added.values())
    assert info.parameter_groups == {"base": base.num_parameters, **added}
    assert info.weights.source == "user" and info.weights.path == params_file
    assert info.weights.sha256 == sha256_file(params_file)
    size = Path(params_file).stat().st_size
    assert info.weights_bytes == base.resolved.weights_bytes + size
    assert "NOT the DeepHQ paper's weights" in info.weights.description
    assert "no training record" in info.weights.description
    json.dumps(info.to_dict())


@pytest.mark.skipif(
    not DEFAULT_DEEPHQ.is_file(),
    reason=f"the shipped DeepHQ weights {DEFAULT_DEEPHQ} do not exist yet",
)
def test_default_weights():
    from bench.registry import load_registry
    from plugins.deephq import params as dp
    from plugins.deephq.codec import DEFAULT_WEIGHTS, DeepHQCodec

    codec = load_registry(entry_points=False).spec("deephq").factory()
    assert isinstance(codec, DeepHQCodec)
    assert codec.weights_spec == DEFAULT_WEIGHTS and codec.path == DEFAULT_DEEPHQ
    side = dp.read_sidecar(DEFAULT_DEEPHQ)
    assert side["weights_sha256"] == codec.sha256
    assert side["steps"] == "untrained ladder 128,64,32,16,8,4,2,1" and side["grid"] == "dead-zone"
    assert codec.params.channel_gain is not None and side["channel_gains"]["crops"] == 8
    assert codec.parameters()["order"] == "slope" and codec.parameters()["channel_gains"]
    info = codec.info()
    assert info.weights.source == "bundled" and "NOT the DeepHQ paper's" in info.weights.description
    image = kodak_crop("kodim19.png", 200, 200, 128, 128)
    data = codec.encode(image)
    header = header_length(data)
    quality = [psnr(image, codec.decode(data[:k])) for k in (header, len(data) // 2, len(data))]
    assert quality == sorted(quality) and quality[-1] > quality[0] + 3.0
    assert quality[-1] > 25.0


@pytest.mark.skipif(
    not DEFAULT_DEEPHQ.is_file(),
    reason=f"the shipped DeepHQ weights {DEFAULT_DEEPHQ} do not exist yet",
)
@pytest.mark.slow
class TestDeepHQConformance(ConformanceSuite):
    """The conformance suite on DeepHQ as shipped: the bundled steps and masks, no memo."""

    codec = "deephq"


# -- the parameter file -----------------------------------------------------------------------


def test_params_save_load_round_trip(base, tmp_path):
    from plugins.deephq import params as dp

    params = make_params(base, 3)
    path = tmp_path / "p.safetensors"
    dp.save(params, path, {"base_weights": WEIGHTS, "note": "x"})
    assert path.stat().st_mode & 0o777 == 0o644 and not list(tmp_path.glob("*.tmp"))
    loaded = dp.load(path)
    assert loaded.steps.dtype == np.float64 and loaded.mask_index_threshold.dtype == np.int64
    assert np.array_equal(loaded.steps, params.steps)
    assert np.array_equal(loaded.mask_index_threshold, params.mask_index_threshold)
    assert loaded.base_sha256 == base.resolved.sha256
    assert (loaded.layers, loaded.channels) == (LAYERS, base.M)
    assert loaded.meta["base_weights"] == WEIGHTS and loaded.meta["note"] == "x"
    assert loaded.meta["format"] == dp.FORMAT and loaded.meta["layers"] == str(LAYERS)
    dp.save(loaded, tmp_path / "again.safetensors")  # what was loaded saves again
    assert dp.load(tmp_path / "again.safetensors").meta == loaded.meta
    assert dp.read_sidecar(path) is None and dp.sidecar_path(path) == tmp_path / "p.json"


def test_params_validation_and_without_masks(base):
    from plugins.deephq.params import DeepHQParams

    good = make_params(base, 4)
    steps, thr, sha = good.steps, good.mask_index_threshold, good.base_sha256
    rising = thr.copy()
    rising[3, 20] = rising[2, 20] + 1
    low = steps.copy()
    low[2, 5] = 0.999
    last = steps.copy()
    last[-1, 7] = 1.5
    nan = steps.copy()
    nan[0, 0] = np.nan
    for bad_steps, bad_thr, match in (
        (steps, rising, "rise"),
        (low, thr, ">= 1"),
        (last, thr, "last layer"),
        (nan, thr, "finite"),
        (steps[:, :10], thr, r"\(L, M\)"),
        (steps[0], thr[0], r"\(L, M\)"),
    ):
        with pytest.raises(ValueError, match=match):
            DeepHQParams(bad_steps, bad_thr, sha)
    with pytest.raises(ValueError, match="unknown grid 'mid-rise'"):
        DeepHQParams(steps, thr, sha, {"grid": "mid-rise"})
    assert good.grid == "mid-tread" and "grid" not in good.meta  # files before the choice
    assert DeepHQParams(steps, thr, sha, {"grid": "dead-zone"}).grid == "dead-zone"
    assert np.any(thr > 0)
    off = good.without_masks()
    assert np.array_equal(off.steps, steps) and off.base_sha256 == sha and off.meta == good.meta
    assert not np.any(off.mask_index_threshold) and off.mask_index_threshold.shape == thr.shape
    assert np.any(good.mask_index_threshold > 0)  # the original is unchanged


def test_unreadable_parameter_files_are_unavailable(tmp_path):
    from plugins.deephq import params as dp
    from plugins.deephq.codec import DeepHQCodec
    from plugins.learned.weights import resolve

    base_file = resolve(WEIGHTS).path  # a real safetensors file of another format
    with pytest.raises(ValueError, match="not a DeepHQ weights file"):
        dp.load(base_file)
    with pytest.raises(CodecUnavailable, match="not a DeepHQ weights file") as info:
        DeepHQCodec(weights=str(base_file))
    assert "bench train deephq" in info.value.fix
    with pytest.raises(CodecUnavailable, match="not found"):
        DeepHQCodec(weights=str(tmp_path / "missing.safetensors"))
    for name in ("bundled:", "bundled:../x", "bundled:.hidden"):
        with pytest.raises(CodecUnavailable, match="invalid bundled"):
            DeepHQCodec(weights=name)
    with pytest.raises(CodecUnavailable, match="not found"):
        DeepHQCodec(weights="bundled:no-such-deephq-weights")


@pytest.mark.parametrize("kind", ["garbage", "truncated", "missing tensor"])
def test_corrupt_parameter_files_are_unavailable(kind, base, tmp_path):
    import torch
    from safetensors.torch import save_file

    from plugins.deephq import params as dp
    from plugins.deephq.codec import DeepHQCodec

    path = tmp_path / "bad.safetensors"
    if kind == "garbage":
        path.write_bytes(b"this is not a safetensors file" * 4)
    elif kind == "truncated":
        save_params(make_params(base, 5), tmp_path / "good.safetensors")
        good = (tmp_path / "good.safetensors").read_bytes()
        path.write_bytes(good[: len(good) // 2])
    else:
        save_file({"steps": torch.ones(LAYERS, base.M)}, str(path), metadata={"format": dp.FORMAT})
    with pytest.raises(CodecUnavailable):
        DeepHQCodec(weights=str(path))


# -- registry ---------------------------------------------------------------------------------


def test_registered_as_a_builtin_and_import_is_light(params_file):
    from bench.registry import BUILTIN_PLUGINS, load_registry
    from plugins.deephq.codec import DeepHQCodec

    registry = load_registry(entry_points=False)
    spec = registry.codecs["deephq"]
    assert spec.plugin == "plugins.deephq" and spec.plugin in BUILTIN_PLUGINS
    assert spec.kind == "progressive" and "DeepHQ" in spec.summary
    assert not registry.failures, registry.failures
    assert isinstance(spec.factory(weights=params_file, masks=False), DeepHQCodec)
    try:
        spec.check()
    except CodecUnavailable as exc:  # the check vouches for the shipped parameters
        assert not DEFAULT_DEEPHQ.is_file() and "bench train deephq" in exc.fix, exc
    if not DEFAULT_DEEPHQ.is_file():
        with pytest.raises(CodecUnavailable, match="not found") as info:
            spec.factory()
        assert "bench train deephq" in info.value.fix
    code = (
        "import sys; import plugins.deephq; "
        "assert 'torch' not in sys.modules and 'plugins.deephq.codec' not in sys.modules; "
        "from bench.registry import load_registry; r = load_registry(entry_points=False); "
        "print(r.codecs['deephq'].plugin)"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=120
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "plugins.deephq"


# -- training ---------------------------------------------------------------------------------


TINY = dict(batch=2, crop=64, checkpoint_every=1, log_every=1, threads=1)


def test_training_loss_masks_soft_or_hard():
    """The step-3 loss of one layer: relaxed masks scale an element's bits and offset by
    ``sigmoid((log sigma - t) / 0.5)`` forward; hard masks keep 0/1 forward (the sigmoid's
    gradient backward); without masks every element counts whole. Both reach the thresholds."""
    import torch

    from plugins.deephq.train import MASK_TEMPERATURE, build_quantizer

    torch.manual_seed(0)
    quant = build_quantizer(4, LAYERS, math.log(0.11))
    y = torch.randn(1, 4, 3, 3) * 3.0
    mu = torch.zeros_like(y)
    sigma = torch.exp(torch.linspace(-2.0, 2.0, 36)).reshape(1, 4, 3, 3)
    layer = 2
    plain, bits = quant.layer(y, mu, sigma, layer, use_masks=False)
    assert bits.item() > 0 and not torch.equal(plain, mu)

    t = quant.thresholds()[layer][None, :, None, None].detach()
    soft = torch.sigmoid((sigma.log() - t) / MASK_TEMPERATURE)
    hard = (sigma.log() > t).float()
    assert 0 < hard.sum() < hard.numel()  # the initial thresholds split these scales
    for soft_masks, m in ((True, soft), (False, hard)):
        quant.zero_grad()
        y_hat, masked_bits = quant.layer(y, mu, sigma, layer, True, soft_masks=soft_masks)
        assert torch.allclose(y_hat, mu + m * (plain - mu), atol=1e-6)
        assert masked_bits.item() < bits.item()
        masked_bits.backward()
        assert quant.mask_top.grad.abs().sum() > 0  # the thresholds learn either way


@pytest.mark.parametrize("layer", [0, 2, 6, 7])
@pytest.mark.parametrize("reconstruction", ["mean", "midpoint"])
@pytest.mark.parametrize("grid", ["mid-tread", "dead-zone"])
def test_training_loss_reconstructs_as_the_decoder(layer, reconstruction, grid):
    """The loss's value of an element is the decoder's: the fine integer once the interval holds
    one, else the conditional mean of ``N(0, sigma)`` over it (or its midpoint), for the bin
    over the intersection of the bins of layers ``0..layer`` around ``n = round(y - mu)``."""
    import torch

    from plugins.deephq.train import build_quantizer
    from plugins.learned.coding.intervals import interval_reconstruction

    torch.manual_seed(1)
    quant = build_quantizer(4, LAYERS, math.log(0.11), grid=grid)
    y = torch.randn(2, 4, 5, 5, dtype=torch.float64) * 6.0
    mu = torch.randn_like(y)
    sigma = torch.exp(torch.linspace(-1.0, 2.5, 200, dtype=torch.float64)).reshape(2, 4, 5, 5)
    y_hat, _ = quant.layer(y, mu, sigma, layer, use_masks=False, reconstruction=reconstruction)

    n = np.round((y - mu).numpy())
    lo, hi = np.full(n.shape, -np.inf), np.full(n.shape, np.inf)
    for k in range(layer + 1):
        step = quant.steps()[k].detach().double()[None, :, None, None].expand_as(y).numpy()
        if grid == "dead-zone":  # trunc(n / D): [jD, (j+1)D), (-D, D), ((j-1)D, jD]
            label = np.trunc(n / step)
            first = np.where(label < 0, np.floor((label - 1) * step) + 1, np.ceil(label * step))
            first = np.where(label == 0, np.floor(-step) + 1, first)
            last = np.where(label < 0, np.floor(label * step), np.ceil((label + 1) * step) - 1)
            last = np.where(label == 0, np.ceil(step) - 1, last)
        else:
            label = np.floor(n / step + 0.5)
            first = np.ceil((label - 0.5) * step)
            last = np.ceil((label + 0.5) * step) - 1
        lo = np.maximum(lo, first)  # first fine integer of the bin
        hi = np.minimum(hi, last)  # and its last
    expected = interval_reconstruction(reconstruction, lo, hi, sigma.numpy())
    expected = np.where(lo == hi, lo, expected)
    assert (hi > lo).any() == (layer < 6)  # the last two layers' steps are 1 at the start
    np.testing.assert_allclose((y_hat - mu).detach().numpy(), expected, atol=1e-9)


@pytest.fixture(scope="module")
def train_data(tmp_path_factory) -> Path:
    from bench.images import load_rgb, save_png

    folder = tmp_path_factory.mktemp("deephq-train-data")
    for k, (source, top, left) in enumerate(TRAIN_SOURCES):
        image = load_rgb(TRAIN / source)
        save_png(
            folder / f"{k}.png", np.ascontiguousarray(image[top : top + 160, left : left + 160])
        )
    return folder


def _records(out: Path) -> list[dict]:
    from plugins.deephq import train as tr

    return [json.loads(line) for line in (out / tr.LOG_NAME).read_text().splitlines()]


def _stop_at(iteration: int, notes: list[str]):
    """A ``log`` that sends this process SIGTERM when iteration ``iteration`` is logged (the
    trainer then stops as on Ctrl-C, with a checkpoint)."""

    def log(message: str) -> None:
        notes.append(message)
        if message.startswith(f"it {iteration} "):
            os.kill(os.getpid(), signal.SIGTERM)

    return log


@pytest.fixture(scope="module")
def runs(train_data, tmp_path_factory):
    """Step 2 stopped by SIGTERM at iteration 2 of 4 and resumed; the same run straight to 4;
    step 3 from it (2 iterations)."""
    from plugins.deephq import train as tr

    root = tmp_path_factory.mktemp("deephq-runs")
    notes: list[str] = []
    data = str(train_data)
    first = tr.train(root / "s2", data=data, iterations=4, log=_stop_at(2, notes), **TINY)
    stored = tr.load_checkpoint(root / "s2")
    resumed = tr.train(root / "s2", resume=True, iterations=4, log_every=1, log=notes.append)
    straight = tr.train(root / "straight", data=data, iterations=4, log=notes.append, **TINY)
    step3 = tr.train(
        root / "s3", data=data, step=3, init=str(root / "s2"), iterations=2, log=notes.append,
        **TINY,
    )  # fmt: skip
    return SimpleNamespace(
        root=root, first=first, stored=stored, resumed=resumed, straight=straight, step3=step3,
        notes=notes,
    )  # fmt: skip


@needs_train_data
def test_step2_stops_on_sigterm_and_resumes_where_it_stopped(runs, train_data, base):
    import torch

    from plugins.deephq import train as tr

    checkpoint = str(runs.root / "s2" / tr.CHECKPOINT_NAME)
    assert runs.first == {"iteration": 2, "checkpoint": checkpoint, "stopped_by": "SIGTERM"}
    assert runs.stored["iteration"] == 2
    assert runs.resumed == {"iteration": 4, "checkpoint": checkpoint, "stopped_by": None}
    assert any("resuming" in n for n in runs.notes)
    state = tr.load_checkpoint(runs.root / "s2")
    assert state["iteration"] == 4 and state["config"]["step"] == 2
    assert state["config"]["data"] == str(train_data.resolve())
    assert state["base_sha256"] == base.resolved.sha256
    records = _records(runs.root / "s2")
    assert [r["iteration"] for r in records] == [1, 2, 3, 4]
    for r in records:
        assert r["type"] == "train" and len(r["step_mean"]) == LAYERS and r["step_mean"][-1] == 1
        layers = [k for k in r if k.startswith("layer")]
        assert len(layers) == 2 and "layer8" not in layers  # step 2 trains layers 1..7
        assert all(r[k]["bpp"] > 0 and math.isfinite(r[k]["psnr"]) for k in layers)
    # stopping and resuming changes nothing: the same parameters as the straight run
    straight = tr.load_checkpoint(runs.root / "straight")
    for name, value in state["quantizer"].items():
        assert torch.equal(value, straight["quantizer"][name]), name
    assert not torch.equal(state["quantizer"]["step_raw"], runs.stored["quantizer"]["step_raw"])
    assert not list((runs.root / "s2").glob("*.tmp"))


@needs_train_data
def test_resume_without_iterations_continues_to_the_stored_target(train_data, tmp_path):
    from plugins.deephq import train as tr

    first = tr.train(
        tmp_path / "r", data=str(train_data), iterations=3, log=_stop_at(1, []), **TINY
    )
    assert first["iteration"] == 1 and first["stopped_by"] == "SIGTERM"

    def guard(message: str) -> None:
        assert not message.startswith("it 4 "), "resumed past the stored 3 iterations"

    assert tr.train(tmp_path / "r", resume=True, log_every=1, log=guard)["iteration"] == 3


@needs_train_data
def test_step3_from_step2_and_export(runs, tmp_path, crop, base):
    from bench.hashing import sha256_file
    from plugins.deephq import params as dp
    from plugins.deephq import train as tr
    from plugins.deephq.codec import DeepHQCodec

    assert runs.step3["iteration"] == 2
    assert any("starting step 3" in n for n in runs.notes)
    state = tr.load_checkpoint(runs.root / "s3")
    assert state["history"]["step2"]["iterations"] == 4
    assert state["config"]["step"] == 3 and state["config"]["init"] == str(runs.root / "s2")
    assert state["config"]["power_of_two"] is True  # step 3 keeps step 2's parametrisation
    assert state["config"]["soft_masks"] is True  # the default: relaxed masks
    assert state["config"]["loss_reconstruction"] == "mean"  # the default: as the decoder
    assert [r["iteration"] for r in _records(runs.root / "s3")] == [1, 2]

    out = tmp_path / "w" / "deephq.safetensors"
    side = tr.export(runs.root / "s3", out)
    assert json.loads(dp.sidecar_path(out).read_text()) == json.loads(json.dumps(side))
    assert (
        side["weights_sha256"] == sha256_file(out) and side["weights_bytes"] == out.stat().st_size
    )
    assert set(side["training"]) == {"step2", "step3"}
    assert side["training"]["step2"]["iterations"] == 4
    assert side["training"]["step3"]["iterations"] == 2
    assert side["layers"] == LAYERS and side["added_parameters"] == (2 * LAYERS - 1) * base.M
    assert "NOT the DeepHQ paper's weights" in side["what"]
    params = dp.load(out)
    assert params.meta["steps_trained"] == "3" and params.meta["base_weights"]
    assert params.grid == "mid-tread" == side["grid"]  # the default, kept from step 2
    thr = params.mask_index_threshold
    assert np.all(np.diff(thr, axis=0) <= 0) and thr.max() > 0  # learned, nested masks
    exponents = np.log2(params.steps)  # the default: power-of-two steps
    assert np.array_equal(exponents, np.round(exponents)) and np.all(params.steps[-1] == 1.0)
    assert params.steps[0].min() > 1.0

    codec = DeepHQCodec(weights=str(out))
    assert "step2: 4 iterations" in codec.info().weights.description
    data = codec.encode(crop)
    header = header_length(data)
    quality = [psnr(crop, codec.decode(data[:k])) for k in (header, len(data))]
    assert quality[1] > quality[0] + 3.0

    step2 = tr.export(runs.root / "s2", tmp_path / "step2.safetensors")
    assert set(step2["training"]) == {"step2"} and step2["added_parameters"] == 7 * base.M
    assert not np.any(dp.load(tmp_path / "step2.safetensors").mask_index_threshold)
    with pytest.raises(ValueError, match=r"\.safetensors"):
        tr.export(runs.root / "s3", tmp_path / "w.bin")


@needs_train_data
def test_training_refuses_bad_starts(runs, train_data, tmp_path, capsys):
    import torch

    from plugins.deephq import train as tr
    from plugins.learned.training.data import DEFAULT_KODAK

    with pytest.raises(ValueError, match="--init"):
        tr.train(tmp_path / "a", data=str(train_data), step=3, iterations=1, **TINY)
    assert tr.main(["--out", str(tmp_path / "b"), "--data", str(train_data), "--step", "3"]) == 1
    assert "--init" in capsys.readouterr().err
    with pytest.raises(ValueError, match="--resume"):
        tr.train(runs.root / "s2", data=str(train_data), iterations=5, **TINY)
    with pytest.raises(ValueError, match="no DeepHQ checkpoint"):
        tr.train(tmp_path / "c", resume=True)
    with pytest.raises(ValueError, match="--data"):
        tr.train(tmp_path / "d", iterations=1)
    with pytest.raises(ValueError, match="--grid must be one of mid-tread, dead-zone"):
        tr.train(tmp_path / "g", data=str(train_data), grid="mid-rise", **TINY)
    # never on Kodak: the folder itself, or a Kodak image under another name
    with pytest.raises(ValueError, match="Kodak"):
        tr.train(tmp_path / "e", data=str(DEFAULT_KODAK), iterations=1, **TINY)
    mixed = tmp_path / "mixed"
    shutil.copytree(train_data, mixed)
    shutil.copy(Path(DEFAULT_KODAK) / "kodim07.png", mixed / "holiday.png")
    with pytest.raises(ValueError, match="Kodak"):
        tr.train(tmp_path / "f", data=str(mixed), iterations=1, **TINY)
    # broken checkpoints
    bad = tmp_path / "bad"
    bad.mkdir()
    good = (runs.root / "s2" / tr.CHECKPOINT_NAME).read_bytes()
    (bad / tr.CHECKPOINT_NAME).write_bytes(good[: len(good) // 2])
    with pytest.raises(ValueError, match="corrupt"):
        tr.load_checkpoint(bad)
    with pytest.raises(ValueError, match="corrupt"):
        tr.export(bad, tmp_path / "x.safetensors")
    torch.save({"format": "something-else"}, bad / tr.CHECKPOINT_NAME)
    with pytest.raises(ValueError, match="not a DeepHQ checkpoint"):
        tr.train(bad, resume=True)


@needs_train_data
def test_bench_train_deephq_through_the_cli(train_data, tmp_path):
    from plugins.deephq import params as dp
    from plugins.deephq import train as tr

    out = tmp_path / "run"
    command = bench_command(
        "train", "deephq", "--out", str(out), "--data", str(train_data), "--iterations", "1",
        "--batch", "2", "--crop", "64", "--threads", "1",  # the last two: not the defaults
        "--layers-per-iteration", "1", "--log-every", "1", "--real-steps", "--hard-masks",
        "--loss-reconstruction", "midpoint", "--grid", "dead-zone",
    )  # fmt: skip
    done = subprocess.run(command, capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout.strip().splitlines()[-1])["iteration"] == 1
    cfg = tr.load_checkpoint(out)["config"]
    assert (cfg["step"], cfg["batch"], cfg["crop"], cfg["layers_per_iteration"]) == (2, 2, 64, 1)
    assert cfg["power_of_two"] is False and cfg["data"] == str(train_data.resolve())
    assert cfg["soft_masks"] is False and cfg["loss_reconstruction"] == "midpoint"
    assert cfg["grid"] == "dead-zone"
    assert len(_records(out)) == 1
    weights = tmp_path / "cli.safetensors"  # --export, through the main the CLI forwards to
    assert tr.main(["--out", str(out), "--export", str(weights)]) == 0
    params = dp.load(weights)
    assert params.meta["steps_trained"] == "2" and dp.read_sidecar(weights)["grid"] == "dead-zone"
    assert params.grid == "dead-zone"
    assert not np.array_equal(np.log2(params.steps), np.round(np.log2(params.steps)))


@needs_train_data
def test_a_ladder_file_with_channel_gains_through_the_trainer_command(train_data, tmp_path, base):
    """``--ladder`` writes untrained steps for every channel without a run; ``--channel-gains``
    measures each channel's gain on training crops into the file and its sidecar; the same
    measurement again gives the same gains."""
    from bench.hashing import sha256_file
    from plugins.deephq import params as dp
    from plugins.deephq import train as tr
    from plugins.deephq import train_calibration as cal
    from plugins.deephq.codec import DeepHQCodec

    out = tmp_path / "ladder.safetensors"
    command = bench_command(
        "train", "deephq", "--ladder", "16,8,4,2,1", "--grid", "dead-zone", "--export", str(out),
        "--channel-gains", "--data", str(train_data), "--calibrate-crops", "2",
        "--calibrate-crop", "64", "--threads", "1",
    )  # fmt: skip
    done = subprocess.run(command, capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert done.returncode == 0, done.stderr
    assert "channel gains:" in done.stdout
    params = dp.load(out)
    ladder = np.array([16.0, 8.0, 4.0, 2.0, 1.0])
    assert np.array_equal(params.steps, np.repeat(ladder[:, None], base.M, axis=1))
    assert not np.any(params.mask_index_threshold) and params.grid == "dead-zone"
    gains = params.channel_gain
    assert gains.shape == (base.M,) and np.all(gains > 0) and gains.max() > 1.2 * gains.min()
    crops = cal.training_crops(train_data, 2, 64, log=lambda _: None)
    np.testing.assert_allclose(cal.channel_gains(base, crops), gains, rtol=1e-6)
    side = dp.read_sidecar(out)
    assert side["steps"] == "untrained ladder 16,8,4,2,1" and side["grid"] == "dead-zone"
    assert side["channel_gains"]["crops"] == 2 and side["channel_gains"]["crop_size"] == 64
    assert side["weights_sha256"] == sha256_file(out)
    codec = DeepHQCodec(weights=str(out))
    assert side["added_parameters"] == sum(codec.added_parameters().values()) == 5 * base.M
    assert "untrained ladder 16,8,4,2,1" in codec.weights_info().description
    for argv in (
        ["--ladder", "8,4,2", "--export", str(tmp_path / "x.safetensors")],
        ["--ladder", "8,4,1"],
        ["--export", str(tmp_path / "x.safetensors")],
        ["--ladder", "8,1", "--export", str(tmp_path / "x.safetensors"), "--channel-gains"],
    ):
        assert tr.main(argv) == 1, argv
    assert not (tmp_path / "x.safetensors").exists()


def test_bench_train_unknown_model_is_a_usage_error(tmp_path):
    for args in (("nosuchmodel",), ("msh", "--step", "2")):  # unknown model; msh, deephq option
        done = subprocess.run(
            bench_command("train", *args, "--out", str(tmp_path / "x")),
            capture_output=True, text=True, cwd=ROOT, timeout=120,
        )  # fmt: skip
        assert done.returncode == 2, (args, done.stdout, done.stderr)
        assert "unknown model" in done.stderr or "unrecognized arguments: --step" in done.stderr
    assert not (tmp_path / "x").exists()


def test_shifted_thresholds_stay_clipped_and_nested(base):
    from plugins.deephq.train_calibration import shifted

    params = make_params(base, 1)
    thr = params.mask_index_threshold
    for shift in (-5, 0, 3, 12, 100):
        moved = shifted(params, shift).mask_index_threshold
        assert np.all(np.diff(moved, axis=0) <= 0) and moved.min() >= 0
        np.testing.assert_array_equal(
            moved, np.minimum.accumulate(np.maximum(thr - shift, 0), axis=0)
        )
    assert not np.any(shifted(params, 100).mask_index_threshold)  # every element coded
    np.testing.assert_array_equal(shifted(params, 0).mask_index_threshold, thr)
    np.testing.assert_array_equal(shifted(params, 7).steps, params.steps)


@needs_train_data
def test_calibration_keeps_the_best_shift_of_real_truncations(runs, train_data, tmp_path):
    from bench.grid import budget_bytes
    from bench.hashing import sha256_file
    from plugins.deephq import params as dp
    from plugins.deephq import train as tr
    from plugins.deephq import train_calibration as cal
    from plugins.deephq.codec import DeepHQCodec

    unshifted = tmp_path / "unshifted.safetensors"
    out = tmp_path / "calibrated.safetensors"
    tr.export(runs.root / "s3", unshifted)
    tr.export(runs.root / "s3", out)
    before = dp.load(unshifted)
    grid = (0.15, 0.3, 0.45, 0.6, 0.75)  # below the whole streams of the two crops
    notes: list[str] = []
    record = cal.calibrate(
        out, train_data, shifts=(8, 0, -8), crops=2, crop_size=128, grid=grid, log=notes.append
    )
    bd = record["bd_rate_vs_unshifted_percent"]
    every = int(before.mask_index_threshold.max())  # the candidate that codes every element
    assert every > 8 and list(bd) == ["-8", "0", "8", str(every)] and bd["0"] == 0.0
    assert all(math.isfinite(v) for v in bd.values())
    assert record["chosen_shift"] == min((-8, 0, 8, every), key=lambda s: (bd[str(s)], abs(s)))
    after = dp.load(out)
    expected = cal.shifted(before, record["chosen_shift"]).mask_index_threshold
    np.testing.assert_array_equal(after.mask_index_threshold, expected)
    np.testing.assert_array_equal(after.steps, before.steps)
    assert after.meta["threshold_shift"] == str(record["chosen_shift"])
    side = dp.read_sidecar(out)
    assert side["threshold_calibration"] == json.loads(json.dumps(record))
    assert side["weights_sha256"] == sha256_file(out)
    assert len(side["scale_indexes_selected_per_layer"]) == LAYERS
    assert side["added_parameters"] == sum(
        DeepHQCodec(weights=str(out), order="scale").added_parameters().values()
    )
    assert sum("shift" in n for n in notes) == 4
    assert not np.any(cal.shifted(before, every).mask_index_threshold)

    # the recorded unshifted curve is what the codec gives on the same crops, point by point
    crops = cal.training_crops(train_data, 2, 128, log=notes.append)
    codec = DeepHQCodec(weights=str(unshifted), order="scale")  # the masks' order
    streams = [codec.encode(c) for c in crops]
    curve = record["curves"]["0"]
    assert len(curve["target_bpp"]) >= 4
    for target, bpp, quality in zip(
        curve["target_bpp"], curve["bpp"], curve["psnr_rgb"], strict=True
    ):
        budgets = [budget_bytes(target, 128, 128) for _ in crops]
        assert all(b < len(s) for b, s in zip(budgets, streams, strict=True))
        assert bpp == pytest.approx(np.mean([8 * b / 128**2 for b in budgets]))
        decoded = [codec.decode(s[:b]) for s, b in zip(streams, budgets, strict=True)]
        scores = [psnr(c, d) for c, d in zip(crops, decoded, strict=True)]
        assert quality == pytest.approx(np.mean(scores))

    with pytest.raises(ValueError, match="include 0"):
        cal.calibrate(unshifted, train_data, shifts=(4, 8), crops=1, crop_size=128)
    tr.export(runs.root / "s2", tmp_path / "step2.safetensors")
    with pytest.raises(ValueError, match="no trained masks"):
        cal.calibrate(tmp_path / "step2.safetensors", train_data, crops=1, crop_size=128)


@needs_train_data
def test_calibrate_through_the_trainer_command(runs, train_data, tmp_path, capsys):
    from plugins.deephq import params as dp
    from plugins.deephq import train as tr

    target = tmp_path / "x.safetensors"
    tr.export(runs.root / "s3", tmp_path / "unshifted.safetensors")
    assert tr.main(["--out", str(runs.root / "s3"), "--export", str(target), "--calibrate"]) == 1
    assert "--data" in capsys.readouterr().err and not target.exists()
    assert tr.main(["--out", str(runs.root / "s3"), "--calibrate", "--data", str(train_data)]) == 1
    assert "--export" in capsys.readouterr().err
    command = ["--out", str(runs.root / "s3"), "--export", str(target), "--calibrate"]
    command += ["--data", str(train_data), "--calibrate-crops", "1", "--calibrate-crop", "96"]
    assert tr.main([*command, "--calibrate-shifts", "4,x"]) == 1
    assert "not integers" in capsys.readouterr().err
    assert tr.main([*command, "--calibrate-shifts", "0,4"]) == 0
    assert "thresholds shifted by" in capsys.readouterr().out
    record = dp.read_sidecar(target)["threshold_calibration"]
    assert (record["crops"], record["crop_size"]) == (1, 96)
    every = str(dp.load(tmp_path / "unshifted.safetensors").mask_index_threshold.max())
    assert set(record["bd_rate_vs_unshifted_percent"]) == {"0", "4", every}


def test_moved_steps_and_the_uniform_ladder(base):
    from plugins.deephq.train_calibration import moved, uniform_ladder

    params = make_params(base, 2)
    up = moved(params, 3, 1)
    np.testing.assert_array_equal(up.steps[3], params.steps[3] * 2)
    np.testing.assert_array_equal(np.delete(up.steps, 3, 0), np.delete(params.steps, 3, 0))
    np.testing.assert_array_equal(up.mask_index_threshold, params.mask_index_threshold)
    down = moved(params, 0, -5)  # clipped at the base's grid
    np.testing.assert_array_equal(down.steps[0], np.maximum(params.steps[0] / 32, 1.0))
    assert moved(params, LAYERS - 1, 1) is None  # the last layer is the base's own grid
    assert moved(params, -1, 1) is None and moved(params, LAYERS, 1) is None
    assert moved(moved(params, 2, -30), 2, -1) is None  # already all 1: nothing changes
    ladder = uniform_ladder(params)
    assert ladder.steps[:, 0].tolist() == [8.0] * (LAYERS - 3) + [4.0, 2.0, 1.0]
    assert np.all(ladder.steps == ladder.steps[:, :1]) and not np.any(ladder.mask_index_threshold)
    assert ladder.base_sha256 == params.base_sha256


@needs_train_data
def test_step_search_keeps_only_moves_that_beat_the_start(runs, train_data, tmp_path):
    from bench.bdrate import bd_rate
    from bench.hashing import sha256_file
    from plugins.deephq import params as dp
    from plugins.deephq import train as tr
    from plugins.deephq import train_calibration as cal
    from plugins.deephq.codec import DeepHQCodec

    start = tmp_path / "start.safetensors"
    out = tmp_path / "searched.safetensors"
    tr.export(runs.root / "s2", start)
    dp.save(cal.uniform_ladder(dp.load(start)), start)
    tr.export(runs.root / "s2", out)
    dp.save(dp.load(start), out)
    grid = (0.25, 0.5, 0.75, 1.0, 1.25, 1.5)
    notes: list[str] = []
    record = cal.search_steps(out, train_data, sweeps=1, crops=2, crop_size=128, grid=grid,
                              log=notes.append)  # fmt: skip
    moves = record["moves"]
    assert len(moves) >= LAYERS - 1 and sum("sweep 0 layer" in n for n in notes) == len(moves)
    # in order of layers; after a kept move the layer's other direction is not tried
    assert [m["layer"] for m in moves] == sorted(m["layer"] for m in moves)
    best, expected = 0.0, dp.load(start)
    for m in moves:
        assert m["kept"] == (m["bd_rate_vs_start_percent"] < best - cal.MIN_GAIN_PERCENT)
        if m["kept"]:
            best = m["bd_rate_vs_start_percent"]
            expected = cal.moved(expected, m["layer"], m["exponent"])
            assert not any(o["layer"] == m["layer"] and o is not m for o in moves[moves.index(m) :])
    assert record["bd_rate_vs_start_percent"] == best
    after = dp.load(out)
    np.testing.assert_array_equal(after.steps, expected.steps)
    assert after.meta["steps_searched"] == str(len(moves))
    side = dp.read_sidecar(out)
    assert side["step_search"] == json.loads(json.dumps(record))
    assert side["weights_sha256"] == sha256_file(out)
    assert side["steps_per_layer"]["mean"] == after.steps.mean(1).tolist()

    # the recorded figure is the BD-rate of the written file's real curve against the start's
    crops = cal.training_crops(train_data, 2, 128, log=notes.append)
    curves = [cal.measure_curve(DeepHQCodec(weights=str(f)), crops, grid) for f in (start, out)]
    again = bd_rate(curves[0].bpp, curves[0].psnr_rgb, curves[1].bpp, curves[1].psnr_rgb).value
    assert again == pytest.approx(best, abs=1e-9)


@needs_train_data
def test_search_steps_through_the_trainer_command(runs, train_data, tmp_path, capsys):
    from plugins.deephq import params as dp
    from plugins.deephq import train as tr

    target = tmp_path / "x.safetensors"
    command = ["--out", str(runs.root / "s3"), "--export", str(target), "--calibrate-steps"]
    assert tr.main(command) == 1
    assert "--calibrate-steps goes with --export and --data" in capsys.readouterr().err
    command += ["--data", str(train_data), "--calibrate-crops", "1", "--calibrate-crop", "96"]
    assert tr.main([*command, "--calibrate-sweeps", "0"]) == 1
    assert "--calibrate-sweeps must be >= 1" in capsys.readouterr().err
    assert tr.main([*command, "--calibrate-sweeps", "1"]) == 0
    assert "moves kept" in capsys.readouterr().out
    side = dp.read_sidecar(target)
    record = side["step_search"]
    assert (record["crops"], record["crop_size"]) == (1, 96) and record["moves"]
    assert {m["sweep"] for m in record["moves"]} == {0} and "threshold_calibration" not in side
