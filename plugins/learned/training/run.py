"""The one resumable training loop every trainer runs (the base model's, DeepHQ's, HC's).

A :class:`Run` lives in a directory ``out``:

* ``out/checkpoint.pt``: the trainer's state (model, optimisers, config...) plus what the run
  itself keeps: ``format``, ``iteration``, ``train_seconds``, ``legs`` and ``rng`` (the numpy
  ``PCG64`` state of :attr:`Run.rng`, torch's CPU RNG and Python's ``random``). Written
  atomically (temporary file, fsync, ``os.replace``) by :meth:`Run.save`, read back by
  :func:`read_checkpoint` (``weights_only=True``) and :meth:`Run.restore`.
* ``out/log.jsonl``: one JSON object per line (:meth:`Run.log`).

:meth:`Run.loop` calls the trainer's ``step`` until the last iteration or the first
SIGINT/SIGTERM (:class:`~plugins.learned.training.stop.StopFlag`), asking for a checkpoint every
``checkpoint_every`` iterations and once at the end. Each process's stretch of training is a
*leg* (mode, device, threads, iterations per second), kept with the checkpoint.

What a trainer supplies: its model, loss and options, the ``step`` that runs one iteration
(and calls :meth:`Run.advance`) and the ``checkpoint`` callback that saves its state through
:meth:`Run.save`.
"""

from __future__ import annotations

import os
import random
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import numpy as np

from plugins.learned.training.files import append_jsonl
from plugins.learned.training.stop import StopFlag

CHECKPOINT_NAME = "checkpoint.pt"
LOG_NAME = "log.jsonl"


class CheckpointError(RuntimeError):
    """A checkpoint is missing, unreadable, corrupt, or does not match the requested config."""


def save_checkpoint(path: Path, state: dict[str, Any]) -> None:
    """``torch.save`` to ``path.tmp``, fsync, then ``os.replace``: never a half-written file."""
    import torch

    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as f:
        torch.save(state, f)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def read_checkpoint(
    path: str | Path,
    formats: Iterable[str],
    required: Iterable[str] = (),
    what: str = "checkpoint",
) -> dict[str, Any]:
    """A checkpoint file, or ``checkpoint.pt`` in a directory, loaded with
    ``weights_only=True``. :class:`CheckpointError` when it is missing, corrupt, of none of
    ``formats`` or lacks a ``required`` key (``what`` names the kind in the messages)."""
    import torch

    formats = tuple(formats)
    path = Path(path)
    if path.is_dir():
        path = path / CHECKPOINT_NAME
    if not path.is_file():
        raise CheckpointError(f"no {what} at {path}")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # truncated zip, pickle garbage, ...
        raise CheckpointError(
            f"checkpoint {path} is corrupt or unreadable ({type(exc).__name__}: {exc}); "
            "delete it to start over"
        ) from exc
    if not isinstance(state, dict) or state.get("format") not in formats:
        raise CheckpointError(f"{path} is not a {what} ({', '.join(formats)})")
    missing = [k for k in required if k not in state]
    if missing:
        raise CheckpointError(f"checkpoint {path} is incomplete (missing {', '.join(missing)})")
    return state


def _to_tuple(obj):
    """``random.getstate()`` round-trips through lists in the checkpoint; rebuild the tuples."""
    if isinstance(obj, list):
        return tuple(_to_tuple(o) for o in obj)
    return obj


class Run:
    """A resumable training run in ``out`` (see module doc). ``checkpoint_format`` is the
    ``format`` its checkpoints carry."""

    def __init__(self, out: str | Path, checkpoint_format: str) -> None:
        self.out = Path(out)
        self.checkpoint_path = self.out / CHECKPOINT_NAME
        self.log_path = self.out / LOG_NAME
        self.format = checkpoint_format
        self.iteration = 0
        self.train_seconds = 0.0
        self.legs: list[dict[str, Any]] = []
        self.leg: dict[str, Any] | None = None
        #: What the next leg changes, in words (e.g. a new lambda); :meth:`start_leg` records it.
        self.note: str | None = None
        self.rng = np.random.Generator(np.random.PCG64(0))
        self._saved_at = -1

    # -- state --------------------------------------------------------------------------------

    def seed(self, seed: int) -> None:
        """A new run's random state: numpy's ``PCG64(seed)``, torch's and Python's ``seed``."""
        import torch

        torch.manual_seed(seed)
        random.seed(seed)
        self.rng = np.random.Generator(np.random.PCG64(seed))

    def restore(self, state: dict[str, Any]) -> None:
        """Continue from a checkpoint's ``iteration``, ``train_seconds``, ``legs`` and ``rng``
        (Python's ``random`` state when it was saved)."""
        import torch

        self.iteration = int(state["iteration"])
        self.train_seconds = float(state.get("train_seconds", 0.0))
        self.legs = list(state.get("legs", []))
        self.rng = np.random.Generator(np.random.PCG64())
        self.rng.bit_generator.state = state["rng"]["numpy"]
        torch.set_rng_state(state["rng"]["torch"])
        if "python" in state["rng"]:
            random.setstate(_to_tuple(state["rng"]["python"]))

    def rng_state(self) -> dict[str, Any]:
        import torch

        return {
            "numpy": self.rng.bit_generator.state,
            "torch": torch.get_rng_state(),
            "python": list(random.getstate()),
        }

    def save(self, state: dict[str, Any]) -> bool:
        """Write the checkpoint: the trainer's ``state`` plus the run's own keys (see module
        doc). ``False`` (nothing written) when this iteration is already saved."""
        if self._saved_at == self.iteration:
            return False
        self._saved_at = self.iteration
        save_checkpoint(
            self.checkpoint_path,
            {
                "format": self.format,
                **state,
                "iteration": self.iteration,
                "train_seconds": self.train_seconds,
                "legs": self.legs,
                "rng": self.rng_state(),
            },
        )
        return True

    def checkpoint(self, reason: str, state: dict[str, Any]) -> None:
        """:meth:`save` the trainer's ``state`` and, unless this iteration was already saved,
        log a ``checkpoint`` record: iteration, ``reason`` and the leg's mode and speed."""
        if self.save(state):
            leg = self.leg or {}
            self.log(
                {
                    "type": "checkpoint",
                    "iteration": self.iteration,
                    "reason": reason,
                    "mode": leg.get("mode"),
                    "iterations_per_second": leg.get("iterations_per_second"),
                }
            )

    def log(self, record: dict[str, Any]) -> None:
        """Append ``record`` to ``log.jsonl``."""
        append_jsonl(self.log_path, record)

    # -- legs and the loop ----------------------------------------------------------------

    def start_leg(self, mode: str, device: str, threads: int | str) -> dict[str, Any]:
        """Open this process's leg (appended to :attr:`legs`); :meth:`advance` keeps it."""
        self.leg = {
            "mode": mode,
            "device": device,
            "threads": threads,
            "from_iteration": self.iteration,
            "to_iteration": self.iteration,
            "seconds": 0.0,
            "iterations_per_second": None,
            "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        }
        if self.note:
            self.leg["note"], self.note = self.note, None
        self.legs.append(self.leg)
        return self.leg

    def advance(self, seconds: float) -> None:
        """One iteration done in ``seconds``: count it, its time and the leg's speed."""
        self.iteration += 1
        self.train_seconds += seconds
        if self.leg is not None:
            leg = self.leg
            leg["seconds"] += seconds
            leg["to_iteration"] = self.iteration
            leg["iterations_per_second"] = (self.iteration - leg["from_iteration"]) / leg["seconds"]

    def loop(
        self,
        last: int,
        step: Callable[[], None],
        checkpoint: Callable[[str], None],
        checkpoint_every: int,
        time_limit: float = 0.0,
    ) -> str | None:
        """Run ``step`` (one iteration; it calls :meth:`advance`) until :attr:`iteration`
        reaches ``last``, a SIGINT/SIGTERM arrives, or the loop has run ``time_limit`` seconds
        (``time.perf_counter``; 0: no limit), then ``checkpoint("end")`` or
        ``checkpoint("stop (SIGTERM)")``; ``checkpoint("periodic")`` every
        ``checkpoint_every`` iterations. Returns what stopped it early (the signal's name or
        ``"time limit"``) or ``None``."""
        stopped_by = None
        t0 = time.perf_counter()
        with StopFlag() as stop:
            while self.iteration < last:
                step()
                if stop.requested:
                    stopped_by = stop.requested
                    break
                if time_limit > 0 and time.perf_counter() - t0 >= time_limit:
                    stopped_by = "time limit"
                    break
                if self.iteration % checkpoint_every == 0:
                    checkpoint("periodic")
            checkpoint(f"stop ({stopped_by})" if stopped_by else "end")
        return stopped_by
