"""``bench plot``: a run's R-D curves beside other CompressAI-format results, as one PNG.

Reads the CompressAI-format ``<codec>.json`` files a run writes (``{"name", "results": {"bpp",
"psnr-rgb", "ms-ssim-rgb", ...}}``, :func:`bench.report.compressai_json`) and any further files in
that format (CompressAI's published results, another run's codecs), and draws them with
matplotlib: PSNR-RGB in dB, or MS-SSIM in dB (``-10 log10(1 - x)``, as CompressAI plots it),
against bpp. Neither compressai nor torchvision is imported.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

from bench.published import MBT2018_MEAN_KODAK

#: metric name on the command line -> (key in "results", y-axis label)
METRICS = {
    "psnr": ("psnr-rgb", "PSNR-RGB [dB]"),
    "ms-ssim": ("ms-ssim-rgb", "MS-SSIM-RGB [dB] (-10 log10(1-x))"),
}


class PlotError(Exception):
    """A file cannot be plotted; the message names it and says why."""


@dataclass(frozen=True)
class Curve:
    """One named R-D curve: bpp and metric values (dB), points sorted by bpp."""

    name: str
    bpp: tuple[float, ...]
    values: tuple[float, ...]
    dashed: bool = False


def is_results_file(path: Path) -> bool:
    """Whether ``path`` is a JSON file in CompressAI's results format (has ``results.bpp``)."""
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return False
    return isinstance(data, dict) and "bpp" in (data.get("results") or {})


def read_curve(path: Path, metric: str = "psnr") -> Curve:
    """The curve of one CompressAI-format file; points with a missing value are skipped."""
    key, _ = METRICS[metric]
    try:
        data = json.loads(Path(path).read_text())
    except (OSError, ValueError) as exc:
        raise PlotError(f"{path}: cannot read it as JSON ({exc})") from None
    results = data.get("results") if isinstance(data, dict) else None
    if not isinstance(results, dict) or "bpp" not in results:
        raise PlotError(f"{path}: not in CompressAI's results format (no results.bpp)")
    if key not in results:
        raise PlotError(f"{path}: has no {key!r} (it has {', '.join(results)})")
    points = []
    for bpp, value in zip(results["bpp"], results[key], strict=True):
        if bpp is None or value is None:
            continue
        if metric == "ms-ssim":
            value = -10 * math.log10(1 - value) if value < 1 else math.inf
        if math.isfinite(value):
            points.append((float(bpp), float(value)))
    points.sort()
    return Curve(
        name=str(data.get("name") or Path(path).stem),
        bpp=tuple(p[0] for p in points),
        values=tuple(p[1] for p in points),
    )


def run_curves(run: Path, metric: str = "psnr") -> list[Curve]:
    """Every codec curve of a run directory (its CompressAI-format JSON files)."""
    files = sorted(p for p in Path(run).glob("*.json") if is_results_file(p))
    if not files:
        raise PlotError(f"{run}: no CompressAI-format <codec>.json (run `bench report {run}`)")
    return [read_curve(p, metric) for p in files]


def published_curve() -> Curve:
    """CompressAI's published mbt2018-mean Kodak curve (PSNR-RGB), dashed."""
    curve = MBT2018_MEAN_KODAK
    return Curve(f"{curve.name} (published)", curve.bpp, curve.psnr_rgb, dashed=True)


def plot(curves: list[Curve], out: Path, metric: str = "psnr", title: str = "") -> Path:
    """Draw ``curves`` into the PNG ``out``; return it."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(9, 6))
    for curve in curves:
        ax.plot(
            curve.bpp,
            curve.values,
            "--" if curve.dashed else "-",
            marker=".",
            linewidth=0.9,
            label=curve.name,
        )
    ax.set(xlabel="bits per pixel", ylabel=METRICS[metric][1], title=title)
    ax.grid(True, alpha=0.3)
    ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=150)
    plt.close(fig)
    return out
