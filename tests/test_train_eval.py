"""``bench train-eval``: exported weights evaluated on Kodak with real coding, through the real
command line; the shipped file's figures for an image must be those its sidecar recorded."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from plugins.learned.testing import dependencies_missing

pytestmark = pytest.mark.skipif(
    dependencies_missing() is not None, reason=str(dependencies_missing())
)
ROOT = Path(__file__).resolve().parents[1]


def _bench(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "bench", "--no-entry-points", "train-eval", *args],
        cwd=ROOT, capture_output=True, text=True, timeout=600,
    )  # fmt: skip


def test_train_eval_gives_the_sidecars_figures_for_the_shipped_weights():
    from plugins.learned.weights import BUNDLED_DIR, BUNDLED_NAME

    weights = BUNDLED_DIR / f"{BUNDLED_NAME}.safetensors"
    sidecar = json.loads((BUNDLED_DIR / f"{BUNDLED_NAME}.json").read_text())
    recorded = {p["image"]: p for p in sidecar["kodak_eval"]["per_image"]}["kodim23"]
    done = _bench(str(weights), "--images", "kodim23", "--json")
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert result["iterations"] == str(sidecar["iterations"]) and result["images"] == ["kodim23"]
    (image,) = result["per_image"]
    assert image["bytes"] == recorded["bytes"]  # the same bitstream
    assert image["psnr_rgb"] == pytest.approx(recorded["psnr_rgb"], abs=1e-3)
    gap = result["published_gap"]
    assert gap["bpp"] == pytest.approx(8 * recorded["bytes"] / (768 * 512))
    assert gap["gap_db"] == pytest.approx(gap["reference_psnr_rgb"] - result["psnr_rgb"])
    text = _bench(str(weights), "--images", "kodim23")
    assert text.returncode == 0 and "mbt2018-mean" in text.stdout


def test_train_eval_names_a_bad_file_and_exits_3_after_the_good_ones(tmp_path):
    from plugins.learned.weights import BUNDLED_DIR, BUNDLED_NAME

    bogus = tmp_path / "bogus.safetensors"
    bogus.write_bytes(b"\x00" * 64)
    done = _bench(str(bogus), str(BUNDLED_DIR / f"{BUNDLED_NAME}.safetensors"),
                  "--images", "kodim23")  # fmt: skip
    assert done.returncode == 3
    assert f"error: {bogus}" in done.stderr and "Traceback" not in done.stderr
    assert "kodim23" not in done.stderr and "1 images" in done.stdout  # the good file still ran
    missing = _bench(str(BUNDLED_DIR / f"{BUNDLED_NAME}.safetensors"), "--images", "kodim99")
    assert missing.returncode == 3 and "kodim99" in missing.stderr
