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
