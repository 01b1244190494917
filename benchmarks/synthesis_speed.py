"""The decoders' synthesis transform ``g_s`` on the CPU: the channels_last path
(:mod:`plugins.learned.inference`, what :meth:`BaseModel.synthesise` runs) against the default
contiguous (NCHW) layout it replaced, per Kodak image, side by side in one process.

For each image, three latents of the bundled base model: the prior mean (a header-only prefix),
a coarse one (``y - mu`` rounded to multiples of 4, a mid-rate prefix) and the full-rate one.
Both paths synthesise each latent; their PSNRs against the original must agree within 1e-4 dB
(the goal of issue 17 item 3; float32 throughout, no reduced precision). The full-rate latent
is also timed: ``--repeats`` interleaved calls per path after a warm-up, CPU model and torch
threads printed beside the medians. A script, not a test::

    .venv/bin/python benchmarks/synthesis_speed.py
    .venv/bin/python benchmarks/synthesis_speed.py --images 5,19 --repeats 5
"""

from __future__ import annotations

import argparse
import sys
from functools import partial
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench.images import load_rgb  # noqa: E402
from benchmarks.timing import cpu_model, interleaved_medians  # noqa: E402

KODAK = ROOT / "datasets" / "kodak"
PSNR_TOLERANCE_DB = 1e-4


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return float("inf") if mse == 0 else 10.0 * np.log10(255.0**2 / mse)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", default="1-24", help="Kodak numbers: 1-24 or 5,19")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1, help="torch threads")
    args = parser.parse_args(argv)
    if "-" in args.images:
        first, last = (int(v) for v in args.images.split("-"))
        numbers = list(range(first, last + 1))
    else:
        numbers = [int(v) for v in args.images.split(",")]

    import torch

    from plugins.learned.model_io import BaseModel

    torch.set_num_threads(args.threads)
    base = BaseModel.get(None)

    def contiguous(y_hat: np.ndarray, height: int, width: int) -> np.ndarray:
        """The NCHW path :meth:`BaseModel.synthesise` ran before (same module, same ops)."""
        with torch.no_grad():
            t = torch.from_numpy(np.ascontiguousarray(y_hat, dtype=np.float32))[None]
            x_hat = base.nets.g_s(t)[0, :, :height, :width]
            x_hat = x_hat.clamp_(0, 1).mul_(255.0).round_().to(torch.uint8)
        return np.ascontiguousarray(x_hat.permute(1, 2, 0).numpy())

    paths = {"contiguous (before)": contiguous, "channels_last": base.synthesise}
    print(f"weights: {base.resolved.spec} sha256 {base.resolved.sha256[:16]}...")
    print(
        f"CPU: {cpu_model()}, torch {torch.__version__}, {torch.get_num_threads()} thread(s), "
        f"median of {args.repeats} interleaved calls after a warm-up"
    )
    print(
        f"{'image':<8} {'size':>8} {'before s':>9} {'after s':>8} {'speed-up':>8} "
        f"{'max |dPSNR| dB':>15} {'pixels differing':>16}"
    )
    worst, ratios, totals = 0.0, [], {name: 0.0 for name in paths}
    for number in numbers:
        name = f"kodim{number:02d}"
        image = load_rgb(KODAK / f"{name}.png")
        height, width = image.shape[:2]
        analysis = base.analyse(image)
        mu = analysis.hyper.means
        latents = {
            "prior mean": mu,
            "coarse": mu + 4.0 * np.rint((analysis.y - mu) / 4.0),
            "full": mu + np.rint(analysis.y - mu),
        }
        delta, differing = 0.0, 0
        for y_hat in latents.values():
            before, after = (call(y_hat, height, width) for call in paths.values())
            delta = max(delta, abs(psnr(image, before) - psnr(image, after)))
            differing += int(np.count_nonzero(before != after))
        full = latents["full"]
        # the calls above warmed both paths up
        calls = {key: partial(call, full, height, width) for key, call in paths.items()}
        medians = interleaved_medians(calls, args.repeats)
        t_before, t_after = (medians[key]["wall"] for key in paths)
        for key in paths:
            totals[key] += medians[key]["wall"]
        worst = max(worst, delta)
        ratios.append(t_before / t_after)
        print(
            f"{name:<8} {width:>4}x{height:<4}{t_before:>8.3f} {t_after:>8.3f} "
            f"{t_before / t_after:>7.2f}x {delta:>15.2e} {differing:>16}"
        )
    before_total, after_total = totals.values()
    print(
        f"all {len(numbers)} images: {before_total:.2f} s before, {after_total:.2f} s after "
        f"({before_total / after_total:.2f}x; per image {min(ratios):.2f}x to "
        f"{max(ratios):.2f}x); largest |dPSNR| {worst:.2e} dB "
        f"(goal <= {PSNR_TOLERANCE_DB:g}: {'met' if worst <= PSNR_TOLERANCE_DB else 'NOT met'})"
    )
    return 0 if worst <= PSNR_TOLERANCE_DB else 1


if __name__ == "__main__":
    sys.exit(main())
