"""The one atomic writer of ulmfit_ml, its ownership marker, and safe (pickle-free) weight files.

Every file ulmfit_ml writes goes through :func:`atomic_file` (one file: temporary sibling,
fsync, rename, fsync of the directory) or :func:`atomic_dir` (a whole directory, the same way).
The model directories themselves are laid out by their owners: :mod:`ulmfit_ml.models.classifier`
(classifiers) and :mod:`ulmfit_ml.models.lm` (language models), with the helpers here
(:func:`save_weights`, :func:`load_weights`, :func:`read_json`, :func:`write_json`).

Every directory ulmfit_ml writes also holds the ownership marker ``.ulmfit_ml.json`` (kind,
version, the files written). ``overwrite=True`` replaces only a directory that carries it (or
has the exact layout of a model saved before the marker existed) and holds nothing else, never
the current directory or one that holds an input: see :func:`check_replaceable`. A model's
marker also holds the sha256 of each file, checked at load by :mod:`ulmfit_ml.utils.manifest`.

Saving writes everything into a temporary sibling directory and renames it into place, so a
crash leaves either the previous complete directory or the new complete one. Loading never
unpickles: a planted ``*.pkl``/``*.pth`` file is ignored.
"""
from __future__ import annotations

import contextlib
import ctypes
import errno
import fnmatch
import hashlib
import json
import os
import shutil
import sys
import uuid
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np
import torch

from .kinds import HASHED_KINDS
from .valuetypes import same_or_inside, user_path
from .version import __version__

__all__ = ["atomic_file", "write_text_atomic", "write_json_atomic", "atomic_dir", "check_replaceable",
           "remove_owned_dir", "write_marker", "MARKER", "FORMAT_VERSION", "versions", "read_json", "write_json",
           "save_weights", "load_weights", "file_sha256", "raise_if_disk_full", "RUN_FILES", "run_file_name"]

FORMAT_VERSION = 2  # 2: a model's marker holds the sha256 of its files (checked by ulmfit_ml.manifest)


def versions() -> dict[str, str]:
    """The package versions a saved file records."""
    import fastai

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

#: Run directories (``ulmfit-ml lm/train/cv``), checked by name as their files change while the run goes on:
#: top-level file patterns (the one list: ``RunDir``'s writers refuse any other name), sub-directories' rules.
RUN_FILES = ("config.toml", "config.json", "data.json", "environment.json", "history.csv", "lm_history.csv",
              "metrics.json", "run.log", "status.json", "oof.csv", "cv_metrics.csv", "test_predictions.csv",
              ".tmp-*", MARKER)
#: Directories of files that ulmfit_ml adds one by one: kind -> the file names allowed.
_PATTERN_KINDS = {"checkpoints": ("ckpt-s*-e*.pt", "checkpoint.json", "teacher.npz", ".tmp-*", MARKER),
                  "plots": ("*.png", ".tmp-*", MARKER)}
_RUN_SUBDIRS = {"lm": "owned", "model": "owned", "checkpoints": _PATTERN_KINDS["checkpoints"],
                "plots": _PATTERN_KINDS["plots"], "folds": "folds"}


def run_file_name(name: str) -> str:
    """``name`` once it is a file of the run-directory layout (:data:`RUN_FILES`)."""
    if not _matches(name, RUN_FILES):
        raise ValueError(f"{name!r} is not a file of the run-directory layout {RUN_FILES}: add it to persist.RUN_FILES.")
    return name


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
    obj: dict[str, Any] = {"owner": "ulmfit_ml", "kind": kind, "format_version": FORMAT_VERSION,
                           "ulmfit_ml": __version__}
    if files is not None:
        obj["files"] = sorted(files)
        if kind in HASHED_KINDS:
            obj["sha256"] = {f: file_sha256(Path(path) / f) for f in sorted(files) if (Path(path) / f).is_file()}
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
    return any(fnmatch.fnmatchcase(name, p) for p in pats)


def _foreign_by_name(path: Path, pats: tuple[str, ...], prefix: str) -> list[str]:
    """Entries of ``path`` that are not plain files named like ``pats``."""
    return [f"{prefix}{x.name}" + ("/" if x.is_dir() else "") for x in sorted(path.iterdir(), key=lambda p: p.name)
            if x.is_symlink() or not x.is_file() or not _matches(x.name, pats)]


def _foreign_in_run(path: Path) -> list[str]:
    def owned_sub(p: Path, prefix: str) -> list[str]:
        f = _foreign_entries(p) if p.is_dir() and not p.is_symlink() else None
        return [prefix + "/"] if f is None else [f"{prefix}/{x}" for x in f]

    bad: list[str] = []
    for e in sorted(path.iterdir(), key=lambda p: p.name):
        rule = _RUN_SUBDIRS.get(e.name)
        if e.is_symlink() or (rule is None and not e.is_file()):
            bad.append(e.name + ("/" if e.is_dir() else ""))
        elif rule is None:
            if not _matches(e.name, RUN_FILES):
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


def check_replaceable(path: str | Path, *, inputs: Any = ()) -> Path:
    """Raise unless ulmfit_ml may delete or replace directory ``path`` (the one rule of every overwrite).

    Allowed only when ``path`` carries ulmfit_ml's ownership marker (:data:`MARKER`, or is a
    model / language model / checkpoint directory written before the marker existed) and holds
    nothing else than what ulmfit_ml wrote there, and when it neither is nor contains the current
    directory nor any of ``inputs`` (the files and directories the run reads).

    Raises:
        FileExistsError: the message names ``path``, the reason and the fix.
    """
    path = user_path(path)
    real = path.resolve()
    fix = "choose another output directory, or move or delete it yourself"
    if same_or_inside(Path.cwd().resolve(), real):
        raise FileExistsError(f"Refusing to replace {path}: it is or contains the current directory. "
                              f"Nothing was deleted; {fix}.")
    for inp in inputs or ():
        if inp is None:
            continue
        if same_or_inside(user_path(inp).resolve(), real):
            raise FileExistsError(f"Refusing to replace {path}: it holds the input {inp} of this run. "
                                  f"Nothing was deleted; {fix}.")
    if path.is_symlink():
        raise FileExistsError(f"Refusing to replace {path}: it is a symbolic link (to {os.readlink(path)}); ulmfit_ml "
                              "will not replace a link. Nothing was deleted; save to its target, or remove the link.")
    if not path.is_dir():
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
    path = user_path(path)
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
    except BaseException as e:
        shutil.rmtree(tmp, ignore_errors=True)
        raise_if_disk_full(e, path)
        raise
    return path


@contextlib.contextmanager
def atomic_file(path: str | Path) -> Iterator[Path]:
    """Write one file atomically: yields a temporary sibling to write, then fsyncs it, renames
    it over ``path`` and fsyncs the directory; on an error the temporary file is removed and
    ``path`` is left as it was. The sibling keeps ``path``'s suffixes (pandas infers
    compression from them).

    Callers check first that ``path`` may be written (:func:`ulmfit_ml.utils.io.check_output_file`
    for user-named files).
    """
    path = user_path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".tmp-{os.getpid()}-{uuid.uuid4().hex[:6]}-{path.name}")
    try:
        yield tmp
        with open(tmp, "rb") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, path)  # callers checked path first (io.check_output_file or their own directory)
    except BaseException as e:
        tmp.unlink(missing_ok=True)  # our own temporary file
        raise_if_disk_full(e, path)
        raise
    _fsync_dir(path.parent)


#: errnos and words of a full disk or a file-size limit (torch.save's zip writer: "enforce fail at
#: inline_container.cc", "PytorchStreamWriter failed"; safetensors: "No space left on device (os error 28)")
_FULL_ERRNOS = {errno.ENOSPC, errno.EFBIG, errno.EDQUOT}
_FULL_WORDS = ("no space left", "file too large", "quota exceeded", "os error 28", "os error 27",
               "inline_container.cc", "pytorchstreamwriter failed")


def raise_if_disk_full(e: BaseException, path: str | Path) -> None:
    """Re-raise ``e``, met while writing ``path``, as one clear ``OSError`` (ENOSPC / EFBIG) naming
    the path when it means "no space left" or "file too large"; return for any other error. The one
    check of :func:`atomic_file` and :func:`atomic_dir`, so every save gets it."""
    text, code = " ".join(str(e).split()), getattr(e, "errno", None)
    if not isinstance(e, (OSError, RuntimeError)) and type(e).__name__ != "SafetensorError" or not (
            code in _FULL_ERRNOS or any(w in text.lower() for w in _FULL_WORDS)):
        return
    code = errno.EFBIG if code == errno.EFBIG or "too large" in text.lower() or "error 27" in text else errno.ENOSPC
    raise OSError(code, f"Could not write {path}: no space left on the device / file too large ({type(e).__name__}: "
                        f"{text[:300]}). Nothing was replaced; free some space (or raise the file-size limit, "
                        "ulimit -f) or write to another disk, then run again.") from e


def write_text_atomic(path: str | Path, text: str) -> Path:
    """``text`` (UTF-8) to ``path`` through :func:`atomic_file`."""
    with atomic_file(path) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return Path(path)


def write_json_atomic(path: str | Path, obj: Any) -> Path:
    """``obj`` as indented JSON to ``path`` through :func:`atomic_file` (NaN kept as ``NaN``)."""
    return write_text_atomic(path, json.dumps(_jsonable(obj), indent=2, ensure_ascii=False, allow_nan=True))


def _jsonable(obj: Any) -> Any:
    """numpy scalars/arrays, tuples and paths -> plain JSON types."""
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return _jsonable(obj.tolist())
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, Path):
        return str(obj)
    return obj


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
        fn = ctypes.CDLL(None, use_errno=True).renameat2
    except (OSError, AttributeError):
        return False
    fn.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    at_fdcwd, rename_exchange = -100, 2
    return fn(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), rename_exchange) == 0


def file_sha256(p: Path) -> str:
    """The sha256 of a file's bytes (saved weights carry theirs, checked at load)."""
    h = hashlib.sha256()
    with open(p, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def write_json(p: Path, obj: Any) -> None:
    """A JSON file inside a directory being written by :func:`atomic_dir` (which fsyncs it)."""
    p.write_text(json.dumps(obj, indent=2, ensure_ascii=False, allow_nan=True), encoding="utf-8")


def read_json(p: Path) -> Any:
    """A JSON file of a saved model; a missing or corrupt file raises with its name."""
    if not p.exists():
        raise FileNotFoundError(f"Model file {p.name} is missing from {p.parent}.")
    try:
        return json.loads(p.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ValueError(f"Model file {p} is corrupt (not valid JSON: {e}).") from e


def save_weights(model: torch.nn.Module, p: Path) -> None:
    """A module's weights as safetensors (no code, no pickle)."""
    from safetensors.torch import save_model

    save_model(model, str(p))  # handles tied/shared tensors (AWD-LSTM embedding dropout)


def load_weights(model: torch.nn.Module, p: Path) -> None:
    """Weights saved by :func:`save_weights` into ``model`` (strict: names and shapes must match)."""
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


