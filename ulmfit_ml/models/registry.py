"""The model kinds and loading: ``config.json``'s ``"task"`` -> the model class that rebuilds it
(:data:`MODEL_KINDS`, the model side of :mod:`ulmfit_ml.tasks.registry`), and
:func:`load_classifier`, which rebuilds any saved model through its class's hooks
(:meth:`~ulmfit_ml.models.classifier.TextModel.read_saved`, ``saved_n_out``, ``prepare_network``).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd
from torch import nn

from ..data.tokens import TextTokenizer
from ..utils.manifest import verify_files
from ..utils.kinds import ENSEMBLE_KIND, TFIDF_KIND
from ..utils.persist import FORMAT_VERSION, file_sha256, load_weights, read_json
from ..utils.runtime import resolve_device
from ..utils.valuetypes import check_value, describe_type, user_path
from .classifier import MultiLabelClassifier, model_from_meta
from .heads import MultiCategoryClassifier, TextRegressor

__all__ = ["MODEL_KINDS", "load_classifier"]

#: ``config.json`` ``"task"`` -> the model class :func:`load_classifier` and training build
MODEL_KINDS: dict[str, type] = {"multilabel": MultiLabelClassifier, "multicategory": MultiCategoryClassifier,
                                "regression": TextRegressor}


#: config.json values the model is rebuilt from, and their types (checked at load).
_CONFIG_TYPES: dict[str, Any] = {"seq_len": int, "max_len": int, "lin_ftrs": list[int], "drop_mult": float,
                                 "text_col": str, "backwards": bool, "label_spec": dict, "arch": dict,
                                 "task": str, "targets": dict}


def _check_config_values(cfg: dict[str, Any], where: Path) -> None:
    """A tampered or hand-edited config.json fails here, naming the key, not inside fastai later."""
    for key, hint in _CONFIG_TYPES.items():
        if key in cfg:
            try:  # a saved file is written by ulmfit_ml: no number spelt as a string
                ok = isinstance(check_value(cfg[key], hint, name=key), str) or not isinstance(cfg[key], str)
            except TypeError:
                ok = False
            if not ok:
                raise ValueError(f"{where} has invalid architecture values: {key} = {cfg[key]!r} should be "
                                 f"{describe_type(hint)}, got {type(cfg[key]).__name__} (the file was edited or "
                                 "corrupted; save the model again).")
    for key, v in (cfg.get("arch") or {}).items():
        if key in ("emb_sz", "n_hid", "n_layers") and not (type(v) is int and v > 0):
            raise ValueError(f"{where} has invalid architecture values: arch.{key} = {v!r} should be a positive int.")
    for key in ("seq_len", "max_len"):
        if isinstance(cfg.get(key), int) and cfg[key] < 1:
            raise ValueError(f"{where}: {key} = {cfg[key]!r} should be >= 1.")


def _not_a_run_directory(path: Path) -> None:
    """A run directory (``ulmfit-ml train``/``cv``) holds its model in ``model/`` (or
    ``folds/*/model``): name that directory instead of failing on the run's own config.json."""
    cfg = path / "config.json"
    try:
        is_model = cfg.is_file() and read_json(cfg).get("kind") == "classifier"
    except (ValueError, AttributeError):  # corrupt / not a dict: the checks below name the file
        return
    if is_model:
        return
    inner = path / "model"
    if (inner / "config.json").is_file():
        raise FileNotFoundError(f"{path} is a run directory, not a model directory: its model is in {inner}. "
                                f"Load that: load_classifier({str(inner)!r}) (the CLI takes the run directory itself).")
    folds = sorted(path.glob("folds/fold*/model"))
    if folds:
        raise FileNotFoundError(f"{path} is a cv run directory: its fold models are in {folds[0].parent.parent}/fold*/model "
                                f"(e.g. load_classifier({str(folds[0])!r})); um.load_predictor({str(path)!r}) averages them.")


def load_classifier(path: str | Path, *, device: str | None = "cpu") -> Any:
    """Rebuild a saved model: a :class:`MultiLabelClassifier`, or for ``config.json``'s ``"task"``
    ``"multicategory"`` / ``"regression"`` a :class:`~ulmfit_ml.models.heads.MultiCategoryClassifier` /
    :class:`~ulmfit_ml.models.heads.TextRegressor`.

    Nothing is unpickled. Missing or corrupt files, weights that do not fit the saved
    architecture, and any file changed after saving (its sha256 differs from the one the
    directory's ``.ulmfit_ml.json`` recorded: :func:`~ulmfit_ml.utils.manifest.verify_files`) raise
    with the file's name.
    """
    path = user_path(path)
    cfg, task = _read_model_config(path)
    kind = MODEL_KINDS[task]
    vocab, labels = _read_vocab_and_labels(path, cfg)
    extra = kind.read_saved(path, labels)  # multi-label: the thresholds
    _check_config_values(cfg, path / "config.json")
    model, weights_sha = _load_network(path, cfg, len(vocab), kind.saved_n_out(path, cfg, labels), kind)
    model.eval()
    model.to(resolve_device(device))
    history = _read_history(path)
    meta = {k: v for k, v in cfg.items()
            if k not in ("format_version", "kind", "n_labels", "n_out", "vocab_size", "tokenizer", "versions",
                         "weights_sha256")}
    tokenizer = TextTokenizer.load(cfg.get("tokenizer"), path)
    # last, after the checks that name a specific problem: every file against the sha256
    # recorded at save time (a swapped label name or a flipped "backwards" passes all of them)
    verify_files(path, "classifier", format_version=cfg.get("format_version", 0),
                 known={"model.safetensors": weights_sha} if weights_sha else None)
    return kind(model, vocab, labels, meta=meta, history=history, tokenizer=tokenizer, **extra)


def _read_model_config(path: Path) -> tuple[dict[str, Any], str]:
    """``(config.json, task)`` of a model directory, refusing anything that is not one this
    ulmfit_ml can load (a run directory names the model directory inside it)."""
    if not path.is_dir():
        left = sorted(path.parent.glob(f".{path.name}.old-*")) if not path.exists() else []
        hint = f" An interrupted save left the previous model at {left[-1]}: rename it to {path}." if left else ""
        raise FileNotFoundError(f"No model directory at {path}.{hint}")
    _not_a_run_directory(path)
    cfg = read_json(path / "config.json")
    if isinstance(cfg, dict) and cfg.get("kind") in (TFIDF_KIND, ENSEMBLE_KIND):
        raise ValueError(f"{path} holds a saved {cfg['kind'].replace('_', ' ')}, not an AWD-LSTM classifier: load it with "
                         f"um.load_predictor({str(path)!r}).")
    if not isinstance(cfg, dict) or cfg.get("kind") != "classifier":
        raise ValueError(f"{path / 'config.json'} is not a ulmfit_ml classifier config.")
    if cfg.get("format_version", 0) > FORMAT_VERSION:
        raise ValueError(f"{path} was saved by a newer ulmfit_ml (format {cfg['format_version']}); upgrade ulmfit_ml.")
    task = cfg.get("task", "multilabel")  # models saved before other tasks existed are multi-label
    if task not in MODEL_KINDS:
        raise ValueError(f"{path / 'config.json'} has task={task!r}; this ulmfit_ml knows {sorted(MODEL_KINDS)}.")
    return cfg, task


def _read_vocab_and_labels(path: Path, cfg: dict[str, Any]) -> tuple[list[str], list[str]]:
    """``(vocab, labels)``, checked against config.json."""
    vocab = read_json(path / "vocab.json")
    labels = read_json(path / "labels.json")
    if not isinstance(vocab, list) or not all(isinstance(t, str) for t in vocab):
        raise ValueError(f"{path / 'vocab.json'} must hold a list of strings.")
    if len(vocab) != cfg.get("vocab_size"):
        raise ValueError(f"{path / 'vocab.json'} lists {len(vocab)} tokens but config.json says vocab_size="
                         f"{cfg.get('vocab_size')}: the files come from different models.")
    if not isinstance(labels, list) or len(labels) != cfg.get("n_labels") or not all(isinstance(x, str) for x in labels) \
            or len(set(labels)) != len(labels):
        raise ValueError(f"{path / 'labels.json'} must list {cfg.get('n_labels')} distinct label names (config.json n_labels).")
    return vocab, labels


def _load_network(path: Path, cfg: dict[str, Any], vocab_size: int, n_out: int, kind: type) -> tuple[nn.Module, str | None]:
    """The network rebuilt from config.json with the saved weights; ``(network, weights sha256)``
    (the sha256 is ``None`` for models saved before checksums existed)."""
    try:
        model = model_from_meta(vocab_size, n_out, cfg)
        kind.prepare_network(model, cfg)
    except KeyError as e:
        raise ValueError(f"{path / 'config.json'} lacks the key {e}.") from e
    except (TypeError, ValueError) as e:
        raise ValueError(f"{path / 'config.json'} has invalid architecture values ({type(e).__name__}: {e}).") from e
    load_weights(model, path / "model.safetensors")  # unreadable or misshapen weights: its own message
    want = cfg.get("weights_sha256")  # models saved before checksums existed have none
    weights_sha = file_sha256(path / "model.safetensors") if want is not None else None
    if want is not None and weights_sha != want:
        raise ValueError(f"{path / 'model.safetensors'} does not match the checksum stored in config.json: the "
                         "weights were changed or corrupted after saving. Restore the file or save the model again.")
    return model, weights_sha


def _read_history(path: Path) -> pd.DataFrame | None:
    """The saved training table (informational), if any."""
    try:
        return pd.read_csv(path / "history.csv") if (path / "history.csv").exists() else None
    except (ValueError, UnicodeDecodeError) as e:  # pandas' ParserError/EmptyDataError are ValueErrors
        raise ValueError(f"Model file {path / 'history.csv'} is corrupt ({type(e).__name__}: {e}); delete it "
                         "(it is informational) to load the model.") from e
