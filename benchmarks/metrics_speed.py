"""Metrics cost per point, three implementations side by side, on real JPEG 2000 reconstructions
of Kodak images, and their share of the codec's own time.

For each of the first ``--images`` Kodak images, the harness's own measurement
(:func:`bench.measure.measure_progressive`, ``jpeg2000`` on the default grid of 20 target bpps,
``--repeats`` as ``bench run`` gives it, 1 thread) runs and collects every reconstruction it
scores. Then, side by side in this process, each reconstruction is scored by

* **torch**: the metrics as the harness computed them first (commit 2959212): pytorch-msssim on
  float32 tensors, PSNR-RGB and PSNR-Y on float64 copies, everything from the images alone;
* **previous**: :class:`ImageScorer` of ``bench/metrics.py`` at commit 8173c34 (numba kernels
  that filter across, then down, through whole stored maps), loaded from git history;
* **new**: :class:`bench.metrics.ImageScorer` (:mod:`bench.ms_ssim`'s streaming kernels),

each scorer built once per image (its cost included), the three taking turns per
reconstruction so that they see the same load. Printed: seconds per point of each, the ratios
torch/new and previous/new, the largest MS-SSIM differences of new against pytorch-msssim run
in float64 (the test oracle; untimed), against previous and against torch, whether the PSNRs
are equal, and the metrics time as a share of the in-codec time (encode + timed decodes under
the timing policy, from the same measurement; the issue's goal: at most 15 %), with the CPU
model and the load average. Timings on a shared machine vary by about 2x; the ratios are what
this script is for. Run it as a script from the git checkout::

    .venv/bin/python benchmarks/metrics_speed.py               # 4 images
    .venv/bin/python benchmarks/metrics_speed.py --images 24
"""

from __future__ import annotations

import argparse
import functools
import importlib.util
import math
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from types import ModuleType

for variable in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
    os.environ[variable] = "1"  # as in a worker, before numpy and torch load

import numpy as np  # noqa: E402
import torch  # noqa: E402
from pytorch_msssim import ms_ssim  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench import datasets  # noqa: E402
from bench.grid import DEFAULT_BPP_GRID  # noqa: E402
from bench.images import load_rgb  # noqa: E402
from bench.measure import UnitTimes, measure_progressive, warm_up  # noqa: E402
from bench.metrics import ImageScorer, load_kernels  # noqa: E402
from bench.provenance import cpu_model  # noqa: E402
from bench.registry import load_registry  # noqa: E402

GOAL_SHARE = 0.15
#: The commit whose bench/metrics.py is the "previous" implementation.
PREVIOUS_COMMIT = "8173c34"

Scores = dict[str, float]


def _tensor(a: np.ndarray, dtype: torch.dtype) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(a.transpose(2, 0, 1))).to(dtype)[None]


def _pytorch_ms_ssim(original: np.ndarray, reconstruction: np.ndarray, dtype: torch.dtype) -> float:
    with torch.no_grad():
        return float(
            ms_ssim(_tensor(original, dtype), _tensor(reconstruction, dtype), data_range=255.0)
        )


def torch_scores(original: np.ndarray, reconstruction: np.ndarray) -> Scores:
    """The metrics as bench.metrics computed them at commit 2959212."""

    def psnr(a: np.ndarray, b: np.ndarray) -> float:
        diff = a - b
        mse = float(np.mean(diff * diff))
        return math.inf if mse == 0 else 10.0 * math.log10(255.0**2 / mse)

    def luma(image: np.ndarray) -> np.ndarray:
        rgb = image.astype(np.float64)
        return 0.299 * rgb[..., 0] + 0.587 * rgb[..., 1] + 0.114 * rgb[..., 2]

    return {
        "psnr_rgb": psnr(original.astype(np.float64), reconstruction.astype(np.float64)),
        "psnr_y": psnr(luma(original), luma(reconstruction)),
        "ms_ssim": _pytorch_ms_ssim(original, reconstruction, torch.float32),
    }


def previous_metrics() -> ModuleType:
    """``bench/metrics.py`` at :data:`PREVIOUS_COMMIT`, from git, imported as a module of its
    own (its numba kernels cached beside it in a temporary directory) and its kernels loaded."""
    source = subprocess.run(
        ["git", "-C", str(ROOT), "show", f"{PREVIOUS_COMMIT}:bench/metrics.py"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    path = Path(tempfile.mkdtemp(prefix="metrics-previous-")) / "metrics_previous.py"
    path.write_text(source)
    spec = importlib.util.spec_from_file_location("metrics_previous", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    module.load_kernels()
    return module


def _collector(into: list[np.ndarray]):
    """A :data:`bench.measure.Keep` that appends each scored reconstruction to ``into``."""

    def keep(reconstruction: np.ndarray, data: bytes) -> dict:
        into.append(reconstruction)
        return {}

    return keep


def _timed(score: Callable[[np.ndarray], Scores], reconstruction: np.ndarray):
    start = time.perf_counter()
    scores = score(reconstruction)
    return scores, time.perf_counter() - start


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=4, help="first N Kodak images")
    parser.add_argument("--repeats", type=int, default=3, help="as bench run --repeats")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    load_kernels()
    previous = previous_metrics()
    codec = load_registry([], entry_points=False).spec("jpeg2000").factory()
    codec.prepare(DEFAULT_BPP_GRID)
    paths = datasets.verify(datasets.load_manifest("kodak"))[: args.images]
    names = ("torch", "previous", "new")
    seconds = dict.fromkeys(names, 0.0)
    codec_s = 0.0
    points = 0
    worst = {"float64 oracle": 0.0, "previous": 0.0, "torch": 0.0}
    psnr_equal = True
    load_start = os.getloadavg()[0]
    print(f"CPU: {cpu_model()}, 1 thread; jpeg2000, {len(DEFAULT_BPP_GRID)} target bpps")
    print(f"{'image':<12} {'points':>6} " + " ".join(f"{n + ' s/pt':>11}" for n in names))
    for path in paths:
        image = load_rgb(path)
        warm_up(codec, image)
        reconstructions: list[np.ndarray] = []
        times = UnitTimes()
        keep = _collector(reconstructions)
        list(measure_progressive(codec, image, DEFAULT_BPP_GRID, args.repeats, times, keep))
        codec_s += times.codec_s
        image_s = dict.fromkeys(names, 0.0)
        start = time.perf_counter()
        previous_scorer = previous.ImageScorer(image)
        image_s["previous"] += time.perf_counter() - start
        start = time.perf_counter()
        scorer = ImageScorer(image)
        image_s["new"] += time.perf_counter() - start
        scorers = {
            "torch": functools.partial(torch_scores, image),
            "previous": previous_scorer.scores,
            "new": scorer.scores,
        }
        for k, reconstruction in enumerate(reconstructions):
            results = {}
            for name in names[k % 3 :] + names[: k % 3]:  # each goes first in turn
                results[name], elapsed = _timed(scorers[name], reconstruction)
                image_s[name] += elapsed
            new = results["new"]["ms_ssim"]
            oracle = _pytorch_ms_ssim(image, reconstruction, torch.float64)
            worst["float64 oracle"] = max(worst["float64 oracle"], abs(new - oracle))
            worst["previous"] = max(worst["previous"], abs(new - results["previous"]["ms_ssim"]))
            worst["torch"] = max(worst["torch"], abs(new - results["torch"]["ms_ssim"]))
            psnr_equal &= all(
                results[name][key] == new_value
                for name in ("torch", "previous")
                for key, new_value in results["new"].items()
                if key != "ms_ssim"
            )
        n = len(reconstructions)
        print(f"{path.name:<12} {n:>6} " + " ".join(f"{image_s[m] / n:>11.4f}" for m in names))
        points += n
        for name in names:
            seconds[name] += image_s[name]
    print(f"{'all':<12} {points:>6} " + " ".join(f"{seconds[m] / points:>11.4f}" for m in names))
    print(
        f"ratios: torch/new {seconds['torch'] / seconds['new']:.1f}, "
        f"previous/new {seconds['previous'] / seconds['new']:.2f}"
    )
    print(
        "largest |MS-SSIM new - x|: "
        + ", ".join(f"{name} {value:.1e}" for name, value in worst.items())
        + f"; PSNR-RGB and PSNR-Y equal in all three: {psnr_equal}"
    )
    print(
        f"in-codec time (timing policy, --repeats {args.repeats}): {codec_s:.2f} s; metrics "
        "share: "
        + ", ".join(f"{name} {seconds[name] / codec_s:.0%}" for name in names)
        + f" (goal <= {GOAL_SHARE:.0%})"
    )
    print(
        f"load average (1 min): {load_start:.2f} at the start, {os.getloadavg()[0]:.2f} at the end"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
