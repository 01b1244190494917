"""DeepHQ's hierarchical quantizer and its progressive coder (per element, per channel steps).

Intervals
    Every element ``e`` of the latent has a channel ``ch``, the prior's scale index ``i`` and the
    base model's fine index ``n = round(y - mu)``, an integer in ``[-c_i, c_i]`` (else escaped,
    as in :mod:`plugins.learned.coding.latent`). Its state is an interval ``[lo, hi]`` of fine
    integers, i.e. ``[lo - 1/2, hi + 1/2]`` of ``y - mu``, starting at the root ``[-c_i, c_i]``
    (plus an escape child) and shrinking one *level* at a time.

Splitting an interval at level ``k`` (step ``D = D[k, ch] >= 1``)
    The layer-``k`` grid is mid-tread (the paper's uniform quantizer, the default): it cuts
    ``y - mu`` at ``(j + 1/2) D`` and the fine integer ``n`` has the label
    ``floor(n / D + 1/2)``; or dead-zone: the label is ``trunc(n / D)`` (sign and magnitude,
    a zero bin ``2D - 1`` wide, as PLONQ's and the bit-plane coders' grids), so that with
    power-of-two steps every coarser bin is a union of finer ones (exact nesting). IEEE-754
    division (and addition), exact on every machine. The children of ``[lo, hi]`` are its
    maximal runs of equal labels. A first or last child
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

Slope order (``CoderContext.order == "slope"``, :func:`slope_thresholds`)
    No layers and no masks (the thresholds must be 0): every element may descend to the last
    level. Each node of the tables gets a slope, the expected decrease of the squared error of
    ``y - mu`` (conditional means under the prior's integer frequencies, :func:`_gains`) per
    expected 1/16 bit of its symbol (:func:`_expected_costs`, from an exact
    ``floor(1024 log2 x)`` table), maximised over looking 1..L levels ahead
    (:func:`_lookahead_slopes`: a node whose own split gains little borrows its descendants').
    An element's key is its channel's gain (``channel_gain``, 1 when absent) times its node's
    slope. Passes of falling thresholds (``2**k``, ``0.75 * 2**k``, exact in binary, then -1)
    sweep the levels ``1..L``; at level ``k`` they code, keys descending (ties in refinement
    order), every element at level ``k - 1`` whose key reaches the threshold; one-child nodes
    are skipped for free. The keys use integer sums and elementwise IEEE-754 operations in a
    fixed order, so the encoder and the decoder of any machine order alike.

Tables (:class:`Forest`, :class:`Layout`)
    The children of an interval depend only on the interval, its scale index and its channel's
    steps, so the coder tabulates every interval the stream's elements can reach, one tree per
    (scale index, step column) present, with children, frequency rows, expected costs and
    reconstructions, once per set of elements (the decoder: once per stream header, which
    determines them; :class:`LayoutCache`). Coding then walks each element down its tree as
    PLONQ's coder walks its level tables. :func:`split`, :func:`plan` and :func:`refine` are the
    definition the tables are built from (and tested against): the same intervals, symbols and
    bytes.

Chunks, lengths, escapes, trimming and the stop at the first incomplete chunk are those of the
shared coder (:func:`plugins.learned.coding.latent.encode_chunk` and friends); chunk boundaries
come from each symbol's expected cost in 1/16 bit, computed from the integer frequencies with
the exact integer log table, so both sides cut the same chunks.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from functools import cached_property

import numpy as np

from plugins.learned.coding import latent as lc

#: A first/last child narrower than this fraction of the step is merged into its neighbour.
SLIVER_FRACTION = 0.5
#: The layer grids (module doc): ``floor(n / D + 1/2)`` and ``trunc(n / D)``.
MID_TREAD, DEAD_ZONE = "mid-tread", "dead-zone"
GRIDS = (MID_TREAD, DEAD_ZONE)
#: Orders within a sub-pass (module doc): prior scale index, or expected gain per bit.
SCALE_ORDER, SLOPE_ORDER = "scale", "slope"
ORDERS = (SCALE_ORDER, SLOPE_ORDER)
#: The slope order's symbol costs come from ``floor(COST_UNITS * log2 x)``: 1/1024 bit.
COST_UNITS = 1024
#: ... and a symbol is taken to cost at least this (1/16 bit units): 1/1024 bit.
MIN_COST = 1.0 / 64


@dataclass(frozen=True)
class CoderContext:
    """What both sides know before the latent: model tables and DeepHQ's parameters."""

    cdf: np.ndarray  # (S, W) int64, CompressAI's _quantized_cdf
    c: np.ndarray  # (S,) support half-width of each scale index
    steps: np.ndarray  # (L, M) float64
    mask_index_threshold: np.ndarray  # (L, M) int64, never rising from a layer to the next
    sigma: np.ndarray  # (S,) scale table (reconstruction only)
    sliver_fraction: float = SLIVER_FRACTION
    grid: str = MID_TREAD
    order: str = SCALE_ORDER
    channel_gain: np.ndarray | None = None  # (M,) float64: pixel error per latent error

    def __post_init__(self) -> None:
        if np.any(np.diff(self.mask_index_threshold, axis=0) > 0):
            raise ValueError("mask thresholds must not rise from one layer to the next")
        if self.grid not in GRIDS:
            raise ValueError(f"unknown grid {self.grid!r}: one of {', '.join(GRIDS)}")
        if self.order not in ORDERS:
            raise ValueError(f"unknown order {self.order!r}: one of {', '.join(ORDERS)}")
        if self.order == SLOPE_ORDER and np.any(self.mask_index_threshold):
            raise ValueError("the slope order selects by slope: mask thresholds must be 0")
        gain = self.channel_gain
        if gain is not None and (
            gain.shape != self.steps.shape[1:] or not np.all(np.isfinite(gain) & (gain > 0))
        ):
            raise ValueError(f"channel gains must be (M,) finite and > 0, not {gain.shape}")

    @property
    def layers(self) -> int:
        return int(self.steps.shape[0])

    def first_layer(self, idx: np.ndarray, ch: np.ndarray) -> np.ndarray:
        """int64: the layer (1..L) from which each element (scale index ``idx``, channel ``ch``)
        is selected, ``L + 1`` if never (the selected sets are nested)."""
        index = np.arange(len(self.c))
        count = (index[None, None, :] >= self.mask_index_threshold[:, :, None]).sum(axis=0)
        return self.layers + 1 - count[ch, idx]

    @cached_property
    def first_moment(self) -> np.ndarray:
        """(S, W) int64: ``first_moment[i, k]`` is the sum of ``f * n`` over the fine integers
        ``n < k - c_i`` of row ``i`` (``f`` its integer frequencies, escape excluded)."""
        freq = np.diff(self.cdf, axis=1)
        n = np.arange(freq.shape[1])[None, :] - self.c[:, None]
        term = np.where(n <= self.c[:, None], freq * n, 0)
        return np.concatenate([np.zeros((len(self.c), 1), np.int64), np.cumsum(term, axis=1)], 1)

    @cached_property
    def tree_channel(self) -> np.ndarray:
        """(M,) int64: for each channel, the first channel with the same steps at every level
        (their intervals split alike, so they share interval trees)."""
        _, first, inverse = np.unique(self.steps.T, axis=0, return_index=True, return_inverse=True)
        return first[inverse.reshape(-1)].astype(np.int64)


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


def _labels(n: np.ndarray, d: np.ndarray, grid: str) -> np.ndarray:
    """int64: the layer-grid label of fine integers ``n`` under steps ``d`` (see module doc)."""
    if grid == DEAD_ZONE:
        return np.trunc(n / d).astype(np.int64)
    return np.floor(n / d + 0.5).astype(np.int64)


def _label_starts(label: np.ndarray, d: np.ndarray, grid: str) -> np.ndarray:
    """int64: the smallest fine integer of each label, possibly one too far either way (the
    caller corrects it with :func:`_labels`)."""
    if grid == DEAD_ZONE:
        return np.where(label >= 1, np.ceil(label * d), np.floor((label - 1) * d) + 1).astype(
            np.int64
        )
    return np.ceil((label - 0.5) * d).astype(np.int64)


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
    half, mask = 1 << (bits - 1), (1 << bits) - 1
    scales, channels = len(ctx.c), ctx.steps.shape[1]
    # one group per parent, keyed in refinement order (scale index descending, then channel):
    # roots arrive sorted, other parents in sorted runs; each parent is read back from its key
    key = ((scales - 1 - el.idx[ids]) * channels + el.ch[ids]) << (2 * bits)
    key |= (el.lo[ids] + half) << bits
    key |= el.hi[ids] + half
    key, group = _distinct(key)
    lo, hi = ((key >> bits) & mask) - half, (key & mask) - half
    order, channel = np.divmod(key >> (2 * bits), channels)
    row = scales - 1 - order
    d = ctx.steps[level - 1, channel]
    first_label = _labels(lo, d, ctx.grid)
    k0 = _labels(hi, d, ctx.grid) - first_label + 1
    rep = np.repeat(np.arange(len(key)), k0)
    j = np.arange(int(k0.sum())) - np.repeat(np.cumsum(k0) - k0, k0)
    label = first_label[rep] + j
    dr = d[rep]
    guess = _label_starts(label, dr, ctx.grid)
    guess = np.where(_labels(guess - 1, dr, ctx.grid) >= label, guess - 1, guess)
    guess = np.where(_labels(guess, dr, ctx.grid) < label, guess + 1, guess)
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


def candidates(ctx: CoderContext, el: Elements, layer: int) -> np.ndarray:
    """Positions (ascending) of the elements selected at ``layer`` whose interval is not final:
    every element a sub-pass of ``layer`` may refine (selection is fixed within a layer and
    final intervals stay final)."""
    selected = el.idx >= ctx.mask_index_threshold[layer - 1, el.ch]
    return np.flatnonzero(selected & ~_final(el, slice(None)))


def plan(ctx: CoderContext, el: Elements, layer: int, sub: int) -> tuple[np.ndarray, np.ndarray]:
    """Elements of sub-pass ``sub`` of ``layer``: ``(coded, passed)``, both in refinement order:
    the selected elements at level ``sub - 1`` whose interval is not final, found by scanning
    every element.

    ``coded`` need a symbol; ``passed`` have a single child and move one level down for free
    (roots are always coded: the escape child is their alternative)."""
    todo = candidates(ctx, el, layer)
    todo = todo[el.level[todo] == sub - 1]
    if sub == 1:
        return todo, todo[:0]
    d = ctx.steps[sub - 1, el.ch[todo]]
    single = _labels(el.lo[todo], d, ctx.grid) == _labels(el.hi[todo], d, ctx.grid)
    return todo[~single], todo[single]


def refine(
    ctx: CoderContext, el: Elements, layer: int, sub: int
) -> tuple[np.ndarray, Split | None]:
    """Plan sub-pass ``sub`` of ``layer`` (:func:`plan`): move child-less elements down one
    level and return the elements that need a symbol with their :class:`Split` (``None`` if
    there are none). Every element of the sub-pass ends one level down once it is coded."""
    coded, passed = plan(ctx, el, layer, sub)
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


# -- the fast coder: every reachable interval tabulated once per stream header ---------------


#: :attr:`Forest.kind` of a node: an element there needs a symbol, moves to the only child for
#: free, or is final.
SPLITS, PASSES, FINAL = 0, 1, 2


@dataclass(frozen=True)
class Forest:
    """Every interval a set of elements can reach, tabulated: one tree per (scale index, step
    column), its nodes level by level (``level_offset``: global id of each level's first node),
    each node's children contiguous and ascending, as :func:`split` makes them.

    A node that is a single integer below its root is final and has no children; so does every
    node at level ``L`` and every root that no element refines. Roots carry the escape child
    (its frequency in ``rows[0]``, column ``count``). ``kind`` tells how an element at a node
    below its root moves on: :data:`SPLITS` (a symbol), :data:`PASSES` (one child: down for
    free) or :data:`FINAL`."""

    level_offset: np.ndarray  # (L + 2,) int64
    lo: np.ndarray  # (N,) int64 first fine integer
    hi: np.ndarray  # (N,) int64 last fine integer
    scale: np.ndarray  # (N,) int64 scale index
    level: np.ndarray  # (N,) int64
    freq: np.ndarray  # (N,) int64 the base model's frequency of the interval
    final: np.ndarray  # (N,) bool: a single integer below the root
    kind: np.ndarray  # (N,) int8: SPLITS, PASSES or FINAL
    first_child: np.ndarray  # (N,) int64 global id of the first child (0 where none)
    count: np.ndarray  # (N,) int64 children, escape excluded (0 where none)
    total: np.ndarray  # (N,) int64 frequency of the children (and escape at roots)
    weight: np.ndarray  # (N,) int64 expected cost of the node's symbol, 1/16 bit
    rows: tuple[np.ndarray, ...]  # [k]: (level-k nodes, widest + escape) float64 child freqs
    sigma: np.ndarray  # (S,) scale table (reconstruction only)
    priority: np.ndarray | None = None  # (N,) float64 refinement order key (higher first)
    _recon: dict[str, np.ndarray] = field(default_factory=dict, compare=False, repr=False)

    def recon(self, mode: str) -> np.ndarray:
        """float64 ``y - mu`` of an element at each node: 0 (the prior mean) at a root, the
        integer of a single-integer node, else the interval's reconstruction (``mode`` as in
        :func:`plugins.learned.coding.latent.interval_reconstruction`); computed once."""
        if mode not in self._recon:
            out = np.zeros(len(self.lo), np.float64)
            below = self.level > 0
            out[self.final] = self.lo[self.final]
            wide = below & ~self.final
            out[wide] = lc.interval_reconstruction(
                mode, self.lo[wide], self.hi[wide], self.sigma[self.scale[wide]]
            )
            self._recon[mode] = out
        return self._recon[mode]


def build_forest(
    ctx: CoderContext, scale: np.ndarray, channel: np.ndarray, grow: np.ndarray
) -> Forest:
    """The trees rooted at ``[-c_i, c_i]`` for scale indexes ``scale`` and channels ``channel``
    (roots get global ids ``0..T-1`` in this order); a tree with ``grow`` False stays a root.
    Each level splits every node of the level above that is not final, with :func:`split`: the
    children the coder computes for an element at that node."""
    scale = np.asarray(scale, np.int64)
    c = ctx.c[scale]
    lo, hi, sc, ch = [-c], [c.copy()], [scale], [np.asarray(channel, np.int64)]
    freq = [ctx.cdf[scale, 2 * c + 1] - ctx.cdf[scale, 0]]
    first_child, count, total, weight, rows = [], [], [], [], []
    offset = [0, len(scale)]
    parents = np.flatnonzero(grow)
    for level in range(1, ctx.layers + 1):
        above = len(lo[-1])
        fc, cnt, tot, wt = (np.zeros(above, np.int64) for _ in range(4))
        if len(parents):
            zero = np.zeros(above, np.int64)
            el = Elements(sc[-1], ch[-1], lo[-1], hi[-1], zero, zero > 0, zero)
            sp = split(ctx, el, parents, level)
            group = sp.group
            fc[parents] = offset[-1] + sp.first[group]
            cnt[parents], tot[parents], wt[parents] = sp.count[group], sp.total[group], sp.weight
            table = sp.group_rows()
            row = np.zeros((above, table.shape[1]), np.float64)
            row[parents] = table[group]
            owner = np.empty(len(sp.count), np.int64)
            owner[group] = parents
            owner = np.repeat(owner, sp.count)
            for part, new in ((lo, sp.starts), (hi, sp.ends), (freq, sp.freq)):
                part.append(new)
            for part in (sc, ch):
                part.append(part[-1][owner])
        else:
            row = np.zeros((above, 1), np.float64)
            for part in (lo, hi, freq, sc, ch):
                part.append(part[-1][:0])
        for part, new in ((first_child, fc), (count, cnt), (total, tot), (weight, wt), (rows, row)):
            part.append(new)
        offset.append(offset[-1] + len(lo[-1]))
        parents = np.flatnonzero(lo[-1] != hi[-1])
    last = len(lo[-1])
    for part in (first_child, count, total, weight):
        part.append(np.zeros(last, np.int64))
    sizes = np.diff(offset)
    lo_all, hi_all = np.concatenate(lo), np.concatenate(hi)
    level_of = np.repeat(np.arange(ctx.layers + 1), sizes)
    final = (lo_all == hi_all) & (level_of > 0)
    count_all = np.concatenate(count)
    scale_all, freq_all = np.concatenate(sc), np.concatenate(freq)
    first_all, weight_all = np.concatenate(first_child), np.concatenate(weight)
    priority = None
    if ctx.order == SLOPE_ORDER:
        gain = _gains(ctx, scale_all, lo_all, hi_all, freq_all, first_all, count_all)
        total_all = np.concatenate(total)
        cost = _expected_costs(freq_all, total_all, first_all, count_all, level_of)
        priority = _lookahead_slopes(gain, cost, freq_all, first_all, count_all, ctx.layers)
    return Forest(
        level_offset=np.asarray(offset, np.int64),
        lo=lo_all,
        hi=hi_all,
        scale=scale_all,
        level=level_of,
        freq=freq_all,
        final=final,
        kind=np.select([final, count_all == 1], [FINAL, PASSES], SPLITS).astype(np.int8),
        first_child=first_all,
        count=count_all,
        total=np.concatenate(total),
        weight=weight_all,
        rows=tuple(rows),
        sigma=ctx.sigma,
        priority=priority,
    )


def _ranks(count: np.ndarray) -> np.ndarray:
    """int64: ``0..count[i] - 1`` for each ``i``, concatenated."""
    return np.arange(int(count.sum())) - np.repeat(np.cumsum(count) - count, count)


def _children_sum(values: np.ndarray, first_child: np.ndarray, count: np.ndarray) -> np.ndarray:
    """Per node, the sum of ``values`` (one per node) over its children, added from 0 child by
    child in order (a fixed IEEE-754 order for floats); 0 where it has none."""
    by_count = np.argsort(-count, kind="stable")
    with_more = len(count) - np.cumsum(np.bincount(count))  # nodes with more than j children
    out = np.zeros(len(count), values.dtype)
    for j, size in enumerate(with_more.tolist()):
        if not size:
            break
        nodes = by_count[:size]
        out[nodes] += values[first_child[nodes] + j]
    return out


def _gains(
    ctx: CoderContext,
    scale: np.ndarray,
    lo: np.ndarray,
    hi: np.ndarray,
    freq: np.ndarray,
    first_child: np.ndarray,
    count: np.ndarray,
) -> np.ndarray:
    """float64 per node: the expected decrease of the squared error of ``y - mu`` (fine units,
    conditional-mean reconstruction under the prior's integer frequencies) when an element at
    the node learns its child; 0 where it has no child. Elementwise IEEE-754 operations on
    exact integers in a fixed order, so both sides compute the same values on every machine."""
    c = ctx.c[scale]
    moment = ctx.first_moment[scale, hi + c + 1] - ctx.first_moment[scale, lo + c]
    spread = np.zeros(len(lo), np.float64)
    held = freq > 0
    first = moment[held].astype(np.float64)
    spread[held] = first * first / freq[held]
    gain = np.where(count > 0, _children_sum(spread, first_child, count) - spread, 0.0)
    return np.where(held, gain / np.maximum(freq, 1), 0.0)


def _expected_costs(
    freq: np.ndarray,
    total: np.ndarray,
    first_child: np.ndarray,
    count: np.ndarray,
    level: np.ndarray,
) -> np.ndarray:
    """float64 per node: the expected cost of its symbol in 1/16 bit, ``sum f (L(T) - L(f)) / T``
    over its children (and the escape child at roots) with ``L`` the exact integer table of
    ``floor(1024 log2 x)`` (:func:`plugins.learned.coding.chunks.log_table`), so in units of
    1/1024 bit before the scaling; 0 where no symbol is sent (no child, or one child below the
    roots). Integer sums, then IEEE-754 divisions."""
    logt = lc.log_table(units=COST_UNITS)
    held = _children_sum(freq, first_child, count)
    escape = np.maximum(total - held, 0)  # the escape child's frequency at roots, 0 below
    spent = _children_sum(freq * logt[freq], first_child, count) + escape * logt[escape]
    number = logt[total] * (held + escape) - spent  # sum f (L(T) - L(f)), exact integers
    sent = (count >= 2) | ((level == 0) & (count >= 1))
    scale = COST_UNITS // lc.UNITS_PER_BIT
    return np.where(sent, number / np.maximum(total, 1) / scale, 0.0)


def _lookahead_slopes(
    gain: np.ndarray,
    cost: np.ndarray,
    freq: np.ndarray,
    first_child: np.ndarray,
    count: np.ndarray,
    depth: int,
) -> np.ndarray:
    """float64 per node: the best ratio of expected squared-error decrease to expected cost
    (``cost``: 1/16 bit per node) over refining 1..``depth`` levels below the node (a node
    whose own split gains little, such as a one-child node, borrows its descendants' slope).
    Elementwise IEEE-754 operations in a fixed order."""
    parent = np.zeros(len(count), np.int64)
    has = np.flatnonzero(count > 0)
    kids = np.repeat(first_child[has], count[has]) + _ranks(count[has])
    parent[kids] = np.repeat(has, count[has])
    share = np.zeros(len(count), np.float64)  # each child's share of its parent's frequency
    share[kids] = freq[kids] / np.maximum(freq[parent[kids]], 1).astype(np.float64)
    total_g = np.zeros(len(gain), np.float64)
    total_w = np.zeros(len(gain), np.float64)
    best = np.zeros(len(gain), np.float64)
    for _ in range(depth):
        child_g = _children_sum(share * total_g, first_child, count)
        child_w = _children_sum(share * total_w, first_child, count)
        total_g = np.where(count > 0, gain + child_g, 0.0)
        total_w = np.where(count > 0, cost + child_w, 0.0)
        ratio = np.where(count > 0, total_g / np.maximum(total_w, MIN_COST), 0.0)
        best = np.maximum(best, ratio)
    return best


@dataclass(frozen=True)
class Layout:
    """What the coder derives from the elements' scale indexes and channels alone (on the
    decoder's side: from the stream header): the forest of their trees, each element's root
    (global node id), and the elements grouped by first selected layer (``by_first``, stable:
    refinement order within a layer; ``by_first[edges[l - 1]:edges[l]]`` first selected at
    ``l``)."""

    forest: Forest
    roots: np.ndarray  # (E,) int64
    by_first: np.ndarray  # (E,) int64
    edges: list[int]
    gain: np.ndarray | None = None  # (E,) float64 channel gain of each element (slope order)


def prepare(ctx: CoderContext, idx: np.ndarray, ch: np.ndarray) -> Layout:
    """The :class:`Layout` of elements with scale indexes ``idx`` and channels ``ch``: one tree
    per (scale index, channel's steps) present, roots in :func:`split`'s key order (so that
    its grouping sort finds every level in order)."""
    idx = np.asarray(idx, np.int64)
    ch = np.asarray(ch, np.int64)
    scales, channels = len(ctx.c), ctx.steps.shape[1]
    first = ctx.first_layer(idx, ch)
    key = (scales - 1 - idx) * channels + ctx.tree_channel[ch]
    trees, roots = np.unique(key, return_inverse=True)
    roots = roots.reshape(-1).astype(np.int64)
    grow = np.zeros(len(trees), bool)
    grow[roots[first <= ctx.layers]] = True
    order, channel = np.divmod(trees, channels)
    forest = build_forest(ctx, scales - 1 - order, channel, grow)
    by_first = np.argsort(first.astype(np.int8), kind="stable")  # first <= L + 1 <= 127
    edges = np.searchsorted(first[by_first], np.arange(1, ctx.layers + 2)).tolist()
    gain = None
    if ctx.order == SLOPE_ORDER:
        gain = np.ones(len(idx)) if ctx.channel_gain is None else ctx.channel_gain[ch]
    return Layout(forest, roots, by_first, edges, gain)


class LayoutCache:
    """The :class:`Layout` of the last few streams a decoder met, keyed by their header bytes
    (which determine the scale indexes and channels, hence the layout): the decoder of a prefix
    derives its tables once per stream, as PLONQ's decoder reads tables built once."""

    def __init__(self, size: int = 2) -> None:
        self.size = size
        self._items: OrderedDict[bytes, Layout] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, header: bytes, ctx: CoderContext, idx: np.ndarray, ch: np.ndarray) -> Layout:
        with self._lock:
            if header in self._items:
                self._items.move_to_end(header)
                return self._items[header]
        layout = prepare(ctx, idx, ch)
        with self._lock:
            self._items[header] = layout
            while len(self._items) > self.size:
                self._items.popitem(last=False)
        return layout


def schedule(
    layout: Layout, node: np.ndarray, escaped: np.ndarray
) -> Iterator[tuple[int, int, np.ndarray, np.ndarray]]:
    """The sub-passes in stream order, each as ``(layer, sub, coded, parents)``: the elements
    that need a symbol (refinement order) and their nodes. Elements whose node has one child
    move down here (``node`` updated), at no cost. The caller codes each sub-pass and moves its
    elements to their children (or marks them ``escaped``) before drawing the next.

    Sub-pass 1 of layer ``l`` takes the elements first selected at ``l`` (roots); sub-pass
    ``k > 1`` the elements of sub-pass ``k - 1`` (now at level ``k - 1``) whose interval is not
    final; the last one also the elements of the previous layer's last sub-pass that are not
    final (at level ``l - 1`` since then). Selection is nested, so these are all: the
    elements :func:`refine` finds by scanning the whole latent."""
    if layout.forest.priority is not None:
        yield from _schedule_by_slope(layout, node, escaped)
        return
    kinds = layout.forest.kind
    first_child = layout.forest.first_child
    carry = layout.by_first[:0]
    for layer in range(1, len(layout.edges)):
        todo = layout.by_first[layout.edges[layer - 1] : layout.edges[layer]]
        yield layer, 1, todo, node[todo]
        for sub in range(2, layer + 1):
            if sub == layer and len(carry):
                todo = np.sort(np.concatenate([carry, todo]), kind="stable")  # two sorted runs
            parents = node[todo]
            kind = kinds[parents]
            if sub == 2:  # only roots escape
                kind[escaped[todo]] = FINAL
            if np.any(kind == FINAL):
                keep = kind != FINAL
                todo, parents, kind = todo[keep], parents[keep], kind[keep]
            single = kind == PASSES
            if single.any():
                node[todo[single]] = first_child[parents[single]]
                yield layer, sub, todo[~single], parents[~single]
            else:
                yield layer, sub, todo, parents
        carry = todo


def _skip_table(forest: Forest) -> np.ndarray:
    """(N,) int64: for each node below the roots, the first node down its one-child chain
    that splits or is final (itself when it is not a one-child node)."""
    skip = np.arange(len(forest.kind), dtype=np.int64)
    passes = (forest.kind == PASSES) & (forest.level > 0)
    for level in range(len(forest.level_offset) - 2, 0, -1):  # deepest first
        a, b = forest.level_offset[level], forest.level_offset[level + 1]
        here = a + np.flatnonzero(passes[a:b])
        skip[here] = skip[forest.first_child[here]]
    return skip


def slope_thresholds(keys: np.ndarray) -> list[float]:
    """The falling thresholds of the slope passes for element keys ``keys`` (float64 >= 0):
    ``2**k`` and ``0.75 * 2**k`` from the power of two above the largest key down to the
    smallest positive key (exact in binary floating point), then -1 (every element left)."""
    positive = keys[keys > 0]
    out: list[float] = []
    if len(positive):
        k = int(np.frexp(positive.max())[1])
        low = float(positive.min())
        while not out or out[-1] >= low:
            out += [float(np.ldexp(1.0, k)), float(np.ldexp(0.75, k))]
            k -= 1
    return [*out, -1.0]


def _schedule_by_slope(
    layout: Layout, node: np.ndarray, escaped: np.ndarray
) -> Iterator[tuple[int, int, np.ndarray, np.ndarray]]:
    """The slope order's sub-passes (module doc) as ``(pass, level, coded, parents)``: pass
    ``j`` sweeps the levels ``1..L`` and codes, at level ``k``, every element at level
    ``k - 1`` whose key (channel gain x its node's slope) reaches threshold ``j``, keys
    descending (ties: refinement order); an element whose new node's key still reaches the
    threshold goes on at the next level within the pass."""
    forest = layout.forest
    skip = _skip_table(forest)
    levels = len(forest.level_offset) - 2
    key = layout.gain * forest.priority[node]
    live = ~escaped & (forest.kind[node] != FINAL)  # roots are always coded
    level = forest.level[node]
    for j, threshold in enumerate(slope_thresholds(key), 1):
        active = np.flatnonzero(live & (key >= threshold))
        for k in range(1, levels + 1):
            todo = active[level[active] == k - 1]
            if not len(todo):
                continue
            todo = todo[np.argsort(-key[todo], kind="stable")]
            yield j, k, todo, node[todo]
            moved = todo[~escaped[todo]]  # the caller moved them to their children
            node[moved] = skip[node[moved]]
            level[todo] = k
            level[moved] = forest.level[node[moved]]
            key[todo] = layout.gain[todo] * forest.priority[node[todo]]
            live[todo] = ~escaped[todo] & (forest.kind[node[todo]] != FINAL)
            active = active[live[active] & (key[active] >= threshold)]


def _chunk_rows(table: np.ndarray, local: np.ndarray, width: int) -> np.ndarray:
    """``table``'s rows ``local`` (a level's frequency rows, level-local node ids), their first
    ``width`` columns, C-contiguous as constriction takes them (whole rows by ``take``, several
    times faster than fancy indexing, which copies only ``width`` columns)."""
    if width == table.shape[1]:
        return table.take(local, axis=0)
    return table[local, :width]


def _child_holding(forest: Forest, parents: np.ndarray, fine: np.ndarray) -> np.ndarray:
    """Global id of the child of each node ``parents`` that holds ``fine`` (inside the parent):
    a binary search over each node's children."""
    low = forest.first_child[parents]
    high = low + forest.count[parents] - 1
    while np.any(low < high):
        mid = (low + high + 1) // 2
        right = forest.lo[mid] <= fine
        low = np.where(right, mid, low)
        high = np.where(right, high, mid - 1)
    return low


def encode(
    ctx: CoderContext,
    fine: np.ndarray,
    idx: np.ndarray,
    ch: np.ndarray,
    chunk_units: int,
    layout: Layout | None = None,
) -> tuple[bytes, lc.CoderStats]:
    """Code fine indices ``fine`` (refinement order) layer by layer; returns bytes and stats.
    ``layout``: :func:`prepare` of ``idx`` and ``ch`` (made here when not given)."""
    layout = layout or prepare(ctx, idx, ch)
    forest = layout.forest
    fine = np.asarray(fine, np.int64)
    c = ctx.c[np.asarray(idx, np.int64)]
    node = layout.roots.copy()
    escaped = np.zeros(len(fine), bool)
    stats = lc.CoderStats()
    out = bytearray()
    layer = 0
    for layer, sub, coded, parents in schedule(layout, node, escaped):
        stats.levels_complete = layer - 1  # layers (slope order: passes) before this one
        t0 = time.perf_counter()
        if len(coded):
            n, cc = fine[coded], c[coded]
            esc = (n < -cc) | (n > cc) if sub == 1 else np.zeros(len(coded), bool)
            count = forest.count[parents]
            child = _child_holding(forest, parents, np.clip(n, -cc, cc))
            sym = np.where(esc, count, child - forest.first_child[parents])
            rows = forest.rows[sub - 1]
            local = parents - forest.level_offset[sub - 1]
            f = forest.freq[child]
            if sub == 1:
                f = np.where(esc, rows[local, count], f)
            stats.ideal_bits += float(-np.log2(f / forest.total[parents]).sum())
            weight = forest.weight[parents]
            for a, b in lc.chunk_bounds(weight, chunk_units):
                width = int(count[a:b].max()) + (sub == 1)
                esc_rows = None
                if esc[a:b].any():
                    ids = coded[a:b][esc[a:b]]
                    esc_rows = lc.escape_payload(fine[ids], c[ids])
                escape_sym = count[a:b] if sub == 1 else None
                probs = _chunk_rows(rows, local[a:b], width)
                payload = lc.encode_chunk(probs, sym[a:b], escape_sym, esc_rows)
                lc.write_chunk(out, payload, int(weight[a:b].sum()), stats)
            node[coded[~esc]] = child[~esc]
            escaped[coded[esc]] = True
            stats.escapes += int(esc.sum())
            stats.symbols += len(coded)
        stats.entropy_seconds += time.perf_counter() - t0
    stats.levels_complete = layer
    return bytes(out), stats


@dataclass
class DecodedLatent:
    """What the decoder knows after a prefix (refinement order): each element's node, or its
    value once escaped."""

    forest: Forest
    idx: np.ndarray
    ch: np.ndarray
    node: np.ndarray
    escaped: np.ndarray
    escape_value: np.ndarray
    complete: bool
    stats: lc.CoderStats
    end: int  # position after the last complete chunk

    @property
    def elements(self) -> Elements:
        """The interval state of every element (an escaped one at level 1, root interval)."""
        f = self.forest
        return Elements(
            idx=self.idx,
            ch=self.ch,
            lo=f.lo[self.node],
            hi=f.hi[self.node],
            level=np.where(self.escaped, 1, f.level[self.node]),
            escaped=self.escaped,
            escape_value=self.escape_value,
        )

    def reconstruct(self, mode: str = "mean") -> np.ndarray:
        """:func:`reconstruct` of :attr:`elements`, from the forest's per-node values."""
        rel = self.forest.recon(mode)[self.node]
        rel[self.escaped] = self.escape_value[self.escaped]
        return rel


def _decode_subpass(
    ctx: CoderContext,
    forest: Forest,
    state: DecodedLatent,
    coded: np.ndarray,
    parents: np.ndarray,
    sub: int,
    data: bytes,
    pos: int,
    chunk_units: int,
) -> tuple[int, bool]:
    """Decode the chunks of one sub-pass from ``data[pos:]`` up to the first incomplete one,
    then move the decoded elements to their children (or escapes) in one go; returns the
    position after the last complete chunk and whether every chunk was complete."""
    weight = forest.weight[parents]
    bounds = lc.chunk_bounds(weight, chunk_units)
    heads = np.fromiter((a for a, _ in bounds), np.int64, len(bounds))
    escape = sub == 1
    count = forest.count[parents]
    weights = np.add.reduceat(weight, heads).tolist()
    widths = (np.maximum.reduceat(count, heads) + int(escape)).tolist()
    rows = forest.rows[sub - 1]
    local = parents - forest.level_offset[sub - 1]
    stats = state.stats
    parts, extras, done, complete = [], [], 0, True
    for (a, b), weight_units, width in zip(bounds, weights, widths, strict=True):
        chunk = lc.read_chunk(data, pos, weight_units)
        if chunk is None:
            complete = False
            break
        payload, pos = chunk
        probs = _chunk_rows(rows, local[a:b], width)
        syms, extra = lc.decode_chunk(payload, probs, count[a:b] if escape else None)
        parts.append(syms)
        extras.append(extra)
        stats.chunks += 1
        stats.payload_bytes += len(payload)
        done = b
    if not done:
        return pos, complete
    ids, count, parents = coded[:done], count[:done], parents[:done]
    syms = np.minimum(np.concatenate(parts), count - (0 if escape else 1))
    if escape:
        esc = syms == count
        if esc.any():
            state.escaped[ids[esc]] = True
            state.escape_value[ids[esc]] = lc.escape_values(
                np.concatenate(extras), ctx.c[state.idx[ids[esc]]]
            )
            stats.escapes += int(esc.sum())
            keep = ~esc
            ids, syms, parents = ids[keep], syms[keep], parents[keep]
    state.node[ids] = forest.first_child[parents] + syms
    stats.symbols += done
    return pos, complete


def decode(
    ctx: CoderContext,
    data: bytes,
    pos: int,
    idx: np.ndarray,
    ch: np.ndarray,
    chunk_units: int,
    layout: Layout | None = None,
) -> DecodedLatent:
    """Decode every complete chunk of ``data[pos:]``; stop at the first incomplete one.
    ``layout``: :func:`prepare` of ``idx`` and ``ch`` (made here when not given)."""
    layout = layout or prepare(ctx, idx, ch)
    count = len(layout.roots)
    state = DecodedLatent(
        forest=layout.forest,
        idx=np.asarray(idx, np.int64),
        ch=np.asarray(ch, np.int64),
        node=layout.roots.copy(),
        escaped=np.zeros(count, bool),
        escape_value=np.zeros(count, np.int64),
        complete=True,
        stats=lc.CoderStats(),
        end=pos,
    )
    layer = 0
    for layer, sub, coded, parents in schedule(layout, state.node, state.escaped):
        state.stats.levels_complete = layer - 1
        t0 = time.perf_counter()
        complete = True
        if len(coded):
            pos, complete = _decode_subpass(
                ctx, layout.forest, state, coded, parents, sub, data, pos, chunk_units
            )
        state.stats.entropy_seconds += time.perf_counter() - t0
        state.end = pos
        if not complete:
            state.complete = False
            return state
    state.stats.levels_complete = layer
    return state


def reconstruct(ctx: CoderContext, el: Elements, mode: str = "mean") -> np.ndarray:
    """``y - mu`` estimate (refinement order) of an interval state: the prior mean (0) at the
    root, the exact value once escaped or down to one integer, else the interval's
    reconstruction (``mode`` as in
    :func:`plugins.learned.coding.latent.interval_reconstruction`)."""
    rel = np.zeros(len(el.lo), np.float64)
    below_root = el.level > 0
    single = below_root & (el.lo == el.hi)
    rel[single] = el.lo[single]
    wide = np.flatnonzero(below_root & (el.lo != el.hi) & ~el.escaped)
    # one reconstruction per distinct (scale index, interval): many elements share one
    bits = int(2 * ctx.c.max() + 2).bit_length()
    half, mask = 1 << (bits - 1), (1 << bits) - 1
    key = (el.idx[wide] << (2 * bits)) | ((el.lo[wide] + half) << bits) | (el.hi[wide] + half)
    key, inverse = np.unique(key, return_inverse=True)
    lo, hi = ((key >> bits) & mask) - half, (key & mask) - half
    rel[wide] = lc.interval_reconstruction(mode, lo, hi, ctx.sigma[key >> (2 * bits)])[inverse]
    rel[el.escaped] = el.escape_value[el.escaped]
    return rel
