"""Plugin discovery: built-ins and third-party plugins load through one guarded path.

Every plugin module (built-in, ``bench`` entry point, or local file) is imported and registered
with pluggy by :func:`load_registry`. A module that fails to import, or whose hook raises, is
recorded as a :class:`PluginFailure` and the others still load. ``bench codecs`` shows both.

Third-party plugins (entry points and files) are first imported in one child process, each
under :data:`IMPORT_TIMEOUT_S` seconds (``$BENCH_PLUGIN_IMPORT_TIMEOUT``): one that hangs,
exits (``sys.exit`` at import) or kills its process is reported as a failure with the reason
and skipped, so it cannot hang or end every command.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import importlib.util
import json
import os
import select
import subprocess
import sys
import time
import traceback
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType

import pluggy

from bench import hookspecs
from bench.codec import Codec, CodecUnavailable

#: Built-in plugin modules, loaded exactly as entry points are.
BUILTIN_PLUGINS: tuple[str, ...] = (
    "plugins.jpeg2000",
    "plugins.spiht",
    "plugins.bpg",
    "plugins.learned",
    "plugins.plonq",
    "plugins.dzq",
    "plugins.deephq",
)

ENTRY_POINT_GROUP = "bench"

#: Seconds a third-party plugin may take to import (``$BENCH_PLUGIN_IMPORT_TIMEOUT``).
IMPORT_TIMEOUT_S = 30.0
#: Extra seconds the probing child has to start Python before the first plugin's limit applies.
STARTUP_S = 10.0


@dataclass(frozen=True)
class CodecSpec:
    """One codec offered by a plugin.

    ``factory(**params)`` returns a :class:`~bench.codec.ProgressiveCodec` or
    :class:`~bench.codec.RateLadderCodec`; it raises :class:`~bench.codec.CodecUnavailable` when a
    dependency or binary is missing. ``check()``, if given, does the same test cheaply without
    building the codec (used by ``bench codecs``). ``kind`` is ``"progressive"`` or
    ``"rate-ladder"``.
    """

    name: str
    factory: Callable[..., Codec]
    summary: str
    kind: str = "progressive"
    check: Callable[[], None] | None = None
    plugin: str = ""


@dataclass(frozen=True)
class PluginFailure:
    """A plugin that could not be imported or whose hook raised."""

    plugin: str
    error: str
    traceback: str


@dataclass
class Registry:
    """The codecs found, the plugin manager that found them, and what failed."""

    manager: pluggy.PluginManager
    codecs: dict[str, CodecSpec] = field(default_factory=dict)
    failures: list[PluginFailure] = field(default_factory=list)

    def spec(self, name: str) -> CodecSpec:
        """Return the spec of codec ``name``; ``KeyError`` with the known names otherwise."""
        if name not in self.codecs:
            known = ", ".join(sorted(self.codecs)) or "none"
            broken = "".join(f"\n  plugin {f.plugin} failed: {f.error}" for f in self.failures)
            raise KeyError(f"unknown codec {name!r} (known: {known}){broken}")
        return self.codecs[name]

    def availability(self, name: str) -> CodecUnavailable | None:
        """``None`` if codec ``name`` can run here, else the reason it cannot."""
        spec = self.spec(name)
        if spec.check is None:
            return None
        try:
            spec.check()
        except CodecUnavailable as exc:
            return exc
        return None


def _import_file(path: Path) -> ModuleType:
    module_name = f"bench_local_plugin_{path.stem}"
    spec = importlib.util.spec_from_file_location(module_name, path)
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot import plugin file {path}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module
    spec.loader.exec_module(module)
    return module


def _plugin_sources(
    plugin_files: Iterable[str | Path], entry_points: bool
) -> list[tuple[str, Callable[[], ModuleType], dict | None]]:
    """``(label, loader, probe)``: ``probe`` describes a third-party plugin for
    :func:`_probe_imports` (``None`` for built-ins)."""
    sources: list[tuple[str, Callable[[], ModuleType], dict | None]] = [
        (name, lambda name=name: importlib.import_module(name), None) for name in BUILTIN_PLUGINS
    ]
    if entry_points:
        for ep in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP):
            probe = {"entry_point": [ep.name, ep.value, ep.group]}
            sources.append((f"{ep.name} ({ep.value})", ep.load, probe))
    for file in plugin_files:
        path = Path(file).resolve()
        sources.append((str(path), lambda path=path: _import_file(path), {"file": str(path)}))
    return sources


def _probe_child(report_fd: int, probes: list[dict]) -> None:
    """In the child: import each plugin, writing ``start``/``ok``/``error`` lines to the pipe."""
    with os.fdopen(report_fd, "w", buffering=1) as report:
        for index, probe in enumerate(probes):
            report.write(json.dumps(["start", index]) + "\n")
            try:
                if "file" in probe:
                    _import_file(Path(probe["file"]))
                else:
                    importlib.metadata.EntryPoint(*probe["entry_point"]).load()
            except SystemExit as exc:
                message = f"its import calls sys.exit({exc.code!r}); skipped"
                report.write(json.dumps(["error", index, message]) + "\n")
            except Exception:  # the import in the parent raises it again, with its traceback
                report.write(json.dumps(["ok", index]) + "\n")
            else:
                report.write(json.dumps(["ok", index]) + "\n")


def _probe_imports(probes: list[dict], timeout: float) -> dict[int, str]:
    """Import ``probes`` in a child process, each within ``timeout`` seconds; return
    ``{index: why it failed}`` (import error, ``sys.exit``, process ended, time-out)."""
    problems: dict[int, str] = {}
    start = 0
    while start < len(probes):
        read_fd, write_fd = os.pipe()
        code = "import sys, json; from bench.registry import _probe_child; "
        code += "_probe_child(int(sys.argv[1]), json.loads(sys.argv[2]))"
        child = subprocess.Popen(
            [sys.executable, "-c", code, str(write_fd), json.dumps(probes[start:])],
            pass_fds=(write_fd,),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        os.close(write_fd)
        current, buffer = None, b""
        deadline = time.monotonic() + timeout + STARTUP_S
        with os.fdopen(read_fd, "rb", buffering=0) as pipe:
            while True:
                ready, _, _ = select.select([pipe], [], [], max(0.0, deadline - time.monotonic()))
                if not ready:  # the current plugin's import is taking too long
                    child.kill()
                    current = start if current is None else current
                    problems[current] = (
                        f"its import did not finish within {timeout:g} s (hangs?); skipped"
                    )
                    break
                chunk = pipe.read(65536)
                if not chunk:  # the child ended
                    break
                buffer += chunk
                *lines, buffer = buffer.split(b"\n")
                for line in lines:
                    event, index, *detail = json.loads(line)
                    if event == "start":
                        current, deadline = start + index, time.monotonic() + timeout
                    else:
                        current = None
                        if event == "error":
                            problems[start + index] = detail[0]
        status = child.wait()
        if current is None:
            break
        if current not in problems:
            problems[current] = f"its import ended the process (exit status {status}); skipped"
        start = current + 1
    return problems


def load_registry(
    plugin_files: Iterable[str | Path] = (), *, entry_points: bool = True
) -> Registry:
    """Import every plugin and collect the codecs they register.

    ``plugin_files`` are extra ``.py`` files (``--plugin``). ``entry_points=False`` skips
    installed third-party plugins (used by tests that need a known set).
    """
    manager = pluggy.PluginManager("bench")
    manager.add_hookspecs(hookspecs)
    registry = Registry(manager=manager)
    sources = _plugin_sources(plugin_files, entry_points)
    third_party = [i for i, (_, _, probe) in enumerate(sources) if probe is not None]
    timeout = float(os.environ.get("BENCH_PLUGIN_IMPORT_TIMEOUT", IMPORT_TIMEOUT_S))
    probed = _probe_imports([sources[i][2] for i in third_party], timeout) if third_party else {}
    skipped = {third_party[k]: why for k, why in probed.items()}
    for index, (label, load, _) in enumerate(sources):
        if index in skipped:
            registry.failures.append(PluginFailure(label, skipped[index], ""))
            continue
        try:
            module = load()
            if manager.is_registered(module):
                continue
            manager.register(module, name=label)
        except (Exception, SystemExit) as exc:  # a broken plugin must not stop the others
            registry.failures.append(
                PluginFailure(label, f"{type(exc).__name__}: {exc}", traceback.format_exc())
            )
            continue
        _collect_codecs(registry, manager, module, label)
    return registry


def _collect_codecs(
    registry: Registry, manager: pluggy.PluginManager, module: ModuleType, label: str
) -> None:
    found: list[CodecSpec] = []

    def register(spec: CodecSpec) -> None:
        if not isinstance(spec, CodecSpec):
            raise TypeError(f"register() takes a CodecSpec, got {type(spec).__name__}")
        found.append(spec)

    for impl in manager.hook.register_codecs.get_hookimpls():
        if impl.plugin is not module:
            continue
        try:
            impl.function(register=register)
        except Exception as exc:
            manager.unregister(module)
            registry.failures.append(
                PluginFailure(label, f"{type(exc).__name__}: {exc}", traceback.format_exc())
            )
            return
    for spec in found:
        if spec.name in registry.codecs:
            registry.failures.append(
                PluginFailure(
                    label,
                    f"codec name {spec.name!r} already registered by "
                    f"{registry.codecs[spec.name].plugin}",
                    "",
                )
            )
            continue
        registry.codecs[spec.name] = CodecSpec(**{**spec.__dict__, "plugin": label})
