"""Built-in ``dzq`` plugin: learned progressive coding with embedded dead-zone quantizers over
the shared base model; see :mod:`plugins.dzq.codec`. Importing this module stays light: torch,
compressai and constriction are imported by the factory."""

from __future__ import annotations

from bench import CodecSpec, hookimpl
from plugins.learned.weights import check_default_weights


def _dzq(**params):
    from plugins.dzq.codec import DzqCodec

    return DzqCodec(**params)


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
            kind="progressive",
            check=check_default_weights,
        )
    )
