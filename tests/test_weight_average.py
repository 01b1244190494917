"""The moving average of the weights (``--ema-decay``): its arithmetic and the export's choice.
The trainer's use of it (checkpoint, evaluation, export) is tested in ``test_train.py``."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("safetensors")

from plugins.learned.training.ema import CHECKPOINT_KEY, WeightAverage, exported_state  # noqa: E402
from plugins.learned.weights.format import build_model  # noqa: E402


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

    # An evaluation of the average sees the averaged weights and leaves the live ones in place.
    probe = "g_a.0.weight"
    record = avg.evaluated(lambda: {"seen": model.state_dict()[probe].clone()})
    assert record["decay"] == 0.75 and torch.equal(record["seen"], weights[probe])
    assert torch.equal(model.state_dict()[probe], live[probe])

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
