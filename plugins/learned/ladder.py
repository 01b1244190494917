"""Non-progressive reference points of the base model (rate-ladder codecs).

:class:`BaseModelLadder` (codec ``msh``)
    The base model's own stream: CompressAI's ``MeanScaleHyperprior.compress`` and
    ``decompress`` exactly as CompressAI runs them (float32, its rANS coder), one setting.
    Stream: ``tag 0x4D, H, W (varints), 4 bytes of the weights' sha256, len(z) (varint), z,
    y``. This is the anchor for "BD-rate against the base model's own points" and for the
    finest-level comparison of PLONQ.

:class:`NaiveScalingLadder` (codec ``plonq-naive``)
    PLONQ's "Naive Scaling" variable rate with one model: for a scale factor ``s`` the latent
    is quantised as ``mu + s * round((y - mu) / s)`` and the integers are coded with the prior
    ``N(0, sigma / s)`` (CompressAI's integer table for the scale index of ``sigma / s``, coded
    by :mod:`plugins.learned.coding.table`); ``s = 1`` is the base model. Uses the same float64
    hyper path as PLONQ (:mod:`plugins.learned.model_io`). One complete stream per setting;
    settings are scale factors from coarse (low rate) to fine. Stream: ``tag 0x4E, H, W,
    sha256[:4], round(64 s) (varint), len(z), z, y``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from bench.codec import CorruptStream, RateLadderCodec, check_image
from plugins.learned.codec import OnBaseModel
from plugins.learned.coding import table as table_coder
from plugins.learned.coding.bits import Reader, put_varint
from plugins.learned.model_io import read_z
from plugins.learned.weights import DEFAULT_WEIGHTS, resolve

#: Naive Scaling factors, low rate first; 8, 4, 2, 1 are PLONQ's levels.
DEFAULT_SCALES = (8.0, 6.0, 4.0, 3.0, 2.0, 1.5, 1.0)
SCALE_UNITS = 64


class _LadderBase(OnBaseModel, RateLadderCodec):
    def __init__(self, weights: str = DEFAULT_WEIGHTS) -> None:
        self.weights_spec = str(weights)
        self.resolved = resolve(self.weights_spec)
        self._base = None

    def _read_header(self, data: bytes) -> tuple[Reader, int, int]:
        """Tag, size and weights check of a stream; :class:`~bench.CorruptStream` if wrong."""
        reader = Reader(bytes(data), "stream")
        height, width = self.read_image_header(reader)
        return reader, height, width


class BaseModelLadder(_LadderBase):
    """The base model's own non-progressive stream (CompressAI compress/decompress)."""

    name = "msh"
    tag = 0x4D
    version = "1"
    description = (
        "base MeanScaleHyperprior, CompressAI compress/decompress (float32, rANS), one point"
    )

    def settings(self) -> Sequence[Any]:
        return ["base"]

    def encode_at(self, image: np.ndarray, setting: Any = "base") -> bytes:
        check_image(image)
        if setting != "base":
            raise ValueError(f"msh has one setting, 'base', got {setting!r}")
        base = self.base
        torch = base._torch
        with torch.no_grad():
            enc = base.model.compress(base.to_tensor(image))
        y_bytes, z_bytes = bytes(enc["strings"][0][0]), bytes(enc["strings"][1][0])
        out = self.image_header(*image.shape[:2])
        put_varint(out, len(z_bytes))
        out += z_bytes
        return bytes(out) + y_bytes

    def decode(self, data: bytes) -> np.ndarray:
        reader, height, width = self._read_header(data)
        z_bytes = read_z(reader, self.base, height, width)
        y_bytes = bytes(reader.data[reader.pos :])
        base = self.base
        torch = base._torch
        with torch.no_grad():
            out = base.model.decompress([[y_bytes], [z_bytes]], base.hyper_shape(height, width))
            x_hat = out["x_hat"][0, :, :height, :width].clamp_(0, 1).mul_(255.0).round_()
        return np.ascontiguousarray(x_hat.to(torch.uint8).permute(1, 2, 0).numpy())


class NaiveScalingLadder(_LadderBase):
    """Naive Scaling: one model, the latent quantised with step ``s`` (see module doc)."""

    name = "plonq-naive"
    tag = 0x4E
    version = "2"  # 2: each table row coded with its own table (grouping bug of v1 fixed)
    description = (
        "Naive Scaling (PLONQ's single-model variable rate): mu + s*round((y-mu)/s), prior "
        "N(0, sigma/s), one complete stream per scale factor s"
    )

    def __init__(
        self, weights: str = DEFAULT_WEIGHTS, scales: Sequence[float] = DEFAULT_SCALES
    ) -> None:
        super().__init__(weights)
        units = [round(float(s) * SCALE_UNITS) for s in scales]
        if not units or any(u < SCALE_UNITS // 4 for u in units):
            raise ValueError("scales must be >= 0.25")
        if units != sorted(units, reverse=True) or len(set(units)) != len(units):
            raise ValueError("scales must decrease strictly (low rate first)")
        self.scales = tuple(u / SCALE_UNITS for u in units)

    def parameters(self) -> dict[str, Any]:
        return {**super().parameters(), "scales": list(self.scales)}

    def settings(self) -> Sequence[Any]:
        return list(self.scales)

    def _indexes(self, scales: np.ndarray, s: float) -> np.ndarray:
        base = self.base
        scaled = np.maximum(scales / s, base.scale_bound)
        return np.searchsorted(base.scale_table[:-1], scaled, side="left").astype(np.int32)

    def encode_at(self, image: np.ndarray, setting: Any) -> bytes:
        check_image(image)
        s = round(float(setting) * SCALE_UNITS) / SCALE_UNITS
        if s not in self.scales:
            raise ValueError(f"setting {setting!r} is not one of {self.scales}")
        base = self.base
        analysis = base.analyse(image)
        hyper = analysis.hyper
        symbols = np.rint((analysis.y - hyper.means) / s).astype(np.int32)
        indexes = self._indexes(hyper.scales, s)
        y_bytes = table_coder.encode(symbols, indexes, base.cdf, base.cdf_length, base.offset)
        out = self.image_header(*image.shape[:2])
        put_varint(out, round(s * SCALE_UNITS))
        put_varint(out, len(analysis.z_bytes))
        out += analysis.z_bytes
        return bytes(out) + bytes(y_bytes)

    def decode(self, data: bytes) -> np.ndarray:
        reader, height, width = self._read_header(data)
        units = reader.varint()
        if units < SCALE_UNITS // 4:
            raise CorruptStream(f"corrupt header: scale factor {units}/{SCALE_UNITS}")
        s = units / SCALE_UNITS
        z_bytes = read_z(reader, self.base, height, width)
        y_bytes = bytes(reader.data[reader.pos :])
        base = self.base
        hyper = base.hyper(z_bytes, base.hyper_shape(height, width))
        indexes = self._indexes(hyper.scales, s)
        values = table_coder.decode(y_bytes, indexes, base.cdf, base.cdf_length, base.offset)
        q = np.asarray(values, dtype=np.float64).reshape(hyper.means.shape)
        return base.synthesise(hyper.means + s * q, height, width)
