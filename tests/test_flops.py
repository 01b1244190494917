"""FLOPs of the learned codecs' networks (plugins.learned.flops, plugins.hc.flops): the count
on the meta device (what codecs report) equals torch's count of the networks run for real, and
the codecs' info() carries it."""

from __future__ import annotations

import json

import pytest

pytest.importorskip("torch")

from plugins.hc.flops import hc_flops  # noqa: E402
from plugins.hc.nets import HCConfig  # noqa: E402
from plugins.learned.flops import PARTS, SIDE, base_model_flops  # noqa: E402


@pytest.mark.parametrize("model", ["msh", "hc"])
def test_the_meta_count_is_the_count_of_a_real_run(model):
    """Shapes alone decide the count: the meta-device networks (no arithmetic) give exactly
    what torch counts on the CPU, part by part (on 64x64, where the CPU run is quick)."""
    if model == "msh":
        meta, cpu = base_model_flops(128, 192, 64), base_model_flops(128, 192, 64, "cpu")
    else:
        meta, cpu = hc_flops(HCConfig(), 64), hc_flops(HCConfig(), 64, "cpu")
    assert tuple(meta.parts) == PARTS and all(v >= 0 for v in meta.parts.values())
    assert meta.parts == cpu.parts and meta.encoder > 0 and meta.decoder > 0


def test_flops_per_pixel_do_not_depend_on_the_input_size():
    """Every layer's work scales with the pixels (sides that are multiples of 64): 64x64 and
    256x256 give the same FLOPs per pixel, so the 256x256 figure holds for any such image."""
    small, full = base_model_flops(128, 192, 64), base_model_flops(128, 192, SIDE)
    assert small.per_pixel() == full.per_pixel()
    assert full.per_pixel() == {
        "encoder": full.encoder / SIDE**2,
        "decoder": full.decoder / SIDE**2,
    }


def test_codecs_report_their_networks_flops():
    from plugins.hc.codec import HCCodec
    from plugins.learned.ladder import BaseModelLadder
    from plugins.learned.weights import DEFAULT_WEIGHTS
    from plugins.plonq.codec import PlonqCodec

    plonq, msh = PlonqCodec(weights=DEFAULT_WEIGHTS), BaseModelLadder(weights=DEFAULT_WEIGHTS)
    hc = HCCodec()
    base = base_model_flops(plonq.base.nets.N, plonq.base.nets.M).per_pixel()
    assert plonq.info().flops_per_pixel == msh.info().flops_per_pixel == base
    assert hc.info().flops_per_pixel == hc_flops(hc.runtime.cfg).per_pixel()
    assert hc.info().flops_per_pixel["decoder"] > base["decoder"]


def test_counts_are_remembered_on_disk_and_a_bad_file_is_counted_again(tmp_path, monkeypatch):
    """The first meta count of an architecture is written under $BENCH_FLOPS_CACHE; a later
    process reads it instead of counting (workers skip torch's ~1 s dispatch-mode start); a
    corrupt or incomplete file is replaced by a fresh count."""
    from plugins.learned import flops

    monkeypatch.setenv("BENCH_FLOPS_CACHE", str(tmp_path))
    counted = flops._count_base(64, 96, 64, "meta")
    first = flops.remembered("msh", {"N": 64, "M": 96, "side": 64}, lambda: counted)
    (stored,) = tmp_path.glob("msh-M=96-N=64-side=64-*.json")
    assert first == counted

    def must_not_count():
        raise AssertionError("counted although the disk held the figures")

    again = flops.remembered("msh", {"N": 64, "M": 96, "side": 64}, must_not_count)
    assert again == counted

    stored.write_text('{"analysis": 1}')
    repaired = flops.remembered("msh", {"N": 64, "M": 96, "side": 64}, lambda: counted)
    assert repaired == counted and set(json.loads(stored.read_text())) == set(PARTS)
