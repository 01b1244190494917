"""The learning-rate schedule: linear warm-up, then cosine decay to a floor at the planned end.

The rate is a pure function of the iteration and the run's config, so a resumed run continues
the schedule exactly (nothing but the config needs saving).
"""

from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass(frozen=True)
class CosineSchedule:
    """``peak`` after ``warmup`` iterations from ``start``, ``floor`` at ``end``.

    ``start`` is the iteration the run (or its ``--init`` continuation) began at, ``end`` the
    planned last iteration. Warm-up ramps linearly from ``peak / warmup``; after ``end`` the rate
    stays at ``floor``.
    """

    peak: float
    floor: float
    start: int
    end: int
    warmup: int

    @classmethod
    def of(cls, cfg) -> CosineSchedule:
        """The schedule of a :class:`~plugins.learned.training.msh_config.TrainConfig` (or a
        subclass): ``lr`` to ``lr_min`` from ``start_iteration`` to ``iterations``."""
        return cls(
            peak=cfg.lr,
            floor=cfg.lr_min,
            start=cfg.start_iteration,
            end=max(cfg.iterations, cfg.start_iteration + 1),
            warmup=cfg.warmup,
        )

    def __post_init__(self) -> None:
        if not 0 <= self.floor <= self.peak:
            raise ValueError(f"need 0 <= lr_min <= lr, got {self.floor} and {self.peak}")
        if self.end <= self.start:
            raise ValueError(f"planned end {self.end} must follow the start {self.start}")
        if self.warmup < 0:
            raise ValueError(f"warm-up must be >= 0 iterations, got {self.warmup}")

    def __call__(self, iteration: int) -> float:
        """Learning rate for the step that produces iteration ``iteration + 1``."""
        done = iteration - self.start
        if done < self.warmup:
            return self.peak * (done + 1) / self.warmup
        span = self.end - self.start - self.warmup
        progress = min(1.0, (done - self.warmup) / span) if span > 0 else 1.0
        return self.floor + 0.5 * (self.peak - self.floor) * (1.0 + math.cos(math.pi * progress))


def continued_from_weights(sidecar: dict) -> dict[str, float | int]:
    """Schedule options that carry an exported run on where it stopped (for ``--init``).

    ``sidecar`` is a weights sidecar (``iterations`` and the run's ``config``: ``lr``, ``lr_min``,
    ``warmup``, ``planned_iterations``, ``ema_decay``, ``start_iteration`` or 0). Returns
    ``iterations`` (the same planned end), ``lr`` (the rate its schedule had reached at
    ``iterations``: the new run's peak after its warm-up), ``lr_min`` and ``ema_decay``, or
    ``{}`` when the sidecar lacks them or the planned end is already reached.
    """
    cfg = sidecar.get("config") or {}
    keys = ("lr", "lr_min", "warmup", "planned_iterations")
    iteration = int(sidecar.get("iterations", 0))
    if any(k not in cfg for k in keys) or int(cfg["planned_iterations"]) <= iteration:
        return {}
    stored = CosineSchedule(
        peak=float(cfg["lr"]),
        floor=float(cfg["lr_min"]),
        start=int(cfg.get("start_iteration", 0)),
        end=int(cfg["planned_iterations"]),
        warmup=int(cfg["warmup"]),
    )
    rate = stored(iteration)
    return {
        "iterations": int(cfg["planned_iterations"]),
        "lr": rate,
        "lr_min": min(stored.floor, rate),
        "ema_decay": float(cfg.get("ema_decay", 0.0)),
    }
