"""benchmarks/precision_gradients.py on the shipped weights: one small batch, real gradients."""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

import pytest

pytest.importorskip("torch")

ROOT = Path(__file__).resolve().parents[1]
TRAIN = Path(os.environ.get("BENCH_TRAIN_DATA", ROOT.parent / "shared" / "datasets" / "train"))


def test_precision_gradients_prints_a_row_per_mode(capsys):
    if not TRAIN.is_dir():
        pytest.skip(f"no training photos at {TRAIN}")
    spec = importlib.util.spec_from_file_location(
        "precision_gradients", ROOT / "benchmarks" / "precision_gradients.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    module.main(["--data", str(TRAIN), "--batches", "1", "--batch", "1", "--crop", "64"])
    lines = capsys.readouterr().out.splitlines()
    rows = {line[:26].strip(): line[26:].split() for line in lines[2:]}
    assert set(rows) == {*module.MODES, module.CONTROL}
    for name, cells in rows.items():
        cosines = [float(c) for c in cells[:4]]
        assert all(-1.0 <= c <= 1.0 for c in cosines), name
    # the float32 control only perturbs y by 1e-3: its gradients stay those of float32
    assert min(float(c) for c in rows[module.CONTROL][:4]) > 0.9
