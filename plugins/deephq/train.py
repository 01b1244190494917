"""Training DeepHQ's parameters on the frozen base model: the paper's steps 2 and 3 on CPU.

Step 1 of the paper (training the base compression model) is the shipped MeanScaleHyperprior
(:mod:`plugins.learned.training.msh`); it stays frozen here. What is learned:

* step 2 (``--step 2``): the quantization step ``D[l, c]`` of every layer ``l < L`` and latent
  channel ``c`` (the last layer's step is 1, the base model's grid), with the multi-rate loss
  ``sum_l (R_l + lambda_l * 255**2 * MSE_l)``, ``lambda_l`` geometric from ``--lmbda-first`` to
  ``--lmbda-last`` over the learned layers (defaults :data:`LMBDA_FIRST`, :data:`LMBDA_LAST`;
  the last layer, the base model's grid, has the base model's lambda ``--lmbda-base``). By
  default a step is a power of two, ``D = 2 ** round(softplus(a))`` (straight-through
  rounding): a power-of-two grid cuts a coarser one's bins into pieces at least half its step
  wide, while real-valued steps cut each other's bins into irregular slivers (measured worse,
  see the plugin's README section); ``--real-steps`` learns ``D = 1 + softplus(a)`` instead;
* step 3 (``--step 3``, ``--init`` a step-2 run): the steps again plus the mask generator, the
  per-(layer, channel) threshold ``t[l, c]`` on the log prior scale: element ``e`` is coded from
  layer ``l`` on when ``log sigma_e > t[l, c]``. ``t[l+1] = t[l] - softplus(g[l])`` keeps the
  selected sets nested.

The loss of one layer follows the coder's nested intervals. With the fine index
``n = round(y - mu)``, layer ``k``'s bin of ``n`` is ``[(j - 1/2) D_k, (j + 1/2) D_k]`` with
``j = floor(n / D_k + 1/2)`` on the mid-tread grid; with ``--grid dead-zone`` it is
``[j D_k, (j + 1) D_k]`` with ``j = trunc(n / D_k)``, ``[-D_k, D_k]`` for ``j = 0``, mirrored
below (the grid is written into the exported file and the coder follows it). Its edges snap to
half-integers (the coder's bins hold whole integers; straight-through, so the gradient reaches
``D_k``), and the interval after layer ``l`` is the intersection over ``k <= l``. Rate:
``-log2`` of its mass under ``N(0, sigma)`` (the nested coder's cumulative cost).
Reconstruction: ``mu`` plus the decoder's value of the interval (the prior's conditional mean
over it, or the fine integer once it holds one; ``--loss-reconstruction midpoint``: its
midpoint, the only choice before 2026-12-02), whose gradient with respect to ``D_l`` is the
straight-through one of ``D_l * round((y - mu) / D_l)`` (dead-zone: of the bin's midpoint, 0 in
the centre bin); both times the mask ``m = sigmoid((log sigma - t) / 0.5)``, relaxed in the
forward pass too.
(``--hard-masks``: the hard 0/1 mask forward and the sigmoid's gradient backward. That
gradient judges a coded element's distortion at its coded value, where the derivative is
near zero, so mostly the rate term pushes: the thresholds kept rising with iterations, the
last layer ended up leaving 28 % of its (channel, scale index) pairs uncoded, and the full
stream lost 0.5-1.5 dB against the base model. BD-rate against PLONQ on Kodak's 24 images,
hard then relaxed: +2.7 % and +2.7 % with masks, +1.9 % and -0.1 % without; see the README.)
``sigma`` is the scale-table value of the element's scale index, as the coder uses it. The
loss does not model the sliver merging. Each iteration draws
``--layers-per-iteration`` of the trainable layers (an unbiased estimate of the multi-rate
loss at a fraction of the cost of running the synthesis ``L`` times).

Resumable in the same loop as ``bench train msh`` (:class:`plugins.learned.training.run.Run`):
``<out>/checkpoint.pt`` (atomic, every ``--checkpoint-every`` iterations and on SIGINT/SIGTERM)
and ``<out>/log.jsonl``. ``--export FILE.safetensors`` writes
the shippable parameters (:mod:`plugins.deephq.params`) and a JSON sidecar.

Run ``bench train deephq --help``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import random
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from plugins.deephq import params as dp
from plugins.deephq.coder import DEAD_ZONE, GRIDS, MID_TREAD
from plugins.learned.training.run import (  # noqa: F401 - the run's files, named for users
    CHECKPOINT_NAME,
    LOG_NAME,
)

LAYERS = 8
MASK_TEMPERATURE = 0.5
CHECKPOINT_FORMAT = "bench-deephq-checkpoint-v1"
DEFAULT_ITERATIONS = 800


def _base_lambda(spec: str) -> float:
    """The lambda the base weights were trained with (their sidecar), for the last layer."""
    from plugins.learned.weights import resolve

    sidecar = resolve(spec).sidecar or {}
    lmbda = (sidecar.get("config") or {}).get("lmbda")
    if lmbda is None:
        raise ValueError(f"base weights {spec} do not state their lambda: pass --lmbda-base")
    return float(lmbda)


#: Default layer lambdas, first and last learned layer, chosen on the 11,313-iteration base.
#: A layer meant to end at rate ``R`` (bpp) and PSNR ``P`` (dB) of a curve of slope ``dP/dR``
#: has ``lambda = (dR/dP) / (0.2303 * MSE)`` (MSE in 8-bit units; the loss is
#: ``R + lambda * 255**2 * MSE`` on [0, 1] pixels): on the 162,000-iteration base these end the
#: learned layers near 0.1 and 0.45 bpp. Spreading them to the slopes at 0.1 and 1.5 bpp
#: (0.0005, 0.07) measured the same BD-rate on Kodak (README, DeepHQ), so they stay.
LMBDA_FIRST = 0.0003
LMBDA_LAST = 0.004


def lambdas(first: float, last: float, base: float, layers: int = LAYERS) -> list[float]:
    """R-D trade-offs of the layers: geometric from ``first`` to ``last`` over the ``layers - 1``
    learned layers, then ``base`` (the base model's lambda) for the last layer."""
    learned = layers - 1
    if learned < 2:
        return [first] * learned + [base]
    return [first * (last / first) ** (k / (learned - 1)) for k in range(learned)] + [base]


def _inv_softplus(x: float) -> float:
    return math.log(math.expm1(x))


def build_quantizer(
    channels: int,
    layers: int,
    log_sigma_min: float,
    power_of_two: bool = True,
    grid: str = MID_TREAD,
):
    """The trainable module: steps ``(L, M)`` and nested mask thresholds ``(L, M)``; ``grid``
    is the coder's layer grid (:data:`plugins.deephq.coder.GRIDS`).

    ``power_of_two``: a step is ``2 ** e`` with the exponent ``e = softplus(a) >= 0`` rounded
    (straight-through), so that every layer's grid nests exactly in the coarser ones on the
    integer grid; initialised to 8, 8, 4, 4, 2, 2, 1 (then 1). Otherwise ``D = 1 + softplus(a)``,
    initialised to ``2 ** ((L - 1 - l) / 2)``.
    """
    import torch
    from torch import nn
    from torch.nn import functional as F

    class LearnedQuantizer(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            if power_of_two:
                init = [_inv_softplus((layers - 1 - k) / 2.0 - 0.25) for k in range(layers - 1)]
            else:
                init = [
                    _inv_softplus(2.0 ** ((layers - 1 - k) / 2.0) - 1.0) for k in range(layers - 1)
                ]
            raw = torch.tensor(init)[:, None]
            self.step_raw = nn.Parameter(raw.repeat(1, channels))
            self.mask_top = nn.Parameter(torch.full((channels,), log_sigma_min + 1.0))
            gap = _inv_softplus(1.5 / max(layers - 1, 1))
            self.mask_gap = nn.Parameter(torch.full((layers - 1, channels), gap))

        def steps(self) -> torch.Tensor:
            ones = torch.ones(1, channels)
            if not power_of_two:
                return torch.cat([1.0 + F.softplus(self.step_raw), ones])
            e = F.softplus(self.step_raw)
            e = e + (torch.round(e) - e).detach()
            return torch.cat([torch.exp2(e), ones])

        def thresholds(self) -> torch.Tensor:
            drops = torch.cumsum(F.softplus(self.mask_gap), 0)
            return torch.cat([self.mask_top[None], self.mask_top[None] - drops])

        def layer(
            self,
            y,
            mu,
            sigma,
            layer: int,
            use_masks: bool,
            soft_masks: bool = False,
            reconstruction: str = "mean",
        ):
            """``(y_hat, bits)`` at the end of ``layer`` (0-based; see module doc).

            ``reconstruction``: the value of an interval in the forward pass, ``"mean"`` (the
            Gaussian prior's conditional mean, as the coder decodes; a single fine integer is
            itself) or ``"midpoint"``."""
            steps = self.steps()
            n = torch.round(y - mu).detach()
            lower = upper = None
            for k in range(layer + 1):
                lo_k, hi_k = _bin_edges(n, steps[k][None, :, None, None], grid)
                lower = lo_k if lower is None else torch.maximum(lower, lo_k)
                upper = hi_k if upper is None else torch.minimum(upper, hi_k)
            normal = torch.distributions.Normal(0.0, 1.0)
            # mass of [lower, upper] under N(0, sigma), computed on the side away from the mode
            flip = (lower + upper) > 0
            a = torch.where(flip, -upper, lower) / sigma
            b = torch.where(flip, -lower, upper) / sigma
            p = normal.cdf(b) - normal.cdf(a)
            bits = -torch.log2(p.clamp_min(1e-9))
            # reconstruction: the interval's midpoint; its gradient with respect to the layer's
            # step is the straight-through one of ``D * round((y - mu) / D)``, the quantization
            # error ``round(v) - v`` (detached labels alone would hide that a larger step moves
            # values into the zero bin, and the rate term would then grow the steps unchecked)
            d = steps[layer][None, :, None, None]
            v = ((y - mu) / d).detach()
            if grid == DEAD_ZONE:  # the dead-zone bin's midpoint, 0 in the centre bin
                centre = torch.sign(v) * (torch.floor(v.abs()) + 0.5)
                surrogate = d * (torch.where(v.abs() < 1, 0.0, centre) - v)
            else:
                surrogate = d * (torch.round(v) - v)
            rel = _interval_value(lower.detach(), upper.detach(), sigma, reconstruction)
            rel = rel + surrogate - surrogate.detach()
            if use_masks:
                t = self.thresholds()[layer][None, :, None, None]
                soft = torch.sigmoid((sigma.log() - t) / MASK_TEMPERATURE)
                hard = (sigma.log() > t).to(soft.dtype)
                m = soft if soft_masks else hard + soft - soft.detach()
                rel = m * rel
                bits = m * bits
            return mu + rel, bits.sum()

    return LearnedQuantizer()


def _bin_edges(n, d, grid: str):
    """Edges ``(lower, upper)`` of the layer-grid bin of fine integers ``n`` under steps ``d``
    (tensors that broadcast): half-integers around the bin's whole fine integers, with the
    continuous edges' gradient with respect to ``d`` (straight-through)."""
    import torch

    if grid == DEAD_ZONE:  # label trunc(n / d): bins [j d, (j+1) d), (-d, d), ((j-1) d, j d]
        label = torch.trunc(n / d).detach()
        lo = torch.where(label > 0, label * d, torch.where(label < 0, (label - 1) * d, -d))
        hi = torch.where(label > 0, (label + 1) * d, torch.where(label < 0, label * d, d))
        lo_snap = torch.where(label > 0, torch.ceil(lo) - 0.5, torch.floor(lo) + 0.5)
        hi_snap = torch.where(label < 0, torch.floor(hi) + 0.5, torch.ceil(hi) - 0.5)
    else:  # label floor(n / d + 1/2): bins [(j - 1/2) d, (j + 1/2) d)
        label = torch.floor(n / d + 0.5).detach()
        lo, hi = (label - 0.5) * d, (label + 0.5) * d
        lo_snap, hi_snap = torch.ceil(lo) - 0.5, torch.ceil(hi) - 0.5
    return lo + (lo_snap - lo).detach(), hi + (hi_snap - hi).detach()


def _interval_value(lower, upper, sigma, reconstruction: str):
    """The decoder's value of ``y - mu`` in ``[lower, upper]`` (half-integer edges, tensors of
    one shape): the midpoint, or the conditional mean of ``N(0, sigma)`` (:mod:`intervals`)
    where the interval holds more than one fine integer."""
    import torch

    from plugins.learned.coding.intervals import gaussian_interval_mean

    mid = 0.5 * (lower + upper)
    if reconstruction == "midpoint":
        return mid
    if reconstruction != "mean":
        raise ValueError(f"reconstruction must be 'mean' or 'midpoint', not {reconstruction!r}")
    mean = gaussian_interval_mean(
        lower.double().numpy(), upper.double().numpy(), sigma.double().numpy()
    )
    mean = torch.from_numpy(mean).to(mid.dtype)
    return torch.where(upper - lower > 1.5, mean, mid)


def _prior(base, x):
    """Frozen base: ``y``, ``mu`` and the scale-table ``sigma`` of every element of ``x``."""
    import torch

    t = base.tables
    with torch.no_grad():
        y = base.nets.g_a(x)
        z = base.nets.h_a(y)
        med = torch.from_numpy(t.z_medians)[None, :, None, None]
        z_hat = torch.round(z - med) + med
        scales, mu = base.nets.h_s(z_hat).chunk(2, 1)
        table = torch.from_numpy(base.scale_table).float()
        scales = scales.clamp_min(float(base.scale_bound))
        idx = torch.bucketize(scales, table[:-1], right=False)
        sigma = table[idx]
    return y, mu, sigma


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """A DeepHQ checkpoint (file, or ``checkpoint.pt`` in a directory); ``ValueError`` if not."""
    from plugins.learned.training.run import CheckpointError, read_checkpoint

    try:
        return read_checkpoint(path, (CHECKPOINT_FORMAT,), what="DeepHQ checkpoint")
    except CheckpointError as exc:
        raise ValueError(str(exc)) from exc


def train(
    out: str | Path,
    *,
    data: str | None = None,
    step: int = 2,
    base: str | None = None,
    init: str | None = None,
    iterations: int | None = None,
    batch: int = 8,
    crop: int = 128,
    lr: float = 0.01,
    threads: int = 1,
    checkpoint_every: int = 100,
    log_every: int = 25,
    layers_per_iteration: int = 2,
    lmbda_first: float = LMBDA_FIRST,
    lmbda_last: float = LMBDA_LAST,
    lmbda_base: float | None = None,
    power_of_two: bool = True,
    soft_masks: bool = True,
    loss_reconstruction: str = "mean",
    grid: str = MID_TREAD,
    seed: int = 0,
    resume: bool = False,
    log=print,
) -> dict[str, Any]:
    """Run (or resume) step 2 or 3 in the shared resumable loop
    (:class:`plugins.learned.training.run.Run`); returns ``{"iteration", "checkpoint",
    "stopped_by"}``."""
    import torch

    from plugins.learned.model_io import BaseModel
    from plugins.learned.training.data import load_training_images, sample_batch
    from plugins.learned.training.precision import TrainMode, device_name
    from plugins.learned.training.run import Run
    from plugins.learned.weights import DEFAULT_WEIGHTS

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    run = Run(out, CHECKPOINT_FORMAT)
    ckpt = run.checkpoint_path
    if resume:
        state = load_checkpoint(ckpt)
        cfg = dict(state["config"])
        cfg["iterations"] = iterations or cfg["iterations"]
        cfg["threads"] = threads
    else:
        if ckpt.exists():
            raise ValueError(f"{ckpt} exists: pass --resume, or choose another --out")
        if step not in (2, 3):
            raise ValueError("--step must be 2 (steps) or 3 (steps + masks)")
        if step == 3 and not init:
            raise ValueError("step 3 starts from a step-2 run: pass --init DIR")
        if not data:
            raise ValueError("--data is required for a new run")
        if grid not in GRIDS:
            raise ValueError(f"--grid must be one of {', '.join(GRIDS)}, not {grid!r}")
        cfg = {
            "step": step,
            "base": base or DEFAULT_WEIGHTS,
            "data": str(Path(data).resolve()),
            "init": str(init) if init else None,
            "iterations": iterations or DEFAULT_ITERATIONS,
            "log_every": log_every,
            "checkpoint_every": checkpoint_every,
            "batch": batch,
            "crop": crop,
            "lr": lr,
            "threads": threads,
            "layers": LAYERS,
            "power_of_two": power_of_two,
            "layers_per_iteration": layers_per_iteration,
            "lambdas": lambdas(
                lmbda_first, lmbda_last, lmbda_base or _base_lambda(base or DEFAULT_WEIGHTS)
            ),
            "seed": seed,
            "soft_masks": soft_masks,
            "loss_reconstruction": loss_reconstruction,
            "grid": grid,
        }
        state = None
    torch.set_num_threads(int(cfg["threads"]))
    with contextlib.suppress(RuntimeError):
        torch.set_num_interop_threads(1)
    prev = load_checkpoint(cfg["init"]) if cfg["init"] and state is None else None
    if prev is not None:  # step 3 keeps step 2's parametrisation and grid
        cfg["power_of_two"] = prev["config"].get("power_of_two", False)
        cfg["grid"] = prev["config"].get("grid", MID_TREAD)
    base_model = BaseModel.get(cfg["base"])
    if prev is not None and prev.get("base_sha256") != base_model.resolved.sha256:
        raise ValueError(f"{cfg['init']} was trained on other base weights than {cfg['base']}")
    use_masks = cfg["step"] == 3
    run.seed(cfg["seed"])
    quant = build_quantizer(
        base_model.M,
        cfg["layers"],
        math.log(base_model.scale_table[0]),
        cfg.get("power_of_two", False),
        cfg.get("grid", MID_TREAD),
    )
    trainable = list(range(cfg["layers"] if use_masks else cfg["layers"] - 1))
    params = [quant.step_raw] + ([quant.mask_top, quant.mask_gap] if use_masks else [])
    optimizer = torch.optim.Adam(params, lr=cfg["lr"])
    history: dict[str, Any] = {}
    if state is not None:
        quant.load_state_dict(state["quantizer"])
        optimizer.load_state_dict(state["optimizer"])
        run.restore(state)
        history = state.get("history", {})
        log(f"resuming {ckpt} at iteration {run.iteration}")
    elif prev is not None:
        quant.load_state_dict(prev["quantizer"])
        history = {
            **prev.get("history", {}),
            f"step{prev['config']['step']}": {
                "iterations": int(prev["iteration"]),
                "train_seconds": float(prev["train_seconds"]),
                "config": prev["config"],
            },
        }
        log(f"starting step {cfg['step']} from {cfg['init']} (step {prev['config']['step']})")
    images = load_training_images(cfg["data"], cfg["crop"], log=log)
    lam = cfg["lambdas"]
    mode = TrainMode()
    run.start_leg(mode.label, device_name(mode), int(cfg["threads"]))

    def checkpoint(reason: str) -> None:
        run.save(
            {
                "config": cfg,
                "quantizer": quant.state_dict(),
                "optimizer": optimizer.state_dict(),
                "history": history,
                "base_sha256": base_model.resolved.sha256,
            }
        )

    running: dict[int, list[float]] = {}

    def step() -> None:
        t0 = time.perf_counter()
        x = sample_batch(images, run.rng, cfg["batch"], cfg["crop"])
        y, mu, sigma = _prior(base_model, x)
        chosen = run.rng.choice(
            trainable, size=min(cfg["layers_per_iteration"], len(trainable)), replace=False
        )
        optimizer.zero_grad()
        num_pixels = x.shape[0] * x.shape[2] * x.shape[3]
        for layer in sorted(int(k) for k in chosen):
            y_hat, bits = quant.layer(
                y,
                mu,
                sigma,
                layer,
                use_masks,
                cfg.get("soft_masks", False),
                cfg.get("loss_reconstruction", "midpoint"),
            )
            x_hat = base_model.nets.g_s(y_hat)
            mse = torch.mean((x_hat - x) ** 2)
            bpp = bits / num_pixels
            loss = bpp + lam[layer] * 255.0**2 * mse
            loss.backward()
            psnr = 10 * math.log10(1.0 / max(mse.item(), 1e-12))
            running.setdefault(layer, []).append((bpp.item(), psnr))
        optimizer.step()
        run.advance(time.perf_counter() - t0)
        iteration, seconds = run.iteration, run.train_seconds
        if iteration % cfg.get("log_every", log_every) == 0:
            rec = {"type": "train", "iteration": iteration, "train_seconds": seconds}
            for layer, vals in sorted(running.items()):
                arr = np.array(vals)
                rec[f"layer{layer + 1}"] = {"bpp": arr[:, 0].mean(), "psnr": arr[:, 1].mean()}
            steps = quant.steps().detach()
            rec["step_mean"] = steps.mean(1).tolist()
            run.log(rec)
            running.clear()
            log(
                f"it {iteration} {seconds / iteration:.2f} s/it; "
                + " ".join(
                    f"L{k}:{v['bpp']:.3f}/{v['psnr']:.2f}"
                    for k, v in ((key[5:], rec[key]) for key in rec if key.startswith("layer"))
                )
            )

    every = cfg.get("checkpoint_every", checkpoint_every)
    stopped_by = run.loop(cfg["iterations"], step, checkpoint, every)
    return {"iteration": run.iteration, "checkpoint": str(ckpt), "stopped_by": stopped_by}


def export(checkpoint: str | Path, out_file: str | Path) -> dict[str, Any]:
    """Write the parameters of a step-2 or step-3 checkpoint and a JSON sidecar."""
    from plugins.learned.model_io import BaseModel

    state = load_checkpoint(checkpoint)
    cfg = state["config"]
    base = BaseModel.get(cfg["base"])
    if base.resolved.sha256 != state["base_sha256"]:
        raise ValueError("the checkpoint was trained on other base weights than --base resolves to")
    grid = cfg.get("grid", MID_TREAD)
    quant = build_quantizer(
        base.M, cfg["layers"], math.log(base.scale_table[0]), cfg.get("power_of_two", False), grid
    )
    quant.load_state_dict(state["quantizer"])
    steps = quant.steps().detach().numpy().astype(np.float32).astype(np.float64)
    if cfg["step"] == 3:
        t = quant.thresholds().detach().numpy().astype(np.float64)
        log_table = np.log(base.scale_table)
        thr = np.searchsorted(log_table, t, side="right")
        thr = np.minimum.accumulate(thr, axis=0)
    else:
        thr = np.zeros(steps.shape, np.int64)
    history = {
        **state.get("history", {}),
        f"step{cfg['step']}": {
            "iterations": int(state["iteration"]),
            "train_seconds": float(state["train_seconds"]),
            "config": cfg,
        },
    }
    params = dp.DeepHQParams(steps, thr, base.resolved.sha256)
    meta = {"base_weights": base.resolved.spec, "steps_trained": str(cfg["step"]), "grid": grid}
    what = (
        "DeepHQ-MS parameters (learned per-layer, per-channel quantization steps and mask "
        "thresholds) trained by this project with `bench train deephq` on its own small "
        "base model; NOT the DeepHQ paper's weights"
    )
    return _write(out_file, params, base, meta, what, training=history)


def export_ladder(
    out_file: str | Path, ladder: Sequence[float], grid: str, base: str | None = None
) -> dict[str, Any]:
    """Write parameters with the same untrained steps ``ladder`` (one per layer, the last 1)
    for every channel and no masks, and a JSON sidecar: the start the slope order codes from
    without training."""
    from plugins.learned.model_io import BaseModel

    model = BaseModel.get(base)
    steps = np.repeat(np.asarray(ladder, np.float64)[:, None], model.M, axis=1)
    params = dp.DeepHQParams(steps, np.zeros(steps.shape, np.int64), model.resolved.sha256)
    text = ",".join(f"{d:g}" for d in ladder)
    meta = {"base_weights": model.resolved.spec, "steps_trained": "0", "grid": grid}
    what = (
        f"DeepHQ-MS parameters made by this project with `bench train deephq --ladder {text}`: "
        "the same power-of-two steps for every channel (not trained), no masks; NOT the DeepHQ "
        "paper's weights"
    )
    return _write(out_file, params, model, meta, what, steps=f"untrained ladder {text}")


def _write(
    out_file: str | Path,
    params: dp.DeepHQParams,
    base: Any,
    meta: dict[str, str],
    what: str,
    **facts: Any,
) -> dict[str, Any]:
    """Save ``params`` to ``out_file`` (.safetensors) with ``meta`` and write its sidecar
    (``what`` it is, the file's facts and ``facts``); returns the sidecar."""
    from bench.hashing import sha256_file

    out_file = Path(out_file)
    if out_file.suffix != ".safetensors":
        raise ValueError("export target must end in .safetensors")
    out_file.parent.mkdir(parents=True, exist_ok=True)
    dp.save(params, out_file, meta)
    steps, thr = params.steps, params.mask_index_threshold
    sidecar = {
        "format": dp.FORMAT,
        "what": what,
        "weights_file": out_file.name,
        "weights_sha256": sha256_file(out_file),
        "weights_bytes": out_file.stat().st_size,
        "base": {"spec": base.resolved.spec, "sha256": base.resolved.sha256},
        "layers": int(steps.shape[0]),
        "channels": int(steps.shape[1]),
        "grid": meta["grid"],
        "added_parameters": int(steps[:-1].size + (thr.size if np.any(thr) else 0)),
        "steps_per_layer": {
            "mean": steps.mean(1).tolist(),
            "min": steps.min(1).tolist(),
            "max": steps.max(1).tolist(),
        },
        "scale_indexes_selected_per_layer": dp.selected_fraction(thr, len(base.scale_table)),
        **facts,
        "exported_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    dp.sidecar_path(out_file).write_text(json.dumps(sidecar, indent=2, sort_keys=True) + "\n")
    return sidecar


def _parse_args(argv: Sequence[str] | None):
    p = argparse.ArgumentParser(
        prog="bench train deephq",
        description="Train DeepHQ's steps (step 2) and masks (step 3) on the frozen base model.",
    )
    p.add_argument("--out", help="checkpoint directory (needed unless --ladder)")
    p.add_argument("--data", help="training image folder (never Kodak)")
    p.add_argument("--step", type=int, default=2, choices=(2, 3))
    p.add_argument("--base", default=None, help="base weights (default: the bundled model)")
    p.add_argument("--init", default=None, help="step 3: the step-2 checkpoint directory")
    p.add_argument(
        "--iterations",
        type=int,
        default=None,
        help=f"default {DEFAULT_ITERATIONS}; on --resume: the run's",
    )
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--crop", type=int, default=128)
    p.add_argument("--lr", type=float, default=0.01)
    p.add_argument("--threads", type=int, default=1, help="torch threads (training, --calibrate)")
    p.add_argument("--checkpoint-every", type=int, default=100)
    p.add_argument("--log-every", type=int, default=25)
    p.add_argument("--layers-per-iteration", type=int, default=2)
    p.add_argument("--lmbda-first", type=float, default=LMBDA_FIRST)
    p.add_argument("--lmbda-last", type=float, default=LMBDA_LAST)
    p.add_argument(
        "--lmbda-base", type=float, default=None, help="default: the base weights' own lambda"
    )
    p.add_argument(
        "--real-steps",
        action="store_true",
        help="learn unconstrained real steps >= 1 instead of powers of two",
    )
    p.add_argument(
        "--hard-masks",
        action="store_true",
        help="step 3: hard masks forward, the sigmoid's gradient backward (before 2026-12-02)",
    )
    p.add_argument(
        "--loss-reconstruction",
        choices=("mean", "midpoint"),
        default="mean",
        help="an interval's value in the loss: the prior's conditional mean, as the coder "
        "decodes (default), or the midpoint (before 2026-12-02)",
    )
    p.add_argument(
        "--grid",
        choices=GRIDS,
        default=MID_TREAD,
        help="the layers' grid: mid-tread (the paper's uniform quantizer) or dead-zone "
        "(PLONQ's sign-magnitude grid, exactly nested); step 3 keeps step 2's",
    )
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--resume", action="store_true")
    p.add_argument("--export", metavar="FILE.safetensors", help="export --out's checkpoint")
    p.add_argument(
        "--calibrate",
        action="store_true",
        help="with --export of a step-3 run and --data: shift the mask thresholds to the best "
        "BD-rate over real truncations of training crops (plugins/deephq/train_calibration.py)",
    )
    p.add_argument(
        "--calibrate-shifts",
        default=None,
        help="candidate shifts in scale indexes, comma-separated, including 0 "
        "(default: -4,0,4,8,12,16,24)",
    )
    p.add_argument(
        "--calibrate-steps",
        action="store_true",
        help="with --export and --data: then search one power-of-two factor per layer by "
        "BD-rate over real truncations of training crops (after --calibrate's thresholds)",
    )
    p.add_argument(
        "--calibrate-sweeps", type=int, default=None, help="--calibrate-steps: sweeps (2)"
    )
    p.add_argument(
        "--ladder",
        metavar="D1,...,1",
        help="with --export: write untrained steps, the same for every channel (e.g. "
        "128,64,32,16,8,4,2,1 with --grid dead-zone), instead of exporting --out",
    )
    p.add_argument(
        "--channel-gains",
        action="store_true",
        help="with --export and --data: measure each latent channel's pixel-error gain on "
        "training crops and store it in the file (the slope order weighs channels by it)",
    )
    p.add_argument(
        "--calibrate-crops", type=int, default=None, help="training crops (16; gains: 8)"
    )
    p.add_argument("--calibrate-crop", type=int, default=None, help="crop side in pixels (256)")
    return p.parse_args(argv)


def _calibration_options(args) -> dict[str, Any]:
    import torch

    torch.set_num_threads(args.threads)
    options: dict[str, Any] = {}
    if args.calibrate_crops:
        options["crops"] = args.calibrate_crops
    if args.calibrate_crop:
        options["crop_size"] = args.calibrate_crop
    return options


def _calibrate(args) -> dict[str, Any]:
    from plugins.deephq import train_calibration

    options = _calibration_options(args)
    if args.calibrate_shifts:
        try:
            options["shifts"] = [int(v) for v in args.calibrate_shifts.split(",")]
        except ValueError:
            raise ValueError(f"--calibrate-shifts: not integers: {args.calibrate_shifts}") from None
    return train_calibration.calibrate(args.export, args.data, **options)


def _search_steps(args) -> dict[str, Any]:
    from plugins.deephq import train_calibration

    options = _calibration_options(args)
    if args.calibrate_sweeps is not None:
        if args.calibrate_sweeps < 1:
            raise ValueError(f"--calibrate-sweeps must be >= 1, not {args.calibrate_sweeps}")
        options["sweeps"] = args.calibrate_sweeps
    return train_calibration.search_steps(args.export, args.data, **options)


def _ladder(text: str) -> list[float]:
    try:
        ladder = [float(v) for v in text.split(",")]
    except ValueError:
        raise ValueError(f"--ladder: not numbers: {text}") from None
    if any(d < 1 for d in ladder) or ladder[-1] != 1:
        raise ValueError(f"--ladder: steps must be >= 1 and end with 1, not {text}")
    return ladder


def _measure_gains(args) -> dict[str, Any]:
    from plugins.deephq import train_calibration

    options = _calibration_options(args)
    options["crops"] = options.get("crops", train_calibration.DEFAULT_GAIN_CROPS)
    return train_calibration.measure_gains(args.export, args.data, **options)


def main(argv: Sequence[str] | None = None) -> int:
    args = _parse_args(argv)
    try:
        for flag, given in (
            ("--calibrate", args.calibrate),
            ("--calibrate-steps", args.calibrate_steps),
            ("--channel-gains", args.channel_gains),
        ):
            if given and not (args.export and args.data):
                raise ValueError(f"{flag} goes with --export and --data (training images)")
        if args.ladder and not args.export:
            raise ValueError("--ladder goes with --export FILE.safetensors")
        if not (args.out or args.ladder):
            raise ValueError("--out (the checkpoint directory) is needed")
        if args.export:
            if args.ladder:
                side = export_ladder(args.export, _ladder(args.ladder), args.grid, args.base)
            else:
                side = export(args.out, args.export)
            print(f"wrote {args.export} ({side['weights_bytes']} bytes) and its sidecar")
            if args.channel_gains:
                record = _measure_gains(args)
                print(
                    f"channel gains: {record['min']:.1f} to {record['max']:.1f} "
                    f"(median {record['median']:.1f}) on {record['crops']} training crops"
                )
            if args.calibrate:
                record = _calibrate(args)
                print(
                    f"thresholds shifted by {record['chosen_shift']} scale indexes "
                    f"(BD-rate vs unshifted on training crops: "
                    f"{record['bd_rate_vs_unshifted_percent'][str(record['chosen_shift'])]:+.2f} %)"
                )
            if args.calibrate_steps:
                record = _search_steps(args)
                kept = sum(m["kept"] for m in record["moves"])
                gain = record["bd_rate_vs_start_percent"]
                print(
                    f"steps: {kept} of {len(record['moves'])} moves kept (BD-rate vs the "
                    f"exported steps on training crops: {gain:+.2f} %)"
                )
            return 0
        summary = train(
            args.out,
            data=args.data,
            step=args.step,
            base=args.base,
            init=args.init,
            iterations=args.iterations,
            batch=args.batch,
            crop=args.crop,
            lr=args.lr,
            threads=args.threads,
            checkpoint_every=args.checkpoint_every,
            log_every=args.log_every,
            layers_per_iteration=args.layers_per_iteration,
            lmbda_first=args.lmbda_first,
            lmbda_last=args.lmbda_last,
            lmbda_base=args.lmbda_base,
            power_of_two=not args.real_steps,
            soft_masks=not args.hard_masks,
            loss_reconstruction=args.loss_reconstruction,
            grid=args.grid,
            seed=args.seed,
            resume=args.resume,
        )
    except (ValueError, FileNotFoundError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    random.seed(0)
    sys.exit(main())
