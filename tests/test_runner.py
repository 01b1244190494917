"""The runner on real codecs and real files: rows, budgets, failures, timeouts, kill and resume."""

from __future__ import annotations

import math
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import (
    BITPLANE,
    MISBEHAVING,
    bench_command,
    kodak_crop,
    resume_and_check,
    write_dataset,
)

from bench.grid import budget_bytes
from bench.metrics import psnr_rgb
from bench.runner import RunConfig, RunError, parse_codec_requests, run
from bench.store import RunStore

sys.path.insert(0, str(Path(BITPLANE).parent))
from bitplane_codec import BitplaneCodec  # noqa: E402

BPP = (0.01, 1.0, 4.0, 8.0, 30.0)


def _config(dataset: Path, codecs: str, **kwargs) -> RunConfig:
    return RunConfig(
        codecs=tuple(parse_codec_requests(codecs)),
        dataset=str(dataset),
        bpp=BPP,
        plugin_files=(BITPLANE, MISBEHAVING),
        entry_points=False,
        repeats=1,
        **kwargs,
    )


@pytest.fixture(scope="module")
def module_crops(tmp_path_factory) -> Path:
    """Manifest path of the Kodak crops dataset, written once for this module's shared run."""
    return write_dataset(tmp_path_factory.mktemp("crops"))


@pytest.fixture(scope="module")
def bitplane_run(module_crops, tmp_path_factory) -> Path:
    """A finished single-worker run of ``bitplane`` on the crops, which several tests read."""
    out = tmp_path_factory.mktemp("bitplane") / "run"
    outcome = run(_config(module_crops, "bitplane"), out)
    assert not outcome.failures and not outcome.interrupted
    return out


#: The wrong types ``wrongtype`` returns from encode, one codec variant per kind.
WRONG_KINDS = ("list", "ndarray", "bytearray", "str")


@pytest.fixture(scope="module")
def misbehaving_run(module_crops, tmp_path_factory) -> tuple[Path, list[dict]]:
    """One single-worker run of the codecs that break the contract, in turn, beside ``bitplane``:
    ``crashy`` (raises on c.png), ``fragile`` (its decoder raises on long prefixes) and
    ``wrongtype`` of each kind; its directory and failures."""
    out = tmp_path_factory.mktemp("misbehaving") / "run"
    wrong = [f"wrongtype[kind={kind}]" for kind in WRONG_KINDS]
    codecs = ",".join(["crashy", "bitplane", "fragile", *wrong])
    outcome = run(_config(module_crops, codecs), out)
    assert not outcome.interrupted
    return out, outcome.failures


def test_parse_codec_requests_with_parameters():
    requests = parse_codec_requests("jpeg2000, slow[delay=0.5,mode=fast],spiht")
    assert [r.label for r in requests] == ["jpeg2000", "slow[delay=0.5,mode=fast]", "spiht"]
    assert requests[1].params == {"delay": "0.5", "mode": "fast"}  # text until bind_requests
    for bad in ("", "a,a", "x[y]", "bad name"):
        with pytest.raises(RunError):
            parse_codec_requests(bad)


def test_rows_are_real_truncations(bitplane_run):
    rows = RunStore(bitplane_run).rows()
    assert len(rows) == 3 * len(BPP)
    codec = BitplaneCodec()
    for row in rows:
        h, w = row["height"], row["width"]
        stream_bytes = 8 + 3 * ((h * w * 3 + 7) // 8) * 8 // 3
        assert row["budget_bytes"] == budget_bytes(row["target_bpp"], h, w)
        assert row["bytes"] == min(row["budget_bytes"], row["stream_bytes"])
        assert row["stream_bytes"] == stream_bytes
        assert row["bpp"] == pytest.approx(8 * row["bytes"] / (h * w))
        if row["bytes"] < 8:  # shorter than the header: undecodable, recorded as such
            assert not row["decodable"] and row["psnr_rgb"] is None
            continue
        assert row["decodable"]
    # the stored PSNR is the PSNR of decoding exactly that many bytes of the stream
    row = next(r for r in rows if r["image"] == "a.png" and r["target_bpp"] == 1.0)
    image = kodak_crop("kodim01.png", 100, 200, 64, 96)
    expected = psnr_rgb(image, codec.decode(codec.encode(image)[: row["bytes"]]))
    assert row["psnr_rgb"] == pytest.approx(expected)
    full = next(r for r in rows if r["image"] == "a.png" and r["target_bpp"] == 30.0)
    assert full["bytes"] == full["stream_bytes"] and full["psnr_rgb"] == "inf"


def test_a_crashing_codec_costs_only_its_own_units(misbehaving_run):
    out, failures = misbehaving_run
    crashy = [f for f in failures if f["codec"] == "crashy"]
    assert [(f["codec"], f["image"]) for f in crashy] == [("crashy", "c.png")]
    assert "refuses width 53" in crashy[0]["error"]
    rows = RunStore(out).rows()
    assert len([r for r in rows if r["codec"] == "bitplane"]) == 3 * len(BPP)
    assert len([r for r in rows if r["codec"] == "crashy"]) == 2 * len(BPP)


def test_a_hanging_codec_is_killed_after_the_timeout(crops_dataset, small_unit_timeout, tmp_path):
    # the timeout is measured (twice a fresh worker's time for the small crops), not assumed
    start = time.monotonic()
    config = _config(crops_dataset, "sleepy,bitplane", timeout=small_unit_timeout)
    outcome = run(config, tmp_path / "run")
    assert time.monotonic() - start < small_unit_timeout + 60
    failed = {(f["codec"], f["image"]) for f in outcome.failures}
    assert failed == {("sleepy", "a.png")}  # 64x96 hangs; the smaller crops finish
    assert f"timed out after {small_unit_timeout:g} s" in outcome.failures[0]["error"]
    rows = RunStore(tmp_path / "run").rows()
    assert len([r for r in rows if r["codec"] == "bitplane"]) == 3 * len(BPP)


def test_units_run_image_by_image_so_load_changes_touch_every_codec(misbehaving_run):
    """A single worker measures the units in plan order: every codec of an image before the next
    image (a load change during the run then falls on all codecs, whose times are compared)."""
    out, _ = misbehaving_run
    order = [(u["image"], u["codec"]) for u in RunStore(out).units()]
    images = [image for image, _ in order]
    assert images == sorted(images) and len(set(images)) == 3  # a.png, b.png, c.png in turn
    assert [codec for image, codec in order if image == images[0]][:2] == ["crashy", "bitplane"]


def test_a_contract_violation_is_reported(misbehaving_run):
    _, failures = misbehaving_run
    fragile = [f for f in failures if f["codec"] == "fragile"]
    assert fragile and all("ContractViolation" in f["error"] for f in fragile)
    assert "read past its buffer" in fragile[0]["error"]


def test_jobs_spread_units_and_give_the_same_rows(module_crops, bitplane_run, tmp_path):
    run(_config(module_crops, "bitplane", jobs=2), tmp_path / "two")

    def key(rows):
        return sorted((r["image"], r["target_bpp"], r["bytes"], r["psnr_rgb"]) for r in rows)

    assert key(RunStore(bitplane_run).rows()) == key(RunStore(tmp_path / "two").rows())


def test_existing_run_needs_resume_and_same_settings(module_crops, bitplane_run, tmp_path):
    existing = shutil.copytree(bitplane_run, tmp_path / "run")
    with pytest.raises(RunError, match="--resume"):
        run(_config(module_crops, "bitplane"), existing)
    with pytest.raises(RunError, match="other settings"):
        run(_config(module_crops, "bitplane,slow"), existing, resume=True)
    outcome = run(_config(module_crops, "bitplane"), existing, resume=True)
    assert outcome.rows_written == 0


def test_sigkill_halfway_then_resume_loses_and_duplicates_nothing(crops_dataset, tmp_path):
    out = tmp_path / "run"
    command = bench_command(
        "run",
        "--codecs",
        "slow[delay=0.15],bitplane",
        "--dataset",
        str(crops_dataset),
        "--bpp",
        ",".join(map(str, BPP)),
        "--repeats",
        "1",
        "--out",
        str(out),
    )
    process = subprocess.Popen(
        command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True
    )
    rows_file = out / "rows.jsonl"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if rows_file.exists() and rows_file.read_bytes().count(b"\n") >= 7:
            break
        time.sleep(0.05)
    os.killpg(process.pid, signal.SIGKILL)
    process.wait()
    before = RunStore(out).rows()
    total = 2 * 3 * len(BPP)
    assert 7 <= len(before) < total, "the kill should land halfway"
    with open(rows_file, "ab") as f:  # a row torn in half by the kill
        f.write(b'{"codec": "slow[delay=0.15]", "image": "b.png", "target_')
    resume_and_check(command, out, before, total)
    assert (out / "report.md").exists()


def test_undecodable_points_and_nan_metrics_are_explicit(bitplane_run):
    rows = RunStore(bitplane_run).rows()
    tiny = [r for r in rows if r["target_bpp"] == 0.01]
    assert all(not r["decodable"] and r["note"] == "prefix shorter than header" for r in tiny)
    small = [r for r in rows if r["decodable"]]
    assert all(r["ms_ssim"] is None and "MS-SSIM undefined" in r["note"] for r in small)
    assert all(math.isfinite(r["decode_s"]) for r in small)


def test_encode_returning_anything_but_bytes_is_a_named_contract_violation(misbehaving_run):
    out, failures = misbehaving_run
    wrong = [f for f in failures if f["codec"].startswith("wrongtype")]
    assert len(wrong) == 3 * len(WRONG_KINDS)
    assert not [r for r in RunStore(out).rows() if r["codec"].startswith("wrongtype")]
    assert {f["codec"] for f in wrong} == {f"wrongtype[kind={k}]" for k in WRONG_KINDS}
    for failure in wrong:
        kind = failure["codec"].removeprefix("wrongtype[kind=").removesuffix("]")
        assert (
            f"encode returned {kind}, not bytes (the codec contract: bytes only)"
            in (failure["error"])
        ), failure
