"""The header every learned codec's stream starts with, and the fields its progressive codecs
share.

Layout (varints are LEB128)::

    tag     1 byte   codec and format version (msh 0x4D, plonq-naive 0x4E, PLONQ 0x51,
                     DZQ 0x44, DeepHQ 0x48)
    H, W    varints  image size
    weights 4 bytes  first 4 bytes of the base weights file's sha256 (checked on decode)

Progressive codecs then state their chunk size as a varint in units of
:data:`CHUNK_UNIT_BITS` bits, and a reconstruction rule as one of :data:`RECON_CODES`.
"""

from __future__ import annotations

from bench.codec import CorruptStream, check_stream_size
from plugins.learned.coding.bits import Reader, put_varint

#: Reconstruction rules of an interval that holds several fine integers, by header code.
RECON_CODES = {"mean": 0, "midpoint": 1, "laplace": 2}
RECON_NAMES = {v: k for k, v in RECON_CODES.items()}
#: The chunk size field counts units of this many bits.
CHUNK_UNIT_BITS = 64


def write_image_header(tag: int, height: int, width: int, sha_prefix: bytes) -> bytearray:
    """Tag byte, ``H`` and ``W`` varints, and the 4-byte ``sha_prefix`` of the base weights."""
    out = bytearray([tag])
    put_varint(out, height)
    put_varint(out, width)
    out += sha_prefix
    return out


def read_image_header(
    reader: Reader, tag: int, name: str, sha_prefix: bytes, weights: str
) -> tuple[int, int]:
    """Read what :func:`write_image_header` wrote; ``(height, width)``.

    :class:`~bench.CorruptStream` for another codec's stream (``name``: this codec's name), a
    size outside the contract's limits, or a stream made with other base weights than those of
    ``sha_prefix`` (``weights``: their spec, for the message).
    """
    got = reader.byte()
    if got != tag:
        raise CorruptStream(f"not a {name} stream (tag {got:#x}, expected {tag:#x})")
    height, width = reader.varint(), reader.varint()
    check_stream_size(height, width)
    sha = reader.take(4)
    if sha != sha_prefix:
        raise CorruptStream(
            f"stream made with base weights sha256 {sha.hex()}..., this codec has "
            f"{sha_prefix.hex()}... ({weights}); decode with the same weights"
        )
    return height, width


def check_chunk_bits(chunk_bits: int) -> int:
    """``chunk_bits`` as an int, or ``ValueError`` unless it is a positive multiple of 64."""
    chunk_bits = int(chunk_bits)
    if chunk_bits < CHUNK_UNIT_BITS or chunk_bits % CHUNK_UNIT_BITS:
        raise ValueError(f"chunk_bits must be a positive multiple of {CHUNK_UNIT_BITS}")
    return chunk_bits


def check_reconstruction(reconstruction: str, allowed: tuple[str, ...] = tuple(RECON_CODES)) -> str:
    """``reconstruction``, or ``ValueError`` unless it is one of ``allowed`` (names of
    :data:`RECON_CODES` that the codec supports)."""
    if reconstruction not in allowed:
        raise ValueError(f"reconstruction must be one of {sorted(allowed)}")
    return reconstruction


def put_chunk_bits(out: bytearray, chunk_bits: int) -> None:
    """Append the chunk size field of ``chunk_bits`` (a multiple of :data:`CHUNK_UNIT_BITS`)."""
    put_varint(out, chunk_bits // CHUNK_UNIT_BITS)


def read_chunk_bits(reader: Reader) -> int:
    """The chunk size field as bits; :class:`~bench.CorruptStream` for 0."""
    chunk_bits = reader.varint() * CHUNK_UNIT_BITS
    if chunk_bits <= 0:
        raise CorruptStream("corrupt header: chunk size 0")
    return chunk_bits
