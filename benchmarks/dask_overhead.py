"""What does running on Dask cost? The same small JPEG 2000 Kodak run, local pool vs LocalCluster.

Both executors get the same units (``jpeg2000`` on the first ``--images`` Kodak images, the
default grid of 20 target bpps, ``--repeats`` timed repeats, ``--jobs`` workers, 1 thread each)
through :func:`bench.executors.open_executor`, exactly as ``bench run --executor local|dask``
hands them out. Figures (wall clock, ``time.perf_counter``):

* **start-up**: opening the executor (the worker pool, or the LocalCluster and its client);
* **first pass**: every unit once, with fresh codec processes (imports, codec warm-up);
* **second pass**: the same units again on the warm processes (codecs loaded in both: the
  local pool keeps its workers, each Dask worker keeps its child process);
* **unit wall s (in child)** and **in-codec s per unit**, means over the second pass: the
  unit's wall time in the codec process and the codec's own encode + decode time within it,
  from the units' summaries (when the pass times differ by more than these, the machine was
  busier during one executor's pass, not Dask slower);
* **Dask overhead per unit**, measured on the second pass from Dask's task stream
  (``distributed.get_task_stream``): the time each task spent beyond the unit's own wall time in
  the child process (handing the unit and its image bytes to the child, collecting the rows),
  plus the idle gaps between consecutive tasks on each worker (scheduling, sending the next task
  and its image), summed and divided by the units; then as a percentage of the in-codec time per
  unit (the goal is under 5 %). The child process runs the same code in both executors, so this
  is what Dask adds. The wall times above are noisy on a shared machine (about 2x); this figure
  is not a difference of them.

Run it as a script, not a test::

    .venv/bin/python benchmarks/dask_overhead.py                       # 4 images, jobs 2
    .venv/bin/python benchmarks/dask_overhead.py --images 8 --repeats 3
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import statistics
import time

from distributed import get_task_stream

from bench import datasets
from bench.executors import open_executor
from bench.grid import DEFAULT_BPP_GRID
from bench.provenance import cpu_model
from bench.worker import Unit


def _units(count: int, repeats: int) -> list[Unit]:
    paths = datasets.verify(datasets.load_manifest("kodak"))[:count]
    grid = tuple(DEFAULT_BPP_GRID)
    return [Unit("jpeg2000", "jpeg2000", {}, p.name, str(p), grid, grid, repeats) for p in paths]


def _measure(executor: str, units: list[Unit], jobs: int) -> dict[str, float]:
    start = time.perf_counter()
    with open_executor(
        executor, jobs=jobs, threads=1, plugin_files=[], timeout=600.0, entry_points=False
    ) as pool:
        times = {"start-up s": time.perf_counter() - start}
        for name in ("first pass s", "second pass s"):
            summaries: list[dict] = []
            streaming = contextlib.nullcontext() if executor == "local" else get_task_stream()
            with streaming as stream:
                begin = time.perf_counter()
                for kind, *payload in pool.run(units):
                    if kind == "failed":
                        raise RuntimeError(f"{executor}: {payload[0]['error']}")
                    if kind == "done":
                        summaries.append(payload[0])
                times[name] = time.perf_counter() - begin
    times["unit wall s (in child)"] = statistics.mean(s["wall_s"] for s in summaries)
    times["in-codec s per unit"] = statistics.mean(s["codec_s"] for s in summaries)
    if stream is not None:
        times["Dask overhead per unit s"] = _overhead(stream.data, summaries)
    return times


def _overhead(tasks: list[dict], summaries: list[dict]) -> float:
    """(time in tasks beyond the units' own wall time + gaps between tasks) / units."""
    by_worker: dict[str, list[tuple[float, float]]] = {}
    for task in tasks:
        for span in task["startstops"]:
            if span["action"] == "compute":
                by_worker.setdefault(task["worker"], []).append((span["start"], span["stop"]))
    in_tasks = sum(stop - start for spans in by_worker.values() for start, stop in spans)
    gaps = sum(
        later[0] - earlier[1]
        for spans in by_worker.values()
        for earlier, later in itertools.pairwise(sorted(spans))
    )
    return (in_tasks - sum(s["wall_s"] for s in summaries) + gaps) / len(summaries)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=4, help="first N Kodak images (4)")
    parser.add_argument("--repeats", type=int, default=1, help="timed repeats per point (1)")
    parser.add_argument("--jobs", type=int, default=2, help="workers of each executor (2)")
    args = parser.parse_args()
    units = _units(args.images, args.repeats)
    results = {name: _measure(name, units, args.jobs) for name in ("local", "dask")}
    print(
        f"CPU: {cpu_model()}; jpeg2000 on {len(units)} Kodak images x {len(DEFAULT_BPP_GRID)} bpp, "
        f"repeats {args.repeats}, jobs {args.jobs}, 1 thread per unit"
    )
    print(f"{'':26}{'local':>10}{'dask':>10}")
    for key in results["local"]:
        print(f"{key:26}{results['local'][key]:10.3f}{results['dask'][key]:10.3f}")
    overhead = results["dask"]["Dask overhead per unit s"]
    in_codec = results["dask"]["in-codec s per unit"]
    print(
        f"Dask overhead per unit: {overhead:.4f} s = {100 * overhead / in_codec:.2f} % of the "
        f"in-codec time per unit ({in_codec:.3f} s); goal under 5 %"
    )


if __name__ == "__main__":
    main()
