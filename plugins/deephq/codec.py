"""DeepHQ-MS: learned hierarchical quantizer with selective compression on the shared base.

After Lee, Jeong and Kim, "DeepHQ: Learned Hierarchical Quantizer for Progressive Deep Image
Coding" (arXiv 2408.12150, ACM TOMM 2025), written from the paper's description; none of the
authors' code is used. The base is the project's MeanScaleHyperprior
(:mod:`plugins.learned.model_io`), frozen; DeepHQ adds per-layer, per-channel quantization steps
and mask thresholds (:mod:`plugins.deephq.params`, trained by :mod:`plugins.deephq.train`). The
quantizer, the selection and the coder are in :mod:`plugins.deephq.coder`.

Stream layout (varints are LEB128)::

    tag 0x48 | H, W varints | base weights sha256[:4] | DeepHQ weights sha256[:4]
    | flags (bit 0: masks on; bits 1-2: reconstruction; bit 3: slope order)
    | chunk size varint (x 64 bits)
    | len(z) varint | z (the hyper-latent, entropy bottleneck tables) | chunks ...

The header is everything up to the end of ``z``; a prefix that holds it decodes (every latent
element at its prior mean), and each complete chunk after it refines the latent.

Where this departs from the paper (documented choices)
    * The layers live on the base model's integer grid ``n = round(y - mu)``: layer steps are
      ``>= 1`` and the last layer's step is 1, so the full stream is the base model's own
      quantization (exact integer probabilities from its CDF tables, the same on every machine).
      The paper quantizes ``y - mu`` with a learned step at every layer, the last included.
    * The shipped steps are powers of two, learned per layer and channel (the coder takes any
      real step >= 1): a power-of-two mid-tread grid's edges fall at the middles of the next
      finer grid's bins, so a layer cuts a coarser bin into pieces at least half its own step
      wide (e.g. steps 8 then 4: ``-4..3`` into ``-4..-3``, ``-2..1``, ``2..3``), never into
      thin slivers. Real-valued learned steps measured
      +2 to +6 % BD-rate against PLONQ on Kodak images, power-of-two ones -22 % (step 2).
    * The mask generator is a learned threshold per layer and channel on the prior's scale index
      (an element is coded from the first layer whose threshold its index reaches); the paper
      generates masks with a small network from hyper-decoder features. Integer thresholds on
      integer indexes keep the selection bit-exact across machines and cost nothing at decode.
    * Step 3 fine-tunes the steps and the thresholds with the base frozen.
    * Order (``order``, :mod:`plugins.deephq.coder`). The paper's layers are decodable points;
      a truncated stream stops inside one, so what is sent first matters. ``order="scale"``
      keeps the layers (and the masks) and refines within a sub-pass by the prior's scale
      index, as PLONQ does. ``order="slope"`` (the default) drops the layer boundaries and the
      masks: passes of falling thresholds code each element's next level when its expected
      pixel-error decrease per expected bit (the prior's integer frequencies, the element's
      channel gain from the weights file) reaches the threshold, the R-D order of embedded
      coders (EBCOT's passes). Both sides compute the order from the header and the decoded
      symbols alone, in exact or IEEE-754 elementwise arithmetic.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from bench.codec import CodecUnavailable, CorruptStream, WeightsInfo
from bench.hashing import sha256_file
from plugins.deephq import coder
from plugins.deephq import params as dp
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

WEIGHTS_DIR = Path(__file__).resolve().parent / "weights"
DEFAULT_NAME = "deephq-msh-n128-m192-l1100-it398250"
DEFAULT_WEIGHTS = f"bundled:{DEFAULT_NAME}"
TRAIN_FIX = (
    "train and export DeepHQ's parameters: `bench train deephq --step 2 ...`, then "
    "`--step 3 --init ...` and `--export FILE.safetensors` (see plugins/deephq/train.py)"
)
TAG = 0x48


def resolve_params(spec: str) -> Path:
    """``bundled:NAME`` (``plugins/deephq/weights/NAME.safetensors``) or a file path."""
    spec = str(spec)
    if spec.startswith("bundled:"):
        name = spec.split(":", 1)[1]
        if not name or "/" in name or name.startswith("."):
            raise CodecUnavailable(f"invalid bundled DeepHQ weights name {name!r}", TRAIN_FIX)
        path = WEIGHTS_DIR / f"{name}.safetensors"
    else:
        path = Path(spec).expanduser()
    if not path.is_file():
        raise CodecUnavailable(f"DeepHQ weights {spec} not found ({path})", TRAIN_FIX)
    return path


def check_bundled() -> None:
    """``check()`` of the plugin: the learned codecs' dependencies, the base weights and the
    shipped DeepHQ parameters (as for the other learned codecs, the check knows no ``weights=``
    parameter: it vouches for the default)."""
    from plugins.learned.weights import check_default_weights

    check_default_weights()
    resolve_params(DEFAULT_WEIGHTS)


@dataclass(frozen=True)
class DeepHQCoding(ChunkedCoding):
    """The :class:`~plugins.learned.codec.LatentCoding` of DeepHQ's layers (and masks)."""

    ctx: coder.CoderContext
    reconstruction: str
    chunk_bits: int
    layouts: coder.LayoutCache | None = None  # decoder: the layout of recent stream headers

    def encode(
        self, fine: np.ndarray, idx: np.ndarray, channel: np.ndarray
    ) -> tuple[bytes, lc.CoderStats]:
        return coder.encode(self.ctx, fine, idx, channel, self.chunk_units)

    def decode(
        self, prefix: bytes, start: int, idx: np.ndarray, channel: np.ndarray
    ) -> coder.DecodedLatent:
        """``prefix[:start]`` is the stream header: it determines ``idx`` and ``channel``, so
        their layout is looked up by it."""
        layout = None
        if self.layouts is not None:
            layout = self.layouts.get(prefix[:start], self.ctx, idx, channel)
        return coder.decode(self.ctx, prefix, start, idx, channel, self.chunk_units, layout)

    def reconstruct(self, state: coder.DecodedLatent) -> np.ndarray:
        return state.reconstruct(self.reconstruction)


@dataclass(frozen=True)
class DeepHQFields:
    """The header fields of a DeepHQ stream."""

    masks: bool
    reconstruction: str
    chunk_bits: int
    order: str


class DeepHQCodec(LearnedProgressiveCodec):
    """DeepHQ-MS (see module doc). ``order="scale"`` codes by layers (with the file's masks
    unless ``masks=False``); ``order="slope"`` ignores the masks."""

    name = "deephq"
    tag = TAG
    version = "1"
    description = (
        "DeepHQ-MS (Lee et al. 2024): per-layer, per-channel steps of an 8-layer hierarchical "
        "quantizer, coded in R-D slope order (or by layers with selective compression), over "
        "the bundled MeanScaleHyperprior"
    )
    full_stream_psnr = None

    def __init__(
        self,
        weights: str = DEFAULT_WEIGHTS,
        masks: bool = True,
        chunk_bits: int = 1024,
        reconstruction: str = "mean",
        memo: bool = False,
        order: str = coder.SLOPE_ORDER,
    ) -> None:
        check_reconstruction(reconstruction, ("mean", "midpoint"))
        if order not in coder.ORDERS:
            raise ValueError(f"order must be one of {', '.join(coder.ORDERS)}")
        self.order = order
        self.weights_spec = str(weights)
        self.path = resolve_params(self.weights_spec)
        try:
            self.params = dp.load(self.path)
        except ValueError as exc:
            raise CodecUnavailable(str(exc), TRAIN_FIX) from exc
        self.sha256 = sha256_file(self.path)
        self.base_spec = self.params.meta.get("base_weights", "")
        self.masks = bool(masks)
        self._contexts: dict[tuple[bool, str], coder.CoderContext] = {}
        self._layouts = coder.LayoutCache()
        super().__init__(chunk_bits=chunk_bits, reconstruction=reconstruction, memo=memo)

    @property
    def base(self) -> BaseModel:
        """The base model the parameters were trained on (checked by sha256 and channels)."""
        if self._base is None:
            base = BaseModel.get(self.base_spec or None)
            if base.resolved.sha256 != self.params.base_sha256:
                raise CodecUnavailable(
                    f"{self.path.name} was trained on base weights sha256 "
                    f"{self.params.base_sha256[:12]}..., {base.resolved.spec} has "
                    f"{base.resolved.sha256[:12]}...",
                    TRAIN_FIX,
                )
            if self.params.channels != base.M:
                raise CodecUnavailable(f"{self.path.name} has {self.params.channels} channels")
            self._base = base
        return self._base

    def context(self, masks: bool, order: str) -> coder.CoderContext:
        """The coder's context with or without selection, in ``order`` (made once per codec
        and flags)."""
        if (masks, order) not in self._contexts:
            base = self.base
            plain = not masks or order == coder.SLOPE_ORDER  # the slope order has no masks
            params = self.params.without_masks() if plain else self.params
            self._contexts[masks, order] = coder.CoderContext(
                cdf=np.asarray(base.cdf, np.int64),
                c=-np.asarray(base.offset, np.int64),
                steps=params.steps,
                mask_index_threshold=params.mask_index_threshold,
                sigma=np.asarray(base.scale_table, np.float64),
                grid=params.grid,
                order=order,
                channel_gain=params.channel_gain,
            )
        return self._contexts[masks, order]

    def parameters(self) -> dict[str, Any]:
        out = {
            "weights": self.weights_spec,
            "masks": self.masks,
            "chunk_bits": self.chunk_bits,
            "reconstruction": self.reconstruction,
            "layers": self.params.layers,
            "sliver_fraction": coder.SLIVER_FRACTION,
            "grid": self.params.grid,
            "order": self.order,
        }
        if self.order == coder.SLOPE_ORDER:
            out["channel_gains"] = self.params.channel_gain is not None
        if self.memo:
            out["memo"] = True
        return out

    def added_parameters(self) -> dict[str, int]:
        """Values DeepHQ adds over the base and this order uses: steps of the ``L - 1`` upper
        layers; by layers, when trained, one mask threshold per layer and channel; in slope
        order, when measured, one gain per channel."""
        out = {"steps": int(self.params.steps[:-1].size)}
        if self.order == coder.SCALE_ORDER and np.any(self.params.mask_index_threshold):
            out["mask thresholds"] = int(self.params.mask_index_threshold.size)
        if self.order == coder.SLOPE_ORDER and self.params.channel_gain is not None:
            out["channel gains"] = int(self.params.channel_gain.size)
        return out

    def weights_bytes(self) -> int:
        return self.base.resolved.weights_bytes + self.path.stat().st_size

    def weights_info(self) -> WeightsInfo:
        base = self.base
        added = self.added_parameters()
        side = dp.read_sidecar(self.path) or {}
        trained = side.get("training", {})
        facts = "; ".join(
            f"{k}: {v.get('iterations')} iterations, {v.get('train_seconds', 0) / 60:.0f} min"
            for k, v in sorted(trained.items())
        )
        origin = (
            f"trained by `bench train deephq` on the frozen base ({facts})"
            if facts
            else f"made by `bench train deephq` ({side.get('steps', 'no training record')})"
        )
        description = (
            f"DeepHQ parameters ({self.path.name}, sha256 {self.sha256[:12]}...) {origin}; adds "
            f"{sum(added.values())} parameters ({', '.join(f'{v} {k}' for k, v in added.items())})"
            f"; base: {base.resolved.description}. NOT the DeepHQ paper's weights"
        )
        return WeightsInfo(
            source="bundled" if self.weights_spec.startswith("bundled:") else "user",
            path=str(self.path),
            sha256=self.sha256,
            description=description,
            base_kodak=base.resolved.info().base_kodak,
        )

    # -- the latent strategy of LearnedProgressiveCodec -------------------------------------

    def encode_fields(
        self, base: BaseModel, analysis: Analysis, fine: np.ndarray, idx: np.ndarray
    ) -> tuple[bytes, DeepHQCoding]:
        out = bytearray.fromhex(self.sha256[:8])
        slope = self.order == coder.SLOPE_ORDER
        out.append(int(self.masks) | RECON_CODES[self.reconstruction] << 1 | slope << 3)
        put_chunk_bits(out, self.chunk_bits)
        coding = DeepHQCoding(
            self.context(self.masks, self.order), self.reconstruction, self.chunk_bits
        )
        return bytes(out), coding

    def read_fields(self, reader: Reader, base: BaseModel) -> DeepHQFields:
        if reader.take(4).hex() != self.sha256[:8]:
            raise CorruptStream(
                "stream made with other DeepHQ weights; decode with the same weights"
            )
        flags = reader.byte()
        recon = RECON_NAMES.get(flags >> 1 & 3)
        if recon not in ("mean", "midpoint") or flags >> 4:
            raise CorruptStream(f"corrupt header: flags {flags:#x}")
        order = coder.SLOPE_ORDER if flags >> 3 & 1 else coder.SCALE_ORDER
        return DeepHQFields(bool(flags & 1), recon, read_chunk_bits(reader), order)

    def latent_coding(self, fields: DeepHQFields, base: BaseModel) -> DeepHQCoding:
        return DeepHQCoding(
            self.context(fields.masks, fields.order),
            fields.reconstruction,
            fields.chunk_bits,
            self._layouts,
        )
