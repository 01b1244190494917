"""A minimal real progressive codec, used to test the harness (and an example for authors).

Raw bit-planes, most significant first: an 8-byte header (magic, height, width), then the 8
bit-planes of the interleaved RGB samples, each packed with ``numpy.packbits``. A prefix
reconstructs every sample from its complete bit-planes, with the unknown low bits set to the
middle of their interval (a partial plane is ignored: refining only part of the image can lower
PSNR). No entropy coding: 24 bpp for the whole stream.
"""

from __future__ import annotations

import struct

import numpy as np

from bench import CodecInfo, CodecSpec, PrefixTooShort, ProgressiveCodec, hookimpl

MAGIC = b"BP"


class BitplaneCodec(ProgressiveCodec):
    name = "bitplane"
    version = "1"
    description = "raw bit-planes, MSB first (test codec)"
    full_stream_psnr = 99.0

    def info(self) -> CodecInfo:
        return CodecInfo(self.name, self.version, self.description)

    def encode(self, image: np.ndarray) -> bytes:
        h, w, _ = image.shape
        flat = image.reshape(-1)
        planes = [np.packbits((flat >> (7 - b)) & 1).tobytes() for b in range(8)]
        return MAGIC + struct.pack(">HI", h, w) + b"".join(planes)

    def decode(self, prefix: bytes) -> np.ndarray:
        if len(prefix) < 8:
            raise PrefixTooShort(f"{len(prefix)} bytes")
        if prefix[:2] != MAGIC:
            raise ValueError("not a bitplane stream")
        h, w = struct.unpack(">HI", prefix[2:8])
        n = h * w * 3
        plane_bytes = (n + 7) // 8
        bits = np.unpackbits(np.frombuffer(prefix[8:], np.uint8))
        value = np.zeros(n, np.int32)
        known = np.zeros(n, np.int32)  # number of known bits per sample
        for b in range(8):
            chunk = bits[b * plane_bytes * 8 : b * plane_bytes * 8 + n]
            if len(chunk) < n:
                break
            value[: len(chunk)] |= chunk.astype(np.int32) << (7 - b)
            known[: len(chunk)] += 1
        # unknown low bits: the middle of the remaining interval, 2**(7 - known)
        midpoint = np.where(known < 8, 1 << np.maximum(7 - known, 0), 0)
        out = np.minimum(value + midpoint, 255)
        return out.astype(np.uint8).reshape(h, w, 3)


@hookimpl
def register_codecs(register):
    register(CodecSpec(name="bitplane", factory=BitplaneCodec, summary="raw bit-planes"))
