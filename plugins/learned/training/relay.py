"""Where a long training run lives between sessions: the relay directory.

A checkpoint is resumable state, never committed. It is kept outside the work tree at a stable
path, ``$BENCH_TRAIN_DIR/<run name>`` (default ``$XDG_CACHE_HOME/bench/train``, i.e.
``~/.cache/bench/train``), so that any later ``bench train`` on the same machine continues it.
When it is gone (a new machine), the run starts again from the last shipped weights (``--init``)
and keeps their iteration count.
"""

from __future__ import annotations

import os
from pathlib import Path

#: The schedule of a relay that restarts from the shipped weights (a new machine: no checkpoint
#: in the relay directory), under whatever the command line gives. The shipped file's own
#: schedule may end soon after its iteration (the lambda 0.13 file's planned end, 204,000, was
#: 2,332 iterations away) and its rate is the floor a settled run had reached; after a restart
#: that changes lambda and starts a fresh Adam, a constant 3e-5 beat 1e-5 on the Kodak subset
#: by 0.016 dB at 5,200 iterations (JOURNAL.md: the A/B after a restart). The planned end only
#: stops the run (the rate is constant): 600,000 leaves room for relays that resume it.
RESTART_SCHEDULE: dict[str, float | int] = {
    "lr": 3e-5,
    "lr_min": 3e-5,
    "warmup": 500,
    "iterations": 600_000,
}


def train_root() -> Path:
    """``$BENCH_TRAIN_DIR``, else ``$XDG_CACHE_HOME/bench/train``, else ``~/.cache/bench/train``."""
    explicit = os.environ.get("BENCH_TRAIN_DIR")
    if explicit:
        return Path(explicit).expanduser()
    cache = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(cache) / "bench" / "train"


def run_name(N: int, M: int, lmbda: float) -> str:
    """``msh-n128-m192-l1800`` for lambda 0.18: the stem the shipped weights file gets too."""
    return f"msh-n{N}-m{M}-l{lambda_tag(lmbda)}"


def lambda_tag(lmbda: float) -> str:
    """The four decimals of a lambda below 1: 0.0932 -> ``0932``, 0.18 -> ``1800``."""
    text = f"{lmbda:.4f}"
    if not text.startswith("0.") or float(text) != lmbda:
        raise ValueError(f"lambda {lmbda} needs more than 4 decimals or is >= 1")
    return text[2:]


def relay_dir(N: int, M: int, lmbda: float) -> Path:
    """The stable checkpoint directory of the base-model run with these settings."""
    return train_root() / run_name(N, M, lmbda)


def plan(
    out: Path | None, resume: bool, init: str | None, N: int, M: int, lmbda: float, shipped: Path
) -> tuple[Path, bool, str | None, str]:
    """Fill in a ``bench train`` run left unspecified: ``(out, resume, init, what)``.

    Without ``--out`` the run lives in :func:`relay_dir`; there, an existing checkpoint is
    continued, and otherwise (with no ``--init`` given) the run starts from ``shipped`` (the
    last shipped base weights). Explicit ``--out``, ``--resume`` and ``--init`` are kept as given.
    ``what`` says in words which of these happened.
    """
    if out is not None:
        return out, resume, init, f"run in {out}"
    out = relay_dir(N, M, lmbda)
    if (out / "checkpoint.pt").is_file() and not init:
        return out, True, None, f"relay: continuing the checkpoint in {out}"
    if resume:
        raise FileNotFoundError(f"--resume: no checkpoint in the relay directory {out}")
    if init:
        return out, False, init, f"relay: new run in {out} from {init}"
    if not shipped.is_file():
        raise FileNotFoundError(f"no checkpoint in {out} and no shipped weights at {shipped}")
    return out, False, str(shipped), f"relay: no checkpoint in {out}; starting from {shipped}"
