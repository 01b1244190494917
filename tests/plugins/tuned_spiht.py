"""``tuned-spiht``: SPIHT-AC under a name of its own, for the ``bench regress`` tests.

``tuned_spiht_regressed.py`` registers the same name with a coarser transform (one wavelet level
instead of five): the regression that a change to a codec's defaults would make.
"""

from __future__ import annotations

from bench import CodecSpec, hookimpl
from plugins.spiht import make_spiht_ac

LEVELS = 5


def make_tuned(**params):
    return make_spiht_ac(**{"levels": LEVELS, **params})


@hookimpl
def register_codecs(register):
    register(CodecSpec(name="tuned-spiht", factory=make_tuned, summary="SPIHT-AC (test)"))
