"""Built-in ``plonq`` plugin (codecs ``plonq``, ``plonq-naive`` and ``msh``); see
:mod:`plugins.plonq.codec`. Importing this module stays light: torch, compressai and
constriction are imported by the factories."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

from bench import CodecSpec, ProgressiveCodec, RateLadderCodec, hookimpl
from plugins.learned.deferred import codec_factory
from plugins.learned.weights import DEFAULT_WEIGHTS, check_default_weights


@codec_factory("plugins.plonq.codec:PlonqCodec")
def _plonq(
    *,
    weights: str = DEFAULT_WEIGHTS,
    levels: int = 4,
    chunk_bits: int = 1024,
    reconstruction: Literal["mean", "midpoint"] = "mean",
    memo: bool = False,
) -> ProgressiveCodec:
    """PLONQ over the base model.

    Args:
        weights: base model: bundled:NAME, zoo:mbt2018-mean:Q or a checkpoint path.
        levels: nested dead-zone levels (steps 2**(levels-1) .. 1 base steps), 1..12.
        chunk_bits: bits per range-coded chunk, a multiple of 64.
        reconstruction: where a latent is put in its interval: the prior's mean or the midpoint.
        memo: keep the last decoded hyper path and image for the next, longer prefix.
    """


@codec_factory("plugins.learned.ladder:NaiveScalingLadder")
def _naive(
    *, weights: str = DEFAULT_WEIGHTS, scales: Sequence[float] = (8.0, 6.0, 4.0, 3.0, 2.0, 1.5, 1.0)
) -> RateLadderCodec:
    """Naive Scaling: one complete stream per latent scale factor.

    Args:
        weights: base model: bundled:NAME, zoo:mbt2018-mean:Q or a checkpoint path.
        scales: latent scale factors, strictly decreasing (low rate first), each >= 0.25.
    """


@codec_factory("plugins.learned.ladder:BaseModelLadder")
def _msh(*, weights: str = DEFAULT_WEIGHTS) -> RateLadderCodec:
    """The base model's own stream.

    Args:
        weights: base model: bundled:NAME, zoo:mbt2018-mean:Q or a checkpoint path.
    """


@hookimpl
def register_codecs(register):
    register(
        CodecSpec(
            name="plonq",
            factory=_plonq,
            summary=(
                "PLONQ (Lu et al. 2021): nested dead-zone quantization levels + prior-std "
                "latent ordering over a fixed mean-scale hyperprior; chunked range coding"
            ),
            check=check_default_weights,
        )
    )
    register(
        CodecSpec(
            name="plonq-naive",
            factory=_naive,
            summary=(
                "Naive Scaling (PLONQ's reference): one complete stream per latent scale "
                "factor of the same base model (non-progressive)"
            ),
            check=check_default_weights,
        )
    )
    register(
        CodecSpec(
            name="msh",
            factory=_msh,
            summary=(
                "the base MeanScaleHyperprior's own stream (CompressAI compress/decompress), "
                "one rate point"
            ),
            check=check_default_weights,
        )
    )
