"""Plugin discovery: built-ins, entry points and local files load alike; failures stay local."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from conftest import BITPLANE, MISBEHAVING, PLUGINS
from typer.testing import CliRunner

from bench.cli import app
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
    # a hang would raise TimeoutExpired; the bound is loose because the load is not ours to fix
    done = subprocess.run(
        [*command, "codecs"], capture_output=True, text=True, env=env, timeout=120
    )
    assert done.returncode == 0, done.stderr
    text = " ".join((done.stdout + done.stderr).split())
    assert "hang.py: its import did not finish within 2 s (hangs?); skipped" in text
    assert "exit7.py: its import calls sys.exit(7); skipped" in text
    assert "die.py: its import ended the process (exit status 5); skipped" in text
    assert "bitplane" in text and "jpeg2000" in text


COMMAND_PLUGIN = PLUGINS / "command_and_trainer.py"
cli = CliRunner(env={"COLUMNS": "300"})
ROOT = Path(__file__).resolve().parents[1]


def _bench(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    """The real ``bench`` entry point (``python -m bench``) in a fresh process."""
    return subprocess.run(
        [sys.executable, "-m", "bench", *args],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=ROOT,
        env={**os.environ, "COLUMNS": "300", **(env or {})},
    )


def test_plugin_file_commands_and_trainers_exist_before_the_command_line_is_parsed():
    """A plugin's command exists only when ``main`` loads the plugin before parsing: checked
    in fresh processes. ``bench train`` looks its trainers up when it runs: checked on the same
    app called in this process."""
    done = _bench("--no-entry-points", "--plugin", str(COMMAND_PLUGIN), "hello", "--name", "x")
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "hello x"
    done = _bench(f"--plugin={COMMAND_PLUGIN}", "--no-entry-points", "hello")
    assert done.returncode == 0 and done.stdout.strip() == "hello world", done.stderr
    # bench train NAME forwards ARGS verbatim, --help included, and returns the trainer's status
    args = ["--out", "/x", "--help", "-v", "positional", "--fail"]
    done = cli.invoke(app, ["--plugin", str(COMMAND_PLUGIN), "train", "echo", *args])
    assert json.loads(done.stdout) == args and done.exit_code == 4, done.output
    listing = cli.invoke(app, ["--plugin", str(COMMAND_PLUGIN), "train", "--help"])
    assert listing.exit_code == 0
    for name, summary in (("echo", "prints its arguments"), ("msh", "MeanScaleHyperprior")):
        assert name in listing.stdout and summary in listing.stdout
    unknown = cli.invoke(app, ["--plugin", str(COMMAND_PLUGIN), "train", "ecko"])
    assert unknown.exit_code == 2 and "did you mean echo?" in unknown.stderr
    without = _bench("--no-entry-points", "hello")
    assert without.returncode == 2 and "No such command" in without.stderr


def test_no_entry_points_drops_an_installed_plugins_commands(tmp_path):
    """A real installed distribution (dist-info on PYTHONPATH) adding ``bench ep-hello``."""
    source = COMMAND_PLUGIN.read_text().replace('"hello"', '"ep-hello"')
    (tmp_path / "ep_commands.py").write_text(source.replace('name="echo"', 'name="ep-echo"'))
    dist = tmp_path / "ep_commands-1.0.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: ep-commands\nVersion: 1.0\n")
    (dist / "entry_points.txt").write_text("[bench]\nep = ep_commands\n")
    env = {"PYTHONPATH": os.pathsep.join([str(tmp_path), os.environ.get("PYTHONPATH", "")])}
    done = _bench("ep-hello", env=env)
    assert done.returncode == 0 and done.stdout.strip() == "hello world", done.stderr
    assert "ep-echo" in _bench("train", "--help", env=env).stdout
    dropped = _bench("--no-entry-points", "ep-hello", env=env)
    assert dropped.returncode == 2 and "No such command" in dropped.stderr
    assert "ep-echo" not in _bench("--no-entry-points", "train", "--help", env=env).stdout


def test_misspelled_hook_fails_strict_naming_plugin_and_hook_and_the_others_load():
    misspelled = PLUGINS / "misspelled_hook.py"
    registry = load_registry([misspelled, BITPLANE], entry_points=False)
    (failure,) = registry.failures
    assert failure.plugin == str(misspelled.resolve())
    assert "unknown hook 'register_codec' (did you mean 'register_codecs'?)" in failure.error
    assert "never-registered" not in registry.codecs
    assert {"bitplane", "jpeg2000", "spiht"} <= set(registry.codecs)
    args = ["--no-entry-points", "--plugin", str(misspelled), "--plugin", BITPLANE, "codecs"]
    done = _bench(*args, "--strict")
    assert done.returncode == 1
    text = " ".join(done.stdout.split())
    assert f"plugin failed to load: {misspelled.resolve()}: unknown hook 'register_codec'" in text
    assert "bitplane" in text and "jpeg2000" in text
    assert cli.invoke(app, args).exit_code == 0  # without --strict: reported, not fatal


def test_codec_kind_comes_from_the_factory(tmp_path):
    registry = load_registry([BITPLANE], entry_points=False)
    assert registry.codecs["bitplane"].kind == "progressive"  # the class's own kind
    assert registry.codecs["bpg"].kind == "rate-ladder"  # the factory's return annotation
    assert registry.codecs["spiht"].kind == "progressive"
    wrong = tmp_path / "wrong_kind.py"
    wrong.write_text(
        textwrap.dedent(f"""
        import sys
        sys.path.insert(0, {str(PLUGINS)!r})
        from bitplane_codec import BitplaneCodec
        from bench import CodecSpec, hookimpl
        @hookimpl
        def register_codecs(register):
            register(CodecSpec(name="liar", factory=BitplaneCodec, summary="x", kind="rate-ladder"))
    """)
    )
    registry = load_registry([wrong], entry_points=False)
    assert "liar" not in registry.codecs
    assert any("declares kind 'rate-ladder'" in f.error for f in registry.failures)
