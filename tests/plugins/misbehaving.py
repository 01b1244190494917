"""Codecs that break the contract on purpose, to test that the harness contains the damage."""

from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np

from bench import CodecSpec, hookimpl

sys.path.insert(0, str(Path(__file__).parent))
from bitplane_codec import BitplaneCodec  # noqa: E402


class CrashyCodec(BitplaneCodec):
    """Encode raises on images 53 pixels wide; fine otherwise."""

    name = "crashy"

    def encode(self, image: np.ndarray) -> bytes:
        if image.shape[1] == 53:
            raise RuntimeError("crashy codec refuses width 53")
        return super().encode(image)


class SleepyCodec(BitplaneCodec):
    """Encode of images larger than 64x64 never returns (warm-up crops still work)."""

    name = "sleepy"

    def encode(self, image: np.ndarray) -> bytes:
        if image.shape[0] * image.shape[1] > 64 * 64:
            while True:
                time.sleep(1)
        return super().encode(image)


class SlowCodec(BitplaneCodec):
    """A correct codec whose decode takes ``delay`` seconds (for interruption tests)."""

    name = "slow"

    def __init__(self, delay: float = 0.1) -> None:
        self.delay = delay

    def decode(self, prefix: bytes) -> np.ndarray:
        time.sleep(self.delay)
        return super().decode(prefix)


class LeakyCodec(BitplaneCodec):
    """Keeps the image shape in the object instead of the stream: fails in a fresh process."""

    name = "leaky"

    def encode(self, image: np.ndarray) -> bytes:
        self.shape = image.shape
        return super().encode(np.zeros((1, 1, 3), np.uint8))[:8] + super().encode(image)[8:]

    def decode(self, prefix: bytes) -> np.ndarray:
        shape = getattr(self, "shape", (1, 1, 3))
        flat = np.resize(np.frombuffer(prefix[8:] or b"\x80", np.uint8), int(np.prod(shape)))
        return flat.reshape(shape)


class FragileCodec(BitplaneCodec):
    """Decode raises past the first third of the stream: a contract violation."""

    name = "fragile"

    def decode(self, prefix: bytes) -> np.ndarray:
        if len(prefix) > 100:
            raise IndexError("fragile decoder read past its buffer")
        return super().decode(prefix)


class WrongTypeCodec(BitplaneCodec):
    """Encode returns its stream as a ``kind`` (list, ndarray, bytearray, str), not bytes."""

    name = "wrongtype"

    def __init__(self, kind: str = "list") -> None:
        self.kind = kind

    def encode(self, image: np.ndarray):
        stream = super().encode(image)
        convert = {
            "list": list,
            "ndarray": lambda s: np.frombuffer(s, np.uint8).copy(),
            "bytearray": bytearray,
            "str": lambda s: s.decode("latin-1"),
        }
        return convert[self.kind](stream)


@hookimpl
def register_codecs(register):
    codecs = (CrashyCodec, SleepyCodec, SlowCodec, LeakyCodec, FragileCodec, WrongTypeCodec)
    for codec in codecs:
        register(CodecSpec(name=codec.name, factory=codec, summary=codec.__doc__.splitlines()[0]))
