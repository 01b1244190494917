"""HC (plugins/hc): the model's shapes and likelihoods, residual quantisation, the progressive
stream by depth (conditional-mean decoding of latents not received), the trainer's resume and
export, the FLOPs count, and the conformance suite on the shipped weights."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from bench.testing import ConformanceSuite
from plugins.hc.weights import BUNDLED_DIR, BUNDLED_NAME, DEFAULT_WEIGHTS
from plugins.learned.testing import dependencies_missing

ROOT = Path(__file__).resolve().parents[1]
MISSING = dependencies_missing()
SHIPPED = (BUNDLED_DIR / f"{BUNDLED_NAME}.safetensors").is_file()
NO_SHIPPED = f"no shipped HC weights ({BUNDLED_NAME}.safetensors): export them with bench train hc"

pytestmark = pytest.mark.skipif(MISSING is not None, reason=str(MISSING))


def kodak(name: str, top: int = 0, left: int = 0, height: int = 10**6, width: int = 10**6):
    from bench.images import load_rgb

    image = load_rgb(ROOT / "datasets" / "kodak" / name)
    return np.ascontiguousarray(image[top : top + height, left : left + width])


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    from bench.metrics import psnr_rgb

    return psnr_rgb(a, b)


@pytest.fixture(scope="module")
def untrained_weights(tmp_path_factory) -> str:
    """A weights file of a freshly initialised HC model (seed 0), written by the exporter."""
    import torch

    from plugins.hc.train import write_weights
    from plugins.hc.trainable import HCModel

    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("hc") / "untrained.safetensors"
    write_weights(HCModel(), path, {"iterations": "0"})
    return str(path)


def test_model_shapes_and_likelihoods():
    import torch

    from plugins.hc.trainable import HCModel, rd_terms
    from plugins.learned.training.precision import TrainMode

    torch.manual_seed(0)
    model = HCModel()
    x = torch.rand(2, 3, 64, 128)  # z (stride 64) two wide, each latent a different size
    out = model(x)
    assert out["x_hat"].shape == x.shape
    shapes = {k: tuple(v.shape) for k, v in out["likelihoods"].items()}
    assert shapes == {
        "y4": (2, 192, 4, 8),
        "y3": (2, 16, 8, 16),
        "y2": (2, 4, 16, 32),
        "z": (2, 128, 1, 2),
    }
    for lik in out["likelihoods"].values():
        assert torch.all(lik > 0) and torch.all(lik <= 1)
    terms = rd_terms(model, x, 0.18, TrainMode())
    rates = sum(float(terms[f"bpp_{k}"].detach()) for k in ("y4", "y3", "y2", "z"))
    assert float(terms["bpp"].detach()) == pytest.approx(rates, rel=1e-6)
    terms["loss"].backward()
    assert model.nets.c2_params.weight.grad is not None  # y2's prior is trained through its rate
    assert model.nets.lc2.weight.grad is not None  # and y2 reaches the synthesis


def test_residual_quantisation_and_full_stream(untrained_weights):
    from plugins.hc.codec import HCCodec

    codec = HCCodec(weights=untrained_weights)
    image = kodak("kodim05.png", 40, 60, 64, 96)
    enc = codec.runtime.encode(image)
    with_y = codec.runtime.nets.analysis(codec.runtime.to_tensor(image))
    y4 = with_y[2][0].double().numpy()
    # the deepest latent's integers are round(y4 - mu4): the residual, not y4 itself
    assert np.array_equal(enc.fine[0], np.rint(y4 - enc.priors[0].means).astype(np.int64))
    decoded = codec.decode_full(codec.encode(image))
    assert decoded.received == ("complete", "complete", "complete")
    for latent, prior, fine in zip(decoded.latents, enc.priors, enc.fine, strict=True):
        assert np.array_equal(latent, prior.means + fine)  # mu + round(y - mu), exactly


def test_prefix_with_only_the_deepest_latent_decodes_to_conditional_means(untrained_weights):
    from plugins.hc.codec import HCCodec

    codec = HCCodec(weights=untrained_weights)
    image = kodak("kodim05.png", 0, 0, 64, 64)
    header, (y4, y3, y2) = codec.encode_sections(image)
    rt = codec.runtime
    got = codec.decode_full(header + y4)
    assert got.received == ("complete", "none", "none")
    f3, p3 = rt.prior3(got.latents[0])
    assert np.array_equal(got.latents[1], p3.means)
    p2 = rt.prior2(f3, p3.means)
    assert np.array_equal(got.latents[2], p2.means)
    expected = rt.synthesise(got.latents[0], p3.means, p2.means, 64, 64)
    assert np.array_equal(got.image, expected)
    assert codec.decode_full(header + y4 + y3).received == ("complete", "complete", "none")
    nothing = codec.decode_full(header)
    assert nothing.received == ("none", "none", "none")


def test_depth_only_and_nested_streams_end_at_the_same_image(untrained_weights):
    from plugins.hc.codec import HCCodec

    image = kodak("kodim23.png", 100, 200, 48, 80)
    nested = HCCodec(weights=untrained_weights)
    depth = HCCodec(weights=untrained_weights, nested=False)
    assert depth.levels == 1 and nested.levels == 4
    a, b = nested.encode(image), depth.encode(image)
    assert np.array_equal(nested.decode(a), depth.decode(b))
    assert a != b


def test_registered_with_typed_parameters_and_trainer():
    from bench.registry import load_registry

    registry = load_registry(entry_points=False)
    assert registry.codecs["hc"].plugin == "plugins.hc"
    assert "hc" in registry.trainers


def test_trainer_resumes_and_exports(tmp_path, monkeypatch):
    """Three iterations on 64-pixel crops, stopped at 2 and resumed (the data folder written
    relative to the working directory, adaptive threads), then an export evaluated on one Kodak
    image with the real codec."""
    import json
    import os

    from plugins.hc.train import main

    out = tmp_path / "run"
    common = ["--out", str(out), "--batch", "1", "--crop", "64", "--eval-every", "0"]
    data = ["--data", "/work/shared/datasets/train"]
    if not Path(data[1]).is_dir():
        pytest.skip("no training images in /work/shared/datasets/train")
    small = ["--N", "16", "--M", "24", "--P", "8"]
    assert main([*common, *data, "--stop-at", "2", *small]) == 0
    monkeypatch.chdir(tmp_path)
    relative = ["--data", os.path.relpath(data[1], tmp_path)]
    average = ["--ema-decay", "0.5", "--eval-every", "1", "--eval-images", "kodim23"]
    assert main([*common, "--resume", *relative, "--threads", "0", "--stop-at", "3", *average]) == 0
    log = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    (ev,) = [r for r in log if r["type"] == "eval"]  # the weight average is evaluated beside
    assert ev["iteration"] == 3 and ev["average"]["decay"] == 0.5 and ev["average"]["bpp"] > 0
    legs = [r for r in log if r["type"] == "leg"]
    assert [(r["from_iteration"]) for r in legs] == [0, 2]
    assert [r["threads"] for r in legs] == [1, "adaptive"]
    assert [(r["iteration"], r["threads"] >= 1) for r in log if r["type"] == "train"] == [
        (2, True),
        (3, True),
    ]
    assert json.loads((out / "config.json").read_text())["data"] == data[1]
    assert main(["--out", str(out), "--resume", "--stop-at", "3", "--N", "32"]) == 3
    assert main(["--out", str(out), "--resume", "--data", str(tmp_path)]) == 3
    weights = tmp_path / "hc-small.safetensors"
    assert main(["--out", str(out), "--export", str(weights), "--export-images", "kodim23"]) == 0
    sidecar = json.loads(weights.with_suffix(".json").read_text())
    assert sidecar["iterations"] == 3 and sidecar["kodak_eval"]["num_images"] == 1
    assert sidecar["config"]["N"] == 16 and "NOT the paper's model" in sidecar["note"]
    assert sidecar["shipped_weights"] == {"weights": "average", "decay": 0.5, "since_iteration": 2}
    # a new machine continues from the shipped file: its iteration count carries on
    again = tmp_path / "again"
    assert (
        main(
            [
                "--out",
                str(again),
                *data,
                *common[2:],
                *small,
                "--init",
                str(weights),
                "--stop-at",
                "4",
            ]
        )
        == 0
    )
    legs = [json.loads(line) for line in (again / "log.jsonl").read_text().splitlines()]
    assert [r["from_iteration"] for r in legs if r["type"] == "leg"] == [3]
    assert json.loads((again / "config.json").read_text())["start_iteration"] == 3


def test_config_of_existing_checkpoints_still_loads():
    """The config.json/checkpoint config written by the HC trainer before HCTrainConfig became a
    subclass of the base trainer's TrainConfig: read back field for field."""
    from plugins.hc.train import HCTrainConfig

    stored = {
        "C2": 4, "C3": 16, "M": 192, "N": 128, "P": 64, "aux_lr": 0.001, "batch": 8,
        "channels_last": True, "checkpoint_every": 250, "clip": 1.0, "crop": 128,
        "data": "/work/shared/datasets/train", "device": "cpu", "eval_every": 1000,
        "eval_images": ["kodim01", "kodim05", "kodim15", "kodim23"], "init": "",
        "iterations": 400000, "kodak": "/work/main/datasets/kodak", "lmbda": 0.18,
        "log_every": 25, "lr": 0.0001, "lr_min": 1e-05,
        "out": "/root/.cache/bench/train/hc-n128-m192-l1800", "precision": "auto", "seed": 0,
        "start_iteration": 0, "stop_at": 0, "threads": 1, "warmup": 1000,
    }  # fmt: skip
    cfg = HCTrainConfig.from_dict(stored)
    # field for field; options added since (the weight average, crop downscaling, ...) take
    # defaults
    assert cfg.to_dict() == {
        **stored, "ema_decay": 0.0, "scale_min": 1.0, "quantization": "noise",
        "time_limit": 0.0, "loader_threads": 0,
    }  # fmt: skip
    assert cfg.model_config.to_dict() == {"N": 128, "M": 192, "C3": 16, "C2": 4, "P": 64}
    assert {"data", "lmbda", "C3", "C2", "P"} <= set(HCTrainConfig.IDENTITY)
    # HC's loss trains its decoder on the noise proxy only: no silent ``ste``
    with pytest.raises(ValueError, match="quantization must be one of noise"):
        HCTrainConfig(quantization="ste")


def test_hyperprior_is_the_base_model_one_and_shipped_weights_keep_their_keys():
    """HC's h_a/h_s are the base model's modules (plugins.learned.nets), under the same state-dict
    keys: the shipped HC and base weights hold exactly the keys the models have."""
    from safetensors import safe_open

    from plugins.hc.trainable import HCModel
    from plugins.learned import nets
    from plugins.learned.weights import BUNDLED_DIR as BASE_DIR
    from plugins.learned.weights import BUNDLED_NAME as BASE_NAME

    hc = HCModel()
    base = nets.Transforms(128, 192)
    for part in ("h_a", "h_s"):
        ours, theirs = getattr(hc.nets, part), getattr(base, part)
        assert [type(m) for m in ours] == [type(m) for m in theirs]
        shapes = {k: v.shape for k, v in theirs.state_dict().items()}
        assert {k: v.shape for k, v in ours.state_dict().items()} == shapes
    with safe_open(str(BASE_DIR / f"{BASE_NAME}.safetensors"), "pt") as f:
        base_keys = set(f.keys())
    assert set(base.state_dict()) <= base_keys
    if SHIPPED:
        with safe_open(str(BUNDLED_DIR / f"{BUNDLED_NAME}.safetensors"), "pt") as f:
            assert set(f.keys()) == set(hc.state_dict())


def test_flops_count():
    from plugins.hc.flops import count

    hc, base = count("hc"), count("msh")
    assert hc.parts["hyper synthesis"] == base.parts["hyper synthesis"]
    assert base.parts["priors"] == 0 and hc.parts["priors"] > 0
    assert 1.0 < hc.encoder / base.encoder < 1.2 and 1.0 < hc.decoder / base.decoder < 1.2


@pytest.mark.skipif(not SHIPPED, reason=NO_SHIPPED)
def test_each_latent_raises_psnr_with_shipped_weights():
    from plugins.hc.codec import HCCodec

    codec = HCCodec(weights=DEFAULT_WEIGHTS)
    image = kodak("kodim23.png", 200, 300, 128, 128)
    header, (y4, y3, y2) = codec.encode_sections(image)
    only_y4 = psnr(image, codec.decode(header + y4))
    with_y3 = psnr(image, codec.decode(header + y4 + y3))
    everything = psnr(image, codec.decode(header + y4 + y3 + y2))
    assert with_y3 > only_y4
    assert everything > with_y3


@pytest.mark.slow
@pytest.mark.skipif(not SHIPPED, reason=NO_SHIPPED)
class TestHCConformance(ConformanceSuite):
    codec = "hc"
    params = {"weights": DEFAULT_WEIGHTS, "memo": True}
