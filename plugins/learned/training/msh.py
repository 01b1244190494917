"""The ``msh`` trainer: CompressAI's ``MeanScaleHyperprior``, the learned codecs' base model.

The model is Minnen et al. 2018 without the context model (mean-scale Gaussian hyperprior),
trained on random crops with the usual CompressAI rate-distortion loss
``lmbda * 255**2 * MSE + bpp`` (bpp from the likelihoods), Adam for the network and a separate
Adam for the entropy bottleneck's quantiles (``model.aux_loss()``): the step every R-D trainer
runs (:class:`plugins.learned.training.rd_step.RDStep`).

Training runs the shared resumable loop (:class:`plugins.learned.training.run.Run`):
``<out>/checkpoint.pt`` holds the model, both optimizers, the iteration, every RNG state, the
legs and the config (:mod:`plugins.learned.training.msh_config`); it is written atomically
every ``checkpoint_every`` iterations and when the process gets Ctrl-C or SIGTERM.
``<out>/log.jsonl`` receives one JSON object per line: ``{"type": "train", ...}`` every
``log_every`` iterations, ``{"type": "checkpoint", ...}`` for each checkpoint, and
``{"type": "eval", ...}`` for each evaluation on a few Kodak images with real entropy coding
(:mod:`plugins.learned.training.evaluation`; with ``--ema-decay`` its ``average`` holds the
same evaluation of the moving average of the weights, which the export ships; Kodak is used for
evaluation only, never for training: :func:`~plugins.learned.training.data.load_training_images`
refuses a training folder that contains a Kodak image).
:mod:`plugins.learned.training.msh_export` turns a checkpoint into shippable weights.

Command line: ``bench train msh --help`` (:func:`main`).
"""

from __future__ import annotations

import functools
import json
import math
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from bench.progress import progress_bar
from plugins.learned.training.data import (
    CropSampler,
    load_kodak,
    load_training_images,
    manifest_sha256,
    sample_batch,
)
from plugins.learned.training.evaluation import evaluate
from plugins.learned.training.files import atomic_write_json
from plugins.learned.training.msh_config import (
    CHECKPOINT_FORMAT,
    TrainConfig,
    add_config_options,
    config_options,
    describe_schedule,
    load_checkpoint,
    resolve_config,
)
from plugins.learned.training.msh_export import export
from plugins.learned.training.precision import (
    TrainMode,
    choose_mode,
    device_name,
    rd_forward,
    time_step,
)
from plugins.learned.training.rd_step import RDStep
from plugins.learned.training.run import CheckpointError, Run
from plugins.learned.training.start import resume_from, start_from_weights
from plugins.learned.training.threads import thread_policy
from plugins.learned.weights.format import build_model, load_weights

CONFIG_NAME = "config.json"


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
    from rich.console import Console

    console = console or Console(stderr=True)
    cfg = resolve_config(out, resume, **options)
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    run = Run(out, CHECKPOINT_FORMAT)

    threads = thread_policy(cfg.threads)

    images = load_training_images(cfg.data, cfg.crop, cfg.kodak, log=console.print)
    manifest = manifest_sha256(cfg.data)
    eval_set = {}
    if cfg.eval_every > 0 and cfg.eval_images:
        eval_set = load_kodak(cfg.kodak, cfg.eval_images)

    # Seeded before the model is built so that a run is reproducible from its config (a resumed
    # run then restores the RNG states saved with the checkpoint).
    run.seed(cfg.seed)
    model = build_model(cfg.N, cfg.M)
    fresh = functools.partial(build_model, cfg.N, cfg.M)
    last_eval = None
    if resume:
        state = load_checkpoint(run.checkpoint_path)
        last_eval = resume_from(run, cfg, model, state, manifest, fresh, console.print)
    elif cfg.init:
        initial, meta = load_weights(cfg.init)
        start_from_weights(run, cfg, model, initial.state_dict(), meta, fresh)
        console.print(f"starting from {cfg.init} (iteration {run.iteration})")
        console.print(f"schedule: {describe_schedule(cfg)}")
    atomic_write_json(out / CONFIG_NAME, cfg.to_dict())

    mode = choose_mode(cfg, mode_timer(cfg, model, images), console.print)
    mode.prepare_model(model)
    rd_step = RDStep.of(
        model, lambda x: rd_forward(model, x, cfg.lmbda, mode, cfg.quantization), cfg, run.iteration
    )
    if resume:
        try:
            rd_step.restore(state)
        except (RuntimeError, ValueError, KeyError) as exc:
            raise CheckpointError(
                f"checkpoint {run.checkpoint_path} does not fit the model: {exc}"
            ) from exc
    leg = run.start_leg(mode.label, device_name(mode), threads.label)
    run.log({"type": "leg", **leg, "planned_end": cfg.iterations})
    console.print(f"training mode {mode.label} on {leg['device']}, threads {leg['threads']}")

    sampler = CropSampler(images, cfg.batch, cfg.crop, cfg.scale_min, cfg.loader_threads)

    def checkpoint(reason: str) -> None:
        sampler.rewind()  # the saved generator state is that of the batches trained on
        extra = {"last_eval": last_eval, "manifest_sha256": manifest, "config": cfg.to_dict()}
        run.checkpoint(reason, {**rd_step.state_dict(), **extra})

    model.train()
    last = min(cfg.iterations, cfg.stop_at) if cfg.stop_at > 0 else cfg.iterations
    progress = progress_bar(console, "{task.fields[status]}")
    task = progress.add_task("training", total=cfg.iterations, completed=run.iteration, status="")

    def batch():
        return mode.prepare_batch(sampler(run.rng))

    def step() -> None:
        nonlocal last_eval
        n_threads = threads.update(run.iteration)
        values = rd_step(run, batch)
        iteration = run.iteration
        psnr_est = 10 * math.log10(1.0 / max(values["mse"], 1e-12))
        progress.update(
            task,
            completed=iteration,
            status=f"loss {values['loss']:.3f} bpp {values['bpp']:.3f} psnr~{psnr_est:.2f}",
        )
        if iteration % cfg.log_every == 0 or iteration == last:
            record = rd_step.record(run, mode=mode.label, threads=n_threads)
            run.log(record)
            if not progress.console.is_terminal:
                console.print(
                    f"it {iteration} loss {record['loss']:.4f} bpp {record['bpp']:.4f} "
                    f"psnr~{record['psnr_est']:.2f} {record['seconds']:.3f} s/it "
                    f"lr {record['lr']:.2e} {n_threads} thr"
                )
        if eval_set and (iteration % cfg.eval_every == 0 or iteration == last):
            t_eval = time.perf_counter()
            result = evaluate(model, eval_set)
            last_eval = {"iteration": iteration, **result}
            if rd_step.average is not None:
                last_eval["average"] = rd_step.average.evaluated(lambda: evaluate(model, eval_set))
            average = last_eval.get("average")
            run.train_seconds += time.perf_counter() - t_eval
            run.log({"type": "eval", **last_eval, "time": time.time()})
            console.print(
                f"eval it {iteration}: Kodak subset {result['bpp']:.4f} bpp, "
                f"{result['psnr_rgb']:.2f} dB PSNR-RGB (real coding); "
                f"{result['published_gap']['gap_db']:.2f} dB below mbt2018-mean"
                + (
                    f"; weight average {average['bpp']:.4f} bpp, {average['psnr_rgb']:.2f} dB, "
                    f"{average['published_gap']['gap_db']:.2f} dB below"
                    if average is not None
                    else ""
                )
            )
        if on_iteration is not None:
            on_iteration(iteration, values)

    with progress, sampler:
        stopped_by = run.loop(last, step, checkpoint, cfg.checkpoint_every, cfg.time_limit)
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


def mode_timer(cfg: TrainConfig, model, images) -> Callable[[list[TrainMode]], dict]:
    """For ``precision="auto"`` (:func:`choose_mode`): the seconds per step of each mode, timed
    here on one batch drawn from its own RNG (the training RNGs are left untouched)."""

    def time_modes(modes: list[TrainMode]) -> dict[TrainMode, float]:
        probe = np.random.Generator(np.random.PCG64(cfg.seed + 1))
        x = sample_batch(images, probe, cfg.batch, cfg.crop)
        return {m: time_step(model, x, cfg.lmbda, m, repeats=2) for m in modes}

    return time_modes


# --------------------------------------------------------------------------------------------
# command line (``bench train msh``)


def _parse_args(argv: Sequence[str] | None):
    import argparse

    p = argparse.ArgumentParser(
        prog="bench train msh",
        description="Train CompressAI's MeanScaleHyperprior on random crops (resumable; Ctrl-C "
        "saves), or export its weights (--export).",
    )
    p.add_argument(
        "--out",
        help="checkpoint directory (resumable state); default: the relay directory "
        "$BENCH_TRAIN_DIR/msh-nN-mM-lLAMBDA (~/.cache/bench/train/...), continued when it holds "
        "a checkpoint, else started from the shipped base weights",
    )
    add_config_options(p)
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
        options = config_options(args, TrainConfig)
        if args.out is None and args.init is None and init is not None:  # restart: shipped file
            given = {k: v for k, v in options.items() if v is not None}
            options = {**relay.RESTART_SCHEDULE, **given}
        summary = train(out, resume=resume, **{**options, "init": init})
    except (CheckpointError, ValueError, FileNotFoundError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 3
    print(json.dumps({k: summary[k] for k in ("iteration", "stopped_by", "checkpoint")}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
