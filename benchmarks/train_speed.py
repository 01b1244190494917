"""Training step time of each precision mode, side by side in one run; and the bf16 A/B.

Speed (default): one MeanScaleHyperprior (N=128, M=192 unless told) from the shipped weights,
one batch of random training crops (batch 8 of 128 px), forward + backward of the R-D loss in
every mode: cpu-fp32, cpu-fp32-cl, cpu-bf16, cpu-bf16-cl, cpu-mixed-cl (and cuda-fp32-cl,
cuda-bf16-cl, cuda-mixed-cl when a GPU is present).
Each mode gets one warm-up step, then the median of ``--repeats`` timed steps
(``time.perf_counter``, device synchronised, torch threads fixed). The table gives seconds per
step and the ratio to cpu-fp32; the CPU model is printed beside it, because ratios, not times,
carry over between machines.

A/B (``--ab DIR_A DIR_B``): compares two runs of ``bench train`` resumed from copies of one
checkpoint (same weights, optimiser state and RNG, so the same batches and noise) that differ in
one setting: A the reference (``--precision fp32``), B the candidate (``--precision bf16``; or
another peak ``--lr``). It pairs their logged training windows (mean loss per window of
``log_every`` iterations) and their Kodak-subset evaluations at the same iterations after the
fork (``plugins.learned.training.ab.ab_start``: an arm copied from a run's checkpoint carries its
log up to there) and applies :data:`RULE`. ``--record`` appends its verdict for B's mode to
``plugins/learned/training/precision_ab.json``, whose latest verdict per mode
``bench train --precision auto`` reads.
The arms' seconds per iteration are not compared: they ran side by side on shared cores; the
speed table above is the speed measurement.

    python benchmarks/train_speed.py --threads 1
    python benchmarks/train_speed.py --ab ~/.cache/bench/ab/fp32 ~/.cache/bench/ab/bf16 --record
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from plugins.learned.training import msh as tr  # noqa: E402
from plugins.learned.training.ab import ab_start, read_log  # noqa: E402
from plugins.learned.training.precision import (  # noqa: E402
    AB_RECORD,
    TrainMode,
    cpu_model,
    time_step,
)
from plugins.learned.weights import BUNDLED_DIR, BUNDLED_NAME  # noqa: E402

TRAIN = ROOT.parent / "shared" / "datasets" / "train"
RULE = (
    "B passes when its mean paired loss difference to A over the last half of the logged windows "
    "is at most 2 standard errors or 1 % of A's loss, and its mean paired Kodak-subset PSNR "
    "difference is at least -0.15 dB (one-sided: B may be better)"
)


def speed(args) -> None:
    import torch

    torch.set_num_threads(args.threads)
    weights = Path(args.weights) if args.weights else BUNDLED_DIR / f"{BUNDLED_NAME}.safetensors"
    model, _ = tr.load_weights(weights)
    model.train()
    for p in model.parameters():
        p.requires_grad_(True)
    images = tr.load_training_images(args.data, args.crop, log=lambda _m: None)
    x = tr.sample_batch(images, np.random.default_rng(0), args.batch, args.crop)
    modes = [
        TrainMode("cpu", "fp32", False),
        TrainMode("cpu", "fp32", True),
        TrainMode("cpu", "bf16", False),
        TrainMode("cpu", "bf16", True),
        TrainMode("cpu", "mixed", True),
    ]
    if torch.cuda.is_available():
        modes += [TrainMode("cuda", m, True) for m in ("fp32", "bf16", "mixed")]
    if args.modes:
        modes = [TrainMode.parse(label.strip()) for label in args.modes.split(",")]
    print(
        f"CPU: {cpu_model()}; torch {torch.__version__}, {args.threads} thread(s); "
        f"N=128 M=192 from {weights.name}, batch {args.batch} of {args.crop} px, "
        f"forward+backward, median of {args.repeats} after 1 warm-up"
    )
    if torch.cuda.is_available():
        print(f"GPU: {torch.cuda.get_device_name(0)}")
    times = {}
    for mode in modes:
        times[mode.label] = time_step(model, x, tr.TrainConfig().lmbda, mode, args.repeats)
    first = modes[0].label
    base = times[first]
    print(f"{'mode':<14}{'s/step':>10}{'vs ' + first:>17}")
    for label, t in times.items():
        print(f"{label:<14}{t:>10.3f}{base / t:>16.2f}x")


def _windows(rows: list[dict], start: int) -> dict[int, dict]:
    """Training windows by iteration, evaluations by minus iteration, after ``start``."""
    return {r["iteration"]: r for r in rows if r["type"] in ("train", "eval")} | {
        -r["iteration"]: r for r in rows if r["type"] == "eval" and r["iteration"] > start
    }


def _arm_label(rows: dict[int, dict], iteration: int) -> str:
    r = rows[iteration]
    return f"{r.get('mode', '?')} lr {r.get('lr', float('nan')):.0e}"


def ab(args) -> None:
    """Paired comparison of two arms resumed from one checkpoint (A: reference, B: candidate)."""
    dir_a, dir_b = (Path(d) for d in args.ab)
    log_a, log_b = read_log(dir_a), read_log(dir_b)
    since = ab_start(log_a, log_b)
    a, b = _windows(log_a, since), _windows(log_b, since)
    train_its = sorted(k for k in a if k > since and k in b and a[k]["type"] == "train")
    if len(train_its) < 4:
        sys.exit("error: fewer than 4 paired training windows; run the two arms longer")
    label_a, label_b = _arm_label(a, train_its[-1]), _arm_label(b, train_its[-1])
    half = train_its[len(train_its) // 2 :]
    diffs = [b[k]["loss"] - a[k]["loss"] for k in half]
    mean = statistics.fmean(diffs)
    se = statistics.stdev(diffs) / math.sqrt(len(diffs))
    loss_a = statistics.fmean(a[k]["loss"] for k in half)
    evals = sorted(-k for k in a if k < -since and k in b)
    psnr_pairs = [(k, a[-k]["psnr_rgb"], b[-k]["psnr_rgb"]) for k in evals]
    psnr_diff = statistics.fmean(pb - pa for _, pa, pb in psnr_pairs) if psnr_pairs else None
    loss_ok = mean <= 2 * se or mean <= 0.01 * loss_a
    psnr_ok = psnr_diff is not None and psnr_diff >= -0.15
    verdict = "pass" if loss_ok and psnr_ok else "fail"
    print(
        f"A: {dir_a} ({label_a}); B: {dir_b} ({label_b}); "
        f"iterations {train_its[0]}..{train_its[-1]}"
    )
    print(
        f"last half ({len(half)} windows of the log): mean loss A {loss_a:.4f}, paired B - A "
        f"{mean:+.4f} +- {se:.4f} (s.e.)"
    )
    for k, pa, pb in psnr_pairs:
        print(f"Kodak subset at {k}: A {pa:.3f} dB, B {pb:.3f} dB ({pb - pa:+.3f})")
    if psnr_diff is not None:
        print(f"mean paired Kodak-subset PSNR difference B - A: {psnr_diff:+.3f} dB")
    print(f"verdict (B no worse than A): {verdict}")
    if args.record:
        record = {
            "mode": b[train_its[-1]]["mode"],
            "verdict": verdict,
            "against": a[train_its[-1]]["mode"],
            "iterations": [train_its[0], train_its[-1]],
            "paired_loss_difference": {"mean": mean, "standard_error": se, "windows": len(half)},
            "mean_loss_reference": loss_a,
            "kodak_subset_psnr": [{"iteration": k, "A": pa, "B": pb} for k, pa, pb in psnr_pairs],
            "cpu": cpu_model(),
            "date": time.strftime("%Y-%m-%d"),
            "rule": RULE,
        }
        records = json.loads(AB_RECORD.read_text())["records"] if AB_RECORD.is_file() else []
        AB_RECORD.write_text(json.dumps({"records": [*records, record]}, indent=2) + "\n")
        print(f"appended the verdict to {AB_RECORD}")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--crop", type=int, default=128)
    p.add_argument("--data", default=str(TRAIN))
    p.add_argument("--weights", help="weights to time (default: the shipped base)")
    p.add_argument("--modes", help="comma-separated modes (default: all here; the first is 1x)")
    p.add_argument("--ab", nargs=2, metavar=("FP32_RUN", "BF16_RUN"))
    p.add_argument("--record", action="store_true", help="append the A/B verdict for auto")
    args = p.parse_args()
    ab(args) if args.ab else speed(args)


if __name__ == "__main__":
    main()
