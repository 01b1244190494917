"""Built-in ``plonq`` plugin (codecs ``plonq``, ``plonq-naive`` and ``msh``); see
:mod:`plugins.plonq.codec`. Importing this module stays light: torch, compressai and
constriction are imported by the factories."""

from __future__ import annotations

from bench import CodecSpec, hookimpl
from plugins.learned.weights import check_default_weights


def _plonq(**params):
    from plugins.plonq.codec import PlonqCodec

    return PlonqCodec(**params)


def _naive(**params):
    from plugins.learned.ladder import NaiveScalingLadder

    return NaiveScalingLadder(**params)


def _msh(**params):
    from plugins.learned.ladder import BaseModelLadder

    return BaseModelLadder(**params)


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
            kind="progressive",
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
            kind="rate-ladder",
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
            kind="rate-ladder",
            check=check_default_weights,
        )
    )
