"""Byte helpers of the learned codecs' streams: LEB128 varints, zig-zag, and :class:`Reader`,
whose reads raise :class:`bench.PrefixTooShort` past the end of a prefix."""

from __future__ import annotations

from bench.codec import CorruptStream, PrefixTooShort


def put_varint(out: bytearray, value: int) -> None:
    """Append ``value >= 0`` as an LEB128 varint (7 bits per byte, high bit = more)."""
    if value < 0:
        raise ValueError(f"varint of negative value {value}")
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return


def zigzag(value: int) -> int:
    return 2 * value if value >= 0 else -2 * value - 1


def unzigzag(value: int) -> int:
    return value >> 1 if value % 2 == 0 else -((value + 1) >> 1)


def read_varint(data: bytes, pos: int) -> tuple[int, int] | None:
    """``(value, new_pos)`` of the varint at ``pos``, or ``None`` if ``data`` ends inside it."""
    value = shift = 0
    while pos < len(data):
        byte = data[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return value, pos
        shift += 7
        if shift > 63:
            raise CorruptStream("varint longer than 64 bits: not a stream of this codec")
    return None


class Reader:
    """Sequential reads from a prefix; running past its end raises :class:`PrefixTooShort`."""

    def __init__(self, data: bytes, what: str = "header") -> None:
        self.data = data
        self.pos = 0
        self.what = what

    def varint(self) -> int:
        got = read_varint(self.data, self.pos)
        if got is None:
            raise PrefixTooShort(f"prefix of {len(self.data)} bytes ends inside the {self.what}")
        value, self.pos = got
        return value

    def take(self, n: int) -> bytes:
        if self.pos + n > len(self.data):
            raise PrefixTooShort(f"prefix of {len(self.data)} bytes ends inside the {self.what}")
        out = self.data[self.pos : self.pos + n]
        self.pos += n
        return bytes(out)

    def byte(self) -> int:
        return self.take(1)[0]
