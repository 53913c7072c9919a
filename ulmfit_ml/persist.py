"""Safe, atomic model directories: safetensors weights + JSON, never a pickle.

A classifier directory holds::

    model.safetensors   weights (safetensors: tensors only, no code)
    config.json         format version, architecture, sequence lengths, text/label columns, versions
    vocab.json          token list (index = id)
    labels.json         label names (column order of predict_proba)
    thresholds.json     per-label decision thresholds
    history.csv         per-epoch training table (informational)

A language-model directory holds ``lm.safetensors``, ``lm.json`` and ``vocab.json``.

Saving writes everything into a temporary sibling directory and renames it into place, so a
crash leaves either the previous complete directory or the new complete one. Loading never
unpickles: a planted ``*.pkl``/``*.pth`` file is ignored.
"""
from __future__ import annotations

import json
import os
import shutil
import uuid
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pandas as pd
import torch

__all__ = ["save_classifier", "load_classifier", "save_lm", "load_lm", "atomic_dir", "FORMAT_VERSION"]

FORMAT_VERSION = 1


def _versions() -> dict[str, str]:
    import fastai

    from . import __version__

    return {"ulmfit_ml": __version__, "fastai": fastai.__version__, "torch": torch.__version__}


def atomic_dir(path: str | Path, write: Callable[[Path], None], *, overwrite: bool = False) -> Path:
    """Run ``write(tmp_dir)`` then move ``tmp_dir`` to ``path`` in one rename.

    With ``overwrite``, the old directory is renamed aside first and deleted only after the
    new one is in place.
    """
    path = Path(path)
    if path.exists() and not overwrite:
        raise FileExistsError(f"{path} already exists; pass overwrite=True to replace it.")
    if path.exists() and not path.is_dir():
        raise FileExistsError(f"{path} exists and is not a directory.")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.parent / f".{path.name}.tmp-{uuid.uuid4().hex[:8]}"
    tmp.mkdir()
    try:
        write(tmp)
        for f in tmp.iterdir():  # flush file contents before the rename makes them visible
            with open(f, "rb") as fh:
                os.fsync(fh.fileno())
        old = None
        if path.exists():
            old = path.parent / f".{path.name}.old-{uuid.uuid4().hex[:8]}"
            os.rename(path, old)
        os.rename(tmp, path)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return path


def _write_json(p: Path, obj: Any) -> None:
    p.write_text(json.dumps(obj, indent=2, ensure_ascii=False, allow_nan=True), encoding="utf-8")


def _read_json(p: Path) -> Any:
    if not p.exists():
        raise FileNotFoundError(f"Model file {p.name} is missing from {p.parent}.")
    try:
        return json.loads(p.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ValueError(f"Model file {p} is corrupt (not valid JSON: {e}).") from e


def _save_weights(model: torch.nn.Module, p: Path) -> None:
    from safetensors.torch import save_model

    save_model(model, str(p))  # handles tied/shared tensors (AWD-LSTM embedding dropout)


def _load_weights(model: torch.nn.Module, p: Path) -> None:
    from safetensors.torch import load_model

    if not p.exists():
        raise FileNotFoundError(f"Model file {p.name} is missing from {p.parent}.")
    try:
        load_model(model, str(p), strict=True, device="cpu")
    except RuntimeError as e:
        raise ValueError(f"Weights in {p} do not match the architecture in config.json (shapes or names differ): "
                         f"{str(e)[:500]}") from e
    except Exception as e:  # noqa: BLE001 - safetensors raises its own error types on bad headers
        raise ValueError(f"Model file {p} is corrupt or not a safetensors file ({type(e).__name__}: {e}).") from e


# ---------------------------------------------------------------------- classifier
def save_classifier(clf: Any, path: str | Path, *, overwrite: bool = False) -> Path:
    """Save a :class:`~ulmfit_ml.classifier.MultiLabelClassifier` to directory ``path`` atomically."""
    model = clf.model
    was_device = next(model.parameters()).device

    def write(tmp: Path) -> None:
        model.to("cpu")
        try:
            _save_weights(model, tmp / "model.safetensors")
        finally:
            model.to(was_device)
        meta = {k: v for k, v in clf.meta.items()}
        _write_json(tmp / "config.json", {"format_version": FORMAT_VERSION, "kind": "classifier",
                                          "n_labels": len(clf.labels), "vocab_size": len(clf.vocab),
                                          "tokenizer": {"name": "fastai.WordTokenizer(spacy, en)",
                                                        "rules": "fastai.defaults.text_proc_rules"},
                                          "versions": _versions(), **meta})
        _write_json(tmp / "vocab.json", clf.vocab)
        _write_json(tmp / "labels.json", clf.labels)
        _write_json(tmp / "thresholds.json", [float(t) for t in clf.thresholds])
        if clf.history is not None and len(clf.history):
            clf.history.to_csv(tmp / "history.csv", index=False)

    return atomic_dir(path, write, overwrite=overwrite)


def load_classifier(path: str | Path, *, device: str | None = "cpu") -> Any:
    """Rebuild a :class:`~ulmfit_ml.classifier.MultiLabelClassifier` from a saved directory.

    Nothing is unpickled. Missing or corrupt files, and weights that do not fit the saved
    architecture, raise with the file's name.
    """
    from ._train import resolve_device
    from .classifier import MultiLabelClassifier, build_classifier_model

    path = Path(path)
    if not path.is_dir():
        raise FileNotFoundError(f"No model directory at {path}.")
    cfg = _read_json(path / "config.json")
    if not isinstance(cfg, dict) or cfg.get("kind") != "classifier":
        raise ValueError(f"{path / 'config.json'} is not a ulmfit_ml classifier config.")
    if cfg.get("format_version", 0) > FORMAT_VERSION:
        raise ValueError(f"{path} was saved by a newer ulmfit_ml (format {cfg['format_version']}); upgrade ulmfit_ml.")
    vocab = _read_json(path / "vocab.json")
    labels = _read_json(path / "labels.json")
    thresholds = _read_json(path / "thresholds.json")
    if not isinstance(vocab, list) or not all(isinstance(t, str) for t in vocab):
        raise ValueError(f"{path / 'vocab.json'} must hold a list of strings.")
    if not isinstance(labels, list) or len(labels) != cfg.get("n_labels"):
        raise ValueError(f"{path / 'labels.json'} must list {cfg.get('n_labels')} labels.")
    if not isinstance(thresholds, list) or len(thresholds) != len(labels):
        raise ValueError(f"{path / 'thresholds.json'} must hold {len(labels)} numbers (one per label).")
    try:
        model = build_classifier_model(len(vocab), len(labels), arch=cfg["arch"], seq_len=cfg["seq_len"],
                                       max_len=cfg["max_len"], lin_ftrs=cfg["lin_ftrs"], drop_mult=cfg.get("drop_mult", 0.5))
    except KeyError as e:
        raise ValueError(f"{path / 'config.json'} lacks the key {e}.") from e
    _load_weights(model, path / "model.safetensors")
    model.eval()
    model.to(resolve_device(device))
    history = pd.read_csv(path / "history.csv") if (path / "history.csv").exists() else None
    meta = {k: v for k, v in cfg.items() if k not in ("format_version", "kind", "n_labels", "vocab_size", "tokenizer", "versions")}
    return MultiLabelClassifier(model, vocab, labels, meta=meta, thresholds=np.asarray(thresholds, dtype=np.float64),
                                history=history)


# ---------------------------------------------------------------------- language model
def save_lm(lm: Any, path: str | Path, *, overwrite: bool = False) -> Path:
    """Save a :class:`~ulmfit_ml.lm.LanguageModel` (weights, vocab, arch) atomically."""
    from safetensors.torch import save_file

    def write(tmp: Path) -> None:
        # clone: the decoder weight is tied to the embedding, which save_file refuses
        save_file({k: v.detach().cpu().contiguous().clone() for k, v in lm.state_dict.items()}, str(tmp / "lm.safetensors"))
        _write_json(tmp / "lm.json", {"format_version": FORMAT_VERSION, "kind": "language_model", "arch": lm.arch,
                                      "backwards": lm.backwards, "metrics": lm.metrics, "config": lm.config,
                                      "vocab_size": len(lm.vocab), "versions": _versions()})
        _write_json(tmp / "vocab.json", lm.vocab)
        if lm.history is not None and len(lm.history):
            lm.history.to_csv(tmp / "history.csv", index=False)

    return atomic_dir(path, write, overwrite=overwrite)


def load_lm(path: str | Path) -> Any:
    """Load a :class:`~ulmfit_ml.lm.LanguageModel` directory (no pickle)."""
    from safetensors.torch import load_file

    from .lm import LanguageModel

    path = Path(path)
    if not path.is_dir():
        raise FileNotFoundError(f"No language-model directory at {path}.")
    meta = _read_json(path / "lm.json")
    if not isinstance(meta, dict) or meta.get("kind") != "language_model":
        raise ValueError(f"{path / 'lm.json'} is not a ulmfit_ml language-model config.")
    vocab = _read_json(path / "vocab.json")
    if not isinstance(vocab, list) or len(vocab) != meta.get("vocab_size"):
        raise ValueError(f"{path / 'vocab.json'} must list {meta.get('vocab_size')} tokens.")
    wp = path / "lm.safetensors"
    if not wp.exists():
        raise FileNotFoundError(f"Model file lm.safetensors is missing from {path}.")
    try:
        state = load_file(str(wp), device="cpu")
    except Exception as e:  # noqa: BLE001
        raise ValueError(f"Model file {wp} is corrupt or not a safetensors file ({type(e).__name__}: {e}).") from e
    emb = state.get("0.encoder.weight")
    if emb is None or emb.shape[0] != len(vocab):
        raise ValueError(f"{wp} does not match vocab.json ({len(vocab)} tokens).")
    history = pd.read_csv(path / "history.csv") if (path / "history.csv").exists() else None
    return LanguageModel(vocab, meta["arch"], state, backwards=meta.get("backwards", False), history=history,
                         metrics=meta.get("metrics"), config=meta.get("config"))
