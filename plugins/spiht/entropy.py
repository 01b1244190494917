"""Bit sinks and sources for the SPIHT passes: raw bits, and an adaptive binary range coder whose
decoder stops honestly where the bytes end.

Raw bits (``spiht``)
    Bits are packed most significant first. A prefix of ``k`` bytes holds exactly the first
    ``8 * (k - header)`` bits the encoder emitted; the decoder reads them and stops.

Adaptive binary range coder (``spiht-ac``)
    Our own coder, bit-exact in integer arithmetic and written for numba (``constriction`` was
    not used: its decoder cannot tell where a cut stream stops being trustworthy, and coding in
    independently terminated chunks would cost a flush per chunk and make the stream embedded
    only at chunk boundaries). The coder is the classic carry-propagating range coder with a
    32-bit ``range`` and a 33-bit ``low`` (the scheme of LZMA's binary coder), with 16-bit
    probabilities: ``bound = (range >> 16) * p0`` where ``p0`` is the probability of a 0.

    Each context is adaptive: after its ``n``-th symbol,
    ``p0 += ((target - p0) * (65536 // (min(n, RATE_LIMIT) + 2))) >> 16`` (``target`` is 65536
    for a 0, 0 for a 1): a count-based estimate at first that becomes an exponential window of
    about ``RATE_LIMIT`` symbols; ``p0`` is clamped to ``[P_MIN, 65536 - P_MIN]``.

Honest truncation
    The decoder keeps two code values: ``code_lo`` assumes every byte past the end of the prefix
    is ``0x00`` and ``code_hi`` assumes ``0xFF``; the true code value (whatever bytes followed in
    the full stream) lies between them, and can never reach ``range`` (``code_hi`` is clamped to
    ``range - 1``). A binary decision is a threshold on the code value, so when both values fall on
    the same side of ``bound`` the symbol is the one the encoder coded, whatever the missing bytes;
    when they do not, the prefix does not determine the symbol and the decoder stops there, for
    good. The symbols decoded from a prefix are therefore exactly the first ``m`` symbols of the
    full stream, with ``m`` growing with the prefix; only the symbols that depend on the last
    three or four bytes of the prefix are lost (measured in ``tests/test_spiht.py`` and
    ``benchmarks/spiht_speed.py``). The encoder therefore needs no flush at a cut: it codes until
    the budget's bytes are final and the stream is simply cut there. A stream that ends because
    every bit-plane is coded is flushed (five bytes), so its last symbol is determined.

    The first byte of the range coder output is always the initial (zero) cache byte of this
    scheme; it is kept (one byte of overhead).
"""

from __future__ import annotations

import numba as nb
import numpy as np

PROB_BITS = 16
PROB_ONE = 1 << PROB_BITS
P_MIN = 48
RATE_LIMIT = 60
TOP = 1 << 24
MASK32 = (1 << 32) - 1

# Encoder state slots (int64 array).
E_LOW, E_RANGE, E_CACHE, E_CACHE_SIZE, E_POS, E_NSYM, E_SHIFTS = 0, 1, 2, 3, 4, 5, 6
# Decoder state slots (int64 array).
D_LO, D_HI, D_RANGE, D_POS, D_NSYM, D_END = 0, 1, 2, 3, 4, 5
STATE_SIZE = 8


@nb.njit(cache=True)
def new_models(count):
    """Probabilities (all 1/2) and symbol counts of ``count`` contexts."""
    return np.full(count, PROB_ONE // 2, np.int64), np.zeros(count, np.int64)


#: ``RECIP[c] = 65536 // (min(c, RATE_LIMIT) + 2)``: adaptation rate after ``c`` symbols.
RECIP = np.array([PROB_ONE // (min(c, RATE_LIMIT) + 2) for c in range(RATE_LIMIT + 1)], np.int64)


@nb.njit(cache=True)
def _update(p0, cnt, ctx, bit):
    c = cnt[ctx]
    target = 0 if bit else PROB_ONE
    p = p0[ctx] + (((target - p0[ctx]) * RECIP[c]) >> PROB_BITS)
    if p < P_MIN:
        p = P_MIN
    elif p > PROB_ONE - P_MIN:
        p = PROB_ONE - P_MIN
    p0[ctx] = p
    if c < RATE_LIMIT:
        cnt[ctx] = c + 1


# ---------------------------------------------------------------------------------------------
# range encoder


@nb.njit(cache=True)
def enc_init(st):
    st[E_LOW] = 0
    st[E_RANGE] = MASK32
    st[E_CACHE] = 0
    st[E_CACHE_SIZE] = 1
    st[E_POS] = 0
    st[E_NSYM] = 0
    st[E_SHIFTS] = 0


@nb.njit(cache=True)
def _shift_low(st, out, trace):
    low = st[E_LOW]
    if low < 0xFF000000 or low > MASK32:
        carry = low >> 32
        temp = st[E_CACHE]
        while True:
            pos = st[E_POS]
            if pos < out.shape[0]:
                out[pos] = (temp + carry) & 0xFF
            st[E_POS] = pos + 1
            temp = 0xFF
            st[E_CACHE_SIZE] -= 1
            if st[E_CACHE_SIZE] == 0:
                break
        st[E_CACHE] = (low >> 24) & 0xFF
    st[E_CACHE_SIZE] += 1
    st[E_LOW] = (low & 0x00FFFFFF) << 8
    s = st[E_SHIFTS]
    if s < trace.shape[0]:
        trace[s] = st[E_NSYM]
    st[E_SHIFTS] = s + 1


@nb.njit(cache=True)
def enc_bit(st, out, p0, cnt, ctx, bit, trace):
    """Code ``bit`` in context ``ctx`` and adapt the context.

    The byte shifting of :func:`_shift_low` is written out here by hand: a call of a function
    taking arrays inside a hot loop can cost numba reference counting on every symbol (measured
    ten times slower in a loop compiled with reference counting).
    """
    rng = st[E_RANGE]
    bound = (rng >> PROB_BITS) * p0[ctx]
    low = st[E_LOW]
    if bit:
        low += bound
        rng -= bound
    else:
        rng = bound
    while rng < TOP:
        rng <<= 8
        if low < 0xFF000000 or low > MASK32:
            carry = low >> 32
            temp = st[E_CACHE]
            while True:
                pos = st[E_POS]
                if pos < out.shape[0]:
                    out[pos] = (temp + carry) & 0xFF
                st[E_POS] = pos + 1
                temp = 0xFF
                st[E_CACHE_SIZE] -= 1
                if st[E_CACHE_SIZE] == 0:
                    break
            st[E_CACHE] = (low >> 24) & 0xFF
        st[E_CACHE_SIZE] += 1
        low = (low & 0x00FFFFFF) << 8
        s = st[E_SHIFTS]
        if s < trace.shape[0]:
            trace[s] = st[E_NSYM]
        st[E_SHIFTS] = s + 1
    st[E_LOW] = low
    st[E_RANGE] = rng
    st[E_NSYM] += 1
    _update(p0, cnt, ctx, bit)


@nb.njit(cache=True)
def enc_flush(st, out, trace):
    for _ in range(5):
        _shift_low(st, out, trace)


# ---------------------------------------------------------------------------------------------
# honest range decoder


@nb.njit(cache=True)
def _next_byte(st, data):
    """The next byte as (value if 0x00 fill, value if 0xFF fill)."""
    pos = st[D_POS]
    st[D_POS] = pos + 1
    if pos < st[D_END]:
        b = np.int64(data[pos])
        return b, b
    return np.int64(0), np.int64(0xFF)


@nb.njit(cache=True)
def dec_init(st, data, start, end):
    st[D_POS] = start
    st[D_END] = end
    st[D_RANGE] = MASK32
    st[D_NSYM] = 0
    lo = np.int64(0)
    hi = np.int64(0)
    for _ in range(5):
        a, b = _next_byte(st, data)
        lo = ((lo << 8) | a) & MASK32
        hi = ((hi << 8) | b) & MASK32
    if hi > MASK32 - 1:
        hi = MASK32 - 1
    st[D_LO] = lo
    st[D_HI] = hi


@nb.njit(cache=True)
def dec_bit(st, data, p0, cnt, ctx):
    """Decode one bit in context ``ctx``: 0 or 1, or -1 when the prefix does not determine it."""
    rng = st[D_RANGE]
    bound = (rng >> PROB_BITS) * p0[ctx]
    lo = st[D_LO]
    hi = st[D_HI]
    bit = 1 if lo >= bound else 0
    if (1 if hi >= bound else 0) != bit:
        return -1
    if bit:
        lo -= bound
        hi -= bound
        rng -= bound
    else:
        rng = bound
        if hi > rng - 1:
            hi = rng - 1
    while rng < TOP:
        rng <<= 8
        a, b = _next_byte(st, data)
        lo = (lo << 8) | a
        hi = (hi << 8) | b
        if hi > rng - 1:
            hi = rng - 1
    st[D_LO] = lo
    st[D_HI] = hi
    st[D_RANGE] = rng
    st[D_NSYM] += 1
    _update(p0, cnt, ctx, bit)
    return bit
