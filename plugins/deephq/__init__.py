"""Built-in ``deephq`` plugin: DeepHQ-MS (:mod:`plugins.deephq.codec`) and its training command
(``bench train deephq``, :mod:`plugins.deephq.train`). Importing this module stays light."""

from __future__ import annotations

from typing import Literal

from bench import CodecSpec, ProgressiveCodec, TrainerSpec, hookimpl
from plugins.learned.deferred import codec_factory, deferred

#: The shipped DeepHQ parameters (``plugins.deephq.codec.DEFAULT_WEIGHTS``, repeated here so that
#: declaring the codec's parameters imports nothing heavy; tests/test_params.py checks they agree).
DEFAULT_WEIGHTS = "bundled:deephq-msh-n128-m192-l1100-it398250"


@codec_factory("plugins.deephq.codec:DeepHQCodec")
def _deephq(
    *,
    weights: str = DEFAULT_WEIGHTS,
    masks: bool = True,
    chunk_bits: int = 1024,
    reconstruction: Literal["mean", "midpoint"] = "mean",
    memo: bool = False,
    order: Literal["scale", "slope"] = "slope",
) -> ProgressiveCodec:
    """DeepHQ-MS over the base model.

    Args:
        weights: DeepHQ parameters (steps, masks): bundled:NAME or a .safetensors path.
        masks: with order=scale, selective compression (false: every element coded in every
            layer, the ablation); the slope order has no masks.
        chunk_bits: bits per range-coded chunk, a multiple of 64.
        reconstruction: where a latent is put in its interval: the prior's mean or the midpoint.
        memo: keep the last decoded hyper path and image for the next, longer prefix.
        order: slope: passes of falling R-D slope (each element's expected pixel-error
            decrease per expected bit); scale: layer by layer, by the prior's scale index.
    """


@hookimpl
def register_codecs(register):
    register(
        CodecSpec(
            name="deephq",
            factory=_deephq,
            summary=(
                "DeepHQ-MS (Lee et al. 2024): learned per-layer, per-channel steps of a "
                "hierarchical quantizer + selective compression over a fixed mean-scale "
                "hyperprior; chunked range coding"
            ),
            check=deferred("plugins.deephq.codec:check_bundled"),
        )
    )


@hookimpl
def register_trainers(register):
    register(
        TrainerSpec(
            name="deephq",
            main=deferred("plugins.deephq.train:main"),
            summary=(
                "DeepHQ's per-layer steps (--step 2) and masks (--step 3) on the frozen base "
                "model; needs --out"
            ),
        )
    )
