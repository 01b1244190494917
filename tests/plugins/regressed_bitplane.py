"""The bitplane codec with a regression: 16 wasted bytes after the header (for `bench compare`)."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

from bench import CodecSpec, hookimpl

sys.path.insert(0, str(Path(__file__).parent))
from bitplane_codec import BitplaneCodec  # noqa: E402

PADDING = 16


class RegressedBitplane(BitplaneCodec):
    def encode(self, image: np.ndarray) -> bytes:
        stream = super().encode(image)
        return stream[:8] + bytes(PADDING) + stream[8:]

    def decode(self, prefix: bytes) -> np.ndarray:
        return super().decode(prefix[:8] + prefix[8 + PADDING :])


@hookimpl
def register_codecs(register):
    register(CodecSpec(name="bitplane", factory=RegressedBitplane, summary="regressed"))
