"""Built-in BPG anchors, both non-progressive rate ladders over QP 51..0.

* ``bpg``: the real ``bpgenc``/``bpgdec`` with the paper's settings (:mod:`plugins.bpg.bpg`);
  unavailable, with the way to install libbpg, when the binaries are missing.
* ``hevc444``: a substitute that needs no binary: HEVC intra 4:4:4 through pillow-heif's x265,
  configured as close to bpgenc as it allows, rate counted as BPG would count it
  (:mod:`plugins.bpg.hevc444`).

Both can cache their encodings on disk across runs (:mod:`plugins.bpg.ladder_cache`;
``hevc444[cache=True]``). It is off by default because a cache hit's encode time is a lookup
time; within one run each QP is encoded once per image anyway (the harness keeps the ladder).
This module stays light: pillow-heif and the codec modules are imported only when a codec is
built or checked.
"""

from __future__ import annotations

from typing import Literal

from bench import CodecSpec, RateLadderCodec, hookimpl

__all__ = ["make_bpg", "make_hevc444", "register_codecs"]


def make_bpg(*, qp_min: int = 0, qp_max: int = 51, cache: bool = False) -> RateLadderCodec:
    """Factory of the ``bpg`` codec (raises :class:`~bench.CodecUnavailable` without bpgenc).

    Args:
        qp_min: lowest QP of the ladder (highest rate), 0..51.
        qp_max: highest QP of the ladder (lowest rate), 0..51.
        cache: keep encodings on disk across runs (encode times then time a lookup).
    """
    from plugins.bpg.bpg import BpgCodec

    return BpgCodec(qp_min=qp_min, qp_max=qp_max, cache=cache)


def make_hevc444(
    *,
    qp_min: int = 0,
    qp_max: int = 51,
    preset: Literal[
        "ultrafast", "superfast", "veryfast", "faster", "fast", "medium", "slow", "slower",
        "veryslow", "placebo",
    ] = "veryslow",
    cache: bool = False,
) -> RateLadderCodec:  # fmt: skip
    """Factory of the ``hevc444`` codec (raises :class:`~bench.CodecUnavailable` without x265).

    Args:
        qp_min: lowest QP of the ladder (highest rate), 0..51.
        qp_max: highest QP of the ladder (lowest rate), 0..51.
        preset: x265 preset.
        cache: keep encodings on disk across runs (encode times then time a lookup).
    """
    from plugins.bpg.hevc444 import Hevc444Codec

    return Hevc444Codec(qp_min=qp_min, qp_max=qp_max, preset=preset, cache=cache)


def check_bpg() -> None:
    from plugins.bpg.bpg import check_available

    check_available()


def check_hevc444() -> None:
    from plugins.bpg.hevc444 import check_available

    check_available()


@hookimpl
def register_codecs(register):
    register(
        CodecSpec(
            name="bpg",
            factory=make_bpg,
            summary="BPG 4:4:4 anchor: bpgenc -e x265 -q QP -f 444 over QP 51..0 (not progressive)",
            check=check_bpg,
        )
    )
    register(
        CodecSpec(
            name="hevc444",
            factory=make_hevc444,
            summary=(
                "substitute for BPG 4:4:4: HEVC intra 4:4:4 via pillow-heif's x265, constant QP "
                "51..0, rate = HEVC slice + BPG-sized header (not progressive)"
            ),
            check=check_hevc444,
        )
    )
