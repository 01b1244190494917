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

import dataclasses
import difflib
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
from typing import TYPE_CHECKING, Any

import pluggy

from bench import hookspecs
from bench.codec import Codec, CodecUnavailable, ProgressiveCodec, RateLadderCodec
from bench.params import annotation_of

if TYPE_CHECKING:
    import typer

#: Built-in plugin modules, loaded exactly as entry points are.
BUILTIN_PLUGINS: tuple[str, ...] = (
    "plugins.jpeg2000",
    "plugins.spiht",
    "plugins.bpg",
    "plugins.learned",
    "plugins.plonq",
    "plugins.dzq",
    "plugins.deephq",
    "plugins.hc",
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
    dependency or binary is missing. Its annotated keyword parameters are the codec's parameters
    (:mod:`bench.params`): ``name[key=value]`` values are coerced to those types before the call.
    ``check()``, if given, does the same test cheaply without building the codec (used by
    ``bench codecs``).

    ``kind`` (``"progressive"`` or ``"rate-ladder"``) is read from the factory: a codec class's
    own ``kind``, or the codec class its return annotation names. Give it only for a factory that
    says neither; the registry fills it in and rejects a ``kind`` that contradicts the factory.
    """

    name: str
    factory: Callable[..., Codec]
    summary: str
    kind: str | None = None
    check: Callable[[], None] | None = None
    plugin: str = ""


@dataclass(frozen=True)
class TrainerSpec:
    """A training application offered by a plugin, run as ``bench train NAME [ARGS...]``.

    ``main(argv)`` receives ARGS verbatim (an argparse-style entry point: ``--help`` prints its
    options) and returns the exit status. Import heavy modules inside ``main``.
    """

    name: str
    main: Callable[[list[str]], int]
    summary: str
    plugin: str = ""


@dataclass(frozen=True)
class PluginFailure:
    """A plugin that could not be imported, names a hook bench does not have, or whose hook
    raised; ``error`` names the plugin's problem in one line."""

    plugin: str
    error: str
    traceback: str


@dataclass
class Registry:
    """What the plugins provide (codecs, trainers, commands), the plugin manager that found
    them, and the plugins that failed."""

    manager: pluggy.PluginManager
    codecs: dict[str, CodecSpec] = field(default_factory=dict)
    trainers: dict[str, TrainerSpec] = field(default_factory=dict)
    failures: list[PluginFailure] = field(default_factory=list)

    def spec(self, name: str) -> CodecSpec:
        """Return the spec of codec ``name``; ``KeyError`` with the known names otherwise
        (and the closest names, for a misspelling)."""
        if name not in self.codecs:
            known = ", ".join(sorted(self.codecs)) or "none"
            close = difflib.get_close_matches(name, list(self.codecs), n=3)
            hint = f"; did you mean {' or '.join(close)}?" if close else ""
            broken = "".join(f"\n  plugin {f.plugin} failed: {f.error}" for f in self.failures)
            raise KeyError(f"unknown codec {name!r}{hint} (known: {known}){broken}")
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


def codec_kind(factory: Callable[..., Codec]) -> str | None:
    """The kind of codec ``factory`` builds, as the factory itself says: a codec class's
    ``kind``, or that of the codec class named by its return annotation; ``None`` if neither."""
    target: Any = factory
    if not isinstance(factory, type):
        try:
            target = annotation_of(factory, "return")
        except NameError:
            return None
    if isinstance(target, type) and issubclass(target, (ProgressiveCodec, RateLadderCodec)):
        return target.kind
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
    plugin_files: Iterable[str | Path] = (),
    *,
    entry_points: bool = True,
    cli: typer.Typer | None = None,
) -> Registry:
    """Load every plugin once and collect what it provides, in one pass.

    ``plugin_files`` are extra ``.py`` files (``--plugin``). ``entry_points=False`` skips
    installed third-party plugins (``--no-entry-points``). With ``cli``, each plugin's
    ``register_commands`` hook adds its sub-commands to that typer app.

    Per plugin: import (third-party ones probed first in a child process, see the module doc),
    register with pluggy, ``check_pending()`` (a hook name bench does not define, e.g. a
    misspelled ``register_codec``, is a failure naming the plugin and the hook), then its hooks.
    A plugin that fails any step contributes nothing and is recorded in ``failures``; the
    others still load.
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
        try:
            _check_hooks(manager, module)
            _collect(registry, manager, module, label, cli)
        except Exception as exc:
            manager.unregister(module)
            error = str(exc) if isinstance(exc, _PluginError) else f"{type(exc).__name__}: {exc}"
            tb = "" if isinstance(exc, _PluginError) else traceback.format_exc()
            registry.failures.append(PluginFailure(label, error, tb))
    return registry


class _PluginError(Exception):
    """A plugin broke a rule of the host (the message says which, in one line)."""


def _check_hooks(manager: pluggy.PluginManager, module: ModuleType) -> None:
    """``check_pending()`` for the plugin just registered: name each of its hooks that bench
    does not define (with the closest real hook name)."""
    try:
        manager.check_pending()
    except pluggy.PluginValidationError:
        known = sorted(name for name in dir(hookspecs) if name.startswith("register_"))
        unknown = sorted(
            caller.name for caller in manager.get_hookcallers(module) or () if not caller.has_spec()
        )
        parts = []
        for name in unknown:
            close = difflib.get_close_matches(name, known, n=1)
            parts.append(f"{name!r}" + (f" (did you mean {close[0]!r}?)" if close else ""))
        raise _PluginError(
            f"unknown hook {', '.join(parts)}; bench's hooks are {', '.join(known)}"
        ) from None


def _collect(
    registry: Registry,
    manager: pluggy.PluginManager,
    module: ModuleType,
    label: str,
    cli: typer.Typer | None,
) -> None:
    """Call ``module``'s hooks; add what they register only if every hook succeeded."""
    codecs: list[CodecSpec] = []
    trainers: list[TrainerSpec] = []

    def register_codec(spec: CodecSpec) -> None:
        if not isinstance(spec, CodecSpec):
            raise TypeError(f"register() takes a CodecSpec, got {type(spec).__name__}")
        codecs.append(spec)

    def register_trainer(spec: TrainerSpec) -> None:
        if not isinstance(spec, TrainerSpec):
            raise TypeError(f"register() takes a TrainerSpec, got {type(spec).__name__}")
        trainers.append(spec)

    def own(caller) -> list:
        return [impl for impl in caller.get_hookimpls() if impl.plugin is module]

    for impl in own(manager.hook.register_codecs):
        impl.function(register=register_codec)
    for impl in own(manager.hook.register_trainers):
        impl.function(register=register_trainer)
    commands = None
    if cli is not None:
        import typer

        commands = typer.Typer()
        for impl in own(manager.hook.register_commands):
            impl.function(cli=commands)
    specs = [_with_kind(spec, label) for spec in codecs]
    _refuse_duplicates("codec", [s.name for s in specs], registry.codecs)
    _refuse_duplicates("trainer", [t.name for t in trainers], registry.trainers)
    if cli is not None and commands is not None:
        taken = {_command_name(c) for c in cli.registered_commands}
        taken |= {g.name for g in cli.registered_groups}
        new = [_command_name(c) for c in commands.registered_commands]
        new += [g.name for g in commands.registered_groups]
        clash = sorted(set(new) & taken)
        if clash:
            raise _PluginError(f"command {', '.join(clash)} already exists")
        cli.registered_commands += commands.registered_commands
        cli.registered_groups += commands.registered_groups
    for spec in specs:
        registry.codecs[spec.name] = dataclasses.replace(spec, plugin=label)
    for trainer in trainers:
        registry.trainers[trainer.name] = dataclasses.replace(trainer, plugin=label)


def _command_name(command) -> str:
    """The name typer gives a registered command (its own, else the function's, dashed)."""
    return command.name or command.callback.__name__.replace("_", "-")


def _refuse_duplicates(what: str, names: list[str], taken: dict) -> None:
    for name in names:
        if name in taken:
            raise _PluginError(f"{what} name {name!r} already registered by {taken[name].plugin}")
    if len(set(names)) != len(names):
        raise _PluginError(f"registers a {what} name twice: {', '.join(names)}")


def _with_kind(spec: CodecSpec, label: str) -> CodecSpec:
    """``spec`` with ``kind`` read from its factory (see :class:`CodecSpec`)."""
    derived = codec_kind(spec.factory)
    if derived is not None and spec.kind is not None and spec.kind != derived:
        raise _PluginError(
            f"codec {spec.name!r} declares kind {spec.kind!r} but its factory builds a "
            f"{derived} codec"
        )
    return dataclasses.replace(spec, kind=derived or spec.kind or "progressive")
