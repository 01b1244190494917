"""Built-in ``deephq`` plugin: DeepHQ-MS (:mod:`plugins.deephq.codec`) and its training command
(``bench train deephq``, :mod:`plugins.deephq.train`). Importing this module stays light."""

from __future__ import annotations

from bench import CodecSpec, hookimpl


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
