"""The weights registry: bundled names, user files, CompressAI's zoo with a real hash check
(on local files), safe loading, and the plain-torch transforms being CompressAI's."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from bench.codec import CodecUnavailable
from plugins.learned import weights as wr
from plugins.learned.testing import SKIP_REASON, dependencies_missing, test_weights_spec

ROOT = Path(__file__).resolve().parents[1]
WEIGHTS = test_weights_spec()
MISSING = dependencies_missing()
needs_model = pytest.mark.skipif(WEIGHTS is None or MISSING is not None, reason=SKIP_REASON)


def test_missing_bundled_weights_say_how_to_get_them(tmp_path, monkeypatch):
    monkeypatch.setattr(wr.specs, "BUNDLED_DIR", tmp_path)
    monkeypatch.delenv(wr.WEIGHTS_PATH_ENV, raising=False)
    with pytest.raises(CodecUnavailable) as info:
        wr.resolve("bundled:nothing-here")
    assert "bench train" in info.value.fix
    with pytest.raises(CodecUnavailable):
        wr.check_default_weights()
    with pytest.raises(CodecUnavailable):
        wr.resolve(str(tmp_path / "absent.safetensors"))
    with pytest.raises(CodecUnavailable):
        wr.resolve("bundled:../escape")


@needs_model
def test_bundled_lookup_by_name_and_user_path(tmp_path, monkeypatch):
    source = wr.resolve(WEIGHTS).path
    folder = tmp_path / "extra"
    folder.mkdir()
    shutil.copy(source, folder / "copy-of-base.safetensors")
    if source.with_suffix(".json").is_file():
        shutil.copy(source.with_suffix(".json"), folder / "copy-of-base.json")
    monkeypatch.setenv(wr.WEIGHTS_PATH_ENV, str(folder))
    bundled = wr.resolve("bundled:copy-of-base")
    assert bundled.source == "bundled"
    assert bundled.sha256 == hashlib.sha256(source.read_bytes()).hexdigest()
    assert "NOT the paper's or CompressAI's pretrained model" in bundled.description
    assert "bench train" in bundled.description
    sidecar = source.with_suffix(".json")
    shipped = json.loads(sidecar.read_text()) if sidecar.is_file() else {}
    shipped = shipped.get("shipped_weights", {})
    if shipped.get("weights") == "average":  # the sidecar's choice is named in the description
        assert f"moving average of the weights (decay {shipped['decay']}" in bundled.description
    user = wr.resolve(str(source))
    assert user.source == "user" and user.sha256 == bundled.sha256
    info = user.info()
    assert info.sha256 == user.sha256 and info.path == str(source.resolve())


class NotATensor:
    """A picklable object that ``torch.load(weights_only=True)`` must refuse."""


def _state_dict_file(tmp_path: Path) -> tuple[Path, str]:
    """A real MeanScaleHyperprior state dict (from the test weights), named torch.hub-style
    with its own sha256 prefix."""
    import torch

    model = wr.load_model(wr.resolve(WEIGHTS))
    raw = tmp_path / "raw.pth.tar"
    torch.save(model.state_dict(), raw)
    digest = hashlib.sha256(raw.read_bytes()).hexdigest()
    named = tmp_path / "src" / f"mbt2018-mean-8-{digest[:8]}.pth.tar"
    named.parent.mkdir()
    raw.rename(named)
    return named, digest


@needs_model
def test_zoo_download_and_cache_are_hash_checked(tmp_path, monkeypatch):
    from plugins.learned.compat import import_compressai

    import_compressai()
    from compressai.zoo import image as zoo_image

    named, digest = _state_dict_file(tmp_path)
    home = tmp_path / "torch-home"
    monkeypatch.setenv("TORCH_HOME", str(home))
    urls = {**zoo_image.model_urls["mbt2018-mean"]["mse"], 8: named.as_uri()}
    monkeypatch.setitem(zoo_image.model_urls["mbt2018-mean"], "mse", urls)
    # first use: "downloads" (file:// URL) through torch.hub with the name's hash prefix
    resolved = wr.resolve("zoo:mbt2018-mean:8")
    assert resolved.source == "zoo" and resolved.sha256 == digest
    assert resolved.path == home / "hub" / "checkpoints" / named.name
    assert "verified" in resolved.description
    model = wr.load_model(resolved)
    reference = wr.load_model(wr.resolve(WEIGHTS))
    for key, value in reference.state_dict().items():
        if key.startswith("gaussian_conditional."):
            continue  # update() resets a state dict's scale table to CompressAI's exact one
        if key == "entropy_bottleneck._quantized_cdf":
            # update() rebuilds it in float math whose last bit differs between CPUs (17 of
            # 24,704 entries by 1 on an AMD EPYC against the Xeon that exported the test
            # weights): why bench files carry their tables (plugins/learned/weights/loading.py)
            diff = np.abs(model.state_dict()[key].numpy() - value.numpy().astype(np.int64))
            assert diff.max() <= 1 and (diff > 0).mean() < 0.01, key
            continue
        assert np.array_equal(model.state_dict()[key].numpy(), value.numpy()), key
    # a cached file that does not match its name's prefix is refused
    with open(resolved.path, "ab") as f:
        f.write(b"tampered")
    with pytest.raises(CodecUnavailable, match="hash check"):
        wr.resolve("zoo:mbt2018-mean:8")
    # a download whose content does not match the prefix in its name fails
    resolved.path.unlink()
    bad = named.with_name("mbt2018-mean-8-00000000.pth.tar")
    shutil.copy(named, bad)
    urls[8] = bad.as_uri()
    with pytest.raises(CodecUnavailable, match="cannot download"):
        wr.resolve("zoo:mbt2018-mean:8")
    assert not (home / "hub" / "checkpoints" / bad.name).exists()


@needs_model
def test_state_dicts_load_with_weights_only(tmp_path):
    import torch

    path = tmp_path / "evil.pth"
    torch.save({"g_a.0.weight": NotATensor()}, path)
    with pytest.raises(CodecUnavailable, match="weights_only"):
        wr.load_model(wr.resolve(str(path)))


@needs_model
def test_plain_torch_transforms_are_compressai_bit_for_bit():
    import torch

    from plugins.learned.model_io import BaseModel

    base = BaseModel.get(WEIGHTS)
    model = base.model
    x = torch.rand(1, 3, 64, 128, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        y = model.g_a(x)
        assert torch.equal(base.nets.g_a(x), y)
        z = model.h_a(y)
        assert torch.equal(base.nets.h_a(y), z)
        assert torch.equal(base.nets.h_s(z), model.h_s(z))
        assert torch.equal(base.nets.g_s(y), model.g_s(y))
    assert base.num_parameters == sum(p.numel() for p in model.parameters())
    # z through our table coder gives CompressAI's z_hat
    image = (x[0].permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
    analysis = base.analyse(image)
    with torch.no_grad():
        enc = model.compress(base.to_tensor(image))
        z_hat = model.entropy_bottleneck.decompress(enc["strings"][1], enc["shape"])
    assert torch.equal(base.decode_z(analysis.z_bytes, analysis.z_shape), z_hat)
    assert abs(len(analysis.z_bytes) - len(enc["strings"][1][0])) <= 8
