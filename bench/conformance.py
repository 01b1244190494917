"""The conformance suite: does a codec keep the contract of :mod:`bench.codec`?

Run it with ``bench check CODEC`` or from pytest (:mod:`bench.testing`). It runs on real Kodak
crops of awkward sizes (64x96, 37x53, 1x1 and a 192x176 crop, :data:`CONFORMANCE_CROPS`).

Progressive codecs, per image:

* ``encode``: returns ``bytes``; ``deterministic``: the same image encodes to the same bytes.
* ``prefixes``: every prefix length from 0 up to the first one that decodes (the header) must
  raise :class:`~bench.codec.PrefixTooShort`; from there, **every** length through
  :data:`DENSE_BYTES` bytes past the header (on the :data:`DENSE_CROP` crop), then
  :data:`SPREAD_CUTS` lengths spread evenly over the rest, with the last two (all but one
  byte, the whole stream), must decode to ``(H, W, 3)`` uint8 without raising. Why the dense
  part stops there: a decoder's code paths for a cut are a cut inside the header, a cut right
  after it, and a cut at each bit offset inside the first symbols and the first chunk (the
  learned codecs' default chunk is 1024 bits, 128 bytes); every later cut runs those same
  paths again at another offset, so spread cuts cover them. Why one crop: those paths do not
  depend on the image's size, and another image would run them again at other offsets; the
  37x53 crop, whose sides are multiples of no block size or latent stride, is the one where a
  size-dependent fault (padding, a partial block) would show, and the cheapest crop to decode
  but the single pixel. The other crops get the header run and the spread cuts. A stream up to
  ``SPREAD_CUTS`` bytes past its header (``DENSE_BYTES + SPREAD_CUTS`` on the dense crop) is
  decoded at every length.
* ``monotone``: PSNR-RGB at the header, the end of the dense part and each spread cut (the
  reconstructions the ``prefixes`` check already made) does not fall by more than
  ``tolerance_db`` below the best earlier cut, on images of at least
  :data:`QUALITY_MIN_SIDE` pixels a side. On a smaller one (the single pixel) the curve is
  recorded but not judged: PSNR over a handful of samples is noise, and a codec that lowers the
  mean squared error of every image may still move one pixel away from its value (measured: HC's
  trained weights lose 1.5 dB on the 1x1 crop when its second latent arrives).
* ``fresh-process``: the header, the middle cut and the whole stream decode to identical pixels
  in a new Python process that never encoded anything (no state travels outside the bytes).
  All fresh-process decodes of one ``run_checks`` (every image) share **one** new process.
* ``full-quality``: the whole stream reaches the codec's ``full_stream_psnr`` (images of at
  least :data:`QUALITY_MIN_SIDE` a side).

Rate-ladder codecs, per image, at the lowest, middle and highest setting: ``deterministic``,
``decode`` (shape and dtype), ``fresh-process`` (same single process) and ``monotone`` over
those settings.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Collection, Sequence
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
#: Bytes past the header (the shortest decodable prefix) decoded at every length...
DENSE_BYTES = 128
#: ...on the image of this name (the others: the header run and the spread cuts).
DENSE_CROP = "37x53"
#: Cuts spread evenly over the stream after the dense part (the whole stream included).
SPREAD_CUTS = 32
#: Shortest side (pixels) of an image whose PSNR the ``monotone`` and ``full-quality`` checks
#: judge; a smaller image's PSNR covers too few samples to say anything about the codec.
QUALITY_MIN_SIDE = 16

Progress = Callable[[str], None]


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


def prefix_lengths_after_header(
    header: int, size: int, dense_bytes: int = DENSE_BYTES
) -> list[int]:
    """The prefix lengths the ``prefixes`` check decodes from ``header`` (the shortest decodable
    prefix, in bytes) to ``size`` (the stream's length): every length through ``header +
    dense_bytes``, then :data:`SPREAD_CUTS` spread lengths ending with ``size - 1`` and
    ``size``; every length when the stream is not much longer than that."""
    dense_end = header + dense_bytes
    if size <= dense_end + SPREAD_CUTS:
        return list(range(header, size + 1))
    spread = np.linspace(dense_end, size, SPREAD_CUTS + 1).astype(int).tolist()
    return sorted(set(range(header, dense_end + 1)) | set(spread) | {size - 1})


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


def decode_in_fresh_process(
    name: str, params: dict, streams: Sequence[bytes], plugin_files: Sequence[str]
) -> list[np.ndarray | str]:
    """Decode each of ``streams`` with codec ``name`` (built from ``params``) in ONE new Python
    process; per stream, the pixels or a message saying why that decode failed."""
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        inputs = []
        for i, data in enumerate(streams):
            inputs.append(folder / f"{i}.bin")
            inputs[-1].write_bytes(data)
        command = [sys.executable, "-m", "bench.conformance", "--codec", name]
        command += ["--params", json.dumps(params), "--out", str(folder)]
        for plugin in plugin_files:
            command += ["--plugin", str(plugin)]
        done = subprocess.run(
            [*command, *map(str, inputs)],
            capture_output=True,
            text=True,
            timeout=1200,
            env=fresh_process_environment(),
        )
        if done.returncode != 0:
            why = f"fresh process failed: {done.stderr.strip().splitlines()[-1:]}"
            return [why] * len(streams)
        results: list[np.ndarray | str] = []
        for path in inputs:
            error = path.with_suffix(".error")
            pixels = path.with_suffix(".npy")
            results.append(error.read_text() if error.exists() else np.load(pixels))
        return results


def _psnr(a: np.ndarray, b: np.ndarray) -> float:
    from bench.metrics import psnr_rgb

    return psnr_rgb(a, b)


def _db(value: float) -> str:
    return f"{value:.2f} dB" if math.isfinite(value) else "inf dB (lossless)"


def monotone_result(
    image_name: str,
    cuts: Sequence[Any],
    psnrs: Sequence[float],
    tolerance_db: float,
    where: Callable[[Any], str],
    judged: bool = True,
) -> CheckResult:
    """The ``monotone`` check over PSNR-RGB ``psnrs`` (dB) measured at ``cuts`` (increasing
    prefix lengths, or ladder settings), each named by ``where`` (e.g. ``"1200 bytes"``): the
    largest fall below the best earlier cut, which is 0 when PSNR never fell, must not exceed
    ``tolerance_db``. With ``judged`` false (an image under :data:`QUALITY_MIN_SIDE`) the fall
    is reported and the check passes."""
    worst, worst_at, best = 0.0, None, -math.inf
    for cut, value in zip(cuts, psnrs, strict=True):
        if value < best and best - value > worst:
            worst, worst_at = best - value, cut
        best = max(best, value)
    span = f"{_db(psnrs[0])} at {where(cuts[0])} to {_db(psnrs[-1])} at {where(cuts[-1])}"
    if worst_at is None:
        detail = f"PSNR never fell over {len(cuts)} cuts ({span})"
    else:
        detail = (
            f"largest PSNR drop {worst:.3f} dB, at {where(worst_at)} (tolerance {tolerance_db} "
            f"dB; {len(cuts)} cuts, {span})"
        )
    if not judged:
        return CheckResult("monotone", image_name, True, f"not judged (too small): {detail}")
    return CheckResult("monotone", image_name, worst <= tolerance_db, detail)


def _judged(image: np.ndarray) -> bool:
    """Whether the image is large enough for its PSNR to be judged."""
    return min(image.shape[:2]) >= QUALITY_MIN_SIDE


@dataclass
class _FreshJob:
    """A decode to repeat in the fresh process: ``expected`` are this process's pixels."""

    image: str
    label: str
    data: bytes
    expected: np.ndarray


def _decode_prefixes(
    codec: ProgressiveCodec, stream: bytes, shape: tuple[int, ...], dense_bytes: int
) -> tuple[int | None, dict[int, np.ndarray], str]:
    """Decode the prefixes of the ``prefixes`` check; returns the header length (``None`` when
    nothing decodes), the reconstructions by length, and the first problem found ("" if none)."""
    header, decoded = None, {}
    length, lengths = 0, iter(())
    while True:
        if header is None and length > len(stream):
            return None, decoded, "no prefix decodes, not even the whole stream"
        try:
            out = codec.decode(stream[:length])
        except PrefixTooShort:
            if header is not None:
                return (
                    header,
                    decoded,
                    f"PrefixTooShort at {length} bytes after decoding at {header}",
                )
            length += 1
            continue
        except Exception as exc:
            return header, decoded, f"{type(exc).__name__} at {length} bytes: {exc}"
        if not isinstance(out, np.ndarray) or out.shape != shape or out.dtype != np.uint8:
            gave = f"{getattr(out, 'shape', out)} {getattr(out, 'dtype', '')}"
            return header, decoded, f"{length} bytes gave {gave}"
        decoded[length] = out
        if header is None:
            header = length
            lengths = iter(prefix_lengths_after_header(header, len(stream), dense_bytes)[1:])
        length = next(lengths, None)
        if length is None:
            return header, decoded, ""


def _check_progressive(
    codec: ProgressiveCodec,
    image_name: str,
    image: np.ndarray,
    tolerance_db: float,
    dense_bytes: int,
) -> tuple[list[CheckResult], list[_FreshJob]]:
    """The progressive checks on one image; every length through ``dense_bytes`` past the
    header is decoded (0: the header and the spread cuts only)."""
    results: list[CheckResult] = []

    def add(check: str, passed: bool, detail: str = "") -> None:
        results.append(CheckResult(check, image_name, bool(passed), detail))

    stream = codec.encode(image)
    add("encode", isinstance(stream, bytes), f"{len(stream)} bytes")
    if not isinstance(stream, bytes):
        return results, []
    add("deterministic", codec.encode(image) == stream)
    size = len(stream)
    header, decoded, problem = _decode_prefixes(codec, stream, image.shape, dense_bytes)
    if problem:
        add("prefixes", False, problem)
        return results, []
    dense_end = min(size, header + dense_bytes)
    add(
        "prefixes",
        True,
        f"header {header} bytes of {size}; {len(decoded)} lengths decoded: every one to "
        f"{dense_end}, {len([n for n in decoded if n > dense_end])} spread cuts after",
    )
    cuts = [n for n in sorted(decoded) if n == header or n >= dense_end]
    psnrs = [_psnr(image, decoded[n]) for n in cuts]
    results.append(
        monotone_result(
            image_name, cuts, psnrs, tolerance_db, "{} bytes".format, judged=_judged(image)
        )
    )
    middle = min(decoded, key=lambda n: abs(n - (header + size) // 2))
    fresh = [
        _FreshJob(image_name, f"{n} bytes", stream[:n], decoded[n])
        for n in sorted({header, middle, size})
    ]
    bound = codec.full_stream_psnr
    if bound is not None and _judged(image):
        full = psnrs[-1]
        add("full-quality", full >= bound, f"{_db(full)} (stated >= {bound} dB)")
    return results, fresh


def _check_ladder(
    codec: RateLadderCodec, image_name: str, image: np.ndarray, tolerance_db: float
) -> tuple[list[CheckResult], list[_FreshJob]]:
    results, fresh = [], []
    settings = list(codec.settings())
    picks = sorted({0, len(settings) // 2, len(settings) - 1})
    psnrs = []
    for i in picks:
        data = codec.encode_at(image, settings[i])
        same = codec.encode_at(image, settings[i]) == data
        results.append(CheckResult("deterministic", image_name, same, f"setting {settings[i]}"))
        out = codec.decode(data)
        ok = isinstance(out, np.ndarray) and out.shape == image.shape and out.dtype == np.uint8
        results.append(CheckResult("decode", image_name, ok, f"setting {settings[i]}"))
        if not ok:
            return results, fresh
        psnrs.append(_psnr(image, out))
        fresh.append(_FreshJob(image_name, f"setting {settings[i]}", data, out))
    used = [settings[i] for i in picks]
    results.append(
        monotone_result(
            image_name, used, psnrs, tolerance_db, "setting {}".format, judged=_judged(image)
        )
    )
    return results, fresh


def _fresh_results(
    name: str, params: dict, jobs: Sequence[_FreshJob], plugin_files: Sequence[str]
) -> list[CheckResult]:
    outputs = decode_in_fresh_process(name, params, [job.data for job in jobs], plugin_files)
    results = []
    for job, fresh in zip(jobs, outputs, strict=True):
        same = isinstance(fresh, np.ndarray) and np.array_equal(fresh, job.expected)
        why = "" if same else f": {fresh if isinstance(fresh, str) else 'pixels differ'}"
        results.append(CheckResult("fresh-process", job.image, same, job.label + why))
    return results


def suite_plan(progressive: bool, tolerance_db: float, dense_images: Collection[str]) -> str:
    """One line saying what the suite checks on each image of a codec of that kind."""
    side = QUALITY_MIN_SIDE
    if progressive:
        on = ", ".join(dense_images) or "no image"
        return (
            "encode gives bytes; deterministic; prefixes: PrefixTooShort up to the header, "
            f"then every length to {DENSE_BYTES} bytes past it (on {on}) and {SPREAD_CUTS} "
            "cuts to the whole stream decode to (H, W, 3) uint8; monotone: PSNR-RGB never falls "
            f"more than {tolerance_db} dB (>= {side}x{side}); fresh-process: header, middle and "
            "whole stream decode alike in a new process; full-quality: the whole stream reaches "
            f"the stated PSNR (>= {side}x{side})"
        )
    return (
        "at the lowest, middle and highest setting: deterministic; decode to (H, W, 3) uint8; "
        f"fresh-process: identical pixels in a new process; monotone: PSNR-RGB never falls "
        f"more than {tolerance_db} dB (>= {side}x{side})"
    )


def run_checks(
    name: str,
    params: dict[str, Any] | None = None,
    *,
    plugin_files: Sequence[str] = (),
    factory: Callable[..., Any] | None = None,
    tolerance_db: float = 0.25,
    images: Sequence[tuple[str, np.ndarray]] | None = None,
    dense_images: Collection[str] = (DENSE_CROP,),
    progress: Progress | None = None,
) -> list[CheckResult]:
    """Run every check on codec ``name`` (built by ``factory(**params)`` or the registry) over
    ``images`` (``(name, (H, W, 3) uint8)`` pairs; default :func:`conformance_images`); the
    prefixes of the images named in ``dense_images`` are decoded at every length through
    :data:`DENSE_BYTES` past the header. ``progress`` receives one line per step (image
    started and finished, fresh process)."""
    params = params or {}
    report = progress or (lambda line: None)
    if factory is None:
        from bench.registry import load_registry

        factory = load_registry(plugin_files).spec(name).factory
    codec = factory(**params)
    progressive = isinstance(codec, ProgressiveCodec)
    report(f"checks ({codec.kind}): " + suite_plan(progressive, tolerance_db, dense_images))
    if images is None:
        images = conformance_images()
        crops = [
            f"{n} of {src} at row {top}, column {left}"
            for n, src, top, left, *_ in CONFORMANCE_CROPS
        ]
        report(
            f"images: {len(crops)} crops (height x width) of bundled Kodak images: "
            + "; ".join(crops)
        )
    else:
        images = list(images)
        report("images: " + ", ".join(f"{n} ({i.shape[0]}x{i.shape[1]})" for n, i in images))
    results: list[CheckResult] = []
    fresh: list[_FreshJob] = []
    for i, (image_name, image) in enumerate(images, 1):
        start = time.perf_counter()
        report(f"[{i}/{len(images)}] {image_name}: encoding, decoding prefixes")
        try:
            if progressive:
                dense_bytes = DENSE_BYTES if image_name in dense_images else 0
                found, jobs = _check_progressive(
                    codec, image_name, image, tolerance_db, dense_bytes
                )
            else:
                found, jobs = _check_ladder(codec, image_name, image, tolerance_db)
        except Exception as exc:
            why = f"{type(exc).__name__}: {exc}"
            found, jobs = [CheckResult("no-exception", image_name, False, why)], []
        results += found
        fresh += jobs
        failed = sum(not r.passed for r in found)
        verdict = f"{failed} failed" if failed else "all passed"
        seconds = time.perf_counter() - start
        report(
            f"[{i}/{len(images)}] {image_name}: {len(found)} checks, {verdict} ({seconds:.1f} s)"
        )
    if fresh:
        start = time.perf_counter()
        report(f"fresh process: decoding {len(fresh)} streams of {len(images)} images in one")
        try:
            results += _fresh_results(name, params, fresh, plugin_files)
        except Exception as exc:
            results.append(
                CheckResult("no-exception", "fresh process", False, f"{type(exc).__name__}: {exc}")
            )
        report(f"fresh process: done ({time.perf_counter() - start:.1f} s)")
    order = {image_name: i for i, (image_name, _) in enumerate(images)}
    return sorted(results, key=lambda r: order.get(r.image, len(order)))


def _decode_main(argv: Sequence[str] | None = None) -> None:
    """``python -m bench.conformance``: decode stream files in this (fresh) process, writing
    ``OUT/<stem>.npy`` for each, or ``OUT/<stem>.error`` with the exception when one fails."""
    parser = argparse.ArgumentParser(description=_decode_main.__doc__)
    parser.add_argument("--codec", required=True)
    parser.add_argument("--params", default="{}")
    parser.add_argument("--plugin", action="append", default=[])
    parser.add_argument("--out", required=True, type=Path)
    parser.add_argument("streams", nargs="+", type=Path)
    args = parser.parse_args(argv)
    from bench.params import bind
    from bench.registry import load_registry

    factory = load_registry(args.plugin).spec(args.codec).factory
    codec = factory(**bind(args.codec, factory, json.loads(args.params)))
    for path in args.streams:
        try:
            pixels = codec.decode(path.read_bytes())
        except Exception as exc:
            (args.out / f"{path.stem}.error").write_text(f"{type(exc).__name__}: {exc}")
            continue
        np.save(args.out / f"{path.stem}.npy", pixels)


if __name__ == "__main__":
    _decode_main()
