"""The base model as the learned codecs use it: image <-> latents, the hyper path, byte helpers.

:class:`BaseModel` holds the transforms of a MeanScaleHyperprior (:mod:`plugins.learned.nets`:
CompressAI's layers rebuilt in plain torch from its state dict, bit-identical, without the
5-second compressai import) and its integer entropy-coder tables, loaded through
:mod:`plugins.learned.weights`. It exposes the steps the learned codecs share:

* :meth:`BaseModel.analyse`: pad the image to a multiple of 64 (edge replication, as
  :func:`plugins.learned.training.evaluation.pad_to_multiple`), ``y = g_a(x)``, ``z = h_a(y)``; the
  hyper-latent's integers ``round(z - medians)`` coded with the entropy bottleneck's own
  per-channel integer tables (:mod:`plugins.learned.coding.table`, a range coder in place of
  CompressAI's rANS: same probabilities, within a few bytes of the same size); then the hyper
  path of :meth:`BaseModel.hyper` on the decoded ``z_hat``.
* :meth:`BaseModel.hyper`: ``z_hat`` -> ``h_s`` -> prior means and scales, and the scale
  *indexes*. ``h_s`` runs in **float64** on a float64 copy of its (float32) weights; the index
  of a scale is ``searchsorted(scale_table[:-1], scale)``, exactly CompressAI's
  ``GaussianConditional.build_indexes`` (lower bound 0.11 included). Everything that decides
  how the decoder parses the stream depends on the latents only through these integer indexes
  (see :mod:`plugins.learned.coding.latent`), so an index that differs between encoder and
  decoder is the one way floating point can corrupt a stream. Both sides run the same code on
  the same bytes, so on one machine they agree; across machines, different convolution kernels
  change ``h_s``'s output in the last bits. In float32 those differences are about 1e-6
  relative, and with 64 log-spaced table entries about 16 * 1e-6 of all elements (several per
  Kodak image) lie that close to a table boundary; in float64 the differences are about 1e-14
  and the expected number of flips per Kodak image is about 1e-7. The cost is about 0.06 s per
  Kodak decode (measured). CompressAI itself uses float32 here.
* :meth:`BaseModel.synthesise`: ``x_hat = g_s(y_hat)`` (float32, channels_last:
  :mod:`plugins.learned.inference`), cropped and rounded to uint8.

* :func:`check_z_length` (:meth:`BaseModel.check_z_length`; HC's runtime checks its own ``z``
  with it too): the decoder's check of a header's size against the length of its ``z`` field,
  before anything sized by the header is allocated: every ``z`` element costs at least
  ``-log2`` of its table's largest probability (:func:`min_z_bits_per_position`: 107 bits per
  64 x 64 block with the bundled weights), so ``z`` bounds the image size a stream can state.

The stream's byte helpers are in :mod:`plugins.learned.coding.bits`.
"""

from __future__ import annotations

import copy
import threading
from dataclasses import dataclass
from typing import Any

import numpy as np

from bench.codec import CorruptStream
from plugins.learned.coding import table as table_coder
from plugins.learned.coding.bits import Reader
from plugins.learned.coding.latent import FineGrid, fine_grid
from plugins.learned.weights import ResolvedWeights, load_model, load_state, resolve

PAD_MULTIPLE = 64
#: Bits a range-coded stream may save on its lower bound (coder state, stripped zero bytes).
Z_BOUND_SLACK_BITS = 128


# --------------------------------------------------------------------------------------------
# the model


@dataclass
class HyperOutput:
    """What the hyper path gives both sides: per-element prior and scale index (C, H, W)."""

    means: np.ndarray  # float64 (C, h, w)
    scales: np.ndarray  # float64 (C, h, w), lower-bounded at the table's first value
    indexes: np.ndarray  # int16 (C, h, w)


@dataclass
class Analysis:
    """Encoder-side results of :meth:`BaseModel.analyse`."""

    y: np.ndarray  # float64 (C, h, w)
    z_bytes: bytes
    z_shape: tuple[int, int]
    hyper: HyperOutput
    image_size: tuple[int, int]


def _is_parameter(key: str) -> bool:
    """Learned parameters of MeanScaleHyperprior (buffers and tables excluded)."""
    if key.startswith(("g_a.", "g_s.", "h_a.", "h_s.")):
        return key.endswith((".weight", ".bias", ".beta", ".gamma"))
    if key.startswith("entropy_bottleneck."):
        return key.split(".")[1] in ("matrices", "biases", "factors", "quantiles") or key.split(
            "."
        )[1].startswith(("_matrix", "_bias", "_factor"))
    return False


def hyper_shape(height: int, width: int) -> tuple[int, int]:
    """Spatial shape of ``z`` for an image of ``height x width`` (after padding)."""
    return -(-height // PAD_MULTIPLE), -(-width // PAD_MULTIPLE)


def min_z_bits_per_position(z_cdf: np.ndarray, z_cdf_length: np.ndarray) -> float:
    """The fewest bits one position of ``z`` costs: over the channels' integer tables (CDF rows
    ``z_cdf`` of ``z_cdf_length`` entries), the sum of ``-log2`` of each largest probability."""
    bits = 0.0
    for row, length in zip(z_cdf, z_cdf_length, strict=True):
        freq = np.diff(row[: int(length)]).astype(np.float64)
        bits -= float(np.log2(freq.max() / freq.sum()))
    return bits


def check_z_length(z_len: int, height: int, width: int, min_bits_per_position: float) -> None:
    """:class:`~bench.CorruptStream` unless ``z_len`` bytes can hold the hyper-latent of a
    ``height x width`` image, each position costing at least ``min_bits_per_position`` (see
    module doc; 2 % and :data:`Z_BOUND_SLACK_BITS` spare)."""
    positions = np.prod(hyper_shape(height, width), dtype=np.float64)
    least = 0.98 * min_bits_per_position * positions - Z_BOUND_SLACK_BITS
    if 8 * z_len < least:
        raise CorruptStream(
            f"corrupt header: {z_len} bytes of hyper-latent cannot hold a {height}x{width} "
            f"image (at least {max(least, 0) / 8:.0f} bytes)"
        )


_WRAPPERS: dict[str, BaseModel] = {}
_WRAP_LOCK = threading.Lock()


class BaseModel:
    """The base model's transforms and tables (see module doc), shared per weights file."""

    def __init__(self, resolved: ResolvedWeights) -> None:
        import torch

        from plugins.learned import nets
        from plugins.learned.inference import prepare_for_inference

        self.resolved = resolved
        self._torch = torch
        self.nets, self.tables = nets.build(load_state(resolved))
        with torch.no_grad():
            self.h_s64 = copy.deepcopy(self.nets.h_s).double().eval()
        self.g_s_decode = prepare_for_inference(self.nets.g_s)
        t = self.tables
        self.scale_table = t.scale_table
        self.scale_bound = t.scale_bound
        self.cdf = t.y_cdf
        self.cdf_length = t.y_cdf_length
        self.offset = t.y_offset
        self.precision = 16
        self.num_parameters = int(
            sum(v.numel() for k, v in load_state(resolved).items() if _is_parameter(k))
        )
        self.sha_prefix = bytes.fromhex(resolved.sha256[:8])
        self.N = int(self.nets.N)
        self.M = int(self.nets.M)
        self._grid = None
        self._compressai_model = None
        self.min_z_bits_per_position = min_z_bits_per_position(t.z_cdf, t.z_cdf_length)

    @property
    def grid(self) -> FineGrid:
        """The flattened fine integers and frequencies of the scale table (cached)."""
        if self._grid is None:
            self._grid = fine_grid(self.cdf, self.cdf_length, self.offset)
        return self._grid

    @property
    def model(self):
        """CompressAI's own ``MeanScaleHyperprior`` (imports compressai; ``msh`` only)."""
        if self._compressai_model is None:
            self._compressai_model = load_model(self.resolved)
        return self._compressai_model

    @classmethod
    def get(cls, spec: str | None) -> BaseModel:
        """The shared :class:`BaseModel` of a weights spec (resolved and cached by sha256)."""
        resolved = resolve(spec)
        with _WRAP_LOCK:
            wrapper = _WRAPPERS.get(resolved.sha256)
        if wrapper is None:
            wrapper = cls(resolved)
            with _WRAP_LOCK:
                wrapper = _WRAPPERS.setdefault(resolved.sha256, wrapper)
        return wrapper

    # -- image <-> tensor ---------------------------------------------------------------------

    def to_tensor(self, image: np.ndarray):
        """``(H, W, 3)`` uint8 -> ``(1, 3, H', W')`` float32 in [0, 1], padded to 64 by edge
        replication."""
        torch = self._torch
        import torch.nn.functional as F

        x = torch.from_numpy(np.array(image, dtype=np.uint8)).permute(2, 0, 1).float().div_(255.0)
        x = x[None]
        h, w = image.shape[:2]
        ph, pw = (-h) % PAD_MULTIPLE, (-w) % PAD_MULTIPLE
        if ph or pw:
            x = F.pad(x, (0, pw, 0, ph), mode="replicate")
        return x

    @staticmethod
    def latent_shape(height: int, width: int) -> tuple[int, int]:
        """Spatial shape of ``y`` for an image of ``height x width`` (after padding)."""
        return -(-height // PAD_MULTIPLE) * 4, -(-width // PAD_MULTIPLE) * 4

    hyper_shape = staticmethod(hyper_shape)

    def check_z_length(self, z_len: int, height: int, width: int) -> None:
        """:func:`check_z_length` with this model's tables."""
        check_z_length(z_len, height, width, self.min_z_bits_per_position)

    # -- encoder ------------------------------------------------------------------------------

    def analyse(self, image: np.ndarray) -> Analysis:
        torch = self._torch
        t = self.tables
        with torch.no_grad():
            x = self.to_tensor(image)
            y = self.nets.g_a(x)
            z = self.nets.h_a(y)[0]
            medians = torch.from_numpy(t.z_medians)[:, None, None]
            symbols = torch.round(z - medians).to(torch.int64).numpy()
        z_shape = (int(z.shape[-2]), int(z.shape[-1]))
        rows = np.broadcast_to(np.arange(self.N)[:, None, None], symbols.shape)
        z_bytes = table_coder.encode(symbols, rows, t.z_cdf, t.z_cdf_length, t.z_offset)
        hyper = self.hyper(z_bytes, z_shape)
        return Analysis(
            y=y[0].double().numpy(),
            z_bytes=z_bytes,
            z_shape=z_shape,
            hyper=hyper,
            image_size=(int(image.shape[0]), int(image.shape[1])),
        )

    # -- both sides ---------------------------------------------------------------------------

    def decode_z(self, z_bytes: bytes, z_shape: tuple[int, int]):
        """``z_hat`` (1, N, h, w) float32: the decoded integers plus the medians, as CompressAI's
        entropy bottleneck dequantises."""
        t = self.tables
        shape = (self.N, *z_shape)
        rows = np.broadcast_to(np.arange(self.N)[:, None, None], shape)
        symbols = table_coder.decode(z_bytes, rows, t.z_cdf, t.z_cdf_length, t.z_offset)
        torch = self._torch
        z_hat = torch.from_numpy(symbols.reshape(shape)).to(torch.float32)
        z_hat += torch.from_numpy(t.z_medians)[:, None, None]
        return z_hat[None]

    def hyper(self, z_bytes: bytes, z_shape: tuple[int, int]) -> HyperOutput:
        """Decode ``z`` and run ``h_s`` in float64; scale indexes as CompressAI builds them."""
        torch = self._torch
        z_hat = self.decode_z(z_bytes, z_shape)
        with torch.no_grad():
            params = self.h_s64(z_hat.double())[0]
        scales, means = params.chunk(2, 0)
        scales = np.maximum(scales.numpy(), self.scale_bound)
        indexes = np.searchsorted(self.scale_table[:-1], scales, side="left").astype(np.int16)
        return HyperOutput(means=means.numpy().copy(), scales=scales, indexes=indexes)

    def synthesise(self, y_hat: np.ndarray, height: int, width: int) -> np.ndarray:
        """``g_s`` of a ``(C, h, w)`` latent, cropped to ``height x width``, rounded to uint8."""
        from plugins.learned.inference import inference_input

        torch = self._torch
        with torch.no_grad():
            x_hat = self.g_s_decode(inference_input(y_hat))[0, :, :height, :width]
            x_hat = x_hat.clamp_(0, 1).mul_(255.0).round_().to(torch.uint8)
        return np.ascontiguousarray(x_hat.permute(1, 2, 0).numpy())

    def weights_info(self):
        return self.resolved.info()

    def describe(self) -> dict[str, Any]:
        return {
            "weights": self.resolved.spec,
            "weights_sha256": self.resolved.sha256,
            "N": self.N,
            "M": self.M,
        }


def read_z(reader: Reader, base: BaseModel, height: int, width: int) -> bytes:
    """The length-prefixed hyper-latent bytes; :class:`~bench.CorruptStream` when the length
    cannot hold the ``z`` of a ``height x width`` image (:meth:`BaseModel.check_z_length`)."""
    z_len = reader.varint()
    base.check_z_length(z_len, height, width)
    return reader.take(z_len)
