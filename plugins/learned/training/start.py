"""How a run of the R-D trainers starts (the base model's, :mod:`plugins.learned.training.msh`,
and HC's, :mod:`plugins.hc.train`): resumed from its checkpoint (:func:`resume_from`) or, as a
new run, from exported weights (``--init``, :func:`start_from_weights`).

Exported weights hold no optimiser state, so a later session continues them as a new run: it
starts at their iteration count (``cfg.start_iteration``, where the schedule's warm-up restarts)
and inherits the training legs of their sidecar. They also hold their constant buffers in
float16, which turns the likelihood lower bound (1e-9) and the GDN pedestals (2**-36) into 0:
harmless for coding, but training from such a file can then take ``log(0)`` and stop on a
non-finite loss, so :func:`restore_constants` puts the exact values back, for the new run and
for every resumed one (checkpoints of runs started from such files lack them).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from plugins.learned.training.msh_config import schedule_changes
from plugins.learned.training.run import CheckpointError
from plugins.learned.weights.format import sidecar_path

if TYPE_CHECKING:
    from plugins.learned.training.msh_config import TrainConfig
    from plugins.learned.training.run import Run

Fresh = Callable[[], Any]  # builds a new model of the run's architecture

#: Name endings of the constant buffers: lower bounds and reparametrisation pedestals.
CONSTANT_SUFFIXES = (".bound", ".pedestal")
SCALE_BOUND = "gaussian_conditional.scale_bound"


def restore_constants(model, fresh) -> None:
    """Copy the constant buffers (``*.bound``, ``*.pedestal``, the Gaussian conditional's scale
    bound) of ``fresh``, a newly built model of the same architecture, into ``model``, in place
    (see module doc)."""
    import torch

    constants = dict(fresh.named_buffers())
    with torch.no_grad():
        for name, buffer in model.named_buffers():
            if name.endswith(CONSTANT_SUFFIXES) or name == SCALE_BOUND:
                buffer.copy_(constants[name])


def legs_of_weights(path: str | Path) -> list[dict[str, Any]]:
    """The training legs recorded in a weights sidecar (none without a sidecar); one summary
    leg for sidecars written before legs were recorded."""
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


def start_from_weights(
    run: Run,
    cfg: TrainConfig,
    model,
    state: dict[str, Any],
    meta: dict[str, str],
    fresh: Fresh,
) -> None:
    """Start ``run`` from the exported weights ``cfg.init`` (their ``state`` dict and metadata
    ``meta``): check that they hold ``cfg``'s architecture (the fields ``cfg.ARCHITECTURE``;
    :class:`CheckpointError` otherwise), load them into ``model``, restore the constants from
    ``fresh()`` (a newly built model), and carry on their iteration count and the legs of their
    sidecar (``run.iteration``, ``run.legs``, ``run.train_seconds``, ``cfg.start_iteration``);
    the next leg notes an objective changed against the sidecar's (:func:`objective_changes`)."""
    stored = {k: int(meta[k]) for k in cfg.ARCHITECTURE}
    wanted = {k: getattr(cfg, k) for k in cfg.ARCHITECTURE}
    if stored != wanted:
        raise CheckpointError(f"{cfg.init} holds {_fields(stored)}, not {_fields(wanted)}")
    model.load_state_dict(state)
    restore_constants(model, fresh())
    run.iteration = int(meta.get("iterations", 0))
    cfg.start_iteration = run.iteration
    run.legs = legs_of_weights(cfg.init)
    run.train_seconds = sum(leg["seconds"] for leg in run.legs)
    run.note = objective_changes(cfg)


def objective_changes(cfg: TrainConfig) -> str | None:
    """The objective fields (``cfg.OBJECTIVE``) in which ``cfg`` differs from the config in the
    sidecar of its ``init`` weights, in words (``"lmbda 0.18 -> 0.13 from here"``); ``None``
    when none differs or the sidecar records none."""
    side = sidecar_path(cfg.init)
    stored = json.loads(side.read_text()).get("config", {}) if side.is_file() else {}
    if stored:
        stored = {**cfg.LEGACY, **stored}
    changed = [
        f"{k} {stored[k]} -> {getattr(cfg, k)}"
        for k in cfg.OBJECTIVE
        if k in stored and stored[k] is not None and stored[k] != getattr(cfg, k)
    ]
    return f"{', '.join(changed)} from here" if changed else None


def resume_from(
    run: Run,
    cfg: TrainConfig,
    model,
    state: dict[str, Any],
    manifest: str,
    fresh: Fresh,
    log: Callable[[str], Any],
) -> dict[str, Any] | None:
    """Continue ``run`` from its checkpoint ``state``: the model's weights (constants restored
    from ``fresh()``; :class:`CheckpointError` when they do not fit ``model``), the loop's state
    (:meth:`Run.restore`), and a ``schedule`` log record when ``cfg`` changes the stored
    schedule. ``log`` receives what the console shows (a warning when the training data's
    ``manifest`` sha256 differs from the checkpoint's). Returns the checkpoint's last eval."""
    try:
        model.load_state_dict(state["model"])
    except (RuntimeError, ValueError, KeyError) as exc:
        raise CheckpointError(
            f"checkpoint {run.checkpoint_path} does not fit the model: {exc}"
        ) from exc
    if state.get("manifest_sha256") not in (None, manifest):
        log(f"warning: training data changed since the checkpoint: {cfg.data}")
    restore_constants(model, fresh())
    run.restore(state)
    log(f"resuming {run.checkpoint_path} at iteration {run.iteration}")
    changed = schedule_changes(type(cfg).from_dict(state["config"]), cfg)
    if changed:
        run.log({"type": "schedule", "iteration": run.iteration, "changed": changed})
        log(f"schedule changed at iteration {run.iteration}: {changed}")
    return state.get("last_eval")


def _fields(values: dict[str, int]) -> str:
    return ", ".join(f"{k}={v}" for k, v in values.items())
