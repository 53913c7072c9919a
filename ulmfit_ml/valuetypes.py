"""The one type check of config values (CLI flags, config files, keyword options, saved
models): does a TOML/JSON value fit a config dataclass field's type hint, and the error that
names the key when it does not."""
from __future__ import annotations

import difflib
import os
import types
import typing
from typing import Any

__all__ = ["describe_type", "value_fits", "check_config_types"]


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


def value_fits(v: Any, hint: Any) -> bool:
    """Does ``v`` (a TOML/JSON value) fit the type hint? Lists stand for tuples.

    Hand-rolled because dataclasses do not check types, and the libraries that do disagree with
    TOML users here: dacite lets ``true`` pass as an int and rejects ``1`` for a float field,
    pydantic's lax mode turns ``"3"`` into ``3`` and its strict mode rejects a list for a tuple.
    A wrong type (a string where a list of epochs is expected) must fail with the key's name,
    not deep in training.
    """
    if hint is Any:
        return True
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        return any(value_fits(v, a) for a in typing.get_args(hint))
    if hint is type(None):
        return v is None
    if hint is bool:
        return isinstance(v, bool)
    if hint is int:
        return isinstance(v, int) and not isinstance(v, bool)
    if hint is float:
        return isinstance(v, (int, float)) and not isinstance(v, bool)
    if hint is str:
        return isinstance(v, (str, os.PathLike))  # paths are stored as strings (merge_config)
    if origin in (list, tuple):
        if not isinstance(v, (list, tuple)):
            return False
        args = typing.get_args(hint)
        if origin is tuple and args and args[-1] is not Ellipsis:
            return len(v) == len(args) and all(value_fits(x, a) for x, a in zip(v, args))
        return all(value_fits(x, args[0]) for x in v) if args else True
    if origin is dict or hint is dict:
        return isinstance(v, dict)
    return True


def check_config_types(cls: type, values: dict[str, Any], *, where: str) -> None:
    """The one type check of config values (CLI, config files, keyword options, saved models).

    ``where`` names the values in messages (``"classifier"`` -> ``classifier.epochs``).

    Raises:
        KeyError: an unknown key (with a close match and the accepted keys).
        TypeError: a value of the wrong type, naming ``where.key``, the expected and found types.
    """
    hints = typing.get_type_hints(cls)
    for key, value in values.items():
        if key not in hints:
            close = difflib.get_close_matches(key, list(hints), n=1)
            raise KeyError(f"unknown config key {where}.{key}" + (f" (did you mean {where}.{close[0]}?)" if close else "")
                           + f"; [{where}] accepts {', '.join(sorted(hints))}.")
        if not value_fits(value, hints[key]):
            fix = ""
            if typing.get_origin(hints[key]) in (tuple, list) or any(typing.get_origin(a) in (tuple, list)
                                                                      for a in typing.get_args(hints[key])):
                fix = f" (e.g. {key}=({value!r},) for one stage)" if not isinstance(value, (list, tuple, str)) else ""
            raise TypeError(f"{where}.{key} = {value!r}: expected {describe_type(hints[key])}, "
                            f"got {type(value).__name__}{fix}.")
