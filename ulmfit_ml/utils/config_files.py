"""Experiment config files: read TOML/JSON sections, layer them with ``--set`` overrides and
``--SECTION.KEY`` flags on the config dataclasses' defaults (jsonargparse generates the flags
from the dataclasses, checks the types and does the layering), and write the resolved config
back as TOML (``tomli-w``).

Precedence: defaults < config file < ``--set SECTION.KEY=VALUE`` < named CLI flags
(``--epochs``) < ``--SECTION.KEY=VALUE`` flags.
"""
from __future__ import annotations

import dataclasses
import difflib
import functools
import json
import tomllib
import typing
from pathlib import Path
from typing import Any, Sequence

import tomli_w
from jsonargparse import ArgumentError, ArgumentParser

from .config import SECTIONS, RunConfig, config_from_dict, config_to_dict, current_key, renamed_keys
from .valuetypes import check_keys, check_value, key_of_error, user_path

__all__ = ["ConfigError", "load_config_file", "parse_set", "resolve_config", "sections_parser", "config_sections",
           "to_toml", "check_run_keys", "RUN_KEY_COMMANDS"]

_RUN_PATHS = ("train", "out", "test")
#: [run] keys that only some commands read -> those commands; the others refuse a value for them
#: (:func:`check_run_keys`) instead of ignoring it
RUN_KEY_COMMANDS: dict[str, tuple[str, ...]] = {"folds": ("cv",), "test": ("cv",), "id_col": ("cv",),
                                                "save_fold_models": ("cv",), "keep_checkpoints": ("train",),
                                                "self_train": ("train",)}
#: keys that moved to another section: (section, key) -> "new_section.key"
_MOVED = {("run", "thresholds"): "classifier.threshold_strategy", ("run", "lm"): "run.encoder"}


class ConfigError(ValueError):
    """A bad command line or config value (unknown key, wrong type, invalid value): exit code 2."""


def load_config_file(path: str | Path) -> dict[str, dict[str, Any]]:
    """Read a ``.toml`` (or ``.json``) config into ``{section: {key: value}}``.

    Raises:
        ConfigError: missing file, unparsable file, unknown section, or a key outside a section.
    """
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"config file {p} does not exist.")
    suffix = p.suffix.lower()
    text = p.read_text(encoding="utf-8")
    if suffix == ".toml":
        try:
            raw = tomllib.loads(text)
        except tomllib.TOMLDecodeError as e:
            raise ConfigError(f"{p} is not valid TOML: {e}.") from e
    elif suffix == ".json":
        try:
            raw = json.loads(text)
        except json.JSONDecodeError as e:
            raise ConfigError(f"{p} is not valid JSON: {e}.") from e
        if not isinstance(raw, dict):
            raise ConfigError(f"{p} must hold a JSON object with sections data, lm, classifier, run.")
        raw.pop("command", None)  # config.json of a run directory records the command
    elif suffix in (".yaml", ".yml"):
        raise ConfigError(f"{p}: YAML configs are not supported (no YAML parser in the standard library); "
                          "write the same sections as TOML.")
    else:
        raise ConfigError(f"config file {p} must end in .toml (or .json).")
    out: dict[str, dict[str, Any]] = {}
    for k, v in raw.items():
        if k not in SECTIONS:
            if not isinstance(v, dict):
                raise ConfigError(f"{p}: key {k!r} is outside a section; put it under [data], [lm], [classifier] or [run].")
            hint = difflib.get_close_matches(k, list(SECTIONS), n=1)
            raise ConfigError(f"{p}: unknown section [{k}]" + (f" (did you mean [{hint[0]}]?)" if hint else "")
                              + "; expected [data], [lm], [classifier], [run].")
        if not isinstance(v, dict):
            raise ConfigError(f"{p}: [{k}] must be a section (a table), got {v!r}.")
        out[k] = dict(v)
    return out


def _parse_value(raw: str) -> Any:
    """A ``--set`` value: a TOML value if it parses as one (``3``, ``1e-3``, ``true``, ``[1, 1]``,
    ``"text"``), else the raw string (so ``--set data.text_col=body`` needs no quotes)."""
    raw = raw.strip()
    if raw.lower() in ("none", "null"):
        return None
    try:
        return tomllib.loads(f"v = {raw}")["v"]
    except tomllib.TOMLDecodeError:  # not a TOML value: the raw string
        return raw


def parse_set(item: str) -> tuple[str, str, Any]:
    """Parse ``SECTION.KEY=VALUE`` into ``(section, key, value)``.

    Raises:
        ConfigError: no ``=`` or no ``SECTION.`` prefix.
    """
    if "=" not in item:
        raise ConfigError(f"--set {item!r}: expected SECTION.KEY=VALUE, e.g. --set classifier.epochs=[1,1].")
    key, raw = item.split("=", 1)
    key = key.strip()
    if "." not in key:
        raise ConfigError(f"--set {item!r}: the key needs its section, e.g. classifier.{key} or data.{key}.")
    section, name = key.split(".", 1)
    return section, name, _parse_value(raw)


@functools.lru_cache(maxsize=None)
def sections_parser(sections: tuple[str, ...] = tuple(SECTIONS)) -> ArgumentParser:
    """jsonargparse's parser generated from the config dataclasses: one flag per key
    (``--classifier.epochs``, ``--lm.lr``), with the type of the field and its default."""
    p = ArgumentParser(prog="ulmfit-ml", exit_on_error=False, default_env=False,
                       description="Every config key is also a flag: --SECTION.KEY=VALUE, VALUE in YAML/JSON "
                                   "syntax (a list [1,1], a table {emb_sz: 200}, true, null). Precedence: defaults < "
                                   "--config < --set < named flags < these flags.")
    for section in sections:
        p.add_class_arguments(SECTIONS[section], section, fail_untyped=False, as_group=False)
    return p


def _refused(e: ArgumentError, given: dict[str, dict[str, Any]]) -> ConfigError:
    """jsonargparse's refusal as one line naming ``section.key`` (the value as given)."""
    key = key_of_error(e)
    section, _, name = (key or "").partition(".")
    if section in given and name in given[section]:
        hint = typing.get_type_hints(SECTIONS[section])[name]
        try:
            check_value(given[section][name], hint, name=key)
        except TypeError as te:
            return ConfigError(te.args[0])
    return ConfigError(" ".join(str(e).split()))


def _check_keys(section: str, keys: Sequence[str], *, where: str = "") -> None:
    """Unknown sections and keys, with the close match (jsonargparse names no alternative)."""
    if section not in SECTIONS:
        hint = difflib.get_close_matches(section, list(SECTIONS), n=1)
        raise ConfigError(f"unknown config section {section!r}{where}" + (f" (did you mean {hint[0]}?)" if hint else "")
                          + "; expected data, lm, classifier, run or pretrain.")
    for key in keys:
        if (section, key) in _MOVED:
            new = _MOVED[(section, key)]
            raise ConfigError(f"{section}.{key} is now {new} (one option, meaning what the Python API's "
                              f"argument of that name means): move it to [{new.split('.')[0]}].")
    check_keys(SECTIONS[section], keys, where=section, error=ConfigError)


def resolve_config(file_sections: dict[str, dict[str, Any]] | None = None,
                   overrides: Sequence[tuple[str, str, Any]] = (), *, flags: Sequence[str] = (),
                   sections: Sequence[str] = tuple(SECTIONS)) -> dict[str, Any]:
    """Merge defaults, a config file, overrides and ``--SECTION.KEY`` flags into the config
    dataclasses, with jsonargparse (:func:`sections_parser`) doing the layering and the types.

    Args:
        file_sections: ``{section: {key: value}}`` from :func:`load_config_file`.
        overrides: ``(section, key, value)`` applied in order (``--set``, then the CLI's named flags).
        flags: ``--SECTION.KEY=VALUE`` command-line flags, applied last.
        sections: the sections to resolve (``("pretrain",)`` for ``ulmfit-ml pretrain``).

    Returns:
        ``{section: dataclass}``, e.g. ``{"data": DataConfig, "lm": LMConfig, ...}``.

    Raises:
        ConfigError: unknown section or key (with a close match), a value of the wrong type,
            or a value the dataclass rejects; the message names ``section.key``.
    """
    sections = tuple(sections)
    file_sections = {s: renamed_keys(s, dict(v), error=ConfigError) for s, v in (file_sections or {}).items()}
    overrides = [(s, current_key(s, k), v) for s, k, v in overrides]
    flags = [_current_flag(f) for f in flags]
    given_flags = _check_given_keys(file_sections, overrides, flags, sections)
    cfg = _layer(sections_parser(sections), sections, file_sections, overrides, flags, given_flags)
    out: dict[str, Any] = {}
    for section in sections:
        values = cfg[section].as_dict()
        if section == "run":
            values = _resolved_run_paths(values)
        try:
            out[section] = config_from_dict(SECTIONS[section], values, section=section)
        except (ValueError, TypeError) as e:
            raise ConfigError(f"[{section}] {e}") from e
    seed = out["run"].seed if "run" in out else None
    if seed is not None:
        for section in ("data", "lm", "classifier"):
            out[section] = dataclasses.replace(out[section], seed=seed)
    return out


def _flag_parts(item: str) -> tuple[str, str, str, str]:
    """``--SECTION.KEY[=VALUE]`` as ``(section, key, "=" or "", value)``: the one reading of a flag."""
    name, eq, raw = item[2:].partition("=")
    section, _, key = name.partition(".")
    return section, key, eq, raw


def _current_flag(item: str) -> str:
    """``--SECTION.KEY[=VALUE]`` with a renamed key under its current name."""
    if not item.startswith("--") or "." not in item:
        return item
    section, key, eq, raw = _flag_parts(item)
    return f"--{section}.{current_key(section, key)}{eq}{raw}"


def _check_given_keys(file_sections: dict[str, dict[str, Any]], overrides: Sequence[tuple[str, str, Any]],
                      flags: Sequence[str], sections: tuple[str, ...]) -> dict[str, dict[str, Any]]:
    """Every section and key given (file, overrides, flags) is known and read by this command;
    returns the flags' ``{section: {key: raw value}}``."""
    for section, values in file_sections.items():
        _check_keys(section, list(values))
    for section, key, _ in overrides:
        _check_keys(section, [key], where=f" in {section}.{key}")
    given_flags: dict[str, dict[str, Any]] = {}
    for i, item in enumerate(flags):
        if item.startswith("--"):
            section, key, eq, raw = _flag_parts(item)
            _check_keys(section, [key] if key else [], where=f" in {item}")
            raw = raw if eq else (flags[i + 1] if i + 1 < len(flags) and not flags[i + 1].startswith("--") else "")
            given_flags.setdefault(section, {})[key] = raw
    outside = sorted({s for s in file_sections if s not in sections and file_sections[s]}
                     | {s for s, _, _ in overrides if s not in sections} | {s for s in given_flags if s not in sections})
    if outside:
        raise ConfigError(f"this command uses [{'], ['.join(sections)}] options only; drop [{'], ['.join(outside)}].")
    return given_flags


def _layer(parser: ArgumentParser, sections: tuple[str, ...], file_sections: dict[str, dict[str, Any]],
           overrides: Sequence[tuple[str, str, Any]], flags: Sequence[str],
           given_flags: dict[str, dict[str, Any]]) -> Any:
    """jsonargparse's namespace of defaults < file < overrides (in order) < flags; a refusal
    names ``section.key``."""
    try:
        cfg = parser.parse_object({s: v for s, v in file_sections.items() if s in sections})
    except ArgumentError as e:
        raise _refused(e, file_sections) from None
    for section, key, value in overrides:
        try:
            cfg = parser.parse_object({section: {key: value}}, namespace=cfg, defaults=False)
        except ArgumentError as e:
            raise _refused(e, {section: {key: value}}) from None
    if flags:
        try:
            cfg = parser.parse_args(list(flags), namespace=cfg, defaults=False)
        except ArgumentError as e:
            raise _refused(e, given_flags) from None
    return cfg


def _resolved_run_paths(values: dict[str, Any]) -> dict[str, Any]:
    """``[run]``'s file options as absolute paths (``~`` expanded): a run reads them from anywhere."""
    for key in _RUN_PATHS:
        if values.get(key) is not None:
            values[key] = str(user_path(values[key]).resolve())
    if isinstance(values.get("encoder"), str) and values["encoder"] not in ("lm", "random", ""):
        # a saved language model (a missing one fails when the run loads it, naming the fix)
        values["encoder"] = str(user_path(values["encoder"]).resolve())
    if values.get("extra_texts"):
        values["extra_texts"] = [str(user_path(v).resolve()) for v in values["extra_texts"]]
    return values


def check_run_keys(command: str, run_cfg: RunConfig) -> None:
    """Refuse a ``[run]`` key that ``ulmfit-ml COMMAND`` would ignore (:data:`RUN_KEY_COMMANDS`).

    A key counts as set when it differs from its default, wherever it came from (config file,
    ``--set``, ``--run.KEY`` flags, Python), so one config file can still serve several
    commands as long as it sets only what each reads.

    Raises:
        ConfigError: one line naming the key and the command that reads it.
    """
    default = RunConfig()
    for key, commands in RUN_KEY_COMMANDS.items():
        value = getattr(run_cfg, key)
        if command not in commands and value != getattr(default, key):
            users = " and ".join(f"`ulmfit-ml {c}`" for c in commands)
            raise ConfigError(f"run.{key} = {value!r} is read by {users} only; `ulmfit-ml {command}` would ignore it. "
                              f"Drop it from the config / command line, or run {users}.")


def config_sections(cfgs: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The resolved dataclasses as plain ``{section: {key: value}}`` (for config.toml/json).

    ``run.overwrite`` is stored as ``false``: rerunning a saved config must not delete the
    run directory it was read from.
    """
    out = {s: config_to_dict(c) for s, c in cfgs.items()}
    out["run"]["overwrite"] = False
    return out


def to_toml(sections: dict[str, dict[str, Any]], *, header: str = "") -> str:
    """``{section: {key: value}}`` as TOML (written by ``tomli-w``), ``header`` as leading comments.

    TOML has no null: a key set to ``None`` is left out (reading the file back leaves it at its
    default) and listed in a closing comment.

    Raises:
        ValueError: ``None`` inside a list (TOML cannot hold it).
        TypeError: a value TOML cannot hold.
    """
    clean: dict[str, dict[str, Any]] = {}
    unset: list[str] = []
    for name, values in sections.items():
        clean[name] = {}
        for k, v in values.items():
            if v is None:
                unset.append(f"{name}.{k}")
            elif isinstance(v, (list, tuple)) and any(x is None for x in v):
                raise ValueError(f"TOML cannot hold None inside a list ({name}.{k} = {v!r}).")
            else:
                clean[name][k] = list(v) if isinstance(v, tuple) else v
    try:
        body = tomli_w.dumps(clean)
    except TypeError as e:
        raise TypeError(f"Cannot write object to TOML: {e}") from e
    head = "".join(f"# {h}\n" if h else "#\n" for h in header.splitlines())
    tail = f"\n# not set (defaults): {', '.join(unset)}\n" if unset else ""
    return head + ("\n" if head else "") + body + tail
