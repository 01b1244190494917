"""DeepHQ's fast coder (:func:`plugins.deephq.coder.schedule`, the batched sub-pass decode, the
reconstruction of only the elements that need it) against a straightforward reference written
here: every sub-pass found by scanning the whole latent (:func:`plugins.deephq.coder.refine`
without ``todo``), every chunk applied as it is read, every element reconstructed. On the real
base model's tables, random layered latents with repeated steps (the shortcut for a step equal
to the previous level's), slivers and nested masks: the same bytes, and the same decoder state
and reconstruction after every cut."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from plugins.learned.testing import SKIP_REASON, dependencies_missing, test_weights_spec

WEIGHTS = test_weights_spec()
pytestmark = pytest.mark.skipif(dependencies_missing() or WEIGHTS is None, reason=SKIP_REASON)


@pytest.fixture(scope="module")
def base():
    from plugins.learned.model_io import BaseModel

    return BaseModel.get(WEIGHTS)


def _subpasses(layers: int):
    for layer in range(1, layers + 1):
        for sub in range(1, layer + 1):
            yield layer, sub


def reference_encode(ctx, fine, idx, ch, units) -> bytes:
    """One sub-pass at a time from a scan of every element, one chunk at a time."""
    from plugins.deephq import coder
    from plugins.learned.coding import latent as lc

    el = coder.Elements.at_roots(ctx, idx, ch)
    c = ctx.c[idx]
    out, stats = bytearray(), lc.CoderStats()
    for layer, sub in _subpasses(ctx.layers):
        coded, sp = coder.refine(ctx, el, layer, sub)
        if sp is not None:
            n = fine[coded]
            esc = (n < -c[coded]) | (n > c[coded]) if sub == 1 else np.zeros(len(coded), bool)
            inner = sp.symbols(np.clip(n, -c[coded], c[coded]))
            sym = np.where(esc, sp.count[sp.group], inner)
            chosen = sp.first[sp.group] + inner
            for a, b in lc.chunk_bounds(sp.weight, units):
                rows = None
                if esc[a:b].any():
                    ids = coded[a:b][esc[a:b]]
                    rows = lc.escape_payload(fine[ids], c[ids])
                payload = lc.encode_chunk(sp.probs(a, b), sym[a:b], sp.escape_symbols(a, b), rows)
                lc.write_chunk(out, payload, int(sp.weight[a:b].sum()), stats)
            keep = ~esc
            el.lo[coded[keep]] = sp.starts[chosen[keep]]
            el.hi[coded[keep]] = sp.ends[chosen[keep]]
            el.escaped[coded[esc]] = True
            el.escape_value[coded[esc]] = fine[coded[esc]]
        el.level[coded] = sub
    return bytes(out)


def reference_decode(ctx, data, idx, ch, units):
    """The decoder state after every complete chunk of ``data``, each chunk applied at once."""
    from plugins.deephq import coder
    from plugins.learned.coding import latent as lc

    el = coder.Elements.at_roots(ctx, idx, ch)
    c, pos = ctx.c[idx], 0
    for layer, sub in _subpasses(ctx.layers):
        coded, sp = coder.refine(ctx, el, layer, sub)
        if sp is None:
            continue
        for a, b in lc.chunk_bounds(sp.weight, units):
            chunk = lc.read_chunk(data, pos, int(sp.weight[a:b].sum()))
            if chunk is None:
                return el, pos
            payload, pos = chunk
            escape = sp.escape_symbols(a, b)
            syms, extra = lc.decode_chunk(payload, sp.probs(a, b), escape)
            count = sp.count[sp.group[a:b]]
            syms = np.minimum(syms, count - (0 if escape is not None else 1))
            ids = coded[a:b]
            esc = syms == count if escape is not None else np.zeros(b - a, bool)
            el.escaped[ids[esc]] = True
            el.escape_value[ids[esc]] = lc.escape_values(extra, c[ids[esc]])
            chosen = sp.first[sp.group[a:b]] + np.minimum(syms, count - 1)
            el.lo[ids[~esc]] = sp.starts[chosen[~esc]]
            el.hi[ids[~esc]] = sp.ends[chosen[~esc]]
            el.level[ids] = sub
    return el, pos


def reference_reconstruct(ctx, el, mode) -> np.ndarray:
    from plugins.learned.coding import latent as lc

    rel = lc.interval_reconstruction(mode, el.lo, el.hi, ctx.sigma[el.idx])
    rel = np.where(el.lo == el.hi, el.lo.astype(np.float64), rel)
    rel = np.where(el.level == 0, 0.0, rel)
    return np.where(el.escaped, el.escape_value.astype(np.float64), rel)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    seed=st.integers(0, 2**32 - 1),
    layers=st.sampled_from([1, 2, 4, 8]),
    ladder=st.sampled_from(["powers of two", "real", "real, repeated"]),
    tau=st.sampled_from([0.5, 0.0, 0.9]),
    cuts=st.lists(st.floats(0.0, 1.0), min_size=1, max_size=4),
)
def test_fast_coder_equals_the_reference(base, seed, layers, ladder, tau, cuts):
    from plugins.deephq import coder
    from plugins.learned.coding import latent as lc

    rng = np.random.default_rng(seed)
    channels = 4
    cdf = np.asarray(base.cdf, np.int64)
    c_all = -np.asarray(base.offset, np.int64)
    # steps per layer and channel, the last layer 1; consecutive layers often share a step
    if ladder == "powers of two":
        steps = 2.0 ** rng.integers(0, 4, (layers, channels))
    else:
        steps = rng.uniform(1.0, 12.0, (layers, channels))
    if ladder != "real":
        repeat = rng.random((layers, channels)) < 0.5
        for k in range(1, layers):
            steps[k] = np.where(repeat[k], steps[k - 1], steps[k])
    steps[-1] = 1.0
    thr = np.minimum.accumulate(rng.integers(0, 40, (layers, channels)), axis=0)
    thr[:, 0] = 0
    ctx = coder.CoderContext(
        cdf=cdf,
        c=c_all,
        steps=steps,
        mask_index_threshold=thr,
        sigma=np.asarray(base.scale_table, np.float64),
        sliver_fraction=tau,
    )
    count = int(rng.integers(100, 1200))
    idx = np.sort(rng.integers(0, len(c_all), count))[::-1].copy()
    ch = rng.integers(0, channels, count)
    fine = np.rint(rng.normal(0.0, ctx.sigma[idx] * 1.3)).astype(np.int64)
    outliers = rng.choice(count, size=2, replace=False)
    fine[outliers] = c_all[idx[outliers]] + np.array([1, 50])
    units = int(rng.choice([64, 256])) * lc.UNITS_PER_BIT

    data, _ = coder.encode(ctx, fine, idx, ch, units)
    assert data == reference_encode(ctx, fine, idx, ch, units)
    layout = coder.prepare(ctx, idx, ch)  # the same for every cut: made once, as the codec does
    for k in sorted({round(u * len(data)) for u in cuts} | {len(data)}):
        got = coder.decode(ctx, data[:k], 0, idx, ch, units, layout)
        want, end = reference_decode(ctx, data[:k], idx, ch, units)
        assert got.end == end
        for name in ("lo", "hi", "level", "escaped", "escape_value"):
            assert np.array_equal(getattr(got.elements, name), getattr(want, name)), name
        for mode in ("mean", "midpoint"):
            fast = coder.reconstruct(ctx, got.elements, mode)
            assert fast.tobytes() == reference_reconstruct(ctx, want, mode).tobytes()


def test_rising_thresholds_are_refused(base):
    """The schedule relies on nested selection (thresholds never rise)."""
    from plugins.deephq import coder

    with pytest.raises(ValueError, match="must not rise"):
        coder.CoderContext(
            cdf=np.asarray(base.cdf, np.int64),
            c=-np.asarray(base.offset, np.int64),
            steps=np.ones((2, 1)),
            mask_index_threshold=np.array([[3], [4]]),
            sigma=np.asarray(base.scale_table, np.float64),
        )
