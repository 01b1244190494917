"""DeepHQ's hierarchical quantizer and its progressive coder (per element, per channel steps).

Intervals
    Every element ``e`` of the latent has a channel ``ch``, the prior's scale index ``i`` and the
    base model's fine index ``n = round(y - mu)``, an integer in ``[-c_i, c_i]`` (else escaped,
    as in :mod:`plugins.learned.coding.latent`). Its state is an interval ``[lo, hi]`` of fine
    integers, i.e. ``[lo - 1/2, hi + 1/2]`` of ``y - mu``, starting at the root ``[-c_i, c_i]``
    (plus an escape child) and shrinking one *level* at a time.

Splitting an interval at level ``k`` (step ``D = D[k, ch] >= 1``)
    The layer-``k`` grid cuts ``y - mu`` at ``(j + 1/2) D``: the fine integer ``n`` has the
    label ``floor(n / D + 1/2)`` (IEEE-754 division and addition, exact on every machine), and
    the children of ``[lo, hi]`` are its maximal runs of equal labels. A first or last child
    narrower than ``tau * D`` fine integers (a sliver where the parent's edge falls just past a
    grid line) is merged into its neighbour, so that no child is much narrower than the step.
    The last level has ``D = 1``: single integers.

Probabilities
    ``P(child | parent) = F(child) / F(parent)`` with ``F`` the sums of the base model's integer
    frequencies (CompressAI's 16-bit CDF table of row ``i``): the Gaussian prior renormalised to
    the parent interval, in exact integers (the product over levels is the base model's own
    probability of ``n``).

Selection and order (:func:`plan`)
    Layer ``l = 1..L`` refines the elements selected at ``l`` (``i >= T[l, ch]``, nested
    sets). An element selected before is at level ``l - 1`` and gets one symbol (level ``l``);
    an element newly selected at ``l`` is still at its root and goes through levels ``1..l``.
    Layer ``l`` is sent as sub-passes ``k = 1..l``; sub-pass ``k`` holds the level-``k`` symbols
    of the selected elements still at level ``k - 1``, in the refinement order (prior scale
    index descending, then raster position). A child-less step (one child) costs nothing.
    Unselected elements keep their root: the decoder puts them at the prior mean.

Chunks, lengths, escapes, trimming and the stop at the first incomplete chunk are those of the
shared coder (:func:`plugins.learned.coding.latent.encode_chunk` and friends); chunk boundaries
come from each symbol's expected cost in 1/16 bit, computed from the integer frequencies with
the exact integer log table, so both sides cut the same chunks.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass, replace

import numpy as np

from plugins.learned.coding import latent as lc

#: A first/last child narrower than this fraction of the step is merged into its neighbour.
SLIVER_FRACTION = 0.5


@dataclass(frozen=True)
class CoderContext:
    """What both sides know before the latent: model tables and DeepHQ's parameters."""

    cdf: np.ndarray  # (S, W) int64, CompressAI's _quantized_cdf
    c: np.ndarray  # (S,) support half-width of each scale index
    steps: np.ndarray  # (L, M) float64
    mask_index_threshold: np.ndarray  # (L, M) int64, never rising from a layer to the next
    sigma: np.ndarray  # (S,) scale table (reconstruction only)
    sliver_fraction: float = SLIVER_FRACTION

    def __post_init__(self) -> None:
        if np.any(np.diff(self.mask_index_threshold, axis=0) > 0):
            raise ValueError("mask thresholds must not rise from one layer to the next")

    @property
    def layers(self) -> int:
        return int(self.steps.shape[0])

    def first_layer(self, idx: np.ndarray, ch: np.ndarray) -> np.ndarray:
        """int64: the layer (1..L) from which each element (scale index ``idx``, channel ``ch``)
        is selected, ``L + 1`` if never (the selected sets are nested)."""
        index = np.arange(len(self.c))
        count = (index[None, None, :] >= self.mask_index_threshold[:, :, None]).sum(axis=0)
        return self.layers + 1 - count[ch, idx]


@dataclass
class Elements:
    """Per element (refinement order): scale index, channel, and the interval state."""

    idx: np.ndarray
    ch: np.ndarray
    lo: np.ndarray
    hi: np.ndarray
    level: np.ndarray
    escaped: np.ndarray
    escape_value: np.ndarray

    @classmethod
    def at_roots(cls, ctx: CoderContext, idx: np.ndarray, ch: np.ndarray) -> Elements:
        c = ctx.c[idx]
        n = len(idx)
        return cls(
            idx=idx,
            ch=ch,
            lo=-c,
            hi=c.copy(),
            level=np.zeros(n, np.int64),
            escaped=np.zeros(n, bool),
            escape_value=np.zeros(n, np.int64),
        )


@dataclass
class Split:
    """The children of the intervals refined in one sub-pass.

    Elements that share a parent interval (same channel, scale index, ``lo`` and ``hi``) share
    one *group*; children are ragged arrays per group. ``group[e]`` maps the ``e``-th refined
    element to its group.
    """

    ids: np.ndarray  # (P,) elements refined (refinement-order positions)
    group: np.ndarray  # (P,) group of each element
    first: np.ndarray  # (G,) offset of each group's first child in starts/ends/freq
    count: np.ndarray  # (G,) number of children, escape excluded
    starts: np.ndarray  # (K,) first fine integer of each child
    ends: np.ndarray  # (K,) last fine integer of each child
    freq: np.ndarray  # (K,) int64 frequency of each child
    escape: np.ndarray | None  # (G,) frequency of the escape child (roots only)
    total: np.ndarray  # (G,) frequency of the parent (its children and escape)
    weight: np.ndarray  # (P,) expected cost of each element's symbol, 1/16 bit

    def group_rows(self) -> np.ndarray:
        """``(G, max count [+ 1])`` float64 (exact integers): each group's children frequencies,
        then zeros; at roots the escape child's frequency at column ``count``."""
        escape = self.escape is not None
        out = np.zeros((len(self.count), int(self.count.max()) + int(escape)), np.float64)
        rows = np.repeat(np.arange(len(self.count)), self.count)
        out[rows, np.arange(len(rows)) - self.first[rows]] = self.freq
        if escape:
            out[np.arange(len(self.count)), self.count] = self.escape
        return out

    def chunk_rows(self, rows: np.ndarray, a: int, b: int) -> np.ndarray:
        """Frequency rows of elements ``a:b`` from :meth:`group_rows` ``rows``, as wide as the
        chunk's widest row (its largest child count, plus the escape child at roots)."""
        groups = self.group[a:b]
        width = int(self.count[groups].max()) + (1 if self.escape is not None else 0)
        return rows[:, :width][groups]

    def probs(self, a: int, b: int) -> np.ndarray:
        """Frequency rows (float64, exact) of elements ``a:b``, escape child last at roots."""
        return self.chunk_rows(self.group_rows(), a, b)

    def only(self, keep: np.ndarray) -> Split:
        """The same groups for the elements ``keep`` (a boolean mask over ``ids``)."""
        return replace(self, ids=self.ids[keep], group=self.group[keep], weight=self.weight[keep])

    def escape_symbols(self, a: int, b: int) -> np.ndarray | None:
        return None if self.escape is None else self.count[self.group[a:b]]

    def symbols(self, fine: np.ndarray) -> np.ndarray:
        """Child index holding each refined element's fine index (no escapes)."""
        span = np.int64(1) << np.int64(32)
        owner = np.repeat(np.arange(len(self.count), dtype=np.int64), self.count)
        keys = owner * span + (self.starts + span // 2)
        where = np.searchsorted(keys, self.group * span + (fine + span // 2), side="right") - 1
        return np.clip(where - self.first[self.group], 0, self.count[self.group] - 1)


def _labels(n: np.ndarray, d: np.ndarray) -> np.ndarray:
    return np.floor(n / d + 0.5).astype(np.int64)


def _distinct(key: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The distinct values of ``key`` (ascending) and the index of each element's among them;
    a stable sort (timsort), close to free on keys that arrive in order."""
    order = np.argsort(key, kind="stable")
    ordered = key[order]
    new = np.empty(len(key), bool)
    new[:1] = True
    np.not_equal(ordered[1:], ordered[:-1], out=new[1:])
    group = np.empty(len(key), np.int64)
    group[order] = np.cumsum(new) - 1
    return ordered[new], group


def split(ctx: CoderContext, el: Elements, ids: np.ndarray, level: int) -> Split:
    """Children at ``level`` of the current intervals of elements ``ids`` (see module doc)."""
    bits = int(2 * ctx.c.max() + 2).bit_length()
    half, field = 1 << (bits - 1), (1 << bits) - 1
    scales, channels = len(ctx.c), ctx.steps.shape[1]
    # one group per parent, keyed in refinement order (scale index descending, then channel):
    # roots arrive sorted, other parents in sorted runs; each parent is read back from its key
    key = ((scales - 1 - el.idx[ids]) * channels + el.ch[ids]) << (2 * bits)
    key |= (el.lo[ids] + half) << bits
    key |= el.hi[ids] + half
    key, group = _distinct(key)
    lo, hi = ((key >> bits) & field) - half, (key & field) - half
    order, channel = np.divmod(key >> (2 * bits), channels)
    row = scales - 1 - order
    d = ctx.steps[level - 1, channel]
    first_label = _labels(lo, d)
    k0 = _labels(hi, d) - first_label + 1
    rep = np.repeat(np.arange(len(key)), k0)
    j = np.arange(int(k0.sum())) - np.repeat(np.cumsum(k0) - k0, k0)
    label = first_label[rep] + j
    dr = d[rep]
    guess = np.ceil((label - 0.5) * dr).astype(np.int64)
    guess = np.where(_labels(guess - 1, dr) >= label, guess - 1, guess)
    guess = np.where(_labels(guess, dr) < label, guess + 1, guess)
    starts = np.where(j == 0, lo[rep], guess)
    last = j == k0[rep] - 1
    ends = np.where(last, hi[rep], np.roll(starts, -1) - 1)
    # merge slivers at the parent's edges into their neighbour
    narrow = (ends - starts + 1) < ctx.sliver_fraction * dr
    count = k0.copy()
    drop = np.zeros(len(starts), bool)
    head = np.flatnonzero((j == 0) & narrow & (k0[rep] >= 2))
    drop[head + 1] = True
    count[rep[head]] -= 1
    tail = np.flatnonzero(last & narrow & (j >= 1))
    tail = tail[count[rep[tail]] >= 2]
    drop[tail] = True
    count[rep[tail]] -= 1
    keep = ~drop
    rep, starts = rep[keep], starts[keep]
    first = np.cumsum(count) - count
    is_last = np.zeros(len(starts), bool)
    is_last[first + count - 1] = True
    ends = np.where(is_last, hi[rep], np.roll(starts, -1) - 1)
    c = ctx.c[row]
    freq = ctx.cdf[row[rep], ends + c[rep] + 1] - ctx.cdf[row[rep], starts + c[rep]]
    total = np.add.reduceat(freq, first)
    logt = lc.log_table()
    weight = np.add.reduceat(freq * (logt[total[rep]] - logt[freq]), first)
    escape = None
    if level == 1:
        escape = ctx.cdf[row, 2 * c + 2] - ctx.cdf[row, 2 * c + 1]
        total = total + escape
        weight = np.add.reduceat(freq * (logt[total[rep]] - logt[freq]), first)
        weight = weight + escape * (logt[total] - logt[escape])
    weight = weight // np.maximum(total, 1)
    return Split(ids, group, first, count, starts, ends, freq, escape, total, weight[group])


def _final(el: Elements, ids: np.ndarray | slice) -> np.ndarray:
    """Whether the intervals of ``ids`` are final (escaped, or one integer below the root)."""
    return el.escaped[ids] | ((el.lo[ids] == el.hi[ids]) & (el.level[ids] > 0))


def _open_below_root(el: Elements, ids: np.ndarray, escapes: bool) -> np.ndarray:
    """``~_final`` of elements ``ids`` below their root; ``escapes``: whether some may have
    escaped (only level-1 symbols escape)."""
    open_ = el.lo[ids] != el.hi[ids]
    return open_ & ~el.escaped[ids] if escapes else open_


def candidates(ctx: CoderContext, el: Elements, layer: int) -> np.ndarray:
    """Positions (ascending) of the elements selected at ``layer`` whose interval is not final:
    every element a sub-pass of ``layer`` may refine (selection is fixed within a layer and
    final intervals stay final)."""
    selected = el.idx >= ctx.mask_index_threshold[layer - 1, el.ch]
    return np.flatnonzero(selected & ~_final(el, slice(None)))


def plan(
    ctx: CoderContext, el: Elements, layer: int, sub: int, todo: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Elements of sub-pass ``sub`` of ``layer``: ``(coded, passed)``, both in refinement order.

    ``coded`` need a symbol; ``passed`` have a single child and move one level down for free
    (roots are always coded: the escape child is their alternative). ``todo``: the sub-pass's
    elements as :func:`schedule` yields them (selected, at level ``sub - 1``, not final, in
    refinement order); found by scanning every element when not given."""
    if todo is None:
        todo = candidates(ctx, el, layer)
        todo = todo[el.level[todo] == sub - 1]
    if sub == 1:
        return todo, todo[:0]
    d = ctx.steps[sub - 1, el.ch[todo]]
    single = _labels(el.lo[todo], d) == _labels(el.hi[todo], d)
    return todo[~single], todo[single]


def refine(
    ctx: CoderContext, el: Elements, layer: int, sub: int, todo: np.ndarray | None = None
) -> tuple[np.ndarray, Split | None]:
    """Plan sub-pass ``sub`` of ``layer`` (:func:`plan`): move child-less elements down one
    level and return the elements that need a symbol with their :class:`Split` (``None`` if
    there are none). Every element of the sub-pass ends one level down once it is coded."""
    coded, passed = plan(ctx, el, layer, sub, todo)
    el.level[passed] = sub
    if not len(coded):
        return coded, None
    sp = split(ctx, el, coded, sub)
    if sub > 1:  # a parent whose sliver merged away its only boundary has one child
        multi = sp.count[sp.group] > 1
        if not multi.all():
            el.level[coded[~multi]] = sub
            coded, sp = coded[multi], sp.only(multi)
            if not len(coded):
                return coded, None
    return coded, sp


def schedule(ctx: CoderContext, el: Elements) -> Iterator[tuple[int, int, np.ndarray]]:
    """The sub-passes in stream order, each as ``(layer, sub, todo)``: ``todo`` the elements of
    the sub-pass (see :func:`plan`), found without scanning the whole latent. The caller codes
    each sub-pass completely before drawing the next (the generator reads ``el`` back).

    Sub-pass 1 of layer ``l`` takes the elements first selected at ``l`` (roots); sub-pass
    ``k > 1`` the elements of sub-pass ``k - 1`` (now at level ``k - 1``) whose interval is not
    final; the last one also the elements of the previous layer's last sub-pass that are not
    final (at level ``l - 1`` since then). Selection is nested, so these are all.

    Where a channel's step at level ``k`` equals its step at level ``k - 1``, every interval at
    level ``k - 1`` has one child at level ``k`` (it is a run of equal labels, plus the edge
    slivers merged into it, which merge again): those elements move down here, unplanned."""
    first = ctx.first_layer(el.idx, el.ch).astype(np.int8)  # <= L + 1 <= 127
    by_first = np.argsort(first, kind="stable")
    edges = np.searchsorted(first[by_first], np.arange(1, ctx.layers + 2)).tolist()
    same_step = np.zeros_like(ctx.steps, bool)
    same_step[1:] = ctx.steps[1:] == ctx.steps[:-1]
    carry = by_first[:0]
    for layer in range(1, ctx.layers + 1):
        carry = carry[_open_below_root(el, carry, escapes=layer == 2)]
        todo = by_first[edges[layer - 1] : edges[layer]]
        for sub in range(1, layer + 1):
            if sub > 1:
                todo = todo[_open_below_root(el, todo, escapes=sub == 2)]
            if sub == layer and len(carry):
                todo = np.insert(carry, np.searchsorted(carry, todo), todo)
            if sub > 1:
                same = same_step[sub - 1][el.ch[todo]]
                el.level[todo[same]] = sub
                yield layer, sub, todo[~same]
            else:
                yield layer, sub, todo
        carry = todo


def encode(
    ctx: CoderContext, fine: np.ndarray, idx: np.ndarray, ch: np.ndarray, chunk_units: int
) -> tuple[bytes, lc.CoderStats]:
    """Code fine indices ``fine`` (refinement order) layer by layer; returns bytes and stats."""
    fine = np.asarray(fine, np.int64)
    el = Elements.at_roots(ctx, np.asarray(idx, np.int64), np.asarray(ch, np.int64))
    c = ctx.c[el.idx]
    stats = lc.CoderStats()
    out = bytearray()
    for layer, sub, todo in schedule(ctx, el):
        t0 = time.perf_counter()
        coded, sp = refine(ctx, el, layer, sub, todo)
        if sp is not None:
            n = fine[coded]
            esc = (n < -c[coded]) | (n > c[coded]) if sub == 1 else np.zeros(len(coded), bool)
            inner = sp.symbols(np.clip(n, -c[coded], c[coded]))
            sym = np.where(esc, sp.count[sp.group], inner)
            chosen = sp.first[sp.group] + inner
            f = sp.freq[chosen]
            if sp.escape is not None:
                f = np.where(esc, sp.escape[sp.group], f)
            stats.ideal_bits += float(-np.log2(f / sp.total[sp.group]).sum())
            rows = sp.group_rows()
            for a, b in lc.chunk_bounds(sp.weight, chunk_units):
                esc_rows = None
                if esc[a:b].any():
                    ids = coded[a:b][esc[a:b]]
                    esc_rows = lc.escape_payload(fine[ids], c[ids])
                payload = lc.encode_chunk(
                    sp.chunk_rows(rows, a, b), sym[a:b], sp.escape_symbols(a, b), esc_rows
                )
                lc.write_chunk(out, payload, int(sp.weight[a:b].sum()), stats)
            keep = ~esc
            el.lo[coded[keep]] = sp.starts[chosen[keep]]
            el.hi[coded[keep]] = sp.ends[chosen[keep]]
            el.escaped[coded[esc]] = True
            el.escape_value[coded[esc]] = fine[coded[esc]]
            stats.escapes += int(esc.sum())
            stats.symbols += len(coded)
        el.level[coded] = sub
        stats.entropy_seconds += time.perf_counter() - t0
        if sub == layer:
            stats.levels_complete = layer
    return bytes(out), stats


@dataclass
class DecodedLatent:
    """What the decoder knows after a prefix (refinement order)."""

    elements: Elements
    complete: bool
    stats: lc.CoderStats
    end: int  # position after the last complete chunk


def _decode_subpass(
    ctx: CoderContext,
    el: Elements,
    coded: np.ndarray,
    sp: Split,
    sub: int,
    data: bytes,
    pos: int,
    chunk_units: int,
    stats: lc.CoderStats,
) -> tuple[int, bool]:
    """Decode the chunks of one sub-pass from ``data[pos:]`` up to the first incomplete one,
    then move the decoded elements to their children (or escapes) in one go; returns the
    position after the last complete chunk and whether every chunk was complete."""
    bounds = lc.chunk_bounds(sp.weight, chunk_units)
    heads = np.array([a for a, _ in bounds], np.int64)
    weights = np.add.reduceat(sp.weight, heads).tolist()
    escape = sp.escape is not None
    count = sp.count[sp.group]
    widths = (np.maximum.reduceat(count, heads) + int(escape)).tolist()
    rows = sp.group_rows()
    parts, extras, done, complete = [], [], 0, True
    for (a, b), weight, width in zip(bounds, weights, widths, strict=True):
        chunk = lc.read_chunk(data, pos, weight)
        if chunk is None:
            complete = False
            break
        payload, pos = chunk
        probs = rows[:, :width][sp.group[a:b]]
        syms, extra = lc.decode_chunk(payload, probs, count[a:b] if escape else None)
        parts.append(syms)
        extras.append(extra)
        stats.chunks += 1
        stats.payload_bytes += len(payload)
        done = b
    if not done:
        return pos, complete
    ids, count = coded[:done], count[:done]
    syms = np.minimum(np.concatenate(parts), count - (0 if escape else 1))
    if escape:
        esc = syms == count
        if esc.any():
            el.escaped[ids[esc]] = True
            el.escape_value[ids[esc]] = lc.escape_values(
                np.concatenate(extras), ctx.c[el.idx[ids[esc]]]
            )
            stats.escapes += int(esc.sum())
        keep = ~esc
        ids, syms = ids[keep], syms[keep]
        groups = sp.group[:done][keep]
    else:
        groups = sp.group[:done]
    chosen = sp.first[groups] + syms
    el.lo[ids] = sp.starts[chosen]
    el.hi[ids] = sp.ends[chosen]
    el.level[coded[:done]] = sub
    stats.symbols += done
    return pos, complete


def decode(
    ctx: CoderContext, data: bytes, pos: int, idx: np.ndarray, ch: np.ndarray, chunk_units: int
) -> DecodedLatent:
    """Decode every complete chunk of ``data[pos:]``; stop at the first incomplete one."""
    el = Elements.at_roots(ctx, np.asarray(idx, np.int64), np.asarray(ch, np.int64))
    stats = lc.CoderStats()
    for layer, sub, todo in schedule(ctx, el):
        t0 = time.perf_counter()
        coded, sp = refine(ctx, el, layer, sub, todo)
        complete = True
        if sp is not None:
            pos, complete = _decode_subpass(ctx, el, coded, sp, sub, data, pos, chunk_units, stats)
        stats.entropy_seconds += time.perf_counter() - t0
        if not complete:
            return DecodedLatent(el, False, stats, pos)
        if sub == layer:
            stats.levels_complete = layer
    return DecodedLatent(el, True, stats, pos)


def reconstruct(ctx: CoderContext, el: Elements, mode: str = "mean") -> np.ndarray:
    """``y - mu`` estimate (refinement order): the prior mean (0) at the root, the exact value
    once escaped or down to one integer, else the interval's reconstruction (``mode`` as in
    :func:`plugins.learned.coding.latent.interval_reconstruction`)."""
    rel = np.zeros(len(el.lo), np.float64)
    below_root = el.level > 0
    single = below_root & (el.lo == el.hi)
    rel[single] = el.lo[single]
    wide = np.flatnonzero(below_root & (el.lo != el.hi) & ~el.escaped)
    # one reconstruction per distinct (scale index, interval): many elements share one
    bits = int(2 * ctx.c.max() + 2).bit_length()
    half, field = 1 << (bits - 1), (1 << bits) - 1
    key = (el.idx[wide] << (2 * bits)) | ((el.lo[wide] + half) << bits) | (el.hi[wide] + half)
    key, inverse = np.unique(key, return_inverse=True)
    lo, hi = ((key >> bits) & field) - half, (key & field) - half
    rel[wide] = lc.interval_reconstruction(mode, lo, hi, ctx.sigma[key >> (2 * bits)])[inverse]
    rel[el.escaped] = el.escape_value[el.escaped]
    return rel
