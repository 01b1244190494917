"""``tuned-spiht`` made worse on purpose: one wavelet level instead of five (``bench regress``)."""

from __future__ import annotations

from bench import CodecSpec, hookimpl
from plugins.spiht import make_spiht_ac


def make_regressed(**params):
    return make_spiht_ac(**{"levels": 1, **params})


@hookimpl
def register_codecs(register):
    register(CodecSpec(name="tuned-spiht", factory=make_regressed, summary="regressed (test)"))
