"""What a plugin's ``__init__`` registers without importing its heavy modules: a function
imported on its first call (:func:`deferred`) and a codec factory declared by its signature
alone (:func:`codec_factory`).

bench reads a codec's parameters from its factory's signature and docstring
(:mod:`bench.params`) and calls a trainer's ``main`` only for ``bench train NAME``, so a plugin
registers both through its pluggy hooks at import time and leaves torch and its codec and
training modules to the first call. A target is written ``"package.module:name"``.
"""

from __future__ import annotations

import functools
import importlib
import inspect
from collections.abc import Callable
from typing import Any, TypeVar

Factory = TypeVar("Factory", bound=Callable[..., Any])


def load(target: str) -> Any:
    """The object ``target`` (``"package.module:name"``) names, importing its module."""
    module, _, name = target.partition(":")
    return getattr(importlib.import_module(module), name)


def deferred(target: str) -> Callable[..., Any]:
    """A function that imports ``target`` on each call (a dictionary look-up once imported) and
    returns what ``target`` returns for the same arguments: a trainer's ``main``, a codec's
    ``check``."""

    def call(*args: Any, **kwargs: Any) -> Any:
        return load(target)(*args, **kwargs)

    call.__doc__ = f"``{target}``, imported when called."
    return call


def codec_factory(target: str) -> Callable[[Factory], Factory]:
    """Decorator of a codec factory whose function only declares the codec's parameters:
    keyword-only, annotated and described in an ``Args:`` section, as bench reads them. Calling
    the factory imports ``target`` (the codec class) and returns ``target(**arguments)``, the
    declared defaults filled in; unknown names raise ``TypeError`` as a plain call would."""

    def wrap(declaration: Factory) -> Factory:
        signature = inspect.signature(declaration)

        @functools.wraps(declaration)
        def factory(**params: Any) -> Any:
            bound = signature.bind(**params)
            bound.apply_defaults()
            return load(target)(**bound.arguments)

        return factory  # type: ignore[return-value]

    return wrap
