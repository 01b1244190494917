"""The Dask executors on real processes: a ``dask scheduler`` and ``dask worker``s started here,
a LocalCluster, and SLURM through dask-jobqueue with a stand-in ``sbatch`` that starts the job
script on this machine. Rows must equal a local run's; lost workers, a killed client, failing
and hanging codecs must cost no row silently."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import BITPLANE, MISBEHAVING, bench_command, resume_and_check

from bench.executors import ExecutorError, check_spec
from bench.runner import RunConfig, parse_codec_requests, run
from bench.store import RunStore

if os.environ.get("BENCH_REQUIRE_DASK"):  # .ci/run: a missing .[dask] extra fails, never skips
    import dask_jobqueue  # noqa: F401
    import distributed
else:
    distributed = pytest.importorskip("distributed", reason="the .[dask] extra is not installed")

DASK = str(Path(sys.executable).with_name("dask"))
BPP = (0.01, 1.0, 4.0, 8.0, 30.0)
METRICS = ("stream_sha256", "bytes", "decodable", "psnr_rgb", "psnr_y", "ms_ssim")


def _start(command: list[str], log: Path) -> subprocess.Popen:
    """A process in a session of its own, so that killing its group kills only what it started."""
    with open(log, "ab") as out:
        return subprocess.Popen(command, stdout=out, stderr=out, start_new_session=True)


def _kill(process: subprocess.Popen) -> None:
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGKILL)
    process.wait()


def _wait_for_workers(address: str, count: int, timeout: float = 60) -> None:
    with distributed.Client(address, timeout=30) as client:
        client.wait_for_workers(count, timeout=timeout)


@pytest.fixture(scope="module")
def scheduler(tmp_path_factory):
    """Address of a real ``dask scheduler`` on 127.0.0.1 with two ``dask worker`` processes."""
    folder = tmp_path_factory.mktemp("dask")
    info = folder / "scheduler.json"
    processes = [
        _start(
            [DASK, "scheduler", "--host", "127.0.0.1", "--port", "0", "--no-dashboard",
             "--scheduler-file", str(info)],
            folder / "scheduler.log",
        )
    ]  # fmt: skip
    try:
        deadline = time.monotonic() + 60
        while not info.exists() and time.monotonic() < deadline:
            time.sleep(0.1)
        address = json.loads(info.read_text())["address"]
        for name in ("w1", "w2"):
            processes.append(_start(_worker_command(address, name), folder / f"{name}.log"))
        _wait_for_workers(address, 2)
        yield address
    finally:
        for process in reversed(processes):
            _kill(process)


def _worker_command(address: str, name: str) -> list[str]:
    return [DASK, "worker", address, "--name", name, "--nthreads", "1", "--no-nanny",
            "--no-dashboard"]  # fmt: skip


def _points(directory: Path) -> dict[tuple, tuple]:
    rows = RunStore(directory).rows()
    keys = [(r["codec"], r["image"], r["target_bpp"]) for r in rows]
    assert len(keys) == len(set(keys)), "duplicate rows"
    return {(r["codec"], r["image"], r["target_bpp"]): tuple(r[m] for m in METRICS) for r in rows}


def _crops_config(dataset: Path, codecs: str, bpp: tuple = BPP, **kwargs) -> RunConfig:
    return RunConfig(
        codecs=tuple(parse_codec_requests(codecs)),
        dataset=str(dataset),
        bpp=bpp,
        plugin_files=(BITPLANE, MISBEHAVING),
        entry_points=False,
        repeats=1,
        **kwargs,
    )


def test_scheduler_address_gives_the_local_runs_hashes_and_psnrs(
    scheduler, crops_dataset, tmp_path
):
    """The issue's example (two built-in codecs, two images of a dataset), measured locally, then
    through ``bench regress --executor dask://`` with the local run as the baseline: the gate
    passes with no changed stream. Kodak crops stand in for full images: equal hashes and PSNRs
    are the same claim at any size."""
    local = run(
        RunConfig(
            codecs=tuple(parse_codec_requests("jpeg2000,spiht")),
            dataset=str(crops_dataset),
            bpp=(0.5, 1.0),
            images=("a", "b"),
            repeats=1,
            entry_points=False,
        ),
        tmp_path / "local",
    )
    assert not local.failures
    port = scheduler.rsplit(":", 1)[1]
    gate = subprocess.run(
        bench_command("regress", "--baseline", str(tmp_path / "local"), "--executor",
                      f"dask://127.0.0.1:{port}", "--out", str(tmp_path / "dask")),
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert gate.returncode == 0, gate.stdout + gate.stderr
    table = (tmp_path / "dask" / "regress.md").read_text()
    for codec in ("jpeg2000", "spiht"):
        line = next(x for x in table.splitlines() if x.startswith(f"| {codec} |"))
        assert "| 0/4 |" in line, line  # changed streams
    points = _points(tmp_path / "dask")
    assert len(points) == 8 and points == _points(tmp_path / "local")

    attempt = json.loads((tmp_path / "dask" / "run.json").read_text())["attempts"][-1]
    executor = attempt["executor"]
    assert executor["executor"] == f"dask://127.0.0.1:{port}"
    assert executor["scheduler"] == scheduler and len(executor["workers"]) == 2
    assert executor["worker_hosts"] and executor["units_ran_on"]
    assert set(executor["units_ran_on"]) <= set(executor["workers"])
    units = RunStore(tmp_path / "dask").units()
    assert len(units) == 4 and {u["worker"] for u in units} == set(executor["units_ran_on"])
    local_attempt = json.loads((tmp_path / "local" / "run.json").read_text())["attempts"][-1]
    assert local_attempt["executor"]["executor"] == "local"


def test_local_cluster_equals_local_and_records_crashes_and_timeouts(
    crops_dataset, small_unit_timeout, tmp_path
):
    # crashy raises on c.png, sleepy hangs on a.png (the local pool's own handling of both is
    # tested in test_runner.py); the timeout, measured on this machine, leaves room for a fresh
    # codec process beside a starting cluster on busy cores
    timeout = 2 * small_unit_timeout
    outcome = run(
        _crops_config(
            crops_dataset, "jpeg2000,crashy,sleepy", jobs=2, timeout=timeout, executor="dask"
        ),
        tmp_path / "dask",
    )
    local = run(_crops_config(crops_dataset, "jpeg2000"), tmp_path / "local")  # one worker
    assert not local.failures
    points = _points(tmp_path / "dask")
    assert len(points) == 3 * len(BPP) + 2 * 2 * len(BPP)
    assert {k: v for k, v in points.items() if k[0] == "jpeg2000"} == _points(tmp_path / "local")
    errors = {(f["codec"], f["image"]): f["error"] for f in outcome.failures}
    assert set(errors) == {("crashy", "c.png"), ("sleepy", "a.png")}
    assert "refuses width 53" in errors["crashy", "c.png"]
    assert f"timed out after {timeout:g} s" in errors["sleepy", "a.png"]
    executor = json.loads((tmp_path / "dask" / "run.json").read_text())["attempts"][-1]["executor"]
    assert executor["executor"] == "dask" and len(executor["workers"]) == 2


def test_killing_a_worker_midrun_reschedules_its_units(scheduler, crops_dataset, tmp_path):
    extra = _start(_worker_command(scheduler, "doomed"), tmp_path / "doomed.log")
    try:
        _wait_for_workers(scheduler, 3)
        command = bench_command(
            "run", "--codecs", "slow[delay=0.3],bitplane", "--dataset", str(crops_dataset),
            "--bpp", ",".join(map(str, BPP)), "--repeats", "1", "--executor",
            f"dask://{scheduler.removeprefix('tcp://')}", "--out", str(tmp_path / "run"),
        )  # fmt: skip
        client_run = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        with distributed.Client(scheduler, timeout=30) as client:
            doomed = next(a for a, w in client.scheduler_info()["workers"].items()
                          if w["name"] == "doomed")  # fmt: skip
            deadline = time.monotonic() + 60
            while not client.processing([doomed])[doomed] and time.monotonic() < deadline:
                time.sleep(0.05)
            held = client.processing([doomed])[doomed]
            assert held, "the doomed worker never got a unit"
            _kill(extra)
            _, stderr = client_run.communicate(timeout=300)
    finally:
        _kill(extra)
    assert client_run.returncode == 0, stderr.decode()
    points = _points(tmp_path / "run")
    assert len(points) == 2 * 3 * len(BPP)  # every unit the dead worker held ran elsewhere
    assert not RunStore(tmp_path / "run").failures()
    units = RunStore(tmp_path / "run").units()
    assert len(units) == 6 and all(u["worker"] != doomed for u in units)


def test_killing_the_client_then_resume_completes_without_duplicates(
    scheduler, crops_dataset, tmp_path
):
    out = tmp_path / "run"
    command = bench_command(
        "run", "--codecs", "slow[delay=0.1],bitplane", "--dataset", str(crops_dataset),
        "--bpp", ",".join(map(str, BPP)), "--repeats", "1", "--executor",
        f"dask://{scheduler.removeprefix('tcp://')}", "--out", str(out),
    )  # fmt: skip
    client_run = subprocess.Popen(
        command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True
    )
    rows_file = out / "rows.jsonl"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if rows_file.exists() and rows_file.read_bytes().count(b"\n") >= len(BPP):
            break
        time.sleep(0.05)
    _kill(client_run)
    before = RunStore(out).rows()
    total = 2 * 3 * len(BPP)
    assert len(BPP) <= len(before) < total, "the kill should land mid-run"
    resume_and_check(command, out, before, total)


def test_slurm_through_dask_jobqueue(crops_dataset, tmp_path):
    """``dask-jobqueue:slurm`` with the standard config; ``sbatch`` runs the job script here."""
    pytest.importorskip("dask_jobqueue")
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "sbatch").write_text(
        "#!/bin/sh\n"  # the job file is deleted once submitted: run a copy, in its own session
        f'cp "$1" "{tmp_path}/job.$$.sh"\n'
        f'setsid sh "{tmp_path}/job.$$.sh" >>"{tmp_path}/job.log" 2>&1 </dev/null &\n'
        f'echo "$!" >>"{tmp_path}/jobs"\n'
        'echo "Submitted batch job $!"\n'
    )
    (bin_dir / "scancel").write_text('#!/bin/sh\nfor j; do kill -9 -- "-$j"; done\nexit 0\n')
    for script in bin_dir.iterdir():
        script.chmod(0o755)
    env = dict(
        os.environ,
        PATH=f"{bin_dir}{os.pathsep}{os.environ['PATH']}",
        DASK_JOBQUEUE__SLURM__CORES="1",
        DASK_JOBQUEUE__SLURM__MEMORY="2GB",
        DASK_JOBQUEUE__SLURM__INTERFACE="lo",
        DASK_JOBQUEUE__SLURM__PYTHON=sys.executable,
    )
    command = bench_command(
        "run", "--codecs", "jpeg2000", "--dataset", str(crops_dataset), "--bpp", "0.5,1",
        "--repeats", "1", "--executor", "dask-jobqueue:slurm", "--jobs", "1",
        "--out", str(tmp_path / "slurm"),
    )  # fmt: skip
    try:
        result = subprocess.run(command, capture_output=True, text=True, timeout=300, env=env)
    finally:
        jobs = tmp_path / "jobs"
        for job in jobs.read_text().split() if jobs.exists() else ():  # any job left running
            with contextlib.suppress(ProcessLookupError):
                os.killpg(int(job), signal.SIGKILL)
    assert result.returncode == 0, result.stderr
    local = run(_crops_config(crops_dataset, "jpeg2000", bpp=(0.5, 1.0)), tmp_path / "local")
    assert not local.failures
    assert _points(tmp_path / "slurm") == _points(tmp_path / "local")
    executor = json.loads((tmp_path / "slurm" / "run.json").read_text())["attempts"][-1]
    assert executor["executor"]["executor"] == "dask-jobqueue:slurm"


def test_a_missing_extra_is_named_and_a_bad_executor_is_a_usage_error(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "distributed", None)
    with pytest.raises(ExecutorError, match=r"pip install -e '\.\[dask\]'"):
        check_spec("dask://127.0.0.1:8786")
    assert check_spec("local") == "local"
    bad = subprocess.run(
        bench_command("run", "--codecs", "jpeg2000", "--executor", "spark", "--out",
                      str(tmp_path / "x")),
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert bad.returncode == 2 and "dask-jobqueue:KIND" in bad.stderr
