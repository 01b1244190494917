"""HC's progressive codec: header and hyper-latent, then ``y4``, ``y3``, ``y2``, each refined
through the shared nested-interval latent coder (:mod:`plugins.learned.coding.latent`).

Stream layout (varints are LEB128)::

    tag            1 byte   0x43, format 1
    H, W           varints  image size
    weights        4 bytes  first 4 bytes of the HC weights file's sha256 (checked on decode)
    reconstruction 1 byte   0 = Gaussian conditional mean inside an interval, 1 = midpoint
    chunk          varint   chunk size in units of 64 bits of expected cost
    levels         1 byte   nested levels per latent: 1 = by depth only, L = PLONQ's dead-zone
                            steps 2**(L-1), ..., 2, 1 inside every latent
    len(z), z      varint + the hyper-latent (the entropy bottleneck's integer tables)
    y4 chunks ...           the deepest latent (prior: the hyperprior)
    y3 chunks ...           prior N(mu3, sigma3) from the decoded y4
    y2 chunks ...           prior N(mu2, sigma2) from the decoded y4 and y3

Each latent is the fine integers ``n_i = round(y_i - mu_i)`` (residual quantisation), coded by
:func:`~plugins.learned.coding.latent.encode_latent` level by level, elements in decreasing
order of their prior scale, in self-delimiting chunks: any prefix decodes every complete chunk
and nothing else. A latent's chunks start where the deeper latent's end, so its prior (which
needs the deeper latents' exact integers) is computed only once they are complete; the
decoder parses nothing of ``y3`` before ``y4`` is complete.

Reconstruction of a prefix: ``y4_hat = mu4 + r4`` (``r4`` from the coder: the integer when
known, else the reconstruction of its current interval, else, before any chunk, 0); the prior
networks then give ``mu3`` from ``y4_hat`` and ``mu2`` from ``(y4_hat, y3_hat)``, and a latent
with no complete chunk decodes to that conditional mean (``y3_hat = mu3``, ``y2_hat = mu2``);
one partly received decodes like ``y4``. While ``y4`` is incomplete, the conditional means of
the shallower latents are computed from its current estimate (they then only shape pixels,
never parsing).

``nested=False`` (one level) sends each element's integer at once: progression by depth only.
``nested=True`` (default) adds the nested refinement inside every latent.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import numpy as np

from bench.codec import CorruptStream, ProgressiveCodec, check_image
from plugins.hc.flops import hc_flops
from plugins.hc.runtime import HCRuntime, Prior
from plugins.hc.weights import DEFAULT_WEIGHTS, resolve
from plugins.learned.codec import DecoderMemo, OnBaseModel
from plugins.learned.coding import latent as lc
from plugins.learned.coding.bits import Reader, put_varint
from plugins.learned.coding.header import (
    RECON_CODES,
    RECON_NAMES,
    check_chunk_bits,
    check_reconstruction,
    put_chunk_bits,
    read_chunk_bits,
)
from plugins.learned.levels import MAX_LEVELS, PlonqLevels
from plugins.learned.nested import cached_tables

#: Stream tag (the learned codecs' tags: msh 0x4D, plonq-naive 0x4E, PLONQ 0x51, DZQ 0x44,
#: DeepHQ 0x48).
TAG = 0x43
LATENT_NAMES = ("y4", "y3", "y2")


@dataclass
class DecodedHC:
    """A decoded prefix with what the decoder learned (for tests and benchmarks)."""

    image: np.ndarray
    #: Per latent (deepest first): "none", "partial" or "complete".
    received: tuple[str, str, str]
    latents: tuple[np.ndarray, np.ndarray, np.ndarray]  # y4_hat, y3_hat, y2_hat (float64)
    header_bytes: int
    seconds: dict[str, float]


def _order(prior: Prior) -> tuple[np.ndarray, np.ndarray]:
    """Refinement order of a latent's elements and their scale indexes in that order."""
    order = lc.refinement_order(prior.indexes)
    return order, prior.indexes.reshape(-1).astype(np.int64)[order]


class HCCodec(OnBaseModel, ProgressiveCodec):
    """HC, progressive by depth (see module doc). The learned codecs' shared base
    (:class:`~plugins.learned.codec.OnBaseModel`) gives the image header and ``info()``; its
    "base model" is HC's own (:class:`~plugins.hc.runtime.HCRuntime`), not the mean-scale
    base, and the latent strategy (three latents, deepest first) is this class's. It does not
    sit on :class:`~plugins.learned.codec.LearnedProgressiveCodec`, whose pipeline codes one
    latent with a prior known from the header alone and synthesises from it: HC's ``y3`` and
    ``y2`` priors need the decoded deeper latents, so parsing and prior networks interleave,
    and the synthesis takes all three latents."""

    name = "hc"
    version = "1"
    tag = TAG
    description = (
        "HC (Ge et al. 2021): hierarchical latents y4 (hyperprior), y3 | y4, y2 | y3,y4 with "
        "residual quantisation; stream by depth, each latent refined by nested levels"
    )
    full_stream_psnr = None

    def __init__(
        self,
        weights: str = DEFAULT_WEIGHTS,
        nested: bool = True,
        levels: int = 4,
        chunk_bits: int = 1024,
        reconstruction: str = "mean",
        memo: bool = False,
    ) -> None:
        check_reconstruction(reconstruction, ("mean", "midpoint"))
        if not 1 <= int(levels) <= MAX_LEVELS:
            raise ValueError(f"levels must be in 1..{MAX_LEVELS}")
        self.weights_spec = str(weights)
        self.resolved = resolve(self.weights_spec)  # CodecUnavailable with a fix
        self.nested = bool(nested)
        self.levels = int(levels) if self.nested else 1
        self.chunk_bits = check_chunk_bits(chunk_bits)
        self.reconstruction = reconstruction
        self.memo = bool(memo)
        self._memo_header = DecoderMemo(self.memo)
        self._memo_image = DecoderMemo(self.memo)
        self._runtime: HCRuntime | None = None

    @property
    def runtime(self) -> HCRuntime:
        """HC's model and tables (loaded on first use, shared per process)."""
        if self._runtime is None:
            self._runtime = HCRuntime.get(self.weights_spec)
        return self._runtime

    @property
    def base(self) -> HCRuntime:
        """What :class:`~plugins.learned.codec.OnBaseModel` calls the base: HC's own model."""
        return self.runtime

    def flops_per_pixel(self) -> dict[str, float]:
        """Encoder and decoder FLOPs per pixel of HC's networks on a 256x256 input
        (:func:`plugins.hc.flops.hc_flops` with the weights' channel counts; counted once per
        process)."""
        return hc_flops(self.runtime.cfg).per_pixel()

    def parameters(self) -> dict[str, Any]:
        out = {
            "weights": self.weights_spec,
            "nested": self.nested,
            "levels": self.levels,
            "chunk_bits": self.chunk_bits,
            "reconstruction": self.reconstruction,
        }
        if self.memo:
            out["memo"] = True
        return out

    # -- encoder ---------------------------------------------------------------------------------

    def encode(self, image: np.ndarray) -> bytes:
        header, sections = self.encode_sections(image)
        return header + b"".join(sections)

    def encode_sections(self, image: np.ndarray) -> tuple[bytes, list[bytes]]:
        """The stream in parts: the header (through ``z``) and the chunks of ``y4``, ``y3``,
        ``y2``; :meth:`encode` concatenates them."""
        check_image(image)
        rt = self.runtime
        height, width = image.shape[:2]
        enc = rt.encode(image)
        tables = cached_tables(rt, PlonqLevels(self.levels), self.reconstruction)
        units = self.chunk_bits * lc.UNITS_PER_BIT
        out = self.image_header(height, width)
        out.append(RECON_CODES[self.reconstruction])
        put_chunk_bits(out, self.chunk_bits)
        out.append(self.levels)
        put_varint(out, len(enc.z_bytes))
        out += enc.z_bytes
        sections = []
        for prior, fine in zip(enc.priors, enc.fine, strict=True):
            order, idx = _order(prior)
            body, _stats = lc.encode_latent(tables, fine.reshape(-1)[order], idx, units)
            sections.append(body)
        return bytes(out), sections

    # -- decoder ---------------------------------------------------------------------------------

    def decode(self, prefix: bytes) -> np.ndarray:
        return self.decode_full(prefix).image

    def decode_full(self, prefix: bytes) -> DecodedHC:
        t_start = time.perf_counter()
        prefix = bytes(prefix)
        rt = self.runtime
        reader = Reader(prefix)
        height, width = self.read_image_header(reader)
        recon_code = reader.byte()
        if recon_code not in RECON_NAMES or RECON_NAMES[recon_code] == "laplace":
            raise CorruptStream(f"corrupt header: reconstruction code {recon_code}")
        chunk_bits = read_chunk_bits(reader)
        levels = reader.byte()
        if not 1 <= levels <= MAX_LEVELS:
            raise CorruptStream(f"corrupt HC header: {levels} levels")
        z_len = reader.varint()
        rt.check_z_length(z_len, height, width)
        z_bytes = reader.take(z_len)
        header_end = reader.pos
        p4 = self._memo_header.get(prefix[:header_end])
        if p4 is None:
            p4 = rt.prior4(z_bytes, rt.hyper_shape(height, width))
            self._memo_header.put(prefix[:header_end], p4)
        t_hyper = time.perf_counter()
        tables = cached_tables(rt, PlonqLevels(levels), RECON_NAMES[recon_code])
        units = chunk_bits * lc.UNITS_PER_BIT

        pos = header_end
        parsing = True
        received: list[str] = []
        latents: list[np.ndarray] = []
        f3 = None
        for depth in range(3):
            if depth == 0:
                prior = p4
            elif depth == 1:
                f3, prior = rt.prior3(latents[0])
            else:
                prior = rt.prior2(f3, latents[1])
            rel = np.zeros(prior.means.size, dtype=np.float64)
            status = "none"
            if parsing:
                order, idx = _order(prior)
                state = lc.decode_latent(tables, prefix, pos, idx, units)
                rel[order] = lc.reconstruct(tables, state)
                pos = state.end
                if state.complete:
                    status = "complete"
                else:
                    status = "partial" if state.stats.chunks else "none"
                    parsing = False
            received.append(status)
            latents.append(prior.means + rel.reshape(prior.means.shape))
        t_latent = time.perf_counter()
        image = self._memo_image.get(prefix[:pos])
        if image is None:
            image = rt.synthesise(latents[0], latents[1], latents[2], height, width)
            self._memo_image.put(prefix[:pos], image)
        return DecodedHC(
            image=image,
            received=tuple(received),
            latents=tuple(latents),
            header_bytes=header_end,
            seconds={
                "header+z+hyper": t_hyper - t_start,
                "latents+priors": t_latent - t_hyper,
                "synthesis": time.perf_counter() - t_latent,
            },
        )
