"""The prepared GPU leg (``scripts/gpu_leg.sh run``) on this machine's CPU: the same script,
trainer options and export a lent GPU runs, with ``GPU_DEVICE=cpu``, a 3-second time limit,
a tiny batch, one Kodak image, and the project dependencies the device lacks made
unimportable, so that a session with a device spends none of it on a broken script."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("torch")
pytest.importorskip("safetensors")

ROOT = Path(__file__).resolve().parents[1]
TRAIN = Path(os.environ.get("BENCH_TRAIN_DATA", ROOT.parent / "shared" / "datasets" / "train"))
PHOTOS = ["bsds500/test/100007.jpg", "mcmaster18/01.png"]
KODIM23 = ROOT / "datasets" / "kodak" / "kodim23.png"
#: Project dependencies missing from the lent GPU machine's image (its package list of
#: 2026-11) that the leg does not carry as wheels.
NOT_ON_DEVICE = ("platformdirs", "pywt", "pillow_heif", "plotly", "dask", "bjontegaard")


needs_photos = pytest.mark.skipif(
    not all((TRAIN / p).is_file() for p in PHOTOS) or shutil.which("bash") is None,
    reason="training photos or bash not present",
)


def _leg(tmp_path: Path, **settings: str) -> tuple[subprocess.CompletedProcess, Path, Path]:
    """Run ``gpu_leg.sh run`` on the CPU in ``tmp_path`` with two photos, kodim23 alone, a
    3-second time limit, the device's missing packages blocked and ``settings`` on top;
    returns the finished process, ``$OUT`` and the staging folder."""
    data, kodak, out, stage = (tmp_path / n for n in ("data", "kodak", "out", "stage"))
    for folder in (data, kodak, out, stage):
        folder.mkdir(exist_ok=True)
    for p in PHOTOS:
        shutil.copy(TRAIN / p, data / Path(p).name)
    shutil.copy(KODIM23, kodak)
    # the device's Python lacks these project dependencies (and carries no wheel of them):
    # the leg must not import them
    blocker = tmp_path / "blocker"
    blocker.mkdir(exist_ok=True)
    (blocker / "sitecustomize.py").write_text(
        f"import sys\nfor name in {NOT_ON_DEVICE!r}:\n    sys.modules[name] = None\n"
    )
    env = {
        **os.environ, "OUT": str(out), "GPU_STAGE": str(stage), "TRAIN_DATA": str(data),
        "GPU_KODAK": str(kodak), "GPU_DEVICE": "cpu", "GPU_PRECISION": "fp32",
        "GPU_SECONDS": "3", "GPU_BATCH": "1", "GPU_LOADERS": "2", "GPU_THREADS": "1",
        "GPU_EXTRA": "--crop 128", "PYTHON": sys.executable, "TMPDIR": str(tmp_path),
        "PYTHONPATH": os.pathsep.join(filter(None, [str(blocker), os.environ.get("PYTHONPATH")])),
        **settings,
    }  # fmt: skip
    done = subprocess.run(
        ["bash", str(ROOT / "scripts" / "gpu_leg.sh"), "run"],
        env=env, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    return done, out, stage


@needs_photos
def test_gpu_leg_trains_until_its_time_limit_and_exports_float16_weights(tmp_path):
    from plugins.learned.training.msh_config import TrainConfig
    from plugins.learned.weights import BUNDLED_NAME
    from plugins.learned.weights.format import load_weights

    done, out, _ = _leg(tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    assert sorted(p.name for p in out.iterdir()) == [
        "log.jsonl", "msh-gpu.json", "msh-gpu.safetensors"
    ]  # fmt: skip
    shipped = json.loads((ROOT / "plugins/learned/weights" / f"{BUNDLED_NAME}.json").read_text())
    sidecar = json.loads((out / "msh-gpu.json").read_text())
    # it continued the shipped base and stopped on its time limit, not its planned end
    assert sidecar["iterations"] > shipped["iterations"]
    leg = sidecar["legs"][-1]
    assert leg["mode"] == "cpu-fp32-cl" and leg["to_iteration"] == sidecar["iterations"]
    # the GPU leg's objective where it differs from the shipped base's: the relay's lambda
    # (the trainer's default) once it moved past the shipped file's, the leg's batch and crop
    shipped_lmbda, lmbda = shipped["config"]["lmbda"], TrainConfig().lmbda
    moved = [f"lmbda {shipped_lmbda} -> {lmbda}"] if lmbda != shipped_lmbda else []
    assert leg["note"] == ", ".join([*moved, "batch 2 -> 1", "crop 256 -> 128"]) + " from here"
    records = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    assert [r["planned_end"] for r in records if r["type"] == "leg"] == [100_000_000]
    assert sidecar["config"]["lr"] == sidecar["config"]["lr_min"] == 5e-5
    # so that a leg continuing these weights notes no change it did not make
    assert sidecar["config"]["quantization"] == "ste"
    _, meta = load_weights(out / "msh-gpu.safetensors")
    assert int(meta["iterations"]) == sidecar["iterations"]
    kodak_eval = sidecar["kodak_eval"]
    assert kodak_eval["num_images"] == 1 and "gap_db" in kodak_eval["published_gap"]
    # the training folder it made is gone with it
    assert not list(tmp_path.glob("tmp.*"))


@needs_photos
def test_gpu_leg_arms_train_side_by_side_from_the_staged_weights(tmp_path):
    """``GPU_LRS`` with two rates: one arm per rate, each continuing the weights staged in
    ``.gpu/init/`` into its own ``$OUT/lr-<rate>/`` with its console log."""
    from plugins.learned.weights import BUNDLED_DIR, BUNDLED_NAME

    stage = tmp_path / "stage"
    (stage / "init").mkdir(parents=True)
    for suffix in (".safetensors", ".json"):  # staged under another name: found by its suffix
        shutil.copy(BUNDLED_DIR / f"{BUNDLED_NAME}{suffix}", stage / "init" / f"relay{suffix}")
    done, out, _ = _leg(tmp_path, GPU_LRS="2e-5 5e-5")
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "arm lr 2e-5: done" in done.stdout and "arm lr 5e-5: done" in done.stdout
    assert sorted(p.name for p in out.iterdir()) == ["lr-2e-5", "lr-5e-5"]
    start = json.loads((BUNDLED_DIR / f"{BUNDLED_NAME}.json").read_text())["iterations"]
    for rate in (2e-5, 5e-5):
        arm = out / f"lr-{rate:.0e}".replace("e-05", "e-5")
        assert sorted(p.name for p in arm.iterdir()) == [
            "console.log", "log.jsonl", "msh-gpu.json", "msh-gpu.safetensors"
        ]  # fmt: skip
        assert "starting from" in (arm / "console.log").read_text()
        sidecar = json.loads((arm / "msh-gpu.json").read_text())
        assert sidecar["config"]["lr"] == sidecar["config"]["lr_min"] == rate
        assert sidecar["iterations"] > start
        assert sidecar["legs"][-1]["from_iteration"] == start
    assert not list(tmp_path.glob("tmp.*"))


@pytest.mark.skipif(shutil.which("git") is None or shutil.which("bash") is None,
                    reason="git or bash not present")  # fmt: skip
def test_travel_leaves_the_heavy_files_on_a_local_branch_and_home_brings_them_back(tmp_path):
    """``travel`` checks out a local branch whose tree fits the 64 MiB beside the training
    photos (no bundled weights, no results, Kodak's evaluation subset alone); ``home`` returns
    to the branch it left, with every file back, and deletes the travel branch."""
    clone = tmp_path / "clone"
    git = ["git", "-c", "user.name=t", "-c", "user.email=t@localhost"]
    subprocess.run([*git, "clone", "-q", "--local", str(ROOT), str(clone)], check=True)
    shutil.copy(ROOT / "scripts" / "gpu_leg.sh", clone / "scripts" / "gpu_leg.sh")  # this one
    subprocess.run([*git, "commit", "-qam", "the script under test"], cwd=clone, check=False)

    def leg(verb: str) -> subprocess.CompletedProcess:
        return subprocess.run(["bash", "scripts/gpu_leg.sh", verb], cwd=clone,
                              capture_output=True, text=True)  # fmt: skip

    def branch() -> str:
        return subprocess.run(["git", "rev-parse", "--abbrev-ref", "HEAD"], cwd=clone,
                              capture_output=True, text=True).stdout.strip()  # fmt: skip

    home_branch = branch()
    before = sorted(p.name for p in (clone / "datasets" / "kodak").glob("*.png"))
    assert leg("travel").returncode == 0
    assert branch() == "gpu-travel"
    assert sorted(p.name for p in (clone / "datasets" / "kodak").glob("*.png")) == [
        "kodim01.png", "kodim05.png", "kodim15.png", "kodim23.png"
    ]  # fmt: skip
    assert not list(clone.glob("plugins/*/weights/*.safetensors"))
    assert not (clone / "results").exists()
    tracked = subprocess.run(["git", "ls-files", "-z"], cwd=clone, capture_output=True).stdout
    size = sum((clone / f).stat().st_size for f in tracked.decode().split("\0") if f)
    assert size < 16 * 1024 * 1024  # leaves 48 MiB of the 64 for .gpu/
    assert leg("travel").returncode != 0  # already travelling
    done = leg("home")
    assert done.returncode == 0, done.stderr
    assert branch() == home_branch
    assert sorted(p.name for p in (clone / "datasets" / "kodak").glob("*.png")) == before
    assert list(clone.glob("plugins/*/weights/*.safetensors"))
    branches = subprocess.run(["git", "branch"], cwd=clone, capture_output=True, text=True)
    assert "gpu-travel" not in branches.stdout
    assert leg("home").returncode != 0  # nothing to come back from
    (clone / "README.md").write_text("changed")
    assert "commit or stash" in leg("travel").stderr and branch() == home_branch


@needs_photos
@pytest.mark.skipif(shutil.which("git") is None or not (ROOT / ".venv" / "bin" / "python").exists(),
                    reason="git or the project's .venv not present")  # fmt: skip
def test_prepare_after_travel_stages_the_shipped_base_the_tree_left_behind(tmp_path):
    """Without ``GPU_INIT``, ``prepare`` stages the shipped base and its sidecar (byte for byte)
    in ``.gpu/init/`` even on the travel branch, whose tree no longer holds them, so the device
    run never falls back to weights that did not travel; the photos fill what is left of the
    64 MiB. (The wheels are really downloaded: a package registry must be reachable.)"""
    from plugins.learned.weights import BUNDLED_DIR, BUNDLED_NAME

    clone = tmp_path / "clone"
    git = ["git", "-c", "user.name=t", "-c", "user.email=t@localhost"]
    subprocess.run([*git, "clone", "-q", "--local", str(ROOT), str(clone)], check=True)
    shutil.copy(ROOT / "scripts" / "gpu_leg.sh", clone / "scripts" / "gpu_leg.sh")  # this one
    subprocess.run([*git, "commit", "-qam", "the script under test"], cwd=clone, check=False)
    (clone / ".venv").symlink_to(ROOT / ".venv")
    data = tmp_path / "data"
    data.mkdir()
    for p in PHOTOS:
        shutil.copy(TRAIN / p, data / Path(p).name)
    env = {**os.environ, "TRAIN_DATA": str(data)}
    env.pop("GPU_INIT", None)

    def leg(verb: str) -> subprocess.CompletedProcess:
        return subprocess.run(["bash", "scripts/gpu_leg.sh", verb], cwd=clone, env=env,
                              capture_output=True, text=True, timeout=300)  # fmt: skip

    assert leg("travel").returncode == 0
    assert not list(clone.glob("plugins/learned/weights/*.safetensors"))
    done = leg("prepare")
    assert done.returncode == 0, done.stderr
    staged = clone / ".gpu" / "init"
    assert sorted(p.name for p in staged.iterdir()) == [
        f"{BUNDLED_NAME}.json", f"{BUNDLED_NAME}.safetensors"
    ]  # fmt: skip
    for suffix in (".json", ".safetensors"):
        assert (staged / f"{BUNDLED_NAME}{suffix}").read_bytes() == (
            BUNDLED_DIR / f"{BUNDLED_NAME}{suffix}"
        ).read_bytes()
    assert len(list((clone / ".gpu" / "train").iterdir())) == len(PHOTOS)
    assert {w.name.split("-")[0] for w in (clone / ".gpu" / "wheels").glob("*.whl")} == {
        "compressai", "constriction", "pytorch_msssim"
    }  # fmt: skip
    assert "2 training photos" in done.stdout
    assert leg("home").returncode == 0
