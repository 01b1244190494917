"""Plugin discovery: built-ins and third-party plugins load through one guarded path.

Every plugin module (built-in, ``bench`` entry point, or local file) is imported and registered
with pluggy by :func:`load_registry`. A module that fails to import, or whose hook raises, is
recorded as a :class:`PluginFailure` and the others still load. ``bench codecs`` shows both.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import importlib.util
import sys
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
) -> list[tuple[str, Callable[[], ModuleType]]]:
    sources: list[tuple[str, Callable[[], ModuleType]]] = [
        (name, lambda name=name: importlib.import_module(name)) for name in BUILTIN_PLUGINS
    ]
    if entry_points:
        for ep in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP):
            sources.append((f"{ep.name} ({ep.value})", ep.load))
    for file in plugin_files:
        path = Path(file).resolve()
        sources.append((str(path), lambda path=path: _import_file(path)))
    return sources


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
    for label, load in _plugin_sources(plugin_files, entry_points):
        try:
            module = load()
            if manager.is_registered(module):
                continue
            manager.register(module, name=label)
        except Exception as exc:  # a broken plugin must not stop the others
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
