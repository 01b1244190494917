"""Export of the base model trainer's checkpoints as shippable weights (``bench
train-export``): float16 ``.safetensors`` with the entropy-coder tables, and a JSON sidecar with
the training record and the 24-image Kodak point (:mod:`plugins.learned.weights.format`)."""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from bench.hashing import sha256_file
from bench.published import MBT2018_MEAN_KODAK
from plugins.learned.training.ema import exported_state
from plugins.learned.training.evaluation import evaluate_weights
from plugins.learned.training.files import atomic_write_json
from plugins.learned.training.msh_config import TrainConfig, load_checkpoint
from plugins.learned.training.run import CheckpointError
from plugins.learned.weights.format import WEIGHTS_FORMAT, build_model, sidecar_path

#: Exported weights larger than this are refused (the shipped file must stay <= 16 MB). N=128,
#: M=192 has 7.03M parameters: about 14.1 MB in float16 plus the CDF tables (< 1 MB).
MAX_WEIGHTS_BYTES = 16_000_000


def _round_to_float16_(model) -> None:
    """Round every floating parameter and buffer to float16 precision, in place (kept float32)."""
    import torch

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
    live: bool = False,
    console=None,
) -> dict[str, Any]:
    """Write ``out_file`` (.safetensors, float16) and its ``.json`` sidecar from a checkpoint.

    The weights are rounded to float16, then ``update(force=True)`` builds the entropy-coder
    tables from the rounded weights and those tables (int32) are stored with them, so that
    :func:`load_weights` gives exactly the evaluated model. The file is then re-loaded and
    evaluated on Kodak (all 24 images unless ``kodak_images`` names some) with real coding; the
    means go into the sidecar as the non-progressive Kodak R-D point. The weights are the
    checkpoint's moving average when it keeps one (``--ema-decay``) unless ``live``, else the
    live weights; the sidecar's ``shipped_weights`` says which. Returns the sidecar dict.
    """
    import torch
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
    weights, shipped = exported_state(state, live=live)
    try:
        model.load_state_dict(weights)
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
        "shipped_weights": shipped["weights"],
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
    result, _ = evaluate_weights(
        out_file, kodak or cfg.kodak, kodak_images, torch.get_num_threads()
    )
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
            "quantization": cfg.quantization,
            "crop": cfg.crop,
            "scale_min": cfg.scale_min,
            "batch": cfg.batch,
            "lr": cfg.lr,
            "lr_min": cfg.lr_min,
            "warmup": cfg.warmup,
            "planned_iterations": cfg.iterations,
            "start_iteration": cfg.start_iteration,
            "aux_lr": cfg.aux_lr,
            "clip": cfg.clip,
            "ema_decay": cfg.ema_decay,
            "seed": cfg.seed,
        },
        "iterations": int(state["iteration"]),
        "shipped_weights": shipped,
        "hours_trained": float(state.get("train_seconds", 0.0)) / 3600.0,
        "legs": state.get("legs", []),
        "training_set": {
            "path": cfg.data,
            "manifest_sha256": state.get("manifest_sha256"),
        },
        "last_training_eval": _strip_eval(state.get("last_eval")),
        "kodak_eval": {
            "what": "float16 weights as shipped, real compress/decompress, non-progressive",
            "num_images": len(result["images"]),
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
        f"Kodak ({len(result['images'])} images): {result['bpp']:.4f} bpp, "
        f"{result['psnr_rgb']:.2f} dB PSNR-RGB, {gap.describe()}; sidecar {sidecar_path(out_file)}"
    )
    return sidecar


def _strip_eval(ev: dict[str, Any] | None) -> dict[str, Any] | None:
    if ev is None:
        return None
    return {k: ev[k] for k in ("iteration", "images", "bpp", "psnr_rgb", "per_image") if k in ev}
