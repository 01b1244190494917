"""Built-in ``deephq`` plugin: DeepHQ-MS (:mod:`plugins.deephq.codec`) and its training command
(``bench train deephq``, :mod:`plugins.deephq.train`). Importing this module stays light."""

from __future__ import annotations

from bench import CodecSpec, TrainerSpec, hookimpl


def _deephq(**params):
    from plugins.deephq.codec import DeepHQCodec

    return DeepHQCodec(**params)


def _check() -> None:
    from plugins.deephq.codec import check_bundled

    check_bundled()


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
            kind="progressive",
            check=_check,
        )
    )


def train_deephq(argv: list[str]) -> int:
    """``bench train deephq ARGS``: :func:`plugins.deephq.train.main` (``--help`` lists ARGS)."""
    from plugins.deephq.train import main

    return main(argv)


@hookimpl
def register_trainers(register):
    register(
        TrainerSpec(
            name="deephq",
            main=train_deephq,
            summary=(
                "DeepHQ's per-layer steps (--step 2) and masks (--step 3) on the frozen base "
                "model; needs --out"
            ),
        )
    )
