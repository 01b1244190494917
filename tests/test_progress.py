"""Progress and load through the real ``bench run`` with output to a pipe (as in a CI log)."""

from __future__ import annotations

import json
import os
import re
import subprocess

from conftest import bench_command

from bench.store import RunStore

BPP = "1,4,8,16,30"  # 5 targets on 3 crops: 15 points in 3 units


def _run(out, *extra: str, interval: str = "0.2") -> subprocess.CompletedProcess:
    env = {**os.environ, "BENCH_PROGRESS_INTERVAL": interval}
    return subprocess.run(
        bench_command(
            "run", "--codecs", "slow[delay=0.1]", "--dataset", str(out.parent / "crops.toml"),
            "--bpp", BPP, "--repeats", "1", "--out", str(out), *extra,
        ),
        capture_output=True, text=True, timeout=300, env=env,
    )  # fmt: skip


def test_plain_progress_lines_load_and_resume(crops_dataset):
    out = crops_dataset.parent / "run"
    done = _run(out)
    assert done.returncode == 0, done.stderr
    log = done.stderr
    assert "measuring 15 points in 3 units; a progress line every 0.2 s" in log
    lines = re.findall(r"^progress: (\d+)/15 points \(\d+ %\), (\d)/3 units, 0 failed, "
                       r"elapsed \d:\d\d:\d\d, eta (\S+)$", log, re.MULTILINE)  # fmt: skip
    assert lines, log  # 15 points at >= 0.1 s each: several lines at 0.2 s intervals
    assert [int(n) for n, _, _ in lines] == sorted(int(n) for n, _, _ in lines)
    assert re.search(r"^done: 15/15 points \(100 %\), 3/3 units, 0 failed, elapsed "
                     r"\d:\d\d:\d\d, eta 0:00:00$", log, re.MULTILINE), log  # fmt: skip
    assert "━" not in log  # no bar in a log
    # the machine load is in run.json and beside the time table
    (attempt,) = json.loads((out / "run.json").read_text())["attempts"]
    load = attempt["load"]
    assert load["cpu_count"] == os.cpu_count() and len(load["samples"]) >= 2
    assert all(len(s) == 4 and s[0] >= 0 for s in load["samples"])
    assert load["cpu_s"] > 0 and load["wall_s"] > 0
    report = (out / "report.md").read_text()
    assert "| unit wall s (sum) | in codec s (sum) |" in report
    assert "| encode s (median per image) | decode s (median per point) |" in report
    assert "Machine load during the run: load average (1 min)" in report
    assert "CPU s in" in report
    page = (out / "report.html").read_text()
    assert "Machine load during the run: load average (1 min)" in page
    assert "<th>unit wall s (sum)</th>" in page

    # cut the run back to its first 7 rows (a.png's 5, b.png's first 2), then resume it
    rows = (out / "rows.jsonl").read_text().splitlines(keepends=True)
    (out / "rows.jsonl").write_text("".join(rows[:7]))
    resumed = _run(out, "--resume")
    assert resumed.returncode == 0, resumed.stderr
    assert (
        "resuming: 7 of 15 points already measured (1 of 3 units complete); 8 to go"
        in resumed.stderr
    )
    assert "measuring 8 points in 2 units" in resumed.stderr
    assert re.search(r"^done: 15/15 points \(100 %\), 3/3 units", resumed.stderr, re.MULTILINE)
    assert len(RunStore(out).rows()) == 15
    report = (out / "report.md").read_text()
    assert "Machine load in attempt 1:" in report and "Machine load in attempt 2:" in report


def test_a_bad_progress_interval_is_refused_before_the_run(crops_dataset):
    out = crops_dataset.parent / "run"
    done = _run(out, interval="soon")
    assert done.returncode != 0
    assert "$BENCH_PROGRESS_INTERVAL must be a number of seconds, not 'soon'" in done.stderr
    assert not (out / "rows.jsonl").exists()


def test_on_a_terminal_the_bar_starts_from_the_stored_points():
    """--resume on a terminal: the bar counts the stored points first (it started at 0)."""
    import io

    from rich.console import Console

    from bench.progress import RunProgress

    screen = io.StringIO()
    console = Console(file=screen, force_terminal=True, width=120)
    with RunProgress(
        console, points_total=15, points_done=7, units_total=3, units_done=1, interval_s=60
    ) as progress:
        progress.point("slow a.png 1 bpp")
        progress.point("slow a.png 4 bpp")
    text = screen.getvalue()
    assert "resuming: 7 of 15 points already measured (1 of 3 units complete); 8 to go" in text
    assert "9/15" in text and "0/15" not in text
