"""Input checks shared by every path: columns, ONE text policy, label parsing, batch sizes.

The text policy (:func:`text_cells`) is the only place that decides what a text is:

* a string is a text; a missing cell (``None``, ``NaN``, ``pd.NA``) counts as an empty text;
* any other value (numbers, bytes, lists) raises ``TypeError``: the wrong column was named;
* a text with undecodable bytes (lone surrogates) raises ``ValueError``.

Training (:func:`validate_texts`) drops empty texts with a warning (or raises); prediction
(:func:`check_texts`, used by ``predict_proba``, ``predict_file`` and the CLI whatever the output
format) predicts them from an empty input with a warning giving the count, so every input row
gets an output row.
"""
from __future__ import annotations

import contextlib
import difflib
import numbers
import re
import warnings
from collections.abc import Iterable, Sequence
from typing import Any, Iterator

import numpy as np
import pandas as pd

__all__ = [
    "as_frame",
    "labelled_rows",
    "check_columns",
    "column_keys",
    "text_cells",
    "validate_texts",
    "check_texts",
    "warn_empty_texts",
    "suppress_empty_text_warning",
    "check_utf8",
    "check_bs",
    "LabelSpec",
    "parse_label_matrix",
    "extra_text_list",
    "label_delim_of",
]

_SURROGATES = re.compile("[\ud800-\udfff]")


def _is_missing(v: Any) -> bool:
    """``None``, ``NaN`` or ``pd.NA`` / ``NaT`` (a scalar; arrays are not missing)."""
    if v is None:
        return True
    try:
        return bool(pd.isna(v)) if np.ndim(v) == 0 else False
    except (TypeError, ValueError):
        return False


def text_cells(values: Iterable[Any], *, col: str = "text") -> tuple[list[str], np.ndarray]:
    """The text policy: ``(texts, empty)``, missing cells as ``""`` and ``empty`` marking
    missing, empty or whitespace-only texts.

    Raises:
        TypeError: a value that is neither a string nor missing (the message names the column,
            the first position and the fix).
        ValueError: undecodable (non-UTF-8) bytes in a text.
    """
    vals = values.tolist() if isinstance(values, (pd.Series, pd.Index, np.ndarray)) else list(values)
    texts: list[str] = []
    bad: list[int] = []
    for i, v in enumerate(vals):
        if isinstance(v, str):
            texts.append(v)
        elif _is_missing(v):
            texts.append("")
        else:
            bad.append(i)
            texts.append("")
    if bad:
        ex = vals[bad[0]]
        raise TypeError(
            f"Text column {col!r} has {len(bad)} non-string value(s) (e.g. {ex!r} of type {type(ex).__name__} at "
            f"position {bad[0]}). Pass the column that holds the texts, or convert it first with "
            f"df[{col!r}].astype(str) if numbers are really texts.")
    check_utf8(texts, col=col)
    empty = np.fromiter((not t.strip() for t in texts), dtype=bool, count=len(texts))
    return texts, empty


def validate_texts(texts: pd.Series, *, empty_text: str = "drop", col: str = "text") -> np.ndarray:
    """Training/evaluation side of the text policy: a boolean mask of the rows to keep.

    Missing, empty or whitespace-only texts are dropped with a warning that gives the count
    (``empty_text="drop"``) or raise (``"raise"``); see :func:`text_cells` for what raises.
    """
    _, empty = text_cells(texts, col=col)
    if len(empty) and empty.all():
        raise ValueError(f"Text column {col!r} has no non-empty text ({len(empty)} rows are all NaN or blank).")
    if empty.any():
        n = int(empty.sum())
        if empty_text == "raise":
            raise ValueError(
                f"Text column {col!r} has {n} NaN or empty text(s) (first at position "
                f"{int(np.flatnonzero(empty)[0])}). Drop them, or use empty_text='drop'.")
        warnings.warn(f"Dropping {n} row(s) with NaN or empty text in column {col!r}.", UserWarning, stacklevel=3)
    return ~empty


def extra_text_list(texts: Any, *, empty_text: str = "drop", col: str = "extra_texts") -> list[str]:
    """Unlabelled language-model texts (``extra_texts=``) under the text policy of the text column:
    a list (or Series) of strings; missing, empty or whitespace-only ones are dropped with a warning
    giving the count (``empty_text="raise"``: refused).

    Raises:
        TypeError: a single string (it would become one-character texts) or a DataFrame; a
            non-string value (:func:`text_cells`).
    """
    if texts is None:
        return []
    if isinstance(texts, (str, bytes)):
        raise TypeError(f"{col} must be a list of texts, not a single {type(texts).__name__} (it would be read as "
                        f"{len(texts)} one-character texts): pass {col}=[text].")
    if isinstance(texts, pd.DataFrame):
        raise TypeError(f"{col} must be a list or Series of texts, not a DataFrame: pass df['text'].")
    if not isinstance(texts, Iterable):
        raise TypeError(f"{col} must be a list of texts, got {type(texts).__name__}.")
    out, empty = text_cells(texts, col=col)
    if empty.any():
        n = int(empty.sum())
        if empty_text == "raise":
            raise ValueError(f"Text column {col!r} has {n} NaN or empty text(s) (first at position "
                             f"{int(np.flatnonzero(empty)[0])}). Drop them, or use empty_text='drop'.")
        warnings.warn(f"Dropping {n} row(s) with NaN or empty text in column {col!r}.", UserWarning, stacklevel=3)
    return [t for t, e in zip(out, empty) if not e]


def warn_empty_texts(n_empty: int, *, where: str = "the input", col: str | None = None, stacklevel: int = 3) -> None:
    """The one warning of the prediction side of the text policy (``stacklevel``: the user's call, from here)."""
    if n_empty:
        in_col = f" in {col!r}" if col is not None else ""
        warnings.warn(f"{n_empty} row(s) of {where} have an empty or missing text{in_col}: they are predicted from "
                      "an empty input (the model's answer without evidence).", UserWarning, stacklevel=stacklevel)


@contextlib.contextmanager
def suppress_empty_text_warning() -> Iterator[None]:
    """Silence :func:`warn_empty_texts` inside, for a caller that counts the empty texts itself
    and warns once (an ensemble over its members, ``predict_file`` over its chunks)."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r".* have an empty or missing text", category=UserWarning)
        yield


def check_texts(texts: Any, *, col: str = "texts", where: str = "the input") -> list[str]:
    """Prediction side of the text policy: a list of strings, one per input row.

    A lone string or a DataFrame raises ``TypeError``; missing texts become ``""`` and empty
    ones are predicted as such, with one warning giving their count (:func:`warn_empty_texts`).
    """
    if isinstance(texts, str):
        raise TypeError("Pass a list of texts, not a single string: clf.predict([text]).")
    if isinstance(texts, pd.DataFrame) or (hasattr(texts, "to_pandas") and hasattr(texts, "columns")):
        raise TypeError("Pass a list or Series of texts, e.g. clf.predict_proba(df['text']), not a DataFrame.")
    out, empty = text_cells(texts, col=col)
    warn_empty_texts(int(empty.sum()), where=where)
    return out


def check_utf8(texts: Iterable[Any], *, col: str = "text") -> None:
    """Raise a ValueError if a text holds lone surrogates (undecodable bytes).

    They appear when a non-UTF-8 file is read with ``errors="surrogateescape"``; the
    tokenizer and every UTF-8 writer would fail on them later with a deep traceback.
    """
    bad = [i for i, t in enumerate(texts) if isinstance(t, str) and _SURROGATES.search(t)]
    if bad:
        raise ValueError(
            f"Text column {col!r} has {len(bad)} text(s) with undecodable (non-UTF-8) bytes, first at position "
            f"{bad[0]}. Re-read the file with its real encoding (e.g. pd.read_csv(path, encoding='latin-1')) "
            "or with encoding_errors='replace'.")


def check_bs(bs: Any, name: str = "bs") -> int:
    """A batch size: a positive int (``bs=0`` or ``-1`` would predict nothing, or 0.5 everywhere)."""
    if isinstance(bs, bool) or not isinstance(bs, numbers.Integral):
        raise TypeError(f"{name} must be a positive int (texts per batch), got {bs!r} of type {type(bs).__name__}.")
    if bs < 1:
        raise ValueError(f"{name} must be >= 1 (texts per batch), got {bs}: use e.g. {name}=128.")
    return int(bs)


def label_delim_of(meta: dict[str, Any]) -> str:
    """The label delimiter a model writes label lists with (its training ``label_delim``, default ``;``)."""
    return (meta.get("label_spec") or {}).get("label_delim") or ";"


def _fmt_cols(cols: Iterable[Any]) -> str:
    return "[" + ", ".join(repr(c) for c in cols) + "]"


def _column_key(df: pd.DataFrame, name: Any) -> Any:
    """The key of column ``name`` in ``df``: itself, or the one column whose name reads the same
    (``0`` and ``"0"``: label names are strings, and a file read back has string column names)."""
    if name in df.columns:
        return name
    same = [c for c in df.columns if str(c) == str(name)]
    return same[0] if len(same) == 1 else None


def column_keys(df: pd.DataFrame, names: Sequence[Any]) -> list[Any]:
    """:func:`_column_key` of each name (checked first by :func:`check_columns`)."""
    return [_column_key(df, n) for n in names]


def as_frame(df: Any, *, who: str = "This function") -> pd.DataFrame:
    """``df`` as a pandas DataFrame: itself, or the conversion of a frame that has ``.to_pandas()``
    (polars, pyarrow tables, cuDF, Dask's computed frames ...), so that no other frame library is a
    dependency. Anything else raises ``TypeError`` naming what was given."""
    if isinstance(df, pd.DataFrame):
        return df
    mod = type(df).__module__.split(".")[0]
    kind = type(df).__name__ if mod == "builtins" else f"{type(df).__name__} (from {mod})"
    to_pandas = getattr(df, "to_pandas", None)
    if callable(to_pandas):
        try:
            out = to_pandas()
        except Exception as e:  # noqa: BLE001 - e.g. polars needs pyarrow for it
            raise TypeError(f"{who} expects a pandas DataFrame, got {kind} and its .to_pandas() failed "
                            f"({type(e).__name__}: {e}): convert it yourself, e.g. df.to_pandas().") from e
        if isinstance(out, pd.DataFrame):
            return out
    raise TypeError(f"{who} expects a pandas DataFrame, got {kind}"
                    + (": convert it with .to_pandas()." if callable(to_pandas) else "."))


def _layout_hint(found: list[str]) -> str:
    """Why the expected columns may be missing from a file's frame: a header that is one column
    holding another separator, numbered columns (read without a header), or a first row of data
    read as the header. The fix names the reader options (sep=, header=) and the CLI flags."""
    if len(found) == 1:
        for d, flag in ((";", "--sep ';'"), ("\t", "--sep $'\\t' (or name the file .tsv)"), ("|", "--sep '|'"),
                        (",", "--sep ','")):
            if d in found[0]:
                return (f" The file was read as one column {found[0]!r}: its separator looks like {d!r}. Read it with "
                        f"sep={d!r} (read_table(path, sep={d!r}); CLI {flag}).")
    if found and all(c.isdigit() for c in found):
        return (" The columns are numbered: the file was read without a header row (header=False, CLI --no-header). "
                "Name the columns by position, e.g. text_col='0' (CLI --text-col 0), or read it with its header.")
    wordy = [c for c in found if len(c.split()) >= 4 or len(c) > 60]
    if wordy and len(wordy) * 2 >= len(found):
        return (f" The header {found[:3]} looks like a row of data: if the file has no header row, read it with "
                "header=False (CLI --no-header) and name the columns by position (text_col='0', CLI --text-col 0).")
    return ""


def check_columns(df: pd.DataFrame, expected: Sequence[str], *, what: str = "column") -> None:
    """Raise a ValueError naming expected vs found columns (with spelling hints, and when the
    frame looks misread: the separator / header option that fixes it)."""
    if not isinstance(df, pd.DataFrame):
        raise TypeError(f"Expected a pandas DataFrame, got {type(df).__name__}.")
    dup = df.columns[df.columns.duplicated()].unique().tolist()
    if dup:
        raise ValueError(
            f"The DataFrame has duplicate column names {_fmt_cols(dup)}: rename them so each "
            "column is unique (e.g. df.columns = [...])."
        )
    found = [str(c) for c in df.columns]
    missing = [c for c in expected if _column_key(df, c) is None]
    if missing:
        hints = []
        for m in missing:
            close = difflib.get_close_matches(str(m), found, n=1)
            if close:
                hints.append(f"{m!r} -> did you mean {close[0]!r}?")
        hint = (" " + "; ".join(hints)) if hints else ""
        raise ValueError(
            f"Missing {what}(s) {_fmt_cols(missing)}. Expected {_fmt_cols(expected)}, "
            f"found {_fmt_cols(found)}.{hint}{_layout_hint(found)}"
        )


def labelled_rows(df: pd.DataFrame, text_col: str, target_cols: Sequence[str]) -> tuple[pd.DataFrame, list[str]]:
    """The rows of a labelled frame a model is scored on (``report``/``evaluate`` of every kind):
    the text and target columns checked, an empty frame refused, rows with an empty text dropped
    with a warning. Returns the kept rows and their texts."""
    df = as_frame(df, who="evaluate/report")
    check_columns(df, [text_col] + list(target_cols))
    if len(df) == 0:
        raise ValueError("The DataFrame is empty: nothing to evaluate.")
    col = column_keys(df, [text_col])[0]
    df = df.loc[validate_texts(df[col], col=text_col)]
    return df, df[col].tolist()


class LabelSpec:
    """Where the labels of a frame live: 0/1 columns or one delimited column."""

    def __init__(self, *, label_cols: Sequence[str] | None = None, label_col: str | None = None,
                 label_delim: str = ";") -> None:
        if (label_cols is None) == (label_col is None):
            raise ValueError(
                "Give exactly one of label_cols=[...] (one 0/1 column per label) or "
                "label_col='tags' (one delimited column)."
            )
        if label_cols is not None:
            if isinstance(label_cols, str):
                raise TypeError(f"label_cols must be a list of column names, got the string {label_cols!r}; "
                                f"use label_cols=[{label_cols!r}] or label_col={label_cols!r} for a delimited column.")
            label_cols = list(label_cols)
            if not label_cols:
                raise ValueError("label_cols is empty: name at least one 0/1 label column.")
            if len(set(label_cols)) != len(label_cols):
                raise ValueError(f"label_cols has repeated names: {label_cols}.")
        if not isinstance(label_delim, str) or not label_delim:
            raise ValueError(f"label_delim must be a non-empty string, got {label_delim!r}.")
        self.label_cols = label_cols
        self.label_col = label_col
        self.label_delim = label_delim

    @property
    def columns(self) -> list[str]:
        return list(self.label_cols) if self.label_cols is not None else [self.label_col]

    def to_dict(self) -> dict[str, Any]:
        return {"label_cols": self.label_cols, "label_col": self.label_col, "label_delim": self.label_delim}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "LabelSpec":
        return cls(label_cols=d.get("label_cols"), label_col=d.get("label_col"), label_delim=d.get("label_delim", ";"))


def _parse_binary_columns(df: pd.DataFrame, cols: list[str]) -> np.ndarray:
    out = np.zeros((len(df), len(cols)), dtype=np.float32)
    for j, c in enumerate(cols):
        s = df[c]
        if s.isna().any():
            raise ValueError(
                f"Label column {c!r} has {int(s.isna().sum())} missing value(s): label columns must be 0/1 "
                f"in every row (fill with df[{c!r}].fillna(0) if missing means 'no')."
            )
        if s.dtype == bool:
            out[:, j] = s.to_numpy(dtype=np.float32)
            continue
        vals = pd.to_numeric(s, errors="coerce")
        bad = vals.isna() | ~vals.isin([0, 1])
        if bad.any():
            ex = s[bad].unique()[:5].tolist()
            raise ValueError(
                f"Label column {c!r} has {int(bad.sum())} value(s) that are not 0/1 (e.g. {ex}). "
                "Each label column must hold 0/1 or True/False; for one column of label names "
                "use label_col= with label_delim= instead."
            )
        out[:, j] = vals.to_numpy(dtype=np.float32)
    return out


def _split_delimited(cell: Any, delim: str) -> list[str]:
    if isinstance(cell, (list, tuple, set, np.ndarray, pd.Series)):  # a list cell (parquet list columns)
        parts = [str(p) for p in cell if not _is_missing(p)]
    elif _is_missing(cell):  # None, NaN, pd.NA: no label
        return []
    else:
        parts = str(cell).split(delim)
    return [p.strip() for p in parts if p.strip()]


_OTHER_DELIMS = (",", ";", "|", "/")
_FLOAT_ID = re.compile(r"^-?\d+\.0+$")


def _warn_odd_vocabulary(labels: list[str], parsed: list[list[str]], spec: LabelSpec) -> None:
    """Warn when a label vocabulary found in the data looks like a parsing mistake: labels that
    contain another delimiter (wrong ``label_delim``), ids turned into floats (``'27.0'``), or
    (nearly) one label per row (a free-text column named as the label column)."""
    col, delim = spec.label_col, spec.label_delim
    for d in _OTHER_DELIMS:
        if d == delim:
            continue
        with_d = [lab for lab in labels if d in lab]
        if len(with_d) >= max(2, len(labels) // 5):
            warnings.warn(f"{len(with_d)} of the {len(labels)} labels found in {col!r} contain {d!r} (e.g. "
                          f"{with_d[0]!r}): the labels look {d!r}-separated, but label_delim is {delim!r}. Pass "
                          f"label_delim={d!r} if so.", UserWarning, stacklevel=4)
            return
    floats = [lab for lab in labels if _FLOAT_ID.match(lab)]
    if floats:
        warnings.warn(f"{len(floats)} label(s) in {col!r} look like integers read as floats (e.g. {floats[0]!r}): "
                      f"a column with missing values was probably read as float. Read it as text (dtype=str) or "
                      f"convert it with df[{col!r}].astype('Int64').astype(str) first.", UserWarning, stacklevel=4)
    n_rows = sum(1 for ps in parsed if ps)
    if len(labels) > 50 and n_rows and len(labels) >= 0.5 * n_rows:
        warnings.warn(f"Column {col!r} gives {len(labels)} distinct labels for {n_rows} labelled rows: nearly one "
                      "label per row. Is it really the label column (not a text or id column)?", UserWarning,
                      stacklevel=4)


def parse_label_matrix(df: pd.DataFrame, spec: LabelSpec, labels: Sequence[str] | None = None,
                       ) -> tuple[np.ndarray, list[str]]:
    """Parse the labels of ``df`` into a float32 multi-hot matrix.

    Args:
        df: the frame (columns already checked).
        spec: where the labels are.
        labels: the label vocabulary to use (column order of the matrix). ``None`` uses the
            label columns' order, or the sorted set of labels found in the delimited column.

    Returns:
        ``(y, labels)`` with ``y`` of shape ``(len(df), len(labels))``.

    Raises:
        ValueError: non-0/1 values, or labels not in ``labels``.
    """
    if spec.label_cols is not None:
        cols = list(spec.label_cols)
        if labels is not None and [str(x) for x in labels] != [str(c) for c in cols]:
            by_name = {str(c): c for c in cols}  # labels are strings; columns may be named 0, 1, ...
            missing = [x for x in labels if str(x) not in by_name]
            if missing:
                raise ValueError(f"Label column(s) {missing} expected by the model are not in label_cols {spec.label_cols}.")
            cols = [by_name[str(x)] for x in labels]
        keys = column_keys(df, cols)
        return _parse_binary_columns(df[keys].set_axis(cols, axis=1), cols), [str(c) for c in cols]
    labels_given = labels
    parsed = [_split_delimited(c, spec.label_delim) for c in df[column_keys(df, [spec.label_col])[0]]]
    found = sorted({p for ps in parsed for p in ps})
    if labels is None:
        labels = found
        if not labels:
            raise ValueError(f"Label column {spec.label_col!r} has no labels at all (every cell is empty or NaN).")
    labels = [str(lab) for lab in labels]
    index = {lab: j for j, lab in enumerate(labels)}
    unknown = [p for p in found if p not in index]
    if unknown:
        raise ValueError(
            f"Unknown label(s) {unknown[:10]}{' ...' if len(unknown) > 10 else ''} in column "
            f"{spec.label_col!r}: the label vocabulary is {labels[:30]}. Check label_delim "
            f"(now {spec.label_delim!r}) or pass labels=[...] listing every label."
        )
    if labels_given is None:
        _warn_odd_vocabulary(labels, parsed, spec)
    y = np.zeros((len(df), len(labels)), dtype=np.float32)
    for i, ps in enumerate(parsed):
        for p in ps:
            y[i, index[p]] = 1.0
    return y, labels
