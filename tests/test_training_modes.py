"""Training speed-ups and the relay: precision modes, the schedule, the thread policy, the relay
directory, and the published-curve gap that evaluations and reports state."""

from __future__ import annotations

import json
import math
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from bench.published import MBT2018_MEAN_KODAK  # noqa: E402
from plugins.learned.training import msh as tr  # noqa: E402
from plugins.learned.training import relay  # noqa: E402
from plugins.learned.training.precision import (  # noqa: E402
    TrainMode,
    rd_forward,
    time_step,
    validated_modes,
)
from plugins.learned.training.rd_step import RDStep  # noqa: E402
from plugins.learned.training.run import CHECKPOINT_NAME, LOG_NAME, Run  # noqa: E402
from plugins.learned.training.schedule import CosineSchedule  # noqa: E402
from plugins.learned.training.start import legs_of_weights  # noqa: E402
from plugins.learned.training.threads import (  # noqa: E402
    AdaptiveThreads,
    free_cores,
    thread_policy,
)
from plugins.learned.weights import BUNDLED_NAME  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
TRAIN = Path(os.environ.get("BENCH_TRAIN_DATA", ROOT.parent / "shared" / "datasets" / "train"))
SHIPPED = ROOT / "plugins" / "learned" / "weights"


# ------------------------------------------------------------------ published curve and gap


def test_published_curve_interpolates_on_log_bpp():
    curve = MBT2018_MEAN_KODAK
    for b, p in zip(curve.bpp, curve.psnr_rgb, strict=True):
        assert curve.psnr_at(b) == (pytest.approx(p), False)
    # halfway between q7 and q8 on log(bpp)
    mid = math.sqrt(1.2342 * 1.6191)
    assert curve.psnr_at(mid)[0] == pytest.approx((38.84 + 40.63) / 2)
    # the earlier shipped base (lambda 0.0932, 1.480 bpp / 28.40 dB) was 11.64 dB below the curve
    gap = curve.gap_db(1.480034722222222, 28.400853021440117)
    assert gap.gap_db == pytest.approx(11.64, abs=0.01) and not gap.extrapolated
    assert gap.describe().startswith("11.64 dB below mbt2018-mean")
    beyond = curve.gap_db(2.0, 41.0)
    assert beyond.extrapolated and "extrapolated" in beyond.describe()
    assert beyond.reference_psnr_rgb > 40.63
    with pytest.raises(ValueError):
        curve.psnr_at(0.0)


# ------------------------------------------------------------------ schedule


def test_cosine_schedule_warms_up_then_decays_to_floor():
    s = CosineSchedule(peak=1e-4, floor=1e-5, start=100, end=1100, warmup=100)
    assert s(100) == pytest.approx(1e-6)  # first step of the run: peak / warmup
    assert s(199) == pytest.approx(1e-4)  # end of warm-up
    assert s(650) == pytest.approx(5.5e-5)  # halfway through the decay (200..1100)
    assert s(1100) == pytest.approx(1e-5) and s(5000) == pytest.approx(1e-5)
    rates = [s(i) for i in range(199, 1101)]
    assert all(a >= b for a, b in zip(rates, rates[1:], strict=False))
    with pytest.raises(ValueError):
        CosineSchedule(peak=1e-5, floor=1e-4, start=0, end=10, warmup=0)
    with pytest.raises(ValueError):
        CosineSchedule(peak=1e-4, floor=1e-5, start=10, end=10, warmup=0)


# ------------------------------------------------------------------ threads


def test_free_cores_leaves_room_for_other_load():
    assert free_cores(load=1.0, own_threads=1, cores=2) == 2  # only us: take both
    assert free_cores(load=2.1, own_threads=1, cores=2) == 1  # someone else busy
    assert free_cores(load=9.0, own_threads=2, cores=2) == 1  # never below one
    loads = iter([1.0, 3.0])
    adaptive = AdaptiveThreads(interval=10, cores=2, load=lambda: next(loads))
    assert adaptive.update(10) == 2 and torch.get_num_threads() == 2
    assert adaptive.update(15) == 2  # between intervals nothing is read
    assert adaptive.update(20) == 1 and torch.get_num_threads() == 1


def test_thread_policy_of_the_threads_option():
    """``--threads N`` keeps N threads; ``--threads 0`` adapts (both trainers use this)."""
    fixed = thread_policy(1)
    assert fixed.label == 1 and fixed.update(50) == 1 and torch.get_num_threads() == 1
    adaptive = thread_policy(0)
    assert isinstance(adaptive, AdaptiveThreads) and adaptive.label == "adaptive"
    with pytest.raises(ValueError):
        thread_policy(-1)
    torch.set_num_threads(1)


# ------------------------------------------------------------------ the R-D step


def test_rd_step_trains_counts_and_averages(tmp_path):
    """Two real steps of a small base model: the weights move, the run counts both, the log
    record holds the means of the terms and the schedule's rate; a non-finite loss stops the
    run before the iteration is counted."""
    torch.manual_seed(0)
    model = tr.build_model(8, 8)
    model.train()
    run = Run(tmp_path, "test")
    schedule = CosineSchedule(peak=1e-4, floor=1e-5, start=0, end=10, warmup=2)
    step = RDStep(
        model,
        lambda x: rd_forward(model, x, 0.18, TrainMode()),
        schedule,
        lr=1e-4,
        aux_lr=1e-3,
        clip=1.0,
    )
    x = torch.rand(2, 3, 64, 64)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    first, second = step(run, lambda: x), step(run, lambda: x)
    assert run.iteration == 2 and run.train_seconds > 0
    assert not torch.equal(before["g_a.0.weight"], model.state_dict()["g_a.0.weight"])
    assert {"loss", "mse", "bpp", "aux"} == first.keys() == second.keys()
    record = step.record(run, mode="cpu-fp32")
    assert record["iteration"] == 2 and record["mode"] == "cpu-fp32"
    assert record["loss"] == pytest.approx((first["loss"] + second["loss"]) / 2)
    assert record["lr"] == schedule(1) == step.optimizer.param_groups[0]["lr"]
    assert record["psnr_est"] == pytest.approx(10 * math.log10(1 / record["mse"]))
    assert set(step.state_dict()) == {"model", "optimizer", "aux_optimizer"}
    with pytest.raises(FloatingPointError, match="iteration 3"):
        step(run, lambda: torch.full_like(x, float("nan")))
    assert run.iteration == 2


# ------------------------------------------------------------------ precision modes


def test_mode_labels_round_trip_and_bad_modes_are_refused():
    for label in ("cpu-fp32", "cpu-fp32-cl", "cpu-bf16-cl", "cuda-bf16"):
        assert TrainMode.parse(label).label == label
    for bad in ("cpu", "tpu-fp32", "cpu-fp16", "cpu-bf16-nhwc"):
        with pytest.raises(ValueError):
            TrainMode.parse(bad)


@pytest.fixture(scope="module")
def small_model():
    torch.manual_seed(0)
    model = tr.build_model(16, 24)
    model.train()
    return model


def test_fp32_forward_equals_compressai_forward(small_model):
    """The mode-aware forward is CompressAI's ``forward`` + the R-D loss, bit for bit in fp32."""
    x = torch.rand(2, 3, 64, 64)
    with torch.random.fork_rng():
        torch.manual_seed(1)
        out = small_model(x)
        n = x.shape[0] * x.shape[2] * x.shape[3]
        bpp = sum(torch.log(v).sum() for v in out["likelihoods"].values()) / (-math.log(2) * n)
        mse = torch.mean((out["x_hat"] - x) ** 2)
    with torch.random.fork_rng():
        torch.manual_seed(1)
        terms = rd_forward(small_model, x, 0.18, TrainMode())
    assert torch.equal(terms["bpp"], bpp) and torch.equal(terms["mse"], mse)
    assert torch.equal(terms["loss"], 0.18 * 255.0**2 * mse + bpp)


def test_ste_quantization_decodes_the_coded_latent_with_a_straight_through_gradient(small_model):
    """``ste``: ``g_s`` gets ``mu + round(y - mu)`` (what the coder reconstructs) and passes its
    gradient to ``y`` unchanged; the rate keeps the noisy likelihoods of the ``noise`` proxy."""
    x = torch.rand(2, 3, 64, 64)
    seen = {}
    hooks = [
        small_model.g_a.register_forward_hook(lambda m, i, o: seen.__setitem__("y", o)),
        small_model.h_s.register_forward_hook(lambda m, i, o: seen.__setitem__("params", o)),
        small_model.g_s.register_forward_pre_hook(lambda m, i: seen.__setitem__("y_hat", i[0])),
    ]
    try:
        with torch.random.fork_rng():
            torch.manual_seed(3)
            noise = rd_forward(small_model, x, 0.18, TrainMode())
        with torch.random.fork_rng():
            torch.manual_seed(3)
            ste = rd_forward(small_model, x, 0.18, TrainMode(), quantization="ste")
    finally:
        for h in hooks:
            h.remove()
    y, y_hat = seen["y"], seen["y_hat"]
    means = seen["params"].chunk(2, 1)[1]
    assert torch.equal(ste["bpp"], noise["bpp"])  # same noise draw, same rate term
    assert torch.allclose(y_hat, means + torch.round(y - means), atol=1e-5)
    assert torch.allclose(y_hat - means, torch.round(y_hat - means), atol=1e-5)  # integers
    (grad,) = torch.autograd.grad(y_hat.sum(), y)
    assert torch.allclose(grad, torch.ones_like(grad))
    with pytest.raises(ValueError, match="quantization"):
        rd_forward(small_model, x, 0.18, TrainMode(), quantization="round")
    small_model.zero_grad(set_to_none=True)


def test_quantization_is_part_of_the_objective():
    """A config must name a known quantization; stored configs without one trained with noise;
    a run from the shipped base (``ste``) with ``noise`` notes the change on its first leg."""
    from plugins.learned.training.start import objective_changes

    with pytest.raises(ValueError, match="noise, ste"):
        tr.TrainConfig(quantization="round")
    assert tr.TrainConfig().quantization == "ste"
    assert tr.TrainConfig.from_dict({"lmbda": 0.13}).quantization == "noise"
    shipped = str(SHIPPED / f"{BUNDLED_NAME}.safetensors")
    lmbda = json.loads((SHIPPED / f"{BUNDLED_NAME}.json").read_text())["config"]["lmbda"]
    assert objective_changes(tr.TrainConfig(init=shipped, lmbda=lmbda)) is None  # its own
    changed = tr.TrainConfig(init=shipped, lmbda=lmbda, quantization="noise")
    assert objective_changes(changed) == "quantization ste -> noise from here"


@pytest.mark.parametrize("label", ["cpu-fp32-cl", "cpu-bf16", "cpu-bf16-cl", "cpu-mixed-cl"])
def test_other_modes_agree_with_fp32_and_keep_fp32_outside_transforms(small_model, label):
    """Eval mode (rounding instead of noise: the noise tensor follows the memory format, so
    training-mode outputs of channels_last and contiguous runs differ by their noise draws)."""
    mode = TrainMode.parse(label)
    x = torch.rand(2, 3, 64, 64)
    results = {}
    small_model.eval()
    for m in (TrainMode(), mode):
        m.prepare_model(small_model)
        results[m.label] = rd_forward(small_model, m.prepare_batch(x), 0.18, m)
    TrainMode().prepare_model(small_model)
    small_model.train()
    ref = {k: v.detach() for k, v in results["cpu-fp32"].items()}
    got = results[label]
    for k in ("loss", "mse", "bpp"):
        assert got[k].dtype == torch.float32
    got = {k: v.detach() if k != "loss" else v for k, v in got.items()}
    tol = 1e-4 if mode.precision == "fp32" else 5e-2  # bf16 has an 8-bit mantissa
    assert float(got["bpp"]) == pytest.approx(float(ref["bpp"]), rel=tol)
    assert float(got["mse"]) == pytest.approx(float(ref["mse"]), rel=tol)
    got["loss"].backward()  # gradients reach the fp32 parameters
    assert all(p.grad is None or p.grad.dtype == torch.float32 for p in small_model.parameters())
    small_model.zero_grad(set_to_none=True)


def test_mixed_mode_keeps_the_analysis_transform_in_fp32(small_model):
    """``mixed`` = ``bf16`` except ``g_a``: its output, and so its weight gradients, are those
    of float32, while the other transforms compute in bf16."""
    dtypes: dict[str, torch.dtype] = {}
    hooks = [
        getattr(small_model, name).register_forward_hook(
            lambda _m, _i, out, name=name: dtypes.__setitem__(name, out.dtype)
        )
        for name in ("g_a", "h_a", "h_s", "g_s")
    ]
    x = torch.rand(2, 3, 64, 64)
    try:
        seen = {}
        for label in ("cpu-fp32", "cpu-mixed", "cpu-bf16"):
            rd_forward(small_model, x, 0.18, TrainMode.parse(label))
            seen[label] = dict(dtypes)
    finally:
        for hook in hooks:
            hook.remove()
    assert set(seen["cpu-fp32"].values()) == {torch.float32}
    assert seen["cpu-mixed"] == {
        "g_a": torch.float32, "h_a": torch.bfloat16, "h_s": torch.bfloat16, "g_s": torch.bfloat16
    }  # fmt: skip
    assert set(seen["cpu-bf16"].values()) == {torch.bfloat16}


def test_time_step_leaves_weights_and_rng_untouched(small_model):
    before = {k: v.clone() for k, v in small_model.state_dict().items()}
    x = torch.rand(2, 3, 64, 64)
    rng_before = torch.get_rng_state()
    seconds = time_step(small_model, x, 0.18, TrainMode("cpu", "bf16", True))
    TrainMode().prepare_model(small_model)
    assert seconds > 0
    assert torch.equal(torch.get_rng_state(), rng_before)
    for k, v in small_model.state_dict().items():
        assert torch.equal(v, before[k]), k
    assert all(p.grad is None for p in small_model.parameters())


def test_cuda_mode_is_described_without_a_gpu():
    """What runs on CPU of the CUDA path: its mode, autocast context and device string."""
    mode = TrainMode("cuda", "bf16", False)
    assert mode.label == "cuda-bf16"
    assert mode.autocast().fast_dtype == torch.bfloat16
    if not torch.cuda.is_available():
        with pytest.raises((AssertionError, RuntimeError)):
            mode.prepare_batch(torch.zeros(1, 3, 8, 8))
    # precision auto on a GPU: mixed (bf16 with the analysis transform in float32)
    assert [m.label for m in validated_modes("cuda")] == ["cuda-mixed-cl"]


def test_auto_candidates_follow_each_modes_latest_verdict(tmp_path):
    """A reduced precision is a candidate of ``auto`` while its latest recorded verdict is
    ``pass``: bf16's early pass, withdrawn later, no longer counts; fp32 always does."""
    record = tmp_path / "precision_ab.json"
    fp32 = ["cpu-fp32", "cpu-fp32-cl"]
    assert [m.label for m in validated_modes("cpu", record)] == fp32  # no file: fp32 only
    rows = [
        {"mode": "cpu-bf16-cl", "verdict": "pass"},
        {"mode": "cpu-mixed-cl", "verdict": "fail"},
    ]
    record.write_text(json.dumps({"records": rows}))
    assert [m.label for m in validated_modes("cpu", record)] == [*fp32, "cpu-bf16-cl"]
    rows += [
        {"mode": "cpu-bf16-cl", "verdict": "withdrawn"},
        {"mode": "cpu-mixed-cl", "verdict": "pass"},
    ]
    record.write_text(json.dumps({"records": rows}))
    assert [m.label for m in validated_modes("cpu", record)] == [*fp32, "cpu-mixed-cl"]
    # the project's own record: what the relay's `--precision auto` chooses from
    assert [m.label for m in validated_modes("cpu")] == [*fp32, "cpu-mixed-cl"]


# ------------------------------------------------------------------ relay directory


def test_relay_dir_follows_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("BENCH_TRAIN_DIR", str(tmp_path / "t"))
    assert relay.relay_dir(128, 192, 0.18) == tmp_path / "t" / "msh-n128-m192-l1800"
    monkeypatch.delenv("BENCH_TRAIN_DIR")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "c"))
    assert relay.train_root() == tmp_path / "c" / "bench" / "train"
    assert relay.lambda_tag(0.0932) == "0932"
    with pytest.raises(ValueError):
        relay.lambda_tag(0.00001)


def test_relay_plan(monkeypatch, tmp_path):
    monkeypatch.setenv("BENCH_TRAIN_DIR", str(tmp_path))
    shipped = tmp_path / "base.safetensors"
    with pytest.raises(FileNotFoundError, match="no shipped weights"):
        relay.plan(None, False, None, 8, 8, 0.18, shipped)
    shipped.write_bytes(b"x")
    out, resume, init, what = relay.plan(None, False, None, 8, 8, 0.18, shipped)
    assert (out, resume, init) == (tmp_path / "msh-n8-m8-l1800", False, str(shipped))
    assert "starting from" in what
    with pytest.raises(FileNotFoundError, match="--resume"):
        relay.plan(None, True, None, 8, 8, 0.18, shipped)
    out.mkdir()
    (out / CHECKPOINT_NAME).write_bytes(b"x")
    assert relay.plan(None, False, None, 8, 8, 0.18, shipped)[:3] == (out, True, None)
    explicit = tmp_path / "mine"
    assert relay.plan(explicit, False, None, 8, 8, 0.18, shipped)[:3] == (explicit, False, None)


@pytest.mark.skipif(not (TRAIN / "mcmaster18" / "01.png").is_file(), reason="no training photos")
def test_bench_train_relay_starts_from_shipped_weights_then_continues(
    tmp_path, monkeypatch, capsys
):
    """A real ``bench train`` process on the shipped base starts the relay from the shipped
    file; the next leg continues its checkpoint (through the trainer's ``main``, in this
    process: what passes between legs is the relay directory alone, and a second fresh process
    would add only its start-up); modes and legs are recorded."""
    data = tmp_path / "data"
    data.mkdir()
    shutil.copy(TRAIN / "mcmaster18" / "01.png", data / "01.png")
    sidecar = json.loads((SHIPPED / f"{BUNDLED_NAME}.json").read_text())
    start = int(sidecar["iterations"])
    monkeypatch.setenv("BENCH_TRAIN_DIR", str(tmp_path / "relay"))
    common = ["--data", str(data), "--eval-every", "0", "--threads", "1",
              "--precision", "bf16", "--checkpoint-every", "1"]  # fmt: skip
    proc = subprocess.run(
        [sys.executable, "-m", "bench", "--no-entry-points", "train", "msh",
         "--stop-at", str(start + 1), *common],  # fmt: skip
        capture_output=True, text=True, timeout=900, cwd=ROOT,  # one leg took 300 s at load 11
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert "starting from" in proc.stderr
    run = tmp_path / "relay" / relay.run_name(128, 192, tr.TrainConfig().lmbda)
    stored = tr.load_checkpoint(run)["config"]
    # the restart's own schedule, not the shipped file's (whose planned end may be near)
    assert {k: stored[k] for k in relay.RESTART_SCHEDULE} == relay.RESTART_SCHEDULE
    assert stored["iterations"] > int(sidecar["config"]["planned_iterations"])
    assert tr.main(["--stop-at", str(start + 2), *common]) == 0
    assert "continuing" in capsys.readouterr().err
    state = tr.load_checkpoint(run)
    assert state["iteration"] == start + 2
    shipped_legs = legs_of_weights(SHIPPED / f"{BUNDLED_NAME}.safetensors")
    assert shipped_legs and shipped_legs[-1]["to_iteration"] == start
    legs = state["legs"]
    assert legs[: len(shipped_legs)] == shipped_legs  # the shipped weights' own training
    new = legs[len(shipped_legs) :]
    assert [leg["mode"] for leg in new] == ["cpu-bf16-cl", "cpu-bf16-cl"]
    assert [leg["to_iteration"] for leg in new] == [start + 1, start + 2]
    assert all(leg["iterations_per_second"] > 0 for leg in new)
    log = [json.loads(line) for line in (run / LOG_NAME).read_text().splitlines()]
    assert [r["iteration"] for r in log if r["type"] == "train"] == [start + 1, start + 2]
    assert all(r["mode"] == "cpu-bf16-cl" and r["lr"] > 0 for r in log if r["type"] == "train")


def test_evaluation_states_the_published_gap(small_model):
    img = np.asarray(np.random.default_rng(0).integers(0, 256, (64, 64, 3)), dtype=np.uint8)
    result = tr.evaluate(small_model, {"noise": img})
    gap = result["published_gap"]
    assert gap["curve"] == "mbt2018-mean"
    assert gap["gap_db"] == pytest.approx(
        MBT2018_MEAN_KODAK.psnr_at(result["bpp"])[0] - result["psnr_rgb"]
    )


def test_report_states_the_base_gap_of_learned_codecs(crops_dataset, tmp_path):
    """A real run of the base codec: the codec table gives its weights' export-time Kodak point
    against the published curve, from the sidecar bound to the weights' sha256."""
    from conftest import bench_command

    out = tmp_path / "run"
    done = subprocess.run(
        bench_command("--no-entry-points", "run", "--codecs", "msh,spiht", "--dataset",
                      str(crops_dataset), "--bpp", "1,4", "--repeats", "1", "--out", str(out)),
        capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    report = (out / "report.md").read_text()
    assert "| base vs mbt2018-mean |" in report
    sidecar = json.loads((SHIPPED / f"{BUNDLED_NAME}.json").read_text())["kodak_eval"]
    gap = MBT2018_MEAN_KODAK.gap_db(sidecar["bpp_mean"], sidecar["psnr_rgb_mean"])
    codecs_table = report.split("## Codecs", 1)[1]
    msh_row = next(line for line in codecs_table.splitlines() if line.startswith("| msh |"))
    extra = ", extrapolated" if gap.extrapolated else ""
    assert f"{-gap.gap_db:+.2f} dB at {sidecar['bpp_mean']:.3f} bpp (24 img{extra})" in msh_row
    spiht_row = next(line for line in codecs_table.splitlines() if line.startswith("| spiht |"))
    assert "dB at" not in spiht_row
