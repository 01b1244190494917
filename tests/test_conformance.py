"""The conformance suite passes a correct codec and catches each kind of broken one."""

from __future__ import annotations

from conftest import BITPLANE, MISBEHAVING

from bench.conformance import run_checks
from bench.testing import ConformanceSuite


def _failed(results):
    return {r.check for r in results if not r.passed}


class TestBitplaneConforms(ConformanceSuite):
    """The importable suite, used exactly as a codec author would use it."""

    codec = "bitplane"
    plugin_files = (BITPLANE,)


def test_checks_cover_odd_sizes_and_a_single_pixel():
    results = run_checks("bitplane", plugin_files=(BITPLANE,))
    assert {r.image for r in results} == {"64x96", "37x53", "1x1", "192x176"}
    assert {"encode", "deterministic", "prefixes", "monotone", "fresh-process", "full-quality"} <= {
        r.check for r in results
    }
    assert all(r.passed for r in results), [r for r in results if not r.passed]


def test_state_leaking_from_encoder_to_decoder_is_caught():
    failed = _failed(run_checks("leaky", plugin_files=(BITPLANE, MISBEHAVING)))
    assert "fresh-process" in failed


def test_decoder_raising_on_a_long_prefix_is_caught():
    results = run_checks("fragile", plugin_files=(BITPLANE, MISBEHAVING))
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
    failed = _failed(run_checks("boastful", plugin_files=(str(plugin),)))
    assert "full-quality" in failed
