"""Provenance: everything needed to trace a result back to what produced it."""

from __future__ import annotations

import importlib.metadata
import os
import platform
import resource
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

#: Packages whose versions go into every run record (missing ones are recorded as absent).
TRACKED_PACKAGES = (
    "bench-progressive",
    "numpy",
    "torch",
    "pillow",
    "pandas",
    "scipy",
    "pytorch-msssim",
    "pluggy",
    "compressai",
    "constriction",
    "pywavelets",
    "numba",
    "pillow-heif",
    "glymur",
)

PROJECT_ROOT = Path(__file__).resolve().parents[1]


def package_versions() -> dict[str, str | None]:
    """Installed version of each tracked package, ``None`` when it is not installed."""
    versions: dict[str, str | None] = {}
    for name in TRACKED_PACKAGES:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = None
    return versions


def git_state(root: Path = PROJECT_ROOT) -> dict[str, str | bool | None]:
    """Commit of the project checkout and whether tracked files differ from it."""

    def git(*args: str) -> str | None:
        try:
            out = subprocess.run(
                ["git", "-C", str(root), *args], capture_output=True, text=True, timeout=10
            )
        except (OSError, subprocess.TimeoutExpired):
            return None
        return out.stdout.strip() if out.returncode == 0 else None

    commit = git("rev-parse", "HEAD")
    status = git("status", "--porcelain", "--untracked-files=no")
    return {"commit": commit, "dirty": bool(status) if status is not None else None}


def cpu_model() -> str:
    """The CPU model name from /proc/cpuinfo where available, else ``platform.processor()``."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def environment() -> dict:
    """Host, interpreter, packages and git state, with a UTC timestamp."""
    return {
        "timestamp": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "cpu": cpu_model(),
        "cpu_count": os.cpu_count(),
        "packages": package_versions(),
        "git": git_state(),
        "argv": sys.argv,
    }


def load_average() -> tuple[float, float, float] | None:
    """The 1-, 5- and 15-minute load averages (runnable and waiting processes, machine-wide);
    ``None`` where the platform has none."""
    try:
        one, five, fifteen = os.getloadavg()
    except (OSError, AttributeError):
        return None
    return round(one, 2), round(five, 2), round(fifteen, 2)


def _cpu_seconds() -> float:
    """User + system CPU seconds of this process and of its children that have ended."""
    own = resource.getrusage(resource.RUSAGE_SELF)
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


class LoadRecorder:
    """The machine's load during a run, for judging its timings.

    Samples the load average when created, whenever :meth:`poll` is called at least
    ``interval_s`` seconds after the previous sample, and in :meth:`finish`; measures the CPU
    seconds this process and its ended children (the local pool's workers, once closed) used
    over the same wall time. :meth:`to_dict` is what a run's attempt records as ``load``.
    """

    def __init__(self, interval_s: float = 30.0) -> None:
        self.interval_s = interval_s
        self._start = time.perf_counter()
        self._cpu_start = _cpu_seconds()
        self.samples: list[list[float]] = []
        self.cpu_s: float | None = None
        self.wall_s: float | None = None
        self._sample()

    def _sample(self) -> None:
        load = load_average()
        if load is not None:
            self.samples.append([round(time.perf_counter() - self._start, 1), *load])

    def poll(self) -> None:
        """Take a sample if ``interval_s`` has passed since the last one."""
        last = self.samples[-1][0] if self.samples else 0.0
        if time.perf_counter() - self._start - last >= self.interval_s:
            self._sample()

    def finish(self) -> dict:
        """Take the last sample and the CPU time; return :meth:`to_dict`."""
        self._sample()
        self.wall_s = time.perf_counter() - self._start
        self.cpu_s = _cpu_seconds() - self._cpu_start
        return self.to_dict()

    def to_dict(self) -> dict:
        """``{"cpu_count", "samples": [[elapsed s, load 1, 5, 15 min], ...], "cpu_s",
        "wall_s"}``; ``cpu_s`` covers bench and its local workers (not remote Dask workers)."""
        return {
            "cpu_count": os.cpu_count(),
            "samples": self.samples,
            "cpu_s": None if self.cpu_s is None else round(self.cpu_s, 2),
            "wall_s": None if self.wall_s is None else round(self.wall_s, 2),
        }


def describe_load(load: dict, jobs: int, executor: str = "local") -> str:
    """One sentence on a recorded :class:`LoadRecorder` dict, for reports."""
    samples = load.get("samples") or []
    parts = []
    if samples:
        ones = [s[1] for s in samples]
        parts.append(
            f"load average (1 min) {ones[0]:.2f} at the start, {max(ones):.2f} at most, "
            f"{ones[-1]:.2f} at the end ({len(samples)} samples) on {load.get('cpu_count')} CPUs"
        )
    cpu, wall = load.get("cpu_s"), load.get("wall_s")
    if cpu is not None and wall and executor == "local":
        parts.append(
            f"bench and its workers used {cpu:.1f} CPU s in {wall:.1f} s of wall time "
            f"({cpu / wall:.2f} CPUs busy on average, for {jobs} worker(s))"
        )
    if not parts:
        return "machine load not recorded"
    return "; ".join(parts)
