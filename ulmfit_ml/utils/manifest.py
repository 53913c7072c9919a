"""The sha256 manifest of saved model and language-model directories, checked at every load.

:func:`~ulmfit_ml.utils.persist.atomic_dir` writes the ownership marker ``.ulmfit_ml.json`` of a
model (kinds :data:`~ulmfit_ml.utils.kinds.HASHED_KINDS`) with the sha256 of every file it holds;
:func:`verify_files` is the one check of them, called by
:func:`~ulmfit_ml.models.registry.load_classifier` and :func:`~ulmfit_ml.models.lm.load_lm`. Without it a
hand-edited ``labels.json`` (two names swapped) or ``config.json`` (``"backwards": true``)
loads and silently relabels or changes every prediction.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from .persist import MARKER, file_sha256

__all__ = ["verify_files", "MANIFEST_SINCE"]

#: The first format (``format_version`` of ``config.json`` / ``lm.json``) whose directories
#: must carry the manifest; directories of an older format (no checksums) load as before.
MANIFEST_SINCE = 2
#: Files a model directory may lack at load (informational): missing is fine, changed is not.
_OPTIONAL_FILES = frozenset({"history.csv"})


def _read_marker(path: Path) -> dict[str, Any] | None:
    """The marker of ``path`` (``None``: absent, unreadable or not ulmfit_ml's)."""
    try:
        m = json.loads((path / MARKER).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return m if isinstance(m, dict) and m.get("owner") == "ulmfit_ml" else None


def verify_files(path: str | Path, kind: str, *, format_version: Any, known: dict[str, str] | None = None) -> bool:
    """Check every file of a saved model / language model directory against the sha256 its
    marker (:data:`~ulmfit_ml.utils.persist.MARKER`) recorded at save time (the check of every load).

    A hand-edited ``labels.json`` (two names swapped), ``config.json`` (``backwards``),
    ``thresholds.json``, vocab, tokenizer or weight file loads as a different model without any
    other error, so a changed file refuses the load, naming the file. Directories saved in a
    format before :data:`MANIFEST_SINCE` (``format_version``, from ``config.json`` / ``lm.json``)
    have no checksums and are not checked. This detects edits and corruption, not a forger who
    rewrites the marker too.

    Args:
        kind: ``"classifier"`` or ``"language_model"``.
        format_version: the format the directory's own config says it was saved in.
        known: sha256 already computed by the caller (file name -> hex digest), not read again.

    Returns:
        True if the files were checked, False for an older format without checksums.

    Raises:
        ValueError: a file differs from its checksum, or the manifest is missing or broken.
        FileNotFoundError: a file the manifest lists (other than ``history.csv``) is missing.
    """
    path = Path(path)
    fv = format_version if isinstance(format_version, int) and not isinstance(format_version, bool) else 0
    m = _read_marker(path)
    hashes = m.get("sha256") if m is not None else None
    if hashes is None:
        if fv < MANIFEST_SINCE:
            return False  # saved before checksums existed: loads as before
        what = "missing or unreadable" if m is None else "has no sha256 checksums"
        raise ValueError(f"{path / MARKER} (the checksums of the model's files, written at save time) is {what}, but "
                         f"{path.name}'s config says format {fv}, which always has them: the directory was edited or "
                         "copied incompletely. Copy the whole directory again (hidden files included) or save the "
                         "model again.")
    if (m.get("kind") != kind or not isinstance(hashes, dict)
            or not all(isinstance(k, str) and isinstance(v, str) for k, v in hashes.items())):
        raise ValueError(f"{path / MARKER} is not the manifest of a ulmfit_ml {kind.replace('_', ' ')} (kind "
                         f"{m.get('kind')!r}): the directory was edited by hand. Save the model again.")
    known = known or {}
    for name, want in sorted(hashes.items()):
        p = path / name
        if Path(name).is_absolute() or ".." in Path(name).parts:
            raise ValueError(f"{path / MARKER} lists {name!r}, which is not a file of the model: the manifest was "
                             "edited by hand. Save the model again.")
        if not p.is_file():
            if name in _OPTIONAL_FILES:
                continue
            raise FileNotFoundError(f"Model file {name} is missing from {path} ({MARKER} lists it): restore it or "
                                    "save the model again.")
        if (known.get(name) or file_sha256(p)) != want:
            extra = " (it is informational: delete it to load the model)" if name in _OPTIONAL_FILES else ""
            raise ValueError(f"{p} was changed after the model was saved: its sha256 differs from the one {MARKER} "
                             f"recorded at save time{extra}. The file was edited by hand or corrupted, and loading it "
                             "could silently change the predictions (a relabelled, reversed or rethresholded model). "
                             "Restore the saved file, or make the change in Python on the original model and save "
                             "it again (clf.save(dir) / lm.save(dir)).")
    return True
