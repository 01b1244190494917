"""How much does progressivity cost JPEG 2000? Layered stream cut at a budget vs. a single layer.

For each Kodak image and each target bpp, compare PSNR-RGB of

* the ``jpeg2000`` codec's layered stream (one layer per bpp of the grid 0.1..2.0 plus a final
  unconstrained layer, PLT markers) cut at ``floor(bpp * H * W / 8)`` bytes and decoded from that
  prefix alone, against
* a separate single-layer Pillow/OpenJPEG encode of the same image aimed at that budget, fitted to
  it the same way (:func:`plugins.jpeg2000.codec.fit_rates`: the whole stream must be at most
  the budget), with the same 9/7 wavelet, levels and MCT, no PLT, COM removed likewise.

The gap is ``single - layered`` in dB (positive: the layered stream is worse). The requirement
checked is a gap below 0.5 dB at every target bpp. This is a script, not a test::

    .venv/bin/python benchmarks/jpeg2000_layers_vs_single.py                 # all 24, 20 points
    .venv/bin/python benchmarks/jpeg2000_layers_vs_single.py --images 1,5 --bpp 0.1,1.0
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench.grid import budget_bytes  # noqa: E402
from bench.metrics import psnr_rgb  # noqa: E402
from plugins.jpeg2000.codec import (  # noqa: E402
    DEFAULT_LAYER_BPP,
    Jpeg2000Codec,
    decode_j2k,
    encode_j2k,
    fit_rates,
)

KODAK = Path(__file__).resolve().parents[1] / "datasets" / "kodak"
REQUIREMENT_DB = 0.5


def load(path: Path) -> np.ndarray:
    from PIL import Image

    with Image.open(path) as im:
        return np.ascontiguousarray(np.asarray(im.convert("RGB"), dtype=np.uint8))


def single_layer(image: np.ndarray, budget: int, levels: int) -> tuple[float, int]:
    """PSNR and size of a one-layer encode fitted to ``budget`` bytes (NaN if none fits)."""
    height, width = image.shape[:2]
    stream = fit_rates(
        lambda targets: encode_j2k(image, targets, levels, plt=False),
        lambda s: [len(s)],
        [budget],
    )
    if len(stream) > budget:
        return math.nan, len(stream)
    return psnr_rgb(image, decode_j2k(stream, height, width)), len(stream)


def run_image(args: tuple[Path, tuple[float, ...], int]) -> dict:
    path, points, levels = args
    image = load(path)
    height, width = image.shape[:2]
    codec = Jpeg2000Codec(levels=levels)
    codec.prepare(DEFAULT_LAYER_BPP)
    start = time.perf_counter()
    stream = codec.encode(image)
    encode_s = time.perf_counter() - start
    rows = []
    for bpp in points:
        budget = budget_bytes(bpp, height, width)
        start = time.perf_counter()
        layered = psnr_rgb(image, codec.decode(stream[:budget]))
        decode_s = time.perf_counter() - start
        single, single_bytes = single_layer(image, budget, levels)
        rows.append(
            {
                "bpp": bpp,
                "budget": budget,
                "layered": layered,
                "single": single,
                "single_bytes": single_bytes,
                "decode_s": decode_s,
            }
        )
    return {"image": path.stem, "encode_s": encode_s, "stream_bytes": len(stream), "rows": rows}


def parse_images(text: str | None) -> list[Path]:
    if not text:
        return [KODAK / f"kodim{i:02d}.png" for i in range(1, 25)]
    out = []
    for item in text.split(","):
        item = item.strip()
        out.append(KODAK / (f"kodim{int(item):02d}.png" if item.isdigit() else f"{item}.png"))
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", help="comma-separated numbers (1..24) or names (kodim05)")
    parser.add_argument("--bpp", help="comma-separated target bpp (default 0.1..2.0 step 0.1)")
    parser.add_argument("--levels", type=int, default=5)
    parser.add_argument("--jobs", type=int, default=1, help="worker processes")
    parser.add_argument("--per-image", action="store_true", help="also print every image")
    args = parser.parse_args(argv)

    points = tuple(float(v) for v in args.bpp.split(",")) if args.bpp else tuple(DEFAULT_LAYER_BPP)
    images = parse_images(args.images)
    missing = [p for p in images if not p.exists()]
    if missing:
        parser.error(f"missing images: {', '.join(map(str, missing))}")

    tasks = [(path, points, args.levels) for path in images]
    start = time.perf_counter()
    if args.jobs > 1:
        with ProcessPoolExecutor(args.jobs) as pool:
            results = list(pool.map(run_image, tasks))
    else:
        results = []
        for task in tasks:
            results.append(run_image(task))
            print(f"  done {task[0].stem} ({time.perf_counter() - start:.0f} s)", flush=True)

    if args.per_image:
        for result in results:
            print(f"\n{result['image']}: encode {result['encode_s']:.2f} s")
            for row in result["rows"]:
                gap = row["single"] - row["layered"]
                print(
                    f"  {row['bpp']:4.1f} bpp  layered {row['layered']:6.2f}  "
                    f"single {row['single']:6.2f}  gap {gap:+.2f}"
                )

    print(
        f"\nJPEG 2000 layered (cut at budget) vs single layer, PSNR-RGB, {len(results)} images"
        f", levels={args.levels}"
    )
    print(f"{'bpp':>5} {'layered':>8} {'single':>8} {'mean gap':>9} {'worst gap':>10}  worst image")
    all_gaps = []
    failures = []
    for i, bpp in enumerate(points):
        layered = np.array([r["rows"][i]["layered"] for r in results])
        single = np.array([r["rows"][i]["single"] for r in results])
        gaps = single - layered
        ok = np.isfinite(gaps)
        if not ok.any():
            print(f"{bpp:5.1f} {'-':>8} {'-':>8} {'-':>9} {'-':>10}  (undecodable)")
            continue
        worst = int(np.nanargmax(np.where(ok, gaps, -np.inf)))
        all_gaps.extend(gaps[ok].tolist())
        if gaps[worst] >= REQUIREMENT_DB:
            failures.append(bpp)
        print(
            f"{bpp:5.1f} {np.nanmean(layered):8.2f} {np.nanmean(single):8.2f} "
            f"{np.nanmean(gaps):+9.3f} {gaps[worst]:+10.3f}  {results[worst]['image']}"
        )
    encode_times = [r["encode_s"] for r in results]
    decode_times = [row["decode_s"] for r in results for row in r["rows"]]
    print(
        f"\nmean gap {np.mean(all_gaps):+.3f} dB, worst gap {np.max(all_gaps):+.3f} dB "
        f"(requirement: < {REQUIREMENT_DB} dB at every bpp: "
        f"{'met' if not failures else 'NOT met at ' + ', '.join(map(str, failures))})"
    )
    print(
        f"layered encode {np.mean(encode_times):.2f} s/image (incl. budget fitting), "
        f"decode {np.mean(decode_times) * 1000:.0f} ms/point; "
        f"total {time.perf_counter() - start:.0f} s"
    )
    return 0 if not failures else 1


if __name__ == "__main__":
    raise SystemExit(main())
