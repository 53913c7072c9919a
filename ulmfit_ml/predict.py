"""Streaming, resumable prediction over large CSV/TSV/parquet files, and the unsafe fastai opt-in.

:func:`predict_file` reads the input in chunks (pandas ``read_csv(chunksize=...)``, pyarrow
``ParquetFile.iter_batches``), predicts each chunk and appends it to an output CSV, so peak
memory depends on ``chunksize``, not on the file size.

Resuming: the sidecar ``<output>.progress.json`` is written (0 rows done) before the output
is created, and after each chunk's rows are written, flushed and fsynced it records the number
of input rows done and the output's byte length (written atomically: temp file + fsync +
rename). So an output with a sidecar is always ``predict_file``'s own, even when the run died
in its first chunk. A rerun with ``resume=True``
truncates the output to that byte length (dropping a half-written chunk) and skips that
many input rows, so an interrupted run, resumed, gives the same file as an uninterrupted one.
"""
from __future__ import annotations

import hashlib
import json
import os
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import pandas as pd

from .data import check_columns
from .io import check_bs, check_output_file

__all__ = ["predict_file", "PredictFileResult", "load_fastai_learner", "PROGRESS_SUFFIX"]

#: The sidecar next to the output: ``out.csv`` -> ``out.csv.progress.json``.
PROGRESS_SUFFIX = ".progress.json"
_PROGRESS_VERSION = 1
_COMPRESSION_SUFFIXES = (".gz", ".bz2", ".zip", ".xz", ".zst", ".tar")
_OUTPUTS = ("proba", "labels", "both")
_START_OVER = "pass resume=False (CLI: --no-resume) to start over"


@dataclass
class PredictFileResult:
    """What :func:`predict_file` did.

    Attributes:
        output_path: the CSV written.
        n_rows: input rows in the output (all of them once complete).
        n_new: rows predicted by this call (``n_rows - resumed_from``).
        resumed_from: input rows already done by an earlier, interrupted call (0 if none).
        n_empty: rows of this call whose text was NaN/empty (NaN probabilities, no labels).
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


# ---------------------------------------------------------------------- input
def _input_format(path: Path) -> str:
    name = path.name.lower()
    for suf in _COMPRESSION_SUFFIXES:
        if name.endswith(suf):
            name = name[: -len(suf)]
            break
    if name.endswith((".parquet", ".pq")):
        return "parquet"
    if name.endswith((".tsv", ".tab")):
        return "tsv"
    if name.endswith((".csv", ".txt")):
        return "csv"
    raise ValueError(f"Cannot tell the format of {path}: use a .csv, .tsv or .parquet file name "
                     "(optionally .gz/.bz2/.zip/.xz/.zst compressed for CSV/TSV).")


def _encoding_error(path: Path, e: UnicodeDecodeError, encoding: str) -> ValueError:
    return ValueError(f"{path} is not valid {encoding} ({e.reason} at byte {e.start} of a chunk). Pass the file's "
                      "real encoding (e.g. encoding='latin-1'), or encoding_errors='replace' to replace bad bytes.")


def _csv_columns(path: Path, sep: str, encoding: str, encoding_errors: str) -> list[str]:
    try:
        head = pd.read_csv(path, sep=sep, nrows=0, encoding=encoding, encoding_errors=encoding_errors)
    except UnicodeDecodeError as e:
        raise _encoding_error(path, e, encoding) from e
    except pd.errors.EmptyDataError as e:
        raise ValueError(f"{path} is empty: it needs at least a header row.") from e
    return [str(c) for c in head.columns]


def _iter_csv(path: Path, cols: list[str], sep: str, chunksize: int, encoding: str, encoding_errors: str
              ) -> Iterator[pd.DataFrame]:
    # keep_default_na=False: a text that reads "NA" or "null" stays a text; empty cells become "".
    reader = pd.read_csv(path, sep=sep, usecols=cols, dtype=str, keep_default_na=False, chunksize=chunksize,
                         encoding=encoding, encoding_errors=encoding_errors)
    try:
        with reader:
            for chunk in reader:
                yield chunk[cols]
    except UnicodeDecodeError as e:
        raise _encoding_error(path, e, encoding) from e


def _iter_parquet(path: Path, cols: list[str], chunksize: int) -> Iterator[pd.DataFrame]:
    import pyarrow.parquet as pq

    with pq.ParquetFile(path) as pf:
        for batch in pf.iter_batches(batch_size=chunksize, columns=cols):
            yield pd.DataFrame({c: batch.column(c).to_pylist() for c in cols}, columns=cols)


def _parquet_columns(path: Path) -> list[str]:
    import pyarrow.parquet as pq

    try:
        with pq.ParquetFile(path) as pf:
            return list(pf.schema_arrow.names)
    except Exception as e:  # noqa: BLE001 - pyarrow raises ArrowInvalid/OSError on non-parquet data
        raise ValueError(f"{path} is not a readable parquet file ({type(e).__name__}: {e}).") from e


# ---------------------------------------------------------------------- progress sidecar
def _progress_path(output_path: Path) -> Path:
    return output_path.with_name(output_path.name + PROGRESS_SUFFIX)


def _write_progress(p: Path, state: dict[str, Any]) -> None:
    """Write the sidecar atomically: a crash leaves the previous or the new one, never half of one."""
    tmp = p.with_name(p.name + ".tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(state, f)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, p)


def _read_progress(p: Path) -> dict[str, Any]:
    try:
        state = json.loads(p.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ValueError(f"The progress file {p} is corrupt ({e}); {_START_OVER}.") from e
    if not isinstance(state, dict) or state.get("version") != _PROGRESS_VERSION:
        raise ValueError(f"{p} is not a predict_file progress file; {_START_OVER}.")
    return state


def _model_fingerprint(clf: Any) -> str:
    """sha256 of the weights, labels and thresholds: resuming with another model must fail."""
    h = hashlib.sha256()
    for k, v in clf.model.state_dict().items():
        h.update(k.encode())
        h.update(v.detach().cpu().contiguous().numpy().tobytes())
    h.update(json.dumps([list(clf.labels), [float(t) for t in clf.thresholds]]).encode())
    return h.hexdigest()


# ---------------------------------------------------------------------- prediction
def _load_model(model: Any) -> Any:
    from .classifier import MultiLabelClassifier
    from .persist import load_classifier

    if isinstance(model, MultiLabelClassifier):
        return model
    if isinstance(model, (str, Path)):
        return load_classifier(model)
    raise TypeError(f"model must be a saved model directory or a MultiLabelClassifier, got {type(model).__name__}.")


def _predict_chunk(clf: Any, chunk: pd.DataFrame, *, start: int, text_col: str, id_col: str | None, output: str,
                   threshold: Any, at_least_one: bool, delim: str, bs: int) -> tuple[pd.DataFrame, int]:
    from .thresholds import apply_thresholds

    raw = chunk[text_col].tolist()
    bad = [i for i, t in enumerate(raw) if t is not None and not isinstance(t, str)
           and not (isinstance(t, float) and np.isnan(t))]
    if bad:
        ex = raw[bad[0]]
        raise TypeError(f"Column {text_col!r} has non-string value(s) (e.g. {ex!r} of type {type(ex).__name__} at row "
                        f"{start + bad[0]}): pass the column that holds the texts (text_col=...).")
    ok = np.array([isinstance(t, str) and bool(t.strip()) for t in raw], dtype=bool)
    probs = np.full((len(raw), len(clf.labels)), np.nan, dtype=np.float32)
    if ok.any():
        probs[ok] = clf.predict_proba([t for t, k in zip(raw, ok) if k], bs=bs)
    out = pd.DataFrame({"row": np.arange(start, start + len(raw), dtype=np.int64)})
    if id_col is not None:
        out[id_col] = chunk[id_col].to_numpy()
    if output in ("labels", "both"):
        pred = np.zeros(probs.shape, dtype=bool)
        if ok.any():
            pred[ok] = apply_thresholds(probs[ok], clf.thresholds if threshold is None else threshold,
                                        at_least_one=at_least_one)
        out["labels"] = [delim.join(clf.labels[j] for j in np.flatnonzero(r)) for r in pred]
    if output in ("proba", "both"):
        for j, lab in enumerate(clf.labels):
            out[f"proba_{lab}"] = probs[:, j]
    return out, int((~ok).sum())


def predict_file(model: Any, input_path: str | Path, output_path: str | Path, *, text_col: str | None = None,
                 chunksize: int = 10000, id_col: str | None = None, output: str = "proba", resume: bool = True,
                 threshold: float | list[float] | None = None, at_least_one: bool = False, sep: str | None = None,
                 encoding: str = "utf-8", encoding_errors: str = "strict", bs: int = 128,
                 overwrite: bool = False) -> PredictFileResult:
    """Predict every row of a CSV/TSV/parquet file in chunks and append the results to a CSV.

    The output has one row per input row, in input order: ``row`` (0-based input row
    number), then ``id_col`` if given, then ``labels`` (names joined by the model's label
    delimiter, ``output="labels"``/``"both"``) and/or one ``proba_<label>`` column per label
    (``output="proba"``/``"both"``, 6 significant digits). Rows whose text is empty or
    missing get empty probabilities and no labels, with a warning giving their count.

    Args:
        model: a saved model directory or a :class:`~ulmfit_ml.classifier.MultiLabelClassifier`.
        input_path: ``.csv``/``.tsv`` (optionally compressed) or ``.parquet``.
        output_path: the CSV to write (its sidecar is ``output_path + ".progress.json"``).
        text_col: the text column; default the model's training text column.
        chunksize: rows per chunk; peak memory grows with it, not with the file size.
        id_col: a column copied to the output as is (read as strings from CSV).
        output: ``"proba"``, ``"labels"`` or ``"both"``.
        resume: continue an interrupted run of the same input, model and options (a
            finished one is left as it is); ``False`` (CLI ``--no-resume``) starts over,
            replacing an output that ``predict_file`` wrote (it has a progress file).
        threshold: overrides the model's per-label thresholds for ``labels``.
        at_least_one: give each non-empty text its most probable label when none passes.
        sep: CSV separator; default ``","`` (``"\\t"`` for ``.tsv``).
        encoding, encoding_errors: how CSV bytes are decoded (``encoding_errors="replace"``
            for files with a few bad bytes).
        bs: prediction batch size (a positive int).
        overwrite: replace an existing ``output_path`` that ``predict_file`` did not write
            (CLI ``--overwrite``). The input file is never replaced (see
            :func:`~ulmfit_ml.io.check_output_file`).

    Returns:
        :class:`PredictFileResult` (rows, rows done by this call, timing).

    Raises:
        FileNotFoundError: no input file.
        FileExistsError: ``output_path`` is the input, or exists without a progress file
            (not written by ``predict_file``) and ``overwrite`` is false.
        ValueError: bad options, missing columns, non-UTF-8 input, or a progress file from
            another input/model/options.
        TypeError: a non-string text column.
    """
    t0 = time.perf_counter()
    input_path, output_path = Path(input_path), Path(output_path)
    if output not in _OUTPUTS:
        raise ValueError(f"output must be one of {list(_OUTPUTS)}, got {output!r}.")
    if isinstance(chunksize, bool) or not isinstance(chunksize, int) or chunksize < 1:
        raise ValueError(f"chunksize must be a positive int, got {chunksize!r}.")
    check_bs(bs)
    if not input_path.is_file():
        raise FileNotFoundError(f"No input file at {input_path}.")
    prog_path = _progress_path(output_path)
    # the one output policy: never the input (or a file of the model directory); an existing
    # output only if predict_file wrote it (it has a progress file) or overwrite=True
    check_output_file(output_path, overwrite=overwrite or prog_path.is_file(),
                      inputs=[input_path] + ([model] if isinstance(model, (str, Path)) else []))
    fmt = _input_format(input_path)
    clf = _load_model(model)
    text_col = clf.meta.get("text_col", "text") if text_col is None else text_col
    if id_col is not None and id_col == text_col:
        raise ValueError(f"id_col and text_col are both {text_col!r}: name the id column, or leave id_col=None.")
    if sep is None:
        sep = "\t" if fmt == "tsv" else ","
    cols = [text_col] + ([id_col] if id_col is not None else [])
    found = _parquet_columns(input_path) if fmt == "parquet" else _csv_columns(input_path, sep, encoding, encoding_errors)
    check_columns(pd.DataFrame(columns=found), cols)
    delim = (clf.meta.get("label_spec") or {}).get("label_delim") or ";"

    stat = input_path.stat()
    ident = {"version": _PROGRESS_VERSION, "input": str(input_path.resolve()), "input_size": stat.st_size,
             "input_mtime_ns": stat.st_mtime_ns, "model": _model_fingerprint(clf), "text_col": text_col,
             "id_col": id_col, "output": output,
             "threshold": None if threshold is None else np.asarray(threshold, dtype=float).tolist(), "at_least_one": at_least_one,
             "sep": sep, "encoding": encoding, "encoding_errors": encoding_errors}
    done, offset = 0, 0
    if resume and prog_path.exists():
        state = _read_progress(prog_path)
        diff = [k for k in ident if state.get(k) != ident[k]]
        if diff:
            raise ValueError(f"{prog_path} belongs to a run with other {diff} (input changed, another model or "
                             f"options); {_START_OVER}.")
        done, offset = int(state["rows"]), int(state["bytes"])
        if offset and (not output_path.exists() or output_path.stat().st_size < offset):
            raise ValueError(f"{output_path} is shorter than its progress file says ({offset} bytes): it was "
                             f"changed after the run; {_START_OVER}.")
        if state.get("complete"):
            return PredictFileResult(output_path, done, 0, done, 0, time.perf_counter() - t0)

    output_path.parent.mkdir(parents=True, exist_ok=True)
    if offset == 0:  # the sidecar first: a run killed before its first commit stays resumable
        _write_progress(prog_path, {**ident, "rows": 0, "bytes": 0, "complete": False})
        done = 0
    chunks = (_iter_parquet(input_path, cols, chunksize) if fmt == "parquet"
              else _iter_csv(input_path, cols, sep, chunksize, encoding, encoding_errors))
    n_empty, pos = 0, 0
    with open(output_path, "r+b" if offset else "wb") as f:
        f.truncate(offset)  # drop rows written after the last commit (a half-written chunk)
        f.seek(offset)

        def commit(rows: int, complete: bool = False) -> None:
            f.flush()
            os.fsync(f.fileno())  # rows are on disk before the progress file says so
            _write_progress(prog_path, {**ident, "rows": rows, "bytes": f.tell(), "complete": complete})

        header_needed = offset == 0
        for chunk in chunks:
            start, pos = pos, pos + len(chunk)
            if pos <= done:  # committed by an earlier run: parsed again, not predicted again
                continue
            if start < done:  # resumed with another chunksize: finish the partly done chunk
                chunk, start = chunk.iloc[done - start:], done
            res, n_e = _predict_chunk(clf, chunk, start=start, text_col=text_col, id_col=id_col, output=output,
                                      threshold=threshold, at_least_one=at_least_one, delim=delim, bs=bs)
            n_empty += n_e
            f.write(res.to_csv(index=False, header=header_needed, lineterminator="\n",
                               float_format="%.6g").encode("utf-8"))
            header_needed = False
            commit(pos)
        if pos < done:
            raise ValueError(f"{input_path} has {pos} rows but {prog_path.name} says {done} were done: the input "
                             f"changed; {_START_OVER}.")
        if header_needed:  # empty input: header only
            f.write(",".join(_header(clf, id_col, output)).encode("utf-8") + b"\n")
        commit(max(pos, done), complete=True)
    if n_empty:
        warnings.warn(f"{n_empty} row(s) of {input_path.name} have an empty or missing text in {text_col!r}: "
                      "their probabilities are left empty and they get no labels.", UserWarning, stacklevel=2)
    n_rows = max(pos, done)
    return PredictFileResult(output_path, n_rows, n_rows - done, done, n_empty, time.perf_counter() - t0)


def _header(clf: Any, id_col: str | None, output: str) -> list[str]:
    cols = ["row"] + ([id_col] if id_col is not None else [])
    if output in ("labels", "both"):
        cols.append("labels")
    if output in ("proba", "both"):
        cols += [f"proba_{lab}" for lab in clf.labels]
    return cols


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

    from ._train import patch_fastai

    patch_fastai()
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*insecure pickle.*")  # the caller opted in explicitly
        return load_learner(path, cpu=True)
