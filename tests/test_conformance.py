"""The conformance suite passes a correct codec and catches each kind of broken one."""

from __future__ import annotations

import subprocess

from conftest import BITPLANE, MISBEHAVING, bench_command

from bench.conformance import (
    DENSE_BYTES,
    DENSE_CROP,
    SPREAD_CUTS,
    conformance_images,
    decode_in_fresh_process,
    monotone_result,
    prefix_lengths_after_header,
    run_checks,
)
from bench.testing import ConformanceSuite


def _failed(results):
    return {r.check for r in results if not r.passed}


def _dense_crop():
    """The suite's odd-size crop, whose prefixes it decodes at every length past the header: a
    misbehaving codec's faults below do not depend on the image, so one image shows each."""
    return [(name, image) for name, image in conformance_images() if name == DENSE_CROP]


class TestBitplaneConforms(ConformanceSuite):
    """The importable suite, used exactly as a codec author would use it."""

    codec = "bitplane"
    plugin_files = (BITPLANE,)

    def test_checks_cover_odd_sizes_and_a_single_pixel(self, conformance_results):
        """The class's own results (``run_checks("bitplane")``, computed once for the class)."""
        results = conformance_results
        assert {r.image for r in results} == {"64x96", "37x53", "1x1", "192x176"}
        checks = {r.check for r in results}
        assert {"encode", "deterministic", "prefixes", "monotone", "fresh-process"} <= checks
        assert "full-quality" in checks
        assert all(r.passed for r in results), [r for r in results if not r.passed]
        # bitplane's header is 8 bytes: the dense crop decodes every length to 8 + DENSE_BYTES
        prefixes = {r.image: r.detail for r in results if r.check == "prefixes"}
        assert f"every one to {8 + DENSE_BYTES}, {SPREAD_CUTS + 1} spread" in prefixes[DENSE_CROP]
        assert f"every one to 8, {SPREAD_CUTS + 1} spread" in prefixes["64x96"]


def test_state_leaking_from_encoder_to_decoder_is_caught():
    results = run_checks("leaky", plugin_files=(BITPLANE, MISBEHAVING), images=_dense_crop())
    assert "fresh-process" in _failed(results)


def test_decoder_raising_on_a_long_prefix_is_caught():
    """The first length that raises, found by decoding every length past the header."""
    results = run_checks("fragile", plugin_files=(BITPLANE, MISBEHAVING), images=_dense_crop())
    prefixes = [r for r in results if r.check == "prefixes" and not r.passed]
    assert prefixes and "IndexError at 101 bytes" in prefixes[0].detail


def test_overstated_full_quality_is_caught(tmp_path):
    plugin = tmp_path / "boastful.py"
    plugin.write_text(
        "import sys\n"
        f"sys.path.insert(0, {str(tmp_path.parent)!r})\n"
        "from bench import CodecSpec, hookimpl\n"
        "import importlib.util\n"
        f"spec = importlib.util.spec_from_file_location('bp', {BITPLANE!r})\n"
        "bp = importlib.util.module_from_spec(spec); spec.loader.exec_module(bp)\n"
        "class Boastful(bp.BitplaneCodec):\n"
        "    full_stream_psnr = 99.0\n"
        "    def encode(self, image):\n"
        "        return super().encode(image)[:-8]\n"
        "@hookimpl\n"
        "def register_codecs(register):\n"
        "    register(CodecSpec(name='boastful', factory=Boastful, summary='x'))\n"
    )
    failed = _failed(run_checks("boastful", plugin_files=(str(plugin),), images=_dense_crop()))
    assert "full-quality" in failed


def test_prefix_lengths_are_dense_after_the_header_then_spread():
    lengths = prefix_lengths_after_header(7, 10_000)
    dense = list(range(7, 7 + DENSE_BYTES + 1))
    assert lengths[: len(dense)] == dense
    after = lengths[len(dense) :]
    assert len(after) == SPREAD_CUTS + 1 and after[-2:] == [9_999, 10_000]
    assert max(b - a for a, b in zip(after[:-1], after[1:], strict=True)) < 10_000 / SPREAD_CUTS + 1
    assert prefix_lengths_after_header(7, 7 + DENSE_BYTES + SPREAD_CUTS) == list(
        range(7, 7 + DENSE_BYTES + SPREAD_CUTS + 1)
    )
    spread_only = prefix_lengths_after_header(7, 10_000, dense_bytes=0)
    assert spread_only[0] == 7 and len(spread_only) == SPREAD_CUTS + 2
    assert prefix_lengths_after_header(7, 7 + SPREAD_CUTS, 0) == list(range(7, 7 + SPREAD_CUTS + 1))


def test_monotone_reports_a_rise_as_no_drop_and_a_drop_as_positive():
    rising = monotone_result("x", [10, 20, 30], [20.0, 25.5, 31.0], 0.25, "{} bytes".format)
    assert rising.passed and rising.detail.startswith("PSNR never fell over 3 cuts")
    assert (
        "20.00 dB at 10 bytes to 31.00 dB at 30 bytes" in rising.detail and "-" not in rising.detail
    )
    falling = monotone_result("x", [10, 20, 30], [20.0, 25.5, 25.2], 0.25, "{} bytes".format)
    assert not falling.passed and "largest PSNR drop 0.300 dB, at 30 bytes" in falling.detail
    assert monotone_result("x", [1, 2], [30.0, 29.8], 0.25, "{} bytes".format).passed
    unjudged = monotone_result("x", [1, 2], [33.8, 32.3], 0.25, "{} bytes".format, judged=False)
    assert unjudged.passed and unjudged.detail.startswith("not judged (too small): largest PSNR")


def test_bench_check_says_what_it_checked_and_ends_with_a_verdict():
    done = subprocess.run(
        bench_command("check", "bitplane"), capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr
    progress = done.stderr.splitlines()
    assert progress[0].startswith("checks (progressive): encode gives bytes; deterministic;")
    assert progress[1].startswith("images: 4 crops (height x width) of bundled Kodak images:")
    assert "1x1 of kodim01.png at row 10, column 10" in progress[1]
    assert [line.split(":")[0] for line in progress[2:10]] == [
        f"[{i}/4] {name}"
        for i, name in enumerate(("64x96", "37x53", "1x1", "192x176"), 1)
        for _ in range(2)
    ]
    assert progress[-2:] == [
        "fresh process: decoding 12 streams of 4 images in one",
        progress[-1],
    ] and progress[-1].startswith("fresh process: done (")
    assert "PSNR never fell" in done.stdout and "drop -" not in done.stdout
    verdict = done.stdout.strip().splitlines()[-1]
    assert verdict.startswith("bench check bitplane: PASS, 31 checks on 4 images in ")


def test_bench_check_failure_names_the_failed_checks():
    done = subprocess.run(
        bench_command("check", "fragile"), capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 1
    verdict = done.stdout.strip().splitlines()[-1]
    assert verdict.startswith("bench check fragile: FAIL, 3 of ")
    assert "(prefixes on 64x96, prefixes on 37x53, prefixes on 192x176)" in verdict


def test_one_fresh_process_decodes_every_stream_and_reports_each_failure():
    import numpy as np
    from conftest import kodak_crop

    from bench.registry import load_registry

    codec = load_registry((BITPLANE,), entry_points=False).spec("bitplane").factory()
    image = kodak_crop("kodim05.png", 101, 203, 37, 53)
    stream = codec.encode(image)
    out = decode_in_fresh_process("bitplane", {}, [stream, stream[:3], stream[:500]], (BITPLANE,))
    assert np.array_equal(out[0], image) and out[1].startswith("PrefixTooShort")
    assert np.array_equal(out[2], codec.decode(stream[:500]))
