"""DeepHQ-MS: learned hierarchical quantizer with selective compression on the shared base.

After Lee, Jeong and Kim, "DeepHQ: Learned Hierarchical Quantizer for Progressive Deep Image
Coding" (arXiv 2408.12150, ACM TOMM 2025), written from the paper's description; none of the
authors' code is used. The base is the project's MeanScaleHyperprior
(:mod:`plugins.learned.model_io`), frozen; DeepHQ adds per-layer, per-channel quantization steps
and mask thresholds (:mod:`plugins.deephq.params`, trained by :mod:`plugins.deephq.train`). The
quantizer, the selection and the coder are in :mod:`plugins.deephq.coder`.

Stream layout (varints are LEB128)::

    tag 0x48 | H, W varints | base weights sha256[:4] | DeepHQ weights sha256[:4]
    | flags (bit 0: masks on; bits 1-2: reconstruction) | chunk size varint (x 64 bits)
    | len(z) varint | z (the hyper-latent, entropy bottleneck tables) | chunks ...

The header is everything up to the end of ``z``; a prefix that holds it decodes (every latent
element at its prior mean), and each complete chunk after it refines the latent.

Where this departs from the paper (documented choices)
    * The layers live on the base model's integer grid ``n = round(y - mu)``: layer steps are
      ``>= 1`` and the last layer's step is 1, so the full stream is the base model's own
      quantization (exact integer probabilities from its CDF tables, the same on every machine).
      The paper quantizes ``y - mu`` with a learned step at every layer, the last included.
    * The shipped steps are powers of two, learned per layer and channel (the coder takes any
      real step >= 1): power-of-two mid-tread grids nest exactly in one another on the integer
      grid, so no layer cuts a coarser bin into slivers. Real-valued learned steps measured
      +2 to +6 % BD-rate against PLONQ on Kodak images, power-of-two ones -22 % (step 2).
    * The mask generator is a learned threshold per layer and channel on the prior's scale index
      (an element is coded from the first layer whose threshold its index reaches); the paper
      generates masks with a small network from hyper-decoder features. Integer thresholds on
      integer indexes keep the selection bit-exact across machines and cost nothing at decode.
    * Step 3 fine-tunes the steps and the thresholds with the base frozen.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np

from bench.codec import (
    CodecInfo,
    CodecUnavailable,
    CorruptStream,
    ProgressiveCodec,
    WeightsInfo,
    check_image,
)
from bench.hashing import sha256_file
from plugins.deephq import coder
from plugins.deephq import params as dp
from plugins.learned.coding import latent as lc
from plugins.learned.coding.bits import Reader, put_varint
from plugins.learned.model_io import BaseModel, read_z
from plugins.learned.progressive import (
    CHUNK_UNIT_BITS,
    RECON_CODES,
    RECON_NAMES,
    Decoded,
    DecoderMemo,
    check_chunk_bits,
    library_versions,
    read_chunk_bits,
    read_image_header,
    write_image_header,
)

WEIGHTS_DIR = Path(__file__).resolve().parent / "weights"
DEFAULT_NAME = "deephq-msh-n128-m192-l1800"
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


def _as_bool(value: Any, name: str) -> bool:
    """A flag given as a bool or as text (``masks=false`` on the command line)."""
    if isinstance(value, str):
        text = value.strip().lower()
        if text not in ("true", "false", "1", "0", "yes", "no"):
            raise ValueError(f"{name} must be true or false, got {value!r}")
        return text in ("true", "1", "yes")
    return bool(value)


def check_bundled() -> None:
    """``check()`` of the plugin: the learned codecs' dependencies, the base weights and the
    shipped DeepHQ parameters (as for the other learned codecs, the check knows no ``weights=``
    parameter: it vouches for the default)."""
    from plugins.learned.weights import check_default_weights

    check_default_weights()
    resolve_params(DEFAULT_WEIGHTS)


class DeepHQCodec(ProgressiveCodec):
    """DeepHQ-MS (see module doc). ``masks=False`` is the ablation without selective coding."""

    name = "deephq"
    version = "1"
    description = (
        "DeepHQ-MS (Lee et al. 2024): learned per-layer, per-channel steps of an 8-layer "
        "hierarchical quantizer + selective compression, over the bundled MeanScaleHyperprior"
    )
    full_stream_psnr = None

    def __init__(
        self,
        weights: str = DEFAULT_WEIGHTS,
        masks: bool = True,
        chunk_bits: int = 1024,
        reconstruction: str = "mean",
        memo: bool = False,
    ) -> None:
        if reconstruction not in ("mean", "midpoint"):
            raise ValueError("reconstruction must be 'mean' or 'midpoint'")
        self.weights_spec = str(weights)
        self.path = resolve_params(self.weights_spec)
        try:
            self.params = dp.load(self.path)
        except ValueError as exc:
            raise CodecUnavailable(str(exc), TRAIN_FIX) from exc
        self.sha256 = sha256_file(self.path)
        self.base_spec = self.params.meta.get("base_weights", "")
        self.masks = _as_bool(masks, "masks")
        self.memo = _as_bool(memo, "memo")
        self._memo_hyper = DecoderMemo(self.memo)
        self._memo_image = DecoderMemo(self.memo)
        self.chunk_bits = check_chunk_bits(chunk_bits)
        self.reconstruction = reconstruction
        self._base: BaseModel | None = None
        self._ctx: coder.CoderContext | None = None

    @property
    def base(self) -> BaseModel:
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

    def context(self, masks: bool) -> coder.CoderContext:
        base = self.base
        params = self.params if masks else self.params.without_masks()
        return coder.CoderContext(
            cdf=np.asarray(base.cdf, np.int64),
            c=-np.asarray(base.offset, np.int64),
            steps=params.steps,
            mask_index_threshold=params.mask_index_threshold,
            sigma=np.asarray(base.scale_table, np.float64),
        )

    def parameters(self) -> dict[str, Any]:
        out = {
            "weights": self.weights_spec,
            "masks": self.masks,
            "chunk_bits": self.chunk_bits,
            "reconstruction": self.reconstruction,
            "layers": self.params.layers,
            "sliver_fraction": coder.SLIVER_FRACTION,
        }
        if self.memo:
            out["memo"] = True
        return out

    def added_parameters(self) -> dict[str, int]:
        """Learned values DeepHQ adds over the base: steps of the ``L - 1`` learned layers and,
        when trained, one mask threshold per layer and channel."""
        out = {"steps": int(self.params.steps[:-1].size)}
        if np.any(self.params.mask_index_threshold):
            out["mask thresholds"] = int(self.params.mask_index_threshold.size)
        return out

    def info(self) -> CodecInfo:
        base = self.base
        added = self.added_parameters()
        side = dp.read_sidecar(self.path) or {}
        trained = side.get("training", {})
        facts = "; ".join(
            f"{k}: {v.get('iterations')} iterations, {v.get('train_seconds', 0) / 60:.0f} min"
            for k, v in sorted(trained.items())
        )
        description = (
            f"DeepHQ parameters ({self.path.name}, sha256 {self.sha256[:12]}...) trained by "
            f"`bench train deephq` on the frozen base ({facts or 'no training record'}); adds "
            f"{sum(added.values())} parameters ({', '.join(f'{v} {k}' for k, v in added.items())})"
            f"; base: {base.resolved.description}. NOT the DeepHQ paper's weights"
        )
        return CodecInfo(
            name=self.name,
            version=self.version,
            description=self.description,
            parameters={**self.parameters(), "added_parameters": added},
            num_parameters=base.num_parameters + sum(added.values()),
            weights_bytes=base.resolved.weights_bytes + self.path.stat().st_size,
            weights=WeightsInfo(
                source="bundled" if self.weights_spec.startswith("bundled:") else "user",
                path=str(self.path),
                sha256=self.sha256,
                description=description,
                base_kodak=base.resolved.info().base_kodak,
            ),
            device="cpu",
            external=library_versions(),
            parameter_groups={"base": base.num_parameters, **added},
        )

    # -- coding -----------------------------------------------------------------------------

    def _order(self, hyper) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        order = lc.refinement_order(hyper.indexes)
        idx = hyper.indexes.reshape(-1).astype(np.int64)[order]
        plane = hyper.indexes.shape[1] * hyper.indexes.shape[2]
        return order, idx, order // plane

    def encode(self, image: np.ndarray) -> bytes:
        return self.encode_with_stats(image)[0]

    def encode_with_stats(self, image: np.ndarray) -> tuple[bytes, lc.CoderStats]:
        check_image(image)
        base = self.base
        height, width = image.shape[:2]
        analysis = base.analyse(image)
        hyper = analysis.hyper
        order, idx, ch = self._order(hyper)
        fine = np.rint(analysis.y - hyper.means).reshape(-1).astype(np.int64)[order]
        body, stats = coder.encode(
            self.context(self.masks), fine, idx, ch, self.chunk_bits * lc.UNITS_PER_BIT
        )
        out = write_image_header(TAG, height, width, base)
        out += bytes.fromhex(self.sha256[:8])
        out.append(int(self.masks) | RECON_CODES[self.reconstruction] << 1)
        put_varint(out, self.chunk_bits // CHUNK_UNIT_BITS)
        put_varint(out, len(analysis.z_bytes))
        out += analysis.z_bytes
        return bytes(out) + body, stats

    def decode(self, prefix: bytes) -> np.ndarray:
        return self.decode_full(prefix).image

    def decode_full(self, prefix: bytes) -> Decoded:
        """The image, the decoder's latent state (:class:`coder.DecodedLatent`), the header size
        and a time split (seconds)."""
        t0 = time.perf_counter()
        prefix = bytes(prefix)
        reader = Reader(prefix)
        base = self.base
        height, width = read_image_header(reader, TAG, self.name, base)
        if reader.take(4).hex() != self.sha256[:8]:
            raise CorruptStream(
                "stream made with other DeepHQ weights; decode with the same weights"
            )
        flags = reader.byte()
        recon = RECON_NAMES.get(flags >> 1)
        if recon not in ("mean", "midpoint") or flags >> 3:
            raise CorruptStream(f"corrupt header: flags {flags:#x}")
        chunk_bits = read_chunk_bits(reader)
        z_bytes = read_z(reader, base, height, width)
        header = prefix[: reader.pos]
        cached = self._memo_hyper.get(header)
        if cached is None:
            hyper = base.hyper(z_bytes, base.hyper_shape(height, width))
            cached = (hyper, *self._order(hyper))
            self._memo_hyper.put(header, cached)
        hyper, order, idx, ch = cached
        t1 = time.perf_counter()
        ctx = self.context(bool(flags & 1))
        state = coder.decode(ctx, prefix, reader.pos, idx, ch, chunk_bits * lc.UNITS_PER_BIT)
        t2 = time.perf_counter()
        image = self._memo_image.get(prefix[: state.end])
        if image is None:
            rel = coder.reconstruct(ctx, state.elements, recon)
            y_hat = np.empty(rel.size, np.float64)
            y_hat[order] = rel
            y_hat = y_hat.reshape(hyper.means.shape) + hyper.means
            image = base.synthesise(y_hat, height, width)
            self._memo_image.put(prefix[: state.end], image)
        return Decoded(
            image=image,
            state=state,
            header_bytes=len(header),
            fine_symbols=int(idx.size),
            seconds={
                "header+z+hyper": t1 - t0,
                "latent": t2 - t1,
                "reconstruction+synthesis": time.perf_counter() - t2,
            },
        )
