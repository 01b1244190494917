"""The conformance suite: does a codec keep the contract of :mod:`bench.codec`?

Run it with ``bench check CODEC`` or from pytest (:mod:`bench.testing`). Checks, on real Kodak
crops of awkward sizes (64x96, 37x53, 1x1 and a 192x176 crop):

* ``encode``: returns ``bytes``; ``deterministic``: the same image encodes to the same bytes;
* ``prefixes``: every prefix length (all of them for short streams, else all up to 256 bytes
  and 200 spread over the rest) decodes to ``(H, W, 3)`` uint8, except a leading run of lengths
  that raise :class:`~bench.codec.PrefixTooShort`;
* ``monotone``: PSNR-RGB at 16 cut points does not fall by more than ``tolerance_db``;
* ``fresh-process``: decoding a prefix in a new Python process gives identical pixels;
* ``full-quality``: the whole stream reaches the codec's ``full_stream_psnr`` (images >= 16x16).

Rate-ladder codecs get the same checks over their settings instead of prefixes.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from bench.codec import PrefixTooShort, ProgressiveCodec, RateLadderCodec

#: (name, source image, top, left, height, width): crops of the bundled Kodak images.
CONFORMANCE_CROPS = (
    ("64x96", "kodim23.png", 200, 300, 64, 96),
    ("37x53", "kodim05.png", 101, 203, 37, 53),
    ("1x1", "kodim01.png", 10, 10, 1, 1),
    ("192x176", "kodim15.png", 120, 260, 192, 176),
)


@dataclass(frozen=True)
class CheckResult:
    """One check on one image; ``detail`` explains a failure (or gives a figure)."""

    check: str
    image: str
    passed: bool
    detail: str = ""


def conformance_images() -> list[tuple[str, np.ndarray]]:
    """The crops of :data:`CONFORMANCE_CROPS`, read from the verified bundled Kodak set."""
    from bench.datasets import load_manifest, verify
    from bench.images import load_rgb

    paths = {p.name: p for p in verify(load_manifest("kodak"))}
    crops = []
    for name, source, top, left, height, width in CONFORMANCE_CROPS:
        image = load_rgb(paths[source])
        crops.append((name, np.ascontiguousarray(image[top : top + height, left : left + width])))
    return crops


def _prefix_lengths(size: int) -> list[int]:
    if size <= 512:
        return list(range(size + 1))
    spread = np.linspace(257, size, 200).astype(int).tolist()
    return sorted(set(range(257)) | set(spread))


def fresh_process_environment() -> dict[str, str]:
    """The environment for a fresh decoding process: this one's, plus this process's torch
    thread count when torch is loaded (``OMP_NUM_THREADS``). Float kernels may round differently
    with another number of threads; the fresh-process check is about state travelling outside
    the bytes, not about thread counts."""
    env = dict(os.environ)
    torch = sys.modules.get("torch")
    if torch is not None:
        env["OMP_NUM_THREADS"] = str(torch.get_num_threads())
    return env


def _decode_in_fresh_process(
    name: str, params: dict, data: bytes, plugin_files: Sequence[str]
) -> np.ndarray | str:
    with tempfile.TemporaryDirectory() as tmp:
        src, dst = Path(tmp) / "prefix.bin", Path(tmp) / "out.npy"
        src.write_bytes(data)
        command = [
            sys.executable,
            "-m",
            "bench.conformance",
            "--codec",
            name,
            "--params",
            json.dumps(params),
            str(src),
            str(dst),
        ]
        for plugin in plugin_files:
            command += ["--plugin", str(plugin)]
        done = subprocess.run(
            command, capture_output=True, text=True, timeout=600, env=fresh_process_environment()
        )
        if done.returncode != 0:
            return f"fresh process failed: {done.stderr.strip().splitlines()[-1:]}"
        return np.load(dst)


def _psnr(a: np.ndarray, b: np.ndarray) -> float:
    from bench.metrics import psnr_rgb

    return psnr_rgb(a, b)


def _check_progressive(
    codec: ProgressiveCodec,
    name: str,
    params: dict,
    image_name: str,
    image: np.ndarray,
    plugin_files: Sequence[str],
    tolerance_db: float,
) -> list[CheckResult]:
    results = []

    def add(check: str, passed: bool, detail: str = "") -> None:
        results.append(CheckResult(check, image_name, bool(passed), detail))

    stream = codec.encode(image)
    add("encode", isinstance(stream, bytes), f"{len(stream)} bytes")
    if not isinstance(stream, bytes):
        return results
    add("deterministic", codec.encode(image) == stream)
    header, decoded, problem = None, {}, ""
    for length in _prefix_lengths(len(stream)):
        try:
            out = codec.decode(stream[:length])
        except PrefixTooShort:
            if header is not None:
                problem = f"PrefixTooShort at {length} bytes after decoding at {header}"
                break
            continue
        except Exception as exc:
            problem = f"{type(exc).__name__} at {length} bytes: {exc}"
            break
        if header is None:
            header = length
        if not isinstance(out, np.ndarray) or out.shape != image.shape or out.dtype != np.uint8:
            problem = (
                f"{length} bytes gave {getattr(out, 'shape', out)} {getattr(out, 'dtype', '')}"
            )
            break
        decoded[length] = out
    if header is None and not problem:
        problem = "no prefix decodes, not even the whole stream"
    add("prefixes", not problem, problem or f"header {header} bytes of {len(stream)}")
    if problem:
        return results
    cuts = sorted({int(x) for x in np.linspace(header, len(stream), 16)})
    psnrs = [_psnr(image, codec.decode(stream[:c])) for c in cuts]
    worst = max((max(psnrs[:i]) - p for i, p in enumerate(psnrs) if i), default=0.0)
    add(
        "monotone",
        worst <= tolerance_db,
        f"largest PSNR drop {worst:.3f} dB (tolerance {tolerance_db} dB)",
    )
    for length in sorted({header, (header + len(stream)) // 2, len(stream)}):
        fresh = _decode_in_fresh_process(name, params, stream[:length], plugin_files)
        same = isinstance(fresh, np.ndarray) and np.array_equal(
            fresh, codec.decode(stream[:length])
        )
        add(
            "fresh-process",
            same,
            f"{length} bytes"
            + ("" if same else f": {fresh if isinstance(fresh, str) else 'pixels differ'}"),
        )
    bound = codec.full_stream_psnr
    if bound is not None and min(image.shape[:2]) >= 16:
        full = psnrs[-1]
        add("full-quality", full >= bound, f"{full:.2f} dB (stated >= {bound} dB)")
    return results


def _check_ladder(
    codec: RateLadderCodec,
    name: str,
    params: dict,
    image_name: str,
    image: np.ndarray,
    plugin_files: Sequence[str],
    tolerance_db: float,
) -> list[CheckResult]:
    results = []
    settings = list(codec.settings())
    picks = sorted({0, len(settings) // 2, len(settings) - 1})
    psnrs = []
    for i in picks:
        data = codec.encode_at(image, settings[i])
        results.append(
            CheckResult(
                "deterministic",
                image_name,
                codec.encode_at(image, settings[i]) == data,
                f"setting {settings[i]}",
            )
        )
        out = codec.decode(data)
        ok = isinstance(out, np.ndarray) and out.shape == image.shape and out.dtype == np.uint8
        results.append(CheckResult("decode", image_name, ok, f"setting {settings[i]}"))
        if not ok:
            return results
        psnrs.append(_psnr(image, out))
        fresh = _decode_in_fresh_process(name, params, data, plugin_files)
        results.append(
            CheckResult(
                "fresh-process",
                image_name,
                isinstance(fresh, np.ndarray) and np.array_equal(fresh, out),
                f"setting {settings[i]}",
            )
        )
    worst = max((max(psnrs[:i]) - p for i, p in enumerate(psnrs) if i), default=0.0)
    results.append(
        CheckResult(
            "monotone",
            image_name,
            worst <= tolerance_db,
            f"largest PSNR drop {worst:.3f} dB over settings",
        )
    )
    return results


def run_checks(
    name: str,
    params: dict[str, Any] | None = None,
    *,
    plugin_files: Sequence[str] = (),
    factory: Callable[..., Any] | None = None,
    tolerance_db: float = 0.25,
    images: Sequence[tuple[str, np.ndarray]] | None = None,
) -> list[CheckResult]:
    """Run every check on codec ``name`` (built by ``factory(**params)`` or the registry)."""
    params = params or {}
    if factory is None:
        from bench.registry import load_registry

        factory = load_registry(plugin_files).spec(name).factory
    codec = factory(**params)
    check = _check_progressive if isinstance(codec, ProgressiveCodec) else _check_ladder
    results: list[CheckResult] = []
    for image_name, image in images or conformance_images():
        try:
            results += check(codec, name, params, image_name, image, plugin_files, tolerance_db)
        except Exception as exc:
            results.append(
                CheckResult("no-exception", image_name, False, f"{type(exc).__name__}: {exc}")
            )
    return results


def _decode_main(argv: Sequence[str] | None = None) -> None:
    """``python -m bench.conformance``: decode a prefix file in this (fresh) process."""
    parser = argparse.ArgumentParser(description=_decode_main.__doc__)
    parser.add_argument("--codec", required=True)
    parser.add_argument("--params", default="{}")
    parser.add_argument("--plugin", action="append", default=[])
    parser.add_argument("prefix")
    parser.add_argument("output")
    args = parser.parse_args(argv)
    from bench.registry import load_registry

    codec = load_registry(args.plugin).spec(args.codec).factory(**json.loads(args.params))
    np.save(args.output, codec.decode(Path(args.prefix).read_bytes()))


if __name__ == "__main__":
    _decode_main()
