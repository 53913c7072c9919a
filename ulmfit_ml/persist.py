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
import sys
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

    With ``overwrite``, the new directory is swapped with the old one in one atomic
    ``renameat2(RENAME_EXCHANGE)`` on Linux (elsewhere: the old one is renamed aside to
    ``.NAME.old-*`` first), then the old one is deleted.
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
        _fsync_dir(tmp)
        if not path.exists():
            os.rename(tmp, path)
        elif _exchange(tmp, path):  # one atomic step: path = new, tmp = old
            shutil.rmtree(tmp, ignore_errors=True)
        else:  # no atomic exchange here: a crash between the renames leaves the old dir at .old-*
            old = path.parent / f".{path.name}.old-{uuid.uuid4().hex[:8]}"
            os.rename(path, old)
            try:
                os.rename(tmp, path)
            except BaseException:
                os.rename(old, path)
                raise
            shutil.rmtree(old, ignore_errors=True)
        _fsync_dir(path.parent)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return path


def _fsync_dir(d: Path) -> None:
    """Persist a directory's entries (renames) on POSIX; a no-op where directories cannot be opened."""
    try:
        fd = os.open(d, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _exchange(a: Path, b: Path) -> bool:
    """Swap two directories atomically (Linux ``renameat2(RENAME_EXCHANGE)``); False if unsupported.

    Python has no ``os.renameat2``, so glibc's is reached through ctypes; elsewhere (or on a
    filesystem without exchange support) the caller falls back to two renames.
    """
    if not sys.platform.startswith("linux"):
        return False
    try:
        import ctypes

        fn = ctypes.CDLL(None, use_errno=True).renameat2
    except (OSError, AttributeError):
        return False
    fn.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    at_fdcwd, rename_exchange = -100, 2
    return fn(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), rename_exchange) == 0


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
        left = sorted(path.parent.glob(f".{path.name}.old-*")) if not path.exists() else []
        hint = f" An interrupted save left the previous model at {left[-1]}: rename it to {path}." if left else ""
        raise FileNotFoundError(f"No model directory at {path}.{hint}")
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
    if len(vocab) != cfg.get("vocab_size"):
        raise ValueError(f"{path / 'vocab.json'} lists {len(vocab)} tokens but config.json says vocab_size="
                         f"{cfg.get('vocab_size')}: the files come from different models.")
    if not isinstance(labels, list) or len(labels) != cfg.get("n_labels") or not all(isinstance(x, str) for x in labels) \
            or len(set(labels)) != len(labels):
        raise ValueError(f"{path / 'labels.json'} must list {cfg.get('n_labels')} distinct label names (config.json n_labels).")
    if not isinstance(thresholds, list) or len(thresholds) != len(labels) or not all(
            isinstance(t, (int, float)) and not isinstance(t, bool) and 0 <= t <= 1 for t in thresholds):
        raise ValueError(f"{path / 'thresholds.json'} must hold {len(labels)} numbers in [0, 1] (one per label).")
    try:
        model = build_classifier_model(len(vocab), len(labels), arch=cfg["arch"], seq_len=cfg["seq_len"],
                                       max_len=cfg["max_len"], lin_ftrs=cfg["lin_ftrs"], drop_mult=cfg.get("drop_mult", 0.5))
    except KeyError as e:
        raise ValueError(f"{path / 'config.json'} lacks the key {e}.") from e
    except (TypeError, ValueError) as e:
        raise ValueError(f"{path / 'config.json'} has invalid architecture values ({type(e).__name__}: {e}).") from e
    _load_weights(model, path / "model.safetensors")
    model.eval()
    model.to(resolve_device(device))
    try:
        history = pd.read_csv(path / "history.csv") if (path / "history.csv").exists() else None
    except (ValueError, UnicodeDecodeError) as e:  # pandas' ParserError/EmptyDataError are ValueErrors
        raise ValueError(f"Model file {path / 'history.csv'} is corrupt ({type(e).__name__}: {e}); delete it "
                         "(it is informational) to load the model.") from e
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
