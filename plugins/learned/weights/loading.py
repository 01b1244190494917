"""Loading a resolved weights file (:mod:`plugins.learned.weights.specs`) into a model or a
state dict, cached per process by the file's sha256. Safe loading only: safetensors, or
``torch.load(weights_only=True)`` for CompressAI state dicts."""

from __future__ import annotations

import threading
from typing import Any

from plugins.learned.weights.format import WEIGHTS_FORMAT, load_weights
from plugins.learned.weights.specs import TRAIN_FIX, ResolvedWeights, WeightsError

_LOCK = threading.Lock()

_MODELS: dict[str, Any] = {}


def _load_state_dict_file(resolved: ResolvedWeights):
    import torch

    from plugins.learned.compat import import_compressai

    compressai = import_compressai()
    from compressai.zoo.pretrained import load_pretrained

    try:
        state = torch.load(resolved.path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise WeightsError(
            f"{resolved.path} is not a loadable state dict with weights_only=True "
            f"({type(exc).__name__}: {exc})",
            "give a MeanScaleHyperprior state dict (torch.save(model.state_dict(), path))",
        ) from exc
    if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]
    if not isinstance(state, dict):
        raise WeightsError(f"{resolved.path} holds {type(state).__name__}, not a state dict")
    state = load_pretrained(state)
    try:
        model = compressai.models.MeanScaleHyperprior.from_state_dict(state)
    except Exception as exc:
        raise WeightsError(
            f"{resolved.path} is not a MeanScaleHyperprior state dict ({type(exc).__name__}: {exc})"
        ) from exc
    model.eval()
    model.update(force=True)
    return model


def load_model(resolved: ResolvedWeights):
    """CompressAI's eval-mode ``MeanScaleHyperprior`` of ``resolved``, cached per process by
    sha256 (used by the ``msh`` codec, which runs CompressAI's own compress/decompress).

    bench ``.safetensors`` files bring their entropy-coder tables (no ``update()``: the tables
    are exactly the ones evaluated at export); state dicts get ``update(force=True)``.
    """
    with _LOCK:
        if resolved.sha256 in _MODELS:
            return _MODELS[resolved.sha256]
    if resolved.file_format == "safetensors":
        try:
            model, _meta = load_weights(resolved.path)
        except (ValueError, OSError) as exc:
            raise WeightsError(f"cannot load {resolved.path}: {exc}", TRAIN_FIX) from exc
    else:
        model = _load_state_dict_file(resolved)
    for p in model.parameters():
        p.requires_grad_(False)
    with _LOCK:
        _MODELS.setdefault(resolved.sha256, model)
        return _MODELS[resolved.sha256]


_STATES: dict[str, dict] = {}


def load_state(resolved: ResolvedWeights) -> dict:
    """The model's state dict (float32 tensors, int32 tables), cached per process by sha256.

    A bench ``.safetensors`` file is read with safetensors alone (no compressai import); a
    CompressAI state dict goes through :func:`load_model` (``update()`` builds its tables).
    """
    with _LOCK:
        if resolved.sha256 in _STATES:
            return _STATES[resolved.sha256]
    if resolved.file_format == "safetensors":
        import torch
        from safetensors import safe_open
        from safetensors.torch import load_file

        try:
            with safe_open(str(resolved.path), framework="pt") as f:
                meta = dict(f.metadata() or {})
            tensors = load_file(str(resolved.path))
        except Exception as exc:
            raise WeightsError(f"cannot read {resolved.path}: {exc}", TRAIN_FIX) from exc
        if meta.get("format") != WEIGHTS_FORMAT:
            raise WeightsError(f"{resolved.path} is not a bench MeanScaleHyperprior weights file")
        state = {
            k: (v.to(torch.float32) if v.is_floating_point() else v) for k, v in tensors.items()
        }
        if state.get("gaussian_conditional._offset", torch.zeros(0)).numel() == 0:
            state = {k: v for k, v in load_model(resolved).state_dict().items()}
    else:
        state = {k: v.detach().clone() for k, v in load_model(resolved).state_dict().items()}
    with _LOCK:
        _STATES.setdefault(resolved.sha256, state)
        return _STATES[resolved.sha256]
