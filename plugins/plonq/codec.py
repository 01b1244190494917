"""PLONQ: progressive coding of a fixed-rate mean-scale hyperprior by nested quantization and
latent ordering (Lu et al., ICIP 2021, arXiv 2102.02913), implemented from the paper; no code
of the authors exists.

The base model is CompressAI's ``MeanScaleHyperprior`` (``mbt2018-mean``); nothing is
retrained. The codec reuses the shared pieces of :mod:`plugins.learned`: the weights registry,
the float64 hyper path (:mod:`plugins.learned.model_io`), and the chunked nested-interval coder
(:mod:`plugins.learned.coding.latent`), which sends the hyper-latent first and then refines the
main latent level by level, every element's interval split into the next level's sub-intervals
with the Gaussian prior renormalised to the interval.

Levels (the exact grid; :class:`plugins.learned.levels.PlonqLevels`, which HC shares)
    Work on the *scaled* latent ``r = (y - mu) / s`` of the paper's "Naive Scaling" variable
    rate: quantising ``r`` to integers with scale ``s`` gives the grid points ``mu + s k``. PLONQ
    uses ``L`` (default 4) levels with ``s_l = 2**(L - l)``: 8, 4, 2, 1. In units of the base
    model's own integer grid (the fine index ``n = round(y - mu)``, ``s = 1``), level ``l``
    sends the index

        q_l(n) = sign(n) * floor(|n| / s_l)

    i.e. the dead-zone quantizer of step ``s_l`` whose non-zero bins are
    ``{k s_l, ..., k s_l + s_l - 1}`` (mirrored for negative ``k``) and whose centre bin
    ``{-(s_l - 1), ..., s_l - 1}`` has ``2 s_l - 1`` fine bins: the uneven centre bin.
    Every coarser grid point ``k s_l`` is a finer grid point (``2k s_{l+1}``), and every coarser
    bin is the union of finer bins (``floor(floor(|n| / 2s) ...)``: a non-zero bin splits into
    two, the centre bin into three: the finer centre bin and the two innermost non-zero bins).
    The finest level is the base model's own grid, so the full stream has the base model's
    reconstruction and, up to the chunk overhead, its rate.

    A mid-tread grid of step 2 cannot be nested in the grid of step 1 with bins centred on the
    grid points (the finer bin [-1/2, 1/2] straddles the coarser bin's edge at +-1); ratios of
    3 would nest symmetrically but give 27-step coarse levels. The dead-zone form above is the
    nesting that keeps the paper's power-of-two scale factors; this is our reading of the
    paper's nested grids, which the paper does not spell out to the integer.

Ordering
    Between two levels, the elements are refined one at a time in decreasing order of the
    prior's standard deviation (its scale index; ties in raster order), known to the decoder
    from the hyper-latent, so no side information is sent. The paper speaks of an importance
    ordering "in the rate-distortion sense"; the prior's standard deviation is the ordering
    this project specifies, and it needs no side information.

Reconstruction
    An element refined down to a single fine integer ``n`` is reconstructed at ``mu + n`` (the
    base model's value). An element whose current interval holds several integers is
    reconstructed at the conditional mean of the Gaussian prior ``N(mu, sigma)`` over the
    interval (``reconstruction="mean"``, default) or at its midpoint (``"midpoint"``).

Naive Scaling reference (:class:`plugins.learned.ladder.NaiveScalingLadder`, codec
``plonq-naive``): one complete stream per scale factor ``s``: ``mu + s round((y - mu) / s)``
coded with the prior ``N(0, sigma / s)`` (CompressAI's integer table of that scale, range coded).
"""

from __future__ import annotations

from bench.codec import CorruptStream
from plugins.learned.coding.bits import Reader
from plugins.learned.levels import MAX_LEVELS, PlonqLevels
from plugins.learned.nested import NestedLatentCodec
from plugins.learned.weights import DEFAULT_WEIGHTS


class PlonqCodec(NestedLatentCodec):
    """PLONQ (see module doc)."""

    name = "plonq"
    tag = 0x51
    version = "1"
    default_reconstruction = "mean"
    description = (
        "PLONQ (Lu et al. 2021): nested dead-zone levels (steps 8,4,2,1) + prior-std ordering "
        "over the bundled MeanScaleHyperprior; chunked constriction range coding"
    )
    full_stream_psnr = None

    def __init__(
        self,
        weights: str = DEFAULT_WEIGHTS,
        levels: int = 4,
        chunk_bits: int = 1024,
        reconstruction: str = "mean",
        memo: bool = False,
    ) -> None:
        if not 1 <= int(levels) <= MAX_LEVELS:
            raise ValueError(f"levels must be in 1..{MAX_LEVELS}")
        if reconstruction == "laplace":
            raise ValueError("PLONQ reconstructs with 'mean' or 'midpoint'")
        super().__init__(
            weights=weights, chunk_bits=chunk_bits, reconstruction=reconstruction, memo=memo
        )
        self.levels = int(levels)

    def parameters(self) -> dict:
        return {
            **super().parameters(),
            "levels": self.levels,
            "steps": [1 << (self.levels - k) for k in range(1, self.levels + 1)],
        }

    def choose_scheme(self, base, analysis, fine, idx):
        return PlonqLevels(self.levels), bytes([self.levels])

    def read_scheme(self, reader: Reader):
        levels = reader.byte()
        if not 1 <= levels <= MAX_LEVELS:
            raise CorruptStream(f"corrupt PLONQ header: {levels} levels")
        return PlonqLevels(levels)
