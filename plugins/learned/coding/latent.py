"""Progressive nested-interval coder for the main latent ``y`` of a mean-scale hyperprior.

What is coded
    For every element ``e`` of ``y`` the hyper path gives a prior mean ``mu_e`` and a scale
    index ``i_e`` (:mod:`plugins.learned.model_io`). The base model's own (fine) symbol is
    ``n_e = round(y_e - mu_e)``, an integer; CompressAI codes it with the integer CDF table of
    row ``i_e`` of ``GaussianConditional._quantized_cdf`` (16-bit frequencies ``f_i(n)`` for
    ``n`` in ``[-c_i, c_i]``, plus an overflow bin for values outside). This coder sends the
    same ``n_e``, but coarse to fine: a *level scheme* (PLONQ's nested dead-zone grids, DZQ's
    embedded dead-zone quantizers) defines ``L`` nested partitions of ``[-c_i, c_i]`` into runs
    of consecutive integers ("bins", i.e. intervals ``[lo - 1/2, hi + 1/2]`` of ``y - mu``);
    level ``L`` is the partition into single integers. At level ``l`` each element is told
    which sub-bin (child) of its current bin holds ``n_e``, with probability

        P(child | bin) = F(child) / F(bin),   F(bin) = sum of f_i(n) over n in bin,

    i.e. the Gaussian prior renormalised to the current interval, in exact integers taken from
    the model's own table. The product of the conditional probabilities over the levels is
    ``f_i(n_e) / 2**16``, the probability CompressAI's coder uses, so the finest level costs
    what the base model costs, plus the chunk overhead below. At level 1 the root bin's
    children also include an *escape* child (the overflow bin's frequency); an escaped element
    (``|n_e| > c_i``) then gets its value in the same chunk (three uniform 16-bit symbols: the
    sign and the two halves of ``|n_e| - c_i - 1``) and is final. Bins with a single child cost
    nothing and are skipped; a bin that is a single integer is final.

Order
    Elements are refined level by level; within a level in decreasing order of the scale
    index (largest prior standard deviation first), ties broken by position in the ``(C, H, W)``
    raster. The order follows from the hyper-latent alone (no side information).

Chunks (what makes every prefix decodable)
    The symbols of one level are cut into chunks, each an independent ``constriction`` range
    coder stream (``queue.RangeEncoder``, 32-bit words, written big-endian) with its trailing
    zero bytes dropped, then shortened further while a trial decode still gives the same
    symbols (the decoder pads a chunk with zero bytes: constriction's decoder reads missing
    words as zeros). Chunk boundaries are not sent: both sides compute them from the *expected*
    cost of each symbol, an integer ``w`` = the entropy of ``P(. | bin)`` in 1/16 bit computed
    from the integer frequencies with the exact integer table ``floor(16 * log2(x))``
    (:func:`log_table`); a new chunk starts where the running sum of ``w`` passes a multiple
    of ``chunk_units``. Each chunk is preceded by a varint of ``zigzag(len - expected)``, where
    ``expected = sum(w) // 128`` bytes. The decoder decodes every complete chunk and stops at
    the first incomplete one (or incomplete length); an element not yet refined keeps its
    current bin and is reconstructed from it (:func:`reconstruct`). A cut therefore never
    produces a wrong symbol: it only loses the bytes of the incomplete chunk. The chunk
    machinery is :mod:`plugins.learned.coding.chunks`; the reconstruction inside an interval
    :mod:`plugins.learned.coding.intervals`.

Determinism
    Everything that decides how bytes are parsed (bins, children, chunk boundaries, the
    probability rows handed to constriction) is computed from integers only: the scale
    indexes, the int32 CDF table (shipped in the weights file for bundled weights) and the
    level scheme's integer labels. constriction gets the integer frequencies as float64 (exact)
    and quantises them with its own deterministic fixed-point code. Reconstruction values
    (conditional means) are floats but only affect pixels, never parsing.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np

from plugins.learned.coding.chunks import (  # UNITS_PER_BIT: the unit of the chunk sizes below
    UNITS_PER_BIT,  # noqa: F401
    CoderStats,
    chunk_bounds,
    decode_chunk,
    encode_chunk,
    escape_payload,
    escape_values,
    log_table,
    read_chunk,
    write_chunk,
)
from plugins.learned.coding.intervals import interval_reconstruction


class LevelScheme(Protocol):
    """A family of nested partitions of the fine integers, one per level (1 = coarsest)."""

    num_levels: int

    def labels(self, level: int, fine: np.ndarray, scale_index: np.ndarray) -> np.ndarray:
        """Integer bin labels of the fine indices ``fine`` (for elements of ``scale_index``) at
        ``level``; a bin is a maximal run of equal labels among consecutive fine indices.
        Labels must be computed deterministically (integers, or IEEE-754 basic operations)."""


@dataclass
class CoderTables:
    """Every bin of every level for every scale index, with its children and costs.

    Bins have global ids: level 0 (the roots, one per scale index ``i``, id ``i``) first, then
    level 1, ..., level ``L`` (``level_offset``).
    """

    num_levels: int
    c: np.ndarray  # (S,) support half-width
    fine_offset: np.ndarray  # (S,) flat position of fine index -c_i
    bin_of_fine: list[np.ndarray]  # [l-1]: global level-l bin of each flat fine position
    level_offset: np.ndarray  # (L+2,)
    lo: np.ndarray
    hi: np.ndarray
    scale: np.ndarray
    freq: np.ndarray
    first_child: np.ndarray
    n_children: np.ndarray  # includes the escape child of the roots
    weight: np.ndarray  # expected cost in 1/16 bit of coding the child of this bin
    child_freq: list[np.ndarray]  # [l-1]: (bins of level l-1, K_l) float64 frequencies
    recon: np.ndarray  # float64 reconstruction of y - mu for an element whose bin this is
    total: np.ndarray  # sum of the children's frequencies (roots: 2**precision)
    overflow: np.ndarray  # (S,) frequency of the escape child of each root
    num_bins_per_level: list[int] = field(default_factory=list)

    @property
    def num_scales(self) -> int:
        return len(self.c)


def build_tables(
    cdf: np.ndarray,
    cdf_length: np.ndarray,
    offset: np.ndarray,
    scheme: LevelScheme,
    sigma: np.ndarray,
    reconstruction: str | Callable[[np.ndarray, np.ndarray, np.ndarray], np.ndarray] = "mean",
    precision: int = 16,
) -> CoderTables:
    """Build the nested bins of ``scheme`` over CompressAI's integer CDF tables.

    ``cdf``/``cdf_length``/``offset`` are ``GaussianConditional``'s ``_quantized_cdf``,
    ``_cdf_length`` and ``_offset``; ``sigma`` the scale table (for reconstruction only).
    Levels are made nested by construction: level ``l``'s boundaries are the union of the
    scheme's boundaries at levels ``1..l``. The last level must be the fine integers.
    """
    cdf = np.asarray(cdf, np.int64)
    cdf_length = np.asarray(cdf_length, np.int64)
    c = -np.asarray(offset, np.int64)
    num_scales = len(c)
    pmf_len = cdf_length - 2
    if np.any(pmf_len != 2 * c + 1):
        raise ValueError("CDF table does not match the offsets (pmf length != 2c+1)")
    sizes = 2 * c + 1
    fine_offset = np.concatenate([[0], np.cumsum(sizes)[:-1]]).astype(np.int64)
    total = int(sizes.sum())
    fi = np.repeat(np.arange(num_scales, dtype=np.int64), sizes)
    fn = np.arange(total, dtype=np.int64) - fine_offset[fi] - c[fi]
    col = fn + c[fi]
    f = cdf[fi, col + 1] - cdf[fi, col]
    rows = np.arange(num_scales)
    overflow = cdf[rows, pmf_len + 1] - cdf[rows, pmf_len]
    if np.any(f <= 0) or np.any(overflow <= 0):
        raise ValueError("CDF table has empty bins; expected CompressAI's quantised CDFs")
    max_freq = 1 << precision
    logt = log_table(max_freq)

    lo_l = [-c]
    hi_l = [c.copy()]
    scale_l = [rows.copy()]
    freq_l = [cdf[rows, pmf_len] - cdf[rows, 0]]
    level_offset = [0, num_scales]
    first_child_l: list[np.ndarray] = []
    n_children_l: list[np.ndarray] = []
    weight_l: list[np.ndarray] = []
    total_l: list[np.ndarray] = []
    child_freq: list[np.ndarray] = []
    bin_of_fine: list[np.ndarray] = []
    counts_per_level = [num_scales]

    flags = np.zeros(total, dtype=bool)
    flags[fine_offset] = True
    prev_gid = fi.copy()  # global ids of the roots are the scale indexes
    for level in range(1, scheme.num_levels + 1):
        lab = np.asarray(scheme.labels(level, fn, fi), dtype=np.int64)
        change = np.ones(total, dtype=bool)
        change[1:] = lab[1:] != lab[:-1]
        flags = flags | change
        starts = np.flatnonzero(flags)
        nb = len(starts)
        local = np.cumsum(flags) - 1
        gid = level_offset[-1] + local
        bin_of_fine.append(gid)
        ends = np.append(starts[1:], total)
        lo_l.append(fn[starts])
        hi_l.append(fn[ends - 1])
        scale_l.append(fi[starts])
        bfreq = np.add.reduceat(f, starts)
        freq_l.append(bfreq)
        # children of the level-(level-1) bins
        parent_off = level_offset[-2]
        num_parents = level_offset[-1] - parent_off
        parent_loc = prev_gid[starts] - parent_off
        counts = np.bincount(parent_loc, minlength=num_parents).astype(np.int64)
        first_loc = np.cumsum(counts) - counts
        pos = np.arange(nb) - first_loc[parent_loc]
        extra = 1 if level == 1 else 0
        width = int(counts.max()) + extra
        table = np.zeros((num_parents, width), dtype=np.int64)
        table[parent_loc, pos] = bfreq
        n_ch = counts.copy()
        if level == 1:
            table[rows, counts] = overflow
            n_ch = counts + 1
        tot = table.sum(axis=1)
        if np.any(tot > max_freq):
            raise ValueError("frequencies exceed the coder precision")
        weight = (table * (logt[tot][:, None] - logt[table])).sum(axis=1) // np.maximum(tot, 1)
        weight = np.where(n_ch > 1, weight, 0)
        first_child_l.append(level_offset[-1] + first_loc)
        n_children_l.append(n_ch)
        weight_l.append(weight)
        total_l.append(tot)
        child_freq.append(table.astype(np.float64))
        level_offset.append(level_offset[-1] + nb)
        counts_per_level.append(nb)
        prev_gid = gid
    if counts_per_level[-1] != total:
        raise ValueError("the last level of a scheme must be the fine integer grid")
    nb_last = counts_per_level[-1]
    first_child_l.append(np.zeros(nb_last, np.int64))
    n_children_l.append(np.zeros(nb_last, np.int64))
    weight_l.append(np.zeros(nb_last, np.int64))
    total_l.append(np.zeros(nb_last, np.int64))

    lo = np.concatenate(lo_l)
    hi = np.concatenate(hi_l)
    scale = np.concatenate(scale_l)
    sig = np.asarray(sigma, np.float64)[scale]
    if callable(reconstruction):
        recon = np.asarray(reconstruction(lo, hi, scale), np.float64)
    else:
        recon = interval_reconstruction(reconstruction, lo, hi, sig)
    recon = np.where(lo == hi, lo.astype(np.float64), recon)
    return CoderTables(
        num_levels=scheme.num_levels,
        c=c,
        fine_offset=fine_offset,
        bin_of_fine=bin_of_fine,
        level_offset=np.asarray(level_offset, np.int64),
        lo=lo,
        hi=hi,
        scale=scale,
        freq=np.concatenate(freq_l),
        first_child=np.concatenate(first_child_l),
        n_children=np.concatenate(n_children_l),
        weight=np.concatenate(weight_l),
        child_freq=child_freq,
        recon=recon,
        total=np.concatenate(total_l),
        overflow=overflow,
        num_bins_per_level=counts_per_level,
    )


def refinement_order(indexes: np.ndarray) -> np.ndarray:
    """Permutation of the flattened elements: scale index descending, then raster position."""
    flat = np.asarray(indexes).reshape(-1).astype(np.int64)
    return np.argsort(-flat, kind="stable")


def bin_bits(tables: CoderTables, level: int, fine: np.ndarray, idx: np.ndarray) -> np.ndarray:
    """Ideal cost in bits of telling elements (fine index ``fine``, scale index ``idx``) down
    to their level-``level`` bin, ``-log2(F(bin) / 2**16)``; an escape costs the overflow bin
    plus its 48-bit payload."""
    fine = np.asarray(fine, np.int64)
    idx = np.asarray(idx, np.int64)
    c = tables.c[idx]
    inside = (fine >= -c) & (fine <= c)
    if level == 0:
        f = tables.freq[idx]
    else:
        flat = tables.fine_offset[idx] + np.clip(fine, -c, c) + c
        f = tables.freq[tables.bin_of_fine[level - 1][flat]]
    bits = -np.log2(f / tables.total[idx])
    escape_bits = -np.log2(tables.overflow[idx] / tables.total[idx]) + 48.0
    return np.where(inside, bits, escape_bits)


@dataclass
class FineGrid:
    """The fine integers of every scale index, flattened, with their integer frequencies."""

    c: np.ndarray  # (S,)
    fine_offset: np.ndarray  # (S,)
    scale: np.ndarray  # (F,) scale index of each flat position
    fine: np.ndarray  # (F,) fine index of each flat position
    freq: np.ndarray  # (F,) frequency of each fine integer
    overflow: np.ndarray  # (S,)
    total: np.ndarray  # (S,) 2**precision


def fine_grid(cdf: np.ndarray, cdf_length: np.ndarray, offset: np.ndarray) -> FineGrid:
    cdf = np.asarray(cdf, np.int64)
    c = -np.asarray(offset, np.int64)
    pmf_len = np.asarray(cdf_length, np.int64) - 2
    sizes = 2 * c + 1
    fine_offset = np.concatenate([[0], np.cumsum(sizes)[:-1]]).astype(np.int64)
    fi = np.repeat(np.arange(len(c), dtype=np.int64), sizes)
    fn = np.arange(int(sizes.sum()), dtype=np.int64) - fine_offset[fi] - c[fi]
    col = fn + c[fi]
    rows = np.arange(len(c))
    return FineGrid(
        c=c,
        fine_offset=fine_offset,
        scale=fi,
        fine=fn,
        freq=cdf[fi, col + 1] - cdf[fi, col],
        overflow=cdf[rows, pmf_len + 1] - cdf[rows, pmf_len],
        total=cdf[rows, pmf_len + 1],
    )


def partition_bits(
    grid: FineGrid, scheme: LevelScheme, level: int, fine: np.ndarray, idx: np.ndarray
) -> float:
    """Ideal bits of sending every element down to its bin of ``scheme``'s level ``level``
    (the common refinement of levels ``1..level``, as :func:`build_tables` builds it):
    ``sum -log2(F(bin) / 2**16)``, escapes at the overflow cost plus 48 bits."""
    total = len(grid.fine)
    flags = np.zeros(total, dtype=bool)
    flags[grid.fine_offset] = True
    for lev in range(1, level + 1):
        lab = np.asarray(scheme.labels(lev, grid.fine, grid.scale), dtype=np.int64)
        flags[1:] |= lab[1:] != lab[:-1]
    starts = np.flatnonzero(flags)
    bin_freq = np.add.reduceat(grid.freq, starts)
    bin_of_flat = np.cumsum(flags) - 1
    fine = np.asarray(fine, np.int64)
    idx = np.asarray(idx, np.int64)
    c = grid.c[idx]
    inside = (fine >= -c) & (fine <= c)
    flat = grid.fine_offset[idx] + np.clip(fine, -c, c) + c
    f = np.where(inside, bin_freq[bin_of_flat[flat]], grid.overflow[idx])
    bits = -np.log2(f / grid.total[idx]).sum() + 48.0 * np.count_nonzero(~inside)
    return float(bits)


# --------------------------------------------------------------------------------------------
# coding


def _enter_level(tables: CoderTables, cur: np.ndarray, esc: np.ndarray, level: int) -> np.ndarray:
    """Elements that need a symbol at ``level`` (all of them at level 1); single-child bins move
    down to their child in place (``cur``), at no cost. Same on both sides."""
    if level == 1:
        return np.arange(len(cur))
    n_ch = tables.n_children[cur]
    single = (n_ch == 1) & ~esc
    cur[single] = tables.first_child[cur[single]]
    return np.flatnonzero((n_ch > 1) & ~esc)


def encode_latent(
    tables: CoderTables,
    fine: np.ndarray,
    idx: np.ndarray,
    chunk_units: int,
    *,
    trim: bool = True,
) -> tuple[bytes, CoderStats]:
    """Code fine indices ``fine`` (elements already in refinement order, scale indexes
    ``idx``) level by level in chunks (see module doc); returns the bytes and statistics."""
    fine = np.asarray(fine, np.int64)
    idx = np.asarray(idx, np.int64)
    stats = CoderStats()
    out = bytearray()
    cur = idx.copy()
    c = tables.c[idx]
    esc = (fine < -c) | (fine > c)
    flat = tables.fine_offset[idx] + np.clip(fine, -c, c) + c
    for level in range(1, tables.num_levels + 1):
        t0 = time.perf_counter()
        active = _enter_level(tables, cur, esc, level)
        parents = cur[active]
        child = tables.bin_of_fine[level - 1][flat[active]]
        sym = child - tables.first_child[parents]
        esc_a = esc[active]
        if level == 1 and esc_a.any():
            sym[esc_a] = tables.n_children[parents[esc_a]] - 1
            stats.escapes += int(esc_a.sum())
        child_f = tables.freq[child]
        if level == 1 and esc_a.any():
            child_f = np.where(
                esc_a, tables.overflow[np.minimum(parents, len(tables.c) - 1)], child_f
            )
        stats.ideal_bits += float(-np.log2(child_f / tables.total[parents]).sum())
        weights = tables.weight[parents]
        bounds = chunk_bounds(weights, chunk_units)
        table = tables.child_freq[level - 1]
        off = tables.level_offset[level - 1]
        for a, b in bounds:
            par = parents[a:b]
            width = int(tables.n_children[par].max())
            probs = table[par - off, :width]
            escape_sym = None
            esc_rows = None
            if level == 1:
                escape_sym = tables.n_children[par] - 1
                chunk_esc = esc_a[a:b]
                if chunk_esc.any():
                    ids = active[a:b][chunk_esc]
                    esc_rows = escape_payload(fine[ids], c[ids])
            payload = encode_chunk(probs, sym[a:b], escape_sym, esc_rows, trim=trim)
            write_chunk(out, payload, int(weights[a:b].sum()), stats)
        stats.chunks_per_level.append(len(bounds))
        stats.symbols += len(active)
        keep = ~esc_a
        cur[active[keep]] = child[keep]
        stats.entropy_seconds += time.perf_counter() - t0
        stats.levels_complete = level
    return bytes(out), stats


@dataclass
class LatentState:
    """What the decoder knows about every element (refinement order) after a prefix."""

    bins: np.ndarray  # current global bin id
    escaped: np.ndarray  # bool
    escape_value: np.ndarray  # int64, valid where escaped
    complete: bool
    stats: CoderStats
    end: int  # position after the last complete chunk


def decode_latent(
    tables: CoderTables, data: bytes, pos: int, idx: np.ndarray, chunk_units: int
) -> LatentState:
    """Decode every complete chunk of ``data[pos:]``; stop at the first incomplete one."""
    idx = np.asarray(idx, np.int64)
    count = len(idx)
    stats = CoderStats()
    cur = idx.copy()
    esc = np.zeros(count, dtype=bool)
    esc_val = np.zeros(count, dtype=np.int64)
    c = tables.c[idx]
    complete = True
    for level in range(1, tables.num_levels + 1):
        t0 = time.perf_counter()
        active = _enter_level(tables, cur, esc, level)
        parents = cur[active]
        weights = tables.weight[parents]
        bounds = chunk_bounds(weights, chunk_units)
        table = tables.child_freq[level - 1]
        off = tables.level_offset[level - 1]
        done = 0
        for a, b in bounds:
            chunk = read_chunk(data, pos, int(weights[a:b].sum()))
            if chunk is None:
                complete = False
                break
            payload, pos = chunk
            length = len(payload)
            par = parents[a:b]
            n_ch = tables.n_children[par]
            width = int(n_ch.max())
            escape_sym = n_ch - 1 if level == 1 else None
            syms, extra = decode_chunk(payload, table[par - off, :width], escape_sym)
            syms = np.minimum(syms, n_ch - 1)
            ids = active[a:b]
            if level == 1:
                is_esc = syms == escape_sym
                if is_esc.any():
                    e_ids = ids[is_esc]
                    esc[e_ids] = True
                    esc_val[e_ids] = escape_values(extra, c[e_ids])
                    stats.escapes += len(e_ids)
                keep = ~is_esc
                cur[ids[keep]] = tables.first_child[par[keep]] + syms[keep]
            else:
                cur[ids] = tables.first_child[par] + syms
            stats.chunks += 1
            stats.payload_bytes += length
            done = b
        stats.symbols += done
        stats.chunks_per_level.append(len(bounds))
        stats.entropy_seconds += time.perf_counter() - t0
        if not complete:
            break
        stats.levels_complete = level
    return LatentState(
        bins=cur, escaped=esc, escape_value=esc_val, complete=complete, stats=stats, end=pos
    )


def reconstruct(tables: CoderTables, state: LatentState) -> np.ndarray:
    """``y - mu`` estimate of every element (refinement order): the reconstruction of its bin,
    its exact value once escaped or down to a single integer."""
    rel = tables.recon[state.bins]
    if state.escaped.any():
        rel = rel.copy()
        rel[state.escaped] = state.escape_value[state.escaped].astype(np.float64)
    return rel
