"""Prediction over files of any size, resumable, and the unsafe fastai opt-in.

:func:`predict_file` is the one path from a table file to predictions (the CLI's ``predict``
calls it): it reads the input in chunks with :func:`~ulmfit_ml.utils.io.iter_table` (the same reader
and cell parsing as everywhere else), applies the prediction side of the text policy
(:func:`~ulmfit_ml.utils.validation.text_cells`), predicts each chunk and appends it to the output,
so peak memory depends on ``chunksize``, not on the file size.

Resuming (``.csv``/``.tsv``/``.jsonl`` outputs): the sidecar ``<output>.progress.json`` is written
(0 rows done) before the output is created, and after each chunk's rows are written, flushed and
fsynced it records the number of input rows done and the output's byte length (written
atomically). So an output with a sidecar is always ``predict_file``'s own, even when the run died
in its first chunk. A rerun with ``resume=True`` truncates the output to that byte length
(dropping a half-written chunk) and skips that many input rows, so an interrupted run, resumed,
gives the same file as an uninterrupted one. A ``.parquet`` output is written once at the end.
"""
from __future__ import annotations

import hashlib
import json
import os
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ..models.ensemble import MultiLabelEnsemble, load_predictor, resolve_model_dirs
from ..utils.io import (ReadOptions, check_output_file, iter_table, table_bytes, table_columns, table_format,
                 write_table)
from ..utils.config import OUTPUTS
from ..models.baseline import TfidfBaseline
from ..models.classifier import TextModel
from ..utils.persist import write_json_atomic
from ..utils.runtime import patch_fastai
from ..evaluation.thresholds import check_thresholds
from ..utils.validation import check_bs, check_columns, suppress_empty_text_warning, text_cells, warn_empty_texts
from ..utils.valuetypes import user_path

__all__ = ["predict_file", "predict_frame", "quantized_predictor", "PredictFileResult", "load_fastai_learner",
           "PROGRESS_SUFFIX"]

#: The sidecar next to the output: ``out.csv`` -> ``out.csv.progress.json``.
PROGRESS_SUFFIX = ".progress.json"
_PROGRESS_VERSION = 2
_STREAMED = ("csv", "tsv", "jsonl")
_START_OVER = "pass resume=False (CLI: --no-resume) to start over"


@dataclass
class PredictFileResult:
    """What :func:`predict_file` did.

    Attributes:
        output_path: the table written.
        n_rows: input rows in the output (all of them once complete).
        n_new: rows predicted by this call (``n_rows - resumed_from``).
        resumed_from: input rows already done by an earlier, interrupted call (0 if none).
        n_empty: rows of this call whose text was missing or empty (predicted from an empty input).
        seconds: wall time of this call.
    """

    output_path: Path
    n_rows: int
    n_new: int
    resumed_from: int
    n_empty: int
    seconds: float

    @property
    def texts_per_s(self) -> float:
        """Rows predicted per second by this call."""
        return self.n_new / self.seconds if self.seconds > 0 else float("nan")


# ---------------------------------------------------------------------- progress sidecar
def _progress_path(output_path: Path) -> Path:
    return output_path.with_name(output_path.name + PROGRESS_SUFFIX)


def _write_progress(p: Path, state: dict[str, Any]) -> None:
    """Write the sidecar atomically: a crash leaves the previous or the new one, never half of one."""
    write_json_atomic(p, state)


def _read_progress(p: Path) -> dict[str, Any]:
    try:
        state = json.loads(p.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ValueError(f"The progress file {p} is corrupt ({e}); {_START_OVER}.") from e
    if not isinstance(state, dict) or state.get("version") != _PROGRESS_VERSION:
        raise ValueError(f"{p} is not a predict_file progress file; {_START_OVER}.")
    return state


def _model_fingerprint(predictor: Any) -> str:
    """sha256 of the weights (of every member of an ensemble), labels and thresholds: resuming
    with another model must fail."""
    h = hashlib.sha256()
    for k, v in predictor.weight_arrays().items():
        h.update(k.encode())
        h.update(np.ascontiguousarray(v).tobytes())
    h.update(json.dumps([list(predictor.labels), [float(t) for t in getattr(predictor, "thresholds", [])]]).encode())
    return h.hexdigest()


# ---------------------------------------------------------------------- prediction
def _load_model(model: Any, device: str | None) -> Any:
    if isinstance(model, (TextModel, MultiLabelEnsemble, TfidfBaseline)):
        return model
    if isinstance(model, (str, Path)):
        return load_predictor(model, device=device)
    raise TypeError(f"model must be a saved model directory, a run directory, a MultiLabelClassifier, a "
                    f"MultiLabelEnsemble or a TfidfBaseline, got {type(model).__name__}. (A MultiCategoryClassifier or TextRegressor "
                    "is accepted too.)")


def quantized_predictor(predictor: Any) -> Any:
    """The ``int8=True`` copy of a classifier or of an ensemble of classifiers (every member quantized)."""
    if isinstance(predictor, MultiLabelEnsemble):
        # the ULMFiT members quantized; a TF-IDF member is a sparse product already
        ens = MultiLabelEnsemble([m if isinstance(m, TfidfBaseline) else quantized_predictor(m) for m in predictor.models],
                                 weights=list(predictor.weights))
        ens.thresholds = predictor.thresholds.copy()
        return ens
    if not isinstance(predictor, TextModel):
        raise TypeError(f"int8=True quantizes ULMFiT classifiers, not a {type(predictor).__name__}.")
    return predictor.quantized()


def predict_frame(predictor: Any, chunk: pd.DataFrame, *, start: int, text_col: str, id_col: str | None = None,
                  output: str = "proba", threshold: Any = None, at_least_one: bool = False,
                  bs: int = 128) -> tuple[pd.DataFrame, int]:
    """One chunk of input rows -> its output rows, in the layout of every :func:`predict_file`
    output (``row`` numbered from ``start``), and its number of empty texts (not warned here).

    The one place a table chunk becomes predictions: :func:`predict_file` and distributed
    batch prediction both call it, so their outputs are identical.
    """
    _header(predictor, id_col, output)  # an id column named like an output column: refused, never overwritten
    _check_threshold(predictor, threshold)
    texts, empty = text_cells(chunk[text_col], col=text_col)
    with suppress_empty_text_warning():  # counted here, warned once per file by predict_file
        table = predictor.output_table(texts, output=output, threshold=threshold, at_least_one=at_least_one, bs=bs)
    if output == "submission":
        out = pd.DataFrame({id_col: chunk[id_col].to_numpy()})
    else:
        out = pd.DataFrame({"row": np.arange(start, start + len(texts), dtype=np.int64)})
        if id_col is not None:
            out[id_col] = chunk[id_col].to_numpy()
    for col in table.columns:
        out[col] = table[col].to_numpy()
    return out, int(empty.sum())


def _header(predictor: Any, id_col: str | None, output: str) -> list[str]:
    """The output columns of every :func:`predict_file` output, in order.

    Raises:
        ValueError: ``id_col`` has the name of a column the output writes (``row``, ``labels``,
            ``proba_<label>``, a label name in a submission): its ids would replace that column.
    """
    own = predictor.output_columns(output) if output == "submission" else ["row"] + predictor.output_columns(output)
    if id_col is not None and str(id_col) in own:
        what = {"row": "the input row number", "labels": "the predicted labels"}.get(str(id_col), "a prediction column")
        raise ValueError(f"id_col={id_col!r} clashes with the output column {str(id_col)!r} ({what}) that the "
                         f"{output!r} output writes: the ids would replace it. Rename that column of the input (e.g. "
                         f"df.rename(columns={{{str(id_col)!r}: '{id_col}_id'}})), choose another output, or leave "
                         "id_col unset.")
    if output == "submission":
        return [str(id_col)] + own
    return own[:1] + ([id_col] if id_col is not None else []) + own[1:]


def _check_threshold(predictor: Any, threshold: Any) -> None:
    """A threshold given to predict_file / predict_dask: checked whatever the output (a bool or a
    string raises), for multi-label models (the others refuse any threshold themselves)."""
    if threshold is not None and getattr(predictor, "task", "multilabel") == "multilabel":
        check_thresholds(threshold, len(predictor.labels))


@dataclass
class _FileRun:
    """One :func:`predict_file` call, resolved: the files, the model and the per-chunk options."""

    input_path: Path
    output_path: Path
    out_fmt: str
    weights: Any  # the float model: its fingerprint identifies a run
    predictor: Any  # what predicts: ``weights`` or its int8 copy
    opts: dict[str, Any]  # predict_frame's keyword options
    read: ReadOptions
    int8: bool

    @property
    def cols(self) -> list[str]:
        """The input columns read: the text, then the id column if any."""
        return [self.opts["text_col"]] + ([self.opts["id_col"]] if self.opts["id_col"] is not None else [])

    @property
    def progress_path(self) -> Path:
        return _progress_path(self.output_path)

    def empty_frame(self) -> pd.DataFrame:
        """The output of an input without rows: the header only."""
        return pd.DataFrame(columns=_header(self.predictor, self.opts["id_col"], self.opts["output"]))

    def predict(self, chunk: pd.DataFrame, start: int) -> tuple[pd.DataFrame, int]:
        return predict_frame(self.predictor, chunk[self.cols], start=start, **self.opts)

    def warn_empty(self, n_empty: int) -> None:
        # this method <- _predict_at_once / _predict_streamed <- predict_file <- the user's call
        warn_empty_texts(n_empty, where=self.input_path.name, col=self.opts["text_col"], stacklevel=5)


def _check_file_options(output: str, id_col: str | None, chunksize: Any, bs: Any) -> None:
    if output not in OUTPUTS:
        raise ValueError(f"output must be one of {list(OUTPUTS)}, got {output!r}.")
    if output == "submission" and id_col is None:
        raise ValueError("output='submission' needs id_col= (CLI --id-col): the id column of the input, e.g. 'id'.")
    if isinstance(chunksize, bool) or not isinstance(chunksize, int) or chunksize < 1:
        raise ValueError(f"chunksize must be a positive int, got {chunksize!r}.")
    check_bs(bs)


def _check_files(model: Any, input_path: Path, output_path: Path, *, overwrite: bool) -> str:
    """The output format, once the paths pass the one output policy: never the input (or a file
    of a model directory); an existing output only if predict_file wrote it (it has a progress
    file) or ``overwrite``."""
    out_fmt = table_format(output_path)  # unknown output extension: fail before anything else
    table_format(input_path)
    if not input_path.is_file():
        raise FileNotFoundError(f"No input file at {input_path}.")
    model_dirs = resolve_model_dirs(model) if isinstance(model, (str, Path)) else []
    resumable = out_fmt in _STREAMED and _progress_path(output_path).is_file()
    check_output_file(output_path, overwrite=overwrite or resumable, inputs=[input_path, *model_dirs])
    return out_fmt


def _resolve_run(model: Any, input_path: Path, output_path: Path, out_fmt: str, read: ReadOptions, *,
                 text_col: str | None, device: str | None, int8: bool, **opts: Any) -> _FileRun:
    """Load the model and check the columns and options against it, before anything is written."""
    weights = _load_model(model, "cpu" if int8 else device)
    predictor = quantized_predictor(weights) if int8 else weights
    text_col = predictor.meta.get("text_col", "text") if text_col is None else text_col
    id_col = opts["id_col"]
    if id_col is not None and id_col == text_col:
        raise ValueError(f"id_col and text_col are both {text_col!r}: name the id column, or leave id_col=None.")
    _header(predictor, id_col, opts["output"])
    _check_threshold(predictor, opts["threshold"])
    run = _FileRun(input_path, output_path, out_fmt, weights, predictor, {"text_col": text_col, **opts}, read, int8)
    check_columns(pd.DataFrame(columns=table_columns(input_path, **read.kwargs())), run.cols)  # io checks `read`
    return run


def _predict_at_once(run: _FileRun, chunks: Any, t0: float) -> PredictFileResult:
    """Parquet: chunks predicted, one atomic write at the end."""
    parts, n_empty, pos = [], 0, 0
    for chunk in chunks:
        res, n_e = run.predict(chunk, pos)
        parts.append(res)
        n_empty, pos = n_empty + n_e, pos + len(chunk)
    write_table(pd.concat(parts, ignore_index=True) if parts else run.empty_frame(), run.output_path)
    run.warn_empty(n_empty)
    return PredictFileResult(run.output_path, pos, pos, 0, n_empty, time.perf_counter() - t0)


def _run_identity(run: _FileRun) -> dict[str, Any]:
    """What the progress file records of a run: a resume must match all of it."""
    stat = run.input_path.stat()
    o = run.opts
    return {"version": _PROGRESS_VERSION, "input": str(run.input_path.resolve()), "input_size": stat.st_size,
            "input_mtime_ns": stat.st_mtime_ns, "model": _model_fingerprint(run.weights), "text_col": o["text_col"],
            "id_col": o["id_col"], "output": o["output"], "format": run.out_fmt,
            "threshold": None if o["threshold"] is None else np.asarray(o["threshold"], dtype=float).tolist(),
            "at_least_one": o["at_least_one"], "int8": run.int8, **run.read.kwargs()}


def _resume_point(run: _FileRun, ident: dict[str, Any]) -> tuple[int, int, bool]:
    """``(rows done, output bytes committed, complete)`` of the interrupted run in the progress file."""
    prog_path, output_path = run.progress_path, run.output_path
    state = _read_progress(prog_path)
    diff = [k for k in ident if state.get(k) != ident[k]]
    if diff:
        raise ValueError(f"{prog_path} belongs to a run with other {diff} (input changed, another model or "
                         f"options); {_START_OVER}.")
    done, offset = int(state["rows"]), int(state["bytes"])
    if offset and (not output_path.exists() or output_path.stat().st_size < offset):
        raise ValueError(f"{output_path} is shorter than its progress file says ({offset} bytes): it was "
                         f"changed after the run; {_START_OVER}.")
    return done, offset, bool(state.get("complete"))


def _commit(f: Any, prog_path: Path, ident: dict[str, Any], rows: int, complete: bool = False) -> None:
    """Record ``rows`` input rows done, once the output's bytes are on disk."""
    f.flush()
    os.fsync(f.fileno())  # rows are on disk before the progress file says so
    _write_progress(prog_path, {**ident, "rows": rows, "bytes": f.tell(), "complete": complete})


def _append_chunks(run: _FileRun, f: Any, chunks: Any, ident: dict[str, Any], done: int,
                   header_needed: bool) -> tuple[int, int, bool]:
    """Predict the rows after ``done`` and append them to ``f``, committing after each chunk;
    ``(input rows seen, empty texts, header still needed)``."""
    n_empty, pos = 0, 0
    for chunk in chunks:
        start, pos = pos, pos + len(chunk)
        if pos <= done:  # committed by an earlier run: parsed again, not predicted again
            continue
        if start < done:  # resumed with another chunksize: finish the partly done chunk
            chunk, start = chunk.iloc[done - start:], done
        res, n_e = run.predict(chunk, start)
        n_empty += n_e
        f.write(table_bytes(res, run.out_fmt, header=header_needed))
        header_needed = False
        _commit(f, run.progress_path, ident, pos)
    return pos, n_empty, header_needed


def _predict_streamed(run: _FileRun, chunks: Any, resume: bool, t0: float) -> PredictFileResult:
    """CSV/TSV/JSON lines: each chunk appended and committed to the progress file; resumable."""
    ident, prog_path, output_path = _run_identity(run), run.progress_path, run.output_path
    done, offset = 0, 0
    if resume and prog_path.exists():
        done, offset, complete = _resume_point(run, ident)
        if complete:
            return PredictFileResult(output_path, done, 0, done, 0, time.perf_counter() - t0)
    output_path.parent.mkdir(parents=True, exist_ok=True)
    if offset == 0:  # the sidecar first: a run killed before its first commit stays resumable
        _write_progress(prog_path, {**ident, "rows": 0, "bytes": 0, "complete": False})
        done = 0
    with open(output_path, "r+b" if offset else "wb") as f:
        f.truncate(offset)  # drop rows written after the last commit (a half-written chunk)
        f.seek(offset)
        pos, n_empty, header_needed = _append_chunks(run, f, chunks, ident, done, header_needed=offset == 0)
        if pos < done:
            raise ValueError(f"{run.input_path} has {pos} rows but {prog_path.name} says {done} were done: the input "
                             f"changed; {_START_OVER}.")
        if header_needed and run.out_fmt != "jsonl":  # empty input: header only
            f.write(table_bytes(run.empty_frame(), run.out_fmt))
        _commit(f, prog_path, ident, max(pos, done), complete=True)
    run.warn_empty(n_empty)
    n_rows = max(pos, done)
    return PredictFileResult(output_path, n_rows, n_rows - done, done, n_empty, time.perf_counter() - t0)


def predict_file(model: Any, input_path: str | Path, output_path: str | Path, *, text_col: str | None = None,
                 chunksize: int = 10000, id_col: str | None = None, output: str = "proba", resume: bool = True,
                 threshold: float | list[float] | None = None, at_least_one: bool = False, sep: str | None = None,
                 header: bool = True, encoding: str = "utf-8", encoding_errors: str = "strict", bs: int = 128,
                 overwrite: bool = False, device: str | None = "cpu", int8: bool = False) -> PredictFileResult:
    """Predict every row of a table file (CSV/TSV/parquet/JSON lines) in chunks.

    The output has one row per input row, in input order: ``row`` (0-based input row number), then
    ``id_col`` if given, then ``labels`` (names joined by the model's label delimiter,
    ``output="labels"``/``"both"``) and/or one ``proba_<label>`` column per label (``output="proba"``/
    ``"both"``; 6 significant digits in text formats). ``output="submission"`` writes ``id_col`` then
    one column per label named by the label (the Kaggle shape). Rows whose text is missing or empty
    are predicted from an empty input, with one warning giving their count (the text policy of
    :mod:`ulmfit_ml.utils.validation`, whatever the output format).

    Args:
        model: a saved model directory, a ``train`` run directory, a ``cv`` run directory with saved fold
            models (probabilities averaged), a :class:`~ulmfit_ml.models.classifier.MultiLabelClassifier` or a
            :class:`~ulmfit_ml.models.ensemble.MultiLabelEnsemble`.
        input_path: ``.csv``/``.tsv`` (optionally compressed), ``.parquet`` or ``.jsonl``.
        output_path: the table to write, format by extension; ``.csv``/``.tsv``/``.jsonl`` are
            resumable (sidecar ``output_path + ".progress.json"``).
        text_col: the text column; default the model's training text column.
        chunksize: rows per chunk; peak memory grows with it, not with the file size.
        id_col: a column copied to the output as is (read as strings from CSV); needed by ``"submission"``.
        output: ``"proba"``, ``"labels"``, ``"both"`` or ``"submission"``.
        resume: continue an interrupted run of the same input, model and options (a finished one is left
            as it is); ``False`` (CLI ``--no-resume``) starts over, replacing an output that
            ``predict_file`` wrote (it has a progress file).
        threshold: overrides the model's per-label thresholds for ``labels``.
        at_least_one: give each text its most probable label when none passes.
        sep, header, encoding, encoding_errors: how CSV/TSV is read (:class:`~ulmfit_ml.utils.io.ReadOptions`):
            separator (default ``","``, ``"\\t"`` for ``.tsv``); ``header=False`` for a header-less file
            (columns ``"0"``, ``"1"``, ...); ``encoding_errors="replace"`` for a few bad bytes.
        bs, device: the prediction batch size (a positive int); where a model loaded from a directory runs.
        overwrite: replace an existing ``output_path`` that ``predict_file`` did not write (CLI
            ``--overwrite``). The input is never replaced (:func:`~ulmfit_ml.utils.io.check_output_file`).
        int8: predict with :meth:`~ulmfit_ml.models.classifier.MultiLabelClassifier.quantized` copies (dynamic int8
            LSTM and linear weights, CPU): about twice as fast; its quality cost is in ``bench/INFERENCE.md``.

    Returns:
        :class:`PredictFileResult` (rows, rows done by this call, timing).

    Raises:
        FileNotFoundError: no input file.
        FileExistsError: ``output_path`` is the input, or exists without a progress file (not written by
            ``predict_file``) and ``overwrite`` is false.
        ValueError: bad options, missing columns, non-UTF-8 input, a malformed row, or a progress file
            from another input/model/options.
        TypeError: a non-string text column.
    """
    t0 = time.perf_counter()
    input_path, output_path = user_path(input_path), user_path(output_path)
    _check_file_options(output, id_col, chunksize, bs)
    out_fmt = _check_files(model, input_path, output_path, overwrite=overwrite)
    read = ReadOptions(sep=sep, header=header, encoding=encoding, encoding_errors=encoding_errors)
    run = _resolve_run(model, input_path, output_path, out_fmt, read, text_col=text_col, device=device, int8=int8,
                       id_col=id_col, output=output, threshold=threshold, at_least_one=at_least_one, bs=bs)
    chunks = iter_table(input_path, chunksize=chunksize, **read.kwargs())
    return _predict_streamed(run, chunks, resume, t0) if out_fmt in _STREAMED else _predict_at_once(run, chunks, t0)


# ---------------------------------------------------------------------- unsafe opt-in
def load_fastai_learner(path: str | Path, *, i_trust_this_file: bool) -> Any:
    """Load a fastai ``Learner`` exported with ``learn.export()`` -- UNSAFE for untrusted files.

    Warning:
        A fastai export is a Python pickle. Loading it runs whatever code the file's author
        put in it (delete files, steal credentials, install malware). Only load files you
        created yourself or got from a source you trust. To share models use
        ``clf.save(dir)`` / :func:`~ulmfit_ml.load_classifier`, which never unpickle.

    Args:
        path: the ``.pkl`` file written by ``Learner.export``.
        i_trust_this_file: must be ``True``: the explicit opt-in to unpickling.

    Returns:
        The fastai ``Learner`` (on CPU).
    """
    if i_trust_this_file is not True:
        raise ValueError(
            f"Refusing to load {path}: fastai exports are pickles and loading one executes arbitrary code. "
            "If you made this file yourself or fully trust its source, call "
            "load_fastai_learner(path, i_trust_this_file=True); otherwise use a model saved with clf.save() "
            "and um.load_classifier(), which never unpickles.")
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"No fastai export at {path}.")
    from fastai.learner import load_learner

    patch_fastai()
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*insecure pickle.*")  # the caller opted in explicitly
        return load_learner(path, cpu=True)
