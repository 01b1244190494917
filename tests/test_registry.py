"""Plugin discovery: built-ins, entry points and local files load alike; failures stay local."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from conftest import BITPLANE, MISBEHAVING, PLUGINS

from bench.codec import CodecUnavailable
from bench.registry import BUILTIN_PLUGINS, CodecSpec, load_registry


def test_builtins_register_through_the_hook():
    registry = load_registry(entry_points=False)
    assert "jpeg2000" in registry.codecs
    assert registry.codecs["jpeg2000"].plugin in BUILTIN_PLUGINS
    assert not registry.failures, registry.failures


def test_local_plugin_file_adds_codecs():
    registry = load_registry([BITPLANE, MISBEHAVING], entry_points=False)
    assert {"bitplane", "crashy", "slow", "leaky"} <= set(registry.codecs)
    assert registry.codecs["bitplane"].plugin == str(Path(BITPLANE).resolve())


def test_broken_plugins_are_reported_and_the_others_still_load():
    files = [PLUGINS / "broken_import.py", BITPLANE, PLUGINS / "broken_hook.py"]
    registry = load_registry(files, entry_points=False)
    assert "bitplane" in registry.codecs and "jpeg2000" in registry.codecs
    errors = {Path(f.plugin).name: f.error for f in registry.failures}
    assert "ModuleNotFoundError" in errors["broken_import.py"]
    assert "broken hook" in errors["broken_hook.py"]


def test_duplicate_codec_name_is_a_failure_not_an_override(tmp_path):
    dup = tmp_path / "dup.py"
    dup.write_text(
        textwrap.dedent("""
        from bench import CodecSpec, hookimpl
        @hookimpl
        def register_codecs(register):
            register(CodecSpec(name="jpeg2000", factory=object, summary="impostor"))
    """)
    )
    registry = load_registry([dup], entry_points=False)
    assert registry.codecs["jpeg2000"].summary != "impostor"
    assert any("already registered" in f.error for f in registry.failures)


def test_entry_point_plugins_are_discovered(tmp_path, monkeypatch):
    """A real installed distribution (dist-info on sys.path) exposing the bench group."""
    (tmp_path / "thirdparty_codec.py").write_text(
        Path(BITPLANE).read_text().replace('name="bitplane"', 'name="thirdparty"')
    )
    dist = tmp_path / "thirdparty_codec-1.0.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: thirdparty-codec\nVersion: 1.0\n")
    (dist / "entry_points.txt").write_text("[bench]\nthirdparty = thirdparty_codec\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    registry = load_registry()
    assert "thirdparty" in registry.codecs
    assert registry.codecs["thirdparty"].plugin.startswith("thirdparty")
    assert "thirdparty" not in load_registry(entry_points=False).codecs
    sys.modules.pop("thirdparty_codec", None)


def test_unknown_codec_names_the_known_ones():
    registry = load_registry(entry_points=False)
    with pytest.raises(KeyError, match="jpeg2000"):
        registry.spec("nonexistent")


def test_unavailable_codec_reports_reason_and_fix(tmp_path):
    plugin = tmp_path / "needs_binary.py"
    plugin.write_text(
        textwrap.dedent("""
        from bench import CodecSpec, CodecUnavailable, hookimpl
        def check():
            raise CodecUnavailable("frobenc not found on PATH", "apt-get install frobenc")
        @hookimpl
        def register_codecs(register):
            register(CodecSpec(name="frob", factory=object, summary="x", check=check))
    """)
    )
    registry = load_registry([plugin], entry_points=False)
    problem = registry.availability("frob")
    assert isinstance(problem, CodecUnavailable)
    assert problem.fix == "apt-get install frobenc"
    assert registry.availability("jpeg2000") is None


def test_register_rejects_non_specs(tmp_path):
    plugin = tmp_path / "wrong.py"
    plugin.write_text(
        textwrap.dedent("""
        from bench import hookimpl
        @hookimpl
        def register_codecs(register):
            register("not a spec")
    """)
    )
    registry = load_registry([plugin], entry_points=False)
    assert any("CodecSpec" in f.error for f in registry.failures)
    assert isinstance(registry.codecs["jpeg2000"], CodecSpec)


def test_plugins_that_hang_or_exit_at_import_are_reported_and_skipped(tmp_path):
    """Issue 13: a plugin hanging at import hung every command; sys.exit(7) exited silently."""
    (tmp_path / "hang.py").write_text("import time\nwhile True:\n    time.sleep(1)\n")
    (tmp_path / "exit7.py").write_text("import sys\nsys.exit(7)\n")
    (tmp_path / "die.py").write_text("import os\nos._exit(5)\n")
    plugins = [tmp_path / "hang.py", tmp_path / "exit7.py", tmp_path / "die.py", BITPLANE]
    command = [sys.executable, "-m", "bench", "--no-entry-points"]
    for plugin in plugins:
        command += ["--plugin", str(plugin)]
    env = {**os.environ, "BENCH_PLUGIN_IMPORT_TIMEOUT": "2", "COLUMNS": "300"}
    start = time.monotonic()
    done = subprocess.run([*command, "codecs"], capture_output=True, text=True, env=env, timeout=60)
    assert time.monotonic() - start < 30
    assert done.returncode == 0, done.stderr
    text = " ".join((done.stdout + done.stderr).split())
    assert "hang.py: its import did not finish within 2 s (hangs?); skipped" in text
    assert "exit7.py: its import calls sys.exit(7); skipped" in text
    assert "die.py: its import ended the process (exit status 5); skipped" in text
    assert "bitplane" in text and "jpeg2000" in text
