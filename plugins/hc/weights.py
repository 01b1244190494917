"""Where HC's weights come from, and their file format.

A spec is ``bundled:NAME`` (``NAME.safetensors`` in ``plugins/hc/weights/``, then in the folders
of ``$BENCH_WEIGHTS_PATH``) or a path to such a file. The file is written by
:func:`plugins.hc.train.export`: float16 parameters of :class:`plugins.hc.trainable.HCModel`, the
int32 entropy-coder tables ``update()`` built from the float16-rounded weights, metadata
``format`` = :data:`WEIGHTS_FORMAT` and the channel counts; beside it a JSON sidecar says how
the weights were trained. Nothing here imports torch at module import.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from bench.hashing import sha256_file
from plugins.learned.weights import ResolvedWeights, WeightsError
from plugins.learned.weights.format import read_sidecar

WEIGHTS_FORMAT = "bench-hc-weights-v1"
BUNDLED_DIR = Path(__file__).resolve().parent / "weights"
BUNDLED_NAME = "hc-n128-m192-l1800-it20000"
DEFAULT_WEIGHTS = f"bundled:{BUNDLED_NAME}"
TRAIN_FIX = "train HC with `bench train hc` and export it, or pass weights=PATH.safetensors"


def _search_path() -> list[Path]:
    extra = [Path(p) for p in os.environ.get("BENCH_WEIGHTS_PATH", "").split(os.pathsep) if p]
    return [BUNDLED_DIR, *extra]


def _describe(path: Path, sidecar: dict[str, Any] | None, source: str) -> str:
    who = "bundled with bench" if source == "bundled" else f"user file {path.name}"
    if not sidecar:
        return f"HC weights ({who}) without a sidecar: training unknown; NOT the paper's model"
    cfg = sidecar.get("config", {})
    return (
        f"project's HC N={cfg.get('N')} M={cfg.get('M')} lambda={cfg.get('lmbda')} ({who}) "
        f"trained by `bench train hc` for {sidecar.get('iterations')} iterations "
        f"({sidecar.get('hours_trained', 0.0):.2f} h, batch {cfg.get('batch')}, "
        f"{cfg.get('crop')}px crops); NOT the paper's model"
    )


def resolve(spec: str | os.PathLike | None = None) -> ResolvedWeights:
    """A weights spec as a verified file (sha256, description); :class:`WeightsError` (a
    :class:`bench.CodecUnavailable`) with a fix when it is missing."""
    spec = DEFAULT_WEIGHTS if spec is None else os.fspath(spec)
    if spec.startswith("bundled:"):
        name = spec.split(":", 1)[1]
        if not name or "/" in name or "\\" in name or name.startswith("."):
            raise WeightsError(f"invalid bundled weights name {name!r}", TRAIN_FIX)
        found = [d / f"{name}.safetensors" for d in _search_path()]
        found = [p for p in found if p.is_file()]
        if not found:
            raise WeightsError(f"bundled HC weights {name}.safetensors not found", TRAIN_FIX)
        path, source = found[0], "bundled"
    else:
        path, source = Path(spec).expanduser(), "user"
        if not path.is_file():
            raise WeightsError(f"HC weights file {path} not found", TRAIN_FIX)
        path = path.resolve()
    sidecar = read_sidecar(path)
    return ResolvedWeights(
        spec=spec,
        source=source,
        path=path,
        sha256=sha256_file(path),
        description=_describe(path, sidecar, source),
        file_format="safetensors",
        sidecar=sidecar,
    )


def check_default_weights() -> None:
    """``check()`` of the ``hc`` codec: the bundled weights are present."""
    resolve(DEFAULT_WEIGHTS)


def load_state(path: str | Path) -> tuple[dict, dict[str, str]]:
    """``(state dict, metadata)`` of an HC weights file: float tensors as float32, tables as
    stored. :class:`WeightsError` when it is not an HC weights file."""
    from safetensors import safe_open
    from safetensors.torch import load_file

    try:
        with safe_open(str(path), framework="pt") as f:
            meta = dict(f.metadata() or {})
        tensors = load_file(str(path))
    except Exception as exc:  # safetensors raises its own error types for any damage
        raise WeightsError(f"cannot read {path}: {exc}", TRAIN_FIX) from exc
    if meta.get("format") != WEIGHTS_FORMAT:
        raise WeightsError(f"{path} is not an HC weights file ({WEIGHTS_FORMAT})", TRAIN_FIX)
    state = {k: (v.float() if v.is_floating_point() else v) for k, v in tensors.items()}
    return state, meta
