"""The timing loop the speed benchmarks share: calls warmed up once, then timed in interleaved
rounds (each call once per round, so that a change of load touches every call alike) with
``time.perf_counter`` and ``time.process_time``; each figure is the median over the rounds.
The CPU model goes beside the figures (:func:`cpu_model`)."""

from __future__ import annotations

import platform
import statistics
import subprocess
import time
from collections.abc import Callable, Hashable, Iterable, Mapping


def cpu_model() -> str:
    """The CPU's model name as ``lscpu`` gives it (else what :mod:`platform` knows)."""
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        return platform.processor() or "unknown CPU"
    for line in out.splitlines():
        if line.startswith("Model name:"):
            return line.split(":", 1)[1].strip()
    return "unknown CPU"


def warm_up(calls: Iterable[Callable[[], object]]) -> None:
    """Run each call once, untimed (tables, caches, the allocator)."""
    for call in calls:
        call()


def interleaved_medians(
    calls: Mapping[Hashable, Callable[[], object]], repeats: int
) -> dict[Hashable, dict[str, float]]:
    """``repeats`` rounds, each calling every entry of ``calls`` once in the mapping's order;
    per entry, the median over the rounds of its wall time (``"wall"``, seconds), its process
    CPU time (``"cpu"``, seconds) and, where the call returns a mapping (e.g. its own split of
    the time, in seconds), each of its values."""
    runs: dict[Hashable, list[dict[str, float]]] = {key: [] for key in calls}
    for _ in range(repeats):
        for key, call in calls.items():
            start, cpu = time.perf_counter(), time.process_time()
            parts = call()
            wall, cpu = time.perf_counter() - start, time.process_time() - cpu
            extra = parts if isinstance(parts, Mapping) else {}
            runs[key].append({"wall": wall, "cpu": cpu, **extra})
    return {
        key: {name: statistics.median(run[name] for run in rounds) for name in rounds[0]}
        for key, rounds in runs.items()
    }
