"""Executors: where a run's (codec, image) units are measured.

``--executor`` takes one of:

* ``local`` (default): :class:`bench.worker.WorkerPool`, ``--jobs`` worker processes here;
* ``dask``: a :class:`distributed.LocalCluster` started here with ``--jobs`` worker processes;
* ``dask://HOST:PORT``: an existing Dask scheduler (``dask://tls://...`` for another protocol);
* ``dask-jobqueue:KIND`` (``slurm``, ``pbs``, ``sge``, ``lsf``, ``htcondor``, ``moab``, ``oar``):
  ``dask_jobqueue.<KIND>Cluster()`` built from the standard dask-jobqueue configuration
  (``~/.config/dask/jobqueue.yaml``, section ``jobqueue.<kind>``), scaled to ``--jobs`` workers.

Every executor yields the messages of :mod:`bench.worker` (``info``, ``row``, ``done``,
``failed``), so the runner stores the same files whatever runs the units.

On Dask each unit is one task. The task hands the unit to a child process of the Dask worker
(one child per worker thread, kept for the worker's life so codecs warm up once) that runs
exactly the code of the local pool (:func:`bench.worker._worker_main`). The child is started with
``OMP_NUM_THREADS`` and the other thread variables set to ``--threads`` before it imports numpy
or torch, whatever the Dask worker's own settings, so every unit runs with the run's fixed thread
count; a codec that crashes or exceeds ``--timeout`` kills only that child (the unit is recorded
as failed and a fresh child takes its place), never the Dask worker. A unit whose Dask worker is
lost is rescheduled by Dask on another worker; after ``distributed.scheduler.allowed-failures``
losses it is recorded as failed (``lost worker``). Rows reach the client when their unit finishes.

Images travel **by bytes** inside each task (the files the client verified against the manifest,
so workers need neither the dataset nor a shared filesystem, and a lost worker loses no data).
Codecs and their weights travel **by name**: each worker loads them from its own installation of
bench and its plugins (weights are large and installed once per machine; their sha256, computed
on the worker, lands in ``codecs.json``). ``--plugin`` files are loaded by path on the workers.
"""

from __future__ import annotations

import contextlib
import importlib
import json
import logging
import os
import socket
import subprocess
import sys
import threading
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, replace
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any, Protocol

from bench.provenance import cpu_model, package_versions
from bench.worker import THREAD_VARIABLES, Unit, WorkerPool, _Slot, _worker_main

#: dask-jobqueue cluster class of each ``dask-jobqueue:KIND``.
JOBQUEUE_CLUSTERS = {
    "slurm": "SLURMCluster",
    "pbs": "PBSCluster",
    "sge": "SGECluster",
    "lsf": "LSFCluster",
    "htcondor": "HTCondorCluster",
    "moab": "MoabCluster",
    "oar": "OARCluster",
}

EXTRA_HINT = "install the optional extra: pip install -e '.[dask]' (or 'bench-progressive[dask]')"


class ExecutorError(Exception):
    """An executor cannot be used as asked; the message says why and what to do."""


class Executor(Protocol):
    """Runs units and yields :mod:`bench.worker` messages; a context manager that cleans up."""

    def run(self, units: list[Unit]) -> Iterator[tuple]: ...

    def describe(self) -> dict[str, Any]:
        """Provenance: the executor, and for Dask the scheduler address and worker hosts."""
        ...

    def __enter__(self) -> Executor: ...

    def __exit__(self, *exc: object) -> None: ...


def check_spec(spec: str, *, imports: bool = True) -> str:
    """Return ``spec`` if it is a valid ``--executor`` value, else raise :class:`ExecutorError`.

    ``imports``: also import the optional packages it needs (the error then names the extra).
    """
    jobqueue = spec.startswith("dask-jobqueue:")
    valid = spec in ("local", "dask") or (spec.startswith("dask://") and len(spec) > 7)
    if not (valid or (jobqueue and spec.removeprefix("dask-jobqueue:") in JOBQUEUE_CLUSTERS)):
        raise ExecutorError(
            f"--executor {spec!r}: use local, dask, dask://HOST:PORT or dask-jobqueue:KIND "
            f"(KIND: {', '.join(JOBQUEUE_CLUSTERS)})"
        )
    if imports and spec != "local":
        _require("distributed", spec)
    if imports and jobqueue:
        _require("dask_jobqueue", spec)
    return spec


def open_executor(
    spec: str,
    *,
    jobs: int,
    threads: int,
    plugin_files: list[str],
    timeout: float,
    entry_points: bool,
) -> Executor:
    """Start the executor ``spec`` (see the module docstring); Dask is imported for it only."""
    check_spec(spec)
    if spec == "local":
        return LocalExecutor(jobs, threads, list(plugin_files), timeout, entry_points)
    return DaskExecutor(
        spec, jobs, ChildSettings(tuple(plugin_files), threads, timeout, entry_points)
    )


class LocalExecutor(WorkerPool):
    """The local worker pool (:class:`bench.worker.WorkerPool`)."""

    def describe(self) -> dict[str, Any]:
        return {"executor": "local", "worker_hosts": [socket.gethostname()]}


def _require(module: str, spec: str) -> Any:
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise ExecutorError(f"--executor {spec} needs {module} ({exc}): {EXTRA_HINT}") from None


@dataclass(frozen=True)
class ChildSettings:
    """What a Dask worker's child processes run with (the local pool's settings)."""

    plugin_files: tuple[str, ...]
    threads: int
    timeout: float
    entry_points: bool


class DaskExecutor:
    """Units as Dask tasks on a LocalCluster, an existing scheduler or a dask-jobqueue cluster.

    At most a window of units (twice the cluster's threads, at least 8) is submitted at once, so
    the scheduler never holds the image bytes of a whole large dataset.
    """

    def __init__(self, spec: str, jobs: int, settings: ChildSettings) -> None:
        distributed = _require("distributed", spec)
        self._spec, self._settings, self._distributed = spec, settings, distributed
        self._cluster: Any = None
        self._client: Any = None
        try:
            if spec == "dask":
                self._cluster = distributed.LocalCluster(
                    n_workers=jobs,
                    threads_per_worker=1,
                    processes=True,
                    dashboard_address=":0",  # a free port, never a clash
                    memory_limit=0,  # as locally: no memory cap on the codec processes
                    silence_logs=logging.ERROR,
                )
            elif spec.startswith("dask-jobqueue:"):
                jobqueue = _require("dask_jobqueue", spec)
                kind = spec.removeprefix("dask-jobqueue:")
                self._cluster = getattr(jobqueue, JOBQUEUE_CLUSTERS[kind])()
                self._cluster.scale(jobs)
            address = self._cluster or _address(spec)
            self._client = distributed.Client(address, timeout=30)
        except ExecutorError:
            raise
        except Exception as exc:
            self.close()
            raise ExecutorError(f"--executor {spec}: cannot start or reach Dask: {exc}") from exc
        self._used: set[str] = set()

    def run(self, units: list[Unit]) -> Iterator[tuple]:
        """Submit the units and yield their messages as each unit finishes."""
        pending = list(units)
        running = self._distributed.as_completed()
        owners: dict[str, Unit] = {}

        def submit() -> None:
            window = max(8, 2 * sum(self._client.nthreads().values()))
            while pending and running.count() < window:
                unit = pending.pop(0)
                future = self._client.submit(
                    run_unit,
                    unit,
                    Path(unit.path).read_bytes(),
                    self._settings,
                    key=f"bench-unit-{uuid.uuid4().hex}",
                    pure=False,
                )
                owners[future.key] = unit
                running.add(future)

        submit()
        for future in running:
            unit = owners.pop(future.key)
            try:
                worker, messages = future.result()
            except self._distributed.KilledWorker as exc:
                yield ("failed", _failure(unit, f"lost worker: {exc}"))
            except Exception as exc:
                yield ("failed", _failure(unit, f"dask task failed: {type(exc).__name__}: {exc}"))
            else:
                self._used.add(worker)
                yield from messages
            future.release()
            submit()

    def describe(self) -> dict[str, Any]:
        record: dict[str, Any] = {
            "executor": self._spec,
            "scheduler": self._client.scheduler.address,
            "distributed": self._distributed.__version__,
            "units_ran_on": sorted(self._used),
        }
        try:
            facts = self._client.run(worker_facts, on_error="ignore")
        except Exception as exc:  # a worker leaving during the call
            facts, record["workers_error"] = {}, str(exc)
        record["workers"] = {addr: f for addr, f in sorted(facts.items()) if isinstance(f, dict)}
        record["worker_hosts"] = sorted({f["host"] for f in record["workers"].values()})
        return record

    def close(self) -> None:
        """Stop this run's child processes on the workers, then the client and any cluster."""
        if self._client is not None:
            with contextlib.suppress(Exception):
                self._client.run(release_children, on_error="ignore")
            self._client.close()
        if self._cluster is not None:
            self._cluster.close()

    def __enter__(self) -> DaskExecutor:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _address(spec: str) -> str:
    address = spec.removeprefix("dask://")
    return address if "://" in address else f"tcp://{address}"


def _failure(unit: Unit, error: str) -> dict:
    return {"codec": unit.label, "image": unit.image, "error": error, "traceback": ""}


# --- on the Dask workers ------------------------------------------------------------------------

_IDLE: list[tuple[ChildSettings, WorkerPool]] = []
_IDLE_LOCK = threading.Lock()


def run_unit(unit: Unit, data: bytes, settings: ChildSettings) -> tuple[str, list[tuple]]:
    """The Dask task: measure ``unit`` on image ``data`` in a child process of this worker.

    Returns the worker's address and the unit's messages; each ``done`` summary gains ``worker``.
    """
    from distributed import get_worker

    address = get_worker().address
    with _IDLE_LOCK:
        match = next((i for i, (s, _) in enumerate(_IDLE) if s == settings), None)
        pool = _IDLE.pop(match)[1] if match is not None else None
    pool = pool or ChildPool(
        1, settings.threads, list(settings.plugin_files), settings.timeout, settings.entry_points
    )
    try:
        messages = list(pool.run([replace(unit, data=data)]))
    except BaseException:
        pool.close()
        raise
    with _IDLE_LOCK:
        _IDLE.append((settings, pool))
    for kind, *payload in messages:
        if kind == "done":
            payload[0]["worker"] = address
    return address, messages


def release_children() -> int:
    """Close this worker's idle child processes (run on every worker at the end of a run)."""
    with _IDLE_LOCK:
        pools = [pool for _, pool in _IDLE]
        _IDLE.clear()
    for pool in pools:
        pool.close()
    return len(pools)


def worker_facts() -> dict[str, Any]:
    """Host, CPU, Python and tracked package versions of the worker this runs on."""
    return {
        "host": socket.gethostname(),
        "cpu": cpu_model(),
        "cpu_count": os.cpu_count(),
        "python": sys.version.split()[0],
        "packages": package_versions(),
    }


class _ChildProcess:
    """The part of ``multiprocessing.Process`` that :class:`WorkerPool` uses, over ``Popen``.

    Dask's nanny runs workers as daemonic processes, which ``multiprocessing`` forbids to have
    children; a plain subprocess has no such limit. ``sentinel`` becomes readable when the child
    exits, as in ``multiprocessing``: it is the read end of a pipe whose write end only the child
    holds.
    """

    def __init__(self, popen: subprocess.Popen, sentinel: int) -> None:
        self._popen, self.sentinel = popen, sentinel

    def is_alive(self) -> bool:
        return self._popen.poll() is None

    @property
    def exitcode(self) -> int | None:
        return self._popen.poll()

    def kill(self) -> None:
        self._popen.kill()

    def join(self, timeout: float | None = None) -> None:
        with contextlib.suppress(subprocess.TimeoutExpired):
            self._popen.wait(timeout)
        if self._popen.returncode is not None and self.sentinel >= 0:
            os.close(self.sentinel)
            self.sentinel = -1


class ChildPool(WorkerPool):
    """A :class:`WorkerPool` whose workers are subprocesses (usable inside a Dask worker)."""

    def _start(self) -> _Slot:
        import dask

        plugin_files, threads, entry_points = self._args
        parent, child = socket.socketpair()
        sentinel, alive = os.pipe()
        env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in sys.path if p))
        # Dask's nanny sets these for its worker, not for codecs: its MALLOC_TRIM_THRESHOLD_
        # (65536) made the metrics 2.5x slower in the child (PSNR and MS-SSIM on Kodak)
        for var in dask.config.get("distributed.nanny.pre-spawn-environ", {}):
            env.pop(var, None)
        env.update({var: str(threads) for var in THREAD_VARIABLES})
        argv = json.dumps([child.fileno(), plugin_files, threads, entry_points])
        code = "import sys; from bench.executors import child_main; child_main(sys.argv[1])"
        try:
            popen = subprocess.Popen(
                [sys.executable, "-c", code, argv], pass_fds=(child.fileno(), alive), env=env
            )
        finally:
            child.close()
            os.close(alive)
        return _Slot(_ChildProcess(popen, sentinel), Connection(parent.detach()))


def child_main(argv: str) -> None:
    """Entry point of a :class:`ChildPool` worker: the local pool's worker loop on a socket."""
    fd, plugin_files, threads, entry_points = json.loads(argv)
    _worker_main(Connection(fd), plugin_files, threads, entry_points)
