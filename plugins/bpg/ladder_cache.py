"""An on-disk cache of rate-ladder encodings, so that repeated runs do not re-encode.

Within one run the harness already encodes each ladder setting once per image
(:func:`bench.measure.measure_ladder`); this cache carries encodings across runs (and across the
worker processes of one run).

Key
    sha256 over a JSON document of: the codec name and version, every parameter that can change
    the bytes (encoder settings, encoder and library versions), the image's shape and the sha256
    of its pixels, and the setting (QP). Anything that changes the output changes the key; an
    entry is never reused for another encoder build.

Entry
    ``<root>/<codec>/<key[:2]>/<key>.bin``: the magic ``b"BLADDER1"``, a 4-byte big-endian length,
    a JSON header (key, payload length and sha256, encode time in seconds measured when the
    entry was made, creation time, the setting) and the payload (the encoded stream).

Safety
    Entries are written to a temporary file in the same directory and moved into place with
    :func:`os.replace`, so a reader sees either the whole entry or none (two workers writing the
    same key both write complete, identical entries). A read that finds anything wrong (bad
    magic, unreadable header, wrong key, short payload, sha256 mismatch) counts as a miss: the
    entry is removed and the caller encodes again. Errors while writing (full disk, read-only
    directory) are swallowed: the cache only ever saves work, it never fails an encode.

Timing
    The harness times ``encode_at`` from outside, so on a hit it measures the lookup (a few
    milliseconds), not the encoder; it has no way to take a time reported by the codec. The
    entry keeps the encode time measured when it was made (:attr:`Hit.encode_s`), and the
    codecs say in ``CodecInfo.parameters`` (``cache``, ``cache_timing``) whether the cache was
    on. For a run whose encode times are to be reported, use a fresh ``BENCH_CACHE_DIR`` or the
    codec parameter ``cache=False``.

Root
    ``$BENCH_CACHE_DIR/ladders`` if ``BENCH_CACHE_DIR`` is set, else
    ``platformdirs.user_cache_dir("bench")/ladders``.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import struct
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

MAGIC = b"BLADDER1"


def cache_root() -> Path:
    """Where ladder entries live (see the module docstring)."""
    env = os.environ.get("BENCH_CACHE_DIR")
    if env:
        return Path(env) / "ladders"
    from platformdirs import user_cache_dir

    return Path(user_cache_dir("bench")) / "ladders"


def image_digest(image: np.ndarray) -> str:
    """sha256 of the pixels, with the shape and dtype, of an image."""
    array = np.ascontiguousarray(image)
    h = hashlib.sha256(f"{array.shape}|{array.dtype}|".encode())
    h.update(array.tobytes())
    return h.hexdigest()


@dataclass(frozen=True)
class Hit:
    """A cached encoding and the encode time measured when it was made."""

    data: bytes
    encode_s: float


class LadderCache:
    """Entries of one codec configuration. ``identity`` holds everything that shapes the bytes."""

    def __init__(self, codec: str, identity: dict[str, Any], root: Path | None = None) -> None:
        self.codec = codec
        self.identity = identity
        self.root = (root or cache_root()) / codec
        self.hits = 0
        self.misses = 0

    def key(self, image_sha256: str, setting: Any) -> str:
        document = json.dumps(
            {
                "codec": self.codec,
                "identity": self.identity,
                "image": image_sha256,
                "setting": setting,
            },
            sort_keys=True,
        )
        return hashlib.sha256(document.encode()).hexdigest()

    def path(self, key: str) -> Path:
        return self.root / key[:2] / f"{key}.bin"

    def get(self, key: str) -> Hit | None:
        """The entry under ``key``, or ``None`` (missing or damaged: a damaged one is removed)."""
        path = self.path(key)
        try:
            raw = path.read_bytes()
        except OSError:
            return None
        hit = _parse(raw, key)
        if hit is None:
            with contextlib.suppress(OSError):
                path.unlink()
        return hit

    def put(self, key: str, data: bytes, encode_s: float, setting: Any) -> None:
        """Store an entry atomically; failures to write are ignored."""
        header = json.dumps(
            {
                "key": key,
                "length": len(data),
                "sha256": hashlib.sha256(data).hexdigest(),
                "encode_s": encode_s,
                "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                "setting": setting,
            }
        ).encode()
        blob = MAGIC + struct.pack(">I", len(header)) + header + data
        path = self.path(key)
        tmp = None
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-", suffix=".bin")
            with os.fdopen(fd, "wb") as handle:
                handle.write(blob)
            os.replace(tmp, path)
            tmp = None
        except OSError:
            pass
        finally:
            if tmp is not None:
                with contextlib.suppress(OSError):
                    os.unlink(tmp)

    def fetch(
        self, image: np.ndarray, setting: Any, encode: Callable[[], bytes]
    ) -> tuple[bytes, float, bool]:
        """``(data, encode_s, hit)``: the cached encoding, or ``encode()`` run, timed and stored.

        ``encode_s`` is always the time of the real encode, measured when the entry was made.
        """
        key = self.key(image_digest(image), setting)
        hit = self.get(key)
        if hit is not None:
            self.hits += 1
            return hit.data, hit.encode_s, True
        self.misses += 1
        start = time.perf_counter()
        data = bytes(encode())
        elapsed = time.perf_counter() - start
        self.put(key, data, elapsed, setting)
        return data, elapsed, False


def _parse(raw: bytes, key: str) -> Hit | None:
    if len(raw) < len(MAGIC) + 4 or not raw.startswith(MAGIC):
        return None
    (size,) = struct.unpack_from(">I", raw, len(MAGIC))
    start = len(MAGIC) + 4
    try:
        header = json.loads(raw[start : start + size].decode())
        data = raw[start + size :]
        if (
            header["key"] != key
            or header["length"] != len(data)
            or header["sha256"] != hashlib.sha256(data).hexdigest()
        ):
            return None
        return Hit(data=data, encode_s=float(header["encode_s"]))
    except (ValueError, KeyError, TypeError, UnicodeDecodeError):
        return None
