"""The BPG anchors: ``hevc444`` (real x265 encodes of Kodak crops) and ``bpg`` (bpgenc/bpgdec,
exercised only where the binaries exist; its command lines are checked as pure functions)."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
from conftest import kodak_crop, write_dataset

from bench import CodecUnavailable, CorruptStream
from bench.metrics import psnr_rgb
from bench.registry import load_registry
from bench.testing import ConformanceSuite
from plugins.bpg import bpg as bpg_module
from plugins.bpg import hevc_ps
from plugins.bpg.heif import build_hvcc, read_heif
from plugins.bpg.hevc444 import (
    FLAG_EXPLICIT,
    HEADER_BYTES,
    TEMPLATE_PARAMETER_SETS,
    Hevc444Codec,
    pack_stream,
    unpack_stream,
)
from plugins.bpg.ladder_cache import image_digest

HAVE_BPG = bool(
    bpg_module.find_binary("BENCH_BPGENC", "bpgenc")
    and bpg_module.find_binary("BENCH_BPGDEC", "bpgdec")
)
needs_bpg = pytest.mark.skipif(
    not HAVE_BPG, reason="bpgenc/bpgdec not on PATH nor in $BENCH_BPGENC/$BENCH_BPGDEC"
)

#: Awkward sizes: tiny (libheif pads to 64x64), odd, wider than tall, one CTU row.
SIZES = {
    "1x1": ("kodim01.png", 10, 10, 1, 1),
    "37x53": ("kodim05.png", 101, 203, 37, 53),
    "17x300": ("kodim23.png", 300, 100, 17, 300),
    "100x200": ("kodim23.png", 200, 300, 100, 200),
    "130x66": ("kodim15.png", 120, 260, 130, 66),
}


@pytest.fixture(autouse=True)
def _private_cache(tmp_path, monkeypatch):
    """Never touch the user's ladder cache."""
    monkeypatch.setenv("BENCH_CACHE_DIR", str(tmp_path / "cache"))


@pytest.fixture(scope="module")
def codec():
    return Hevc444Codec(cache=False)


@pytest.fixture(scope="module")
def crop():
    return kodak_crop("kodim23.png", 200, 300, 96, 128)


class TestHevc444Conformance(ConformanceSuite):
    codec = "hevc444"
    params = {"qp_min": 22, "qp_max": 42, "cache": False}


# ---------------------------------------------------------------------------------------------
# hevc444: stream and rate accounting


@pytest.mark.parametrize("size", sorted(SIZES))
def test_stream_is_the_slice_plus_a_24_byte_header_and_decodes_like_libheif(codec, size):
    import pillow_heif

    image = kodak_crop(*SIZES[size])
    heif = codec.encode_heif(image, 30)
    parts = read_heif(heif)
    stream = codec.encode_at(image, 30)
    assert HEADER_BYTES == 24
    assert len(parts.nal_units) == 1
    assert len(stream) == HEADER_BYTES + len(parts.nal_units[0])
    assert stream[HEADER_BYTES:] == parts.nal_units[0]
    assert len(heif) > len(stream) + 300  # the HEIF container is not counted
    unpacked = unpack_stream(stream)
    assert not unpacked.explicit
    assert unpacked.parameter_sets == parts.parameter_sets  # rebuilt bit for bit
    assert build_hvcc(parts.parameter_sets) == parts.hvcc
    reference = np.asarray(pillow_heif.open_heif(heif))[: image.shape[0], : image.shape[1]]
    decoded = codec.decode(stream)
    assert decoded.shape == image.shape and decoded.dtype == np.uint8
    assert np.array_equal(decoded, reference)
    assert psnr_rgb(image, decoded) > 30


def test_explicit_parameter_sets_when_the_template_does_not_fit(codec, crop, monkeypatch):
    parts = read_heif(codec.encode_heif(crop, 32))
    compact = codec.encode_at(crop, 32)
    monkeypatch.setattr("plugins.bpg.hevc444.compact_form", lambda *a, **k: None)
    explicit = pack_stream(128, 96, parts.parameter_sets, parts.nal_units, (128, 96))
    assert explicit[5] & FLAG_EXPLICIT
    sets = sum(len(n) for n in parts.parameter_sets)
    assert len(explicit) == len(compact) + 1 + 2 * len(parts.parameter_sets) + sets
    assert unpack_stream(explicit).explicit
    assert np.array_equal(codec.decode(explicit), codec.decode(compact))


def test_damaged_streams_raise_value_error(codec, crop):
    stream = codec.encode_at(crop, 40)
    for bad in (stream[:10], b"XXXX" + stream[4:], stream[:-1], stream + b"\0"):
        with pytest.raises(ValueError):
            unpack_stream(bad)
    wrong_crc = bytearray(stream)
    wrong_crc[16] ^= 0xFF
    with pytest.raises(ValueError, match="CRC"):
        codec.decode(bytes(wrong_crc))


def test_parameter_set_syntax_round_trips():
    for text in TEMPLATE_PARAMETER_SETS:
        nal = bytes.fromhex(text)
        fields = hevc_ps.parse_nal(nal)
        assert hevc_ps.write_nal(fields) == nal
    sps = hevc_ps.parse_nal(bytes.fromhex(TEMPLATE_PARAMETER_SETS[1]))
    assert (sps["pic_width_in_luma_samples"], sps["pic_height_in_luma_samples"]) == (768, 512)
    assert sps["chroma_format_idc"] == 3 and sps["video_full_range_flag"] == 1
    assert sps["matrix_coeffs"] == 6  # BT.601
    changed = hevc_ps.write_nal(
        {**sps, "pic_width_in_luma_samples": 1504, "general_level_idc": 120}
    )
    again = hevc_ps.parse_nal(changed)
    assert again["pic_width_in_luma_samples"] == 1504 and again["general_level_idc"] == 120
    assert hevc_ps.unescape(hevc_ps.escape(b"\0\0\0\0\1\0\0\3")) == b"\0\0\0\0\1\0\0\3"


def test_ladder_settings_order_and_rates(codec, crop):
    assert codec.settings() == list(range(51, -1, -1))
    small = Hevc444Codec(qp_min=20, qp_max=30, cache=False)
    assert small.settings() == list(range(30, 19, -1))
    sizes = [len(codec.encode_at(crop, qp)) for qp in (51, 40, 30, 20, 10, 0)]
    assert sizes == sorted(sizes) and len(set(sizes)) == len(sizes)
    for bad in ({"qp_min": -1}, {"qp_max": 52}, {"qp_min": 30, "qp_max": 20}, {"preset": "x"}):
        with pytest.raises(ValueError):
            Hevc444Codec(**bad)
    with pytest.raises(ValueError):
        small.encode_at(crop, 31)


def test_info_says_substitute_and_records_versions(codec):
    info = codec.info()
    assert "SUBSTITUTE for BPG" in info.description
    assert info.parameters["cache"] is False
    assert info.parameters["libheif_encoder_parameters"]["x265:psy-rd"] == "0"
    assert info.parameters["preset"] == "veryslow"
    assert "x265" in info.external["x265"] and info.external["libheif"]
    json.dumps(info.to_dict())


# ---------------------------------------------------------------------------------------------
# The ladder cache


def test_cache_hit_skips_the_encoder_and_keeps_the_original_time(crop, tmp_path, monkeypatch):
    first = Hevc444Codec(qp_min=30, qp_max=40, cache=True)
    assert first.info().parameters["cache"] is True
    data = first.encode_at(crop, 35)
    assert first._cache.misses == 1 and first._cache.hits == 0
    entries = list((tmp_path / "cache" / "ladders" / "hevc444").rglob("*.bin"))
    assert len(entries) == 1

    second = Hevc444Codec(qp_min=30, qp_max=40, cache=True)

    def no_encoder(*args, **kwargs):
        raise AssertionError("x265 ran although the entry was cached")

    monkeypatch.setattr(second, "_encode", no_encoder)
    assert second.encode_at(crop, 35) == data
    assert second._cache.hits == 1
    key = second._cache.key(image_digest(crop), 35)
    hit = second._cache.get(key)
    assert hit is not None and hit.data == data and hit.encode_s > 0
    # another QP, another image or other settings are other keys
    assert second._cache.key(image_digest(crop), 36) != key
    assert second._cache.key(image_digest(crop[:, :-1]), 35) != key
    other = Hevc444Codec(preset="slow", qp_min=30, qp_max=40, cache=True)
    assert other._cache.key(image_digest(crop), 35) != key


@pytest.mark.parametrize("damage", ["garbage", "truncated", "flipped", "empty"])
def test_corrupt_cache_entry_is_ignored_and_re_encoded(crop, damage):
    codec = Hevc444Codec(qp_min=30, qp_max=40, cache=True)
    data = codec.encode_at(crop, 38)
    (path,) = list(codec._cache.root.rglob("*.bin"))
    raw = path.read_bytes()
    path.write_bytes(
        {
            "garbage": b"not a cache entry at all",
            "truncated": raw[: len(raw) - 7],
            "flipped": raw[:-1] + bytes([raw[-1] ^ 1]),
            "empty": b"",
        }[damage]
    )
    again = Hevc444Codec(qp_min=30, qp_max=40, cache=True)
    assert again.encode_at(crop, 38) == data
    assert again._cache.misses == 1 and again._cache.hits == 0
    assert again._cache.get(again._cache.key(image_digest(crop), 38)).data == data


def test_cache_write_failure_does_not_fail_the_encode(crop, tmp_path, monkeypatch):
    blocker = tmp_path / "blocked"
    blocker.write_text("a file where the cache directory should be")
    monkeypatch.setenv("BENCH_CACHE_DIR", str(blocker))
    codec = Hevc444Codec(qp_min=30, qp_max=40, cache=True)
    assert codec.decode(codec.encode_at(crop, 40)).shape == crop.shape


# ---------------------------------------------------------------------------------------------
# The harness: hevc444 as the non-progressive anchor


def test_bench_run_with_hevc444_as_anchor(tmp_path):
    crops = {
        "a.png": ("kodim01.png", 100, 200, 64, 96),
        "b.png": ("kodim23.png", 201, 99, 37, 53),
    }
    manifest = write_dataset(tmp_path / "data", crops=crops)
    out = tmp_path / "run"
    command = [
        sys.executable,
        "-m",
        "bench",
        "--no-entry-points",
        "run",
        "--codecs",
        "hevc444[qp_min=20,qp_max=45],jpeg2000",
        "--anchor",
        "hevc444[qp_min=20,qp_max=45]",
        "--dataset",
        str(manifest),
        "--bpp",
        "0.5,1,2",
        "--repeats",
        "1",
        "--out",
        str(out),
    ]
    done = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    codecs = json.loads((out / "codecs.json").read_text())
    anchor = codecs["hevc444[qp_min=20,qp_max=45]"]
    assert anchor["kind"] == "rate-ladder"
    report = (out / "report.md").read_text()
    assert "BD-rate against `hevc444[qp_min=20,qp_max=45]`" in report
    assert "non-progressive anchor" in report and "SUBSTITUTE for BPG" in report
    rows = [json.loads(line) for line in (out / "rows.jsonl").read_text().splitlines()]
    ladder = [r for r in rows if r["codec"].startswith("hevc444")]
    assert ladder and all(r["bytes"] <= r["budget_bytes"] for r in ladder)
    assert all(20 <= r["setting"] <= 45 for r in ladder if r["decodable"])


# ---------------------------------------------------------------------------------------------
# bpg: command lines (pure), missing binaries, and the real binaries where they exist


def test_bpgenc_command_has_the_papers_settings():
    command = bpg_module.bpgenc_command("/opt/bpgenc", 28, "/tmp/in.png", "/tmp/out.bpg")
    assert command[0] == "/opt/bpgenc" and command[-1] == "/tmp/in.png"
    options = dict(zip(command[1:-1:2], command[2:-1:2], strict=True))
    assert options == {
        "-o": "/tmp/out.bpg",
        "-q": "28",
        "-f": "444",  # 4:4:4
        "-e": "x265",
        "-c": "ycbcr",  # BT.601 YCbCr; full range since -limitedrange is absent
        "-b": "8",
        "-m": "8",
    }
    assert "-limitedrange" not in command and "-lossless" not in command
    for bad in (-1, 52, 3.5, True, "30"):
        with pytest.raises(ValueError):
            bpg_module.bpgenc_command("bpgenc", bad, "in.png", "out.bpg")


def test_bpgdec_command():
    command = bpg_module.bpgdec_command("bpgdec", "in.bpg", "out.ppm")
    assert command == ["bpgdec", "-o", "out.ppm", "-b", "8", "in.bpg"]


def test_missing_bpgenc_is_reported_with_a_fix(tmp_path, monkeypatch):
    monkeypatch.setenv("BENCH_BPGENC", str(tmp_path / "no-such-bpgenc"))
    registry = load_registry(entry_points=False)
    problem = registry.availability("bpg")
    assert problem is not None
    assert (
        problem.reason == f"$BENCH_BPGENC is '{tmp_path / 'no-such-bpgenc'}', which does not exist"
    )
    assert "bellard.org/bpg" in problem.fix and "make USE_BPGVIEW= bpgenc bpgdec" in problem.fix
    assert "yasm cmake" in problem.fix
    with pytest.raises(CodecUnavailable):
        registry.spec("bpg").factory()
    assert registry.availability("hevc444") is None


@needs_bpg
def test_bpg_version_string_from_the_real_binary():
    encoder, decoder = bpg_module.find_binaries()
    version = bpg_module.binary_version(encoder)
    assert version != "unknown" and version[0].isdigit()
    help_text = subprocess.run([encoder, "-h"], capture_output=True, text=True).stdout
    assert bpg_module.parse_version(help_text) == version


@needs_bpg
def test_bpg_encodes_and_decodes_a_crop(crop):
    codec = bpg_module.BpgCodec(cache=False)
    assert codec.info().external["bpgenc"] != "unknown"
    sizes = []
    for qp in (45, 30, 15):
        data = codec.encode_at(crop, qp)
        assert data[:4] == b"BPG\xfb"
        decoded = codec.decode(data)
        assert decoded.shape == crop.shape and decoded.dtype == np.uint8
        sizes.append(len(data))
    assert sizes == sorted(sizes)
    assert psnr_rgb(crop, codec.decode(codec.encode_at(crop, 15))) > 38


@needs_bpg
class TestBpgConformance(ConformanceSuite):
    codec = "bpg"
    params = {"qp_min": 22, "qp_max": 42, "cache": False}


# ---------------------------------------------------------------------------------------------
# bpg: the wrapper's size handling, against stub binaries that crash below 25 px like bpgenc 0.9.8

STUB_BPGENC = """#!{python}
\"\"\"Stand-in for bpgenc 0.9.8: SIGSEGV on images narrower than $STUB_CRASH_BELOW (25) px.
Pillow and zlib only: it runs once per encode, and numpy's import would double its cost.\"\"\"
import os, signal, struct, sys, zlib
from PIL import Image
args = sys.argv[1:]
if "-h" in args:
    print("BPG Image Encoder version 0.9.8-stub")
    sys.exit(1)
opts = dict(zip(args[:-1:2], args[1:-1:2]))
image = Image.open(args[-1]).convert("RGB")
width, height = image.size
if width < int(os.environ.get("STUB_CRASH_BELOW", "25")):
    os.kill(os.getpid(), signal.SIGSEGV)
step = 1 + int(opts["-q"]) // 4
body = zlib.compress(image.point(lambda v: v // step).tobytes(), 9)
with open(opts["-o"], "wb") as f:
    f.write(b"BPG\\xfb" + struct.pack(">HHB", height, width, step) + body)
"""

STUB_BPGDEC = """#!{python}
\"\"\"Stand-in for bpgdec: reads the stub's files, writes PPM (Pillow and zlib only).\"\"\"
import struct, sys, zlib
from PIL import Image
args = sys.argv[1:]
if "-h" in args:
    print("BPG Image Decoder version 0.9.8-stub")
    sys.exit(1)
opts = dict(zip(args[:-1:2], args[1:-1:2]))
data = open(args[-1], "rb").read()
if data[:4] != b"BPG\\xfb":
    sys.exit("not a BPG file")
height, width, step = struct.unpack_from(">HHB", data, 4)
q = Image.frombytes("RGB", (width, height), zlib.decompress(data[9:]))
rec = q.point(lambda v: min(255, v * step + step // 2))
assert opts["-o"].endswith(".ppm"), opts
with open(opts["-o"], "wb") as f:
    f.write(b"P6\\n%d %d\\n255\\n" % (width, height) + rec.tobytes())
"""


@pytest.fixture
def stub_bpg(tmp_path, monkeypatch):
    """BENCH_BPGENC/BENCH_BPGDEC pointing to the stubs; returns the encoder's path."""
    paths = []
    for name, text in (("bpgenc", STUB_BPGENC), ("bpgdec", STUB_BPGDEC)):
        path = tmp_path / name
        path.write_text(text.format(python=sys.executable))
        path.chmod(0o755)
        paths.append(path)
    monkeypatch.setenv("BENCH_BPGENC", str(paths[0]))
    monkeypatch.setenv("BENCH_BPGDEC", str(paths[1]))
    return paths[0]


@pytest.mark.parametrize("size", ["1x1", "7x24", "25x25", "17x300"])
def test_bpg_pads_images_narrower_than_25_px_and_crops_on_decode(stub_bpg, tmp_path, size):
    from bench.images import save_png

    height, width = (int(v) for v in size.split("x"))
    image = kodak_crop("kodim05.png", 100, 200, height, width)
    codec = bpg_module.BpgCodec(qp_min=20, qp_max=40)
    assert "x265's own pool" in codec.info().parameters["threads"]
    data = codec.encode_at(image, 28)
    decoded = codec.decode(data)
    assert decoded.shape == image.shape and decoded.dtype == np.uint8
    assert psnr_rgb(image, decoded) > 30
    if width < bpg_module.MIN_WIDTH:
        assert data[:8] == bpg_module.CROP_HEADER.pack(bpg_module.CROP_MAGIC, height, width)
        assert data[8:12] == b"BPG\xfb"
    else:  # untouched: exactly the binary's file
        save_png(tmp_path / "in.png", image)
        command = bpg_module.bpgenc_command(str(stub_bpg), 28, tmp_path / "in.png", tmp_path / "o")
        subprocess.run(command, check=True)
        assert data == (tmp_path / "o").read_bytes()


def test_bpg_failure_names_the_signal_and_the_size(stub_bpg, monkeypatch):
    monkeypatch.setenv("STUB_CRASH_BELOW", "1000")
    codec = bpg_module.BpgCodec(qp_min=20, qp_max=40)
    with pytest.raises(RuntimeError, match="bpgenc was killed by SIGSEGV encoding a 96x64 image"):
        codec.encode_at(kodak_crop("kodim05.png", 0, 0, 64, 96), 30)
    with pytest.raises(CorruptStream, match="bpgdec exited with 1"):
        codec.decode(b"BPG\xfb" + bytes(20))


def test_bench_check_bpg_passes_with_the_stub(stub_bpg):
    """The conformance suite (1x1 included) passes with a bpgenc that crashes below 25 px."""
    command = [
        sys.executable,
        "-m",
        "bench",
        "--no-entry-points",
        "check",
        "bpg[qp_min=38,qp_max=42]",
    ]
    done = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "FAIL" not in done.stdout and "1x1" in done.stdout


def test_hevc444_does_not_claim_that_bpgenc_is_absent():
    assert "absent" not in Hevc444Codec.description
