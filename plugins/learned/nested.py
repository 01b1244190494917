"""The nested-interval progressive codecs on the base model: PLONQ and DZQ (and the coder
tables HC's latents share, :func:`cached_tables`).

Their fields in the stream header (after the image header of :mod:`plugins.learned.codec`)::

    reconstruction 1 byte   0 = Gaussian conditional mean, 1 = midpoint, 2 = Laplacian centroid
    chunk          varint   chunk size in units of 64 bits of expected cost
    scheme         bytes    the level scheme's parameters (codec specific)

then ``len(z), z`` and the chunks of :mod:`plugins.learned.coding.latent`. Subclasses provide
the level scheme: :meth:`NestedLatentCodec.choose_scheme` (encoder side: returns the scheme and
its header bytes) and :meth:`NestedLatentCodec.read_scheme` (decoder side, from the header
alone).
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from bench.codec import CorruptStream
from plugins.learned.codec import ChunkedCoding, LearnedProgressiveCodec
from plugins.learned.coding import latent as lc
from plugins.learned.coding.bits import Reader
from plugins.learned.coding.header import (
    RECON_CODES,
    RECON_NAMES,
    check_reconstruction,
    put_chunk_bits,
    read_chunk_bits,
)
from plugins.learned.model_io import Analysis, BaseModel
from plugins.learned.weights import DEFAULT_WEIGHTS, ResolvedWeights, resolve

#: Tables kept per process (PLONQ and HC need one set per weights; DZQ one per image's steps).
TABLE_CACHE_SIZE = 8

_TABLES: OrderedDict[tuple, lc.CoderTables] = OrderedDict()
_TABLES_LOCK = threading.Lock()


class GaussianTables(Protocol):
    """A model's integer Gaussian tables (:class:`~plugins.learned.model_io.BaseModel`, HC's
    runtime): int64 CDF rows, their lengths and offsets, the float64 scale table, the CDFs'
    precision in bits, and the weights whose sha256 names them."""

    resolved: ResolvedWeights
    cdf: np.ndarray
    cdf_length: np.ndarray
    offset: np.ndarray
    scale_table: np.ndarray
    precision: int


def cached_tables(base: GaussianTables, scheme: Any, reconstruction: str) -> lc.CoderTables:
    """The coder tables of ``scheme`` (a level scheme with a content ``key``) over ``base``'s
    CDFs (LRU cache keyed by content)."""
    key = (base.resolved.sha256, scheme.key, reconstruction)
    with _TABLES_LOCK:
        if key in _TABLES:
            _TABLES.move_to_end(key)
            return _TABLES[key]
    tables = lc.build_tables(
        base.cdf,
        base.cdf_length,
        base.offset,
        scheme,
        base.scale_table,
        reconstruction,
        precision=base.precision,
    )
    with _TABLES_LOCK:
        _TABLES[key] = tables
        while len(_TABLES) > TABLE_CACHE_SIZE:
            _TABLES.popitem(last=False)
    return tables


@dataclass(frozen=True)
class NestedCoding(ChunkedCoding):
    """The :class:`~plugins.learned.codec.LatentCoding` of a level scheme's tables."""

    tables: lc.CoderTables
    chunk_bits: int

    def encode(
        self, fine: np.ndarray, idx: np.ndarray, channel: np.ndarray
    ) -> tuple[bytes, lc.CoderStats]:
        return lc.encode_latent(self.tables, fine, idx, self.chunk_units)

    def decode(
        self, prefix: bytes, start: int, idx: np.ndarray, channel: np.ndarray
    ) -> lc.LatentState:
        return lc.decode_latent(self.tables, prefix, start, idx, self.chunk_units)

    def reconstruct(self, state: lc.LatentState) -> np.ndarray:
        return lc.reconstruct(self.tables, state)


@dataclass(frozen=True)
class NestedFields:
    """The header fields of a nested codec's stream."""

    reconstruction: str
    chunk_bits: int
    scheme: Any


class NestedLatentCodec(LearnedProgressiveCodec):
    """Base of the PLONQ and DZQ codecs (see module doc)."""

    default_reconstruction = "mean"

    def __init__(
        self,
        weights: str = DEFAULT_WEIGHTS,
        chunk_bits: int = 1024,
        reconstruction: str | None = None,
        memo: bool = False,
    ) -> None:
        reconstruction = check_reconstruction(reconstruction or self.default_reconstruction)
        self.weights_spec = str(weights)
        self.resolved = resolve(self.weights_spec)  # raises CodecUnavailable with a fix
        super().__init__(chunk_bits=chunk_bits, reconstruction=reconstruction, memo=memo)

    # -- subclass hooks -------------------------------------------------------------------

    def choose_scheme(
        self, base: BaseModel, analysis: Analysis, fine: np.ndarray, idx: np.ndarray
    ) -> tuple[Any, bytes]:
        """Encoder: the level scheme for this image and its header bytes."""
        raise NotImplementedError

    def read_scheme(self, reader: Reader) -> Any:
        """Decoder: the level scheme from the header bytes written by :meth:`choose_scheme`."""
        raise NotImplementedError

    # -- the latent strategy of LearnedProgressiveCodec -------------------------------------

    def encode_fields(
        self, base: BaseModel, analysis: Analysis, fine: np.ndarray, idx: np.ndarray
    ) -> tuple[bytes, NestedCoding]:
        scheme, scheme_bytes = self.choose_scheme(base, analysis, fine, idx)
        out = bytearray([RECON_CODES[self.reconstruction]])
        put_chunk_bits(out, self.chunk_bits)
        out += scheme_bytes
        tables = cached_tables(base, scheme, self.reconstruction)
        return bytes(out), NestedCoding(tables, self.chunk_bits)

    def read_fields(self, reader: Reader, base: BaseModel) -> NestedFields:
        recon_code = reader.byte()
        if recon_code not in RECON_NAMES:
            raise CorruptStream(f"corrupt header: reconstruction code {recon_code}")
        chunk_bits = read_chunk_bits(reader)
        return NestedFields(RECON_NAMES[recon_code], chunk_bits, self.read_scheme(reader))

    def latent_coding(self, fields: NestedFields, base: BaseModel) -> NestedCoding:
        tables = cached_tables(base, fields.scheme, fields.reconstruction)
        return NestedCoding(tables, fields.chunk_bits)
