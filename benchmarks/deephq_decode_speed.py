"""DeepHQ's decode time per point against PLONQ's on the same base, side by side in one process
(issue 17 item 2: the goal is a DeepHQ/PLONQ ratio of at most 1.0).

For each Kodak image (default kodim05), both codecs encode once with their bundled weights (the
same base model); then every point of the run's bpp grid (default 0.1 to 2.0 step 0.1) is cut
as the harness cuts it (``floor(bpp * H * W / 8)`` bytes) and decoded by ``decode_full``: per
repeat, point after point, DeepHQ then PLONQ, after a warm-up (a decode of the whole stream:
PLONQ's level tables are built once per weights, DeepHQ's interval tables once per stream
header, as in a run's first decode of an image). Each point's time is the median
of ``--repeats``; the figures are means over the grid's points (what a run spends per point),
split as the codecs report it: header + ``z`` + hyper path, latent decoding, reconstruction +
synthesis (wall clock, ``time.perf_counter``), with the process CPU time of the whole decode
beside the wall total (less disturbed when other jobs share the cores). The CPU model and the
torch threads are printed beside them. A script, not a test::

    .venv/bin/python benchmarks/deephq_decode_speed.py
    .venv/bin/python benchmarks/deephq_decode_speed.py --images 5,19 --repeats 5 --order scale
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench.grid import DEFAULT_BPP_GRID  # noqa: E402
from bench.images import load_rgb  # noqa: E402
from benchmarks.timing import cpu_model, interleaved_medians, warm_up  # noqa: E402

KODAK = ROOT / "datasets" / "kodak"
GOAL = 1.0


def measure(codecs: dict, images: list[int], repeats: int) -> dict[str, dict[str, float]]:
    """Mean over images and grid points of each codec's median decode time and its split."""
    sums: dict[str, dict[str, float]] = {name: {} for name in codecs}
    points = 0
    for number in images:
        image = load_rgb(KODAK / f"kodim{number:02d}.png")
        pixels = image.shape[0] * image.shape[1]
        streams = {name: codec.encode(image) for name, codec in codecs.items()}
        # warm-up: tables, caches, allocator
        warm_up(lambda c=codec, s=streams[name]: c.decode_full(s) for name, codec in codecs.items())
        cuts = {
            name: [data[: min(len(data), int(np.floor(b * pixels / 8)))] for b in DEFAULT_BPP_GRID]
            for name, data in streams.items()
        }
        calls = {
            (point, name): lambda c=codec, cut=cuts[name][point]: c.decode_full(cut).seconds
            for point in range(len(DEFAULT_BPP_GRID))
            for name, codec in codecs.items()
        }
        for (_, name), split in interleaved_medians(calls, repeats).items():
            split = {"total": split.pop("wall"), "total CPU": split.pop("cpu"), **split}
            for key, value in split.items():
                sums[name][key] = sums[name].get(key, 0.0) + value
        points += len(DEFAULT_BPP_GRID)
    return {name: {k: v / points for k, v in parts.items()} for name, parts in sums.items()}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", default="5", help="Kodak numbers, e.g. 5 or 5,19")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1, help="torch threads")
    parser.add_argument(
        "--order", choices=("slope", "scale"), default="slope", help="DeepHQ's coding order"
    )
    args = parser.parse_args(argv)
    images = [int(v) for v in args.images.split(",")]

    import torch

    from plugins.deephq.codec import DeepHQCodec
    from plugins.plonq.codec import PlonqCodec

    torch.set_num_threads(args.threads)
    deephq = "deephq" if args.order == "slope" else f"deephq[order={args.order}]"
    codecs = {deephq: DeepHQCodec(order=args.order), "plonq": PlonqCodec()}
    means = measure(codecs, images, args.repeats)

    print(
        f"CPU: {cpu_model()}, torch {torch.__version__}, {torch.get_num_threads()} thread(s); "
        f"Kodak {', '.join(f'kodim{n:02d}' for n in images)}, {len(DEFAULT_BPP_GRID)} points "
        f"({DEFAULT_BPP_GRID[0]:g} to {DEFAULT_BPP_GRID[-1]:g} bpp), median of {args.repeats}"
    )
    keys = list(next(iter(means.values())))
    print(f"{'mean per point (s)':<20}" + "".join(f"{k:>25}" for k in keys))
    for name, parts in means.items():
        print(f"{name:<20}" + "".join(f"{parts[k]:>25.4f}" for k in keys))
    a, b = means.values()
    print(f"{'ratio':<20}" + "".join(f"{a[k] / b[k]:>25.3f}" for k in keys))
    for key in ("total", "total CPU"):
        ratio = a[key] / b[key]
        print(
            f"{deephq}/plonq decode time per point ({key}): {ratio:.3f} "
            f"(goal <= {GOAL}: {'met' if ratio <= GOAL else 'NOT met'})"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
