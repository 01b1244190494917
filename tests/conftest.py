"""Shared fixtures: small real datasets made of Kodak crops, and the test plugin files; the hooks
of :mod:`worker_plan` (how the suite is spread over pytest-xdist workers)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from worker_plan import (  # noqa: F401  (hooks: pytest finds them by name in this module)
    pytest_collection_modifyitems,
    pytest_configure,
    pytest_configure_node,
    pytest_runtest_logreport,
    pytest_sessionfinish,
    pytest_xdist_auto_num_workers,
)

from bench.datasets import sha256_file
from bench.images import load_rgb, save_png
from bench.store import RunStore

ROOT = Path(__file__).resolve().parents[1]
KODAK = ROOT / "datasets" / "kodak"
PLUGINS = Path(__file__).parent / "plugins"
BITPLANE = str(PLUGINS / "bitplane_codec.py")
MISBEHAVING = str(PLUGINS / "misbehaving.py")


def bench_command(*args: str) -> list[str]:
    """``python -m bench`` with only the built-ins and the test plugins, then ``args``."""
    prefix = [sys.executable, "-m", "bench", "--no-entry-points"]
    return [*prefix, "--plugin", BITPLANE, "--plugin", MISBEHAVING, *args]


#: name -> (source, top, left, height, width)
CROPS = {
    "a.png": ("kodim01.png", 100, 200, 64, 96),
    "b.png": ("kodim05.png", 50, 300, 48, 40),
    "c.png": ("kodim23.png", 201, 99, 37, 53),
}


def kodak_crop(source: str, top: int, left: int, height: int, width: int) -> np.ndarray:
    """A crop of a bundled Kodak image as (H, W, 3) uint8."""
    image = load_rgb(KODAK / source)
    return np.ascontiguousarray(image[top : top + height, left : left + width])


def write_dataset(folder: Path, name: str = "crops", crops: dict | None = None) -> Path:
    """Write crops as PNGs plus a bundled manifest ``<folder>/<name>.toml``; return its path."""
    images = folder / name
    images.mkdir(parents=True)
    lines = ["[dataset]", f'name = "{name}"', 'description = "Kodak crops"', "bundled = true", ""]
    for file, spec in (crops or CROPS).items():
        save_png(images / file, kodak_crop(*spec))
        path = images / file
        lines += [
            "[[files]]",
            f'name = "{file}"',
            f'sha256 = "{sha256_file(path)}"',
            f"size = {path.stat().st_size}",
            "",
        ]
    manifest = folder / f"{name}.toml"
    manifest.write_text("\n".join(lines))
    return manifest


@pytest.fixture
def crops_dataset(tmp_path: Path) -> Path:
    """Manifest path of a three-image dataset of Kodak crops (64x96, 48x40, 37x53)."""
    return write_dataset(tmp_path / "data")


def resume_and_check(command: list[str], out: Path, before: list[dict], total: int) -> None:
    """Run ``command`` (a ``bench run ... --out DIR`` list) again with ``--resume``; the run must
    complete with ``total`` rows, none twice, the ``before`` rows first and unchanged, in two
    attempts."""
    resumed = subprocess.run(
        [*command[:-2], "--out", str(out), "--resume"], capture_output=True, text=True, timeout=300
    )
    assert resumed.returncode == 0, resumed.stderr
    keys = [(r["codec"], r["image"], r["target_bpp"]) for r in RunStore(out).rows()]
    assert len(keys) == len(set(keys)) == total
    assert keys[: len(before)] == [(r["codec"], r["image"], r["target_bpp"]) for r in before]
    record = json.loads((out / "run.json").read_text())
    assert record["status"] == "complete" and len(record["attempts"]) == 2


@pytest.fixture
def small_unit_timeout(tmp_path: Path) -> float:
    """A per-unit timeout in seconds, measured on this machine just before the test (the load
    changes during a session): twice the wall time of a local run (a fresh worker process, then
    ``sleepy`` on the two crops under 64x64, which it finishes), at least 3 s. ``sleepy`` never
    finishes 64x96 ``a.png``, so a timeout test can tell a hanging unit from a slow start."""
    from bench.runner import RunConfig, parse_codec_requests, run

    folder = tmp_path / "timeout-probe"
    small = {k: v for k, v in CROPS.items() if v[3] * v[4] <= 64 * 64}
    config = RunConfig(
        codecs=tuple(parse_codec_requests("sleepy")),
        dataset=str(write_dataset(folder / "data", crops=small)),
        bpp=(1.0,),
        plugin_files=(BITPLANE, MISBEHAVING),
        entry_points=False,
        repeats=1,
    )
    outcome = run(config, folder / "run")
    assert not outcome.failures and outcome.rows_written == len(small)
    return max(3.0, 2 * outcome.wall_s)
