"""Coding integers with CompressAI-style integer CDF tables through constriction's range coder.

Used for the hyper-latent ``z`` (the entropy bottleneck's per-channel tables) and for the Naive
Scaling reference (the Gaussian conditional's per-scale tables). The probabilities are exactly
CompressAI's 16-bit frequencies (handed to constriction as integer-valued float64, which it
requantises deterministically); CompressAI's own rANS coder is not needed.

Element ``e`` with table row ``r_e`` and integer ``s_e`` is coded as ``v = s_e - offset[r_e]``
when ``0 <= v < pmf_length[r_e]``, else as the row's overflow symbol followed (after all
ordinary symbols) by an escape: three uniform 16-bit symbols, the sign and the two halves of
the distance past the table. Elements are coded grouped by row (rows in increasing order,
elements of a row in their order), one constriction model per row, in a single stream: no
prefix of it is decoded on its own, so it needs no chunking (the learned codecs keep ``z`` in
the stream header).
"""

from __future__ import annotations

import numpy as np

from bench.codec import CorruptStream

ESCAPE_HALF = 1 << 16


def _stream():
    import constriction

    return constriction.stream


def _row_model(cdf: np.ndarray, length: int):
    freq = np.diff(cdf[:length]).astype(np.float64)  # pmf_length + 1 entries (overflow last)
    return _stream().model.Categorical(freq, perfect=False)


def _groups(rows: np.ndarray) -> list[tuple[int, np.ndarray]]:
    order = np.argsort(rows, kind="stable")
    sorted_rows = rows[order]
    cuts = np.flatnonzero(np.diff(sorted_rows)) + 1
    return [(int(rows[part[0]]), part) for part in np.split(order, cuts) if len(part)]


def encode(
    symbols: np.ndarray,
    rows: np.ndarray,
    cdf: np.ndarray,
    cdf_length: np.ndarray,
    offset: np.ndarray,
) -> bytes:
    """Code ``symbols`` (any integers) with table rows ``rows``; returns the bytes."""
    cs = _stream()
    symbols = np.asarray(symbols, np.int64).reshape(-1)
    rows = np.asarray(rows, np.int64).reshape(-1)
    enc = cs.queue.RangeEncoder()
    escapes = []
    for row, part in _groups(rows):
        pmf_len = int(cdf_length[row]) - 2
        v = symbols[part] - int(offset[row])
        out = (v < 0) | (v >= pmf_len)
        if out.any():
            mag = np.where(v < 0, -v - 1, v - pmf_len)
            mag = np.minimum(mag, (1 << 32) - 1)
            escapes.append(
                np.stack([(v < 0).astype(np.int64), mag >> 16, mag & 0xFFFF], axis=1)[out]
            )
            v = np.where(out, pmf_len, v)
        enc.encode(v.astype(np.int32), _row_model(cdf[row], int(cdf_length[row])))
    if escapes:
        flat = np.concatenate(escapes).reshape(-1).astype(np.int32)
        enc.encode(flat, cs.model.Uniform(ESCAPE_HALF))
    return enc.get_compressed().astype(">u4").tobytes().rstrip(b"\0")


def decode(
    data: bytes,
    rows: np.ndarray,
    cdf: np.ndarray,
    cdf_length: np.ndarray,
    offset: np.ndarray,
) -> np.ndarray:
    """Inverse of :func:`encode` (the decoder knows ``rows``); returns int64 symbols.
    :class:`~bench.CorruptStream` when constriction finds ``data`` invalid for the tables."""
    try:
        return _decode(data, rows, cdf, cdf_length, offset)
    except (AssertionError, ValueError, RuntimeError) as exc:
        raise CorruptStream(f"corrupt entropy-coded data: {exc}") from None


def _decode(data, rows, cdf, cdf_length, offset) -> np.ndarray:
    cs = _stream()
    rows = np.asarray(rows, np.int64).reshape(-1)
    pad = (-len(data)) % 4
    words = np.frombuffer(bytes(data) + b"\0" * pad, dtype=">u4").astype(np.uint32)
    dec = cs.queue.RangeDecoder(words)
    values = np.zeros(len(rows), dtype=np.int64)
    pending = []  # (element ids, pmf_len, offset) of escaped elements, in coding order
    for row, part in _groups(rows):
        pmf_len = int(cdf_length[row]) - 2
        v = np.asarray(dec.decode(_row_model(cdf[row], int(cdf_length[row])), len(part)), np.int64)
        values[part] = v + int(offset[row])
        out = v == pmf_len
        if out.any():
            pending.append((part[out], pmf_len, int(offset[row])))
    count = sum(len(p[0]) for p in pending)
    if count:
        flat = np.asarray(dec.decode(cs.model.Uniform(ESCAPE_HALF), 3 * count), np.int64)
        esc = flat.reshape(count, 3)
        start = 0
        for ids, pmf_len, off in pending:
            part = esc[start : start + len(ids)]
            start += len(ids)
            mag = (part[:, 1] << 16) + part[:, 2]
            v = np.where(part[:, 0] == 1, -mag - 1, pmf_len + mag)
            values[ids] = v + off
    return values
