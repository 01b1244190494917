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
first line of ``bpgenc -h``) goes into :attr:`CodecInfo.external`. ``bpgdec`` writes PPM (PNG
writing would add about 0.15 s to every measured decode).

Narrow images: libbpg 0.9.8's bpgenc segfaults on images :data:`MIN_WIDTH` - 1 = 24 pixels
wide or narrower (an AVX2 bug in its bundled x265). Such an image is padded to
:data:`MIN_WIDTH` columns by repeating its last column, and the stream is an 8-byte crop header
(:data:`CROP_MAGIC`, then height and width as big-endian ``uint16``) followed by the padded
image's ``.bpg`` file; the decoder crops the decoded picture back. The rate counts every byte:
the header and the padded encoding. Images at least :data:`MIN_WIDTH` wide are untouched (the
stream is bpgenc's file, byte for byte). When a binary fails, the error names the signal (or
exit status) and the image size.

Threads: bpgenc's x265 runs its own thread pool (one thread per core) whatever ``--threads``
says; :meth:`BpgCodec.info` records it, so the report shows it with the parameters.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import struct
import subprocess
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from bench.codec import CodecInfo, CodecUnavailable, CorruptStream, RateLadderCodec, check_image

PLUGIN_VERSION = "1.0"
QP_RANGE = (0, 51)
#: Seconds allowed for one bpgenc or bpgdec call.
CALL_TIMEOUT = 600

#: Narrowest image bpgenc 0.9.8 encodes without crashing; narrower ones are padded to it.
MIN_WIDTH = 25
#: Start of a stream whose image was padded: then height, width (``>HH``), then the .bpg file.
CROP_MAGIC = b"BPGc"
CROP_HEADER = struct.Struct(">4sHH")

MISSING_REASON = "bpgenc not found on PATH or $BENCH_BPGENC"
MISSING_DECODER = "bpgdec not found on PATH or $BENCH_BPGDEC"
MISSING_FIX = (
    "build libbpg 0.9.8 from https://bellard.org/bpg/ with `apt-get install yasm cmake` and "
    "`make USE_BPGVIEW= bpgenc bpgdec` (the SDL viewer is not needed), then put bpgenc and "
    "bpgdec on PATH or set BENCH_BPGENC/BENCH_BPGDEC"
)


def find_binary(env: str, name: str) -> str | None:
    """``$env`` if it names an executable file, else ``name`` on ``PATH``, else ``None``."""
    configured = os.environ.get(env)
    if configured:
        path = shutil.which(configured)
        return path if path else None
    return shutil.which(name)


def _require(env: str, name: str, missing: str) -> str:
    """The binary :func:`find_binary` finds, or :class:`~bench.CodecUnavailable` saying why
    (``$env`` naming a missing or non-executable file is said as such)."""
    found = find_binary(env, name)
    if found is not None:
        return found
    configured = os.environ.get(env)
    if configured:
        what = "is not executable" if Path(configured).is_file() else "does not exist"
        raise CodecUnavailable(f"${env} is {configured!r}, which {what}", MISSING_FIX)
    raise CodecUnavailable(missing, MISSING_FIX)


def find_binaries() -> tuple[str, str]:
    """Paths of bpgenc and bpgdec; :class:`~bench.CodecUnavailable` if either is missing."""
    return (
        _require("BENCH_BPGENC", "bpgenc", MISSING_REASON),
        _require("BENCH_BPGDEC", "bpgdec", MISSING_DECODER),
    )


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
    """The bpgdec command line: decode to 8 bits (a PPM when ``out_path`` ends in ``.ppm``)."""
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


def _run(command: list[str], what: str) -> None:
    """Run a bpgenc/bpgdec command; ``RuntimeError`` naming the signal or exit status, ``what``
    (e.g. "encoding a 24x7 image") and the end of its output when it fails."""
    done = subprocess.run(command, capture_output=True, text=True, timeout=CALL_TIMEOUT)
    if done.returncode == 0:
        return
    code = done.returncode
    how = f"was killed by {signal.Signals(-code).name}" if code < 0 else f"exited with {code}"
    tail = " / ".join((done.stderr or done.stdout).strip().splitlines()[-3:])
    raise RuntimeError(f"{Path(command[0]).name} {how} {what}" + (f": {tail}" if tail else ""))


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
                "rate": "whole .bpg file (images under 25 px wide: 8-byte crop header + the "
                "padded image's file)",
                "threads": "x265's own pool, one thread per core, whatever --threads says",
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

        height, width = image.shape[:2]
        header = b""
        if width < MIN_WIDTH:  # see the module docstring: bpgenc crashes on narrow images
            image = np.pad(image, ((0, 0), (0, MIN_WIDTH - width), (0, 0)), mode="edge")
            header = CROP_HEADER.pack(CROP_MAGIC, height, width)
        with tempfile.TemporaryDirectory(prefix="bench-bpg-") as tmp:
            source, target = Path(tmp) / "in.png", Path(tmp) / "out.bpg"
            save_png(source, image)
            what = f"encoding a {image.shape[1]}x{image.shape[0]} image (width x height)"
            _run(bpgenc_command(self.encoder, qp, source, target), what)
            return header + target.read_bytes()

    def decode(self, data: bytes) -> np.ndarray:
        from bench.images import load_rgb

        data = bytes(data)
        crop = None
        if data.startswith(CROP_MAGIC):
            if len(data) < CROP_HEADER.size:
                raise CorruptStream("bpg stream ends inside its crop header")
            _, height, width = CROP_HEADER.unpack_from(data)
            crop, data = (height, width), data[CROP_HEADER.size :]
        with tempfile.TemporaryDirectory(prefix="bench-bpg-") as tmp:
            source, target = Path(tmp) / "in.bpg", Path(tmp) / "out.ppm"
            source.write_bytes(data)
            try:
                _run(bpgdec_command(self.decoder, source, target), f"decoding {len(data)} bytes")
            except RuntimeError as exc:
                raise CorruptStream(str(exc)) from None
            image = load_rgb(target)
        if crop is not None:
            if image.shape[0] != crop[0] or image.shape[1] < crop[1]:
                raise CorruptStream(f"bpg picture {image.shape[:2]} does not hold {crop}")
            image = image[:, : crop[1]]
        return np.ascontiguousarray(image)
