"""Fork an A/B arm: a copy of a training checkpoint whose objective differs.

An A/B of two training settings is fair only from one state: the same weights, Adam moments,
weight average, schedule and RNG states, so that both arms draw the same batches and noise.
:func:`fork` copies a ``bench train msh`` checkpoint into a new directory with objective fields
(``TrainConfig.OBJECTIVE``: ``lmbda``, ``quantization``, ``batch``, ``crop``, ``scale_min``,
``clip``)
changed, the ones ``bench train --resume`` refuses to change; the source's log comes along and
ends with a ``fork`` record naming the changes. The arm then trains with
``bench train msh --out DST --resume``; ``benchmarks/train_speed.py --ab`` pairs two arms after
that record. Settings a resumed run may change anyway (schedule, precision, threads) need no
fork: give them to each arm's ``bench train``.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
import time
from pathlib import Path
from typing import Any

from plugins.learned.training.files import atomic_write_json
from plugins.learned.training.msh import CONFIG_NAME
from plugins.learned.training.msh_config import TrainConfig, load_checkpoint
from plugins.learned.training.run import (
    CHECKPOINT_NAME,
    LOG_NAME,
    CheckpointError,
    save_checkpoint,
)


def parse_changes(pairs: list[str]) -> dict[str, Any]:
    """``["lmbda=0.11", ...]`` as typed values (each field's type in :class:`TrainConfig`).
    ``ValueError`` for a malformed pair, a field outside ``OBJECTIVE`` or a value of the wrong
    type."""
    defaults = TrainConfig()
    changes: dict[str, Any] = {}
    for pair in pairs:
        name, sep, text = pair.partition("=")
        if not sep or not name:
            raise ValueError(f"--set takes FIELD=VALUE, got {pair!r}")
        if name not in TrainConfig.OBJECTIVE:
            raise ValueError(
                f"{name!r} cannot be forked: the objective fields are "
                f"{', '.join(TrainConfig.OBJECTIVE)} (the schedule and precision change on "
                "resume; the model's size needs a new run)"
            )
        kind = type(getattr(defaults, name))
        try:
            changes[name] = kind(text)
        except ValueError as exc:
            raise ValueError(f"{name} takes a {kind.__name__}, got {text!r}") from exc
    return changes


def fork(src: str | Path, dst: str | Path, changes: dict[str, Any]) -> dict[str, list[Any]]:
    """Copy the checkpoint in ``src`` (directory or ``checkpoint.pt``) to the directory ``dst``
    with the objective fields in ``changes`` set; returns ``{field: [before, after]}``.

    ``dst`` must not hold a checkpoint. :class:`CheckpointError` for a missing or corrupt
    source or an occupied destination; ``ValueError`` when nothing changes or a field is not an
    objective field or takes no such value.
    """
    src = Path(src)
    src_dir = src if src.is_dir() else src.parent
    state = load_checkpoint(src)
    stored = TrainConfig.from_dict(state["config"])
    outside = sorted(set(changes) - set(TrainConfig.OBJECTIVE))
    if outside:
        raise ValueError(f"not objective fields: {', '.join(outside)}")
    changed = {k: [getattr(stored, k), v] for k, v in changes.items() if getattr(stored, k) != v}
    if not changed:
        raise ValueError("the fork changes nothing: give at least one new objective value")
    dst = Path(dst)
    if (dst / CHECKPOINT_NAME).exists():
        raise CheckpointError(f"{dst / CHECKPOINT_NAME} already exists: choose another --out")
    cfg = dataclasses.replace(stored, **changes, out=str(dst))  # validates the new values
    dst.mkdir(parents=True, exist_ok=True)
    state["config"] = cfg.to_dict()
    if (src_dir / LOG_NAME).is_file():
        shutil.copyfile(src_dir / LOG_NAME, dst / LOG_NAME)
    record = {
        "type": "fork",
        "iteration": int(state["iteration"]),
        "from": str(src_dir),
        "changed": changed,
        "time": time.time(),
    }
    with open(dst / LOG_NAME, "a") as log:
        log.write(json.dumps(record) + "\n")
    atomic_write_json(dst / CONFIG_NAME, cfg.to_dict())
    save_checkpoint(dst / CHECKPOINT_NAME, state)
    return changed
