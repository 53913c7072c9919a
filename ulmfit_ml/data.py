"""Stage 1: a labelled DataFrame -> validated texts, label matrix, split, fastai DataLoaders.

Both label formats are supported and give the same float multi-hot matrix:

* one 0/1 column per label: ``label_cols=["toxic", "insult"]``;
* one delimited column: ``label_col="tags", label_delim=";"`` (``"joy;anger"``; an empty
  or missing cell means "no label").

fastai's ``TextDataLoaders.from_df`` gets both wrong (0/1 columns are read as label names,
and ``label_delim`` raises a TypeError, fastai issue #3685), so the DataBlocks are built here.
"""
from __future__ import annotations

import difflib
import functools
import hashlib
import re
import warnings
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np
import pandas as pd

from .config import DataConfig

__all__ = [
    "MultiLabelData",
    "LabelSpec",
    "validate_texts",
    "parse_label_matrix",
    "check_columns",
    "check_utf8",
    "tokenize_texts",
    "lm_dataloaders_from_tokens",
]

# Below this many texts, tokenising in worker processes costs more than it saves.
_PARALLEL_TOKENIZE_MIN = 2000
# Longest text the tokenizer accepts (characters); spaCy's own default is 1,000,000.
_MAX_TEXT_CHARS = 100_000_000


def _fmt_cols(cols: Iterable[Any]) -> str:
    return "[" + ", ".join(repr(c) for c in cols) + "]"


def check_columns(df: pd.DataFrame, expected: Sequence[str], *, what: str = "column") -> None:
    """Raise a ValueError naming expected vs found columns (with spelling hints)."""
    if not isinstance(df, pd.DataFrame):
        raise TypeError(f"Expected a pandas DataFrame, got {type(df).__name__}.")
    dup = df.columns[df.columns.duplicated()].unique().tolist()
    if dup:
        raise ValueError(
            f"The DataFrame has duplicate column names {_fmt_cols(dup)}: rename them so each "
            "column is unique (e.g. df.columns = [...])."
        )
    found = [str(c) for c in df.columns]
    missing = [c for c in expected if c not in df.columns]
    if missing:
        hints = []
        for m in missing:
            close = difflib.get_close_matches(str(m), found, n=1)
            if close:
                hints.append(f"{m!r} -> did you mean {close[0]!r}?")
        hint = (" " + "; ".join(hints)) if hints else ""
        raise ValueError(
            f"Missing {what}(s) {_fmt_cols(missing)}. Expected {_fmt_cols(expected)}, "
            f"found {_fmt_cols(found)}.{hint}"
        )


def validate_texts(texts: pd.Series, *, empty_text: str = "drop", col: str = "text") -> np.ndarray:
    """Check a text column and return a boolean mask of rows to keep.

    NaN/None and empty or whitespace-only texts are dropped with a warning that gives the
    count (``empty_text="drop"``) or raise (``"raise"``). Non-string values (numbers,
    bytes) raise a TypeError: they usually mean the wrong column was named.
    """
    isna = texts.isna().to_numpy()
    non_str = np.array([not isinstance(t, str) for t in texts]) & ~isna
    if non_str.any():
        idx = np.flatnonzero(non_str)
        ex = texts.iloc[idx[0]]
        raise TypeError(
            f"Text column {col!r} has {len(idx)} non-string value(s) (e.g. {ex!r} of type "
            f"{type(ex).__name__} at position {idx[0]}). Pass the column that holds the texts, "
            f"or convert it first with df[{col!r}].astype(str) if numbers are really texts."
        )
    check_utf8(texts, col=col)
    empty = isna | np.array([isinstance(t, str) and not t.strip() for t in texts])
    if empty.all():
        raise ValueError(f"Text column {col!r} has no non-empty text ({len(texts)} rows are all NaN or blank).")
    if empty.any():
        n = int(empty.sum())
        if empty_text == "raise":
            raise ValueError(
                f"Text column {col!r} has {n} NaN or empty text(s) (first at position "
                f"{int(np.flatnonzero(empty)[0])}). Drop them, or use empty_text='drop'."
            )
        warnings.warn(f"Dropping {n} row(s) with NaN or empty text in column {col!r}.", UserWarning, stacklevel=3)
    return ~empty


_SURROGATES = re.compile("[\ud800-\udfff]")


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
            "or with encoding_errors='replace'."
        )


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
    if cell is None or (isinstance(cell, float) and np.isnan(cell)):
        return []
    if isinstance(cell, (list, tuple, set)):
        parts = [str(p) for p in cell]
    else:
        parts = str(cell).split(delim)
    return [p.strip() for p in parts if p.strip()]


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
        if labels is not None and list(labels) != list(spec.label_cols):
            missing = [c for c in labels if c not in spec.label_cols]
            if missing:
                raise ValueError(f"Label column(s) {missing} expected by the model are not in label_cols {spec.label_cols}.")
            cols = list(labels)
        else:
            cols = list(spec.label_cols)
        return _parse_binary_columns(df, cols), [str(c) for c in cols]
    parsed = [_split_delimited(c, spec.label_delim) for c in df[spec.label_col]]
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
    y = np.zeros((len(df), len(labels)), dtype=np.float32)
    for i, ps in enumerate(parsed):
        for p in ps:
            y[i, index[p]] = 1.0
    return y, labels


@functools.lru_cache(maxsize=1)  # spacy.blank takes ~0.3 s: build it once per process, not per predict call
def _tokenizer():
    """fastai's default word tokenizer (spaCy, blank English) with its default rules."""
    from fastai.text.core import WordTokenizer
    tok = WordTokenizer()
    # spaCy refuses texts over 1,000,000 characters (E088) to protect its parser/NER memory;
    # fastai uses only the blank tokenizer, which is linear in length, so 1 MB+ texts are safe.
    tok.pipe.__self__.max_length = _MAX_TEXT_CHARS
    return tok


def tokenize_texts(texts: Sequence[str], *, n_workers: int | None = None) -> list[list[str]]:
    """Tokenise with fastai's default pipeline (spaCy + ``defaults.text_proc_rules``).

    Same tokens as fastai's ``Tokenizer``; runs in worker processes for large inputs.
    """
    from fastai.text.core import defaults, parallel_tokenize

    texts = list(texts)
    if n_workers is None:
        n_workers = defaults.cpus if len(texts) >= _PARALLEL_TOKENIZE_MIN else 0
    rules = list(defaults.text_proc_rules)
    out = parallel_tokenize(texts, _tokenizer(), rules, n_workers=n_workers)
    res: list[list[str] | None] = [None] * len(texts)
    for i, toks in out:
        res[int(i)] = list(toks)
    return res  # type: ignore[return-value]


def _pretokenized_tfm():
    """A fastai ``Tokenizer`` transform for texts that are already token lists.

    fastai's ``Tokenizer.from_df`` tokenises the whole frame again in every DataBlock; we
    tokenise once (shared by the LM and the classifier) and keep the same transform so raw
    strings given later (``test_dl``) are tokenised the same way.
    """
    from fastai.text.core import Tokenizer

    class _Pretokenized(Tokenizer):
        def setups(self, dsets):  # tokens already there: nothing to do
            return None

    tok = _Pretokenized(_tokenizer(), mode="df", lengths=True)
    tok.tok_text_col = "text"
    return tok


class MultiLabelData:
    """Validated multi-label texts with a train/validation split.

    Build it with :meth:`from_df`. Attributes:

    * ``texts``: list of the kept texts (rows with NaN/empty texts removed);
    * ``y``: float32 array ``(n_texts, n_labels)``, multi-hot targets;
    * ``labels``: label vocabulary = column order of ``y`` and of predicted probabilities;
    * ``is_valid``: bool array, the validation rows;
    * ``extra_texts``: unlabelled texts used only by the language model.
    """

    def __init__(self, texts: list[str], y: np.ndarray, labels: list[str], is_valid: np.ndarray, *,
                 text_col: str, spec: LabelSpec, config: DataConfig, extra_texts: list[str] | None = None,
                 index: pd.Index | None = None) -> None:
        self.texts = texts
        self.y = y
        self.labels = labels
        self.is_valid = is_valid
        self.text_col = text_col
        self.spec = spec
        self.config = config
        self.extra_texts = list(extra_texts or [])
        self.index = index if index is not None else pd.RangeIndex(len(texts))
        self._tokens: list[list[str]] | None = None
        self._extra_tokens: list[list[str]] | None = None

    # ------------------------------------------------------------------ construction
    @classmethod
    def from_df(cls, df: pd.DataFrame, *, text_col: str = "text", label_cols: Sequence[str] | None = None,
                label_col: str | None = None, label_delim: str = ";", labels: Sequence[str] | None = None,
                split: str | None = None, valid_pct: float = 0.2, valid_col: str | None = None,
                seed: int = 42, empty_text: str = "drop", unlabelled: str = "keep",
                extra_texts: Iterable[str] | None = None, config: DataConfig | None = None,
                ) -> "MultiLabelData":
        """Validate ``df`` and split it.

        Args:
            df: one row per text.
            text_col: the text column.
            label_cols: one 0/1 (or bool) column per label; or
            label_col: one column of ``label_delim``-separated label names.
            labels: fixes the label vocabulary (delimited format); unknown labels then raise.
            split: ``"random"`` (``valid_pct``), ``"stratified"`` (multi-label iterative
                stratification, the default) or ``"column"`` (``valid_col``, boolean). When
                ``valid_col`` is given and ``split`` is not, ``"column"`` is used.
            seed: seeds the split.
            empty_text: ``"drop"`` NaN/blank texts with a warning, or ``"raise"``.
            unlabelled: rows with no label at all: ``"keep"`` (normal in multi-label data,
                e.g. clean comments), ``"drop"`` with a warning, or ``"raise"``.
            extra_texts: unlabelled texts added to the language-model corpus only.
            config: a :class:`DataConfig`; explicit keywords are ignored when it is given.

        Raises:
            ValueError: empty frame, missing/duplicate columns, non-0/1 labels, unknown labels,
                no labels at all, bad split options.
            TypeError: non-string texts, wrong argument types.
        """
        if config is None:
            if split is None:
                split = "column" if valid_col is not None else "stratified"
            config = DataConfig(text_col=text_col, label_cols=list(label_cols) if label_cols is not None and not isinstance(label_cols, str) else label_cols,
                                label_col=label_col, label_delim=label_delim, split=split,
                                valid_pct=valid_pct, valid_col=valid_col, seed=seed,
                                empty_text=empty_text, unlabelled=unlabelled)
        elif not isinstance(config, DataConfig):
            raise TypeError(f"config must be a DataConfig, got {type(config).__name__}.")
        c = config
        if not isinstance(df, pd.DataFrame):
            raise TypeError(f"from_df expects a pandas DataFrame, got {type(df).__name__}.")
        if len(df) == 0:
            raise ValueError("The DataFrame is empty: nothing to train on.")
        spec = LabelSpec(label_cols=c.label_cols, label_col=c.label_col, label_delim=c.label_delim)
        needed = [c.text_col] + spec.columns + ([c.valid_col] if c.valid_col else [])
        check_columns(df, needed)
        if c.split == "column" and c.valid_col is None:
            raise ValueError("split='column' needs valid_col= naming a boolean column (True = validation row).")

        keep = validate_texts(df[c.text_col], empty_text=c.empty_text, col=c.text_col)
        df = df.loc[keep]
        y, labs = parse_label_matrix(df, spec, labels)

        no_label = y.sum(axis=1) == 0
        if no_label.all():
            raise ValueError(
                "No row has any label: check label_cols/label_col, and for a delimited column its "
                f"label_delim (now {c.label_delim!r})."
            )
        if no_label.any():
            n = int(no_label.sum())
            if c.unlabelled == "raise":
                raise ValueError(f"{n} row(s) have no label. Use unlabelled='keep' (valid multi-label rows) or 'drop'.")
            if c.unlabelled == "drop":
                warnings.warn(f"Dropping {n} row(s) that have no label.", UserWarning, stacklevel=2)
                df, y = df.loc[~no_label], y[~no_label]
        never = [lab for lab, n in zip(labs, y.sum(axis=0)) if n == 0]
        if never:
            warnings.warn(
                f"{len(never)} label(s) never occur in the data: {never[:10]}. The model cannot learn "
                "them; their F1 will be 0.", UserWarning, stacklevel=2)

        is_valid = _make_split(df, y, c)
        texts = df[c.text_col].tolist()
        extra = [t for t in (extra_texts or []) if isinstance(t, str) and t.strip()]
        return cls(texts, y, labs, is_valid, text_col=c.text_col, spec=spec, config=c,
                   extra_texts=extra, index=df.index)

    # ------------------------------------------------------------------ views
    @property
    def n_labels(self) -> int:
        return len(self.labels)

    @property
    def train_texts(self) -> list[str]:
        return [t for t, v in zip(self.texts, self.is_valid) if not v]

    @property
    def valid_texts(self) -> list[str]:
        return [t for t, v in zip(self.texts, self.is_valid) if v]

    @property
    def y_train(self) -> np.ndarray:
        return self.y[~self.is_valid]

    @property
    def y_valid(self) -> np.ndarray:
        return self.y[self.is_valid]

    def label_counts(self) -> pd.DataFrame:
        """Positives per label in train and valid, as a DataFrame indexed by label."""
        return pd.DataFrame({"train": self.y_train.sum(0).astype(int), "valid": self.y_valid.sum(0).astype(int)},
                            index=pd.Index(self.labels, name="label"))

    def fingerprint(self) -> dict[str, Any]:
        """Row counts, label counts and a content hash (for run directories)."""
        h = hashlib.sha256()
        for t in self.texts:
            h.update(t.encode("utf-8", "surrogatepass"))
            h.update(b"\0")
        h.update(np.ascontiguousarray(self.y).tobytes())
        h.update(np.ascontiguousarray(self.is_valid).tobytes())
        return {"n_rows": len(self.texts), "n_train": int((~self.is_valid).sum()),
                "n_valid": int(self.is_valid.sum()), "n_extra_texts": len(self.extra_texts),
                "labels": list(self.labels), "label_counts": [int(v) for v in self.y.sum(0)],
                "sha256": h.hexdigest()}

    def __repr__(self) -> str:
        return (f"MultiLabelData({len(self.texts)} texts: {int((~self.is_valid).sum())} train, "
                f"{int(self.is_valid.sum())} valid; {self.n_labels} labels; {len(self.extra_texts)} extra LM texts)")

    def subset(self, mask: np.ndarray) -> "MultiLabelData":
        """A copy restricted to the rows where ``mask`` is True (split kept)."""
        mask = np.asarray(mask, dtype=bool)
        out = MultiLabelData([t for t, m in zip(self.texts, mask) if m], self.y[mask], list(self.labels),
                             self.is_valid[mask], text_col=self.text_col, spec=self.spec, config=self.config,
                             extra_texts=self.extra_texts, index=self.index[mask])
        if self._tokens is not None:
            out._tokens = [t for t, m in zip(self._tokens, mask) if m]
        out._extra_tokens = self._extra_tokens
        return out

    def with_split(self, is_valid: np.ndarray) -> "MultiLabelData":
        """A copy with another validation mask (used by k-fold CV)."""
        out = self.subset(np.ones(len(self.texts), dtype=bool))
        out.is_valid = np.asarray(is_valid, dtype=bool).copy()
        return out

    # ------------------------------------------------------------------ tokens and DataLoaders
    @property
    def tokens(self) -> list[list[str]]:
        """fastai tokens of ``texts`` (computed once, shared by the LM and the classifier)."""
        if self._tokens is None:
            self._tokens = tokenize_texts(self.texts)
        return self._tokens

    def lm_dataloaders(self, *, bs: int = 64, seq_len: int = 72, min_freq: int = 2, max_vocab: int = 30000,
                       backwards: bool = False, valid_pct: float = 0.1, vocab: Sequence[str] | None = None,
                       seed: int | None = None, device: Any = None):
        """fastai ``DataLoaders`` for the language model over all texts (+ ``extra_texts``).

        The LM's own validation is a random ``valid_pct`` of the texts (LM training uses no
        labels, so the classifier's validation texts may be read).
        """
        toks = list(self.tokens)
        if self.extra_texts:
            if self._extra_tokens is None:  # tokenised once, like ``tokens``
                self._extra_tokens = tokenize_texts(self.extra_texts)
            toks += self._extra_tokens
        return lm_dataloaders_from_tokens(toks, bs=bs, seq_len=seq_len, min_freq=min_freq, max_vocab=max_vocab,
                                          backwards=backwards, valid_pct=valid_pct, vocab=vocab,
                                          seed=self.config.seed if seed is None else seed, device=device)

    def classifier_dataloaders(self, vocab: Sequence[str], *, bs: int = 64, seq_len: int = 72, device: Any = None,
                               backwards: bool = False, shuffle_seed: int | None = None):
        """fastai ``DataLoaders`` for the classifier: length-sorted padded batches (``SortedDL``),
        float multi-hot targets (``MultiCategoryBlock(encoded=True)``), the validation split
        of this object. ``backwards`` reverses every text (for a backward language model's encoder)."""
        from fastai.data.block import DataBlock, MultiCategoryBlock
        from fastai.data.transforms import ColReader, ColSplitter
        from fastai.text.data import TextBlock

        if not self.is_valid.any() or self.is_valid.all():
            raise ValueError("The split needs at least one training and one validation row.")
        frame = pd.DataFrame({"text": list(self.tokens), "text_length": [len(t) for t in self.tokens],
                              "_y": list(self.y), "_is_valid": self.is_valid})
        dblock = DataBlock(
            blocks=(TextBlock(_pretokenized_tfm(), vocab=list(vocab), seq_len=seq_len, backwards=backwards),
                    MultiCategoryBlock(encoded=True, vocab=list(self.labels))),
            get_x=ColReader("text"), get_y=ColReader("_y"), splitter=ColSplitter("_is_valid"))
        return dblock.dataloaders(frame, bs=bs, seq_len=seq_len, device=device, num_workers=0)


def _make_split(df: pd.DataFrame, y: np.ndarray, c: DataConfig) -> np.ndarray:
    n = len(df)
    if n < 2:
        raise ValueError(f"Need at least 2 rows to make a train/validation split, got {n}.")
    if c.split == "column":
        col = df[c.valid_col]
        if col.isna().any():
            raise ValueError(f"valid_col {c.valid_col!r} has missing values: it must be True/False in every row.")
        if col.dtype != bool:
            vals = pd.to_numeric(col, errors="coerce")
            if vals.isna().any() or not vals.isin([0, 1]).all():
                raise ValueError(f"valid_col {c.valid_col!r} must be boolean (True = validation row), got values like {col.unique()[:5].tolist()}.")
            col = vals.astype(bool)
        is_valid = col.to_numpy(dtype=bool)
        if is_valid.all() or not is_valid.any():
            raise ValueError(f"valid_col {c.valid_col!r} puts every row on one side: need both training and validation rows.")
        return is_valid
    n_valid = int(round(c.valid_pct * n))
    if n_valid < 1 or n_valid >= n:
        raise ValueError(f"valid_pct={c.valid_pct} of {n} rows leaves no training or no validation row.")
    rng = np.random.default_rng(c.seed)
    random_valid = np.zeros(n, dtype=bool)
    random_valid[rng.permutation(n)[:n_valid]] = True
    if c.split == "random":
        return random_valid
    from iterstrat.ml_stratifiers import MultilabelStratifiedShuffleSplit

    mss = MultilabelStratifiedShuffleSplit(n_splits=1, test_size=c.valid_pct, random_state=c.seed)
    strat = y.astype(int)
    if strat.shape[1] == 1:  # iterstrat rejects a single column ("binary"): add its complement
        strat = np.hstack([strat, 1 - strat])
    _, valid_idx = next(mss.split(np.zeros((n, 1)), strat))
    is_valid = np.zeros(n, dtype=bool)
    is_valid[valid_idx] = True
    if not 0 < is_valid.sum() < n:  # iterstrat can put every row on one side of a tiny frame
        warnings.warn(f"Stratified split of {n} rows left no training or no validation row; using a random "
                      f"split of {n_valid} validation row(s) instead.", UserWarning, stacklevel=3)
        return random_valid
    return is_valid


def lm_dataloaders_from_tokens(tokens: Sequence[Sequence[str]], *, bs: int, seq_len: int, min_freq: int, max_vocab: int,
                               backwards: bool = False, valid_pct: float = 0.1, vocab: Sequence[str] | None = None,
                               seed: int = 42, device: Any = None):
    """fastai LM ``DataLoaders`` over already-tokenised texts."""
    from fastai.data.block import DataBlock
    from fastai.data.transforms import ColReader, RandomSplitter
    from fastai.text.data import TextBlock

    frame = pd.DataFrame({"text": [list(t) for t in tokens], "text_length": [len(t) for t in tokens]})
    if len(frame) < 2:
        raise ValueError("A language model needs at least 2 texts.")
    block = TextBlock(_pretokenized_tfm(), vocab=list(vocab) if vocab is not None else None, is_lm=True,
                      seq_len=seq_len, backwards=backwards, min_freq=min_freq, max_vocab=max_vocab)
    dblock = DataBlock(blocks=block, get_x=ColReader("text"), splitter=RandomSplitter(valid_pct, seed=seed))
    return dblock.dataloaders(frame, bs=bs, seq_len=seq_len, device=device, num_workers=0)
