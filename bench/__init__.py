"""bench: compare progressive image codecs from real truncated bitstreams."""

from bench.codec import (
    CodecInfo,
    CodecUnavailable,
    CorruptStream,
    PrefixTooShort,
    ProgressiveCodec,
    RateLadderCodec,
    WeightsInfo,
)
from bench.hookspecs import hookimpl
from bench.registry import CodecSpec, TrainerSpec

__version__ = "0.1.0"

__all__ = [
    "CodecInfo",
    "CodecSpec",
    "CodecUnavailable",
    "CorruptStream",
    "PrefixTooShort",
    "ProgressiveCodec",
    "RateLadderCodec",
    "TrainerSpec",
    "WeightsInfo",
    "hookimpl",
]
