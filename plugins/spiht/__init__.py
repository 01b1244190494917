"""Built-in ``spiht`` and ``spiht-ac`` codecs: SPIHT (Said and Pearlman, "A new, fast, and
efficient image codec based on set partitioning in hierarchical trees", IEEE TCSVT 6(3), 1996).

Modules
    :mod:`plugins.spiht.wavelet`  CDF 9/7 lifting, symmetric extension, non-expansive (numba).
    :mod:`plugins.spiht.passes`   the sorting and refinement passes, bit order, AC contexts (numba).
    :mod:`plugins.spiht.entropy`  raw bits and the adaptive binary range coder with honest
                                  truncation (numba).
    :mod:`plugins.spiht.colour`   JPEG 2000 irreversible colour transform (numba).
    :mod:`plugins.spiht.codec`    the :class:`~bench.ProgressiveCodec`: header, quantisation,
                                  colour modes, and the list of deviations from the paper.

Nothing heavy is imported here (numba compiles on first use, cached on disk), so that
``bench codecs`` stays fast.
"""

from __future__ import annotations

import importlib.util

from bench import CodecSpec, CodecUnavailable, ProgressiveCodec, hookimpl

__all__ = ["check_available", "make_spiht", "make_spiht_ac", "register_codecs"]


def check_available() -> None:
    """Raise :class:`~bench.CodecUnavailable` unless numba (the JIT for the passes) imports."""
    if importlib.util.find_spec("numba") is None:
        raise CodecUnavailable("numba is not installed", "pip install 'numba>=0.58'")


def make_spiht(
    *, max_bpp: float = 2.5, levels: int = 5, weighted: bool = False, recon: float = 0.5
) -> ProgressiveCodec:
    """``spiht``: binary, uncoded output (the paper's first table).

    Args:
        max_bpp: the encoder stops at this rate (bits per pixel).
        levels: CDF 9/7 decomposition levels (fewer on small images).
        weighted: weight components and bands by their RGB error and synthesis norms (off, as
            in the paper).
        recon: where the decoder puts a coefficient in its known interval (0.5: the midpoint).
    """
    check_available()
    from plugins.spiht.codec import SpihtCodec

    return SpihtCodec(
        arithmetic=False, max_bpp=max_bpp, levels=levels, weighted=weighted, recon=recon
    )


def make_spiht_ac(
    *, max_bpp: float = 2.5, levels: int = 5, weighted: bool = False, recon: float = 0.5
) -> ProgressiveCodec:
    """``spiht-ac``: every decision through an adaptive binary arithmetic coder.

    Args:
        max_bpp: the encoder stops at this rate (bits per pixel).
        levels: CDF 9/7 decomposition levels (fewer on small images).
        weighted: weight components and bands by their RGB error and synthesis norms (off, as
            in the paper).
        recon: where the decoder puts a coefficient in its known interval (0.5: the midpoint).
    """
    check_available()
    from plugins.spiht.codec import SpihtCodec

    return SpihtCodec(
        arithmetic=True, max_bpp=max_bpp, levels=levels, weighted=weighted, recon=recon
    )


@hookimpl
def register_codecs(register):
    register(
        CodecSpec(
            name="spiht",
            factory=make_spiht,
            summary=(
                "SPIHT (Said & Pearlman 1996), CDF 9/7, 5 levels, binary uncoded; "
                "embedded to the bit"
            ),
            check=check_available,
        )
    )
    register(
        CodecSpec(
            name="spiht-ac",
            factory=make_spiht_ac,
            summary=(
                "SPIHT with adaptive binary arithmetic coding (context-modelled decisions); "
                "honest truncation"
            ),
            check=check_available,
        )
    )
