"""Chunks: the units of a progressive learned stream that every prefix decodes whole or not at
all.

A chunk is an independent ``constriction`` range-coder stream (``queue.RangeEncoder``, 32-bit
words, big-endian) with its trailing zero bytes dropped and then shortened while a trial decode
still gives the same symbols (the decoder pads with zeros). Its boundaries are not sent: both
sides cut the symbol sequence where the running sum of the symbols' *expected* costs, integers
in 1/16 bit (:data:`UNITS_PER_BIT`, from the exact table :func:`log_table`), passes a multiple
of the chunk size (:func:`chunk_bounds`). Each chunk is preceded by a varint of
``zigzag(len - expected)`` bytes (:func:`write_chunk`, :func:`read_chunk`). Values outside a
table escape with three uniform 16-bit symbols (:func:`escape_payload`).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field

import numpy as np

from bench.codec import CorruptStream
from plugins.learned.coding.bits import put_varint, read_varint, unzigzag, zigzag

#: Expected costs are integers in 1/16 bit.
UNITS_PER_BIT = 16
UNITS_PER_BYTE = 8 * UNITS_PER_BIT
#: Escape payload: three uniform 16-bit symbols, the sign, then |n| - c - 1 as two halves
#: (clamped below 2**32): 48 bits.
ESCAPE_HALF = 1 << 16


@functools.lru_cache(maxsize=4)
def log_table(max_value: int = 1 << 16, units: int = UNITS_PER_BIT) -> np.ndarray:
    """``floor(units * log2(x))`` for ``x`` in ``0..max_value`` (0 for ``x = 0``), exact.

    The float estimate is used only where it is at least 1e-6 away from an integer (any libm's
    ``log2`` is far more accurate than that); the few others (powers of two among them) are
    settled with Python integers, ``(x ** units).bit_length() - 1``. The table is thus the
    exact function on every machine; with the default 16 units per bit it defines the chunk
    boundaries.
    """
    x = np.arange(max_value + 1, dtype=np.float64)
    with np.errstate(divide="ignore"):
        estimate = units * np.log2(x)
    estimate[0] = 0.0
    out = np.floor(estimate).astype(np.int64)
    close = np.flatnonzero(np.abs(estimate - np.rint(estimate)) < 1e-6)
    for value in close[close > 0].tolist():
        out[value] = (value**units).bit_length() - 1
    return out


@dataclass
class CoderStats:
    """Counts from one encode or decode of the latent."""

    symbols: int = 0
    chunks: int = 0
    payload_bytes: int = 0
    length_bytes: int = 0
    ideal_bits: float = 0.0
    escapes: int = 0
    entropy_seconds: float = 0.0
    levels_complete: int = 0
    chunks_per_level: list[int] = field(default_factory=list)

    @property
    def overhead_bytes(self) -> float:
        """Bytes spent above the ideal code length: length prefixes plus coder flushes."""
        return self.payload_bytes + self.length_bytes - self.ideal_bits / 8.0


def chunk_bounds(weights: np.ndarray, chunk_units: int) -> list[tuple[int, int]]:
    if len(weights) == 0:
        return []
    before = np.cumsum(weights) - weights
    chunk_id = before // chunk_units
    cuts = np.flatnonzero(np.diff(chunk_id)) + 1
    edges = [0, *cuts.tolist(), len(weights)]
    return list(zip(edges[:-1], edges[1:], strict=True))


def _constriction():
    import constriction

    return constriction.stream


def _payload_to_words(payload: bytes) -> np.ndarray:
    pad = (-len(payload)) % 4
    return np.frombuffer(payload + b"\0" * pad, dtype=">u4").astype(np.uint32)


def decode_chunk(
    payload: bytes, probs: np.ndarray, escape_sym: np.ndarray | None
) -> tuple[np.ndarray, np.ndarray]:
    """Symbols of one chunk and, at level 1, the escape values ``(sign, hi, lo)`` rows.
    :class:`~bench.CorruptStream` when constriction finds the payload invalid for the model."""
    cs = _constriction()
    dec = cs.queue.RangeDecoder(_payload_to_words(payload))
    try:
        syms = dec.decode(cs.model.Categorical(perfect=False), probs)
        extra = np.zeros((0, 3), np.int64)
        if escape_sym is not None:
            n_esc = int(np.count_nonzero(syms == escape_sym))
            if n_esc:
                flat = dec.decode(escape_model(), 3 * n_esc)
                extra = np.asarray(flat, np.int64).reshape(n_esc, 3)
    except (AssertionError, ValueError, RuntimeError) as exc:
        raise CorruptStream(f"corrupt chunk: {exc}") from None
    return np.asarray(syms, np.int64), extra


@functools.lru_cache(maxsize=1)
def _escape_model_cached():
    return _constriction().model.Uniform(ESCAPE_HALF)


def escape_model():
    return _escape_model_cached()


def escape_payload(values: np.ndarray, c: np.ndarray) -> np.ndarray:
    mag = np.minimum(np.abs(values) - c - 1, (1 << 32) - 1)
    out = np.stack([(values < 0).astype(np.int64), mag >> 16, mag & 0xFFFF], axis=1)
    return out


def escape_values(rows: np.ndarray, c: np.ndarray) -> np.ndarray:
    mag = (rows[:, 1] << 16) + rows[:, 2] + c + 1
    return np.where(rows[:, 0] == 1, -mag, mag)


def _same_chunk(payload, probs, escape_sym, syms, esc_rows) -> bool:
    try:
        got, extra = decode_chunk(payload, probs, escape_sym)
    except (AssertionError, ValueError, RuntimeError):
        return False  # constriction rejects data that is invalid for the model
    if not np.array_equal(got, syms):
        return False
    return esc_rows is None or np.array_equal(extra, esc_rows)


def _increment(data: bytes) -> bytes | None:
    """``data`` + 1 as a big-endian number of the same length (``None`` on overflow)."""
    value = int.from_bytes(data, "big") + 1
    if value >> (8 * len(data)):
        return None
    return value.to_bytes(len(data), "big")


def trim_payload(payload, probs, escape_sym, syms, esc_rows) -> bytes:
    """Shorten a chunk while it still decodes to the same symbols.

    The decoder pads a chunk with zero bytes, so a shorter payload stands for a number just
    below or (after incrementing its last byte) just above the encoder's final point; either
    may still lie inside the coder's final interval. Each candidate is verified by decoding.
    """
    while payload:
        head = payload[:-1]
        candidates = [head.rstrip(b"\0")]
        up = _increment(head) if head else None
        if up is not None:
            candidates.append(up.rstrip(b"\0"))
        for cand in sorted(candidates, key=len):
            if _same_chunk(cand, probs, escape_sym, syms, esc_rows):
                payload = cand
                break
        else:
            return payload
    return payload


def encode_chunk(
    probs: np.ndarray,
    syms: np.ndarray,
    escape_sym: np.ndarray | None,
    esc_rows: np.ndarray | None,
    *,
    trim: bool = True,
) -> bytes:
    """One chunk: ``syms`` coded with one probability row each (then the escape payload rows),
    an independent range-coder stream, trailing zeros dropped and, with ``trim``, shortened while
    it still decodes to the same symbols."""
    cs = _constriction()
    enc = cs.queue.RangeEncoder()
    syms = np.asarray(syms).astype(np.int32)
    enc.encode(syms, cs.model.Categorical(perfect=False), probs)
    if esc_rows is not None:
        enc.encode(esc_rows.reshape(-1).astype(np.int32), escape_model())
    payload = enc.get_compressed().astype(">u4").tobytes().rstrip(b"\0")
    if trim:
        payload = trim_payload(payload, probs, escape_sym, syms, esc_rows)
    return payload


def write_chunk(out: bytearray, payload: bytes, weight_units: int, stats: CoderStats) -> None:
    """Append a chunk: varint ``zigzag(len - expected)`` (``expected`` from the chunk's summed
    expected cost in 1/16 bit), then the payload."""
    expected = weight_units // UNITS_PER_BYTE
    before = len(out)
    put_varint(out, zigzag(len(payload) - expected))
    stats.length_bytes += len(out) - before
    out += payload
    stats.payload_bytes += len(payload)
    stats.chunks += 1


def read_chunk(data: bytes, pos: int, weight_units: int) -> tuple[bytes, int] | None:
    """The payload of the chunk at ``pos`` and the position after it, or ``None`` when the
    prefix ends inside it (its length or its payload)."""
    got = read_varint(data, pos)
    if got is None:
        return None
    code, p = got
    length = weight_units // UNITS_PER_BYTE + unzigzag(code)
    if length < 0:
        raise CorruptStream("negative chunk length: not a stream of this codec/weights")
    if p + length > len(data):
        return None
    return bytes(data[p : p + length]), p + length
