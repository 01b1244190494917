"""How the R-D trainers start (plugins/learned/training/start.py) and choose their precision
mode (plugins/learned/training/precision.py), on the shipped HC weights and a real tiny base
model."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")

from plugins.hc.train import CHECKPOINT_FORMAT, HCTrainConfig  # noqa: E402
from plugins.hc.trainable import HCModel  # noqa: E402
from plugins.hc.weights import load_state  # noqa: E402
from plugins.learned.training import msh  # noqa: E402
from plugins.learned.training.data import load_training_images  # noqa: E402
from plugins.learned.training.precision import (  # noqa: E402
    TrainMode,
    choose_mode,
    validated_modes,
)
from plugins.learned.training.run import CheckpointError, Run  # noqa: E402
from plugins.learned.training.start import objective_changes, start_from_weights  # noqa: E402
from plugins.learned.weights.format import build_model  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
HC_WEIGHTS = ROOT / "plugins" / "hc" / "weights" / "hc-n128-m192-l1800-it20000.safetensors"
TRAIN = ROOT.parent / "shared" / "datasets" / "train"


def test_a_run_from_shipped_weights_continues_them_with_exact_constants(tmp_path):
    state, meta = load_state(HC_WEIGHTS)
    assert float(state["gaussian_conditional.likelihood_lower_bound.bound"]) == 0.0  # float16
    wrong = HCTrainConfig(init=str(HC_WEIGHTS), C3=8)
    with pytest.raises(CheckpointError, match="C3=16, C2=4, P=64, not N=128, M=192, C3=8"):
        model = HCModel(wrong.model_config)
        start_from_weights(Run(tmp_path, CHECKPOINT_FORMAT), wrong, model, state, meta, HCModel)
    cfg = HCTrainConfig(init=str(HC_WEIGHTS))
    run = Run(tmp_path, CHECKPOINT_FORMAT)
    model = HCModel(cfg.model_config)
    start_from_weights(run, cfg, model, state, meta, lambda: HCModel(cfg.model_config))
    sidecar = json.loads(HC_WEIGHTS.with_suffix(".json").read_text())
    assert run.iteration == cfg.start_iteration == sidecar["iterations"]
    assert run.legs == sidecar["legs"]
    assert run.train_seconds == pytest.approx(sum(leg["seconds"] for leg in sidecar["legs"]))
    # the shipped HC run used 8 plain crops of 128 px (its config predates scale_min, so 1.0):
    # the new leg says what changed
    assert run.note == "batch 8 -> 2, crop 128 -> 256, scale_min 1.0 -> 0.5 from here"
    leg = run.start_leg("cpu-fp32", "cpu", 1)
    assert leg["note"] == run.legs[-1]["note"] and run.note is None
    assert "note" not in run.start_leg("cpu-fp32", "cpu", 1)
    same = HCTrainConfig(init=str(HC_WEIGHTS), batch=8, crop=128, lmbda=0.18, scale_min=1.0)
    start_from_weights(Run(tmp_path, CHECKPOINT_FORMAT), same, HCModel(same.model_config), state,
                       meta, lambda: HCModel(same.model_config))  # fmt: skip
    assert objective_changes(same) is None
    assert (
        objective_changes(dataclasses.replace(same, lmbda=0.13)) == "lmbda 0.18 -> 0.13 from here"
    )
    bound = dict(model.named_buffers())["gaussian_conditional.likelihood_lower_bound.bound"]
    assert float(bound) == pytest.approx(1e-9)
    loaded = model.state_dict()
    assert all(torch.equal(loaded[k], state[k]) for k in state if k.endswith(".weight"))


def test_precision_auto_takes_the_fastest_timed_mode_or_else_the_last_validated(tmp_path):
    fixed = HCTrainConfig(precision="fp32", channels_last=False)
    assert choose_mode(fixed) == TrainMode("cpu", "fp32", False)
    auto = HCTrainConfig()
    assert choose_mode(auto) == validated_modes("cpu")[-1]
    if not (TRAIN / "mcmaster18" / "01.png").is_file():
        pytest.skip("no training photos")
    images = load_training_images(TRAIN / "mcmaster18", 64, log=lambda _: None)[:2]
    cfg = msh.TrainConfig(N=8, M=8, crop=64, batch=2)
    lines: list[str] = []
    chosen = choose_mode(cfg, msh.mode_timer(cfg, build_model(8, 8), images), lines.append)
    assert len(lines) == 1 and lines[0].startswith("precision auto: ")
    timings = lines[0].removeprefix("precision auto: ").split(" -> ")[0].split(", ")
    timed = {label: float(seconds) for label, seconds, _unit in map(str.split, timings)}
    assert set(timed) == {m.label for m in validated_modes("cpu")}
    assert timed[chosen.label] == min(timed.values())
    assert lines[0].endswith(f"-> {chosen.label}")
