"""A training run's torch thread count: fixed (``--threads N``) or load-adaptive (``--threads 0``).

A relay run shares the machine with interactive work: it should use every core when the machine
is otherwise idle and leave room when it is not. Every ``interval`` iterations
:class:`AdaptiveThreads` reads the 1-minute load average, subtracts the run's own threads, and
sets ``torch.set_num_threads`` to the cores the rest of the machine leaves free (at least 1).
:func:`thread_policy` picks the policy of a ``--threads`` setting; both have ``update`` (called
before each iteration) and ``label`` (the leg's ``threads``: a number or ``"adaptive"``).
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable


def thread_policy(threads: int) -> FixedThreads | AdaptiveThreads:
    """The policy of ``--threads``: 0 adapts to the machine's load, ``N >= 1`` keeps N threads.
    Also asks torch for one inter-op thread (possible once per process; ignored after)."""
    import torch

    policy = AdaptiveThreads() if threads == 0 else FixedThreads(threads)
    with contextlib.suppress(RuntimeError):  # raises if already set in this process
        torch.set_num_interop_threads(1)
    return policy


class FixedThreads:
    """``threads`` torch threads for the whole run."""

    def __init__(self, threads: int) -> None:
        import torch

        if threads < 1:
            raise ValueError(f"threads must be >= 1 (0: adaptive), got {threads}")
        self.threads = threads
        self.label: int | str = threads
        torch.set_num_threads(threads)

    def update(self, iteration: int) -> int:
        """The thread count (never changes)."""
        return self.threads


def free_cores(load: float, own_threads: int, cores: int) -> int:
    """Cores left to this process: ``cores`` minus the others' load, rounded, at least 1."""
    others = max(0.0, load - own_threads)
    return max(1, min(cores, cores - int(others + 0.5)))


class AdaptiveThreads:
    """Re-chooses the torch thread count from the load average every ``interval`` iterations."""

    def __init__(
        self,
        interval: int = 50,
        cores: int | None = None,
        load: Callable[[], float] = lambda: os.getloadavg()[0],
    ) -> None:
        import torch

        self.interval = interval
        self.cores = cores or len(os.sched_getaffinity(0))
        self._load = load
        self.label: int | str = "adaptive"
        self.threads = max(1, self.cores - 1)
        torch.set_num_threads(self.threads)

    def update(self, iteration: int) -> int:
        """Adjust at multiples of ``interval``; returns the thread count now in force."""
        if iteration % self.interval == 0:
            import torch

            chosen = free_cores(self._load(), self.threads, self.cores)
            if chosen != self.threads:
                self.threads = chosen
                torch.set_num_threads(chosen)
        return self.threads
