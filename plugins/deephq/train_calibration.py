"""Choosing where DeepHQ's mask thresholds sit by real coding on training images.

Step 3 learns the thresholds through a relaxed (sigmoid) mask and a loss that stands for each
layer's own rate point only; what matters to a user is the curve *between* the layers, where a
truncated stream stops. Calibration measures that curve with the real codec: for every
candidate shift ``s`` (in scale indexes) every threshold is lowered by ``s``
(:func:`shifted`; ``s < 0`` raises them; the largest threshold, which codes every element from
the first layer as the masks' ablation does, is always a candidate), crops of training images
are encoded once and decoded at every target bpp of the grid (prefixes of
``floor(bpp * H * W / 8)`` bytes), and the shift whose mean curve has the lowest BD-rate
against the unshifted one is kept.

One scalar over the whole grid is chosen on training images only (never Kodak); the BD-rate of
every candidate is kept in the weights' sidecar. A point enters a curve only where no crop's
stream is exhausted (every crop truncated for real), every crop's header fits the prefix and
the mean PSNR beats every cheaper point's (a budget that completes no new chunk adds nothing).
"""

from __future__ import annotations

import json
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from plugins.deephq import params as dp

DEFAULT_SHIFTS = (-4, 0, 4, 8, 12, 16, 24)
DEFAULT_CROPS = 16
DEFAULT_CROP_SIZE = 256


def shifted(params: dp.DeepHQParams, shift: int) -> dp.DeepHQParams:
    """``params`` with every threshold lowered by ``shift`` scale indexes (raised when
    negative), clipped at 0 and kept non-rising over the layers; steps unchanged."""
    thr = np.maximum(params.mask_index_threshold - int(shift), 0)
    thr = np.minimum.accumulate(thr, axis=0)
    return dp.DeepHQParams(params.steps, thr, params.base_sha256, params.meta)


def training_crops(
    data: str | Path, count: int, size: int, log: Callable[[str], None] = print
) -> list[np.ndarray]:
    """``count`` centre crops ``(size, size, 3)`` uint8 of images spread evenly over the sorted
    training folder (the training loader's Kodak guard applies)."""
    from plugins.learned.training.data import load_training_images

    images = load_training_images(data, size, log=log)
    picks = np.unique(np.linspace(0, len(images) - 1, min(count, len(images))).round().astype(int))
    crops = []
    for i in picks:
        img = images[int(i)]
        y0 = (img.shape[0] - size) // 2
        x0 = (img.shape[1] - size) // 2
        crops.append(np.ascontiguousarray(img[y0 : y0 + size, x0 : x0 + size]))
    return crops


@dataclass(frozen=True)
class Curve:
    """Mean real rate (bpp) and PSNR-RGB (dB) over the crops at the targets kept."""

    target_bpp: tuple[float, ...]
    bpp: tuple[float, ...]
    psnr_rgb: tuple[float, ...]


def measure_curve(codec: Any, crops: Sequence[np.ndarray], grid: Sequence[float]) -> Curve:
    """Encode every crop once with ``codec`` (a :class:`~bench.codec.ProgressiveCodec`), decode
    its prefix at every target of ``grid`` and average over the crops."""
    from bench.codec import PrefixTooShort
    from bench.grid import budget_bytes
    from bench.metrics import psnr_rgb

    bpp = np.full((len(crops), len(grid)), np.nan)
    psnr = np.full_like(bpp, np.nan)
    for i, crop in enumerate(crops):
        h, w = crop.shape[:2]
        stream = codec.encode(crop)
        for j, target in enumerate(grid):
            budget = budget_bytes(target, h, w)
            if budget >= len(stream):
                continue
            try:
                recon = codec.decode(stream[:budget])
            except PrefixTooShort:
                continue
            bpp[i, j] = 8.0 * budget / (h * w)
            psnr[i, j] = psnr_rgb(crop, recon)
    keep = np.all(np.isfinite(psnr), axis=0)
    mean_psnr = np.where(keep, np.nan_to_num(psnr).mean(axis=0), -np.inf)
    best = -np.inf
    for j in range(len(grid)):  # a point no better than a cheaper one (no chunk completed)
        keep[j] = keep[j] and mean_psnr[j] > best
        best = max(best, mean_psnr[j])
    return Curve(
        tuple(float(t) for t, k in zip(grid, keep, strict=True) if k),
        tuple(float(v) for v in bpp[:, keep].mean(axis=0)),
        tuple(float(v) for v in psnr[:, keep].mean(axis=0)),
    )


def calibrate(
    weights: str | Path,
    data: str | Path,
    shifts: Sequence[int] = DEFAULT_SHIFTS,
    crops: int = DEFAULT_CROPS,
    crop_size: int = DEFAULT_CROP_SIZE,
    grid: Sequence[float] | None = None,
    log: Callable[[str], None] = print,
) -> dict[str, Any]:
    """Measure every shift of ``weights``' thresholds on training crops; rewrite ``weights``
    (a DeepHQ ``.safetensors`` from a step-3 export) with the best one and add a
    ``threshold_calibration`` record to its sidecar. Returns that record.

    Raises ``ValueError`` when the file has no trained masks, ``shifts`` lacks 0 (the
    reference curve), or no shift has a defined BD-rate against it.
    """
    from bench.bdrate import bd_rate
    from bench.grid import DEFAULT_BPP_GRID
    from bench.hashing import sha256_file
    from plugins.deephq.codec import DeepHQCodec

    weights = Path(weights)
    original = dp.load(weights)
    if not np.any(original.mask_index_threshold):
        raise ValueError(f"{weights} has no trained masks (a step-2 export): nothing to calibrate")
    shifts = {int(s) for s in shifts}
    if 0 not in shifts:
        raise ValueError("the candidate shifts must include 0, the reference curve")
    shifts = sorted(shifts | {int(original.mask_index_threshold.max())})  # + every one coded
    grid = tuple(sorted(DEFAULT_BPP_GRID if grid is None else grid))
    images = training_crops(data, crops, crop_size, log=log)
    curves: dict[int, Curve] = {}
    scale_indexes = 0
    with tempfile.TemporaryDirectory(prefix="deephq-calibrate-") as tmp:
        for s in shifts:
            candidate = Path(tmp) / f"shift{s}.safetensors"
            dp.save(shifted(original, s), candidate)
            codec = DeepHQCodec(weights=str(candidate), memo=True)
            curves[s] = measure_curve(codec, images, grid)
            scale_indexes = len(codec.base.scale_table)
            log(
                f"shift {s:+d}: {len(curves[s].bpp)} points, "
                f"mean PSNR {np.mean(curves[s].psnr_rgb):.3f} dB"
            )
    ref = curves[0]
    bd = {s: bd_rate(ref.bpp, ref.psnr_rgb, c.bpp, c.psnr_rgb).value for s, c in curves.items()}
    defined = {s: v for s, v in bd.items() if np.isfinite(v)}
    if not defined:
        raise ValueError("no shift has a defined BD-rate against the unshifted thresholds")
    best = min(defined, key=lambda s: (defined[s], abs(s)))
    chosen = shifted(original, best)
    dp.save(chosen, weights, {"threshold_shift": str(best)})
    record = {
        "what": "one shift of every mask threshold (scale indexes lowered), chosen by BD-rate "
        "over real truncations on training crops (plugins/deephq/train_calibration.py)",
        "chosen_shift": best,
        "bd_rate_vs_unshifted_percent": {str(s): bd[s] for s in shifts},
        "crops": len(images),
        "crop_size": crop_size,
        "grid_bpp": list(grid),
        "curves": {str(s): asdict(c) for s, c in curves.items()},
    }
    side_path = dp.sidecar_path(weights)
    side = dp.read_sidecar(weights) or {}
    side["threshold_calibration"] = record
    side["scale_indexes_selected_per_layer"] = dp.selected_fraction(
        chosen.mask_index_threshold, scale_indexes
    )
    thr = chosen.mask_index_threshold  # all 0: no mask parameter left (as the codec counts)
    side["added_parameters"] = int(chosen.steps[:-1].size + (thr.size if np.any(thr) else 0))
    side["weights_sha256"] = sha256_file(weights)
    side["weights_bytes"] = weights.stat().st_size
    side_path.write_text(json.dumps(side, indent=2, sort_keys=True) + "\n")
    return record
