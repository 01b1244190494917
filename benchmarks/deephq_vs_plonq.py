"""DeepHQ against PLONQ on the same base weights, side by side in one process.

For each Kodak image: encode once with each codec, cut at the harness's budgets
(``floor(bpp * H * W / 8)`` bytes), decode every prefix, PSNR-RGB; then the BD-rate (PCHIP) of
DeepHQ against PLONQ on the mean curve and per image, and the median decode time per point of
both (after one warm-up decode), measured alternately in the same process.

    python benchmarks/deephq_vs_plonq.py [--images kodim01,kodim05] [--weights FILE] [--masks 0|1]
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import numpy as np
from PIL import Image

from bench.bdrate import bd_rate
from bench.grid import budget_bytes
from bench.metrics import psnr_rgb
from plugins.deephq.codec import DEFAULT_WEIGHTS, DeepHQCodec
from plugins.plonq.codec import PlonqCodec

KODAK = Path(__file__).resolve().parents[1] / "datasets" / "kodak"
GRID = [0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.6, 0.8, 1.0, 1.2, 1.4]


def curve(codec, image: np.ndarray) -> tuple[list[float], list[float], list[float]]:
    data = codec.encode(image)
    codec.decode(data)  # warm-up
    h, w = image.shape[:2]
    rates, psnrs, times = [], [], []
    for bpp in GRID:
        n = min(budget_bytes(bpp, h, w), len(data))
        t0 = time.perf_counter()
        rec = codec.decode(data[:n])
        times.append(time.perf_counter() - t0)
        rates.append(8.0 * n / (h * w))
        psnrs.append(psnr_rgb(image, rec))
    return rates, psnrs, times


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--images", default="kodim01,kodim05,kodim15,kodim23")
    ap.add_argument("--weights", default=DEFAULT_WEIGHTS)
    ap.add_argument("--masks", type=int, default=1)
    args = ap.parse_args()
    import torch

    torch.set_num_threads(1)
    codecs = {
        "deephq": DeepHQCodec(weights=args.weights, masks=bool(args.masks)),
        "plonq": PlonqCodec(),
    }
    curves = {name: [] for name in codecs}
    times = {name: [] for name in codecs}
    for name in args.images.split(","):
        image = np.array(Image.open(KODAK / f"{name}.png").convert("RGB"))
        for label, codec in codecs.items():
            r, p, t = curve(codec, image)
            curves[label].append((r, p))
            times[label] += t
        bd = bd_rate(curves["plonq"][-1][0], curves["plonq"][-1][1], *curves["deephq"][-1])
        print(f"{name}: BD-rate deephq vs plonq {bd.value:+.2f} %", flush=True)
    mean = {
        k: (np.mean([c[0] for c in v], 0), np.mean([c[1] for c in v], 0)) for k, v in curves.items()
    }
    print("bpp    " + " ".join(f"{b:6.2f}" for b in GRID))
    for k, (_rates, p) in mean.items():
        print(f"{k:7s}" + " ".join(f"{x:6.2f}" for x in p))
    bd = bd_rate(*mean["plonq"], *mean["deephq"])
    print(f"BD-rate of deephq (masks={bool(args.masks)}) vs plonq, mean curve: {bd.value:+.2f} %")
    td, tp = statistics.median(times["deephq"]), statistics.median(times["plonq"])
    print(f"median decode per point: deephq {td:.3f} s, plonq {tp:.3f} s, ratio {td / tp:.2f}")


if __name__ == "__main__":
    main()
