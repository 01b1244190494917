"""Pair two training arms' logs: the A/B of a setting, from one shared state.

An arm is a run directory resumed from a copy of another run's checkpoint, either forked
(``bench train-fork``: a ``fork`` record) or copied by hand (a setting that may change on resume,
such as the rate). Both logs then share their records up to the copy; the A/B starts at the
iteration the first leg after that shared history resumed from (:func:`ab_start`). Only records
after it are paired; where a leg re-ran iterations after a stop, the later record counts.

:func:`paired_evaluations` pairs the Kodak-subset evaluations (``eval`` records) at the same
iterations; :func:`markdown_table` writes them as the A/B tables of the training journal
(``plugins/learned/training/JOURNAL.md``) show them: the distance below CompressAI's published
mbt2018-mean curve (dB at the same bpp), of the weight average where the arm keeps one.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from plugins.learned.training.run import LOG_NAME


def read_log(run: str | Path) -> list[dict[str, Any]]:
    """The records of ``run``'s ``log.jsonl`` (``run``: a run directory or the log itself).
    A last line cut short (a process killed while appending) is left out; ``FileNotFoundError``
    when there is no log, ``ValueError`` naming the line when an earlier one is not JSON."""
    path = Path(run)
    path = path / LOG_NAME if path.is_dir() else path
    lines = [(n, line) for n, line in enumerate(path.read_text().splitlines(), 1) if line.strip()]
    records = []
    for i, (number, line) in enumerate(lines):
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError as exc:
            if i == len(lines) - 1:
                break
            raise ValueError(f"{path}:{number} is not a JSON record: {exc}") from exc
    return records


def ab_start(log_a: list[dict[str, Any]], log_b: list[dict[str, Any]]) -> int:
    """The iteration both arms continued from: past the logs' shared records, the first
    ``fork`` record's iteration or the first ``leg`` record's ``from_iteration``, the earlier
    of the two arms'. An arm with neither after the shared part is the source that kept
    running while the other was copied from its checkpoint (the relay beside its fork): it
    continued from the other's start. ``ValueError`` when the logs share nothing (not arms of
    one state) or neither arm has a fork or leg after the shared part."""
    shared = 0
    while shared < min(len(log_a), len(log_b)) and log_a[shared] == log_b[shared]:
        shared += 1
    if shared == 0:
        raise ValueError("the two logs share no records: not arms copied from one checkpoint")
    starts = []
    for log in (log_a, log_b):
        start = next(
            (
                r["iteration"] if r["type"] == "fork" else r["from_iteration"]
                for r in log[shared:]
                if r.get("type") in ("fork", "leg")
            ),
            None,
        )
        if start is not None:
            starts.append(int(start))
    if not starts:
        raise ValueError("neither arm has trained since the copy (no fork or leg after it)")
    return min(starts)


def _after(log: list[dict[str, Any]], kind: str, start: int) -> dict[int, dict[str, Any]]:
    """The last ``kind`` record of each iteration after ``start``, by iteration."""
    return {r["iteration"]: r for r in log if r.get("type") == kind and r["iteration"] > start}


@dataclass(frozen=True)
class EvalPair:
    """One Kodak-subset evaluation of both arms at ``iteration``: ``(bpp, psnr_rgb, gap_db)``
    of each, of the weight average when the record has one (``averaged``), else of the live
    weights. ``gap_db``: dB below the published curve at that bpp (smaller is better)."""

    iteration: int
    a: tuple[float, float, float]
    b: tuple[float, float, float]
    averaged: bool

    @property
    def difference_db(self) -> float:
        """B's gap minus A's, dB: negative when B is closer to the published curve."""
        return self.b[2] - self.a[2]


def _point(record: dict[str, Any], averaged: bool) -> tuple[float, float, float]:
    r = record["average"] if averaged else record
    return (float(r["bpp"]), float(r["psnr_rgb"]), float(r["published_gap"]["gap_db"]))


def paired_evaluations(
    run_a: str | Path, run_b: str | Path, live: bool = False
) -> tuple[int, list[EvalPair]]:
    """``(start, pairs)``: the A/B's start (:func:`ab_start`) and the evaluations both arms
    logged after it at the same iterations, in order. The weight average is compared where both
    records carry one, unless ``live``."""
    log_a, log_b = read_log(run_a), read_log(run_b)
    start = ab_start(log_a, log_b)
    evals_a, evals_b = _after(log_a, "eval", start), _after(log_b, "eval", start)
    pairs = []
    for iteration in sorted(evals_a.keys() & evals_b.keys()):
        ra, rb = evals_a[iteration], evals_b[iteration]
        averaged = not live and "average" in ra and "average" in rb
        pairs.append(EvalPair(iteration, _point(ra, averaged), _point(rb, averaged), averaged))
    return start, pairs


def markdown_table(pairs: list[EvalPair], label_a: str = "A", label_b: str = "B") -> str:
    """The pairs as a Markdown table: each arm's gap (dB below the published curve; the bpp on
    the first and last rows) and B - A."""
    lines = [
        f"| iterations | {label_a} | {label_b} | difference |",
        "|---|---|---|---|",
    ]

    def cell(point: tuple[float, float, float], edge: bool) -> str:
        return f"{point[2]:.4f} dB" + (f" ({point[0]:.4f} bpp)" if edge else "")

    for i, p in enumerate(pairs):
        edge = i in (0, len(pairs) - 1)
        lines.append(
            f"| {p.iteration:,} | {cell(p.a, edge)} | {cell(p.b, edge)} | "
            f"{p.difference_db:+.4f} dB |"
        )
    return "\n".join(lines)


def arm_settings(run: str | Path) -> str:
    """What an arm trained with lately: its last ``train`` record's mode and rate."""
    last = next((r for r in reversed(read_log(run)) if r.get("type") == "train"), None)
    if last is None:
        return "no training records"
    return f"{last.get('mode', '?')}, lr {last.get('lr', float('nan')):.2g}"
