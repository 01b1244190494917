"""SPIHT's sorting and refinement passes (numba), exactly in the paper's order.

Coefficient array
    The quantised coefficients of all components are one flat ``int32`` array: component ``c``,
    row ``i``, column ``j`` of the ``hp x wp`` *padded dyadic* layout sit at
    ``c * hp * wp + i * wp + j``. The padded layout is the Mallat layout of an image of
    ``hp x wp`` pixels, ``hp`` and ``wp`` the image size rounded up to a multiple of
    ``2 ** (levels + 1)`` (so the LL band has even sides); each band of the non-expansive
    transform sits at the top left of its slot and the rest of the slot is padding. Padding holds
    no coefficient: encoder and decoder both know where it is (``valid``) and no bit is ever spent
    on it (see "Deviations" in :mod:`plugins.spiht.codec`). On Kodak (512 x 768, 5 levels) there
    is no padding at all.

Spatial orientation trees (Said and Pearlman, section III)
    Outside LL, node ``(i, j)`` has the four offspring ``(2i, 2j), (2i, 2j+1), (2i+1, 2j),
    (2i+1, 2j+1)`` unless it is in a finest-level band. In LL, nodes are grouped 2 x 2: the top
    left node of each group has no descendants; the others have their offspring at the same 2 x 2
    position in the HL, LH or HH band of the coarsest level. ``D(i,j)`` is the set of all
    descendants, ``L(i,j) = D(i,j) - O(i,j)``. The trees of different components never mix.

Passes (with ``n`` from the top bit-plane down to 0, threshold ``2 ** n``)
    1. Sorting, LIP: for each entry of the LIP in order, output ``S_n(i,j)``; if 1, output the
       sign and move it to the LSP.
    2. Sorting, LIS: for each entry in order, entries appended during the pass included:
       type A: output ``S_n(D(i,j))``; if 1, for each offspring output ``S_n(k,l)`` and, if 1, its
       sign (to the LSP) or else append it to the LIP; then move ``(i,j)`` to the end of the LIS
       as type B if ``L(i,j)`` is not empty, else remove it. Type B: output ``S_n(L(i,j))``; if 1,
       append each offspring to the end of the LIS as type A and remove ``(i,j)``.
    3. Refinement: for each LSP entry that was in the LSP before this sorting pass, output bit
       ``n`` of its magnitude.
    Initial lists: LIP = all LL coefficients, LIS = the LL nodes with descendants (type A), in
    component order (all of Y, then Cb, then Cr), raster order within a component.

    The LIS is kept in one array with in-place compaction: kept entries move down to a write
    index, appended entries go to the end and are processed in the same pass, so the list order
    is exactly the paper's linked-list order.

Bit sinks
    ``mode`` 0 writes each decision as one raw bit (``spiht``); ``mode`` 1 codes it with the
    adaptive binary range coder of :mod:`plugins.spiht.entropy` in a context (``spiht-ac``). The
    sequence of binary decisions is identical in both modes. Encoder and decoder stop at the
    first decision that does not fit (encoder: the budget; decoder: the bytes, or ``max_sym``
    decisions), wherever it falls in a pass.

Speed (the order of the decisions is never changed for it)
    * The encoder knows the largest magnitude in every ``D`` and ``L`` set from one bottom-up
      sweep (:func:`_max_trees`), so each set test is one comparison.
    * List entries carry what their tests need (LIP: magnitude; LIS: the set maximum; LSP:
      magnitude, plane, band class), so the passes read the lists sequentially instead of
      jumping around the coefficient arrays.
    * Context state (significant-neighbour count, parent and own significance, band class) is a
      ``uint16`` per coefficient updated when a coefficient becomes significant, so a context is
      one load.
    * The pass loops are compiled twice, once per variant with the variant as a compile-time
      constant (dead branches removed), and without numba's reference counting (``_nrt=False``:
      all arrays are allocated by the calling function). The specialisation alone took the
      raw decoder from 46 to 12 ms for a 2 bpp Kodak RGB stream. Everything is cached on disk
      (``cache=True``).

Contexts (``spiht-ac``; our design, in the spirit of the paper's section VI but on binary
decisions instead of the paper's 2 x 2 grouped symbols). ``d`` is the band class (LL, finest
level, second finest, coarser), ``nb`` the number of significant coefficients among the 8
neighbours in the same band (known to both sides), ``o`` the orientation (LL, HL, LH, HH):
    * LIP pixel significance: ``d`` x ``min(nb, 4)`` x parent significant.
    * Offspring significance while splitting ``D(i,j)``: ``d`` x ``min(nb, 4)`` x number of
      earlier siblings found significant (0, 1, 2+) x parent significant; plus one context for
      the last offspring when no sibling was significant and ``L(i,j)`` is empty (then it must be
      significant; the binary variant spends the bit, as in the paper).
    * ``S_n(D(i,j))``: ``d`` x root significant x ``min(nb(root), 2)``;
      ``S_n(L(i,j))``: ``d`` x number of significant offspring (0, 1, 2+).
    * Sign: ``o`` x sign of (left + right neighbour signs) x sign of (up + down neighbour signs).
    * Refinement: ``d`` x first refinement of this coefficient (the paper leaves refinement
      bits uncoded; coding them costs nothing and saves a little).
"""

from __future__ import annotations

import numba as nb
import numpy as np

from plugins.spiht.entropy import (
    D_NSYM,
    D_POS,
    E_NSYM,
    E_POS,
    STATE_SIZE,
    dec_bit,
    dec_init,
    enc_bit,
    enc_flush,
    enc_init,
    new_models,
)

MODE_RAW = 0
MODE_AC = 1

# Per-coefficient context state (uint16, AC only), kept up to date on both sides.
NB_MASK = 0xF  # significant neighbours in the same band, 0..8
PSIG = 1 << 4  # parent significant
D_SHIFT = 5  # band class d (2 bits): 0 LL, 1 finest level, 2 second finest, 3 coarser
O_SHIFT = 7  # orientation (2 bits): 0 LL, 1 HL, 2 LH, 3 HH
SIG = 1 << 9  # the coefficient itself is significant

# Context layout.
NB_CLASSES = 5
CTX_LIP = 0  # d(4) x nb(5) x parent(2)
CTX_OFF = CTX_LIP + 4 * NB_CLASSES * 2  # d(4) x nb(5) x siblings(3) x parent(2)
CTX_FORCED = CTX_OFF + 4 * NB_CLASSES * 3 * 2
CTX_SETA = CTX_FORCED + 1  # d(4) x root(2) x nb(3)
CTX_SETB = CTX_SETA + 4 * 2 * 3  # d(4) x offspring(3)
CTX_SIGN = CTX_SETB + 4 * 3  # o(4) x h(3) x v(3)
CTX_REF = CTX_SIGN + 4 * 9  # d(4) x first(2)
NUM_CONTEXTS = CTX_REF + 4 * 2


@nb.njit(cache=True)
def build_tree(hp, wp, levels, valid):
    """Offspring base, and whether ``D`` / ``L`` hold a valid coefficient, per local position.

    ``cbase[p]`` is the first offspring of local position ``p`` (the others are ``+1``, ``+wp``,
    ``+wp+1``) or -1. Offspring always have larger indices than their parent, so one backward
    sweep computes ``has_desc`` and ``has_grand``.
    """
    n = hp * wp
    cbase = np.full(n, -1, np.int32)
    has_desc = np.zeros(n, np.uint8)
    has_grand = np.zeros(n, np.uint8)
    if levels == 0:
        return cbase, has_desc, has_grand
    hl = hp >> levels
    wl = wp >> levels
    for i in range(hp):
        for j in range(wp):
            if i < hl and j < wl:
                if (i & 1) == 0 and (j & 1) == 0:
                    continue
                bi = (i & ~1) + hl * (i & 1)
                bj = (j & ~1) + wl * (j & 1)
            elif 2 * i < hp and 2 * j < wp:
                bi = 2 * i
                bj = 2 * j
            else:
                continue
            cbase[i * wp + j] = bi * wp + bj
    for p in range(n - 1, -1, -1):
        b = cbase[p]
        if b < 0:
            continue
        d = 0
        g = 0
        for k in range(4):
            c = b + (k >> 1) * wp + (k & 1)
            if has_desc[c]:
                d = 1
                g = 1
            elif valid[c]:
                d = 1
        has_desc[p] = d
        has_grand[p] = g
    return cbase, has_desc, has_grand


@nb.njit(cache=True)
def build_bands(hp, wp, levels):
    """Per local position: band id (0 LL, then ``1 + 3 (level - 1) + o - 1``) and context
    class ``d * 4 + o``."""
    n = hp * wp
    bandid = np.zeros(n, np.uint8)
    bcls = np.zeros(n, np.uint8)
    hl = hp >> levels
    wl = wp >> levels
    for i in range(hp):
        for j in range(wp):
            p = i * wp + j
            if i < hl and j < wl:
                continue  # LL: id 0, class 0
            for level in range(levels, 0, -1):
                if i < (hp >> (level - 1)) and j < (wp >> (level - 1)):
                    o = (2 if i >= (hp >> level) else 0) + (1 if j >= (wp >> level) else 0)
                    d = level if level < 3 else 3
                    bandid[p] = 1 + 3 * (level - 1) + (o - 1)
                    bcls[p] = d * 4 + o
                    break
    return bandid, bcls


@nb.njit(cache=True)
def _offset(idx, n):
    """Start of the component holding flat index ``idx`` (at most 3 components)."""
    if idx < n:
        return 0
    if idx < 2 * n:
        return n
    return 2 * n


@nb.njit(cache=True)
def _init_state(ncomp, n, bcls):
    cstate = np.empty(ncomp * n, np.uint16)
    for c in range(ncomp):
        for p in range(n):
            b = np.uint16(bcls[p])
            cstate[c * n + p] = ((b >> 2) << D_SHIFT) | ((b & 3) << O_SHIFT)
    return cstate


@nb.njit(cache=True)
def _mark_significant(cstate, off, p, wp, hp, bandid, cbase):
    """Coefficient ``off + p`` became significant: update its own, its neighbours' and its
    offspring's context state."""
    cstate[off + p] |= SIG
    i = p // wp
    j = p - i * wp
    bid = bandid[p]
    for di in range(-1, 2):
        ii = i + di
        if ii < 0 or ii >= hp:
            continue
        for dj in range(-1, 2):
            jj = j + dj
            if jj < 0 or jj >= wp or (di == 0 and dj == 0):
                continue
            q = ii * wp + jj
            if bandid[q] == bid:
                cstate[off + q] += 1
    b = cbase[p]
    if b >= 0:
        cstate[off + b] |= PSIG
        cstate[off + b + 1] |= PSIG
        cstate[off + b + wp] |= PSIG
        cstate[off + b + wp + 1] |= PSIG


@nb.njit(cache=True)
def _sign_ctx(sign, off, p, wp, hp, bandid, cs):
    i = p // wp
    j = p - i * wp
    bid = bandid[p]
    h = 0
    v = 0
    if j > 0 and bandid[p - 1] == bid:
        h += sign[off + p - 1]
    if j + 1 < wp and bandid[p + 1] == bid:
        h += sign[off + p + 1]
    if i > 0 and bandid[p - wp] == bid:
        v += sign[off + p - wp]
    if i + 1 < hp and bandid[p + wp] == bid:
        v += sign[off + p + wp]
    h = 1 if h > 0 else (-1 if h < 0 else 0)
    v = 1 if v > 0 else (-1 if v < 0 else 0)
    return CTX_SIGN + ((cs >> O_SHIFT) & 3) * 9 + (h + 1) * 3 + (v + 1)


@nb.njit(cache=True)
def _lip_ctx(cs):
    c = cs & NB_MASK
    if c > NB_CLASSES - 1:
        c = NB_CLASSES - 1
    return CTX_LIP + (((cs >> D_SHIFT) & 3) * NB_CLASSES + c) * 2 + ((cs >> 4) & 1)


@nb.njit(cache=True)
def _off_ctx(cs, nsig, root_sig):
    c = cs & NB_MASK
    if c > NB_CLASSES - 1:
        c = NB_CLASSES - 1
    s = nsig if nsig < 2 else 2
    return CTX_OFF + ((((cs >> D_SHIFT) & 3) * NB_CLASSES + c) * 3 + s) * 2 + root_sig


@nb.njit(cache=True)
def _seta_ctx(cs):
    c = cs & NB_MASK
    if c > 2:
        c = 2
    return CTX_SETA + (((cs >> D_SHIFT) & 3) * 2 + ((cs >> 9) & 1)) * 3 + c


@nb.njit(cache=True)
def _setb_ctx(cstate, off, p, wp, cbase):
    b = off + cbase[p]
    c = (
        ((cstate[b] >> 9) & 1)
        + ((cstate[b + 1] >> 9) & 1)
        + ((cstate[b + wp] >> 9) & 1)
        + ((cstate[b + wp + 1] >> 9) & 1)
    )
    if c > 2:
        c = 2
    return CTX_SETB + ((cstate[off + p] >> D_SHIFT) & 3) * 3 + c


@nb.njit(cache=True)
def _put(mode, st, out, p0, cnt, ctx, bit, limit, trace):
    """Emit one decision; True when the budget is reached (stop coding)."""
    if mode == MODE_RAW:
        pos = st[E_POS]
        if bit:
            out[pos >> 3] |= np.uint8(0x80 >> (pos & 7))
        st[E_POS] = pos + 1
        st[E_NSYM] += 1
        return pos + 1 >= limit
    enc_bit(st, out, p0, cnt, ctx, bit, trace)
    return st[E_POS] >= limit


@nb.njit(cache=True)
def _get(mode, st, data, p0, cnt, ctx, max_sym):
    """Read one decision: 0, 1, or -1 when the prefix (or ``max_sym``) ends here."""
    if st[D_NSYM] >= max_sym:
        return -1
    if mode == MODE_RAW:
        pos = st[D_POS]
        if pos >= st[5]:
            return -1
        st[D_POS] = pos + 1
        st[D_NSYM] += 1
        return (data[pos >> 3] >> (7 - (pos & 7))) & 1
    return dec_bit(st, data, p0, cnt, ctx)


@nb.njit(cache=True)
def _max_trees(mag, ncomp, hp, wp, cbase):
    """Largest magnitude in ``D(p)`` and in ``L(p)`` for every node (encoder side)."""
    n = hp * wp
    maxd = np.zeros(ncomp * n, np.int32)
    maxl = np.zeros(ncomp * n, np.int32)
    for c in range(ncomp):
        off = c * n
        for p in range(n - 1, -1, -1):
            b = cbase[p]
            if b < 0:
                continue
            md = 0
            ml = 0
            for k in range(4):
                q = off + b + (k >> 1) * wp + (k & 1)
                d = maxd[q]
                if d > ml:
                    ml = d
                if mag[q] > d:
                    d = mag[q]
                if d > md:
                    md = d
            maxd[off + p] = md
            maxl[off + p] = ml
    return maxd, maxl


@nb.njit(cache=True)
def _init_lists(ncomp, hp, wp, levels, valid, has_desc, lip, lis, ltype):
    n = hp * wp
    hl = hp >> levels
    wl = wp >> levels
    nlip = 0
    nlis = 0
    for c in range(ncomp):
        for i in range(hl):
            for j in range(wl):
                p = i * wp + j
                if valid[p]:
                    lip[nlip] = c * n + p
                    nlip += 1
                if has_desc[p]:
                    lis[nlis] = c * n + p
                    ltype[nlis] = 0
                    nlis += 1
    return nlip, nlis


@nb.njit(cache=True)
def _lis_capacity(ncomp, has_desc):
    nodes = 0
    for p in range(has_desc.shape[0]):
        nodes += has_desc[p]
    return 3 * ncomp * nodes + 1


def _make_encoder(AC):  # noqa: N803 - a compile-time constant
    @nb.njit(cache=True, _nrt=False)
    def core(
        coef, mag, maxd, maxl, ncomp, hp, wp, nmax, limit, out, valid, tree, bands, trace,
        sign, cstate, lip, lip_mag, nlip, lis, ltype, lis_max, nlis, lsp_mag, lsp_sigpl, lsp_d,
        st, p0, cnt,
    ):  # fmt: skip
        """The passes of the encoder; returns True when every bit-plane was coded."""
        cbase, has_desc, has_grand = tree
        bandid, bcls = bands
        n = hp * wp
        ac = AC
        mode = MODE_AC if AC else MODE_RAW
        nlsp = 0
        for plane in range(nmax, -1, -1):
            nlsp0 = nlsp
            # 1. LIP
            off = 0
            w = 0
            for r in range(nlip):
                idx = lip[r]
                m = lip_mag[r]
                s = (m >> plane) & 1
                cs = cstate[idx] if ac else np.uint16(0)
                ctx = _lip_ctx(cs) if ac else 0
                if _put(mode, st, out, p0, cnt, ctx, s, limit, trace):
                    return False
                if s:
                    neg = 1 if coef[idx] < 0 else 0
                    d = 0
                    if ac:
                        off = _offset(idx, n)
                        ctx = _sign_ctx(sign, off, idx - off, wp, hp, bandid, cs)
                        d = (cs >> D_SHIFT) & 3
                    if _put(mode, st, out, p0, cnt, ctx, neg, limit, trace):
                        return False
                    if ac:
                        sign[idx] = -1 if neg else 1
                        _mark_significant(cstate, off, idx - off, wp, hp, bandid, cbase)
                    lsp_mag[nlsp] = m
                    lsp_sigpl[nlsp] = plane
                    lsp_d[nlsp] = d
                    nlsp += 1
                else:
                    lip[w] = idx
                    lip_mag[w] = m
                    w += 1
            nlip = w
            # 2. LIS
            r = 0
            w = 0
            e = nlis
            while r < e:
                idx = lis[r]
                t = ltype[r]
                mx = lis_max[r]
                r += 1
                s = 1 if (mx >> plane) != 0 else 0
                off = _offset(idx, n)
                p = idx - off
                if t == 0:
                    cs = cstate[idx] if ac else np.uint16(0)
                    ctx = _seta_ctx(cs) if ac else 0
                    if _put(mode, st, out, p0, cnt, ctx, s, limit, trace):
                        return False
                    if s:
                        b = cbase[p]
                        nvalid = valid[b] + valid[b + 1] + valid[b + wp] + valid[b + wp + 1]
                        root_sig = (cs >> 9) & 1
                        seen = 0
                        nsig = 0
                        for k in range(4):
                            q = b + (k >> 1) * wp + (k & 1)
                            if not valid[q]:
                                continue
                            seen += 1
                            ch = off + q
                            m = mag[ch]
                            sc = (m >> plane) & 1
                            ctx = 0
                            cq = np.uint16(0)
                            if ac:
                                cq = cstate[ch]
                                if seen == nvalid and nsig == 0 and not has_grand[p]:
                                    ctx = CTX_FORCED
                                else:
                                    ctx = _off_ctx(cq, nsig, root_sig)
                            if _put(mode, st, out, p0, cnt, ctx, sc, limit, trace):
                                return False
                            if sc:
                                nsig += 1
                                neg = 1 if coef[ch] < 0 else 0
                                ctx = _sign_ctx(sign, off, q, wp, hp, bandid, cq) if ac else 0
                                if _put(mode, st, out, p0, cnt, ctx, neg, limit, trace):
                                    return False
                                d = 0
                                if ac:
                                    sign[ch] = -1 if neg else 1
                                    _mark_significant(cstate, off, q, wp, hp, bandid, cbase)
                                    d = (cq >> D_SHIFT) & 3
                                lsp_mag[nlsp] = m
                                lsp_sigpl[nlsp] = plane
                                lsp_d[nlsp] = d
                                nlsp += 1
                            else:
                                lip[nlip] = ch
                                lip_mag[nlip] = m
                                nlip += 1
                        if has_grand[p]:
                            lis[e] = idx
                            ltype[e] = 1
                            lis_max[e] = maxl[idx]
                            e += 1
                    else:
                        lis[w] = idx
                        ltype[w] = 0
                        lis_max[w] = mx
                        w += 1
                else:
                    ctx = _setb_ctx(cstate, off, p, wp, cbase) if ac else 0
                    if _put(mode, st, out, p0, cnt, ctx, s, limit, trace):
                        return False
                    if s:
                        b = cbase[p]
                        for k in range(4):
                            q = b + (k >> 1) * wp + (k & 1)
                            if has_desc[q]:
                                lis[e] = off + q
                                ltype[e] = 0
                                lis_max[e] = maxd[off + q]
                                e += 1
                    else:
                        lis[w] = idx
                        ltype[w] = 1
                        lis_max[w] = mx
                        w += 1
            nlis = w
            # 3. refinement
            for r in range(nlsp0):
                bit = (lsp_mag[r] >> plane) & 1
                ctx = 0
                if ac:
                    ctx = CTX_REF + lsp_d[r] * 2 + (1 if lsp_sigpl[r] == plane + 1 else 0)
                if _put(mode, st, out, p0, cnt, ctx, bit, limit, trace):
                    return False
        return True

    return core


@nb.njit(cache=True)
def decode_passes(
    data, start, end, ncomp, hp, wp, levels, nmax, mode, max_sym, valid, tree, bands,
    inv_index, scale, frac, npix,
):  # fmt: skip
    """Mirror of :func:`encode_passes` on ``data[start:end]``, then dequantisation.

    Stops at the first decision the bytes (or ``max_sym``) do not give. Returns
    ``(coeffs, nsym)``: the ``(ncomp, npix)`` coefficient estimates in the transform's actual
    layout (``inv_index`` maps padded positions there; ``scale[c, band]`` divides) and the
    number of decisions decoded. A significant coefficient is reconstructed in the middle
    (``frac = 0.5``) of its known magnitude interval; the others are 0.
    """
    cbase, has_desc, has_grand = tree
    bandid, bcls = bands
    n = hp * wp
    total = ncomp * n
    lip = np.empty(total, np.int32)
    lsp_idx = np.empty(total, np.int32)
    lsp_mag = np.empty(total, np.int32)
    lsp_pl = np.empty(total, np.int8)
    lsp_sigpl = np.empty(total, np.int8)
    lsp_d = np.empty(total, np.uint8)
    lsp_neg = np.empty(total, np.uint8)
    cap = _lis_capacity(ncomp, has_desc)
    lis = np.empty(cap, np.int32)
    ltype = np.empty(cap, np.uint8)
    nlip, nlis = _init_lists(ncomp, hp, wp, levels, valid, has_desc, lip, lis, ltype)
    ac = mode == MODE_AC
    sign = np.zeros(total if ac else 1, np.int8)
    cstate = _init_state(ncomp, n, bands[1]) if ac else np.zeros(1, np.uint16)
    st = np.zeros(STATE_SIZE, np.int64)
    p0, cnt = new_models(NUM_CONTEXTS)
    if mode == MODE_AC:
        nsym, nlsp = _decode_core_ac(
            data, start, end, ncomp, hp, wp, nmax, max_sym, valid, tree, bands,
            lip, nlip, lis, ltype, nlis, lsp_idx, lsp_mag, lsp_pl, lsp_sigpl, lsp_d, lsp_neg,
            sign, cstate, st, p0, cnt,
        )  # fmt: skip
    else:
        nsym, nlsp = _decode_core_raw(
            data, start, end, ncomp, hp, wp, nmax, max_sym, valid, tree, bands,
            lip, nlip, lis, ltype, nlis, lsp_idx, lsp_mag, lsp_pl, lsp_sigpl, lsp_d, lsp_neg,
            sign, cstate, st, p0, cnt,
        )  # fmt: skip
    coeffs = np.zeros((ncomp, npix), np.float64)
    for r in range(nlsp):
        idx = lsp_idx[r]
        off = _offset(idx, n)
        p = idx - off
        c = off // n
        m = np.float64(lsp_mag[r])
        if lsp_pl[r] > 0:
            m += frac * np.float64(1 << lsp_pl[r])
        if lsp_neg[r]:
            m = -m
        coeffs[c, inv_index[p]] = m / scale[c, bandid[p]]
    return coeffs, nsym


def _make_decoder(AC):  # noqa: N803 - a compile-time constant
    @nb.njit(cache=True, _nrt=False)
    def core(
    data, start, end, ncomp, hp, wp, nmax, max_sym, valid, tree, bands,
        lip, nlip, lis, ltype, nlis, lsp_idx, lsp_mag, lsp_pl, lsp_sigpl, lsp_d, lsp_neg,
        sign, cstate, st, p0, cnt,
    ):  # fmt: skip
        """The passes of the decoder; returns ``(decisions decoded, LSP length)``."""
        cbase, has_desc, has_grand = tree
        bandid, bcls = bands
        n = hp * wp
        ac = AC
        mode = MODE_AC if AC else MODE_RAW
        nlsp = 0
        if ac:
            dec_init(st, data, start, end)
        else:
            st[D_POS] = 8 * start
            st[5] = 8 * end
        for plane in range(nmax, -1, -1):
            nlsp0 = nlsp
            off = 0
            w = 0
            for r in range(nlip):
                idx = lip[r]
                cs = cstate[idx] if ac else np.uint16(0)
                ctx = _lip_ctx(cs) if ac else 0
                s = _get(mode, st, data, p0, cnt, ctx, max_sym)
                if s < 0:
                    return st[D_NSYM], nlsp
                if s:
                    d = 0
                    if ac:
                        off = _offset(idx, n)
                        ctx = _sign_ctx(sign, off, idx - off, wp, hp, bandid, cs)
                        d = (cs >> D_SHIFT) & 3
                    neg = _get(mode, st, data, p0, cnt, ctx, max_sym)
                    if neg < 0:
                        return st[D_NSYM], nlsp
                    if ac:
                        sign[idx] = -1 if neg else 1
                        _mark_significant(cstate, off, idx - off, wp, hp, bandid, cbase)
                    lsp_idx[nlsp] = idx
                    lsp_mag[nlsp] = 1 << plane
                    lsp_pl[nlsp] = plane
                    lsp_sigpl[nlsp] = plane
                    lsp_d[nlsp] = d
                    lsp_neg[nlsp] = neg
                    nlsp += 1
                else:
                    lip[w] = idx
                    w += 1
            nlip = w
            r = 0
            w = 0
            e = nlis
            while r < e:
                idx = lis[r]
                t = ltype[r]
                r += 1
                off = _offset(idx, n)
                p = idx - off
                if t == 0:
                    cs = cstate[idx] if ac else np.uint16(0)
                    ctx = _seta_ctx(cs) if ac else 0
                    s = _get(mode, st, data, p0, cnt, ctx, max_sym)
                    if s < 0:
                        return st[D_NSYM], nlsp
                    if s:
                        b = cbase[p]
                        nvalid = valid[b] + valid[b + 1] + valid[b + wp] + valid[b + wp + 1]
                        root_sig = (cs >> 9) & 1
                        seen = 0
                        nsig = 0
                        for k in range(4):
                            q = b + (k >> 1) * wp + (k & 1)
                            if not valid[q]:
                                continue
                            seen += 1
                            ch = off + q
                            ctx = 0
                            cq = np.uint16(0)
                            if ac:
                                cq = cstate[ch]
                                if seen == nvalid and nsig == 0 and not has_grand[p]:
                                    ctx = CTX_FORCED
                                else:
                                    ctx = _off_ctx(cq, nsig, root_sig)
                            sc = _get(mode, st, data, p0, cnt, ctx, max_sym)
                            if sc < 0:
                                return st[D_NSYM], nlsp
                            if sc:
                                nsig += 1
                                ctx = _sign_ctx(sign, off, q, wp, hp, bandid, cq) if ac else 0
                                neg = _get(mode, st, data, p0, cnt, ctx, max_sym)
                                if neg < 0:
                                    return st[D_NSYM], nlsp
                                d = 0
                                if ac:
                                    sign[ch] = -1 if neg else 1
                                    _mark_significant(cstate, off, q, wp, hp, bandid, cbase)
                                    d = (cq >> D_SHIFT) & 3
                                lsp_idx[nlsp] = ch
                                lsp_mag[nlsp] = 1 << plane
                                lsp_pl[nlsp] = plane
                                lsp_sigpl[nlsp] = plane
                                lsp_d[nlsp] = d
                                lsp_neg[nlsp] = neg
                                nlsp += 1
                            else:
                                lip[nlip] = ch
                                nlip += 1
                        if has_grand[p]:
                            lis[e] = idx
                            ltype[e] = 1
                            e += 1
                    else:
                        lis[w] = idx
                        ltype[w] = 0
                        w += 1
                else:
                    ctx = _setb_ctx(cstate, off, p, wp, cbase) if ac else 0
                    s = _get(mode, st, data, p0, cnt, ctx, max_sym)
                    if s < 0:
                        return st[D_NSYM], nlsp
                    if s:
                        b = cbase[p]
                        for k in range(4):
                            q = b + (k >> 1) * wp + (k & 1)
                            if has_desc[q]:
                                lis[e] = off + q
                                ltype[e] = 0
                                e += 1
                    else:
                        lis[w] = idx
                        ltype[w] = 1
                        w += 1
            nlis = w
            for r in range(nlsp0):
                ctx = 0
                if ac:
                    ctx = CTX_REF + lsp_d[r] * 2 + (1 if lsp_sigpl[r] == plane + 1 else 0)
                bit = _get(mode, st, data, p0, cnt, ctx, max_sym)
                if bit < 0:
                    return st[D_NSYM], nlsp
                lsp_mag[r] |= bit << plane
                lsp_pl[r] = plane
        return st[D_NSYM], nlsp

    return core


_encode_core_raw = _make_encoder(False)
_encode_core_ac = _make_encoder(True)
_decode_core_raw = _make_decoder(False)
_decode_core_ac = _make_decoder(True)


@nb.njit(cache=True)
def _encode(coef, ncomp, hp, wp, levels, nmax, mode, limit, out, valid, tree, bands, trace):
    cbase, has_desc, has_grand = tree
    n = hp * wp
    total = ncomp * n
    ac = mode == MODE_AC
    mag = np.abs(coef).astype(np.int32)
    maxd, maxl = _max_trees(mag, ncomp, hp, wp, cbase)
    sign = np.zeros(total if ac else 1, np.int8)
    cstate = _init_state(ncomp, n, bands[1]) if ac else np.zeros(1, np.uint16)
    lip = np.empty(total, np.int32)
    lip_mag = np.empty(total, np.int32)
    lsp_mag = np.empty(total, np.int32)
    lsp_sigpl = np.empty(total, np.int8)
    lsp_d = np.empty(total, np.uint8)
    cap = _lis_capacity(ncomp, has_desc)
    lis = np.empty(cap, np.int32)
    ltype = np.empty(cap, np.uint8)
    lis_max = np.empty(cap, np.int32)
    nlip, nlis = _init_lists(ncomp, hp, wp, levels, valid, has_desc, lip, lis, ltype)
    for r in range(nlip):
        lip_mag[r] = mag[lip[r]]
    for r in range(nlis):
        lis_max[r] = maxd[lis[r]]
    st = np.zeros(STATE_SIZE, np.int64)
    enc_init(st)
    p0, cnt = new_models(NUM_CONTEXTS)
    if limit <= 0:
        return 0, 0, False
    if ac:
        complete = _encode_core_ac(
            coef, mag, maxd, maxl, ncomp, hp, wp, nmax, limit, out, valid, tree, bands, trace,
            sign, cstate, lip, lip_mag, nlip, lis, ltype, lis_max, nlis, lsp_mag, lsp_sigpl,
            lsp_d, st, p0, cnt,
        )  # fmt: skip
        if complete:
            enc_flush(st, out, trace)
    else:
        complete = _encode_core_raw(
            coef, mag, maxd, maxl, ncomp, hp, wp, nmax, limit, out, valid, tree, bands, trace,
            sign, cstate, lip, lip_mag, nlip, lis, ltype, lis_max, nlis, lsp_mag, lsp_sigpl,
            lsp_d, st, p0, cnt,
        )  # fmt: skip
    return st[E_POS], st[E_NSYM], complete


def encode_passes(coef, ncomp, hp, wp, levels, nmax, mode, limit, out, valid, tree, bands, trace):
    """Run the passes from bit-plane ``nmax`` down, writing into ``out``.

    ``mode``: :data:`MODE_RAW` or :data:`MODE_AC`. ``limit``: in bits (raw) or bytes (AC) at
    which to stop. Returns ``(used, nsym, complete)``: bits written (raw) or bytes final in
    ``out`` (AC, after a flush if complete), the number of decisions coded, and whether every
    bit-plane down to 0 was coded. ``trace[s]`` (if long enough) receives the number of
    decisions coded when the range coder shifted out byte ``s``.
    """
    return _encode(coef, ncomp, hp, wp, levels, nmax, mode, limit, out, valid, tree, bands, trace)


@nb.njit(cache=True)
def quantize(comps, index, wscale, cweights, n):
    """Weighted, rounded coefficients (int32, padded layout, all components) from the
    ``(ncomp, npix)`` transform output; ``index`` maps actual to padded positions."""
    ncomp, npix = comps.shape
    coef = np.zeros(ncomp * n, np.int32)
    for c in range(ncomp):
        for a in range(npix):
            x = comps[c, a] * wscale[a] * cweights[c]
            v = np.floor(np.abs(x) + 0.5)
            coef[c * n + index[a]] = np.int32(-v if x < 0 else v)
    return coef
