"""The one base of the learned codecs: weights -> base model, the stream header, the decoder
memo, ``info()`` and the decoder's time split. A codec supplies how the latent is coded.

Progressive streams (:class:`LearnedProgressiveCodec`; PLONQ, DZQ, DeepHQ) are laid out as::

    image header   tag, H, W, base weights sha256[:4]   (:mod:`plugins.learned.coding.header`)
    fields         the codec's own header fields         (:meth:`encode_fields`)
    len(z), z      varint + the hyper-latent, coded with the entropy bottleneck's tables
    chunks ...     the latent refinement                 (a :class:`LatentCoding`)

Everything up to the end of ``z`` is the header: a shorter prefix raises
:class:`bench.PrefixTooShort`; a header no encoder could write raises
:class:`bench.CorruptStream` before anything it sizes is allocated; a prefix that holds it
decodes, and every complete chunk after it refines the latent.

What a progressive codec supplies (the latent strategy): :meth:`encode_fields` (encoder: its
header fields and the :class:`LatentCoding` of this image), :meth:`read_fields` (decoder: the
same fields from the header) and :meth:`latent_coding` (decoder: the coding the fields
describe). The rate-ladder codecs of :mod:`plugins.learned.ladder` share the weights, the image
header and ``info()`` (FLOPs per pixel included: :mod:`plugins.learned.flops`) through
:class:`OnBaseModel`.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from bench.codec import CodecInfo, ProgressiveCodec, WeightsInfo, check_image
from plugins.learned.coding import latent as lc
from plugins.learned.coding.bits import Reader, put_varint
from plugins.learned.coding.header import (
    check_chunk_bits,
    read_image_header,
    write_image_header,
)
from plugins.learned.flops import base_model_flops
from plugins.learned.model_io import Analysis, BaseModel, HyperOutput, read_z
from plugins.learned.weights import ResolvedWeights


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


class OnBaseModel:
    """A codec on a base model: ``weights_spec`` -> :attr:`resolved` (set by the subclass) ->
    the shared :class:`BaseModel`, the image header, and ``info()``."""

    name = ""
    version = "1"
    description = ""
    tag = 0
    weights_spec: str
    resolved: ResolvedWeights
    _base: BaseModel | None = None

    @property
    def base(self) -> BaseModel:
        """The base model of :attr:`weights_spec` (loaded on first use, shared per process)."""
        if self._base is None:
            self._base = BaseModel.get(self.weights_spec)
        return self._base

    def parameters(self) -> dict[str, Any]:
        return {"weights": self.weights_spec}

    def added_parameters(self) -> dict[str, int]:
        """Learned values the codec adds over the base model, by group (none by default)."""
        return {}

    def flops_per_pixel(self) -> dict[str, float]:
        """Encoder and decoder FLOPs per pixel of the base model's networks on a 256x256 input
        (:func:`plugins.learned.flops.base_model_flops`, counted once per process)."""
        nets = self.base.nets
        return base_model_flops(nets.N, nets.M).per_pixel()

    def weights_info(self) -> WeightsInfo:
        return self.resolved.info()

    def weights_bytes(self) -> int:
        return self.resolved.weights_bytes

    def info(self) -> CodecInfo:
        base = self.base
        added = self.added_parameters()
        parameters = self.parameters()
        if added:
            parameters = {**parameters, "added_parameters": added}
        return CodecInfo(
            name=self.name,
            version=self.version,
            description=self.description,
            parameters=parameters,
            num_parameters=base.num_parameters + sum(added.values()),
            parameter_groups={"base": base.num_parameters, **added},
            weights_bytes=self.weights_bytes(),
            weights=self.weights_info(),
            device="cpu",
            external=library_versions(),
            flops_per_pixel=self.flops_per_pixel(),
        )

    def image_header(self, height: int, width: int) -> bytearray:
        """Tag, size and base weights of a stream of this codec."""
        return write_image_header(self.tag, height, width, self.base.sha_prefix)

    def read_image_header(self, reader: Reader) -> tuple[int, int]:
        """``(height, width)`` from a stream of this codec made with these base weights."""
        base = self.base
        return read_image_header(reader, self.tag, self.name, base.sha_prefix, base.resolved.spec)


class LatentCoding(Protocol):
    """How one stream's latent is coded, given the refinement order of its elements.

    ``fine``: ``round(y - mu)`` per element, ``idx``: its scale index, ``channel``: its latent
    channel, all int64 in refinement order (:func:`latent_order`)."""

    def encode(
        self, fine: np.ndarray, idx: np.ndarray, channel: np.ndarray
    ) -> tuple[bytes, lc.CoderStats]:
        """The chunks of the latent and the coder's statistics."""

    def decode(self, prefix: bytes, start: int, idx: np.ndarray, channel: np.ndarray) -> Any:
        """The decoder's state after the complete chunks of ``prefix[start:]``; its ``end`` is
        the offset just past the last complete chunk."""

    def reconstruct(self, state: Any) -> np.ndarray:
        """float64 ``y - mu`` per element in refinement order, from a decoded state."""


class ChunkedCoding:
    """Base of a :class:`LatentCoding` whose chunks each hold about ``chunk_bits`` bits of
    expected cost (a field of the subclass, a frozen dataclass)."""

    chunk_bits: int

    @property
    def chunk_units(self) -> int:
        """The chunk size in the latent coder's units of expected cost."""
        return self.chunk_bits * lc.UNITS_PER_BIT


def latent_order(hyper: HyperOutput) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(order, idx, channel)``: the refinement order of the latent's flattened ``(C, H, W)``
    elements (:func:`~plugins.learned.coding.latent.refinement_order`), and the scale index and
    channel of each element in that order (int64)."""
    order = lc.refinement_order(hyper.indexes)
    idx = hyper.indexes.reshape(-1).astype(np.int64)[order]
    plane = hyper.indexes.shape[1] * hyper.indexes.shape[2]
    return order, idx, order // plane


@dataclass
class Decoded:
    """A decoded prefix with what the decoder learned on the way (for benchmarks and tests)."""

    image: np.ndarray
    state: Any  # the latent coding's state (lc.LatentState, DeepHQ's DecodedLatent)
    header_bytes: int
    fine_symbols: int
    seconds: dict[str, float]


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


class LearnedProgressiveCodec(OnBaseModel, ProgressiveCodec):
    """Base of the progressive learned codecs (see module doc). Subclasses set :attr:`resolved`
    (or override :meth:`weights_info`) and implement :meth:`encode_fields`,
    :meth:`read_fields` and :meth:`latent_coding`."""

    def __init__(self, chunk_bits: int, reconstruction: str, memo: bool) -> None:
        self.chunk_bits = check_chunk_bits(chunk_bits)
        self.reconstruction = reconstruction
        self.memo = bool(memo)
        self._memo_hyper = DecoderMemo(self.memo)
        self._memo_image = DecoderMemo(self.memo)
        self._base = None

    # -- what a codec supplies --------------------------------------------------------------

    def encode_fields(
        self, base: BaseModel, analysis: Analysis, fine: np.ndarray, idx: np.ndarray
    ) -> tuple[bytes, LatentCoding]:
        """Encoder: the codec's header fields for this image and the coding of its latent."""
        raise NotImplementedError

    def read_fields(self, reader: Reader, base: BaseModel) -> Any:
        """Decoder: the fields written by :meth:`encode_fields` (cheap; validates them)."""
        raise NotImplementedError

    def latent_coding(self, fields: Any, base: BaseModel) -> LatentCoding:
        """Decoder: the coding the header's fields describe (timed as latent decoding)."""
        raise NotImplementedError

    def parameters(self) -> dict[str, Any]:
        out = {
            **super().parameters(),
            "chunk_bits": self.chunk_bits,
            "reconstruction": self.reconstruction,
        }
        if self.memo:
            out["memo"] = True
        return out

    # -- coding -----------------------------------------------------------------------------

    @staticmethod
    def latent_order(hyper: HyperOutput) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        return latent_order(hyper)

    def encode(self, image: np.ndarray) -> bytes:
        return self.encode_with_stats(image)[0]

    def encode_with_stats(self, image: np.ndarray) -> tuple[bytes, lc.CoderStats]:
        check_image(image)
        base = self.base
        height, width = image.shape[:2]
        analysis = base.analyse(image)
        hyper = analysis.hyper
        order, idx, channel = latent_order(hyper)
        fine = np.rint(analysis.y - hyper.means).reshape(-1).astype(np.int64)[order]
        fields, coding = self.encode_fields(base, analysis, fine, idx)
        body, stats = coding.encode(fine, idx, channel)
        out = self.image_header(height, width)
        out += fields
        put_varint(out, len(analysis.z_bytes))
        out += analysis.z_bytes
        return bytes(out) + body, stats

    def decode(self, prefix: bytes) -> np.ndarray:
        return self.decode_full(prefix).image

    def decode_full(self, prefix: bytes) -> Decoded:
        """The image, the coding's state, the header size and the time split (seconds):
        header, ``z`` and hyper path; latent decoding; reconstruction and synthesis."""
        t_start = time.perf_counter()
        prefix = bytes(prefix)
        reader = Reader(prefix)
        base = self.base
        height, width = self.read_image_header(reader)
        fields = self.read_fields(reader, base)
        z_bytes = read_z(reader, base, height, width)
        header_end = reader.pos
        header = prefix[:header_end]
        cached = self._memo_hyper.get(header)
        if cached is None:
            hyper = base.hyper(z_bytes, base.hyper_shape(height, width))
            cached = (hyper, *latent_order(hyper))
            self._memo_hyper.put(header, cached)
        hyper, order, idx, channel = cached
        t_hyper = time.perf_counter()
        coding = self.latent_coding(fields, base)
        state = coding.decode(prefix, header_end, idx, channel)
        t_latent = time.perf_counter()
        image = self._memo_image.get(prefix[: state.end])
        if image is None:
            rel = coding.reconstruct(state)
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
