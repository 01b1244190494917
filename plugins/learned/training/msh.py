"""The ``msh`` trainer: training and export of the learned codecs' base model, CompressAI's
``MeanScaleHyperprior``.

The model is Minnen et al. 2018 without the context model (mean-scale Gaussian hyperprior),
trained on random crops with the usual CompressAI rate-distortion loss
``lmbda * 255**2 * MSE + bpp`` (bpp from the likelihoods), Adam for the network and a separate
Adam for the entropy bottleneck's quantiles (``model.aux_loss()``).

Training runs the shared resumable loop (:class:`plugins.learned.training.run.Run`):
``<out>/checkpoint.pt`` holds the model, both optimizers, the iteration, every RNG state, the
legs and the config; it is written atomically every ``checkpoint_every`` iterations and when
the process gets Ctrl-C or SIGTERM.
``<out>/log.jsonl`` receives one JSON object per line: ``{"type": "train", ...}`` every
``log_every`` iterations, ``{"type": "checkpoint", ...}`` for each checkpoint, and
``{"type": "eval", ...}`` for each evaluation on a few Kodak images with real entropy coding
(:mod:`plugins.learned.training.evaluation`; Kodak is used for evaluation only, never for
training: :func:`~plugins.learned.training.data.load_training_images` refuses a training folder
that contains a Kodak image).

:func:`export` turns a checkpoint into shippable weights: a float16 ``.safetensors`` file that
also stores the entropy-coder tables computed by ``update()`` from the float16-rounded weights
(so a loader gets exactly the CDFs the exporter evaluated with, without calling ``update()``),
plus a JSON sidecar describing provenance and the Kodak rate-distortion point of the exported
weights (:mod:`plugins.learned.weights.format`; :func:`load_weights` reads such a file back).

Command line: ``bench train msh --help`` (:func:`main`).
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import os
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from bench.hashing import sha256_file
from bench.published import MBT2018_MEAN_KODAK
from plugins.learned.training.data import (
    DEFAULT_EVAL_IMAGES,
    DEFAULT_KODAK,
    load_kodak,
    load_training_images,
    manifest_sha256,
    sample_batch,
)
from plugins.learned.training.evaluation import evaluate
from plugins.learned.training.files import atomic_write_json
from plugins.learned.training.precision import (
    TrainMode,
    device_name,
    rd_forward,
    time_step,
    validated_modes,
)
from plugins.learned.training.run import (
    CHECKPOINT_NAME,
    LOG_NAME,  # noqa: F401 - the log file of a run, named here for this trainer's users
    CheckpointError,
    Run,
    read_checkpoint,
)
from plugins.learned.training.schedule import CosineSchedule
from plugins.learned.training.threads import AdaptiveThreads
from plugins.learned.weights.format import WEIGHTS_FORMAT, build_model, load_weights, sidecar_path

CONFIG_NAME = "config.json"
CHECKPOINT_FORMAT = "bench-learned-msh-checkpoint-v1"
CHECKPOINT_FORMATS = (CHECKPOINT_FORMAT,)
#: Exported weights larger than this are refused (the shipped file must stay <= 16 MB). N=128,
#: M=192 has 7.03M parameters: about 14.1 MB in float16 plus the CDF tables (< 1 MB).
MAX_WEIGHTS_BYTES = 16_000_000
#: Newest checkpoint format; v1 checkpoints (no schedule, mode or legs) still resume.


@dataclass
class TrainConfig:
    """Everything that defines a training run. Stored in every checkpoint."""

    data: str = ""
    out: str = ""
    N: int = 128
    M: int = 192
    #: 0.18 is CompressAI's quality 8 (about 1.6 bpp on Kodak when well trained).
    lmbda: float = 0.18
    iterations: int = 400_000
    batch: int = 8
    crop: int = 128
    #: Peak learning rate of the schedule (:class:`CosineSchedule`): linear warm-up over
    #: ``warmup`` iterations from ``start_iteration``, cosine decay to ``lr_min`` at
    #: ``iterations`` (the planned end; a relay may move it).
    lr: float = 1e-4
    lr_min: float = 1e-5
    warmup: int = 1000
    aux_lr: float = 1e-3
    clip: float = 1.0
    #: torch threads; 0 adapts to the machine's load (:class:`AdaptiveThreads`).
    threads: int = 1
    #: Stop this process at this iteration without moving the planned end (0: run to the end).
    stop_at: int = 0
    #: ``cpu`` or ``cuda``; ``fp32``, ``bf16`` (autocast of the transforms) or ``auto`` (the
    #: fastest of the validated modes, timed at start); channels_last memory format.
    device: str = "cpu"
    precision: str = "auto"
    channels_last: bool = True
    checkpoint_every: int = 250
    eval_every: int = 1000
    eval_images: tuple[str, ...] = DEFAULT_EVAL_IMAGES
    kodak: str = DEFAULT_KODAK
    log_every: int = 25
    seed: int = 0
    #: A ``bench train-export`` file to start a new run from (its iteration count carries on).
    #: Shipped weights hold no optimiser state, so this is how a later session continues the
    #: bundled model when the resumable checkpoint is gone.
    init: str = ""
    #: Iteration the run started at: 0, or the iteration count of the ``init`` weights. The
    #: schedule's warm-up starts here (a fresh Adam state on trained weights otherwise takes
    #: full-size first steps and undoes hours of training).
    start_iteration: int = 0

    #: Fields that define the model and the objective; a resumed run must keep them. The
    #: schedule (lr, lr_min, warmup, iterations) may change on resume; the change is logged.
    IDENTITY = ("data", "N", "M", "lmbda", "batch", "crop", "aux_lr", "clip", "seed")
    SCHEDULE = ("lr", "lr_min", "warmup", "iterations")
    #: Settings of one process that a resumed run does not inherit (a GPU leg's device, an A/B
    #: arm's forced precision or stop): they fall back to the defaults unless given again.
    PER_PROCESS = ("stop_at", "device", "precision", "channels_last")

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["eval_images"] = list(self.eval_images)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TrainConfig:
        names = {f.name for f in dataclasses.fields(cls)}
        d = dict(d)
        if "warmup_from" in d:  # v1 checkpoints (constant lr): the schedule starts when resumed
            d.setdefault("start_iteration", max(0, d.pop("warmup_from")))
        kw = {k: v for k, v in d.items() if k in names}
        if "eval_images" in kw:
            kw["eval_images"] = tuple(kw["eval_images"])
        return cls(**kw)


# --------------------------------------------------------------------------------------------
# small helpers


def _torch():
    import torch

    return torch


def restore_constants(model) -> None:
    """Reset the architecture's constant buffers (lower bounds, reparametrisation pedestals,
    the scale bound) to the values a fresh model has, in place.

    Exported weights hold them in float16, which turns the likelihood lower bound (1e-9) and the
    GDN pedestals (2**-36) into 0: harmless for coding, but training from such a file can then
    take ``log(0)`` and stop on a non-finite loss. A run started from (or resuming) such weights
    gets the exact constants back.
    """
    torch = _torch()
    fresh = dict(build_model(model.N, model.M).named_buffers())
    with torch.no_grad():
        for name, buffer in model.named_buffers():
            if name.endswith((".bound", ".pedestal")) or name == "gaussian_conditional.scale_bound":
                buffer.copy_(fresh[name])


def split_parameters(model):
    """``(main, aux)``: the trainable parameters Adam updates, and the entropy bottleneck's
    quantiles (``model.aux_loss()``'s own optimiser)."""
    main, aux = [], []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        (aux if name.endswith(".quantiles") else main).append(p)
    return main, aux


# --------------------------------------------------------------------------------------------
# checkpoints


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """A checkpoint of this trainer (file, or ``checkpoint.pt`` in a directory).

    Raises :class:`CheckpointError` when it is missing, corrupt, or not a training checkpoint.
    """
    required = ("format", "model", "optimizer", "aux_optimizer", "iteration", "rng", "config")
    return read_checkpoint(path, CHECKPOINT_FORMATS, required)


# --------------------------------------------------------------------------------------------
# training


def resolve_config(out: str | Path, resume: bool, **options: Any) -> TrainConfig:
    """The config of a run: ``options`` for a new run, the checkpoint's for ``resume``.

    When resuming, options that define the model or optimisation (:attr:`TrainConfig.IDENTITY`)
    must be omitted (``None``) or equal to the stored ones; operational options (iterations,
    threads, checkpoint/eval/log intervals, eval images) may change.
    """
    options = {k: v for k, v in options.items() if v is not None}
    if "eval_images" in options:
        options["eval_images"] = tuple(options["eval_images"])
    out = Path(out)
    ckpt_path = out / CHECKPOINT_NAME
    if not resume:
        if ckpt_path.exists():
            raise CheckpointError(
                f"{ckpt_path} already exists: pass --resume to continue it, or choose another --out"
            )
        cfg = TrainConfig(**options, out=str(out))
        if not cfg.data:
            raise ValueError("--data is required for a new training run")
        cfg.data = str(Path(cfg.data).resolve())
        return cfg
    stored = TrainConfig.from_dict(load_checkpoint(ckpt_path)["config"])
    if "data" in options:
        options["data"] = str(Path(options["data"]).resolve())
    conflicts = [
        f"{k}={options[k]!r} (checkpoint has {getattr(stored, k)!r})"
        for k in TrainConfig.IDENTITY
        if k in options and options[k] != getattr(stored, k)
    ]
    if conflicts:
        raise CheckpointError("cannot resume with a different config: " + ", ".join(conflicts))
    defaults = TrainConfig()
    per_process = {k: getattr(defaults, k) for k in TrainConfig.PER_PROCESS}
    return dataclasses.replace(stored, **{**per_process, **options}, out=str(out))


def train(
    out: str | Path,
    *,
    resume: bool = False,
    on_iteration: Callable[[int, dict[str, float]], None] | None = None,
    console=None,
    **options: Any,
) -> dict[str, Any]:
    """Train (or, with ``resume``, continue) a MeanScaleHyperprior; returns a summary dict.

    ``options`` are :class:`TrainConfig` fields. ``on_iteration(iteration, terms)`` is called
    after each completed iteration (tests use it). Stops after ``iterations`` or on the first
    SIGINT/SIGTERM, writing a checkpoint either way. Each process's stretch of training is a
    *leg* (mode, device, threads, iterations/s), kept in the checkpoint and the weights' sidecar.
    """
    import torch
    from rich.console import Console

    console = console or Console(stderr=True)
    cfg = resolve_config(out, resume, **options)
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    run = Run(out, CHECKPOINT_FORMAT)

    adaptive = AdaptiveThreads() if cfg.threads == 0 else None
    if adaptive is None:
        torch.set_num_threads(cfg.threads)
    with contextlib.suppress(RuntimeError):  # raises if already set in this process
        torch.set_num_interop_threads(1)

    images = load_training_images(cfg.data, cfg.crop, cfg.kodak, log=console.print)
    manifest = manifest_sha256(cfg.data)
    eval_set = {}
    if cfg.eval_every > 0 and cfg.eval_images:
        eval_set = load_kodak(cfg.kodak, cfg.eval_images)

    # Seeded before the model is built so that a run is reproducible from its config (a resumed
    # run then restores the RNG states saved with the checkpoint).
    run.seed(cfg.seed)
    model = build_model(cfg.N, cfg.M)
    last_eval = None
    if resume:
        state = load_checkpoint(run.checkpoint_path)
        try:
            model.load_state_dict(state["model"])
        except (RuntimeError, ValueError, KeyError) as exc:
            raise CheckpointError(
                f"checkpoint {run.checkpoint_path} does not fit the model: {exc}"
            ) from exc
        if state.get("manifest_sha256") not in (None, manifest):
            console.print(
                f"[yellow]warning: training data changed since the checkpoint: {cfg.data}"
            )
        restore_constants(model)  # checkpoints of runs started from float16 exports lack them
        run.restore(state)
        last_eval = state.get("last_eval")
        console.print(f"resuming {run.checkpoint_path} at iteration {run.iteration}")
        before = TrainConfig.from_dict(state["config"])
        changed = {
            k: [getattr(before, k), getattr(cfg, k)]
            for k in TrainConfig.SCHEDULE
            if getattr(before, k) != getattr(cfg, k)
        }
        if changed:
            run.log({"type": "schedule", "iteration": run.iteration, "changed": changed})
            console.print(f"schedule changed at iteration {run.iteration}: {changed}")
    elif cfg.init:
        initial, meta = load_weights(cfg.init)
        if (int(meta["N"]), int(meta["M"])) != (cfg.N, cfg.M):
            raise CheckpointError(
                f"{cfg.init} holds N={meta['N']}, M={meta['M']}, not N={cfg.N}, M={cfg.M}"
            )
        model.load_state_dict(initial.state_dict())
        restore_constants(model)
        run.iteration = int(meta.get("iterations", 0))
        cfg.start_iteration = run.iteration
        run.legs = legs_of_weights(cfg.init)
        run.train_seconds = sum(leg["seconds"] for leg in run.legs)
        console.print(f"starting from {cfg.init} (iteration {run.iteration})")
    atomic_write_json(out / CONFIG_NAME, cfg.to_dict())

    mode = resolve_mode(cfg, model, images, run.rng, console)
    mode.prepare_model(model)
    main_params, aux_params = split_parameters(model)
    optimizer = torch.optim.Adam(main_params, lr=cfg.lr)
    aux_optimizer = torch.optim.Adam(aux_params, lr=cfg.aux_lr)
    if resume:
        try:
            optimizer.load_state_dict(state["optimizer"])
            aux_optimizer.load_state_dict(state["aux_optimizer"])
        except (RuntimeError, ValueError, KeyError) as exc:
            raise CheckpointError(
                f"checkpoint {run.checkpoint_path} does not fit the model: {exc}"
            ) from exc
    schedule = CosineSchedule(
        peak=cfg.lr,
        floor=cfg.lr_min,
        start=cfg.start_iteration,
        end=max(cfg.iterations, cfg.start_iteration + 1),
        warmup=cfg.warmup,
    )
    leg = run.start_leg(mode.label, device_name(mode), "adaptive" if adaptive else cfg.threads)
    run.log({"type": "leg", **leg, "planned_end": cfg.iterations})
    console.print(f"training mode {mode.label} on {leg['device']}, threads {leg['threads']}")

    def checkpoint(reason: str) -> None:
        saved = run.save(
            {
                "model": {k: v.cpu().contiguous() for k, v in model.state_dict().items()},
                "optimizer": optimizer.state_dict(),
                "aux_optimizer": aux_optimizer.state_dict(),
                "last_eval": last_eval,
                "manifest_sha256": manifest,
                "config": cfg.to_dict(),
            }
        )
        if saved:
            run.log(
                {
                    "type": "checkpoint",
                    "iteration": run.iteration,
                    "reason": reason,
                    "mode": leg["mode"],
                    "iterations_per_second": leg["iterations_per_second"],
                }
            )

    model.train()
    window: dict[str, float] = {"loss": 0.0, "mse": 0.0, "bpp": 0.0, "aux": 0.0, "n": 0, "s": 0.0}
    last = min(cfg.iterations, cfg.stop_at) if cfg.stop_at > 0 else cfg.iterations
    progress = _make_progress(console)
    task = progress.add_task("training", total=cfg.iterations, completed=run.iteration, status="")

    def step() -> None:
        nonlocal window, last_eval
        threads = adaptive.update(run.iteration) if adaptive else cfg.threads
        t0 = time.perf_counter()
        x = mode.prepare_batch(sample_batch(images, run.rng, cfg.batch, cfg.crop))
        optimizer.zero_grad(set_to_none=True)
        aux_optimizer.zero_grad(set_to_none=True)
        terms = rd_forward(model, x, cfg.lmbda, mode)
        terms["loss"].backward()
        lr = schedule(run.iteration)
        for group in optimizer.param_groups:
            group["lr"] = lr
        if cfg.clip > 0:
            torch.nn.utils.clip_grad_norm_(main_params, cfg.clip)
        optimizer.step()
        aux_loss = model.aux_loss()
        aux_loss.backward()
        aux_optimizer.step()
        values = {k: float(v.detach()) for k, v in terms.items()}  # synchronises the device
        values["aux"] = float(aux_loss.detach())
        dt = time.perf_counter() - t0
        run.advance(dt)
        iteration = run.iteration
        if not all(math.isfinite(v) for v in values.values()):
            raise FloatingPointError(
                f"non-finite loss at iteration {iteration}: {values}; the last checkpoint is intact"
            )
        for k in ("loss", "mse", "bpp", "aux"):
            window[k] += values[k]
        window["n"] += 1
        window["s"] += dt
        psnr_est = 10 * math.log10(1.0 / max(values["mse"], 1e-12))
        progress.update(
            task,
            completed=iteration,
            status=f"loss {values['loss']:.3f} bpp {values['bpp']:.3f} psnr~{psnr_est:.2f}",
        )
        if iteration % cfg.log_every == 0 or iteration == last:
            n = window["n"]
            record = {
                "type": "train",
                "iteration": iteration,
                "loss": window["loss"] / n,
                "mse": window["mse"] / n,
                "bpp": window["bpp"] / n,
                "aux": window["aux"] / n,
                "psnr_est": 10 * math.log10(1.0 / max(window["mse"] / n, 1e-12)),
                "seconds": window["s"] / n,
                "lr": lr,
                "mode": mode.label,
                "threads": threads,
                "train_seconds": run.train_seconds,
                "time": time.time(),
            }
            run.log(record)
            if not progress.console.is_terminal:
                console.print(
                    f"it {iteration} loss {record['loss']:.4f} bpp {record['bpp']:.4f} "
                    f"psnr~{record['psnr_est']:.2f} {record['seconds']:.3f} s/it "
                    f"lr {lr:.2e} {threads} thr"
                )
            window = dict.fromkeys(window, 0.0)
        if eval_set and (iteration % cfg.eval_every == 0 or iteration == last):
            t_eval = time.perf_counter()
            result = evaluate(model, eval_set)
            run.train_seconds += time.perf_counter() - t_eval
            last_eval = {"iteration": iteration, **result}
            run.log({"type": "eval", **last_eval, "time": time.time()})
            console.print(
                f"eval it {iteration}: Kodak subset {result['bpp']:.4f} bpp, "
                f"{result['psnr_rgb']:.2f} dB PSNR-RGB (real coding); "
                f"{result['published_gap']['gap_db']:.2f} dB below mbt2018-mean"
            )
        if on_iteration is not None:
            on_iteration(iteration, values)

    with progress:
        stopped_by = run.loop(last, step, checkpoint, cfg.checkpoint_every)
    if stopped_by:
        console.print(
            f"stopped by {stopped_by} at iteration {run.iteration}; "
            f"checkpoint {run.checkpoint_path}"
        )
    return {
        "iteration": run.iteration,
        "stopped_by": stopped_by,
        "checkpoint": str(run.checkpoint_path),
        "log": str(run.log_path),
        "train_seconds": run.train_seconds,
        "last_eval": last_eval,
        "legs": run.legs,
        "config": cfg.to_dict(),
    }


def legs_of_weights(path: str | Path) -> list[dict[str, Any]]:
    """The training legs recorded in a weights sidecar; one summary leg for older sidecars."""
    side = sidecar_path(path)
    if not side.is_file():
        return []
    record = json.loads(side.read_text())
    if record.get("legs"):
        return list(record["legs"])
    iterations = int(record.get("iterations", 0))
    seconds = float(record.get("hours_trained", 0.0)) * 3600.0
    return [
        {
            "mode": "cpu-fp32",
            "device": "unrecorded (trained before modes were recorded)",
            "threads": "unrecorded",
            "from_iteration": 0,
            "to_iteration": iterations,
            "seconds": seconds,
            "iterations_per_second": iterations / seconds if seconds > 0 else None,
            "started": "unrecorded",
        }
    ]


def resolve_mode(cfg: TrainConfig, model, images, rng, console) -> TrainMode:
    """The run's :class:`TrainMode`: as configured, or for ``precision="auto"`` the fastest of
    :func:`validated_modes` timed on one batch here (the training RNGs are left untouched)."""
    if cfg.precision != "auto":
        return TrainMode(cfg.device, cfg.precision, cfg.channels_last)
    candidates = validated_modes(cfg.device)
    if len(candidates) == 1:
        return candidates[0]
    probe = np.random.Generator(np.random.PCG64(cfg.seed + 1))
    x = sample_batch(images, probe, cfg.batch, cfg.crop)
    timings = {m: time_step(model, x, cfg.lmbda, m, repeats=2) for m in candidates}
    chosen = min(timings, key=timings.get)
    console.print(
        "precision auto: "
        + ", ".join(f"{m.label} {t:.2f} s/step" for m, t in timings.items())
        + f" -> {chosen.label}"
    )
    return chosen


def _make_progress(console):
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    return Progress(
        TextColumn("[progress.description]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        TextColumn("{task.fields[status]}"),
        console=console,
        transient=False,
    )


# --------------------------------------------------------------------------------------------
# export and loading of shippable weights


def _round_to_float16_(model) -> None:
    """Round every floating parameter and buffer to float16 precision, in place (kept float32)."""
    torch = _torch()
    with torch.no_grad():
        for t in list(model.parameters()) + list(model.buffers()):
            if t.is_floating_point():
                t.copy_(t.to(torch.float16).to(t.dtype))


def export(
    checkpoint: str | Path,
    out_file: str | Path,
    *,
    kodak: str | Path | None = None,
    kodak_images: Sequence[str] | None = None,
    threads: int | None = None,
    console=None,
) -> dict[str, Any]:
    """Write ``out_file`` (.safetensors, float16) and its ``.json`` sidecar from a checkpoint.

    The weights are rounded to float16, then ``update(force=True)`` builds the entropy-coder
    tables from the rounded weights and those tables (int32) are stored with them, so that
    :func:`load_weights` gives exactly the evaluated model. The file is then re-loaded and
    evaluated on Kodak (all 24 images unless ``kodak_images`` names some) with real coding; the
    means go into the sidecar as the non-progressive Kodak R-D point. Returns the sidecar dict.
    """
    torch = _torch()
    from rich.console import Console
    from safetensors.torch import save_file

    from plugins.learned.compat import import_compressai

    compressai = import_compressai()
    console = console or Console(stderr=True)
    state = load_checkpoint(checkpoint)
    cfg = TrainConfig.from_dict(state["config"])
    torch.set_num_threads(threads or cfg.threads)
    out_file = Path(out_file)
    if out_file.suffix != ".safetensors":
        raise ValueError(f"export target must end in .safetensors, got {out_file}")
    out_file.parent.mkdir(parents=True, exist_ok=True)

    model = build_model(cfg.N, cfg.M)
    try:
        model.load_state_dict(state["model"])
    except (RuntimeError, KeyError) as exc:
        raise CheckpointError(f"checkpoint does not fit MeanScaleHyperprior: {exc}") from exc
    model.eval()
    _round_to_float16_(model)
    model.update(force=True)
    tensors = {}
    for name, t in model.state_dict().items():
        t = t.detach().cpu()
        tensors[name] = (t.to(torch.float16) if t.is_floating_point() else t).contiguous().clone()
    meta = {
        "format": WEIGHTS_FORMAT,
        "model": "MeanScaleHyperprior",
        "N": str(cfg.N),
        "M": str(cfg.M),
        "lmbda": repr(cfg.lmbda),
        "iterations": str(int(state["iteration"])),
        "hours_trained": f"{float(state.get('train_seconds', 0.0)) / 3600.0:.3f}",
        "modes": ",".join(sorted({leg["mode"] for leg in state.get("legs", [])})),
    }
    tmp = out_file.with_name(out_file.name + ".tmp")
    save_file(tensors, str(tmp), metadata=meta)
    os.chmod(tmp, 0o644)  # safetensors creates it owner-only; shipped weights are world-readable
    size = tmp.stat().st_size
    if size > MAX_WEIGHTS_BYTES:
        tmp.unlink()
        raise ValueError(f"exported weights are {size} bytes, over the {MAX_WEIGHTS_BYTES} limit")
    os.replace(tmp, out_file)
    digest = sha256_file(out_file)

    console.print(f"wrote {out_file} ({size / 1e6:.2f} MB); evaluating on Kodak with real coding")
    loaded, _ = load_weights(out_file)
    kodak_set = load_kodak(kodak or cfg.kodak, kodak_images)
    result = evaluate(loaded, kodak_set, prepared=True)
    sidecar = {
        "format": WEIGHTS_FORMAT,
        "model": "compressai.models.MeanScaleHyperprior (Minnen 2018 without context model)",
        "weights_file": out_file.name,
        "weights_sha256": digest,
        "weights_bytes": size,
        "dtype": "float16; entropy-coder tables int32, built by update() from the float16 weights",
        "num_parameters": int(sum(p.numel() for p in model.parameters())),
        "config": {
            "N": cfg.N,
            "M": cfg.M,
            "lmbda": cfg.lmbda,
            "crop": cfg.crop,
            "batch": cfg.batch,
            "lr": cfg.lr,
            "lr_min": cfg.lr_min,
            "warmup": cfg.warmup,
            "planned_iterations": cfg.iterations,
            "aux_lr": cfg.aux_lr,
            "clip": cfg.clip,
            "seed": cfg.seed,
        },
        "iterations": int(state["iteration"]),
        "hours_trained": float(state.get("train_seconds", 0.0)) / 3600.0,
        "legs": state.get("legs", []),
        "training_set": {
            "path": cfg.data,
            "manifest_sha256": state.get("manifest_sha256"),
        },
        "last_training_eval": _strip_eval(state.get("last_eval")),
        "kodak_eval": {
            "what": "float16 weights as shipped, real compress/decompress, non-progressive",
            "num_images": len(kodak_set),
            "bpp_mean": result["bpp"],
            "psnr_rgb_mean": result["psnr_rgb"],
            "published_gap": result["published_gap"],
            "per_image": result["per_image"],
            "eval_seconds": result["eval_seconds"],
        },
        "versions": {"torch": torch.__version__, "compressai": compressai.__version__},
        "exported_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    atomic_write_json(sidecar_path(out_file), sidecar)
    gap = MBT2018_MEAN_KODAK.gap_db(result["bpp"], result["psnr_rgb"])
    console.print(
        f"Kodak ({len(kodak_set)} images): {result['bpp']:.4f} bpp, "
        f"{result['psnr_rgb']:.2f} dB PSNR-RGB, {gap.describe()}; sidecar {sidecar_path(out_file)}"
    )
    return sidecar


def _strip_eval(ev: dict[str, Any] | None) -> dict[str, Any] | None:
    if ev is None:
        return None
    return {k: ev[k] for k in ("iteration", "images", "bpp", "psnr_rgb", "per_image") if k in ev}


# --------------------------------------------------------------------------------------------
# command line (``bench train msh``)


def _parse_args(argv: Sequence[str] | None):
    import argparse

    p = argparse.ArgumentParser(
        prog="bench train msh",
        description="Train CompressAI's MeanScaleHyperprior on random crops (resumable; Ctrl-C "
        "saves), or export its weights (--export).",
    )
    p.add_argument("--data", help="training image folder (never Kodak); needed for a new run")
    p.add_argument(
        "--out",
        help="checkpoint directory (resumable state); default: the relay directory "
        "$BENCH_TRAIN_DIR/msh-nN-mM-lLAMBDA (~/.cache/bench/train/...), continued when it holds "
        "a checkpoint, else started from the shipped base weights",
    )
    for name, typ, text in (
        ("N", int, "channels N (default 128)"),
        ("M", int, "latent channels M (default 192)"),
        ("lmbda", float, "loss = lmbda*255^2*MSE + bpp (default 0.18)"),
        ("iterations", int, "planned last iteration: the schedule decays to --lr-min there"),
        ("batch", int, "batch size (default 8)"),
        ("crop", int, "crop side (default 128)"),
        ("lr", float, "peak Adam learning rate (default 1e-4)"),
        ("lr-min", float, "learning rate at the planned end (--iterations); cosine decay"),
        ("warmup", int, "linear warm-up iterations (default 1000)"),
        ("threads", int, "torch threads (default 1); 0 adapts to the machine's load"),
        ("stop-at", int, "stop at this iteration, keeping the planned end (--iterations)"),
        ("checkpoint-every", int, "iterations between checkpoints (default 250)"),
        ("eval-every", int, "iterations between Kodak-subset evals; 0: none (default 1000)"),
        ("seed", int, "random seed (default 0)"),
        ("log-every", int, "iterations between log records"),
        ("kodak", str, "Kodak folder (evaluation only)"),
        ("device", str, "cpu or cuda (cuda trains with bf16 autocast)"),
        ("precision", str, "fp32, bf16 (autocast of the transforms) or auto (default): the "
                           "fastest mode whose A/B against fp32 passed, timed at start"),
    ):  # fmt: skip
        p.add_argument(f"--{name}", type=typ, default=None, help=text)
    p.add_argument("--eval-images", default=None, help="comma-separated Kodak names")
    p.add_argument(
        "--channels-last",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="memory format (default channels_last)",
    )
    p.add_argument("--resume", action="store_true", help="continue the checkpoint in --out")
    p.add_argument("--init", default=None, help="start a new run from exported weights")
    p.add_argument("--export", metavar="FILE.safetensors", help="export --out's checkpoint")
    return p.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    """``bench train msh``: parse ``argv``, fill in the relay directory when ``--out`` is not
    given (:func:`plugins.learned.training.relay.plan`), train; exit status 0, 2 (usage) or 3
    (bad input)."""
    args = _parse_args(argv)
    from plugins.learned.training import relay
    from plugins.learned.weights import BUNDLED_DIR, BUNDLED_NAME

    if args.export and not args.out:
        print("error: --export needs --out (the checkpoint to export)", file=sys.stderr)
        return 2
    try:
        if args.export:
            export(args.out, args.export, kodak=args.kodak, threads=args.threads)
            return 0
        defaults = TrainConfig()
        out, resume, init, what = relay.plan(
            Path(args.out) if args.out else None,
            args.resume,
            args.init,
            args.N or defaults.N,
            args.M or defaults.M,
            args.lmbda if args.lmbda is not None else defaults.lmbda,
            BUNDLED_DIR / f"{BUNDLED_NAME}.safetensors",
        )
        print(what, file=sys.stderr)
        eval_images = None
        if args.eval_images is not None:
            eval_images = tuple(s.strip() for s in args.eval_images.split(",") if s.strip())
        summary = train(
            out,
            resume=resume,
            data=args.data,
            N=args.N,
            M=args.M,
            lmbda=args.lmbda,
            iterations=args.iterations,
            batch=args.batch,
            crop=args.crop,
            lr=args.lr,
            lr_min=args.lr_min,
            warmup=args.warmup,
            threads=args.threads,
            stop_at=args.stop_at,
            device=args.device,
            precision=args.precision,
            channels_last=args.channels_last,
            checkpoint_every=args.checkpoint_every,
            eval_every=args.eval_every,
            eval_images=eval_images,
            kodak=args.kodak,
            log_every=args.log_every,
            seed=args.seed,
            init=init,
        )
    except (CheckpointError, ValueError, FileNotFoundError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 3
    print(json.dumps({k: summary[k] for k in ("iteration", "stopped_by", "checkpoint")}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
