"""The hooks a bench plugin may implement. Built-in and third-party plugins use the same ones.

A plugin is a module with functions decorated by :data:`hookimpl`::

    from bench import CodecSpec, hookimpl

    @hookimpl
    def register_codecs(register):
        register(CodecSpec(name="mycodec", factory=make_mycodec, summary="..."))

The hooks are :func:`register_codecs`, :func:`register_trainers` and :func:`register_commands`;
a decorated function with any other name (``register_codec``) makes the plugin fail to load,
naming the hook (``bench codecs --strict`` exits 1).

Third-party packages expose the module under the ``bench`` entry-point group; a single file can
be loaded with ``bench --plugin path/to/file.py``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

import pluggy

if TYPE_CHECKING:
    import typer

    from bench.registry import CodecSpec, TrainerSpec

hookspec = pluggy.HookspecMarker("bench")
hookimpl = pluggy.HookimplMarker("bench")


@hookspec
def register_codecs(register: Callable[[CodecSpec], None]) -> None:
    """Call ``register(spec)`` once per codec this plugin provides.

    Keep it cheap: import heavy or optional dependencies inside the codec factory, which raises
    :class:`bench.codec.CodecUnavailable` with a reason and a fix when they are missing.
    """


@hookspec
def register_trainers(register: Callable[[TrainerSpec], None]) -> None:
    """Call ``register(spec)`` once per training application (``bench train NAME [ARGS...]``).

    ``spec.main(argv)`` gets ARGS verbatim and returns the exit status; import training code
    inside it, not at module level.
    """


@hookspec
def register_commands(cli: typer.Typer) -> None:
    """Add sub-commands to the ``bench`` command line (e.g. ``bench train-export``); a name the
    core or another plugin already uses makes this plugin fail to load."""
