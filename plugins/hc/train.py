"""``bench train hc``: train HC (resumable), export float16 weights with a sidecar.

Runs on the learned library's shared loop (:class:`plugins.learned.training.run.Run`:
checkpoint, RNG state, legs, stop flag, JSONL log) with its data rules
(:mod:`plugins.learned.training.data`: the training photos, never Kodak; random flipped crops),
precision modes, cosine schedule, thread policy (``--threads 0`` adapts to the load), relay
directory, and the base trainer's config, options and resume rules
(:class:`HCTrainConfig` subclasses :class:`~plugins.learned.training.msh_config.TrainConfig`)
and rate-distortion step (:class:`~plugins.learned.training.rd_step.RDStep`). HC supplies the
model and loss terms (:func:`plugins.hc.trainable.rd_terms`, which also logs the rate of each
latent) and an evaluation that codes Kodak images with the real HC codec (the full stream of
:class:`plugins.hc.codec.HCCodec`).

Defaults are the base trainer's (batch 2 of 256 px crops, Adam 1e-4 with a 1000-iteration
warm-up and cosine decay to 1e-5 at 400,000 planned iterations, aux Adam 1e-3, gradient clip
1.0, seed 0) except lambda, 0.18 as for HC's shipped weights (whose stored config keeps the 8
crops of 128 px the base had then, so both had the same budget per iteration). Without
``--out`` the run lives in the relay directory ``$BENCH_TRAIN_DIR/hc-n128-m192-l1800`` and is
continued when it holds a checkpoint; on a machine without it, ``--init`` continues the shipped
weights (their iteration count carries on).
Ctrl-C or SIGTERM stops after the current step and writes the checkpoint.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import json
import os
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from bench.hashing import sha256_file
from bench.metrics import psnr_rgb
from plugins.hc.codec import HCCodec
from plugins.hc.nets import HCConfig
from plugins.hc.runtime import HCRuntime
from plugins.hc.weights import WEIGHTS_FORMAT, load_state
from plugins.learned.training.data import (
    CropSampler,
    load_kodak,
    load_training_images,
    manifest_sha256,
)
from plugins.learned.training.ema import exported_state
from plugins.learned.training.files import atomic_write_json
from plugins.learned.training.msh_config import (
    TrainConfig,
    add_config_options,
    config_options,
    describe_schedule,
    resolve_config,
)
from plugins.learned.training.precision import choose_mode, device_name
from plugins.learned.training.rd_step import RDStep
from plugins.learned.training.relay import lambda_tag, train_root
from plugins.learned.training.run import CheckpointError, Run, read_checkpoint
from plugins.learned.training.start import resume_from, start_from_weights
from plugins.learned.training.threads import thread_policy

CHECKPOINT_FORMAT = "bench-hc-checkpoint-v1"
#: Shipped weights must stay <= 16 MB; HC N=128 M=192 is about 15.9 MB in float16 with tables.
MAX_WEIGHTS_BYTES = 16_000_000


@dataclasses.dataclass
class HCTrainConfig(TrainConfig):
    """An HC training run (stored in every checkpoint): the base trainer's fields and defaults
    (:class:`~plugins.learned.training.msh_config.TrainConfig`) plus HC's channel counts.
    ``precision="auto"`` takes the last validated mode, untimed
    (:func:`~plugins.learned.training.precision.choose_mode`)."""

    #: HC's relay and shipped weights are at CompressAI's quality 8 (the base: 0.13, then 0.11).
    lmbda: float = 0.18
    C3: int = 16
    C2: int = 4
    P: int = 64

    #: HC's loss (:func:`~plugins.hc.trainable.rd_terms`) trains its decoder on noise only.
    quantization: str = "noise"
    QUANTIZATIONS = ("noise",)
    IDENTITY = (*TrainConfig.IDENTITY, "C3", "C2", "P")
    ARCHITECTURE = (*TrainConfig.ARCHITECTURE, "C3", "C2", "P")

    @property
    def model_config(self) -> HCConfig:
        return HCConfig(N=self.N, M=self.M, C3=self.C3, C2=self.C2, P=self.P)


def relay_dir(N: int, M: int, lmbda: float) -> Path:
    """``$BENCH_TRAIN_DIR/hc-nN-mM-lLAMBDA``: HC's stable checkpoint directory."""
    return train_root() / f"hc-n{N}-m{M}-l{lambda_tag(lmbda)}"


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """An HC checkpoint (a file, or ``checkpoint.pt`` in a directory); :class:`CheckpointError`
    when it is missing, corrupt or not HC's."""
    return read_checkpoint(
        path, (CHECKPOINT_FORMAT,), ("model", "optimizer", "config"), what="HC checkpoint"
    )


def evaluate(model, images: dict[str, np.ndarray], work_dir: Path) -> dict[str, Any]:
    """Kodak images through the real HC codec (full stream, float16-rounded weights written to
    ``work_dir``): mean bpp and PSNR-RGB, per image."""
    t0 = time.perf_counter()
    path = work_dir / "eval.safetensors"
    write_weights(model, path, {"iterations": "0"})
    codec = HCCodec(weights=str(path))
    per_image = []
    for name, img in images.items():
        data = codec.encode(img)
        rec = codec.decode(data)
        bpp = 8.0 * len(data) / (img.shape[0] * img.shape[1])
        per_image.append({"image": name, "bpp": bpp, "psnr_rgb": psnr_rgb(img, rec)})
    HCRuntime._cache.clear()
    return {
        "images": list(images),
        "bpp": float(np.mean([p["bpp"] for p in per_image])),
        "psnr_rgb": float(np.mean([p["psnr_rgb"] for p in per_image])),
        "per_image": per_image,
        "eval_seconds": time.perf_counter() - t0,
    }


def write_weights(model, out_file: Path, meta: dict[str, str]) -> int:
    """Float16 safetensors of a copy of ``model`` with tables built by ``update()`` from the
    float16-rounded weights; returns the size in bytes (ValueError over 16 MB)."""
    import copy

    import torch
    from safetensors.torch import save_file

    model = copy.deepcopy(model).cpu().to(memory_format=torch.contiguous_format).eval()
    with torch.no_grad():
        for t in list(model.parameters()) + list(model.buffers()):
            if t.is_floating_point():
                t.copy_(t.to(torch.float16).to(t.dtype))
    model.update(force=True)
    tensors = {
        k: (v.detach().to(torch.float16) if v.is_floating_point() else v.detach())
        .contiguous()
        .clone()
        for k, v in model.state_dict().items()
    }
    meta = {"format": WEIGHTS_FORMAT, **{k: str(v) for k, v in model.cfg.to_dict().items()}, **meta}
    tmp = out_file.with_name(out_file.name + ".tmp")
    save_file(tensors, str(tmp), metadata=meta)
    os.chmod(tmp, 0o644)
    size = tmp.stat().st_size
    if size > MAX_WEIGHTS_BYTES:
        tmp.unlink()
        raise ValueError(f"exported weights are {size} bytes, over {MAX_WEIGHTS_BYTES}")
    os.replace(tmp, out_file)
    return size


def train(out: Path, *, resume: bool, console=print, **options: Any) -> dict[str, Any]:
    """Train (or continue) HC; returns a summary. ``options`` are :class:`HCTrainConfig` fields,
    resolved as the base trainer's (:func:`~plugins.learned.training.msh_config.resolve_config`:
    a resumed run keeps the model, objective and data, compared as resolved paths)."""
    from plugins.hc.trainable import HCModel, rd_terms

    cfg = resolve_config(out, resume, config_type=HCTrainConfig, load=load_checkpoint, **options)
    run = Run(cfg.out, CHECKPOINT_FORMAT)
    state = load_checkpoint(run.checkpoint_path) if resume else None
    run.out.mkdir(parents=True, exist_ok=True)
    threads = thread_policy(cfg.threads)

    images = load_training_images(cfg.data, cfg.crop, cfg.kodak, log=console)
    manifest = manifest_sha256(cfg.data)
    eval_set = load_kodak(cfg.kodak, cfg.eval_images) if cfg.eval_every > 0 else {}

    run.seed(cfg.seed)
    model = HCModel(cfg.model_config)
    fresh = functools.partial(HCModel, cfg.model_config)
    last_eval = None
    if state is not None:
        last_eval = resume_from(run, cfg, model, state, manifest, fresh, console)
    elif cfg.init:
        weights, meta = load_state(cfg.init)
        start_from_weights(run, cfg, model, weights, meta, fresh)
        console(f"starting from {cfg.init} (iteration {run.iteration})")
        console(f"schedule: {describe_schedule(cfg)}")
    atomic_write_json(run.out / "config.json", cfg.to_dict())

    mode = choose_mode(cfg)
    mode.prepare_model(model)
    rd_step = RDStep.of(model, lambda x: rd_terms(model, x, cfg.lmbda, mode), cfg, run.iteration)
    if state is not None:
        rd_step.restore(state)
    leg = run.start_leg(mode.label, device_name(mode), threads.label)
    run.log({"type": "leg", **leg, "planned_end": cfg.iterations})
    console(f"HC training, mode {mode.label} on {leg['device']}, threads {threads.label}")

    sampler = CropSampler(images, cfg.batch, cfg.crop, cfg.scale_min, cfg.loader_threads)

    def checkpoint(reason: str) -> None:
        sampler.rewind()  # the saved generator state is that of the batches trained on
        extra = {"last_eval": last_eval, "manifest_sha256": manifest, "config": cfg.to_dict()}
        run.checkpoint(reason, {**rd_step.state_dict(), **extra})

    last = min(cfg.iterations, cfg.stop_at) if cfg.stop_at > 0 else cfg.iterations

    def batch():
        return mode.prepare_batch(sampler(run.rng))

    def step() -> None:
        nonlocal last_eval
        n_threads = threads.update(run.iteration)
        rd_step(run, batch)
        if run.iteration % cfg.log_every == 0 or run.iteration == last:
            record = rd_step.record(run, mode=mode.label, threads=n_threads)
            run.log(record)
            console(
                f"it {run.iteration} loss {record['loss']:.4f} bpp {record['bpp']:.4f} "
                f"(y4 {record['bpp_y4']:.3f} y3 {record['bpp_y3']:.3f} "
                f"y2 {record['bpp_y2']:.3f} z {record['bpp_z']:.3f}) "
                f"psnr~{record['psnr_est']:.2f} {record['seconds']:.3f} s/it "
                f"lr {record['lr']:.2e} {n_threads} thr"
            )
        if eval_set and run.iteration % cfg.eval_every == 0:
            t_eval = time.perf_counter()
            model.eval()
            last_eval = {"iteration": run.iteration, **evaluate(model, eval_set, run.out)}
            if rd_step.average is not None:
                last_eval["average"] = rd_step.average.evaluated(
                    lambda: evaluate(model, eval_set, run.out)
                )
            model.train()
            run.train_seconds += time.perf_counter() - t_eval
            run.log({"type": "eval", **last_eval, "time": time.time()})
            console(
                f"eval it {run.iteration}: Kodak subset {last_eval['bpp']:.4f} bpp, "
                f"{last_eval['psnr_rgb']:.2f} dB (real HC coding, full stream)"
                + (
                    f"; weight average {last_eval['average']['bpp']:.4f} bpp, "
                    f"{last_eval['average']['psnr_rgb']:.2f} dB"
                    if "average" in last_eval
                    else ""
                )
            )

    model.train()
    with sampler:
        stopped_by = run.loop(last, step, checkpoint, cfg.checkpoint_every, cfg.time_limit)
    return {
        "iteration": run.iteration,
        "stopped_by": stopped_by,
        "checkpoint": str(run.checkpoint_path),
    }


def export(
    checkpoint: str | Path, out_file: str | Path, kodak_images: Sequence[str] | None = None
) -> dict[str, Any]:
    """Float16 weights and a JSON sidecar from a checkpoint, evaluated on Kodak with the real
    codec (all 24 images unless ``kodak_images`` names some); returns the sidecar."""
    import torch

    from plugins.hc.trainable import HCModel

    state = load_checkpoint(checkpoint)
    cfg = HCTrainConfig.from_dict(state["config"])
    torch.set_num_threads(max(1, cfg.threads))
    model = HCModel(cfg.model_config)
    weights, shipped = exported_state(state)
    model.load_state_dict(weights)
    out_file = Path(out_file)
    out_file.parent.mkdir(parents=True, exist_ok=True)
    hours = float(state["train_seconds"]) / 3600.0
    size = write_weights(
        model,
        out_file,
        {"iterations": str(int(state["iteration"])), "hours_trained": f"{hours:.3f}"},
    )
    kodak = load_kodak(cfg.kodak, kodak_images)
    with tempfile.TemporaryDirectory() as tmp:
        result = evaluate(model.eval(), kodak, Path(tmp))
    sidecar = {
        "format": WEIGHTS_FORMAT,
        "model": "HC (Ge et al. 2021), this project's implementation (plugins/hc)",
        "weights_file": out_file.name,
        "weights_sha256": sha256_file(out_file),
        "weights_bytes": size,
        "dtype": "float16; entropy-coder tables int32, built by update() from the float16 weights",
        "num_parameters": int(sum(p.numel() for p in model.parameters())),
        "config": {
            **cfg.model_config.to_dict(),
            **{
                k: getattr(cfg, k)
                for k in (
                    "lmbda",
                    "crop",
                    "batch",
                    "lr",
                    "lr_min",
                    "warmup",
                    "aux_lr",
                    "clip",
                    "ema_decay",
                )
            },
            "planned_iterations": cfg.iterations,
            "start_iteration": cfg.start_iteration,
            "seed": cfg.seed,
        },
        "iterations": int(state["iteration"]),
        "shipped_weights": shipped,
        "hours_trained": hours,
        "legs": state.get("legs", []),
        "training_set": {"path": cfg.data, "manifest_sha256": state.get("manifest_sha256")},
        "last_training_eval": state.get("last_eval"),
        "kodak_eval": {
            "what": "float16 weights as shipped, full HC stream (all three latents)",
            "num_images": len(kodak),
            "bpp_mean": result["bpp"],
            "psnr_rgb_mean": result["psnr_rgb"],
            "per_image": result["per_image"],
        },
        "note": (
            f"trained {int(state['iteration'])} iterations ({hours:.2f} h) of a planned "
            f"{cfg.iterations}: far from converged; NOT the paper's model"
        ),
        "exported_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    atomic_write_json(out_file.with_suffix(".json"), sidecar)
    return sidecar


def _parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="bench train hc",
        description="Train HC (resumable; Ctrl-C saves), or export its weights (--export).",
    )
    p.add_argument(
        "--out",
        type=Path,
        help="checkpoint directory; default: the relay directory $BENCH_TRAIN_DIR/hc-nN-mM-lLAMBDA"
        " (~/.cache/bench/train/...), continued when it holds a checkpoint",
    )
    add_config_options(p, HCTrainConfig)
    for name, text in (
        ("C3", "channels of y3 (default 16)"),
        ("C2", "channels of y2 (default 4)"),
        ("P", "hidden channels of the conditional priors (default 64)"),
    ):
        p.add_argument(f"--{name}", type=int, default=None, help=text)
    p.add_argument("--export", metavar="FILE.safetensors", help="export the checkpoint")
    p.add_argument("--export-images", default=None, help="Kodak names for the export's eval")
    return p.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    """``bench train hc`` (argparse options: ``--help``); exit 0 ok, 3 bad input."""
    args = _parse_args(argv)
    defaults = HCTrainConfig()
    lmbda = args.lmbda or defaults.lmbda
    out = args.out or relay_dir(args.N or defaults.N, args.M or defaults.M, lmbda)
    relay_has_checkpoint = args.out is None and (out / "checkpoint.pt").is_file()
    resume = args.resume or (relay_has_checkpoint and not args.init)
    try:
        if args.export:
            images = None
            if args.export_images is not None:
                images = [s.strip() for s in args.export_images.split(",") if s.strip()]
            sidecar = export(out, args.export, images)
            print(json.dumps({k: sidecar[k] for k in ("iterations", "hours_trained")}))
            return 0
        summary = train(out, resume=resume, **config_options(args, HCTrainConfig))
    except (CheckpointError, ValueError, FileNotFoundError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 3
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
