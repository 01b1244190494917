"""DZQ: learned progressive coding with embedded dead-zone quantizers, after Li et al., "Learned
Progressive Image Compression With Dead-Zone Quantizers" (IEEE TCSVT 2023,
doi 10.1109/TCSVT.2022.3229701). No code of the authors exists, and the paper's full text was
not available while this was written: the quantizer below is derived here from the Laplacian
model the paper names, and every formula is stated so that it can be checked.

Base model and coding
    CompressAI's ``MeanScaleHyperprior`` (``mbt2018-mean``), not retrained. The shared coder of
    :mod:`plugins.learned.coding.latent` sends the hyper-latent, then refines every latent element
    through ``K`` embedded quality layers (default 4), each element's interval split by the next
    layer's thresholds and coded with the Gaussian prior ``N(mu, sigma)`` renormalised to it.
    Within a layer, elements go in decreasing order of ``sigma`` (as in PLONQ); a chunked
    stream makes every prefix decodable.

The quantizer of layer ``k`` (in units of the base model's integer grid ``n = round(y - mu)``)
    Step ``D_k`` (one per layer, a multiple of 1/256, ``D_1 > D_2 > ... > D_K = 1``). For an
    element whose prior has scale ``sigma``, the latent residual ``y - mu`` is modelled as a
    Laplacian with the same variance: density ``lambda/2 exp(-lambda |x|)``,
    ``lambda = sqrt(2) / sigma``. The dead-zone quantizer is the uniform-reconstruction
    quantizer with a rounding offset ``theta``::

        q = sign(n) * floor(|n| / D + theta)            (index sent)
        bins: q = 0 for |x| < (1 - theta) D             (the dead zone, width 2 (1 - theta) D)
              q = j for (j - theta) D <= |x| < (j + 1 - theta) D

    (1) Reconstruction offset. For the Laplacian, the conditional mean (centroid) of an
    interval ``[a, a + w]`` on one side of 0 is

        E[x | a <= x < a + w] = a + 1/lambda - w / (exp(lambda w) - 1),

    independent of ``a`` (the exponential distribution is memoryless; integrate
    ``x lambda e^(-lambda x)`` over the interval). This is the reconstruction offset of
    Sullivan's uniform-threshold quantizer for Laplacian sources (G. J. Sullivan, "Efficient
    scalar quantization of exponential and Laplacian random variables", IEEE Trans. Inf.
    Theory 42(5), 1996).

    (2) Dead zone. Choose ``theta`` so that the uniform reconstruction points ``j D`` are the
    centroids of their bins: with ``a = (j - theta) D`` and ``w = D``, (1) gives
    ``theta D = 1/lambda - D / (exp(lambda D) - 1)``, i.e.

        theta(lambda D) = 1 / (lambda D) - 1 / (exp(lambda D) - 1),   0 < theta <= 1/2.

    ``theta -> 1/2`` (plain rounding) when ``sigma >> D`` and ``theta -> 1 / (lambda D)`` (dead
    zone approaching ``2 D``) when ``sigma << D``: elements the prior expects to be small are
    zeroed first. This is the same centroid condition behind the rounding offsets of H.264/HEVC
    quantization (e.g. Wiegand et al.'s 1/6 and 1/3 of the step), here derived per element
    from the prior's scale instead of fixed. Reconstruction of an element whose interval holds
    several integers is the Laplacian centroid over that interval (general form in
    :func:`plugins.learned.coding.intervals.laplace_interval_mean`); an element refined to a
    single integer ``n`` is reconstructed at ``mu + n`` (the base model's value), so the full
    stream equals the base model.

    (3) Embedding. Layer ``k``'s partition is the common refinement of the quantizers of layers
    ``1..k`` (the union of their thresholds), so every layer refines the previous one whatever
    the steps; the last layer (``D_K = 1``, where ``floor(|n| + theta) = |n|``) is the base
    model's grid. Thresholds fall on the half-integers of the base grid (the quantizers act on
    ``n``): a layer is a coarsening of the base model's own quantization.

Rates of the layers
    ``layers`` (default 4) and either ``layer_bpp`` (target bpp of the whole stream at the end
    of layers ``1..K-1``) or ``rate_fractions`` (default 0.1, 0.25, 0.5 of the full latent
    rate of the image) set the targets. The encoder picks each ``D_k`` (coarse to fine) by
    bisection on the exact ideal code length of the common refinement (integer frequencies of
    the model's CDF tables): the smallest step whose cumulative rate does not exceed the
    target. The rate moves in jumps as the step grows (all elements of one scale index with
    the same ``|n|`` cross a threshold together), so a layer lands at or somewhat below its
    target. The steps go in the header (varints of ``256 D_k``).

Determinism
    ``theta`` decides the partition, so it is computed with IEEE-754 basic operations only
    (:func:`det_exp`: range reduction and a fixed Taylor polynomial in Python floats; no libm
    ``exp``), and ``q`` with numpy's correctly rounded division and addition; the scale table
    comes from the weights file. Encoder and decoder thus build identical partitions on any
    IEEE-754 machine.

Choices the paper leaves open (or that could not be checked against it): the Laplacian is
matched to the Gaussian prior by variance; one step per layer for all channels; steps on a
1/256 grid; targets as fractions of the image's own full rate by default; the within-layer
order by the prior's scale; the thresholds snapped to the base grid.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from bench.codec import CorruptStream
from plugins.learned.coding.bits import Reader, put_varint
from plugins.learned.coding.latent import partition_bits
from plugins.learned.nested import NestedLatentCodec
from plugins.learned.weights import DEFAULT_WEIGHTS

STEP_UNITS = 256
MAX_STEP_UNITS = 1 << 20
MAX_LAYERS = 16
DEFAULT_FRACTIONS = (0.1, 0.25, 0.5)

_LN2 = 0.6931471805599453


def det_exp(x: float) -> float:
    """``exp(x)`` for ``0 <= x <= 700`` from IEEE-754 basic operations only (same bits on every
    machine): ``x = k ln2 + r``, a degree-24 Taylor polynomial of ``exp(r)``, ``ldexp``."""
    x = float(x)
    if x < 0 or x > 700:
        raise ValueError("det_exp takes 0 <= x <= 700")
    k = int(x / _LN2)
    r = x - k * _LN2
    p = 1.0
    for j in range(24, 0, -1):
        p = 1.0 + p * r / j
    return math.ldexp(p, k)


def rounding_offset(lam_step: float) -> float:
    """``theta(t) = 1/t - 1/(exp(t) - 1)`` for ``t = lambda D`` (see module doc), computed
    deterministically; a series below 1e-3, ``1/t`` above 40."""
    t = float(lam_step)
    if t <= 0:
        return 0.5
    if t < 1e-3:
        return 0.5 - t / 12.0 + t * t * t / 720.0
    if t > 40.0:
        return 1.0 / t
    return 1.0 / t - 1.0 / (det_exp(t) - 1.0)


@dataclass(frozen=True)
class DzqLayers:
    """The embedded dead-zone quantizers of DZQ, steps in 1/256 units (last = 256)."""

    step_units: tuple[int, ...]
    sigma: tuple[float, ...]  # the model's scale table

    @property
    def num_levels(self) -> int:
        return len(self.step_units)

    @property
    def key(self) -> tuple:
        return ("dzq", self.step_units)

    def step(self, level: int) -> float:
        return self.step_units[level - 1] / STEP_UNITS

    def theta(self, level: int) -> np.ndarray:
        """Rounding offset per scale index at ``level``."""
        d = self.step(level)
        return np.array(
            [rounding_offset(math.sqrt(2.0) / s * d) for s in self.sigma], dtype=np.float64
        )

    def labels(self, level: int, fine: np.ndarray, scale_index: np.ndarray) -> np.ndarray:
        d = self.step(level)
        theta = self.theta(level)[np.asarray(scale_index, np.int64)]
        fine = np.asarray(fine, np.int64)
        mag = np.floor(np.abs(fine).astype(np.float64) / d + theta).astype(np.int64)
        return np.sign(fine) * mag


class DzqCodec(NestedLatentCodec):
    """DZQ (see module doc)."""

    name = "dzq"
    tag = 0x44
    version = "1"
    default_reconstruction = "laplace"
    description = (
        "DZQ (Li et al. 2023): embedded dead-zone quantizers with Laplacian-derived dead zones "
        "and reconstruction offsets over the bundled MeanScaleHyperprior; chunked range coding"
    )
    full_stream_psnr = None

    def __init__(
        self,
        weights: str = DEFAULT_WEIGHTS,
        layers: int = 4,
        rate_fractions: Sequence[float] | None = None,
        layer_bpp: Sequence[float] | None = None,
        chunk_bits: int = 1024,
        reconstruction: str = "laplace",
        memo: bool = False,
    ) -> None:
        super().__init__(
            weights=weights, chunk_bits=chunk_bits, reconstruction=reconstruction, memo=memo
        )
        layers = int(layers)
        if not 1 <= layers <= MAX_LAYERS:
            raise ValueError(f"layers must be in 1..{MAX_LAYERS}")
        if layer_bpp is not None and rate_fractions is not None:
            raise ValueError("give layer_bpp or rate_fractions, not both")
        if layer_bpp is None and rate_fractions is None:
            rate_fractions = _default_fractions(layers)
        targets = layer_bpp if layer_bpp is not None else rate_fractions
        targets = [float(t) for t in targets]
        if len(targets) != layers - 1:
            raise ValueError(f"need {layers - 1} layer targets for {layers} layers")
        if any(t <= 0 for t in targets) or targets != sorted(targets):
            raise ValueError("layer targets must be positive and increasing")
        if rate_fractions is not None and targets and targets[-1] >= 1:
            raise ValueError("rate fractions must be below 1")
        self.layers = layers
        self.layer_bpp = None if layer_bpp is None else tuple(targets)
        self.rate_fractions = None if rate_fractions is None else tuple(targets)

    def parameters(self) -> dict:
        out = {**super().parameters(), "layers": self.layers}
        if self.layer_bpp is not None:
            out["layer_bpp"] = list(self.layer_bpp)
        else:
            out["rate_fractions"] = list(self.rate_fractions)
        return out

    # -- encoder: choose the steps ------------------------------------------------------------

    def choose_scheme(self, base, analysis, fine, idx):
        sigma = tuple(float(s) for s in base.scale_table)
        height, width = analysis.image_size
        steps = self.choose_steps(base, fine, idx, sigma, height, width, len(analysis.z_bytes))
        layers = DzqLayers(steps, sigma)
        out = bytearray()
        put_varint(out, len(steps))
        for units in steps[:-1]:
            put_varint(out, units)
        return layers, bytes(out)

    def choose_steps(self, base, fine, idx, sigma, height, width, z_len) -> tuple[int, ...]:
        """Bisection (per layer, coarse to fine) on the step whose cumulative ideal rate is
        closest to the layer's target without exceeding it."""
        grid = base.grid
        full = partition_bits(grid, DzqLayers((STEP_UNITS,), sigma), 1, fine, idx)
        if self.layer_bpp is not None:
            side = 8.0 * (z_len + 16)
            targets = [t * height * width - side for t in self.layer_bpp]
        else:
            targets = [f * full for f in self.rate_fractions]
        chosen: list[int] = []
        upper = MAX_STEP_UNITS
        for target in targets:
            lo, hi = STEP_UNITS + 1, upper - 1  # steps strictly between 1 and the previous
            if lo > hi:
                chosen.append(max(STEP_UNITS + 1, upper - 1))
                continue

            def rate(units: int) -> float:
                layers = DzqLayers((*chosen, units, STEP_UNITS), sigma)
                return partition_bits(grid, layers, len(chosen) + 1, fine, idx)

            # smallest step whose rate fits the target (rate falls as the step grows)
            if rate(hi) > target:
                best = hi
            else:
                while lo < hi:
                    mid = (lo + hi) // 2
                    if rate(mid) <= target:
                        hi = mid
                    else:
                        lo = mid + 1
                best = lo
            chosen.append(best)
            upper = best
        return (*chosen, STEP_UNITS)

    def read_scheme(self, reader: Reader):
        count = reader.varint()
        if not 1 <= count <= MAX_LAYERS:
            raise CorruptStream(f"corrupt DZQ header: {count} layers")
        steps = [reader.varint() for _ in range(count - 1)]
        if any(s <= STEP_UNITS or s >= MAX_STEP_UNITS for s in steps) or steps != sorted(
            steps, reverse=True
        ):
            raise CorruptStream(f"corrupt DZQ header: steps {steps}")
        sigma = tuple(float(s) for s in self.base.scale_table)
        return DzqLayers((*steps, STEP_UNITS), sigma)


def _default_fractions(layers: int) -> tuple[float, ...]:
    if layers == 4:
        return DEFAULT_FRACTIONS
    # geometric between 0.1 and 0.5 for other layer counts
    if layers == 1:
        return ()
    if layers == 2:
        return (0.25,)
    return tuple(0.1 * 5 ** (k / (layers - 2)) for k in range(layers - 1))
