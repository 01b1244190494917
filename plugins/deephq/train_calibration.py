"""Choosing where DeepHQ's mask thresholds sit by real coding on training images.

The masks are those of the layered order (``order="scale"``), so calibration codes in it.
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

The steps are searched the same way (:func:`search_steps`): a greedy descent over one power-of-two
factor per layer (every channel's step of layer ``l`` doubled or halved, clipped at 1), each
move measured by real truncation of the same crops and kept when it lowers the BD-rate against
the starting curve; :func:`uniform_ladder` gives the untrained start (8, ..., 4, 2, 1).

The slope order weighs each channel by its gain (:func:`channel_gains`, :func:`measure_gains`):
the squared pixel error that a unit of squared latent error in that channel causes through the
base model's synthesis transform, measured with Gaussian noise on training crops.
"""

from __future__ import annotations

import json
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from plugins.deephq import params as dp
from plugins.deephq.coder import SCALE_ORDER

DEFAULT_SHIFTS = (-4, 0, 4, 8, 12, 16, 24)
DEFAULT_CROPS = 16
DEFAULT_CROP_SIZE = 256
DEFAULT_SWEEPS = 2
#: Channel gains: training crops and the latent noise's standard deviation (fine units).
DEFAULT_GAIN_CROPS = 8
GAIN_NOISE = 1.0
#: A step move is kept only when it lowers the BD-rate by more than this (percent).
MIN_GAIN_PERCENT = 0.05


def shifted(params: dp.DeepHQParams, shift: int) -> dp.DeepHQParams:
    """``params`` with every threshold lowered by ``shift`` scale indexes (raised when
    negative), clipped at 0 and kept non-rising over the layers; steps unchanged."""
    thr = np.maximum(params.mask_index_threshold - int(shift), 0)
    thr = np.minimum.accumulate(thr, axis=0)
    return replace(params, mask_index_threshold=thr)


def moved(params: dp.DeepHQParams, layer: int, exponent: int) -> dp.DeepHQParams | None:
    """``params`` with every step of ``layer`` (0-based) multiplied by ``2 ** exponent`` and
    clipped at 1; ``None`` for the last layer (the base's grid) or when nothing changes."""
    if not 0 <= layer < params.layers - 1:
        return None
    steps = np.array(params.steps, dtype=np.float64)
    steps[layer] = np.maximum(steps[layer] * 2.0**exponent, 1.0)
    if np.array_equal(steps, params.steps):
        return None
    return replace(params, steps=steps)


def uniform_ladder(params: dp.DeepHQParams) -> dp.DeepHQParams:
    """Every channel on the untrained ladder ``8, ..., 8, 4, 2, 1`` (the last three layers 4, 2,
    1), every element coded from layer 1 (thresholds 0); base and metadata kept."""
    layers = params.layers
    column = np.array([8.0] * max(layers - 3, 0) + [4.0, 2.0, 1.0])[-layers:]
    steps = np.repeat(column[:, None], params.channels, axis=1)
    return replace(
        params, steps=steps, mask_index_threshold=np.zeros_like(params.mask_index_threshold)
    )


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
            codec = DeepHQCodec(weights=str(candidate), memo=True, order=SCALE_ORDER)
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
    thr = chosen.mask_index_threshold  # all 0: no mask parameter left (as the codec counts)
    _update_sidecar(
        weights,
        threshold_calibration=record,
        scale_indexes_selected_per_layer=dp.selected_fraction(thr, scale_indexes),
        added_parameters=int(chosen.steps[:-1].size + (thr.size if np.any(thr) else 0)),
    )
    return record


def _update_sidecar(weights: Path, **fields: Any) -> None:
    """Set ``fields`` in ``weights``' sidecar (created when missing), with its new sha256 and
    size."""
    from bench.hashing import sha256_file

    side = dp.read_sidecar(weights) or {}
    side.update(fields)
    side["weights_sha256"] = sha256_file(weights)
    side["weights_bytes"] = weights.stat().st_size
    dp.sidecar_path(weights).write_text(json.dumps(side, indent=2, sort_keys=True) + "\n")


def search_steps(
    weights: str | Path,
    data: str | Path,
    sweeps: int = DEFAULT_SWEEPS,
    crops: int = DEFAULT_CROPS,
    crop_size: int = DEFAULT_CROP_SIZE,
    grid: Sequence[float] | None = None,
    log: Callable[[str], None] = print,
) -> dict[str, Any]:
    """Greedy search of one power-of-two factor per layer on training crops; rewrite ``weights``
    (a DeepHQ ``.safetensors``) with the best steps found and add a ``step_search`` record to its
    sidecar. Returns that record.

    Each sweep visits the layers in order; for layer ``l`` it measures doubling, then halving,
    every step of ``l`` (:func:`moved`) and keeps the first move whose BD-rate against the
    starting file's curve beats the best so far by more than :data:`MIN_GAIN_PERCENT`. The
    search stops after ``sweeps`` sweeps or a sweep that keeps nothing. Thresholds are not
    touched. Raises ``ValueError`` when a candidate has no defined BD-rate against the start.

    Measured on the 162,000-iteration base (README, DeepHQ): the 16 default crops did not rank
    files that differ by less than about 2 % on Kodak the way Kodak does, so a gain of a fraction
    of a percent here is a candidate to confirm, not a result.
    """
    from bench.bdrate import bd_rate
    from bench.grid import DEFAULT_BPP_GRID
    from plugins.deephq.codec import DeepHQCodec

    weights = Path(weights)
    start = dp.load(weights)
    grid = tuple(sorted(DEFAULT_BPP_GRID if grid is None else grid))
    images = training_crops(data, crops, crop_size, log=log)
    with tempfile.TemporaryDirectory(prefix="deephq-steps-") as tmp:
        count = 0

        def curve_of(params: dp.DeepHQParams) -> Curve:
            nonlocal count
            count += 1
            candidate = Path(tmp) / f"candidate{count}.safetensors"
            dp.save(params, candidate)
            return measure_curve(DeepHQCodec(weights=str(candidate), memo=True), images, grid)

        ref = curve_of(start)
        best, best_bd = start, 0.0
        tried: list[dict[str, Any]] = []
        for sweep in range(sweeps):
            kept_any = False
            for layer in range(start.layers - 1):
                for exponent in (1, -1):
                    candidate = moved(best, layer, exponent)
                    if candidate is None:
                        continue
                    c = curve_of(candidate)
                    bd = bd_rate(ref.bpp, ref.psnr_rgb, c.bpp, c.psnr_rgb).value
                    if not np.isfinite(bd):
                        raise ValueError(f"layer {layer} x2^{exponent}: no BD-rate against start")
                    keep = bd < best_bd - MIN_GAIN_PERCENT
                    tried.append(
                        {"sweep": sweep, "layer": layer, "exponent": exponent,
                         "bd_rate_vs_start_percent": bd, "kept": keep}
                    )  # fmt: skip
                    log(f"sweep {sweep} layer {layer} x2^{exponent:+d}: {bd:+.2f} %"
                        + (" kept" if keep else ""))  # fmt: skip
                    if keep:
                        best, best_bd, kept_any = candidate, bd, True
                        break
            if not kept_any:
                break
    dp.save(best, weights, {"steps_searched": str(len(tried))})
    record = {
        "what": "one power-of-two factor per layer, chosen by greedy BD-rate descent over real "
        "truncations on training crops (plugins/deephq/train_calibration.py)",
        "bd_rate_vs_start_percent": best_bd,
        "moves": tried,
        "crops": len(images),
        "crop_size": crop_size,
        "grid_bpp": list(grid),
        "start_steps_per_layer_mean": start.steps.mean(axis=1).tolist(),
        "steps_per_layer_mean": best.steps.mean(axis=1).tolist(),
    }
    _update_sidecar(
        weights,
        step_search=record,
        steps_per_layer={
            "mean": best.steps.mean(1).tolist(),
            "min": best.steps.min(1).tolist(),
            "max": best.steps.max(1).tolist(),
        },
    )
    return record


def channel_gains(
    base: Any, crops: Sequence[np.ndarray], noise: float = GAIN_NOISE, seed: int = 0
) -> np.ndarray:
    """(M,) float64: per latent channel of ``base`` (a
    :class:`~plugins.learned.model_io.BaseModel`), the squared error of the synthesised crops
    (8-bit units, summed over pixels and colours) per unit of squared latent error, when
    Gaussian noise of standard deviation ``noise`` is added to that channel alone of the crops'
    rounded latents. ``crops``: ``(H, W, 3)`` uint8, all the same size."""
    import torch

    x = torch.from_numpy(np.stack(crops)).permute(0, 3, 1, 2).float() / 255.0
    generator = torch.Generator().manual_seed(seed)
    gains = np.zeros(base.M, np.float64)
    with torch.no_grad():
        y = torch.round(base.nets.g_a(x))
        reference = base.nets.g_s(y)
        for ch in range(base.M):
            eps = torch.randn(y[:, ch].shape, generator=generator) * noise
            moved = y.clone()
            moved[:, ch] += eps
            error = ((base.nets.g_s(moved) - reference) * 255.0).square().sum()
            gains[ch] = float(error / eps.square().sum())
    return gains


def measure_gains(
    weights: str | Path,
    data: str | Path,
    crops: int = DEFAULT_GAIN_CROPS,
    crop_size: int = DEFAULT_CROP_SIZE,
    noise: float = GAIN_NOISE,
    log: Callable[[str], None] = print,
) -> dict[str, Any]:
    """Measure :func:`channel_gains` of ``weights``' base on training crops, write them into
    ``weights`` (a DeepHQ ``.safetensors``) and a ``channel_gains`` record into its sidecar.
    Returns that record."""
    from plugins.learned.model_io import BaseModel

    weights = Path(weights)
    params = dp.load(weights)
    base = BaseModel.get(params.meta.get("base_weights") or None)
    if base.resolved.sha256 != params.base_sha256:
        raise ValueError(f"{weights} was made on other base weights than {base.resolved.spec}")
    images = training_crops(data, crops, crop_size, log=log)
    gains = channel_gains(base, images, noise)
    dp.save(replace(params, channel_gain=gains), weights)
    record = {
        "what": "per channel, squared pixel error (8-bit units, summed) per unit of squared "
        "latent error: Gaussian noise on one channel of rounded latents of training crops "
        "(plugins/deephq/train_calibration.py)",
        "crops": len(images),
        "crop_size": crop_size,
        "noise": noise,
        "min": float(gains.min()),
        "median": float(np.median(gains)),
        "max": float(gains.max()),
    }
    thr = params.mask_index_threshold
    added = params.steps[:-1].size + (thr.size if np.any(thr) else 0) + gains.size
    _update_sidecar(weights, channel_gains=record, added_parameters=int(added))
    return record
