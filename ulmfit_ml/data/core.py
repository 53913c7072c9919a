"""Stage 1: a labelled DataFrame -> validated texts, targets, split, fastai DataLoaders.

Both multi-label formats are supported and give the same float multi-hot matrix:

* one 0/1 column per label: ``label_cols=["toxic", "insult"]``;
* one delimited column: ``label_col="tags", label_delim=";"`` (``"joy;anger"``; an empty
  or missing cell means "no label").

Two more kinds of target go through the same pipeline (:mod:`ulmfit_ml.tasks`; every step that
depends on the kind is a method of its spec, ``data.spec``):

* ``category_cols=["ekman", "sentiment"]``: each column takes one of a few categories (one
  softmax head per column); ``y`` holds category indexes;
* ``target_cols=["rating"]``: numbers (regression); ``y`` holds them in their own units.

fastai's ``TextDataLoaders.from_df`` gets both wrong (0/1 columns are read as label names,
and ``label_delim`` raises a TypeError, fastai issue #3685), so the DataBlocks are built here.
"""
from __future__ import annotations

import hashlib
import inspect
import warnings
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np
import pandas as pd

from ..utils.config import DataConfig, merge_config
from ..tasks.base import TargetSpec
from ..tasks.multilabel import MultiLabelSpec
from ..tasks.registry import spec_for_config
from .tokens import TextTokenizer, pretokenized_tfm
from .trainchecks import check_lm_tokens, stratification_matrix
from ..utils.validation import as_frame, check_columns, column_keys, extra_text_list, validate_texts

__all__ = ["MultiLabelData", "hash_texts", "lm_dataloaders_from_tokens"]


def hash_texts(texts: Sequence[str]) -> Any:
    """A SHA-256 object fed with ``texts`` in order (NUL-separated; lone surrogates kept): the one
    content hash of texts (data fingerprints, a self-training run's saved teacher probabilities)."""
    h = hashlib.sha256()
    for t in texts:
        h.update(t.encode("utf-8", "surrogatepass"))
        h.update(b"\0")
    return h


class MultiLabelData:
    """Validated texts and targets with a train/validation split.

    Build it with :meth:`from_df`. Attributes:

    * ``texts``: list of the kept texts (rows with NaN/empty texts removed);
    * ``task``: ``"multilabel"``, ``"multicategory"`` or ``"regression"``;
    * ``y``: ``(n_texts, n_labels)``: float32 multi-hot targets (multi-label), int64 category
      indexes (multi-category), float32 values in their own units (regression);
    * ``labels``: label vocabulary = column order of ``y`` and of predicted probabilities
      (multi-label); the category or target column names (other tasks);
    * ``spec``: the kind of target, fitted (a :class:`~ulmfit_ml.tasks.base.TargetSpec`:
      :class:`~ulmfit_ml.tasks.multilabel.MultiLabelSpec`, :class:`~ulmfit_ml.tasks.multicategory.CategorySpec`
      or :class:`~ulmfit_ml.tasks.regression.RegressionSpec`);
    * ``is_valid``: bool array, the validation rows;
    * ``extra_texts``: unlabelled texts used only by the language model.
    """

    def __init__(self, texts: list[str], y: np.ndarray, labels: list[str], is_valid: np.ndarray, *,
                 text_col: str, spec: TargetSpec, config: DataConfig, extra_texts: list[str] | None = None,
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
        self._tokenizer: TextTokenizer | None = TextTokenizer() if config.tokenizer == "spacy" else None

    # ------------------------------------------------------------------ construction
    @classmethod
    def from_df(cls, df: pd.DataFrame, *, text_col: str = "text", label_cols: Sequence[str] | None = None,
                label_col: str | None = None, label_delim: str = ";", labels: Sequence[str] | None = None,
                category_cols: Sequence[str] | None = None, target_cols: Sequence[str] | None = None,
                max_categories: int = 50, split: str | None = None, valid_pct: float = 0.2,
                valid_col: str | None = None, seed: int = 42, empty_text: str = "drop", unlabelled: str = "keep",
                tokenizer: str = "spacy", sp_vocab_size: int = 8000, extra_texts: Iterable[str] | None = None,
                config: DataConfig | None = None) -> "MultiLabelData":
        """Validate ``df`` and split it.

        Args:
            df: one row per text.
            text_col: the text column.
            label_cols: one 0/1 (or bool) column per label; or
            label_col: one column of ``label_delim``-separated label names; or
            category_cols: columns that each hold one of at most ``max_categories`` categories
                (strings or ints; missing values raise, a category seen once warns); or
            target_cols: numeric columns, a regression target each (missing, non-numeric,
                infinite or constant values raise).
            labels: fixes the label vocabulary (delimited format); unknown labels then raise.
            split: ``"random"`` (``valid_pct``), ``"stratified"`` (iterative stratification
                of the labels, of every column's categories, or of regression targets' quintiles;
                the default) or ``"column"`` (``valid_col``, boolean). When
                ``valid_col`` is given and ``split`` is not, ``"column"`` is used.
            seed: seeds the split.
            empty_text: ``"drop"`` NaN/blank texts with a warning, or ``"raise"``.
            unlabelled: rows with no label at all: ``"keep"`` (normal in multi-label data,
                e.g. clean comments), ``"drop"`` with a warning, or ``"raise"``.
            tokenizer: ``"spacy"`` (fastai's word tokenizer, the default, what the shipped LM reads)
                or ``"sentencepiece"``: a subword model of ``sp_vocab_size`` pieces trained on the
                language-model corpus (these texts and ``extra_texts``) when the tokens are first
                needed, or the pretrained LM's own model when fine-tuning from one.
            extra_texts: unlabelled texts added to the language-model corpus only.
            config: a :class:`DataConfig`; keywords that differ from their defaults override its fields
                (checked like the trainers' options).

        Raises:
            ValueError: empty frame, missing/duplicate columns, non-0/1 labels, unknown labels,
                no labels at all, bad split options.
            TypeError: non-string texts, wrong argument types.
        """
        c = _data_config(config, text_col=text_col, label_cols=label_cols, label_col=label_col, label_delim=label_delim,
                         category_cols=category_cols, max_categories=max_categories, target_cols=target_cols,
                         tokenizer=tokenizer, sp_vocab_size=sp_vocab_size, split=split, valid_pct=valid_pct,
                         valid_col=valid_col, seed=seed, empty_text=empty_text, unlabelled=unlabelled)
        df = as_frame(df, who="from_df")  # a polars (or other) frame with .to_pandas() is converted
        if len(df) == 0:
            raise ValueError("The DataFrame is empty: nothing to train on.")
        spec = spec_for_config(c)
        df = _checked_columns(df, c, spec)
        keep = validate_texts(df[c.text_col], empty_text=c.empty_text, col=c.text_col)  # warns from_df's caller
        extra = extra_text_list(extra_texts, empty_text=c.empty_text)  # the text column's policy
        spec, y, names, df = spec.fit_frame(df.loc[keep], labels=labels, config=c)  # warnings name from_df's caller
        texts = df[c.text_col].tolist()
        moved = c.split != "column"
        is_valid = _keep_duplicates_together(texts, _make_split(df, spec.strat_matrix(y), c, stacklevel=3), moved=moved,
                                             stacklevel=3)
        spec, y, is_valid = spec.after_split(texts, y, is_valid, moved=moved)
        return cls(texts, y, names, is_valid, text_col=c.text_col, spec=spec, config=c, extra_texts=extra,
                   index=df.index)

    @classmethod
    def texts_only(cls, df: pd.DataFrame, *, config: DataConfig,
                   extra_texts: Iterable[str] | None = None) -> "MultiLabelData":
        """The texts of ``df`` without any target, for the language model alone (``ulmfit-ml lm`` on a
        file without labels): the text column and its policy, no label column read, no split."""
        df = as_frame(df, who="texts_only")
        check_columns(df, [config.text_col])
        df = df.rename(columns={k: config.text_col for k in column_keys(df, [config.text_col])})
        keep = validate_texts(df[config.text_col], empty_text=config.empty_text, col=config.text_col)
        texts = df.loc[keep, config.text_col].tolist()
        extra = extra_text_list(extra_texts, empty_text=config.empty_text)
        spec = MultiLabelSpec(label_cols=[config.text_col])  # reads no column: no labels are fitted
        return cls(texts, np.zeros((len(texts), 0), dtype=np.float32), [], np.zeros(len(texts), dtype=bool),
                   text_col=config.text_col, spec=spec, config=config, extra_texts=extra, index=df.index[keep])

    # ------------------------------------------------------------------ views
    @property
    def n_labels(self) -> int:
        return len(self.labels)

    @property
    def task(self) -> str:
        """``"multilabel"``, ``"multicategory"`` or ``"regression"`` (the spec's kind)."""
        return self.spec.task

    @property
    def n_out(self) -> int:
        """Model outputs: one per label, per category of every column, or per regression target."""
        return self.spec.n_out

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
        """Positives per label in train and valid, as a DataFrame indexed by label (multi-label);
        rows per (column, category) for multi-category data."""
        return self.spec.counts(self.y_train, self.y_valid)

    def fingerprint(self) -> dict[str, Any]:
        """Row counts, label counts and a content hash (for run directories)."""
        h = hash_texts(self.texts)
        h.update(np.ascontiguousarray(self.y).tobytes())
        h.update(np.ascontiguousarray(self.is_valid).tobytes())
        return {"n_rows": len(self.texts), "n_train": int((~self.is_valid).sum()),
                "n_valid": int(self.is_valid.sum()), "n_extra_texts": len(self.extra_texts),
                "task": self.task, "labels": list(self.labels), **self.spec.fingerprint(self.y),
                "sha256": h.hexdigest()}

    def __repr__(self) -> str:
        return (f"MultiLabelData({len(self.texts)} texts: {int((~self.is_valid).sum())} train, "
                f"{int(self.is_valid.sum())} valid; {self.spec.describe()}; {len(self.extra_texts)} extra LM texts)")

    def subset(self, mask: np.ndarray) -> "MultiLabelData":
        """A copy restricted to the rows where ``mask`` is True (split kept)."""
        mask = np.asarray(mask, dtype=bool)
        out = MultiLabelData([t for t, m in zip(self.texts, mask) if m], self.y[mask], list(self.labels),
                             self.is_valid[mask], text_col=self.text_col, spec=self.spec, config=self.config,
                             extra_texts=self.extra_texts, index=self.index[mask])
        out._tokenizer = self._tokenizer
        if self._tokens is not None:
            out._tokens = [t for t, m in zip(self._tokens, mask) if m]
        out._extra_tokens = self._extra_tokens
        return out

    def with_split(self, is_valid: np.ndarray) -> "MultiLabelData":
        """A copy with another validation mask (used by k-fold CV)."""
        out = self.subset(np.ones(len(self.texts), dtype=bool))
        out.is_valid = np.asarray(is_valid, dtype=bool).copy()
        return out

    def with_training_rows(self, texts: list[str], y: np.ndarray) -> "MultiLabelData":
        """A copy with ``texts`` (targets ``y``, already checked by the caller) appended as training
        rows, index ``-1, -2, ...``; tokenizer and computed tokens are shared, not redone."""
        out = MultiLabelData(list(self.texts) + list(texts), np.vstack([self.y, y]), list(self.labels),
                             np.r_[self.is_valid, np.zeros(len(texts), dtype=bool)], text_col=self.text_col,
                             spec=self.spec, config=self.config, extra_texts=self.extra_texts,
                             index=self.index.append(pd.RangeIndex(-1, -len(texts) - 1, -1)))
        out._tokenizer, out._extra_tokens = self._tokenizer, self._extra_tokens
        if self._tokens is not None:
            out._tokens = list(self._tokens) + list(self.tokenizer(list(texts)))
        return out

    # ------------------------------------------------------------------ tokens and DataLoaders
    @property
    def tokenizer(self) -> TextTokenizer:
        """The :class:`~ulmfit_ml.data.tokens.TextTokenizer` of :attr:`tokens`. With
        ``tokenizer="sentencepiece"`` it is trained here, on first use, on the language-model
        corpus (``texts`` + ``extra_texts``), unless :meth:`use_tokenizer` gave one."""
        if self._tokenizer is None:
            self._tokenizer = TextTokenizer.train_sentencepiece(self.texts + self.extra_texts,
                                                                vocab_size=self.config.sp_vocab_size)
        return self._tokenizer

    def use_tokenizer(self, tokenizer: TextTokenizer) -> None:
        """Tokenise with ``tokenizer`` from now on (e.g. a pretrained LM's SentencePiece model).

        Raises:
            ValueError: its kind is not this data's ``tokenizer`` setting (spaCy words and
                subwords do not mix).
        """
        if not isinstance(tokenizer, TextTokenizer):
            raise TypeError(f"tokenizer must be a TextTokenizer, got {type(tokenizer).__name__}.")
        if tokenizer.name != self.config.tokenizer:
            raise ValueError(f"This data tokenises with {self.config.tokenizer!r} but the model reads {tokenizer.name!r} "
                             f"tokens: build the data with tokenizer={tokenizer.name!r}.")
        if tokenizer != self._tokenizer:
            self._tokenizer, self._tokens, self._extra_tokens = tokenizer, None, None

    @property
    def tokens(self) -> list[list[str]]:
        """Tokens of ``texts`` (computed once, shared by the LM and the classifier)."""
        if self._tokens is None:
            self._tokens = self.tokenizer(self.texts)
        return self._tokens

    def lm_tokens(self) -> list:
        """Tokens of every text the language model reads: ``texts`` then ``extra_texts``."""
        if self.extra_texts and self._extra_tokens is None:  # tokenised once, like ``tokens``
            self._extra_tokens = self.tokenizer(self.extra_texts)
        return list(self.tokens) + list(self._extra_tokens or [])

    def lm_dataloaders(self, *, bs: int = 64, seq_len: int = 72, min_freq: int = 2, max_vocab: int = 30000,
                       backwards: bool = False, valid_pct: float = 0.1, vocab: Sequence[str] | None = None,
                       seed: int | None = None, device: Any = None):
        """fastai ``DataLoaders`` for the language model over all texts (+ ``extra_texts``).

        The LM's own validation is a random ``valid_pct`` of the texts (LM training uses no
        labels, so the classifier's validation texts may be read).
        """
        return lm_dataloaders_from_tokens(self.lm_tokens(), bs=bs, seq_len=seq_len, min_freq=min_freq, max_vocab=max_vocab,
                                          backwards=backwards, valid_pct=valid_pct, vocab=vocab,
                                          seed=self.config.seed if seed is None else seed, device=device)

    def classifier_dataloaders(self, vocab: Sequence[str], *, bs: int = 64, seq_len: int = 72, device: Any = None,
                               backwards: bool = False, shuffle_seed: int | None = None):
        """fastai ``DataLoaders`` for the classifier: length-sorted padded batches (``SortedDL``),
        float multi-hot targets (``MultiCategoryBlock(encoded=True)``), the validation split
        of this object. ``backwards`` reverses every text (for a backward language model's encoder).

        Multi-category targets are int64 category indexes and regression targets float32
        standardised values (``spec.train_targets``), each collated to a tensor as it is
        (a plain ``TransformBlock``: fastai's ``CategoryBlock`` holds one column only)."""
        from fastai.data.block import DataBlock
        from fastai.data.transforms import ColReader, ColSplitter
        from fastai.text.data import TextBlock

        if not self.is_valid.any() or self.is_valid.all():
            raise ValueError("The split needs at least one training and one validation row.")
        y = self.spec.train_targets(self.y)
        frame = pd.DataFrame({"text": list(self.tokens), "text_length": [len(t) for t in self.tokens],
                              "_y": list(y), "_is_valid": self.is_valid})
        dblock = DataBlock(
            blocks=(TextBlock(pretokenized_tfm(), vocab=list(vocab), seq_len=seq_len, backwards=backwards),
                    self.spec.target_block()),
            get_x=ColReader("text"), get_y=ColReader("_y"), splitter=ColSplitter("_is_valid"))
        return dblock.dataloaders(frame, bs=bs, seq_len=seq_len, device=device, num_workers=0)


def _data_config(config: DataConfig | None, *, split: str | None, valid_col: str | None, label_cols: Any,
                 **options: Any) -> DataConfig:
    """The :class:`DataConfig` of from_df's keywords (``split``: by ``valid_col`` if given), or
    ``config`` with the keywords that differ from from_df's defaults applied and checked
    (``merge_config``, as the trainers do): none is ignored silently."""
    label_cols = list(label_cols) if label_cols is not None and not isinstance(label_cols, str) else label_cols
    if config is None:
        if split is None:
            split = "column" if valid_col is not None else "stratified"
        return DataConfig(label_cols=label_cols, split=split, valid_col=valid_col, **options)
    given = {"split": split, "valid_col": valid_col, "label_cols": label_cols, **options}
    defaults = _FROM_DF_DEFAULTS
    return merge_config(DataConfig, config, {k: v for k, v in given.items() if v != defaults[k]})


#: from_df's keyword defaults (a keyword left at its default does not override a given config)
_FROM_DF_DEFAULTS = {name: p.default for name, p in inspect.signature(MultiLabelData.from_df).parameters.items()
                     if p.default is not inspect.Parameter.empty}


def _checked_columns(df: pd.DataFrame, c: DataConfig, spec: TargetSpec) -> pd.DataFrame:
    """``df`` once every column ``c`` names is there, each under the name ``c`` gives it."""
    needed = [c.text_col] + spec.columns + ([c.valid_col] if c.valid_col else [])
    check_columns(df, needed)
    rename = {k: n for n, k in zip(needed, column_keys(df, needed)) if k != n}
    if rename:  # a column named 0 given as "0" (or back): one name from here on
        df = df.rename(columns=rename)
    if c.split == "column" and c.valid_col is None:
        raise ValueError("split='column' needs valid_col= naming a boolean column (True = validation row).")
    return df


def _make_split(df: pd.DataFrame, y: np.ndarray, c: DataConfig, *, stacklevel: int = 3) -> np.ndarray:
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
    _, valid_idx = next(mss.split(np.zeros((n, 1)), stratification_matrix(y)))
    is_valid = np.zeros(n, dtype=bool)
    is_valid[valid_idx] = True
    if not 0 < is_valid.sum() < n:  # iterstrat can put every row on one side of a tiny frame
        warnings.warn(f"Stratified split of {n} rows left no training or no validation row; using a random "
                      f"split of {n_valid} validation row(s) instead.", UserWarning, stacklevel=stacklevel)
        return random_valid
    return is_valid


def _keep_duplicates_together(texts: list[str], is_valid: np.ndarray, *, moved: bool, stacklevel: int = 3) -> np.ndarray:
    """Duplicate texts on both sides of a split leak the validation answers into training: warn
    with the count and (random and stratified splits) move every copy to its first copy's side."""
    first: dict[str, int] = {}
    for i, t in enumerate(texts):
        first.setdefault(t, i)
    side = np.array([is_valid[first[t]] for t in texts])
    leaked = side != is_valid
    if not leaked.any():
        return is_valid
    n_texts = len({texts[i] for i in np.flatnonzero(leaked)})
    if moved and (side.all() or not side.any()):  # so few distinct texts that moving them empties a side
        moved = False
    if not moved:
        warnings.warn(f"{n_texts} text(s) occur in both the training and the validation rows: validation metrics "
                      "will be optimistic. Deduplicate the frame (df.drop_duplicates(text_col)) or fix the split.",
                      UserWarning, stacklevel=stacklevel)
        return is_valid
    warnings.warn(f"{n_texts} duplicated text(s) fell on both sides of the split; {int(leaked.sum())} copies were "
                  "moved to their first copy's side so that no validation text is also a training text.",
                  UserWarning, stacklevel=stacklevel)
    return side


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
    train_idx, valid_idx = RandomSplitter(valid_pct, seed=seed)(frame)  # the split fastai would make, checked first
    check_lm_tokens(frame["text_length"].to_numpy(), list(train_idx), list(valid_idx), bs=bs, seq_len=seq_len,
                     valid_pct=valid_pct)
    block = TextBlock(pretokenized_tfm(), vocab=list(vocab) if vocab is not None else None, is_lm=True,
                      seq_len=seq_len, backwards=backwards, min_freq=min_freq, max_vocab=max_vocab)
    dblock = DataBlock(blocks=block, get_x=ColReader("text"), splitter=lambda _: (train_idx, valid_idx))
    return dblock.dataloaders(frame, bs=bs, seq_len=seq_len, device=device, num_workers=0)
