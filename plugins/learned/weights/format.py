"""The file format of the base model's weights as ``bench train-export`` writes them.

``NAME.safetensors``: every parameter and buffer of a ``MeanScaleHyperprior`` in float16, the
entropy-coder tables (built by ``update()`` from the float16-rounded weights) in int32, and the
metadata ``format`` (:data:`WEIGHTS_FORMAT`), ``model``, ``N``, ``M``, ``lmbda``,
``iterations``, ``hours_trained`` and ``modes``. ``NAME.json`` (:func:`sidecar_path`) beside it
describes the training run and the weights' Kodak point. Reading needs safetensors and torch
(imported by the functions).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

WEIGHTS_FORMAT = "bench-learned-msh-weights-v1"


def sidecar_path(weights_file: str | Path) -> Path:
    """The JSON sidecar of a weights file: the same name with ``.json``."""
    return Path(weights_file).with_suffix(".json")


def read_sidecar(weights_file: str | Path) -> dict[str, Any] | None:
    """The sidecar of ``weights_file`` as a dict; ``None`` when it is missing or unreadable."""
    sidecar = sidecar_path(weights_file)
    if not sidecar.is_file():
        return None
    try:
        return json.loads(sidecar.read_text())
    except (OSError, ValueError):
        return None


def build_model(N: int, M: int):
    """A fresh ``compressai.models.MeanScaleHyperprior(N, M)`` (imports compressai via the shim)."""
    from plugins.learned.compat import import_compressai

    compressai = import_compressai()
    return compressai.models.MeanScaleHyperprior(N=N, M=M)


def load_weights(path: str | Path):
    """Load exported ``.safetensors`` weights; returns ``(model, metadata)``, model in eval mode.

    The stored entropy-coder tables are used as they are (no ``update()`` needed); a file without
    them gets ``update(force=True)``, which rebuilds the same tables deterministically.
    ``FileNotFoundError`` when the file is missing, ``ValueError`` when it is not a bench
    weights file.
    """
    import torch
    from safetensors import safe_open
    from safetensors.torch import load_file

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"weights file {path} not found")
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = dict(f.metadata() or {})
        tensors = load_file(str(path))
    except Exception as exc:  # safetensors raises its own error types for any damage
        raise ValueError(
            f"{path} is not a readable .safetensors file ({type(exc).__name__}: {exc}); "
            "pass weights written by `bench train-export`"
        ) from exc
    if meta.get("format") != WEIGHTS_FORMAT:
        raise ValueError(f"{path} is not a bench MeanScaleHyperprior weights file")
    state = {k: (v.to(torch.float32) if v.is_floating_point() else v) for k, v in tensors.items()}
    model = build_model(int(meta["N"]), int(meta["M"]))
    model.load_state_dict(state)
    model.eval()
    tables = (model.entropy_bottleneck._offset, model.gaussian_conditional._offset)
    if any(t.numel() == 0 for t in tables):
        model.update(force=True)
    return model, meta
