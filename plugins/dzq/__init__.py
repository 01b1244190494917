"""Built-in ``dzq`` plugin: learned progressive coding with embedded dead-zone quantizers over
the shared base model; see :mod:`plugins.dzq.codec`. Importing this module stays light: torch,
compressai and constriction are imported by the factory."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

from bench import CodecSpec, ProgressiveCodec, hookimpl
from plugins.learned.deferred import codec_factory
from plugins.learned.weights import DEFAULT_WEIGHTS, check_default_weights


@codec_factory("plugins.dzq.codec:DzqCodec")
def _dzq(
    *,
    weights: str = DEFAULT_WEIGHTS,
    layers: int = 4,
    rate_fractions: Sequence[float] | None = None,
    layer_bpp: Sequence[float] | None = None,
    chunk_bits: int = 1024,
    reconstruction: Literal["mean", "midpoint", "laplace"] = "laplace",
    memo: bool = False,
) -> ProgressiveCodec:
    """DZQ over the base model.

    Args:
        weights: base model: bundled:NAME, zoo:mbt2018-mean:Q or a checkpoint path.
        layers: embedded quality layers, 1..16.
        rate_fractions: each layer's share of the finest layer's rate (none: the default split).
        layer_bpp: each layer's target bpp instead of rate_fractions.
        chunk_bits: bits per range-coded chunk, a multiple of 64.
        reconstruction: where a latent is put in its interval.
        memo: keep the last decoded hyper path and image for the next, longer prefix.
    """


@hookimpl
def register_codecs(register):
    register(
        CodecSpec(
            name="dzq",
            factory=_dzq,
            summary=(
                "DZQ (Li et al. 2023): embedded dead-zone quantizers, Laplacian-derived dead "
                "zones and reconstruction offsets, configurable quality layers, no retraining"
            ),
            check=check_default_weights,
        )
    )
