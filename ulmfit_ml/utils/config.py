"""Configuration dataclasses shared by the Python API and the CLI.

Every training function takes ``config=`` (one of these dataclasses) and/or keyword
overrides of its fields; the CLI maps flags and TOML keys onto the same fields, so one
experiment is described the same way everywhere.
"""
from __future__ import annotations

import dataclasses
import warnings
from dataclasses import dataclass, field, fields
from typing import Any

from .arch import check_at_most, resolve_arch
from .valuetypes import check_config_types, check_keys

__all__ = ["OUTPUTS", "SELF_TRAIN_TEACHERS", "SELF_TRAIN_MODES", "DataConfig", "LMConfig", "ClassifierConfig", "PretrainConfig",
           "RunConfig", "SECTIONS", "RENAMED", "config_from_dict", "config_to_dict", "current_key", "renamed_keys",
           "merge_config"]

#: The prediction tables every model makes (``output_table``) and :func:`~ulmfit_ml.inference.predict.predict_file`,
#: ``predict_dask`` and the CLI's ``--format`` offer: probabilities, label lists, both, or a Kaggle-style
#: submission (id + one probability column per label, named by label). The one list of them.
OUTPUTS = ("proba", "labels", "both", "submission")
#: The teachers that :func:`~ulmfit_ml.self_train` builds itself (``[run] self_train``, ``--self-train``).
SELF_TRAIN_TEACHERS = ("blend", "self")
#: ``[run] self_train``'s values: a teacher, ``"auto"`` (the default: the blend teacher when the run has
#: unlabelled texts and few labels; :func:`~ulmfit_ml.training.selftrain.self_train_plan`) or ``"none"``.
SELF_TRAIN_MODES = ("auto", "none", *SELF_TRAIN_TEACHERS)

# Bounds on counts that size memory up front, checked before anything is allocated: a typo (``epochs = 10**9``: fastai's
# progress bar grew by ~370 MB/s listing the epochs, then an IndexError) fails naming the key, value, bound and why.
MAX_EPOCHS = 10_000  #: epochs of one fit (LM, frozen LM, each classifier stage) and pretraining passes
MAX_LIN_FTRS = 16_384  #: units of each hidden layer of the classifier head (fastai's default is 50)
MAX_N_SAMPLES = 65_536  #: sampled-softmax negatives: the logits are (bs x seq_len) x n_samples floats
MAX_THREADS = 1024  #: torch CPU threads
_EPOCHS_WHY = ("fastai sets up per-epoch state before the first batch (its progress bar lists every epoch), so "
               "memory grows with this count, and one that large is most likely a step or token count")


def _check_positive(name: str, value: Any, *, allow_zero: bool = False) -> None:
    ok = isinstance(value, (int, float)) and not isinstance(value, bool)
    ok = ok and (value >= 0 if allow_zero else value > 0)
    if not ok:
        bound = ">= 0" if allow_zero else "> 0"
        raise ValueError(f"{name} must be a number {bound}, got {value!r}.")


def _check_tokenizer(name: Any, vocab_size: Any) -> None:
    if name not in ("spacy", "sentencepiece"):
        raise ValueError(f"tokenizer must be 'spacy' or 'sentencepiece', got {name!r}.")
    if isinstance(vocab_size, bool) or not isinstance(vocab_size, int) or vocab_size < 50:
        raise ValueError(f"sp_vocab_size must be an int >= 50, got {vocab_size!r}.")


@dataclass
class DataConfig:
    """How a DataFrame becomes a :class:`~ulmfit_ml.data.core.MultiLabelData`.

    Exactly one target kind must be set: ``label_cols`` (one 0/1 column per label) or
    ``label_col`` (one delimited column) for multi-label; ``category_cols`` (columns that each
    take one of a few categories: one softmax head per column); ``target_cols`` (numeric
    regression targets).
    """

    text_col: str = "text"
    label_cols: list[str] | None = None
    label_col: str | None = None
    label_delim: str = ";"
    category_cols: list[str] | None = None
    max_categories: int = 50  #: more categories in one column raise (it is probably a text or id column)
    target_cols: list[str] | None = None
    tokenizer: str = "spacy"  #: "spacy" (fastai's words) or "sentencepiece" (subwords trained on the LM corpus)
    sp_vocab_size: int = 8000  #: SentencePiece pieces (a soft limit: a small corpus gets fewer)
    split: str = "stratified"  #: "random", "stratified" or "column"
    valid_pct: float = 0.2
    valid_col: str | None = None
    seed: int = 42
    empty_text: str = "drop"  #: "drop" (warn with a count) or "raise"
    unlabelled: str = "keep"  #: rows with no label: "keep", "drop" (warn) or "raise"

    def __post_init__(self) -> None:
        if self.split not in ("random", "stratified", "column"):
            raise ValueError(f"split must be 'random', 'stratified' or 'column', got {self.split!r}.")
        if not (isinstance(self.valid_pct, (int, float)) and 0 < self.valid_pct < 1):
            raise ValueError(f"valid_pct must be a float in (0, 1), got {self.valid_pct!r}.")
        if self.empty_text not in ("drop", "raise"):
            raise ValueError(f"empty_text must be 'drop' or 'raise', got {self.empty_text!r}.")
        if self.unlabelled not in ("keep", "drop", "raise"):
            raise ValueError(f"unlabelled must be 'keep', 'drop' or 'raise', got {self.unlabelled!r}.")
        _check_tokenizer(self.tokenizer, self.sp_vocab_size)
        given = [k for k in ("label_cols", "label_col", "category_cols", "target_cols") if getattr(self, k) is not None]
        if len(given) > 1:
            raise ValueError(f"Give exactly one of label_cols, label_col, category_cols or target_cols: "
                             f"{' and '.join(given)} are both set, and a model learns one kind of target. Use label_cols or "
                             "label_col for 0/1 labels, category_cols for columns of categories (one softmax head each), "
                             "target_cols for numbers (regression), and remove the others.")

    @property
    def task(self) -> str:
        """``"multicategory"``, ``"regression"`` or ``"multilabel"`` (from the target columns set)."""
        if self.category_cols is not None:
            return "multicategory"
        if self.target_cols is not None:
            return "regression"
        return "multilabel"


@dataclass
class LMConfig:
    """Language-model fine-tuning options (ULMFiT stage 2).

    ``pretrained``: ``"en-small"`` (default) starts from the general-domain English LM shipped
    with ulmfit_ml (arch ``cpu``, offline); ``True`` downloads fastai's WikiText-103 AWD-LSTM
    (needs the ``paper`` arch and internet); a path loads local weights (a directory saved by
    ulmfit_ml, or a fastai ``.pth`` + vocab ``.pkl`` pair); ``False`` trains from scratch.
    """

    arch: str | dict[str, Any] = "cpu"
    pretrained: bool | str = "en-small"
    #: unfrozen epochs; None: by the LM's tokens, 2 up to 0.67M tokens, else 1 (training/schedule.py)
    epochs: int | None = None
    frozen_epochs: int | None = None  #: None: 1 when pretrained weights are loaded, else 0
    lr: float | None = None  #: None: 1e-2 from scratch, 2e-3 (ULMFiT's fine-tuning rate) from pretrained weights
    bs: int = 64
    seq_len: int = 72
    drop_mult: float = 0.3
    wd: float = 0.1
    moms: tuple[float, float, float] = (0.8, 0.7, 0.8)
    min_freq: int = 2
    max_vocab: int = 30000
    #: a pretrained start's tokens that the texts do not bring: "train" with them all (the default), "extend" the
    #: fine-tuned model with them and their pretrained rows (no training cost), or "drop" them (v0.2: the texts'
    #: tokens only, so a word only test texts contain is xxunk). bench/RESULTS.md "Small data" (GoEmotions dev,
    #: macro-F1 with tuned thresholds): 500 comments 0.165 vs 0.152 ("drop"), 3 seeds, better on each; 2,000: 0.264
    #: vs 0.246, ROC-AUC +0.01 at both sizes; "extend" 0.158 / 0.263. The cost: a softmax over ~12k more tokens.
    pretrained_vocab: str = "train"
    backwards: bool = False
    seed: int = 42
    device: str | None = None  #: None: cuda when available, else cpu
    fp16: bool | None = None  #: None: mixed precision on cuda only
    quiet: bool = False

    def __post_init__(self) -> None:
        resolve_arch(self.arch)
        for name in ("bs", "seq_len", "min_freq", "max_vocab"):
            _check_positive(name, getattr(self, name))
        if self.lr is not None:
            _check_positive("lr", self.lr)
        for name in ("drop_mult", "wd"):
            _check_positive(name, getattr(self, name), allow_zero=True)
        for name in ("epochs", "frozen_epochs"):
            if getattr(self, name) is not None:
                _check_positive(name, getattr(self, name), allow_zero=True)
            check_at_most(f"lm.{name}", getattr(self, name), MAX_EPOCHS, _EPOCHS_WHY)
        if self.pretrained_vocab not in ("drop", "extend", "train"):
            raise ValueError(f"pretrained_vocab must be 'drop', 'extend' or 'train', got {self.pretrained_vocab!r}.")
        self.moms = tuple(self.moms)


@dataclass
class ClassifierConfig:
    """Classifier training options (ULMFiT stage 3).

    Gradual unfreezing: stage ``i`` trains the last ``unfreeze[i]`` layer groups (``0``
    means all) for ``epochs[i]`` one-cycle epochs with peak learning rate ``lrs[i]``;
    lower groups get discriminative rates down to ``lrs[i] / lr_div`` (``slice(lr/2.6**4, lr)``).
    The ULMFiT paper's schedule is ``unfreeze=(1, 2, 3, 0), epochs=(1, 1, 1, 2),
    lrs=(2e-2, 1e-2, 5e-3, 1e-3)``; the defaults (one stage, all layers, batch 32) are the schedule
    measured best with the shipped ``en-small`` encoder on small data, and ``epochs=None`` sets
    the epochs by the training split's size (:func:`ulmfit_ml.training.schedule.classifier_epochs`):
    20 up to 256k training tokens (about 17,000 GoEmotions comments), fewer above, at least 3, but
    never fewer than 3,000 updates' worth for few long texts (within 4x the token budget), so
    that 10,000 texts of 70 words train in under 30 minutes on 2 CPU cores. For the best score on large data (tens of thousands
    of texts), give the epochs: ``epochs=(12,), bs=64`` (all 39k GoEmotions train comments: 0.499 dev
    macro-F1, about 30 minutes on 2 CPU cores, against 0.490 for 8 epochs; bench/RESULTS.md).
    """

    bs: int = 32
    seq_len: int = 72
    max_len: int = 72 * 20
    drop_mult: float = 0.5
    # Measured with the shipped en-small LM on 2,000 GoEmotions comments (bench/RESULTS.md,
    # "Transfer"): all layers at once for 20 epochs beat the paper's gradual unfreezing
    # (1, 2, 3, 0) / (1, 1, 1, 2) / (2e-2 .. 1e-3) by a wide margin, and a longer gradual schedule too.
    # bench/classifier_sweep.json (one change at a time around the previous defaults, selected on the
    # held-out part of train, 3 seeds): a peak rate of 2e-2 with the focal loss and pos_weight="auto"
    # (rare labels' positives up-weighted) beat 1e-2 with plain BCE on every seed.
    unfreeze: tuple[int, ...] = (0,)
    epochs: tuple[int, ...] | None = None  #: one per stage; None: by size, one stage only (see above)
    lrs: tuple[float, ...] = (2e-2,)
    lr_div: float = 2.6**4
    moms: tuple[float, float, float] = (0.8, 0.7, 0.8)
    wd: float = 0.1
    lin_ftrs: tuple[int, ...] = (50,)
    loss: str = "focal"  #: multi-label loss: "focal" (sigmoid focal loss, the default) or "bce"
    regression_loss: str = "mse"  #: regression targets: "mse" or "huber" (on standardised targets)
    huber_delta: float = 1.0  #: "huber": where the loss turns linear, in standard deviations
    focal_gamma: float = 2.0
    pos_weight: str | float | list[float] | None = "auto"  #: "auto" (from label frequencies, capped), None or per-label weights
    pos_weight_cap: float = 10.0
    # bench/TARGETS.md (GoEmotions ekman + sentiment, 8,000 comments): "balanced" raised dev macro-F1 from 0.430 to
    # 0.501 (ekman) and 0.601 to 0.623 (sentiment), accuracy -0.004 / +0.009: the default, as pos_weight="auto" is
    # for multi-label data.
    class_weight: str | None = "balanced"  #: category columns: "balanced" (scikit-learn's n / (k * count)) or None
    save_best_by: str | None = None  #: e.g. "f1_macro": keep the best epoch of the last stage
    #: how ``clf.thresholds`` are tuned on the validation split after training: "per_label", "global" or "none"
    #: (0.5); the values are :meth:`tune_thresholds`'s ``strategy`` (this key was ``thresholds`` before 0.3)
    threshold_strategy: str = "per_label"
    seed: int = 42
    device: str | None = None
    fp16: bool | None = None
    quiet: bool = False

    def __post_init__(self) -> None:
        self.unfreeze = tuple(self.unfreeze)
        if self.epochs is None and len(self.unfreeze) > 1:
            raise ValueError(f"epochs=None sets one stage's epochs by the data's size, but unfreeze={self.unfreeze} "
                             f"has {len(self.unfreeze)} stages: give epochs, one per stage, e.g. "
                             f"epochs={tuple([1] * len(self.unfreeze))}.")
        self.epochs = tuple(self.epochs) if self.epochs is not None else None
        self.lrs = tuple(self.lrs)
        self.moms = tuple(self.moms)
        self.lin_ftrs = tuple(self.lin_ftrs)
        for u in self.unfreeze:
            if not isinstance(u, int) or u < 0:
                raise ValueError(f"unfreeze entries must be ints >= 0 (0 = all layers), got {u!r}.")
        for i, e in enumerate(self.epochs or ()):
            _check_positive("epochs entries", e, allow_zero=True)
            check_at_most(f"classifier.epochs[{i}]", e, MAX_EPOCHS, _EPOCHS_WHY)
        for i, n in enumerate(self.lin_ftrs):
            _check_positive("lin_ftrs entries (units of each hidden layer of the head)", n)
            check_at_most(f"classifier.lin_ftrs[{i}]", n, MAX_LIN_FTRS, "the head's weights are allocated at once")
        for lr in self.lrs:
            _check_positive("lrs entries", lr)
        n_epochs = len(self.unfreeze) if self.epochs is None else len(self.epochs)
        if not (len(self.unfreeze) == n_epochs == len(self.lrs)) or not self.unfreeze:
            raise ValueError(
                "unfreeze, epochs and lrs must have the same non-zero length (one entry per "
                f"stage), got {len(self.unfreeze)}, {n_epochs} and {len(self.lrs)}."
            )
        for name in ("bs", "seq_len", "max_len", "lr_div"):
            _check_positive(name, getattr(self, name))
        if self.threshold_strategy not in ("per_label", "global", "none"):
            raise ValueError("threshold_strategy must be 'per_label', 'global' or 'none' (0.5 for every label), "
                             f"got {self.threshold_strategy!r}.")
        if self.loss not in ("bce", "focal"):
            raise ValueError(f"loss must be 'bce' or 'focal', got {self.loss!r}.")
        if self.class_weight not in (None, "balanced"):
            raise ValueError(f"class_weight must be None or 'balanced', got {self.class_weight!r}.")
        if self.regression_loss not in ("mse", "huber"):
            raise ValueError(f"regression_loss must be 'mse' or 'huber', got {self.regression_loss!r}.")
        _check_positive("huber_delta", self.huber_delta)
        if isinstance(self.pos_weight, str) and self.pos_weight != "auto":
            raise ValueError(f"pos_weight must be None, 'auto', a number or a list, got {self.pos_weight!r}.")


@dataclass
class PretrainConfig:
    """Pretraining options (ULMFiT stage 1, :func:`~ulmfit_ml.pretrain_lm`).

    Defaults are the ones the shipped ``en-small`` model was trained with (see its model card),
    except the length of the run (``epochs`` / ``max_tokens``).
    """

    arch: str | dict[str, Any] = "cpu"
    #: continue from a language model instead of random weights: a shipped name ("en-small",
    #: the direction of ``backwards``) or a directory saved by ulmfit_ml; its vocabulary,
    #: tokenizer and sizes are kept (``max_vocab`` / ``min_freq`` unused). The schedule is a
    #: new one-cycle over this run's tokens.
    init_from: str | None = None
    #: where in an epoch the first batch is read (fraction): a continued run can start on the
    #: text its previous run had not reached
    data_offset: float = 0.0
    max_vocab: int = 12000
    min_freq: int = 3
    valid_pct: float = 0.01  #: held-out share of the corpus lines (perplexity)
    epochs: float = 1.0  #: passes over the corpus (fractions allowed)
    max_tokens: int | None = None  #: stop the one-cycle schedule after this many training tokens
    bs: int = 64
    seq_len: int = 70
    lr: float = 3e-3
    div: float = 25.0  #: one-cycle: start at lr / div
    div_final: float = 1e4  #: one-cycle: end at lr / div_final
    pct_start: float = 0.25
    #: "one_cycle" (fastai's: cosine warm-up over pct_start, cosine decay over the rest) or "wsd"
    #: (warmup-stable-decay: cosine warm-up over pct_start, lr held, cosine decay over the last decay_pct)
    schedule: str = "one_cycle"
    decay_pct: float = 0.2  #: wsd: share of the run spent decaying to lr / div_final
    moms: tuple[float, float, float] = (0.8, 0.7, 0.8)
    drop_mult: float = 0.1  #: light dropout: < 1 epoch over a large corpus underfits, it does not overfit
    wd: float = 0.01
    clip: float | None = 0.25
    tokenizer: str = "spacy"  #: "spacy" (fastai's words) or "sentencepiece" (trained on the corpus, kept with the LM)
    sp_vocab_size: int = 8000  #: SentencePiece pieces
    sp_train_lines: int = 300_000  #: corpus lines the SentencePiece model is trained on (the first ones)
    softmax: str = "sampled"  #: "sampled" (fast on CPU) or "full"
    n_samples: int = 1024  #: negatives per batch for the sampled softmax
    backwards: bool = False
    seed: int = 42
    threads: int | None = None  #: torch CPU threads (None: torch's default)
    device: str | None = None  #: None: cuda when available, else cpu
    checkpoint_every: float | None = 600.0  #: seconds between checkpoints (needs out_dir)
    checkpoint_every_steps: int | None = None
    log_every: float = 30.0  #: seconds between progress lines
    valid_max_tokens: int | None = 200_000  #: held-out tokens scored at the end
    quiet: bool = False

    def __post_init__(self) -> None:
        resolve_arch(self.arch)
        for name in ("max_vocab", "min_freq", "bs", "seq_len", "lr", "div", "div_final", "n_samples", "log_every"):
            _check_positive(name, getattr(self, name))
        for name in ("epochs", "drop_mult", "wd"):
            _check_positive(name, getattr(self, name), allow_zero=True)
        for name in ("max_tokens", "clip", "threads", "checkpoint_every", "checkpoint_every_steps", "valid_max_tokens"):
            if getattr(self, name) is not None:
                _check_positive(name, getattr(self, name))
        check_at_most("pretrain.epochs", self.epochs, MAX_EPOCHS, "passes over the whole corpus; that many is most "
                       "likely a step or token count (max_tokens= stops after a number of tokens)")
        check_at_most("pretrain.n_samples", self.n_samples, MAX_N_SAMPLES, "the sampled logits are (bs x seq_len) "
                       "x n_samples floats; beyond a vocabulary's size use softmax='full'")
        check_at_most("pretrain.threads", self.threads, MAX_THREADS, "more threads than cores only slow training")
        if not (isinstance(self.valid_pct, (int, float)) and 0 <= self.valid_pct < 1):
            raise ValueError(f"valid_pct must be in [0, 1), got {self.valid_pct!r}.")
        if not (isinstance(self.pct_start, (int, float)) and 0 < self.pct_start < 1):
            raise ValueError(f"pct_start must be in (0, 1), got {self.pct_start!r}.")
        if self.schedule not in ("one_cycle", "wsd"):
            raise ValueError(f"schedule must be 'one_cycle' or 'wsd', got {self.schedule!r}.")
        if self.schedule == "wsd" and not (isinstance(self.decay_pct, (int, float)) and 0 < self.decay_pct
                                           and self.pct_start + self.decay_pct <= 1):
            raise ValueError(f"decay_pct must be in (0, 1 - pct_start], got {self.decay_pct!r} (pct_start {self.pct_start}).")
        if not (isinstance(self.data_offset, (int, float)) and not isinstance(self.data_offset, bool)
                and 0 <= self.data_offset < 1):
            raise ValueError(f"data_offset must be a fraction of an epoch in [0, 1), got {self.data_offset!r}.")
        if self.init_from is not None and not (isinstance(self.init_from, str) and self.init_from.strip()):
            raise ValueError(f"init_from must be a shipped model name or a directory, got {self.init_from!r}.")
        _check_tokenizer(self.tokenizer, self.sp_vocab_size)
        _check_positive("sp_train_lines", self.sp_train_lines)
        if self.softmax not in ("sampled", "full"):
            raise ValueError(f"softmax must be 'sampled' or 'full', got {self.softmax!r}.")
        self.moms = tuple(self.moms)


@dataclass
class RunConfig:
    """The ``[run]`` section: files and experiment plumbing (everything that is not a model option).

    Paths are relative to the current directory; the resolved config stores them absolute.
    """

    train: str | None = None  #: labelled data file (.csv, .tsv, .parquet, .jsonl)
    #: separator of the CSV/TSV files the run reads (train, test, extra_texts); default ',' (a tab for .tsv)
    sep: str | None = None
    header: bool = True  #: false: those CSV/TSV files have no header row (columns "0", "1", ...)
    out: str | None = None  #: run directory; default runs/<command>-<date>-<time>
    #: what the classifier's encoder starts from, as ``train_classifier(encoder=...)``: "lm" (the language
    #: model this run fine-tunes), a saved language model's directory (or a run directory with lm/) to
    #: reuse, or "random" (no language model: an ablation; ``encoder=None`` in Python)
    encoder: str = "lm"
    extra_texts: list[str] = field(default_factory=list)  #: unlabelled files whose texts join the LM corpus
    seed: int | None = None  #: when set, replaces the seeds of [data], [lm] and [classifier]
    folds: int = 5  #: cv: number of folds
    test: str | None = None  #: cv: unlabelled file predicted by the average of the fold models
    id_col: str | None = None  #: cv: id column copied to the OOF and test predictions
    save_fold_models: bool = False  #: cv: save every fold's classifier under folds/
    keep_checkpoints: bool = False  #: train: keep checkpoints/ after a successful run
    #: train: "blend" or "self" trains the classifier as a student of that teacher on the extra_texts
    #: (``um.self_train``; README "Few labels"); "auto": "blend" when there are extra_texts, multi-label
    #: targets and at most 5,000 labelled training texts (2,000 of the extra texts), else the classifier
    #: alone; "none" (or None): the classifier alone
    self_train: str | None = "auto"
    plots: bool = True  #: write plots/ (needs matplotlib)
    overwrite: bool = False  #: replace an existing run directory

    def __post_init__(self) -> None:
        if not isinstance(self.encoder, str) or not self.encoder:
            raise ValueError(f"encoder must be 'lm', 'random' or a saved language model's directory, got {self.encoder!r}.")
        if isinstance(self.folds, bool) or not isinstance(self.folds, int) or self.folds < 2:
            raise ValueError(f"folds must be an int >= 2, got {self.folds!r}.")
        if self.self_train is not None and self.self_train not in SELF_TRAIN_MODES:
            raise ValueError(f"self_train must be one of {SELF_TRAIN_MODES}, got {self.self_train!r}.")


#: Config-file sections -> dataclasses (the CLI's TOML sections).
SECTIONS: dict[str, type] = {"data": DataConfig, "lm": LMConfig, "classifier": ClassifierConfig, "run": RunConfig,
                             "pretrain": PretrainConfig}


def config_to_dict(cfg: Any) -> dict[str, Any]:
    """A JSON/TOML-friendly dict of a config dataclass (tuples become lists)."""
    out = {}
    for f in fields(cfg):
        v = getattr(cfg, f.name)
        out[f.name] = list(v) if isinstance(v, tuple) else v
    return out


#: Config keys renamed since an earlier version: ``(section, old) -> new``. The old name keeps working
#: (keyword options, config files, a run directory's config.toml, ``--set``/flags) with a FutureWarning,
#: as scikit-learn deprecates a parameter; :func:`current_key` is the one place that reads this.
RENAMED: dict[tuple[str, str], str] = {("classifier", "thresholds"): "threshold_strategy"}


def current_key(section: str, key: str) -> str:
    """Today's name of config key ``section.key`` (a renamed key warns once per use)."""
    new = RENAMED.get((section, key))
    if new is None:
        return key
    warnings.warn(f"{section}.{key} is now {section}.{new} (the model's thresholds are an array; this key is how "
                  f"they are tuned): write {new}; the old name will stop working in 0.4.", FutureWarning, stacklevel=4)
    return new


def renamed_keys(section: str, values: dict[str, Any], *, error: type[Exception] = ValueError) -> dict[str, Any]:
    """``values`` with renamed keys under their current names; ``error`` if both names are given."""
    out: dict[str, Any] = {}
    for key, value in values.items():
        new = current_key(section, key)
        if new != key and new in values:
            raise error(f"{section}.{key} and {section}.{new} are one option (renamed): give {new} only.")
        out[new] = value
    return out


def config_from_dict(cls: type, values: dict[str, Any], *, section: str = "") -> Any:
    """Build config ``cls`` from ``values``; an unknown key is a ValueError from :func:`check_keys`."""
    section = section or _section_of(cls)
    values = renamed_keys(section, values)
    check_keys(cls, values, where=section, error=ValueError)
    return cls(**values)


def _section_of(cls: type) -> str:
    """The config-file section of dataclass ``cls`` (``ClassifierConfig`` -> ``classifier``)."""
    return next((k for k, v in SECTIONS.items() if v is cls), cls.__name__)


def merge_config(cls: type, config: Any | None, overrides: dict[str, Any]) -> Any:
    """Return ``config`` (or the defaults) with keyword ``overrides`` applied and checked."""
    if config is None:
        config = cls()
    elif not isinstance(config, cls):
        raise TypeError(f"config must be a {cls.__name__}, got {type(config).__name__}.")
    if not overrides:
        return config
    section = _section_of(cls)
    overrides = renamed_keys(section, overrides, error=TypeError)
    checked = check_config_types(cls, overrides, where=section, unknown=TypeError)
    return dataclasses.replace(config, **checked)
