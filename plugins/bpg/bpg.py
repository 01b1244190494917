"""``bpg``: the real BPG 4:4:4 anchor, calling Fabrice Bellard's ``bpgenc``/``bpgdec``.

The PLONQ paper's anchor is ``bpgenc -e x265 -q QP -f 444``. This codec runs exactly that, plus
the options that pin bpgenc's defaults (so a differently configured build cannot change them
silently): ``-c ycbcr`` (BT.601 YCbCr, bpgenc's default colour space; full range because
``-limitedrange`` is not given), ``-b 8`` (8-bit samples) and ``-m 8`` (compression level 8,
bpgenc's default, which selects x265's ``veryslow`` preset). CompressAI's published BPG 4:4:4
Kodak curve was made with the same options (``-f 444 -e x265 -c ycbcr -b 8``, default ``-m``).

The stream handed to the decoder is the whole ``.bpg`` file; rate = 8 x its size / (H x W).
It is a rate ladder over QP 51 (lowest rate) to 0. Binaries: ``$BENCH_BPGENC`` and
``$BENCH_BPGDEC`` if set, else ``bpgenc``/``bpgdec`` on ``PATH``. Their version string (the
first line of ``bpgenc -h``) goes into :attr:`CodecInfo.external`.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from bench.codec import CodecInfo, CodecUnavailable, RateLadderCodec, check_image

PLUGIN_VERSION = "1.0"
QP_RANGE = (0, 51)
#: Seconds allowed for one bpgenc or bpgdec call.
CALL_TIMEOUT = 600

MISSING_REASON = "bpgenc not found on PATH or $BENCH_BPGENC"
MISSING_DECODER = "bpgdec not found on PATH or $BENCH_BPGDEC"
MISSING_FIX = (
    "build libbpg from https://bellard.org/bpg/ (make; sudo make install) "
    "or set BENCH_BPGENC/BENCH_BPGDEC"
)


def find_binary(env: str, name: str) -> str | None:
    """``$env`` if it names an executable file, else ``name`` on ``PATH``, else ``None``."""
    configured = os.environ.get(env)
    if configured:
        path = shutil.which(configured)
        return path if path else None
    return shutil.which(name)


def find_binaries() -> tuple[str, str]:
    """Paths of bpgenc and bpgdec; :class:`~bench.CodecUnavailable` if either is missing."""
    encoder = find_binary("BENCH_BPGENC", "bpgenc")
    if encoder is None:
        raise CodecUnavailable(MISSING_REASON, MISSING_FIX)
    decoder = find_binary("BENCH_BPGDEC", "bpgdec")
    if decoder is None:
        raise CodecUnavailable(MISSING_DECODER, MISSING_FIX)
    return encoder, decoder


def check_available() -> None:
    """Cheap availability test for ``bench codecs``: both binaries must be found."""
    find_binaries()


def bpgenc_command(binary: str, qp: int, in_path: str | Path, out_path: str | Path) -> list[str]:
    """The bpgenc command line for one QP: the paper's ``-e x265 -q QP -f 444`` with bpgenc's
    defaults pinned (``-c ycbcr -b 8 -m 8``; see the module docstring)."""
    if isinstance(qp, bool) or not isinstance(qp, int) or not QP_RANGE[0] <= qp <= QP_RANGE[1]:
        raise ValueError(f"QP must be an integer in 0..51, got {qp!r}")
    return [
        str(binary),
        "-o",
        str(out_path),
        "-q",
        str(qp),
        "-f",
        "444",
        "-e",
        "x265",
        "-c",
        "ycbcr",
        "-b",
        "8",
        "-m",
        "8",
        str(in_path),
    ]


def bpgdec_command(binary: str, in_path: str | Path, out_path: str | Path) -> list[str]:
    """The bpgdec command line: decode to an 8-bit PNG."""
    return [str(binary), "-o", str(out_path), "-b", "8", str(in_path)]


_VERSION = re.compile(r"BPG Image (?:Encoder|Decoder) version\s+(\S+)")


def parse_version(help_text: str) -> str | None:
    """The version in bpgenc's/bpgdec's usage text (``BPG Image Encoder version 0.9.8``)."""
    match = _VERSION.search(help_text)
    return match.group(1) if match else None


def binary_version(binary: str) -> str:
    """Version string of a bpgenc/bpgdec binary, from its usage text (it exits non-zero)."""
    try:
        done = subprocess.run(
            [binary, "-h"], capture_output=True, text=True, timeout=30, errors="replace"
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"unknown ({type(exc).__name__})"
    return parse_version(done.stdout + done.stderr) or "unknown"


def _run(command: list[str]) -> None:
    done = subprocess.run(command, capture_output=True, text=True, timeout=CALL_TIMEOUT)
    if done.returncode != 0:
        tail = (done.stderr or done.stdout).strip().splitlines()[-3:]
        raise RuntimeError(f"{Path(command[0]).name} failed ({done.returncode}): {tail}")


class BpgCodec(RateLadderCodec):
    """bpgenc/bpgdec 4:4:4 over a QP ladder; see the module docstring."""

    name = "bpg"
    version = PLUGIN_VERSION
    description = "BPG 4:4:4 (bpgenc -e x265 -q QP -f 444 -c ycbcr -b 8 -m 8), non-progressive"

    def __init__(
        self, qp_min: int = QP_RANGE[0], qp_max: int = QP_RANGE[1], cache: bool = False
    ) -> None:
        self.encoder, self.decoder = find_binaries()
        for label, value in (("qp_min", qp_min), ("qp_max", qp_max)):
            if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= 51:
                raise ValueError(f"{label} must be an integer in 0..51, got {value!r}")
        if qp_min > qp_max:
            raise ValueError(f"qp_min {qp_min} is above qp_max {qp_max}")
        if not isinstance(cache, bool):
            raise ValueError(f"cache must be True or False, got {cache!r}")
        self.qp_min, self.qp_max, self.use_cache = qp_min, qp_max, cache
        self.external = {
            "bpgenc": binary_version(self.encoder),
            "bpgdec": binary_version(self.decoder),
        }
        self._cache = None
        if cache:
            from plugins.bpg.ladder_cache import LadderCache

            identity = {
                "version": self.version,
                "command": bpgenc_command("bpgenc", 0, "in.png", "out.bpg"),
                "bpgenc": self.external["bpgenc"],
                "bpgenc_path": self.encoder,
            }
            self._cache = LadderCache(self.name, identity)

    def settings(self) -> list[int]:
        """QPs from ``qp_max`` (lowest rate) down to ``qp_min`` (highest rate)."""
        return list(range(self.qp_max, self.qp_min - 1, -1))

    def info(self) -> CodecInfo:
        return CodecInfo(
            name=self.name,
            version=self.version,
            description=self.description,
            parameters={
                "qp_min": self.qp_min,
                "qp_max": self.qp_max,
                "command": " ".join(bpgenc_command("bpgenc", 0, "in.png", "out.bpg")[1:]).replace(
                    "-q 0", "-q QP"
                ),
                "rate": "whole .bpg file",
                "cache": self.use_cache,
                "cache_timing": (
                    "a cache hit's encode_s is the lookup time; the bpgenc time measured when "
                    "the entry was made is stored in the entry"
                    if self.use_cache
                    else "every encode runs bpgenc"
                ),
            },
            external=self.external,
        )

    def encode_at(self, image: np.ndarray, setting: Any) -> bytes:
        check_image(image)
        qp = setting
        if isinstance(qp, bool) or not isinstance(qp, int) or not self.qp_min <= qp <= self.qp_max:
            raise ValueError(f"QP must be an integer in {self.qp_min}..{self.qp_max}, got {qp!r}")
        image = np.ascontiguousarray(image)
        if self._cache is None:
            return self._encode(image, qp)
        data, _, _ = self._cache.fetch(image, qp, lambda: self._encode(image, qp))
        return data

    def _encode(self, image: np.ndarray, qp: int) -> bytes:
        from bench.images import save_png

        with tempfile.TemporaryDirectory(prefix="bench-bpg-") as tmp:
            source, target = Path(tmp) / "in.png", Path(tmp) / "out.bpg"
            save_png(source, image)
            _run(bpgenc_command(self.encoder, qp, source, target))
            return target.read_bytes()

    def decode(self, data: bytes) -> np.ndarray:
        from bench.images import load_rgb

        with tempfile.TemporaryDirectory(prefix="bench-bpg-") as tmp:
            source, target = Path(tmp) / "in.bpg", Path(tmp) / "out.png"
            source.write_bytes(bytes(data))
            _run(bpgdec_command(self.decoder, source, target))
            return np.ascontiguousarray(load_rgb(target))
