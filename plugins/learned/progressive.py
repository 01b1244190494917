"""The progressive codec shared by PLONQ and DZQ: header, hyper-latent, nested latent chunks.

Stream layout (all integers LEB128 varints unless said otherwise)::

    tag            1 byte   codec and format version (PLONQ 0x51, DZQ 0x44)
    H, W           varints  image size
    weights        4 bytes  first 4 bytes of the weights file's sha256 (checked on decode)
    reconstruction 1 byte   0 = Gaussian conditional mean, 1 = midpoint, 2 = Laplacian centroid
    chunk          varint   chunk size in units of 64 bits of expected cost
    scheme         bytes    the level scheme's parameters (codec specific)
    len(z), z      varint + the hyper-latent: round(z - medians) coded with the entropy
                            bottleneck's integer tables (:mod:`plugins.learned.coding.table`)
    chunks ...              the latent refinement, :mod:`plugins.learned.coding.latent`

Everything up to the end of ``z`` is the header: a shorter prefix raises
:class:`bench.PrefixTooShort`; a header no encoder could write (another tag, a size over
:data:`bench.codec.MAX_SIDE` or too large for its ``z`` length, other weights, unknown codes)
raises :class:`bench.CorruptStream` before anything it sizes is allocated; a prefix that holds
it decodes (the latent starts at the prior means ``mu``, "no chunk yet") and every complete
chunk after it refines the latent.

Subclasses provide the level scheme: :meth:`NestedLatentCodec.choose_scheme` (encoder side:
returns the scheme and its header bytes) and :meth:`NestedLatentCodec.read_scheme` (decoder
side, from the header alone).
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

import numpy as np

from bench.codec import (
    CodecInfo,
    CorruptStream,
    ProgressiveCodec,
    check_image,
    check_stream_size,
)
from plugins.learned.coding import latent as lc
from plugins.learned.coding.bits import Reader, put_varint
from plugins.learned.model_io import Analysis, BaseModel, read_z
from plugins.learned.weights import DEFAULT_WEIGHTS, resolve

RECON_CODES = {"mean": 0, "midpoint": 1, "laplace": 2}
RECON_NAMES = {v: k for k, v in RECON_CODES.items()}
CHUNK_UNIT_BITS = 64
#: Tables kept per process (PLONQ needs one set per weights; DZQ one per image's steps).
TABLE_CACHE_SIZE = 8


@dataclass
class Decoded:
    """A decoded prefix with what the decoder learned on the way (for benchmarks and tests)."""

    image: np.ndarray
    state: Any  # the latent coder's state (lc.LatentState for PLONQ and DZQ)
    header_bytes: int
    fine_symbols: int
    seconds: dict[str, float]


def check_chunk_bits(chunk_bits: int) -> int:
    """``chunk_bits`` as an int, or ``ValueError`` unless it is a positive multiple of 64."""
    chunk_bits = int(chunk_bits)
    if chunk_bits < CHUNK_UNIT_BITS or chunk_bits % CHUNK_UNIT_BITS:
        raise ValueError(f"chunk_bits must be a positive multiple of {CHUNK_UNIT_BITS}")
    return chunk_bits


def write_image_header(tag: int, height: int, width: int, base: BaseModel) -> bytearray:
    """The start every learned progressive stream shares: tag byte, H, W varints, and the first
    4 bytes of the base weights' sha256."""
    out = bytearray([tag])
    put_varint(out, height)
    put_varint(out, width)
    out += base.sha_prefix
    return out


def read_image_header(reader: Reader, tag: int, name: str, base: BaseModel) -> tuple[int, int]:
    """Read what :func:`write_image_header` wrote; ``(height, width)``.
    :class:`~bench.CorruptStream` for another codec's stream, a size outside the contract's
    limits or a stream made with other base weights."""
    got = reader.byte()
    if got != tag:
        raise CorruptStream(f"not a {name} stream (tag {got:#x}, expected {tag:#x})")
    height, width = reader.varint(), reader.varint()
    check_stream_size(height, width)
    sha = reader.take(4)
    if sha != base.sha_prefix:
        raise CorruptStream(
            f"stream made with base weights sha256 {sha.hex()}..., this codec has "
            f"{base.sha_prefix.hex()}... ({base.resolved.spec}); decode with the same weights"
        )
    return height, width


def read_chunk_bits(reader: Reader) -> int:
    """The chunk size field (in units of 64 bits) as bits."""
    chunk_bits = reader.varint() * CHUNK_UNIT_BITS
    if chunk_bits <= 0:
        raise CorruptStream("corrupt header: chunk size 0")
    return chunk_bits


_TABLES: OrderedDict[tuple, lc.CoderTables] = OrderedDict()
_TABLES_LOCK = threading.Lock()


def cached_tables(base: BaseModel, scheme: Any, reconstruction: str) -> lc.CoderTables:
    """The coder tables of ``scheme`` over ``base``'s CDFs (LRU cache keyed by content)."""
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


class NestedLatentCodec(ProgressiveCodec):
    """Base of the PLONQ and DZQ codecs (see module doc)."""

    name = ""
    tag = 0
    version = "1"
    default_reconstruction = "mean"

    def __init__(
        self,
        weights: str = DEFAULT_WEIGHTS,
        chunk_bits: int = 1024,
        reconstruction: str | None = None,
        memo: bool = False,
    ) -> None:
        reconstruction = reconstruction or self.default_reconstruction
        if reconstruction not in RECON_CODES:
            raise ValueError(f"reconstruction must be one of {sorted(RECON_CODES)}")
        self.weights_spec = str(weights)
        self.resolved = resolve(self.weights_spec)  # raises CodecUnavailable with a fix
        self.chunk_bits = check_chunk_bits(chunk_bits)
        self.reconstruction = reconstruction
        self.memo = bool(memo)
        self._memo_hyper = DecoderMemo(self.memo)
        self._memo_image = DecoderMemo(self.memo)
        self._base: BaseModel | None = None

    # -- subclass hooks -------------------------------------------------------------------

    def choose_scheme(
        self, base: BaseModel, analysis: Analysis, fine: np.ndarray, idx: np.ndarray
    ) -> tuple[Any, bytes]:
        """Encoder: the level scheme for this image and its header bytes."""
        raise NotImplementedError

    def read_scheme(self, reader: Reader) -> Any:
        """Decoder: the level scheme from the header bytes written by :meth:`choose_scheme`."""
        raise NotImplementedError

    def parameters(self) -> dict[str, Any]:
        out = {
            "weights": self.weights_spec,
            "chunk_bits": self.chunk_bits,
            "reconstruction": self.reconstruction,
        }
        if self.memo:
            out["memo"] = True
        return out

    # -- plumbing ---------------------------------------------------------------------------

    @property
    def base(self) -> BaseModel:
        if self._base is None:
            self._base = BaseModel.get(self.weights_spec)
        return self._base

    def info(self) -> CodecInfo:
        base = self.base
        return CodecInfo(
            name=self.name,
            version=self.version,
            description=self.description,
            parameters=self.parameters(),
            num_parameters=base.num_parameters,
            parameter_groups={"base": base.num_parameters},
            weights_bytes=self.resolved.weights_bytes,
            weights=self.resolved.info(),
            device="cpu",
            external=library_versions(),
        )

    def encode(self, image: np.ndarray) -> bytes:
        data, _stats = self.encode_with_stats(image)
        return data

    def encode_with_stats(self, image: np.ndarray) -> tuple[bytes, lc.CoderStats]:
        check_image(image)
        base = self.base
        height, width = image.shape[:2]
        analysis = base.analyse(image)
        hyper = analysis.hyper
        order = lc.refinement_order(hyper.indexes)
        fine = np.rint(analysis.y - hyper.means).reshape(-1).astype(np.int64)[order]
        idx = hyper.indexes.reshape(-1).astype(np.int64)[order]
        scheme, scheme_bytes = self.choose_scheme(base, analysis, fine, idx)
        tables = cached_tables(base, scheme, self.reconstruction)
        body, stats = lc.encode_latent(tables, fine, idx, self.chunk_bits * lc.UNITS_PER_BIT)
        out = write_image_header(self.tag, height, width, base)
        out.append(RECON_CODES[self.reconstruction])
        put_varint(out, self.chunk_bits // CHUNK_UNIT_BITS)
        out += scheme_bytes
        put_varint(out, len(analysis.z_bytes))
        out += analysis.z_bytes
        return bytes(out) + body, stats

    def decode(self, prefix: bytes) -> np.ndarray:
        return self.decode_full(prefix).image

    def decode_full(self, prefix: bytes) -> Decoded:
        t_start = time.perf_counter()
        prefix = bytes(prefix)
        reader = Reader(prefix)
        base = self.base
        height, width = read_image_header(reader, self.tag, self.name, base)
        recon_code = reader.byte()
        if recon_code not in RECON_NAMES:
            raise CorruptStream(f"corrupt header: reconstruction code {recon_code}")
        chunk_bits = read_chunk_bits(reader)
        scheme = self.read_scheme(reader)
        z_bytes = read_z(reader, base, height, width)
        header_end = reader.pos
        header = prefix[:header_end]
        cached = self._memo_hyper.get(header)
        if cached is None:
            hyper = base.hyper(z_bytes, base.hyper_shape(height, width))
            order = lc.refinement_order(hyper.indexes)
            idx = hyper.indexes.reshape(-1).astype(np.int64)[order]
            cached = (hyper, order, idx)
            self._memo_hyper.put(header, cached)
        hyper, order, idx = cached
        t_hyper = time.perf_counter()
        tables = cached_tables(base, scheme, RECON_NAMES[recon_code])
        state = lc.decode_latent(tables, prefix, header_end, idx, chunk_bits * lc.UNITS_PER_BIT)
        t_latent = time.perf_counter()
        image = self._memo_image.get(prefix[: state.end])
        if image is None:
            rel = lc.reconstruct(tables, state)
            y_hat = np.empty(rel.size, dtype=np.float64)
            y_hat[order] = rel
            y_hat = y_hat.reshape(hyper.means.shape) + hyper.means
            image = base.synthesise(y_hat, height, width)
            self._memo_image.put(prefix[: state.end], image)
        return Decoded(
            image=image,
            state=state,
            header_bytes=header_end,
            fine_symbols=int(idx.size),
            seconds={
                "header+z+hyper": t_hyper - t_start,
                "latent": t_latent - t_hyper,
                "reconstruction+synthesis": time.perf_counter() - t_latent,
            },
        )


class DecoderMemo:
    """With ``enabled``, a decoder reuses the outputs of its last few decodes, keyed by the exact
    bytes they depend on (the header for the hyper path, the header plus all complete chunks for
    the image), so a prefix that adds no complete chunk costs no network run. Off by default:
    with it on, repeated decodes are not timed honestly (tests and interactive use only)."""

    def __init__(self, enabled: bool, size: int = 4) -> None:
        self.enabled = enabled
        self.size = size
        self._items: OrderedDict[bytes, Any] = OrderedDict()

    def get(self, key: bytes):
        if not self.enabled or key not in self._items:
            return None
        self._items.move_to_end(key)
        value = self._items[key]
        return value.copy() if isinstance(value, np.ndarray) else value

    def put(self, key: bytes, value) -> None:
        if not self.enabled:
            return
        self._items[key] = value.copy() if isinstance(value, np.ndarray) else value
        while len(self._items) > self.size:
            self._items.popitem(last=False)


def library_versions() -> dict[str, str]:
    """Installed versions of the libraries the learned codecs use (read without importing)."""
    from importlib import metadata

    out = {}
    for dist in ("torch", "compressai", "constriction", "safetensors"):
        try:
            out[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:  # pragma: no cover - reported, never fatal
            out[dist] = "missing"
    return out
