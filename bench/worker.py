"""Worker processes: codecs run outside the harness process, so a crash or hang costs one unit.

A *unit* is one (codec, image) pair with the target bpps still to measure. The parent hands units
to workers over pipes; workers send back messages as they go:

* ``("info", label, codec_info_dict)`` once per codec per worker,
* ``("row", row_dict)`` after each target bpp,
* ``("done", unit_summary_dict)`` or ``("failed", failure_dict)`` at the end of the unit.

:class:`WorkerPool` kills a worker whose unit exceeds the timeout, notices a worker that died,
reports either as a failed unit and starts a fresh worker. Thread counts are fixed through the
environment before the worker imports numpy or torch.
"""

from __future__ import annotations

import contextlib
import multiprocessing as mp
import os
import signal
import sys
import time
import traceback
from collections.abc import Iterator
from dataclasses import dataclass, field
from multiprocessing.connection import Connection, wait
from typing import Any

THREAD_VARIABLES = (
    "OMP_NUM_THREADS",
    "MKL_NUM_THREADS",
    "OPENBLAS_NUM_THREADS",
    "NUMEXPR_NUM_THREADS",
    "NUMBA_NUM_THREADS",
)


@dataclass(frozen=True)
class Unit:
    """One (codec, image) pair. ``params`` are the codec factory's keyword arguments.

    ``viewer_run_dir``: the run directory when this image's reconstructions are saved for the
    viewer (:mod:`bench.viewer`), else ``None``.
    """

    label: str
    codec: str
    params: dict[str, Any]
    image: str
    path: str
    targets: tuple[float, ...]
    grid: tuple[float, ...]
    repeats: int
    viewer_run_dir: str | None = None
    data: bytes | None = field(default=None, repr=False)  # the image file's bytes, if sent


def _set_threads(threads: int) -> None:
    """Fix the thread count of numpy's BLAS, numba and torch: the environment variables each
    reads when first imported, and torch's own setting if it is imported already. Importing
    torch here only to set it cost every worker about 2 s of CPU, codecs without torch too."""
    for var in THREAD_VARIABLES:
        os.environ[var] = str(threads)
    torch = sys.modules.get("torch")
    if torch is not None:
        torch.set_num_threads(threads)


def _worker_main(
    conn: Connection, plugin_files: list[str], threads: int, entry_points: bool
) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's to handle
    _set_threads(threads)
    from bench.codec import ProgressiveCodec
    from bench.images import load_rgb
    from bench.measure import (
        TIMING_POLICY,
        UnitTimes,
        measure_ladder,
        measure_progressive,
        warm_up,
    )
    from bench.metrics import load_kernels
    from bench.registry import load_registry
    from bench.viewer import ReconstructionSaver

    load_kernels()
    registry = load_registry(plugin_files, entry_points=entry_points)
    codecs: dict[str, Any] = {}
    while True:
        try:
            message = conn.recv()
        except (EOFError, OSError):  # parent gone: stop
            return
        if message is None:
            return
        unit: Unit = message
        start = time.perf_counter()
        try:
            image = load_rgb(unit.path, unit.data)
            if unit.label not in codecs:
                codec = registry.spec(unit.codec).factory(**unit.params)
                codec.prepare(unit.grid)
                warm_up(codec, image)
                codecs[unit.label] = codec
                conn.send(("info", unit.label, {**codec.info().to_dict(), "kind": codec.kind}))
            codec = codecs[unit.label]
            times = UnitTimes()
            measure = measure_progressive if isinstance(codec, ProgressiveCodec) else measure_ladder
            keep = None
            if unit.viewer_run_dir is not None:
                saving = time.perf_counter()
                keep = ReconstructionSaver(unit.viewer_run_dir, unit.label, unit.image)
                keep.save_original(image)
                times.save_s += time.perf_counter() - saving
            for row in measure(codec, image, unit.targets, unit.repeats, times, keep):
                conn.send(("row", {"codec": unit.label, "image": unit.image, **row}))
            conn.send(
                (
                    "done",
                    {
                        "codec": unit.label,
                        "image": unit.image,
                        "wall_s": time.perf_counter() - start,
                        "codec_s": times.codec_s,
                        "metrics_s": times.metrics_s,
                        "encode_s": times.encode_s,
                        "encode_calls": times.encode_calls,
                        "timing_policy": TIMING_POLICY,
                        "stream_bytes": times.stream_bytes,
                        "save_s": times.save_s,
                        "notes": times.notes,
                    },
                )
            )
        except (BrokenPipeError, EOFError):
            return
        except Exception as exc:
            failure = {
                "codec": unit.label,
                "image": unit.image,
                "error": f"{type(exc).__name__}: {exc}",
                "traceback": traceback.format_exc(),
            }
            try:
                conn.send(("failed", failure))
            except (BrokenPipeError, OSError):
                return


@dataclass
class _Slot:
    process: Any
    conn: Connection
    unit: Unit | None = None
    started: float = 0.0


class WorkerPool:
    """``jobs`` worker processes with a per-unit timeout in seconds."""

    def __init__(
        self,
        jobs: int,
        threads: int,
        plugin_files: list[str],
        timeout: float,
        entry_points: bool = True,
    ) -> None:
        self._ctx = mp.get_context("spawn")
        self._args = (list(plugin_files), threads, entry_points)
        self._timeout = timeout
        self._threads = threads
        self._slots = [self._start() for _ in range(max(1, jobs))]

    def _start(self) -> _Slot:
        saved = {v: os.environ.get(v) for v in THREAD_VARIABLES}
        for var in THREAD_VARIABLES:  # the child reads these before importing numpy/torch
            os.environ[var] = str(self._threads)
        try:
            parent, child = self._ctx.Pipe()
            process = self._ctx.Process(target=_worker_main, args=(child, *self._args), daemon=True)
            process.start()
            child.close()
        finally:
            for var, value in saved.items():
                if value is None:
                    os.environ.pop(var, None)
                else:
                    os.environ[var] = value
        return _Slot(process, parent)

    def _replace(self, slot: _Slot) -> None:
        if slot.process.is_alive():
            slot.process.kill()
        slot.process.join(5)
        slot.conn.close()
        fresh = self._start()
        slot.process, slot.conn, slot.unit = fresh.process, fresh.conn, None

    def run(self, units: list[Unit]) -> Iterator[tuple]:
        """Run all units; yield the workers' messages (and synthetic ``failed`` ones)."""
        pending = list(units)
        while pending or any(s.unit for s in self._slots):
            for slot in self._slots:
                if slot.unit is None and pending:
                    slot.unit, slot.started = pending.pop(0), time.monotonic()
                    slot.conn.send(slot.unit)
            busy = [s for s in self._slots if s.unit]
            ready = wait([s.conn for s in busy] + [s.process.sentinel for s in busy], timeout=1.0)
            now = time.monotonic()
            for slot in busy:
                if slot.conn in ready:
                    try:
                        while slot.conn.poll():
                            message = slot.conn.recv()
                            if message[0] in ("done", "failed"):
                                slot.unit = None
                            yield message
                            if slot.unit is None:
                                break
                    except (EOFError, OSError):
                        pass
                if slot.unit is None:
                    continue
                if not slot.process.is_alive():
                    code = slot.process.exitcode
                    yield ("failed", self._failure(slot.unit, f"worker died (exit code {code})"))
                    self._replace(slot)
                elif now - slot.started > self._timeout:
                    yield (
                        "failed",
                        self._failure(
                            slot.unit, f"timed out after {self._timeout:g} s; worker killed"
                        ),
                    )
                    self._replace(slot)

    @staticmethod
    def _failure(unit: Unit, error: str) -> dict:
        return {"codec": unit.label, "image": unit.image, "error": error, "traceback": ""}

    def close(self) -> None:
        """Stop every worker (politely, then by force)."""
        for slot in self._slots:
            with contextlib.suppress(BrokenPipeError, OSError):
                slot.conn.send(None)
        for slot in self._slots:
            slot.process.join(2)
            if slot.process.is_alive():
                slot.process.kill()
                slot.process.join(2)
            slot.conn.close()

    def __enter__(self) -> WorkerPool:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
