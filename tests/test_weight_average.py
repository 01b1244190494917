"""The moving average of the weights (``--ema-decay``): its arithmetic, its place in the
checkpoint across a stop and resume, the trainer's evaluation of it and the export that ships it.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("safetensors")

from plugins.learned.training import msh as tr  # noqa: E402
from plugins.learned.training.ema import CHECKPOINT_KEY, WeightAverage, exported_state  # noqa: E402
from plugins.learned.training.run import LOG_NAME  # noqa: E402
from plugins.learned.weights.format import build_model  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
TRAIN = Path(os.environ.get("BENCH_TRAIN_DATA", ROOT.parent / "shared" / "datasets" / "train"))
KODAK = ROOT / "datasets" / "kodak"
SOURCES = ["bsds500/test/100007.jpg", "mcmaster18/01.png"]
TINY = dict(N=8, M=8, crop=64, batch=2, log_every=1, checkpoint_every=100, precision="fp32",
            channels_last=False, eval_images=("kodim01",))  # fmt: skip


def _perturb_(model, scale: float, seed: int) -> None:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(scale * torch.randn(p.shape, generator=g))


def test_average_moves_by_the_decay_and_swaps_in_and_out():
    model = build_model(8, 8)
    start = {k: v.clone() for k, v in model.named_parameters()}
    avg = WeightAverage(model, 0.75, since=10)
    _perturb_(model, 0.1, seed=1)
    avg.update()
    weights = avg.weights()
    assert weights.keys() == model.state_dict().keys()
    for name, p in model.named_parameters():
        expected = 0.75 * start[name] + 0.25 * p.detach()
        assert torch.allclose(weights[name], expected, atol=1e-6), name
        assert not torch.equal(weights[name], p.detach()), name
    for name, b in model.named_buffers():
        assert torch.equal(weights[name], b), name  # buffers come from the live model

    live = {k: v.detach().clone() for k, v in model.named_parameters()}
    with avg.swapped_in():
        for name, p in model.named_parameters():
            assert torch.equal(p.detach(), weights[name]), name
    for name, p in model.named_parameters():
        assert torch.equal(p.detach(), live[name]), name

    # A checkpoint's average continues (with the decay given now) instead of restarting.
    again = WeightAverage(model, 0.5, since=99, saved=avg.state())
    assert again.since == 10 and again.decay == 0.5
    for name, a in again.weights().items():
        assert torch.equal(a, weights[name]), name
    broken = avg.state()
    del broken["weights"]["g_a.0.weight"]
    with pytest.raises(KeyError, match="g_a.0.weight"):
        WeightAverage(model, 0.5, since=0, saved=broken)
    for bad in (0.0, 1.0, -0.1):
        with pytest.raises(ValueError, match="decay"):
            WeightAverage(model, bad, since=0)


def test_exported_state_picks_the_average_unless_live():
    state = {"model": {"w": 1}, CHECKPOINT_KEY: {"decay": 0.9, "since": 5, "weights": {"w": 2}}}
    assert exported_state(state) == (
        {"w": 2},
        {"weights": "average", "decay": 0.9, "since_iteration": 5},
    )
    assert exported_state(state, live=True) == ({"w": 1}, {"weights": "live"})
    assert exported_state({"model": {"w": 1}}) == ({"w": 1}, {"weights": "live"})


pytestmark_data = pytest.mark.skipif(
    not all((TRAIN / s).is_file() for s in SOURCES) or not (KODAK / "kodim01.png").is_file(),
    reason="training images or Kodak not present",
)


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("ema-data")
    for s in SOURCES:
        shutil.copy(TRAIN / s, folder / s.replace("/", "_"))
    return folder


@pytestmark_data
def test_trainer_keeps_evaluates_and_exports_the_average(data_dir, tmp_path):
    from safetensors.torch import load_file

    def send_sigterm(iteration, terms):
        if iteration == 2:
            os.kill(os.getpid(), signal.SIGTERM)

    stopped = tmp_path / "stopped"
    tr.train(stopped, data=str(data_dir), kodak=str(KODAK), iterations=4, eval_every=2,
             ema_decay=0.5, on_iteration=send_sigterm, **TINY)  # fmt: skip
    assert tr.load_checkpoint(stopped)["iteration"] == 2
    tr.train(stopped, resume=True, precision="fp32", channels_last=False)
    straight = tmp_path / "straight"
    tr.train(straight, data=str(data_dir), kodak=str(KODAK), iterations=4, eval_every=2,
             ema_decay=0.5, **TINY)  # fmt: skip

    a, b = tr.load_checkpoint(stopped), tr.load_checkpoint(straight)
    assert a[CHECKPOINT_KEY]["since"] == 0 and a[CHECKPOINT_KEY]["decay"] == 0.5
    for k, v in b[CHECKPOINT_KEY]["weights"].items():  # the average survived the stop
        assert torch.equal(a[CHECKPOINT_KEY]["weights"][k], v), k
    assert not torch.equal(a[CHECKPOINT_KEY]["weights"]["g_a.0.weight"], a["model"]["g_a.0.weight"])

    evals = [json.loads(line) for line in (straight / LOG_NAME).read_text().splitlines()]
    evals = [r for r in evals if r["type"] == "eval"]
    assert [e["iteration"] for e in evals] == [2, 4]
    for e in evals:
        assert e["average"]["decay"] == 0.5
        assert e["average"]["bpp"] > 0 and e["average"]["psnr_rgb"] > 0
        assert "gap_db" in e["average"]["published_gap"]
        assert (e["average"]["bpp"], e["average"]["psnr_rgb"]) != (e["bpp"], e["psnr_rgb"])

    shipped = tr.export(straight, tmp_path / "avg.safetensors", kodak=KODAK,
                        kodak_images=["kodim01"])  # fmt: skip
    live = tr.export(straight, tmp_path / "live.safetensors", kodak=KODAK,
                     kodak_images=["kodim01"], live=True)  # fmt: skip
    assert shipped["shipped_weights"] == {"weights": "average", "decay": 0.5, "since_iteration": 0}
    assert live["shipped_weights"] == {"weights": "live"}
    assert shipped["config"]["ema_decay"] == 0.5
    avg_file = load_file(str(tmp_path / "avg.safetensors"))
    live_file = load_file(str(tmp_path / "live.safetensors"))
    name = "g_a.0.weight"
    assert torch.equal(avg_file[name], b[CHECKPOINT_KEY]["weights"][name].to(torch.float16))
    assert torch.equal(live_file[name], b["model"][name].to(torch.float16))

    # Switched on when resuming a run that had none: it starts at that checkpoint's weights.
    plain = tmp_path / "plain"
    tr.train(plain, data=str(data_dir), kodak=str(KODAK), iterations=2, eval_every=0, **TINY)
    tr.train(plain, resume=True, iterations=3, ema_decay=0.9, precision="fp32",
             channels_last=False)  # fmt: skip
    resumed = tr.load_checkpoint(plain)
    assert resumed[CHECKPOINT_KEY]["since"] == 2 and resumed["config"]["ema_decay"] == 0.9
