"""Experiment config files: read TOML/JSON sections, apply ``--set`` overrides, check and
resolve them into the config dataclasses, and write the resolved config back as TOML (``tomli-w``).

Precedence: defaults < config file < ``--set SECTION.KEY=VALUE`` < explicit CLI flags.
"""
from __future__ import annotations

import dataclasses
import difflib
import json
import tomllib
from pathlib import Path
from typing import Any, Sequence

import tomli_w

from .config import SECTIONS, config_from_dict, config_to_dict
from .valuetypes import check_config_types

__all__ = ["ConfigError", "load_config_file", "parse_set", "resolve_config", "config_sections", "to_toml"]

_RUN_PATHS = ("train", "out", "test")
#: keys that moved to another section: (section, key) -> "new_section.key"
_MOVED = {("run", "thresholds"): "classifier.thresholds", ("run", "lm"): "run.encoder"}


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


def resolve_config(file_sections: dict[str, dict[str, Any]] | None = None,
                   overrides: Sequence[tuple[str, str, Any]] = ()) -> dict[str, Any]:
    """Merge defaults, a config file and overrides into the four config dataclasses.

    Args:
        file_sections: ``{section: {key: value}}`` from :func:`load_config_file`.
        overrides: ``(section, key, value)`` applied in order (``--set`` then flags).

    Returns:
        ``{"data": DataConfig, "lm": LMConfig, "classifier": ClassifierConfig, "run": RunConfig}``.

    Raises:
        ConfigError: unknown section or key (with a close match), a value of the wrong type,
            or a value the dataclass rejects; the message names ``section.key``.
    """
    merged = {s: dict((file_sections or {}).get(s, {})) for s in SECTIONS}
    for section, key, value in overrides:
        if section not in SECTIONS:
            hint = difflib.get_close_matches(section, list(SECTIONS), n=1)
            raise ConfigError(f"unknown config section {section!r} in {section}.{key}"
                              + (f" (did you mean {hint[0]}.{key}?)" if hint else "")
                              + "; expected data, lm, classifier, run or pretrain.")
        merged[section][key] = value
    for (section, key), new in _MOVED.items():
        if key in merged[section]:
            raise ConfigError(f"{section}.{key} is now {new} (one option, meaning what the Python API's "
                              f"argument of that name means): move it to [{new.split('.')[0]}].")
    out: dict[str, Any] = {}
    for section, cls in SECTIONS.items():
        values = merged[section]
        try:
            check_config_types(cls, values, where=section)
        except (KeyError, TypeError) as e:
            raise ConfigError(e.args[0]) from e
        if section == "run":
            for key in _RUN_PATHS:
                if values.get(key) is not None:
                    values[key] = str(Path(values[key]).expanduser().resolve())
            if isinstance(values.get("encoder"), str) and values["encoder"] not in ("lm", "random", ""):
                # a saved language model (a missing one fails when the run loads it, naming the fix)
                values["encoder"] = str(Path(values["encoder"]).expanduser().resolve())
            if values.get("extra_texts"):
                values["extra_texts"] = [str(Path(v).expanduser().resolve()) for v in values["extra_texts"]]
        try:
            out[section] = config_from_dict(cls, values, section=section)
        except (ValueError, TypeError) as e:
            raise ConfigError(f"[{section}] {e}") from e
    seed = out["run"].seed
    if seed is not None:
        for section in ("data", "lm", "classifier"):
            out[section] = dataclasses.replace(out[section], seed=seed)
    return out


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
