"""The learned plugins' registration helpers (plugins/learned/deferred.py) on the real built-in
plugins: a factory declared by its signature builds its codec with the declared defaults, bench
reads its parameters as from a plain function, and nothing heavy is imported before a call."""

from __future__ import annotations

import subprocess
import sys

import pytest

from bench.params import declared
from plugins.learned.deferred import deferred


def test_a_declared_factory_builds_its_codec_with_the_declared_defaults():
    pytest.importorskip("torch")
    from plugins.hc import make_hc
    from plugins.hc.codec import HCCodec

    codec = make_hc(levels=3)
    assert isinstance(codec, HCCodec)
    assert codec.parameters() == {
        "weights": "bundled:hc-n128-m192-l1800-it20000",
        "nested": True,
        "levels": 3,
        "chunk_bits": 1024,
        "reconstruction": "mean",
    }
    with pytest.raises(TypeError, match="level"):
        make_hc(level=3)


def test_bench_reads_a_declared_factory_like_a_plain_function():
    from plugins.plonq import _plonq

    declaration = declared(_plonq)
    assert list(declaration.parameters) == [
        "weights",
        "levels",
        "chunk_bits",
        "reconstruction",
        "memo",
    ]
    levels = declaration.parameters["levels"]
    assert (levels.annotation, levels.default) == (int, 4)
    assert levels.help.startswith("nested dead-zone levels")
    assert _plonq.__name__ == "_plonq" and _plonq.__module__ == "plugins.plonq"


def test_registering_the_learned_plugins_imports_no_codec_training_or_torch():
    code = (
        "import sys; from bench.registry import load_registry; "
        "r = load_registry(entry_points=False); assert not r.failures, r.failures; "
        "learned = ('plugins.plonq', 'plugins.dzq', 'plugins.deephq', 'plugins.hc', "
        "'plugins.learned'); heavy = [m for m in sys.modules if m == 'torch' or "
        "m.startswith(learned) and (m.endswith(('.codec', '.train')) or '.training' in m)]; "
        "print(heavy)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_deferred_calls_its_target_with_the_arguments():
    pytest.importorskip("torch")
    check = deferred("plugins.deephq.codec:check_bundled")
    assert check() is None  # the shipped DeepHQ parameters and base weights are found
    with pytest.raises(ModuleNotFoundError):
        deferred("plugins.nothing_here:main")([])
