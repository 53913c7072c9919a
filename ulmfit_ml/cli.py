"""The ``ulmfit-ml`` command line: lm, train, evaluate, predict, cv, pretrain.

One experiment = one config file with the sections ``[data]``, ``[lm]``, ``[classifier]``
(the fields of :class:`~ulmfit_ml.config.DataConfig`, :class:`~ulmfit_ml.config.LMConfig`,
:class:`~ulmfit_ml.config.ClassifierConfig`) and ``[run]`` (:class:`RunConfig`: files, run
directory, folds ...). Precedence, lowest first: defaults < ``--config`` file < ``--set
SECTION.KEY=VALUE`` < explicit flags (``--epochs``, ``--arch``, ``--seed`` ...).

Exit codes: 0 success, 1 error (bad data, missing file ...), 2 bad command line or config
(unknown key, bad value), 130 interrupted (the run directory keeps its last checkpoint).
"""
from __future__ import annotations

import argparse
import dataclasses
import difflib
import json
import signal
import sys
import time
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

from .config import ClassifierConfig, DataConfig, LMConfig, PretrainConfig, config_from_dict, config_to_dict
from .pretrain import pretrain_lm

__all__ = ["main", "build_parser", "RunConfig", "ConfigError", "load_config_file", "resolve_config",
           "parse_set", "config_sections", "SECTIONS"]

EXIT_OK, EXIT_ERROR, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130


class ConfigError(ValueError):
    """A bad command line or config value (unknown key, wrong type, invalid value): exit code 2."""


@dataclass
class RunConfig:
    """The ``[run]`` section: files and experiment plumbing (everything that is not a model option).

    Paths are relative to the current directory; the resolved config stores them absolute.
    """

    train: str | None = None  #: labelled data file (.csv, .tsv, .parquet, .jsonl)
    out: str | None = None  #: run directory; default runs/<command>-<date>-<time>
    lm: str | None = None  #: a saved language model (or a run directory with lm/) to reuse instead of fine-tuning
    encoder: str = "lm"  #: "lm" (fine-tuned language model) or "random" (no LM: an ablation)
    extra_texts: list[str] = field(default_factory=list)  #: unlabelled files whose texts join the LM corpus
    thresholds: str = "per_label"  #: tune on validation/OOF: "per_label", "global" or "none" (0.5)
    seed: int | None = None  #: when set, replaces the seeds of [data], [lm] and [classifier]
    folds: int = 5  #: cv: number of folds
    test: str | None = None  #: cv: unlabelled file predicted by the average of the fold models
    id_col: str | None = None  #: cv: id column copied to the OOF and test predictions
    save_fold_models: bool = False  #: cv: save every fold's classifier under folds/
    keep_checkpoints: bool = False  #: train: keep checkpoints/ after a successful run
    plots: bool = True  #: write plots/ (needs matplotlib)
    overwrite: bool = False  #: replace an existing run directory

    def __post_init__(self) -> None:
        if self.encoder not in ("lm", "random"):
            raise ValueError(f"encoder must be 'lm' or 'random', got {self.encoder!r}.")
        if self.thresholds not in ("per_label", "global", "none"):
            raise ValueError(f"thresholds must be 'per_label', 'global' or 'none', got {self.thresholds!r}.")
        if isinstance(self.folds, bool) or not isinstance(self.folds, int) or self.folds < 2:
            raise ValueError(f"folds must be an int >= 2, got {self.folds!r}.")
        if self.encoder == "random" and self.lm is not None:
            raise ValueError("encoder = 'random' trains without a language model: remove lm = ... or use encoder = 'lm'.")


#: Config sections -> dataclasses.
SECTIONS: dict[str, type] = {"data": DataConfig, "lm": LMConfig, "classifier": ClassifierConfig, "run": RunConfig,
                             "pretrain": PretrainConfig}
_RUN_PATHS = ("train", "out", "lm", "test")


# ---------------------------------------------------------------------- config files
def _tomllib() -> Any:
    try:
        import tomllib
    except ImportError:  # Python 3.10
        try:
            import tomli as tomllib  # type: ignore[no-redef]
        except ImportError as e:
            raise ConfigError("Reading TOML needs Python 3.11+ or the `tomli` package (pip install tomli); "
                              "or write the config as JSON.") from e
    return tomllib


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
        toml = _tomllib()
        try:
            raw = toml.loads(text)
        except toml.TOMLDecodeError as e:
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
        return _tomllib().loads(f"v = {raw}")["v"]
    except ConfigError:
        try:
            return json.loads(raw)
        except json.JSONDecodeError:
            return raw
    except Exception:  # noqa: BLE001 - TOMLDecodeError (tomllib or tomli): not a TOML value
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


def _describe(hint: Any) -> str:
    """A type hint in words: ``tuple[int, ...]`` -> ``a list of int``."""
    if hint is type(None):
        return "None"
    if hint is Any:
        return "any value"
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        return " or ".join(_describe(a) for a in args)
    if origin in (list, tuple):
        if origin is tuple and args and args[-1] is not Ellipsis:
            return f"a list of {len(args)} {_describe(args[0])}"
        return f"a list of {_describe(args[0])}" if args else "a list"
    if origin is dict:
        return "a table {key = value}"
    return getattr(hint, "__name__", str(hint))


def _matches(v: Any, hint: Any) -> bool:
    """Does ``v`` (a TOML/JSON value) fit the type hint? Lists stand for tuples.

    Hand-rolled because dataclasses do not check types, and a wrong type (a string where a
    list of epochs is expected) should fail with the key's name, not deep in training.
    """
    if hint is Any:
        return True
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        return any(_matches(v, a) for a in typing.get_args(hint))
    if hint is type(None):
        return v is None
    if hint is bool:
        return isinstance(v, bool)
    if hint is int:
        return isinstance(v, int) and not isinstance(v, bool)
    if hint is float:
        return isinstance(v, (int, float)) and not isinstance(v, bool)
    if hint is str:
        return isinstance(v, str)
    if origin in (list, tuple):
        if not isinstance(v, (list, tuple)):
            return False
        args = typing.get_args(hint)
        if origin is tuple and args and args[-1] is not Ellipsis:
            return len(v) == len(args) and all(_matches(x, a) for x, a in zip(v, args))
        return all(_matches(x, args[0]) for x in v) if args else True
    if origin is dict or hint is dict:
        return isinstance(v, dict)
    return True


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
    out: dict[str, Any] = {}
    for section, cls in SECTIONS.items():
        values = merged[section]
        hints = typing.get_type_hints(cls)
        for key, value in values.items():
            if key not in hints:
                close = difflib.get_close_matches(key, list(hints), n=1)
                raise ConfigError(f"unknown config key {section}.{key}" + (f" (did you mean {section}.{close[0]}?)" if close else "")
                                  + f"; [{section}] accepts {', '.join(sorted(hints))}.")
            if not _matches(value, hints[key]):
                raise ConfigError(f"{section}.{key} = {value!r}: expected {_describe(hints[key])}, "
                                  f"got {type(value).__name__}.")
        if section == "run":
            for key in _RUN_PATHS:
                if values.get(key) is not None:
                    values[key] = str(Path(values[key]).expanduser().resolve())
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


# ---------------------------------------------------------------------- argument parsing
def _comma_list(kind: type) -> Any:
    def parse(s: str) -> list:
        try:
            return [kind(x.strip()) for x in s.split(",") if x.strip()]
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a comma-separated list of {kind.__name__}, got {s!r}") from None
    parse.__name__ = f"list of {kind.__name__}"
    return parse


#: flag dest -> the config keys it sets
_FLAG_KEYS: dict[str, list[tuple[str, str]]] = {
    "train": [("run", "train")], "out": [("run", "out")], "lm": [("run", "lm")], "seed": [("run", "seed")],
    "overwrite": [("run", "overwrite")], "folds": [("run", "folds")], "test": [("run", "test")],
    "id_col": [("run", "id_col")], "text_col": [("data", "text_col")], "label_delim": [("data", "label_delim")],
    "label_col": [("data", "label_col")], "label_cols": [("data", "label_cols")],
    "arch": [("lm", "arch")], "lm_epochs": [("lm", "epochs")], "epochs": [("classifier", "epochs")],
    "device": [("lm", "device"), ("classifier", "device")], "quiet": [("lm", "quiet"), ("classifier", "quiet")],
}


def _flag_overrides(args: argparse.Namespace) -> list[tuple[str, str, Any]]:
    out: list[tuple[str, str, Any]] = []
    for dest, keys in _FLAG_KEYS.items():
        v = getattr(args, dest, None)
        if v is None or v is False:
            continue
        for section, key in keys:
            out.append((section, key, v))
        if dest == "label_col":  # one label format replaces the other
            out.append(("data", "label_cols", None))
        elif dest == "label_cols":
            out.append(("data", "label_col", None))
        elif dest == "lm":
            out.append(("run", "encoder", "lm"))
    return out


def _config_from_args(args: argparse.Namespace, *, base: dict[str, dict[str, Any]] | None = None) -> dict[str, Any]:
    file_sections = base if base is not None else (load_config_file(args.config) if getattr(args, "config", None) else {})
    sets = [parse_set(s) for s in (getattr(args, "set", None) or [])]
    return resolve_config(file_sections, sets + _flag_overrides(args))


_EPILOG = """\
config file (TOML) example:
  [data]
  text_col = "text"
  label_col = "labels"          # or label_cols = ["billing", "shipping", ...]
  label_delim = ";"
  [lm]
  arch = "cpu"                  # tiny | small | cpu | paper, or {emb_sz = 200, n_hid = 512, n_layers = 2}
  epochs = 2
  [classifier]
  epochs = [1, 1, 1, 2]
  lrs = [2e-2, 1e-2, 5e-3, 1e-3]
  [run]
  train = "data/train.csv"
  out = "runs/exp1"

precedence: defaults < --config < --set SECTION.KEY=VALUE < explicit flags.
"""


def build_parser() -> argparse.ArgumentParser:
    """The ``ulmfit-ml`` argument parser (one sub-parser per command)."""
    common = argparse.ArgumentParser(add_help=False)
    g = common.add_argument_group("general")
    g.add_argument("--debug", action="store_true", help="show the full traceback on errors")
    g.add_argument("--quiet", action="store_true", default=None,
                   help="no progress bars or log lines on the terminal (run.log still gets them)")
    g.add_argument("--device", help="cpu, cuda or cuda:N (default: cuda when available)")

    cfg = argparse.ArgumentParser(add_help=False)
    g = cfg.add_argument_group("configuration")
    g.add_argument("--config", metavar="FILE", help="experiment config (.toml, or .json) with [data] [lm] [classifier] [run]")
    g.add_argument("--set", action="append", metavar="SECTION.KEY=VALUE",
                   help="override one config key, VALUE in TOML syntax (repeatable): --set classifier.epochs=[1,1] "
                        "--set lm.lr=1e-3 --set data.text_col=body")
    g.add_argument("--seed", type=int, help="seed of the split, the LM and the classifier ([run] seed)")
    g.add_argument("--out", metavar="DIR", help="run directory to write ([run] out; default runs/<command>-<time>)")
    g.add_argument("--overwrite", action="store_true", default=None,
                   help="replace an existing run directory (only one ulmfit_ml wrote; never the current directory "
                        "or one holding an input)")

    data = argparse.ArgumentParser(add_help=False)
    g = data.add_argument_group("data")
    g.add_argument("--train", metavar="FILE", help="labelled data: .csv .tsv .parquet .jsonl ([run] train)")
    g.add_argument("--text-col", help="text column ([data] text_col)")
    g.add_argument("--label-col", help="one delimited label column, e.g. 'a;b' ([data] label_col)")
    g.add_argument("--label-cols", type=_comma_list(str), metavar="A,B,...",
                   help="one 0/1 column per label ([data] label_cols)")
    g.add_argument("--label-delim", help="delimiter of --label-col (default ';')")

    lmf = argparse.ArgumentParser(add_help=False)
    g = lmf.add_argument_group("language model")
    g.add_argument("--arch", help="AWD-LSTM size: tiny, small, cpu or paper ([lm] arch)")
    g.add_argument("--lm-epochs", type=int, metavar="N", help="LM fine-tuning epochs ([lm] epochs)")

    reuse = argparse.ArgumentParser(add_help=False)
    reuse.add_argument("--lm", metavar="DIR", help="reuse a saved language model (an `lm` run directory or its lm/) "
                                                   "instead of fine-tuning one ([run] lm)")

    clf = argparse.ArgumentParser(add_help=False)
    g = clf.add_argument_group("classifier")
    g.add_argument("--epochs", type=_comma_list(int), metavar="E1,E2,...",
                   help="epochs of each gradual-unfreezing stage ([classifier] epochs; as many as unfreeze/lrs)")

    parser = argparse.ArgumentParser(
        prog="ulmfit-ml", formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Multi-label text classification with ULMFiT (fastai AWD-LSTM): fine-tune a language model, "
                    "train and cross-validate classifiers, evaluate and predict from the shell.",
        epilog="Run `ulmfit-ml COMMAND --help` for the options of each command.\n\n" + _EPILOG)
    from . import __version__
    parser.add_argument("--version", action="version", version=f"ulmfit-ml {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    fmt = argparse.RawDescriptionHelpFormatter

    p = sub.add_parser("lm", parents=[common, cfg, data, lmf], formatter_class=fmt, epilog=_EPILOG,
                       help="fine-tune a language model on the texts of a file",
                       description="Fine-tune an AWD-LSTM language model on the texts of --train (labels are not "
                                   "needed). Writes a run directory with lm/ (reuse it with `train --lm DIR`), "
                                   "config, environment, history.csv and metrics.json.")
    p.set_defaults(func=cmd_lm)

    p = sub.add_parser("train", parents=[common, cfg, data, lmf, reuse, clf], formatter_class=fmt, epilog=_EPILOG,
                       help="fine-tune the LM and train the classifier into a run directory",
                       description="ULMFiT end to end: fine-tune the LM on all texts (or reuse --lm), train the "
                                   "classifier with gradual unfreezing, tune thresholds on the validation split, "
                                   "save everything in a run directory (config.toml, data.json, environment.json, "
                                   "history.csv, metrics.json, plots/, model/, run.log). A checkpoint is kept after "
                                   "every epoch: continue an interrupted run with --resume RUN_DIR.")
    p.add_argument("--resume", metavar="RUN_DIR", help="continue an interrupted run from its last completed epoch "
                                                       "(its config.json is used; only --quiet/--device may change)")
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("evaluate", parents=[common], formatter_class=fmt,
                       help="metrics report of a saved model on a labelled file",
                       description="Compute the full multi-label report (micro/macro F1, ROC-AUC, precision@k, "
                                   "per-label table) of MODEL on a labelled file with the training label columns.")
    p.add_argument("model", metavar="MODEL", help="a saved model directory, a train run directory, or a cv run "
                                                  "directory with saved fold models (averaged)")
    p.add_argument("input", metavar="FILE", help="labelled data (.csv .tsv .parquet .jsonl)")
    p.add_argument("--out", metavar="FILE.json", help="write the report (summary + per label) as JSON")
    p.add_argument("--per-label", metavar="FILE.csv", help="write the per-label table")
    p.add_argument("--threshold", type=float, help="one threshold for every label (default: the model's tuned ones)")
    p.add_argument("--text-col", help="text column (default: the model's training text column)")
    p.add_argument("--overwrite", action="store_true", help="replace existing --out/--per-label files (never the input)")
    p.set_defaults(func=cmd_evaluate)

    p = sub.add_parser("predict", parents=[common], formatter_class=fmt,
                       help="predict probabilities / labels for an unlabelled file",
                       description="Predict every row of FILE. Formats: proba (row, [id], proba_<label>...), labels "
                                   "(row, [id], labels), both, submission (id + one probability column per label, "
                                   "named by label, in training label order: the Kaggle shape; needs --id-col).",
                       epilog="example: ulmfit-ml predict runs/exp1 test.csv --out submission.csv "
                              "--format submission --id-col id")
    p.add_argument("model", metavar="MODEL", help="a saved model directory, a train run directory, or a cv run "
                                                  "directory with saved fold models (probabilities averaged)")
    p.add_argument("input", metavar="FILE", help="texts to predict (.csv .tsv .parquet .jsonl)")
    p.add_argument("-o", "--out", required=True, metavar="FILE", help="output table (.csv, or .tsv/.parquet/.jsonl)")
    p.add_argument("--format", choices=("proba", "labels", "both", "submission"), default="both",
                   help="what to write (default: both)")
    p.add_argument("--id-col", help="column copied to the output (required by --format submission)")
    p.add_argument("--text-col", help="text column (default: the model's training text column)")
    p.add_argument("--threshold", type=float, help="one threshold for every label (default: the model's tuned ones)")
    p.add_argument("--at-least-one", action="store_true", help="give each text its most probable label when none passes")
    p.add_argument("--bs", type=int, default=128, help="prediction batch size (default 128)")
    p.add_argument("--no-resume", action="store_true", help="restart a large CSV prediction instead of continuing it")
    p.add_argument("--overwrite", action="store_true", help="replace an existing output file (never the input)")
    p.set_defaults(func=cmd_predict)

    p = sub.add_parser("cv", parents=[common, cfg, data, lmf, reuse, clf], formatter_class=fmt, epilog=_EPILOG,
                       help="k-fold cross-validation with out-of-fold predictions",
                       description="Multi-label stratified k-fold CV (iterative stratification). One LM is "
                                   "fine-tuned once on all texts and reused by every fold. Writes oof.csv "
                                   "(out-of-fold probabilities), cv_metrics.csv (one row per fold), metrics.json "
                                   "(mean, std, OOF metrics, OOF-tuned thresholds) and, with --test, "
                                   "test_predictions.csv from the average of the fold models.")
    g = p.add_argument_group("cross-validation")
    g.add_argument("--folds", type=int, help="number of folds ([run] folds, default 5)")
    g.add_argument("--test", metavar="FILE", help="unlabelled file to predict with the averaged fold models ([run] test)")
    g.add_argument("--id-col", help="id column for oof.csv and the test predictions ([run] id_col)")
    p.set_defaults(func=cmd_cv)

    p = sub.add_parser("pretrain", parents=[common], formatter_class=fmt,
                       help="pretrain a general-domain language model on a raw text corpus",
                       description="Pretrain an AWD-LSTM LM from scratch on a general-domain corpus (.txt files "
                                   "with one paragraph per line, or folders of them): tokenised once into cached "
                                   "memory-mapped ids, trained with a sampled softmax, checkpointed to "
                                   "OUT/checkpoint every [pretrain] checkpoint_every seconds, saved to OUT/model. "
                                   "Fine-tune from it with --set lm.pretrained=\"OUT/model\". Options come from the "
                                   "[pretrain] section of --config, --set pretrain.KEY=VALUE and the flags.")
    p.add_argument("corpus", nargs="+", metavar="CORPUS", help=".txt file(s) or folder(s) of .txt files")
    p.add_argument("--out", required=True, metavar="DIR", help="run directory: DIR/checkpoint while training, DIR/model at the end")
    p.add_argument("--config", metavar="FILE", help="config file; only its [pretrain] section is used")
    p.add_argument("--set", action="append", metavar="pretrain.KEY=VALUE", help="override a [pretrain] key (repeatable)")
    p.add_argument("--arch", help="AWD-LSTM size: tiny, small, cpu or paper")
    p.add_argument("--epochs", type=float, metavar="N", help="passes over the corpus, fractions allowed ([pretrain] epochs)")
    p.add_argument("--max-tokens", type=int, metavar="N", help="training tokens for the whole schedule ([pretrain] max_tokens)")
    p.add_argument("--backwards", action="store_true", default=None, help="a backward language model ([pretrain] backwards)")
    p.add_argument("--seed", type=int, help="random seed ([pretrain] seed)")
    p.add_argument("--resume", action="store_true", help="continue from DIR/checkpoint after an interruption")
    p.set_defaults(func=cmd_pretrain)
    return parser


# ---------------------------------------------------------------------- shared steps
def _require_labels(data_cfg: DataConfig) -> None:
    if data_cfg.label_cols is None and data_cfg.label_col is None:
        raise ConfigError("no labels configured: set data.label_col = \"tags\" (one delimited column) or "
                          "data.label_cols = [\"a\", \"b\"] (0/1 columns), or pass --label-col/--label-cols.")


def _require_train(run_cfg: RunConfig) -> str:
    if not run_cfg.train:
        raise ConfigError("no training file: set run.train = \"data.csv\" in the config or pass --train FILE.")
    return run_cfg.train


def _run_inputs(cfgs: dict[str, Any], args: argparse.Namespace) -> list[str]:
    """Every file or directory a run reads: a run directory that is or holds one is never replaced."""
    rc = cfgs["run"]
    out = [rc.train, rc.test, rc.lm, *rc.extra_texts, getattr(args, "config", None)]
    pretrained = getattr(cfgs["lm"], "pretrained", None)
    if isinstance(pretrained, (str, Path)) and Path(pretrained).expanduser().exists():  # a path, not a shipped name
        out.append(str(Path(pretrained).expanduser()))
    return [str(x) for x in out if x]


def _default_out(command: str) -> str:
    return str(Path("runs") / f"{command}-{time.strftime('%Y%m%d-%H%M%S')}")


def _read_extra_texts(run_cfg: RunConfig, text_col: str) -> list[str]:
    from .data import check_columns
    from .io import read_table

    texts: list[str] = []
    for f in run_cfg.extra_texts:
        df = read_table(f)
        check_columns(df, [text_col])
        texts += [t for t in df[text_col].tolist() if isinstance(t, str) and t.strip()]
    return texts


def _load_data(cfgs: dict[str, Any], *, labelled: bool = True) -> Any:
    """The training file as a MultiLabelData (``labelled=False``: texts only, for the LM)."""
    from .data import MultiLabelData
    from .io import read_table

    df = read_table(_require_train(cfgs["run"]))
    extra = _read_extra_texts(cfgs["run"], cfgs["data"].text_col)
    if labelled:
        return MultiLabelData.from_df(df, config=cfgs["data"], extra_texts=extra)
    # LM fine-tuning reads no labels: give the texts one constant placeholder label so the
    # same MultiLabelData pipeline (validation, tokenisation, LM DataLoaders) applies.
    col = "__ulmfit_ml_lm_placeholder__"
    dc = dataclasses.replace(cfgs["data"], label_col=col, label_cols=None, split="random", unlabelled="keep",
                             valid_col=None)
    return MultiLabelData.from_df(df.assign(**{col: "text"}), config=dc, extra_texts=extra)


def _resolve_lm_dir(path: str | Path) -> Path:
    p = Path(path)
    if (p / "lm.json").is_file():
        return p
    if (p / "lm" / "lm.json").is_file():
        return p / "lm"
    raise FileNotFoundError(f"No language model at {p}: pass a directory saved by `ulmfit-ml lm`/`pretrain` "
                            "(with lm.json) or a run directory that holds lm/.")


def _language_model(cfgs: dict[str, Any], data: Any, run: Any, log: Any) -> Any:
    """Reuse [run] lm, or the run directory's lm/ (resume), or fine-tune one and save it to lm/."""
    from .lm import finetune_lm, load_lm

    if cfgs["run"].encoder == "random":
        log.info("encoder = random: no language model (ablation)")
        return None
    if cfgs["run"].lm:
        lm = load_lm(_resolve_lm_dir(cfgs["run"].lm))
        log.info(f"language model: reusing {cfgs['run'].lm} ({lm!r})")
        return lm
    if (run.lm_dir / "lm.json").is_file():
        lm = load_lm(run.lm_dir)
        log.info(f"language model: reusing {run.lm_dir} from the interrupted run")
        return lm
    log.info(f"fine-tuning the language model on {len(data.texts) + len(data.extra_texts)} texts")
    lm = finetune_lm(data, config=cfgs["lm"])
    lm.save(run.lm_dir, overwrite=True)
    if len(lm.history):
        run.write_table("lm_history.csv", lm.history)
    log.info(f"language model saved to {run.lm_dir}: {lm.metrics}")
    return lm


def _history(lm: Any, clf: Any) -> Any:
    import pandas as pd

    parts = []
    if lm is not None and lm.history is not None and len(lm.history):
        parts.append(lm.history.assign(model="lm"))
    if clf.history is not None and len(clf.history):
        parts.append(clf.history.assign(model="classifier"))
    if not parts:
        return pd.DataFrame()
    h = pd.concat(parts, ignore_index=True)
    return h[["model"] + [c for c in h.columns if c != "model"]]


def _install_sigterm() -> None:
    """``kill`` (SIGTERM) interrupts like Ctrl-C, so the run is marked interrupted and the
    last checkpoint is reported."""
    def handler(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt(f"signal {signum}")
    try:
        signal.signal(signal.SIGTERM, handler)
    except ValueError:  # not in the main thread (e.g. called from a test runner thread)
        pass


def _device_of(cfgs: dict[str, Any]) -> Any:
    from ._train import resolve_device

    return resolve_device(cfgs["classifier"].device)


# ---------------------------------------------------------------------- commands
def cmd_lm(args: argparse.Namespace) -> int:
    """``ulmfit-ml lm``: fine-tune a language model into a run directory."""
    from .runs import RunDir

    cfgs = _config_from_args(args)
    _require_train(cfgs["run"])
    if cfgs["run"].lm:
        raise ConfigError("run.lm is set: `ulmfit-ml lm` fine-tunes a new LM; start it from saved weights with "
                          "lm.pretrained = \"DIR\" instead.")
    if cfgs["run"].encoder == "random":
        raise ConfigError("run.encoder = \"random\" means no language model: `ulmfit-ml lm` needs encoder = \"lm\".")
    device = _device_of(cfgs)
    run = RunDir.create(cfgs["run"].out or _default_out("lm"), overwrite=cfgs["run"].overwrite,
                        inputs=_run_inputs(cfgs, args))
    run.write_config(config_sections(cfgs), command="lm")
    log = run.logger(quiet=cfgs["lm"].quiet)
    run.set_status("running")
    try:
        labelled = cfgs["data"].label_cols is not None or cfgs["data"].label_col is not None
        data = _load_data(cfgs, labelled=labelled)
        run.write_fingerprint(data)
        run.write_environment(device)
        lm = _language_model(cfgs, data, run, log)
        run.write_json("metrics.json", {"lm": lm.metrics})
        if len(lm.history):
            run.write_table("history.csv", lm.history.assign(model="lm"))
        if cfgs["run"].plots:
            run.save_plots(history=lm.history, log=log)
    except BaseException as e:
        run.set_status("interrupted" if isinstance(e, KeyboardInterrupt) else "failed", error=str(e))
        log.error(f"stopped: {type(e).__name__}: {e}", extra={"file_only": True})
        raise
    run.set_status("done")
    print(f"language model saved to {run.lm_dir}")
    return EXIT_OK


def cmd_train(args: argparse.Namespace) -> int:
    """``ulmfit-ml train``: LM + classifier into a run directory (resumable)."""
    from .classifier import train_classifier
    from .runs import RunDir, load_checkpoint

    if args.resume:
        run = RunDir.open(args.resume)
        saved = run.read_json("config.json")
        if saved.get("command") != "train":
            raise ConfigError(f"{args.resume} is a `{saved.get('command')}` run directory; --resume continues `train` runs.")
        changed = [f"--{d.replace('_', '-')}" for d in _FLAG_KEYS if d not in ("quiet", "device")
                   and getattr(args, d, None) not in (None, False)]
        extra = (["--config"] if args.config else []) + (["--set"] if args.set else []) + changed
        if extra:
            raise ConfigError(f"--resume uses the run's own config.json; drop {', '.join(extra)} "
                              "(only --quiet and --device may change).")
        cfgs = resolve_config({k: v for k, v in saved.items() if k in SECTIONS}, _flag_overrides(args))
    else:
        cfgs = _config_from_args(args)
        _require_train(cfgs["run"])
        _require_labels(cfgs["data"])
        if cfgs["run"].out is None:
            cfgs["run"] = dataclasses.replace(cfgs["run"], out=str(Path(_default_out("train")).resolve()))
        run = RunDir.create(cfgs["run"].out, overwrite=cfgs["run"].overwrite, inputs=_run_inputs(cfgs, args))
        run.write_config(config_sections(cfgs), command="train")
    quiet = cfgs["classifier"].quiet
    log = run.logger(quiet=quiet)
    device = _device_of(cfgs)
    if args.resume:
        status = run.read_json("status.json").get("status") if (run.path / "status.json").is_file() else None
        if status == "done" and (run.model_dir / "config.json").is_file():
            print(f"{run.path} is already complete (status done); nothing to resume.")
            return EXIT_OK
        ck = load_checkpoint(run.checkpoint_dir)
        where = f"stage {ck['stage'] + 1}, epoch {ck['epoch']}" if ck else "the start (no classifier checkpoint yet)"
        log.info(f"resuming {run.path} from {where}")
    run.set_status("running")
    _install_sigterm()
    try:
        data = _load_data(cfgs)
        if args.resume and (run.path / "data.json").is_file():
            old = run.read_json("data.json").get("sha256")
            if old != data.fingerprint()["sha256"]:
                raise ValueError(f"The training data changed since {run.path} started (data.json hash differs); "
                                 "resume needs the same file.")
        run.write_fingerprint(data)
        run.write_environment(device)
        log.info(f"data: {data!r}")
        lm = _language_model(cfgs, data, run, log)
        log.info("training the classifier")
        # [run] thresholds is the classifier's own ``thresholds`` option (tuned on the validation split)
        clf_cfg = dataclasses.replace(cfgs["classifier"], thresholds=cfgs["run"].thresholds)
        clf = train_classifier(data, encoder=lm, config=clf_cfg, arch=cfgs["lm"].arch,
                               checkpoint_dir=run.checkpoint_dir, resume=bool(args.resume))
        report = clf.report()
        history = _history(None if cfgs["run"].lm else lm, clf)  # a reused LM was trained elsewhere
        if len(history):
            run.write_table("history.csv", history)
        run.write_json("metrics.json", {"valid": report.to_dict(), "thresholds": dict(zip(clf.labels, clf.thresholds)),
                                        "lm": lm.metrics if lm is not None else None,
                                        "train_seconds": clf.meta.get("train_seconds")})
        clf.save(run.model_dir, overwrite=True, inputs=_run_inputs(cfgs, args))
        if cfgs["run"].plots:
            run.save_plots(history=history, report=report, valid=getattr(clf, "_valid", None), data=data, log=log)
        if not cfgs["run"].keep_checkpoints:
            from .persist import remove_owned_dir

            try:
                remove_owned_dir(run.checkpoint_dir, inputs=_run_inputs(cfgs, args))
            except FileExistsError as e:  # someone else's files in there: keep them, the run is done
                log.warning(f"checkpoints kept: {e}")
    except KeyboardInterrupt:
        ck = load_checkpoint(run.checkpoint_dir) if run.checkpoint_dir.exists() else None
        where = f"stage {ck['stage'] + 1}, epoch {ck['epoch']}" if ck else "no completed classifier epoch yet"
        run.set_status("interrupted", checkpoint=where)
        log.info(f"interrupted; last checkpoint: {where}. Continue with: ulmfit-ml train --resume {run.path}")
        raise
    except BaseException as e:
        run.set_status("failed", error=str(e))
        log.error(f"failed: {type(e).__name__}: {e}", extra={"file_only": True})  # main() prints the one line
        raise
    run.set_status("done")
    s = report.summary
    log.info(f"done: f1_micro={s['f1_micro']:.4f} f1_macro={s['f1_macro']:.4f} roc_auc_macro={s['roc_auc_macro']:.4f}")
    print(f"run directory: {run.path}")
    return EXIT_OK


def _resolve_models(path: str | Path) -> list[Path]:
    """A model directory, a train run directory (model/) or a cv run directory (folds/*/model)."""
    p = Path(path)
    if (p / "config.json").is_file() and (p / "model.safetensors").is_file():
        return [p]
    if (p / "model" / "model.safetensors").is_file():
        return [p / "model"]
    folds = sorted((p / "folds").glob("fold*/model")) if (p / "folds").is_dir() else []
    if folds:
        return folds
    raise FileNotFoundError(f"No saved model at {p}: pass a model directory, a `train` run directory (with model/) "
                            "or a `cv` run directory saved with run.save_fold_models = true.")


def _load_models(path: str | Path, device: str | None) -> list[Any]:
    from .persist import load_classifier

    models = [load_classifier(m, device=device or "cpu") for m in _resolve_models(path)]
    first = models[0].labels
    for m in models[1:]:
        if m.labels != first:
            raise ValueError(f"The models under {path} have different labels; they cannot be averaged.")
    return models


def _texts(df: Any, text_col: str, *, name: str) -> list[str]:
    """The text column as strings; NaN/empty become "" (the model still gives them a row) with a warning."""
    import warnings

    from .data import check_columns

    check_columns(df, [text_col])
    col = df[text_col]
    bad = [i for i, t in enumerate(col.tolist()) if t is not None and not isinstance(t, str) and t == t]
    if bad:
        raise TypeError(f"Column {text_col!r} of {name} has non-string values (e.g. row {bad[0]}): "
                        "pass the column that holds the texts with --text-col.")
    texts = [t if isinstance(t, str) else "" for t in col.tolist()]
    n_empty = sum(1 for t in texts if not t.strip())
    if n_empty:
        warnings.warn(f"{n_empty} row(s) of {name} have an empty or missing text: they are predicted from an empty "
                      "input.", UserWarning, stacklevel=2)
    return texts


def _mean_proba(models: list[Any], texts: list[str], bs: int = 128) -> Any:
    import numpy as np

    return np.mean([m.predict_proba(texts, bs=bs) for m in models], axis=0).astype(np.float32)


def cmd_evaluate(args: argparse.Namespace) -> int:
    """``ulmfit-ml evaluate``: the metrics report of a model on a labelled file."""
    from .data import LabelSpec, parse_label_matrix, validate_texts
    from .io import read_table, table_format
    from .metrics import multilabel_report
    from .io import check_output_file
    from .runs import write_json_atomic

    model_dirs = _resolve_models(args.model)
    for out in (args.out, args.per_label):  # the output policy, before any work
        if out:
            check_output_file(out, overwrite=args.overwrite, inputs=[args.input, *model_dirs])
    if args.out and args.per_label and Path(args.out).resolve() == Path(args.per_label).resolve():
        raise ConfigError("--out and --per-label name the same file: give two different files.")
    if args.per_label:
        try:
            table_format(args.per_label)
        except ValueError as e:
            raise ConfigError(f"--per-label: {e}") from e
    models = _load_models(args.model, args.device)
    m = models[0]
    df = read_table(args.input)
    text_col = args.text_col or m.meta.get("text_col", "text")
    spec = LabelSpec.from_dict(m.meta["label_spec"])
    from .data import check_columns

    check_columns(df, [text_col] + spec.columns)
    df = df.loc[validate_texts(df[text_col], col=text_col)]
    y, _ = parse_label_matrix(df, spec, m.labels)
    probs = _mean_proba(models, df[text_col].tolist())
    report = multilabel_report(y, probs, m.thresholds if args.threshold is None else args.threshold, labels=m.labels)
    if args.out:
        write_json_atomic(args.out, {"model": str(args.model), "input": str(args.input), "n_rows": len(df),
                                     "n_models": len(models), **report.to_dict()})
    if args.per_label:
        from .io import write_table

        write_table(report.per_label.reset_index(), args.per_label)
    print(f"{len(df)} rows, {len(m.labels)} labels" + (f", {len(models)} models averaged" if len(models) > 1 else ""))
    for k, v in report.summary.items():
        print(f"{k:>24s}  {v:.4f}")
    return EXIT_OK


def cmd_predict(args: argparse.Namespace) -> int:
    """``ulmfit-ml predict``: probabilities / labels / a submission file."""
    import numpy as np
    import pandas as pd

    from .io import check_output_file, read_table, table_format, write_table
    from .predict import PROGRESS_SUFFIX
    from .thresholds import apply_thresholds

    if args.format == "submission" and not args.id_col:
        raise ConfigError("--format submission needs --id-col (the id column of the input, e.g. --id-col id).")
    if args.bs < 1:
        raise ConfigError(f"--bs must be >= 1, got {args.bs}.")
    try:
        table_format(args.out)  # unknown output extension: fail before predicting
    except ValueError as e:
        raise ConfigError(f"--out: {e}") from e
    paths = _resolve_models(args.model)
    check_output_file(args.out, overwrite=True, inputs=[args.input, *paths])  # never an input
    in_fmt = table_format(args.input)
    streaming = (len(paths) == 1 and args.format != "submission" and Path(args.out).suffix.lower() == ".csv"
                 and in_fmt in ("csv", "tsv", "parquet"))
    ours = streaming and Path(str(args.out) + PROGRESS_SUFFIX).is_file()  # a resumable predict_file output
    check_output_file(args.out, overwrite=args.overwrite or ours, inputs=[args.input, *paths])
    if streaming:
        from .predict import predict_file  # streaming, chunked, resumable for large files

        res = predict_file(str(paths[0]), args.input, args.out, text_col=args.text_col, id_col=args.id_col,
                           output="proba" if args.format == "proba" else args.format, resume=not args.no_resume,
                           threshold=args.threshold, at_least_one=args.at_least_one, bs=args.bs,
                           overwrite=args.overwrite)
        print(f"{res.n_rows} rows -> {res.output_path}")
        return EXIT_OK
    models = _load_models(args.model, args.device)
    m = models[0]
    df = read_table(args.input)
    text_col = args.text_col or m.meta.get("text_col", "text")
    if args.id_col is not None:
        from .data import check_columns

        check_columns(df, [args.id_col])
    probs = _mean_proba(models, _texts(df, text_col, name=str(args.input)), bs=args.bs)
    if args.format == "submission":
        out = pd.DataFrame({args.id_col: df[args.id_col].to_numpy()})
        for j, lab in enumerate(m.labels):
            out[lab] = probs[:, j]
    else:
        out = pd.DataFrame({"row": np.arange(len(df))})
        if args.id_col is not None:
            out[args.id_col] = df[args.id_col].to_numpy()
        if args.format in ("labels", "both"):
            delim = (m.meta.get("label_spec") or {}).get("label_delim") or ";"
            pred = apply_thresholds(probs, m.thresholds if args.threshold is None else args.threshold,
                                    at_least_one=args.at_least_one)
            out["labels"] = [delim.join(m.labels[j] for j in np.flatnonzero(r)) for r in pred]
        if args.format in ("proba", "both"):
            for j, lab in enumerate(m.labels):
                out[f"proba_{lab}"] = probs[:, j]
    write_table(out, args.out)
    print(f"{len(out)} rows -> {args.out}" + (f" ({len(models)} models averaged)" if len(models) > 1 else ""))
    return EXIT_OK


def cmd_cv(args: argparse.Namespace) -> int:
    """``ulmfit-ml cv``: k-fold CV with one shared LM, OOF probabilities, mean/std metrics."""
    import pandas as pd

    from .cv import cross_validate
    from .io import read_table
    from .runs import RunDir

    cfgs = _config_from_args(args)
    _require_train(cfgs["run"])
    _require_labels(cfgs["data"])
    rc = cfgs["run"]
    if rc.out is None:
        cfgs["run"] = rc = dataclasses.replace(rc, out=str(Path(_default_out("cv")).resolve()))
    device = _device_of(cfgs)
    run = RunDir.create(rc.out, overwrite=rc.overwrite, inputs=_run_inputs(cfgs, args))
    run.write_config(config_sections(cfgs), command="cv")
    log = run.logger(quiet=cfgs["classifier"].quiet)
    run.set_status("running")
    _install_sigterm()
    try:
        df = read_table(rc.train)
        if rc.id_col is not None:
            from .data import check_columns

            check_columns(df, [rc.id_col])
        data = _load_data(cfgs)
        run.write_fingerprint(data)
        run.write_environment(device)
        lm = _language_model(cfgs, data, run, log)

        def on_fold(k: int, clf: Any, summary: dict[str, float]) -> None:
            log.info(f"fold {k + 1}/{rc.folds}: f1_micro={summary['f1_micro']:.4f} f1_macro={summary['f1_macro']:.4f} "
                     f"roc_auc_macro={summary['roc_auc_macro']:.4f}")

        res = cross_validate(data, n_folds=rc.folds, encoder=lm, finetune=False, config=cfgs["classifier"],
                             arch=cfgs["lm"].arch, tune=None if rc.thresholds == "none" else rc.thresholds,
                             keep_models=bool(rc.test) or rc.save_fold_models, on_fold=on_fold)
        oof = res.oof_frame()
        if rc.id_col is not None:
            oof.insert(1, rc.id_col, df.loc[res.index, rc.id_col].to_numpy())
        run.write_table("oof.csv", oof)
        run.write_table("cv_metrics.csv", res.fold_metrics)
        run.write_json("metrics.json", {"n_folds": rc.folds, "mean": res.mean, "std": res.std, "oof": res.oof_metrics,
                                        "thresholds": dict(zip(res.labels, res.thresholds)),
                                        "lm": lm.metrics if lm is not None else None})
        if rc.save_fold_models:
            for k, m in enumerate(res.models):
                m.save(run.path / "folds" / f"fold{k}" / "model", overwrite=True, inputs=_run_inputs(cfgs, args))
        if rc.test:
            test = read_table(rc.test)
            probs = res.predict_proba(_texts(test, cfgs["data"].text_col, name=rc.test))
            pred = pd.DataFrame({rc.id_col: test[rc.id_col].to_numpy()} if rc.id_col and rc.id_col in test
                                else {"row": range(len(test))})
            for j, lab in enumerate(res.labels):
                pred[lab] = probs[:, j]
            run.write_table("test_predictions.csv", pred)
        if rc.plots:
            run.save_plots(valid=(res.y, res.oof), log=log)
    except KeyboardInterrupt:
        run.set_status("interrupted")
        log.info("interrupted (cv runs are not resumable: start it again)")
        raise
    except BaseException as e:
        run.set_status("failed", error=str(e))
        log.error(f"failed: {type(e).__name__}: {e}", extra={"file_only": True})
        raise
    run.set_status("done")
    for k in ("f1_micro", "f1_macro", "roc_auc_macro"):
        log.info(f"{k}: {res.mean[k]:.4f} +- {res.std[k]:.4f} (OOF {res.oof_metrics[k]:.4f})")
    print(f"run directory: {run.path}")
    return EXIT_OK


def cmd_pretrain(args: argparse.Namespace) -> int:
    """``ulmfit-ml pretrain``: a general-domain language model on a corpus (thin wrapper of ``pretrain_lm``)."""
    base = load_config_file(args.config) if args.config else {}
    sets = [parse_set(s) for s in (args.set or [])]
    bad = [f"{s}.{k}" for s, k, _ in sets if s != "pretrain"]
    if bad:
        raise ConfigError(f"pretrain only uses [pretrain] options; got {bad}.")
    flags = [("pretrain", k, v) for k, v in (("arch", args.arch), ("epochs", args.epochs), ("max_tokens", args.max_tokens),
                                              ("backwards", args.backwards), ("seed", args.seed),
                                              ("device", args.device), ("quiet", args.quiet)) if v is not None]
    cfg = resolve_config({"pretrain": base.get("pretrain", {})}, sets + flags)["pretrain"]
    out = Path(args.out)
    if (out / "model").exists():
        raise FileExistsError(f"{out / 'model'} already exists: choose another --out.")
    lm = pretrain_lm(args.corpus, config=cfg, out_dir=out, resume=args.resume)
    lm.save(out / "model")
    print(f"language model saved to {out / 'model'} ({lm!r})")
    return EXIT_OK


# ---------------------------------------------------------------------- entry point
def _one_line(e: BaseException) -> str:
    return " ".join(str(e).split()) or type(e).__name__


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``ulmfit-ml``; returns the exit code (0 ok, 1 error, 2 usage/config error, 130 interrupted)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    prog = f"ulmfit-ml {args.command}"
    try:
        return int(args.func(args))
    except ConfigError as e:
        if args.debug:
            raise
        print(f"{prog}: config error: {_one_line(e)}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        if args.debug:
            raise
        print(f"{prog}: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except Exception as e:  # noqa: BLE001 - one clear line instead of a traceback (use --debug)
        if args.debug:
            raise
        kind = "" if isinstance(e, (ValueError, FileNotFoundError, FileExistsError)) else f"{type(e).__name__}: "
        print(f"{prog}: error: {kind}{_one_line(e)} (--debug shows the traceback)", file=sys.stderr)
        return EXIT_ERROR


if __name__ == "__main__":
    sys.exit(main())
