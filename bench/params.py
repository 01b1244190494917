"""Typed codec parameters: a codec's declaration, and ``name[key=value]`` text coerced to it.

A codec declares its parameters as the annotated keyword parameters of its factory (a function
or a class, e.g. a frozen dataclass, whose ``__init__`` is annotated)::

    def make_spiht(*, levels: int = 5, weighted: bool = False) -> ProgressiveCodec:
        \"\"\"...

        Args:
            levels: wavelet decomposition levels.
            weighted: scale each band by its synthesis gain.
        \"\"\"

The harness reads it with :func:`declared` (``inspect.signature`` plus the annotations resolved
in the factory's module), and :func:`bind` turns the values of ``spiht[weighted=false]`` into
the declared types before the factory is called. Text is parsed per type:

* ``bool``: ``true``/``false``, ``yes``/``no``, ``1``/``0`` (any case); nothing else;
* ``int``, ``float`` (``0.5``, ``1e-3``), ``str`` (quotes around it are dropped);
* ``list[T]``, ``Sequence[T]`` (both give a list), ``tuple[T, ...]``, ``tuple[T1, T2]``:
  ``[8,4]`` (or ``(8,4)``);
* ``Literal["a", "b"]``: one of the listed values;
* ``X | None`` / ``Optional[X]``: ``none``, or a value of ``X``.

Values that already have the declared type (a run's stored configuration) pass unchanged, ints
are accepted where floats are declared, and a parameter without annotation takes a Python
literal (else the text). A factory with ``**kwargs`` accepts any further key that way.
Unknown keys and values that do not fit raise :class:`ParameterError` naming the key, the value
and the expected type, with the list of valid parameters.
"""

from __future__ import annotations

import ast
import inspect
import re
import sys
import types
import typing
from collections import abc
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

_EMPTY = inspect.Parameter.empty
_TRUE, _FALSE = ("true", "yes", "1"), ("false", "no", "0")


class ParameterError(ValueError):
    """A codec parameter that is unknown or whose value does not fit its declared type."""


@dataclass(frozen=True)
class Parameter:
    """One declared parameter: ``annotation`` is the resolved type (``Any`` when undeclared),
    ``default`` is :data:`inspect.Parameter.empty` for a required one, ``help`` one line."""

    name: str
    annotation: Any
    default: Any
    help: str = ""

    @property
    def required(self) -> bool:
        return self.default is _EMPTY

    def describe(self) -> str:
        """``levels: int = 5``, the way the parameter is written in the declaration."""
        default = "" if self.required else f" = {self.default!r}"
        return f"{self.name}: {type_name(self.annotation)}{default}"


@dataclass(frozen=True)
class Declaration:
    """The parameters of a codec factory; ``open`` when it also takes ``**kwargs``."""

    parameters: dict[str, Parameter]
    open: bool = False

    def describe(self) -> str:
        """One line listing every parameter with type and default (``none`` if there are none)."""
        text = ", ".join(p.describe() for p in self.parameters.values()) or "none"
        return text + (", and any other key=value (**kwargs)" if self.open else "")


def type_name(annotation: Any) -> str:
    """How an annotation reads in messages: ``int``, ``list[int]``, ``float | None``."""
    if annotation is Any or annotation is _EMPTY:
        return "any"
    if isinstance(annotation, type) and not typing.get_args(annotation):
        return annotation.__name__
    return re.sub(r"\b(typing|collections\.abc)\.", "", str(annotation)).replace("NoneType", "None")


def annotation_of(function: Callable, name: str, module: str | None = None) -> Any:
    """The resolved annotation of ``function``'s parameter ``name`` (or ``"return"``):
    string annotations (``from __future__ import annotations``) are evaluated in ``module``
    (default: the function's). ``Any`` when there is none; ``NameError`` when a name in it is
    not importable there.
    """
    raw = getattr(inspect.unwrap(function), "__annotations__", {}).get(name, _EMPTY)
    if raw is _EMPTY:
        return Any
    if not isinstance(raw, str):
        return raw
    home = sys.modules.get(module or getattr(function, "__module__", None) or "")
    namespace = {**vars(typing), **(vars(home) if home else {})}
    return eval(raw, namespace)  # noqa: S307 - the plugin's own annotation, as typing does


def declared(factory: Callable) -> Declaration:
    """Read ``factory``'s parameters: keyword-capable parameters with their resolved types,
    defaults and the one-line help from the docstring's ``Args:`` section.

    Raises ``TypeError`` when an annotation cannot be resolved (a plugin bug).
    """
    target = factory.__init__ if isinstance(factory, type) else factory
    signature = inspect.signature(factory)
    helps = _docstring_args(inspect.getdoc(factory) or "")
    parameters, is_open = {}, False
    for p in signature.parameters.values():
        if p.kind is p.VAR_KEYWORD:
            is_open = True
            continue
        if p.kind not in (p.KEYWORD_ONLY, p.POSITIONAL_OR_KEYWORD):
            continue
        try:
            annotation = annotation_of(target, p.name, factory.__module__)
        except NameError as exc:
            raise TypeError(
                f"cannot resolve the annotation of parameter {p.name!r} of {factory!r}: {exc}"
            ) from None
        parameters[p.name] = Parameter(p.name, annotation, p.default, helps.get(p.name, ""))
    return Declaration(parameters, is_open)


def _docstring_args(doc: str) -> dict[str, str]:
    """``{name: text}`` from a Google-style ``Args:`` section (continuation lines joined)."""
    helps: dict[str, str] = {}
    lines = doc.splitlines()
    stripped = [line.strip() for line in lines]
    if "Args:" not in stripped:
        return helps
    name, indent = "", 0
    for line in lines[stripped.index("Args:") + 1 :]:
        if not line.strip():
            continue
        depth = len(line) - len(line.lstrip())
        if depth == 0:
            break  # the next section
        match = re.match(r"\s+(\w+)(?:\s*\(.*?\))?:\s*(.*)", line)
        if match and (not name or depth <= indent):
            name, indent = match.group(1), depth
            helps[name] = match.group(2).strip()
        elif name:
            helps[name] += " " + line.strip()
    return helps


def bind(codec: str, factory: Callable, values: Mapping[str, Any]) -> dict[str, Any]:
    """``values`` (text from ``name[k=v]``, or already typed) coerced to ``factory``'s declared
    parameters; raises :class:`ParameterError` for an unknown key or a value that does not fit,
    naming ``codec``, the key, the value, the type and every valid parameter."""
    declaration = declared(factory)
    valid = f"{codec}'s parameters: {declaration.describe()}"
    bound = {}
    for key, value in values.items():
        parameter = declaration.parameters.get(key)
        if parameter is None and not declaration.open:
            raise ParameterError(f"{codec} has no parameter {key!r}; {valid}")
        annotation = parameter.annotation if parameter else Any
        try:
            bound[key] = coerce(value, annotation)
        except ValueError as exc:
            raise ParameterError(
                f"{codec}[{key}={_shown(value)}]: expected {type_name(annotation)} ({exc}); {valid}"
            ) from None
    return bound


def _shown(value: Any) -> str:
    return value if isinstance(value, str) else repr(value)


def coerce(value: Any, annotation: Any) -> Any:
    """``value`` as ``annotation``: text is parsed (see the module doc), a value of the right
    type passes. Raises ``ValueError`` saying what was expected."""
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if annotation is Any or annotation is _EMPTY:
        return _literal(value) if isinstance(value, str) else value
    if origin is typing.Annotated:
        return coerce(value, args[0])
    if origin in (typing.Union, types.UnionType):
        return _coerce_union(value, args)
    if origin is typing.Literal:
        for choice in args:
            if value == choice or (isinstance(value, str) and str(choice) == _unquote(value)):
                return choice
        raise ValueError(f"one of {', '.join(repr(c) for c in args)}")
    if origin in (list, tuple, abc.Sequence) or annotation in (list, tuple, abc.Sequence):
        return _coerce_sequence(value, origin or annotation, args)
    if annotation is type(None):
        if value is None or (isinstance(value, str) and value.strip().lower() == "none"):
            return None
        raise ValueError("none")
    if annotation is bool:
        return _coerce_bool(value)
    if annotation is int:
        return _coerce_number(value, int)
    if annotation is float:
        return _coerce_number(value, float)
    if annotation is str:
        return _unquote(value) if isinstance(value, str) else _fail_type(value, "text")
    if isinstance(annotation, type) and isinstance(value, annotation):
        return value
    raise ValueError(f"a value of {type_name(annotation)}, which text cannot give")


def _fail_type(value: Any, expected: str) -> Any:
    raise ValueError(f"{expected}, not {type(value).__name__}")


def _coerce_bool(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str):
        text = value.strip().lower()
        if text in _TRUE:
            return True
        if text in _FALSE:
            return False
    raise ValueError("true/false, yes/no or 1/0")


def _coerce_number(value: Any, kind: type) -> Any:
    if isinstance(value, bool):
        raise ValueError(f"a number, not {value!r}")
    if isinstance(value, int) or (kind is float and isinstance(value, float)):
        return kind(value)
    if isinstance(value, str):
        try:
            return kind(value.strip())
        except ValueError:
            pass
    raise ValueError("an integer" if kind is int else "a number such as 0.5 or 1e-3")


def _coerce_union(value: Any, args: tuple) -> Any:
    if type(None) in args and (
        value is None or (isinstance(value, str) and value.strip().lower() == "none")
    ):
        return None
    reasons = []
    for option in (a for a in args if a is not type(None)):
        try:
            return coerce(value, option)
        except ValueError as exc:
            reasons.append(str(exc))
    raise ValueError(" or ".join(reasons + (["none"] if type(None) in args else [])))


def _coerce_sequence(value: Any, container: type, args: tuple) -> Any:
    if isinstance(value, str):
        text = value.strip()
        if len(text) < 2 or (text[0], text[-1]) not in (("[", "]"), ("(", ")")):
            raise ValueError("a bracketed list such as [8,4]")
        items: list[Any] = _split_top_level(text[1:-1])
    elif isinstance(value, (list, tuple)):
        items = list(value)
    else:
        raise ValueError(f"a bracketed list such as [8,4], not {type(value).__name__}")
    if container is tuple and args and args[-1] is not Ellipsis:
        if len(items) != len(args):
            raise ValueError(f"exactly {len(args)} items")
        return tuple(coerce(item, kind) for item, kind in zip(items, args, strict=True))
    kind = args[0] if args else Any
    coerced = [coerce(item, kind) for item in items]
    return tuple(coerced) if container is tuple else coerced


def _split_top_level(text: str) -> list[str]:
    """Split at commas outside brackets; empty text gives no items."""
    items, depth, current = [], 0, ""
    for char in text:
        depth += {"[": 1, "(": 1, "]": -1, ")": -1}.get(char, 0)
        if char == "," and depth == 0:
            items.append(current.strip())
            current = ""
        else:
            current += char
    if current.strip() or items:
        items.append(current.strip())
    return items


def _unquote(text: str) -> str:
    text = text.strip()
    if len(text) >= 2 and text[0] == text[-1] and text[0] in "'\"":
        return text[1:-1]
    return text


def _literal(text: str) -> Any:
    try:
        return ast.literal_eval(text.strip())
    except (ValueError, SyntaxError):
        return text.strip()
