"""DeepHQ's learned parameters over a frozen base model, and their file format.

A DeepHQ weights file (``.safetensors``) holds only what DeepHQ adds to its base
MeanScaleHyperprior (named by the base file's sha256, checked on load):

* ``steps``: float32 ``(L, M)``, the quantization step of every layer and latent channel, in
  units of the base model's integer grid; the last layer is 1 (the base model's own grid).
* ``mask_index_threshold``: int32 ``(L, M)``; element ``e`` of channel ``c`` is coded from
  layer ``l`` on when its prior's scale index ``i_e >= T[l, c]``. Thresholds never rise from
  one layer to the next, so the selected sets are nested (cumulative selection).
* ``channel_gain`` (optional): float32 ``(M,)``, each channel's squared pixel error (8-bit
  units, summed over the image) per unit of squared latent error, measured on training
  images (:func:`plugins.deephq.train_calibration.channel_gains`); the slope order weighs each
  element's expected latent error decrease by it. Absent: every channel weighs 1.

Metadata: ``format``, ``base_sha256``, ``layers``, ``channels``, ``grid`` (the layers' grid,
:data:`plugins.deephq.coder.GRIDS`; mid-tread when absent) and training facts (strings).
The JSON sidecar beside the file (:func:`sidecar_path`, :func:`read_sidecar`) follows the
learned weights' convention (:mod:`plugins.learned.weights.format`).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from plugins.deephq.coder import GRIDS, MID_TREAD
from plugins.learned.weights.format import read_sidecar as read_sidecar
from plugins.learned.weights.format import sidecar_path as sidecar_path

FORMAT = "bench-deephq-params-v1"


@dataclass(frozen=True)
class DeepHQParams:
    """Steps ``(L, M)`` float64 (from float32), mask thresholds ``(L, M)`` int64 and, when
    measured, channel gains ``(M,)`` float64 (from float32)."""

    steps: np.ndarray
    mask_index_threshold: np.ndarray
    base_sha256: str
    meta: dict[str, str] = field(default_factory=dict)
    channel_gain: np.ndarray | None = None  # (M,) float64 (from float32), see module doc

    def __post_init__(self) -> None:
        steps = np.asarray(self.steps)
        thr = np.asarray(self.mask_index_threshold)
        if steps.ndim != 2 or steps.shape != thr.shape:
            raise ValueError(f"steps {steps.shape} and thresholds {thr.shape} must be (L, M)")
        if not np.all(np.isfinite(steps)) or np.any(steps < 1.0) or np.any(steps[-1] != 1.0):
            raise ValueError("steps must be finite, >= 1, and 1 in the last layer")
        if np.any(np.diff(thr, axis=0) > 0):
            raise ValueError("mask thresholds must not rise from one layer to the next")
        if self.grid not in GRIDS:
            raise ValueError(f"unknown grid {self.grid!r}: one of {', '.join(GRIDS)}")
        gain = self.channel_gain
        if gain is not None and (
            np.shape(gain) != (steps.shape[1],) or not np.all(np.isfinite(gain) & (gain > 0))
        ):
            raise ValueError(f"channel gains must be ({steps.shape[1]},) finite and > 0")

    @property
    def grid(self) -> str:
        """The layers' grid (:data:`plugins.deephq.coder.GRIDS`): ``meta["grid"]``, mid-tread
        for files written before the grid was a choice."""
        return self.meta.get("grid", MID_TREAD)

    @property
    def layers(self) -> int:
        return int(self.steps.shape[0])

    @property
    def channels(self) -> int:
        return int(self.steps.shape[1])

    def without_masks(self) -> DeepHQParams:
        """The same steps with every element selected at every layer (the ablation)."""
        return replace(self, mask_index_threshold=np.zeros_like(self.mask_index_threshold))


def selected_fraction(mask_index_threshold: np.ndarray, scale_indexes: int) -> list[float]:
    """Per layer, the fraction of (channel, scale index) pairs coded from that layer on."""
    thr = np.asarray(mask_index_threshold)
    return (np.arange(scale_indexes)[None, None, :] >= thr[:, :, None]).mean(axis=(1, 2)).tolist()


def save(params: DeepHQParams, path: str | Path, extra_meta: dict[str, str] | None = None) -> None:
    """Write ``path`` (.safetensors) atomically; world-readable."""
    import os

    import torch
    from safetensors.torch import save_file

    path = Path(path)
    tensors = {
        "steps": torch.from_numpy(np.asarray(params.steps, np.float32)).contiguous(),
        "mask_index_threshold": torch.from_numpy(
            np.asarray(params.mask_index_threshold, np.int32)
        ).contiguous(),
    }
    if params.channel_gain is not None:
        gain = np.asarray(params.channel_gain, np.float32)
        tensors["channel_gain"] = torch.from_numpy(gain).contiguous()
    meta = {
        **params.meta,
        **(extra_meta or {}),
        "format": FORMAT,
        "base_sha256": params.base_sha256,
        "layers": str(params.layers),
        "channels": str(params.channels),
    }
    tmp = path.with_name(path.name + ".tmp")
    save_file(tensors, str(tmp), metadata=meta)
    os.chmod(tmp, 0o644)
    os.replace(tmp, path)


def load(path: str | Path) -> DeepHQParams:
    """Read a DeepHQ weights file; raises ``ValueError`` naming what is wrong."""
    from safetensors import SafetensorError, safe_open

    path = Path(path)
    try:
        with safe_open(str(path), framework="numpy") as f:
            meta = dict(f.metadata() or {})
            if meta.get("format") != FORMAT:
                raise ValueError(f"{path} is not a DeepHQ weights file ({FORMAT})")
            steps = f.get_tensor("steps").astype(np.float64)
            thr = f.get_tensor("mask_index_threshold").astype(np.int64)
            gain, names = None, set(f.keys())
            if "channel_gain" in names:
                gain = f.get_tensor("channel_gain").astype(np.float64)
    except (OSError, KeyError, SafetensorError) as exc:
        raise ValueError(f"cannot read DeepHQ weights {path}: {exc}") from exc
    base = meta.pop("base_sha256", "")
    return DeepHQParams(steps, thr, base, meta, gain)
