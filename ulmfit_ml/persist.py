"""Safe, atomic model directories: safetensors weights + JSON, never a pickle.

A classifier directory holds::

    model.safetensors   weights (safetensors: tensors only, no code)
    config.json         format version, architecture, sequence lengths, text/label columns, versions
    vocab.json          token list (index = id)
    labels.json         label names (column order of predict_proba)
    thresholds.json     per-label decision thresholds
    history.csv         per-epoch training table (informational)

A language-model directory holds ``lm.safetensors``, ``lm.json`` and ``vocab.json``.

Every directory ulmfit_ml writes also holds the ownership marker ``.ulmfit_ml.json`` (kind,
version, the files written). ``overwrite=True`` replaces only a directory that carries it (or
has the exact layout of a model saved before the marker existed) and holds nothing else, never
the current directory or one that holds an input: see :func:`check_replaceable`. Loading does
not need the marker.

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

__all__ = ["save_classifier", "load_classifier", "save_lm", "load_lm", "atomic_dir", "check_replaceable",
           "remove_owned_dir", "write_marker", "MARKER", "FORMAT_VERSION"]

FORMAT_VERSION = 1


def _versions() -> dict[str, str]:
    import fastai

    from . import __version__

    return {"ulmfit_ml": __version__, "fastai": fastai.__version__, "torch": torch.__version__}


#: The ownership marker in every directory ulmfit_ml writes (models, language models,
#: checkpoints, run directories). ``overwrite`` only ever replaces a directory that carries it.
MARKER = ".ulmfit_ml.json"

#: Directories written before the marker existed, recognised by their exact layout so that
#: ``overwrite`` keeps working on them: kind -> (a file that must exist, the names allowed).
_LEGACY_LAYOUTS: dict[str, tuple[str, frozenset[str]]] = {
    "classifier": ("config.json", frozenset({"model.safetensors", "config.json", "vocab.json", "labels.json",
                                             "thresholds.json", "history.csv"})),
    "language_model": ("lm.json", frozenset({"lm.safetensors", "lm.json", "vocab.json", "history.csv"})),
    "pretrain_checkpoint": ("state.json", frozenset({"state.safetensors", "state.json"})),
}

#: Run directories (``ulmfit-ml lm/train/cv``): their files change while the run goes on, so
#: they are checked by name: top-level file patterns, and sub-directories with their own rule.
_RUN_FILES = ("config.toml", "config.json", "data.json", "environment.json", "history.csv", "lm_history.csv",
              "metrics.json", "run.log", "status.json", "oof.csv", "cv_metrics.csv", "test_predictions.csv",
              ".tmp-*", MARKER)
#: Directories of files that ulmfit_ml adds one by one: kind -> the file names allowed.
_PATTERN_KINDS = {"checkpoints": ("ckpt-s*-e*.pt", "checkpoint.json", ".tmp-*", MARKER),
                  "plots": ("*.png", ".tmp-*", MARKER)}
_RUN_SUBDIRS = {"lm": "owned", "model": "owned", "checkpoints": _PATTERN_KINDS["checkpoints"],
                "plots": _PATTERN_KINDS["plots"], "folds": "folds"}


def _marker(path: Path) -> dict[str, Any] | None:
    """The ownership marker of directory ``path`` (``None``: absent or not ulmfit_ml's)."""
    p = path / MARKER
    try:
        m = json.loads(p.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return m if isinstance(m, dict) and m.get("owner") == "ulmfit_ml" else None


def write_marker(path: str | Path, kind: str, files: list[str] | None = None) -> Path:
    """Write the ownership marker ``MARKER`` into directory ``path`` (``files``: what was written)."""
    from . import __version__

    obj: dict[str, Any] = {"owner": "ulmfit_ml", "kind": kind, "format_version": FORMAT_VERSION,
                           "ulmfit_ml": __version__}
    if files is not None:
        obj["files"] = sorted(files)
    p = Path(path) / MARKER
    p.write_text(json.dumps(obj, indent=2), encoding="utf-8")
    return p


def _rel_files(path: Path) -> list[str]:
    """Every entry below ``path`` (files, links, empty dirs) as POSIX relative paths."""
    out = []
    for root, dirs, files in os.walk(path, followlinks=False):
        r = Path(root)
        for name in files + [d for d in dirs if (r / d).is_symlink()]:
            out.append((r / name).relative_to(path).as_posix())
        if not dirs and not files and r != path:
            out.append(r.relative_to(path).as_posix() + "/")
    return sorted(out)


def _foreign_entries(path: Path) -> list[str] | None:
    """Entries of directory ``path`` that ulmfit_ml did not write; ``None``: not ulmfit_ml's at all.

    A directory is ulmfit_ml's if it carries :data:`MARKER` (or, written by an older version,
    has the exact layout of a model, language model or pretraining checkpoint). Its entries
    must then be the ones the marker lists (run directories: the names of the run layout).
    """
    m = _marker(path)
    if m is None:  # written before the marker existed?
        names = {p.name for p in path.iterdir()}
        for kind, (must, allowed) in _LEGACY_LAYOUTS.items():
            if must in names and names <= allowed and all((path / n).is_file() and not (path / n).is_symlink()
                                                          for n in names):
                meta = _read_json_quiet(path / must) or {}
                if meta.get("kind") == kind or (kind == "pretrain_checkpoint" and "step" in meta):
                    return []
        if (path / "config.json").is_file() and "command" in (_read_json_quiet(path / "config.json") or {}):
            return _foreign_in_run(path)
        if (path / "checkpoint.json").is_file() and "weights" in (_read_json_quiet(path / "checkpoint.json") or {}):
            return _foreign_by_name(path, _PATTERN_KINDS["checkpoints"], "")
        return None
    if m.get("kind") == "run":
        return _foreign_in_run(path)
    if m.get("kind") in _PATTERN_KINDS:
        return _foreign_by_name(path, _PATTERN_KINDS[m["kind"]], "")
    listed = set(m.get("files") or [])
    return [f for f in _rel_files(path) if f != MARKER and f not in listed]


def _read_json_quiet(p: Path) -> Any:
    try:
        obj = json.loads(p.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return obj if isinstance(obj, dict) else None


def _matches(name: str, pats: tuple[str, ...]) -> bool:
    import fnmatch

    return any(fnmatch.fnmatchcase(name, p) for p in pats)


def _foreign_by_name(path: Path, pats: tuple[str, ...], prefix: str) -> list[str]:
    """Entries of ``path`` that are not plain files named like ``pats``."""
    return [f"{prefix}{x.name}" + ("/" if x.is_dir() else "") for x in sorted(path.iterdir(), key=lambda p: p.name)
            if x.is_symlink() or not x.is_file() or not _matches(x.name, pats)]


def _foreign_in_run(path: Path) -> list[str]:
    import fnmatch

    def owned_sub(p: Path, prefix: str) -> list[str]:
        f = _foreign_entries(p) if p.is_dir() and not p.is_symlink() else None
        return [prefix + "/"] if f is None else [f"{prefix}/{x}" for x in f]

    bad: list[str] = []
    for e in sorted(path.iterdir(), key=lambda p: p.name):
        rule = _RUN_SUBDIRS.get(e.name)
        if e.is_symlink() or (rule is None and not e.is_file()):
            bad.append(e.name + ("/" if e.is_dir() else ""))
        elif rule is None:
            if not _matches(e.name, _RUN_FILES):
                bad.append(e.name)
        elif not e.is_dir():
            bad.append(e.name)
        elif rule == "owned":
            bad += owned_sub(e, e.name)
        elif rule == "folds":
            for fold in sorted(e.iterdir(), key=lambda p: p.name):
                if fold.is_dir() and not fold.is_symlink() and fnmatch.fnmatchcase(fold.name, "fold*"):
                    for x in sorted(fold.iterdir(), key=lambda p: p.name):
                        if x.name == "model":
                            bad += owned_sub(x, f"folds/{fold.name}/model")
                        elif x.name != MARKER:
                            bad.append(f"folds/{fold.name}/{x.name}")
                elif fold.name != MARKER:
                    bad.append(f"folds/{fold.name}")
        else:
            bad += _foreign_by_name(e, rule, f"{e.name}/")
    return bad


def _same_or_inside(inner: Path, outer: Path) -> bool:
    return inner == outer or outer in inner.parents


def check_replaceable(path: str | Path, *, inputs: Any = ()) -> Path:
    """Raise unless ulmfit_ml may delete or replace directory ``path`` (the one rule of every overwrite).

    Allowed only when ``path`` carries ulmfit_ml's ownership marker (:data:`MARKER`, or is a
    model / language model / checkpoint directory written before the marker existed) and holds
    nothing else than what ulmfit_ml wrote there, and when it neither is nor contains the current
    directory nor any of ``inputs`` (the files and directories the run reads).

    Raises:
        FileExistsError: the message names ``path``, the reason and the fix.
    """
    path = Path(path)
    real = path.resolve()
    fix = "choose another output directory, or move or delete it yourself"
    if _same_or_inside(Path.cwd().resolve(), real):
        raise FileExistsError(f"Refusing to replace {path}: it is or contains the current directory. "
                              f"Nothing was deleted; {fix}.")
    for inp in inputs or ():
        if inp is None:
            continue
        if _same_or_inside(Path(inp).expanduser().resolve(), real):
            raise FileExistsError(f"Refusing to replace {path}: it holds the input {inp} of this run. "
                                  f"Nothing was deleted; {fix}.")
    if path.is_symlink() or not path.is_dir():
        raise FileExistsError(f"{path} exists and is not a directory: {fix}.")
    foreign = _foreign_entries(path)
    if foreign is None:
        raise FileExistsError(f"Refusing to replace {path}: it was not written by ulmfit_ml (no {MARKER} marker), "
                              f"so overwrite would delete files that are not ulmfit_ml's. Nothing was deleted; {fix}.")
    if foreign:
        shown = ", ".join(foreign[:5]) + (f" and {len(foreign) - 5} more" if len(foreign) > 5 else "")
        raise FileExistsError(f"Refusing to replace {path}: besides ulmfit_ml's files it holds {shown}, which "
                              f"ulmfit_ml did not write. Nothing was deleted; move them out, or {fix}.")
    return path


def remove_owned_dir(path: str | Path, *, inputs: Any = ()) -> None:
    """Delete directory ``path`` after :func:`check_replaceable` (nothing happens if it is absent)."""
    path = Path(path)
    if not path.exists() and not path.is_symlink():
        return
    check_replaceable(path, inputs=inputs)
    shutil.rmtree(path)


def atomic_dir(path: str | Path, write: Callable[[Path], None], *, overwrite: bool = False,
               kind: str = "directory", inputs: Any = ()) -> Path:
    """Run ``write(tmp_dir)`` then move ``tmp_dir`` to ``path`` in one rename.

    The new directory gets the ownership marker :data:`MARKER` (``kind`` and the files
    written). With ``overwrite``, an existing ``path`` is replaced only if
    :func:`check_replaceable` allows it (ulmfit_ml's own directory, not the current directory
    and holding none of ``inputs``); the new directory is swapped with the old one in one
    atomic ``renameat2(RENAME_EXCHANGE)`` on Linux (elsewhere: the old one is renamed aside to
    ``.NAME.old-*`` first), then the old one is deleted.

    Raises:
        FileExistsError: ``path`` exists and ``overwrite`` is false, or it may not be replaced.
    """
    path = Path(path)
    exists = path.exists() or path.is_symlink()
    if exists and not overwrite:
        raise FileExistsError(f"{path} already exists; pass overwrite=True to replace it.")
    if exists:
        check_replaceable(path, inputs=inputs)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.parent / f".{path.name}.tmp-{uuid.uuid4().hex[:8]}"
    tmp.mkdir()
    try:
        write(tmp)
        write_marker(tmp, kind, [f for f in _rel_files(tmp) if f != MARKER])
        for f in tmp.rglob("*"):  # flush file contents before the rename makes them visible
            if f.is_file() and not f.is_symlink():
                with open(f, "rb") as fh:
                    os.fsync(fh.fileno())
        _fsync_dir(tmp)
        if not exists:
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
def save_classifier(clf: Any, path: str | Path, *, overwrite: bool = False, inputs: Any = ()) -> Path:
    """Save a :class:`~ulmfit_ml.classifier.MultiLabelClassifier` to directory ``path`` atomically.

    The thresholds are checked first (one number in [0, 1] per label): a model that could not
    be loaded again never replaces a good one.
    """
    from .thresholds import check_thresholds

    try:
        thresholds = check_thresholds(clf.thresholds, len(clf.labels))
    except (ValueError, TypeError) as e:
        raise ValueError(f"Cannot save to {path}: clf.thresholds is invalid ({e}) Set it to {len(clf.labels)} numbers "
                         "in [0, 1], one per label (or call clf.tune_thresholds()); nothing was written.") from e
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
        _write_json(tmp / "thresholds.json", [float(t) for t in thresholds])
        if clf.history is not None and len(clf.history):
            clf.history.to_csv(tmp / "history.csv", index=False)

    return atomic_dir(path, write, overwrite=overwrite, kind="classifier", inputs=inputs)


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
#: Tensors fastai's AWD-LSTM LM ties to ``0.encoder.weight``: not stored, restored on load.
_TIED_LM_KEYS = ("0.encoder_dp.emb.weight", "1.decoder.weight")


def save_lm(lm: Any, path: str | Path, *, overwrite: bool = False, half: bool = False) -> Path:
    """Save a :class:`~ulmfit_ml.lm.LanguageModel` (weights, vocab, arch) atomically.

    The tied copies of the embedding (:data:`_TIED_LM_KEYS`) are left out; ``half`` stores the
    weights as float16 (half the size, e.g. for the models shipped in the package; they load as
    float32).
    """
    from safetensors.torch import save_file

    dtype = torch.float16 if half else torch.float32

    def write(tmp: Path) -> None:
        save_file({k: v.detach().cpu().to(dtype).contiguous().clone() for k, v in lm.state_dict.items()
                   if k not in _TIED_LM_KEYS}, str(tmp / "lm.safetensors"))
        _write_json(tmp / "lm.json", {"format_version": FORMAT_VERSION, "kind": "language_model", "arch": lm.arch,
                                      "backwards": lm.backwards, "metrics": lm.metrics, "config": lm.config,
                                      "vocab_size": len(lm.vocab), "dtype": str(dtype).replace("torch.", ""),
                                      "versions": _versions()})
        _write_json(tmp / "vocab.json", lm.vocab)
        if lm.history is not None and len(lm.history):
            lm.history.to_csv(tmp / "history.csv", index=False)

    return atomic_dir(path, write, overwrite=overwrite, kind="language_model")


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
    state = {k: v.float() for k, v in state.items()}
    for k in _TIED_LM_KEYS:
        state.setdefault(k, state["0.encoder.weight"])
    history = pd.read_csv(path / "history.csv") if (path / "history.csv").exists() else None
    return LanguageModel(vocab, meta["arch"], state, backwards=meta.get("backwards", False), history=history,
                         metrics=meta.get("metrics"), config=meta.get("config"))
