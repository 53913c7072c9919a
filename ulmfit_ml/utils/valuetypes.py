"""The one type check of config values (CLI flags, config files, keyword options, saved
models), done by ``jsonargparse``'s type-hint checker, and the error that names the key.

``jsonargparse`` turns a value into the field's type or refuses it: a TOML list becomes a
tuple, ``1`` is accepted for a float, a string that spells a number (``"3"`` from a command
line) becomes that number; ``true`` is refused for an int or a float and a string for a list.
This module only words the refusal for users (``classifier.epochs = 'abc': expected a list of
int, got str``): jsonargparse's own message spans several lines and names Python classes.

It also holds :func:`user_path`, the one normalisation of a path a user gives (a config value,
a flag, ``save``/``load`` arguments): ``~`` is expanded there and nowhere else.
"""
from __future__ import annotations

import difflib
import functools
import os
import re
import types
import typing
from pathlib import Path
from typing import Any

from jsonargparse import ArgumentError, ArgumentParser

__all__ = ["describe_type", "check_value", "check_keys", "check_config_types", "key_of_error", "user_path", "same_or_inside"]


def user_path(path: str | os.PathLike[str]) -> Path:
    """A path given by a user, as a :class:`~pathlib.Path` with ``~`` / ``~user`` expanded: the one
    place every reader, writer, ``save``/``load`` and the CLI normalise their paths (``save("~/m")``
    used to create a folder literally named ``~``)."""
    return Path(path).expanduser()


def same_or_inside(path: Path, other: Path) -> bool:
    """Is ``path`` the file or directory ``other`` (also through a link), or inside directory ``other``?
    The one test of "an output would land on an input" for writers and overwrites."""
    p, o = path.resolve(), other.resolve()
    if p == o or o in p.parents:
        return True
    try:
        return path.exists() and other.exists() and os.path.samefile(path, other)
    except OSError:
        return False


def describe_type(hint: Any) -> str:
    """A type hint in words: ``tuple[int, ...]`` -> ``a list of int``."""
    if hint is type(None):
        return "None"
    if hint is Any:
        return "any value"
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        return " or ".join(describe_type(a) for a in args)
    if origin in (list, tuple):
        if origin is tuple and args and args[-1] is not Ellipsis:
            return f"a list of {len(args)} {describe_type(args[0])}"
        return f"a list of {describe_type(args[0])}" if args else "a list"
    if origin is dict:
        return "a table {key = value}"
    return getattr(hint, "__name__", str(hint))


def _parser() -> ArgumentParser:
    # exit_on_error=False: a refused value raises ArgumentError (worded below) instead of exiting
    return ArgumentParser(exit_on_error=False, default_env=False)


@functools.lru_cache(maxsize=None)
def _class_parser(cls: type) -> ArgumentParser:
    """jsonargparse's parser of a config dataclass's fields, built once per class."""
    p = _parser()
    p.add_class_arguments(cls, fail_untyped=False, as_group=False)
    return p


@functools.lru_cache(maxsize=None)
def _hint_parser(hint: Any) -> ArgumentParser:
    p = _parser()
    p.add_argument("--value", type=hint)
    return p


_KEY = re.compile(r'Parser key "([^"]+)"')


def key_of_error(e: BaseException) -> str | None:
    """The dotted key a jsonargparse ``ArgumentError`` refused (``None`` if it names none)."""
    m = _KEY.search(str(e))
    return m.group(1) if m else None


def _type_error(where: str, key: str, value: Any, hint: Any) -> TypeError:
    fix = ""
    if (typing.get_origin(hint) in (tuple, list) or any(typing.get_origin(a) in (tuple, list) for a in typing.get_args(hint))) \
            and not isinstance(value, (list, tuple, str)):
        fix = f" (e.g. {key}=({value!r},) for one stage)"
    name = f"{where}.{key}" if where else key
    return TypeError(f"{name} = {value!r}: expected {describe_type(hint)}, got {type(value).__name__}{fix}.")


def check_value(value: Any, hint: Any, *, name: str = "value") -> Any:
    """``value`` converted to ``hint`` (a list to a tuple, ``1`` to ``1.0``).

    Raises:
        TypeError: the value does not fit, naming ``name``, the expected and the found type.
    """
    if isinstance(value, os.PathLike):
        value = os.fspath(value)  # paths are stored as strings
    try:
        return _hint_parser(hint).parse_object({"value": value}, defaults=False).value
    except ArgumentError:
        raise _type_error("", name, value, hint) from None


def check_keys(cls: type | typing.Iterable[str], keys: typing.Iterable[str], *, where: str,
               error: type[Exception] = KeyError) -> None:
    """The one unknown-key check (config files, ``--SECTION.KEY`` flags, keyword options, saved
    configs, ``arch`` dicts): every key is a field of config dataclass ``cls`` (or one of the names
    ``cls``), or ``error`` names each unknown key as ``where.key`` with its close match
    (jsonargparse names no alternative) and the accepted keys.

    ``error`` is the caller's exception type: ``TypeError`` for keyword options (as Python's own
    "unexpected keyword argument"), ``ValueError`` for a dict, ``ConfigError`` for the CLI.
    """
    known = list(typing.get_type_hints(cls)) if isinstance(cls, type) else list(cls)
    unknown = [k for k in dict.fromkeys(keys) if k not in known]
    if not unknown:
        return
    named = []
    for key in unknown:
        close = difflib.get_close_matches(str(key), known, n=1)
        named.append(f"{where}.{key}" + (f" (did you mean {where}.{close[0]}?)" if close else ""))
    raise error(f"unknown config key{'s' if len(unknown) > 1 else ''} {', '.join(named)}; "
                f"[{where}] accepts {', '.join(sorted(known))}.")


def check_config_types(cls: type, values: dict[str, Any], *, where: str,
                       unknown: type[Exception] = KeyError) -> dict[str, Any]:
    """The one type check of config values (CLI, config files, keyword options, saved models).

    ``where`` names the values in messages (``"classifier"`` -> ``classifier.epochs``).

    Returns:
        ``values`` converted to the fields' types (lists to tuples, ints to floats).

    Raises:
        KeyError: (or ``unknown``) an unknown key, from :func:`check_keys`.
        TypeError: a value of the wrong type, naming ``where.key``, the expected and found types.
    """
    hints = typing.get_type_hints(cls)
    check_keys(cls, values, where=where, error=unknown)
    values = {k: os.fspath(v) if isinstance(v, os.PathLike) else v for k, v in values.items()}
    try:
        ns = _class_parser(cls).parse_object(values, defaults=False)
    except ArgumentError as e:
        key = key_of_error(e)
        if key not in values:  # not a per-key refusal: jsonargparse's words on one line
            raise TypeError(f"[{where}] " + " ".join(str(e).split())) from None
        raise _type_error(where, key, values[key], hints[key]) from None
    return {k: ns[k] for k in values}
