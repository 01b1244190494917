"""How the suite is spread over pytest-xdist workers: how many, which scope first, how many threads.

pyproject's addopts run ``-n auto --dist loadscope --no-loadscope-reorder``. A *scope* is
pytest-xdist's unit of work under ``loadscope``: a test class, or the functions of one module
(its module fixtures, such as one Dask cluster or one shared run, are made once). Workers take
scopes in the order of the collection, and this module orders it costliest first (longest
processing time first), by the seconds each scope took in the last whole-suite run, which pytest's
cache keeps (``.pytest_cache``): a long module started last would leave the other worker idle at
the end. A fresh clone has no cache: :data:`COMMITTED_SECONDS` (a whole-suite run's costs, kept
in git) stands in for it, and the cache's own figures override it scope by scope. Scopes in
neither go first. Refresh the committed file after a change of the suite's shape with
``python tests/worker_plan.py`` (it copies the cache's figures).
Each worker, and what it starts, computes with ``cores // workers`` threads (one on 2 cores)
unless the environment sets a thread variable: torch's default, a thread a core in each of 2
workers, would put 4 busy threads on 2 cores.

tests/conftest.py imports these hooks (pytest finds hooks by name there).
"""

from __future__ import annotations

import json
import os
import sys
from collections import defaultdict
from pathlib import Path

import pytest

from bench.worker import THREAD_VARIABLES

#: Workers for a run of whole test directories (the README's command, .ci/run, tox): one per
#: core, at most 2, the machine the suite's measured timeouts are tuned on.
MAX_WORKERS = 2
#: pytest cache key: ``{scope: seconds}`` (setup, call and teardown) from whole-suite runs.
SCOPE_SECONDS = "bench/scope-seconds"
#: The same figures from one whole-suite run, in git, for runs without a cache (a fresh clone).
COMMITTED_SECONDS = Path(__file__).with_name("scope_seconds.json")

_measured: dict[str, float] = defaultdict(float)


def scope_of(nodeid: str) -> str:
    """pytest-xdist's ``loadscope`` unit of a test id: its class, or its module."""
    return nodeid.rsplit("::", 1)[0]


def _is_worker() -> bool:
    return "PYTEST_XDIST_WORKER" in os.environ


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_auto_num_workers(config: pytest.Config) -> int:
    """``-n auto``: :data:`MAX_WORKERS` workers when the command line names no test file or test
    id (the whole suite, or directories), else 0: ``pytest tests/test_x.py -k y`` runs in this
    process (no start-up cost; ``--pdb`` and ``-s`` work). ``$PYTEST_XDIST_AUTO_NUM_WORKERS`` or
    an explicit ``-n N`` decide instead."""
    if os.environ.get("PYTEST_XDIST_AUTO_NUM_WORKERS"):
        return int(os.environ["PYTEST_XDIST_AUTO_NUM_WORKERS"])
    paths = [arg.split("::")[0] for arg in config.args]
    if any(not Path(config.invocation_params.dir, p).is_dir() for p in paths):
        return 0
    return min(MAX_WORKERS, os.cpu_count() or 1)


def pytest_configure(config: pytest.Config) -> None:
    """On the controller of a distributed run, before the workers start: ``cores // workers``
    threads in each (:data:`bench.worker.THREAD_VARIABLES`) when the environment sets none of
    those variables."""
    workers = config.getoption("numprocesses", None)
    if _is_worker() or not workers or any(v in os.environ for v in THREAD_VARIABLES):
        return
    threads = str(max(1, (os.cpu_count() or 1) // workers))
    for variable in THREAD_VARIABLES:
        os.environ[variable] = threads


@pytest.hookimpl(optionalhook=True)
def pytest_configure_node(node) -> None:
    """The controller hands every worker the same scope costs, read once: the workers must
    collect the same order, even if another pytest run rewrites the cache meanwhile."""
    cache = node.config.cache if hasattr(node.config, "cache") else None
    measured = cache.get(SCOPE_SECONDS, {}) if cache else {}
    node.workerinput[SCOPE_SECONDS] = {**_committed_seconds(), **measured}


def _committed_seconds() -> dict[str, float]:
    try:
        return json.loads(COMMITTED_SECONDS.read_text())
    except (OSError, ValueError):
        return {}


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """On a worker: scopes costliest first (unknown ones first), each scope's tests in order."""
    seconds = getattr(config, "workerinput", {}).get(SCOPE_SECONDS)
    if not seconds:
        return
    first: dict[str, int] = {}
    for index, item in enumerate(items):
        first.setdefault(scope_of(item.nodeid), index)

    def key(item: pytest.Item) -> tuple[float, int]:
        scope = scope_of(item.nodeid)
        return -seconds.get(scope, float("inf")), first[scope]

    items.sort(key=key)


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    """On the controller of a distributed run: add up each scope's seconds."""
    if not _is_worker():
        _measured[scope_of(report.nodeid)] += report.duration


def pytest_sessionfinish(session: pytest.Session) -> None:
    """Merge this run's scope seconds into the cache, when the run was distributed (whole
    directories) and selected no tests by name (``-k`` would record a part of a scope as the
    whole; the markers, ``slow`` and ``stress``, mark whole classes or the stress variants)."""
    config = session.config
    cache = config.cache if hasattr(config, "cache") else None
    distributed = config.getoption("numprocesses", None)
    if _is_worker() or cache is None or not distributed or config.getoption("keyword"):
        return
    if _measured:
        cache.set(SCOPE_SECONDS, {**cache.get(SCOPE_SECONDS, {}), **_measured})


if __name__ == "__main__":  # refresh the committed costs from this checkout's pytest cache
    root = Path(__file__).resolve().parent.parent
    cached = root / ".pytest_cache" / "v" / SCOPE_SECONDS
    if not cached.is_file():
        sys.exit(f"no scope costs in {cached}: run the whole suite first (python -m pytest -q)")
    seconds = json.loads(cached.read_text())
    live = {
        k: round(v, 1) for k, v in sorted(seconds.items()) if (root / k.split("::")[0]).exists()
    }
    COMMITTED_SECONDS.write_text(json.dumps(live, indent=1) + "\n")
    print(f"{COMMITTED_SECONDS}: {len(live)} scopes, {sum(live.values()):.0f} s")
