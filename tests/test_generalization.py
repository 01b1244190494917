"""benchmarks/generalization.py on the shipped weights: real coding of training crops and Kodak."""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("torch")

ROOT = Path(__file__).resolve().parents[1]
TRAIN = Path(os.environ.get("BENCH_TRAIN_DATA", ROOT.parent / "shared" / "datasets" / "train"))


def _module():
    spec = importlib.util.spec_from_file_location(
        "generalization", ROOT / "benchmarks" / "generalization.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_crops_are_seeded_and_the_loss_is_the_training_objective(capsys):
    if not TRAIN.is_dir():
        pytest.skip(f"no training photos at {TRAIN}")
    module = _module()
    from plugins.learned.weights.format import load_weights
    from plugins.learned.weights.specs import BUNDLED_NAME, find_bundled

    weights = find_bundled(BUNDLED_NAME)
    if weights is None:
        pytest.skip("shipped weights absent")
    a, b = module.training_crops(TRAIN, 2, 3), module.training_crops(TRAIN, 2, 3)
    assert all(np.array_equal(x, y) for x, y in zip(a, b, strict=True))
    assert a[0].shape == (module.CROP, module.CROP, 3) and a[0].dtype == np.uint8

    model, meta = load_weights(weights)
    bpp, psnr, loss = module.rd_point(model, a[:1], 0.11)
    mse = 10 ** (-psnr / 10)  # PSNR-RGB of one image: MSE in [0, 1] units
    assert 0.1 < bpp < 8 and 20 < psnr < 60
    assert loss == pytest.approx(0.11 * 255**2 * mse + bpp, rel=1e-6)

    module.main([str(weights), "--crops", "2", "--images", "23", "--data", str(TRAIN)])
    rows = [line.split() for line in capsys.readouterr().out.splitlines()[2:]]
    assert [r[1] for r in rows] == ["train", "kodak"]
    assert all(r[0] == meta["iterations"] for r in rows)
