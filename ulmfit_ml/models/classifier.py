"""The trained models: :class:`TextModel` (an AWD-LSTM classifier network with its vocab and
metadata: batched inference, int8 copies, safe save) and :class:`MultiLabelClassifier`, which
predicts, evaluates, tunes thresholds and saves itself; :func:`load_classifier` rebuilds any
saved model (the multi-category and regression models of :mod:`ulmfit_ml.heads` register their
``task`` here). No model holds a fastai ``Learner``: training (:mod:`ulmfit_ml.classifier`)
produces them, as scikit-learn's fitted estimators and setfit's ``modeling.py`` / ``trainer.py`` split do.

A classifier directory holds::

    model.safetensors   weights (safetensors: tensors only, no code)
    config.json         format version, architecture, sequence lengths, text/label columns, versions
    vocab.json          token list (index = id)
    labels.json         label names (column order of predict_proba); category / target columns
    thresholds.json     per-label decision thresholds (multi-label only)
    history.csv         per-epoch training table (informational)
    .ulmfit_ml.json     the ownership marker, with the sha256 of every file (checked at load;
                        see :mod:`ulmfit_ml.persist`)
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import copy

import numpy as np
import pandas as pd
import torch
from torch import nn

from .base import MultiLabelPredictorMixin
from ..utils.arch import resolve_arch, scale_dropouts
from ..utils.valuetypes import check_value, describe_type, user_path
from ..utils.manifest import verify_files
from ..utils.persist import (FORMAT_VERSION, atomic_dir, file_sha256, load_weights, read_json, save_weights, versions,
                      write_json)
from ..utils.runtime import resolve_device
from ..tasks.targets import RegressionSpec, target_spec_from_dict
from ..evaluation.thresholds import check_thresholds
from ..data.tokens import TextTokenizer
from ..utils.validation import check_bs, check_texts

__all__ = ["TextModel", "MultiLabelClassifier", "load_classifier", "save_classifier", "build_classifier_model",
           "clas_arch_config", "TargetRange", "register_model_kind"]


def clas_arch_config(arch: dict[str, Any] | str) -> dict[str, Any]:
    """fastai's ``awd_lstm_clas_config`` (classifier dropouts) with the sizes of ``arch``."""
    from fastai.text.models.awdlstm import awd_lstm_clas_config

    sizes = resolve_arch(arch) if isinstance(arch, str) else {k: arch[k] for k in ("emb_sz", "n_hid", "n_layers")}
    cfg = dict(awd_lstm_clas_config)
    cfg.update(sizes)
    return cfg


def build_classifier_model(vocab_size: int, n_out: int, *, arch: dict[str, Any], seq_len: int, max_len: int,
                           lin_ftrs: Sequence[int], drop_mult: float) -> torch.nn.Module:
    """fastai's ``get_text_classifier`` for AWD-LSTM (used for training and to rebuild on load)."""
    from fastai.text.models.awdlstm import AWD_LSTM
    from fastai.text.models.core import get_text_classifier

    return get_text_classifier(AWD_LSTM, vocab_size, n_out, seq_len=seq_len,
                               config=scale_dropouts(clas_arch_config(arch), drop_mult),
                               drop_mult=1.0, lin_ftrs=list(lin_ftrs), max_len=max_len)


class TargetRange(nn.Module):
    """fastai's ``SigmoidRange`` with one ``(low, high)`` per output, kept as buffers (saved with
    the weights, moved with ``.to()``): bounds each regression output to its training range."""

    def __init__(self, low: Sequence[float], high: Sequence[float]) -> None:
        super().__init__()
        self.register_buffer("low", torch.tensor(list(low), dtype=torch.float32))
        self.register_buffer("high", torch.tensor(list(high), dtype=torch.float32))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(x) * (self.high - self.low) + self.low


def add_target_range(model: nn.Module, spec: RegressionSpec) -> None:
    """Append the regression output bounds to a classifier network's head (in place)."""
    low, high = spec.output_range()
    model[1].layers.append(TargetRange(low, high))


def _model_from_meta(vocab_size: int, n_out: int, meta: dict[str, Any]) -> torch.nn.Module:
    """The architecture a model's metadata (``config.json``) describes, with fresh weights."""
    model = build_classifier_model(vocab_size, n_out, arch=meta["arch"], seq_len=meta["seq_len"],
                                   max_len=meta["max_len"], lin_ftrs=meta["lin_ftrs"], drop_mult=meta.get("drop_mult", 0.5))
    if meta.get("task") == "regression":
        add_target_range(model, target_spec_from_dict(meta["targets"]))
    return model


class TextModel:
    """A trained AWD-LSTM text model: the network, its vocab, output names and metadata.

    Subclasses add what their targets mean: :class:`MultiLabelClassifier` (here),
    :class:`~ulmfit_ml.heads.MultiCategoryClassifier` and :class:`~ulmfit_ml.heads.TextRegressor`.
    """

    task = "multilabel"

    def __init__(self, model: torch.nn.Module, vocab: list[str], labels: list[str], *, meta: dict[str, Any],
                 history: pd.DataFrame | None = None, tokenizer: TextTokenizer | None = None) -> None:
        self.tokenizer = tokenizer if tokenizer is not None else TextTokenizer()  # what the vocab's tokens come from
        self.model = model
        self.vocab = list(vocab)
        self.labels = list(labels)
        self.meta = dict(meta)
        self.history = history if history is not None else pd.DataFrame()
        self.batch_losses = np.zeros(0, dtype=np.float32)  # per-batch training losses (set by train_classifier)
        self._o2i = {t: i for i, t in enumerate(self.vocab)}

    @property
    def n_out(self) -> int:
        """Outputs of the network (labels, categories of every column, or targets)."""
        return len(self.labels)

    # ------------------------------------------------------------------ inference
    @property
    def device(self) -> torch.device:
        return next(iter(self.model.parameters()), torch.empty(0)).device  # a quantized model may have none

    def to(self, device: str | torch.device) -> "MultiLabelClassifier":
        """Move the model (e.g. ``clf.to("cpu")`` after GPU training)."""
        self.model.to(resolve_device(device))
        return self

    def _numericalize(self, tokens: list[list[str]]) -> list[torch.Tensor]:
        o2i = self._o2i
        ids = [torch.tensor([o2i.get(t, 0) for t in toks] or [0], dtype=torch.long) for toks in tokens]
        if self.meta.get("backwards"):  # trained on reversed texts (fastai's reverse_text)
            ids = [x.flip(0) for x in ids]
        return ids

    @torch.no_grad()
    def predict_logits(self, texts: Sequence[str], *, bs: int = 128) -> np.ndarray:
        """Raw logits ``(n_texts, n_labels)``, float32.

        Texts are tokenised with fastai's pipeline, sorted by length and padded in chunks as
        fastai's ``SortedDL`` + ``pad_input_chunk`` do, so batches waste little padding.
        """
        from fastai.text.data import pad_input_chunk

        check_bs(bs)
        texts = check_texts(texts)
        n = len(texts)
        out = np.zeros((n, self.n_out), dtype=np.float32)
        if n == 0:
            return out
        ids = self._numericalize(self.tokenizer(texts))
        order = np.argsort([-len(x) for x in ids], kind="stable")
        was_training = self.model.training
        self.model.eval()
        dev = self.device
        seq_len = int(self.meta["seq_len"])
        try:
            for s in range(0, n, bs):
                idx = order[s:s + bs]
                batch = pad_input_chunk([(ids[i],) for i in idx], pad_idx=1, pad_first=True, seq_len=seq_len)
                x = torch.stack([b[0] for b in batch]).to(dev)
                logits = self.model(x)[0]
                out[idx] = logits.float().cpu().numpy()
        finally:
            self.model.train(was_training)
        return out

    def quantized(self) -> "TextModel":
        """A CPU copy for fast inference: the LSTMs and linear layers with dynamic int8 weights
        (``torch.ao.quantization.quantize_dynamic``); same labels, thresholds and tokens.

        fastai's ``WeightDropout`` re-sets the LSTM weights from a raw copy at every forward, which
        a quantized LSTM cannot take; at inference its dropout is off, so each one is replaced
        by its plain ``nn.LSTM`` first. The copy predicts but cannot be saved (save the float model).
        """
        from fastai.text.models.awdlstm import WeightDropout

        # a fresh copy (fastai's dropout-set weights cannot be deep-copied)
        model = _model_from_meta(len(self.vocab), self.n_out, self.meta)
        model.load_state_dict({k: v.detach().cpu() for k, v in self.model.state_dict().items()})
        model.eval()
        for rnns in [m.rnns for m in model.modules() if hasattr(m, "rnns")]:
            for i, wd in enumerate(rnns):
                if isinstance(wd, WeightDropout):
                    lstm = wd.module
                    for name in wd.layer_names:
                        delattr(lstm, name)
                        lstm.register_parameter(name, torch.nn.Parameter(getattr(wd, f"{name}_raw").detach().clone()))
                    lstm.flatten_parameters()
                    rnns[i] = lstm
        qmodel = torch.ao.quantization.quantize_dynamic(model, {torch.nn.LSTM, torch.nn.Linear}, dtype=torch.qint8)
        out = copy.copy(self)  # same class, labels, thresholds, spec
        out.model, out.meta = qmodel, {**self.meta, "quantized": "int8-dynamic"}
        if hasattr(self, "thresholds"):
            out.thresholds = self.thresholds.copy()
        return out

    # ------------------------------------------------------------------ persistence
    def save(self, path: str | Path, *, overwrite: bool = False, inputs: Sequence[str | Path] = ()) -> Path:
        """Write the model directory atomically (safetensors weights + JSON); see :func:`save_classifier`.

        ``overwrite`` replaces only a directory ulmfit_ml wrote (it carries ``.ulmfit_ml.json``),
        never the current directory or one that holds any of ``inputs``; anything else raises
        ``FileExistsError`` and nothing is deleted.
        """
        return save_classifier(self, path, overwrite=overwrite, inputs=inputs)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({len(self.labels)} {self._what}, vocab={len(self.vocab)}, device={self.device})"

    _what = "outputs"


class MultiLabelClassifier(MultiLabelPredictorMixin, TextModel):
    """A trained multi-label text classifier.

    ``predict_proba(texts)`` returns ``(n_texts, n_labels)`` probabilities in the order of
    ``labels``; ``predict(texts)`` the label lists above the per-label ``thresholds``.
    """

    task = "multilabel"
    _what = "labels"

    def __init__(self, model: torch.nn.Module, vocab: list[str], labels: list[str], *, meta: dict[str, Any],
                 thresholds: np.ndarray | None = None, history: pd.DataFrame | None = None,
                 valid_data: tuple[np.ndarray, np.ndarray] | None = None, tokenizer: TextTokenizer | None = None) -> None:
        super().__init__(model, vocab, labels, meta=meta, history=history, tokenizer=tokenizer)
        self.thresholds = check_thresholds(0.5 if thresholds is None else thresholds, len(self.labels), name="thresholds")
        self._valid = valid_data  # (y_true, probs) of the validation split, for tune_thresholds

    def predict_proba(self, texts: Sequence[str], *, bs: int = 128) -> np.ndarray:
        """Probabilities ``(n_texts, n_labels)`` (sigmoid of the logits), columns = ``labels``."""
        logits = self.predict_logits(texts, bs=bs)
        return (1.0 / (1.0 + np.exp(-logits))).astype(np.float32)

    # predict, evaluate, report, tune_thresholds, output_table: see MultiLabelPredictorMixin (ulmfit_ml/base.py)


#: ``config.json`` ``"task"`` -> the model class :func:`load_classifier` rebuilds. The classes
#: of :mod:`ulmfit_ml.heads` add themselves (a registry, so this lower layer never imports them).
MODEL_KINDS: dict[str, type] = {"multilabel": MultiLabelClassifier}


def register_model_kind(task: str, cls: type) -> None:
    """Make :func:`load_classifier` rebuild models saved with ``"task": task`` as ``cls``."""
    MODEL_KINDS[task] = cls



def save_classifier(clf: Any, path: str | Path, *, overwrite: bool = False, inputs: Any = ()) -> Path:
    """Save a :class:`TextModel` (any task) to directory ``path`` atomically.

    A multi-label model's thresholds are checked first (one number in [0, 1] per label): a
    model that could not be loaded again never replaces a good one.
    """
    if clf.meta.get("quantized"):
        raise ValueError(f"Cannot save to {path}: this is a quantized copy for inference (clf.quantized()); save the "
                         "float model it was made from, and quantize again after loading.")
    multilabel = getattr(clf, "task", "multilabel") == "multilabel"
    try:
        thresholds = check_thresholds(clf.thresholds, len(clf.labels), name="clf.thresholds") if multilabel else None
    except (ValueError, TypeError) as e:
        raise ValueError(f"Cannot save to {path}: clf.thresholds is invalid ({e}) Set it to {len(clf.labels)} numbers "
                         "in [0, 1], one per label (or call clf.tune_thresholds()); nothing was written.") from e
    model = clf.model
    was_device = next(model.parameters()).device

    def write(tmp: Path) -> None:
        model.to("cpu")
        try:
            save_weights(model, tmp / "model.safetensors")
        finally:
            model.to(was_device)
        meta = {k: v for k, v in clf.meta.items()}
        write_json(tmp / "config.json", {"format_version": FORMAT_VERSION, "kind": "classifier",
                                         "weights_sha256": file_sha256(tmp / "model.safetensors"),
                                          "task": getattr(clf, "task", "multilabel"),
                                          "n_labels": len(clf.labels), "n_out": int(clf.n_out), "vocab_size": len(clf.vocab),
                                          "tokenizer": clf.tokenizer.save(tmp),
                                          "versions": versions(), **meta})
        write_json(tmp / "vocab.json", clf.vocab)
        write_json(tmp / "labels.json", clf.labels)
        if thresholds is not None:
            write_json(tmp / "thresholds.json", [float(t) for t in thresholds])
        if clf.history is not None and len(clf.history):
            clf.history.to_csv(tmp / "history.csv", index=False)

    return atomic_dir(path, write, overwrite=overwrite, kind="classifier", inputs=inputs)


#: config.json values the model is rebuilt from, and their types (checked at load).
_CONFIG_TYPES: dict[str, Any] = {"seq_len": int, "max_len": int, "lin_ftrs": list[int], "drop_mult": float,
                                 "text_col": str, "backwards": bool, "label_spec": dict, "arch": dict,
                                 "task": str, "targets": dict}


def _check_config_values(cfg: dict[str, Any], where: Path) -> None:
    """A tampered or hand-edited config.json fails here, naming the key, not inside fastai later."""
    for key, hint in _CONFIG_TYPES.items():
        if key in cfg:
            try:  # a saved file is written by ulmfit_ml: no number spelt as a string
                ok = isinstance(check_value(cfg[key], hint, name=key), str) or not isinstance(cfg[key], str)
            except TypeError:
                ok = False
            if not ok:
                raise ValueError(f"{where} has invalid architecture values: {key} = {cfg[key]!r} should be "
                                 f"{describe_type(hint)}, got {type(cfg[key]).__name__} (the file was edited or "
                                 "corrupted; save the model again).")
    for key, v in (cfg.get("arch") or {}).items():
        if key in ("emb_sz", "n_hid", "n_layers") and not (type(v) is int and v > 0):
            raise ValueError(f"{where} has invalid architecture values: arch.{key} = {v!r} should be a positive int.")
    for key in ("seq_len", "max_len"):
        if isinstance(cfg.get(key), int) and cfg[key] < 1:
            raise ValueError(f"{where}: {key} = {cfg[key]!r} should be >= 1.")


def _not_a_run_directory(path: Path) -> None:
    """A run directory (``ulmfit-ml train``/``cv``) holds its model in ``model/`` (or
    ``folds/*/model``): name that directory instead of failing on the run's own config.json."""
    cfg = path / "config.json"
    try:
        is_model = cfg.is_file() and read_json(cfg).get("kind") == "classifier"
    except (ValueError, AttributeError):  # corrupt / not a dict: the checks below name the file
        return
    if is_model:
        return
    inner = path / "model"
    if (inner / "config.json").is_file():
        raise FileNotFoundError(f"{path} is a run directory, not a model directory: its model is in {inner}. "
                                f"Load that: load_classifier({str(inner)!r}) (the CLI takes the run directory itself).")
    folds = sorted(path.glob("folds/fold*/model"))
    if folds:
        raise FileNotFoundError(f"{path} is a cv run directory: its fold models are in {folds[0].parent.parent}/fold*/model "
                                f"(e.g. load_classifier({str(folds[0])!r})); um.load_predictor({str(path)!r}) averages them.")


def load_classifier(path: str | Path, *, device: str | None = "cpu") -> Any:
    """Rebuild a saved model: a :class:`MultiLabelClassifier`, or for ``config.json``'s ``"task"``
    ``"multicategory"`` / ``"regression"`` a :class:`~ulmfit_ml.heads.MultiCategoryClassifier` /
    :class:`~ulmfit_ml.heads.TextRegressor`.

    Nothing is unpickled. Missing or corrupt files, weights that do not fit the saved
    architecture, and any file changed after saving (its sha256 differs from the one the
    directory's ``.ulmfit_ml.json`` recorded: :func:`~ulmfit_ml.manifest.verify_files`) raise
    with the file's name.
    """
    path = user_path(path)
    cfg, task = _read_model_config(path)
    vocab, labels, thresholds = _read_vocab_and_labels(path, cfg, task)
    _check_config_values(cfg, path / "config.json")
    model, weights_sha = _load_network(path, cfg, len(vocab), _n_out(path, cfg, labels, task))
    model.eval()
    model.to(resolve_device(device))
    history = _read_history(path)
    meta = {k: v for k, v in cfg.items()
            if k not in ("format_version", "kind", "n_labels", "n_out", "vocab_size", "tokenizer", "versions",
                         "weights_sha256")}
    tokenizer = TextTokenizer.load(cfg.get("tokenizer"), path)
    # last, after the checks that name a specific problem: every file against the sha256
    # recorded at save time (a swapped label name or a flipped "backwards" passes all of them)
    verify_files(path, "classifier", format_version=cfg.get("format_version", 0),
                 known={"model.safetensors": weights_sha} if weights_sha else None)
    if task != "multilabel":
        return MODEL_KINDS[task](model, vocab, labels, meta=meta, history=history, tokenizer=tokenizer)
    return MultiLabelClassifier(model, vocab, labels, meta=meta, thresholds=np.asarray(thresholds, dtype=np.float64),
                                history=history, tokenizer=tokenizer)


def _read_model_config(path: Path) -> tuple[dict[str, Any], str]:
    """``(config.json, task)`` of a model directory, refusing anything that is not one this
    ulmfit_ml can load (a run directory names the model directory inside it)."""
    if not path.is_dir():
        left = sorted(path.parent.glob(f".{path.name}.old-*")) if not path.exists() else []
        hint = f" An interrupted save left the previous model at {left[-1]}: rename it to {path}." if left else ""
        raise FileNotFoundError(f"No model directory at {path}.{hint}")
    _not_a_run_directory(path)
    cfg = read_json(path / "config.json")
    if not isinstance(cfg, dict) or cfg.get("kind") != "classifier":
        raise ValueError(f"{path / 'config.json'} is not a ulmfit_ml classifier config.")
    if cfg.get("format_version", 0) > FORMAT_VERSION:
        raise ValueError(f"{path} was saved by a newer ulmfit_ml (format {cfg['format_version']}); upgrade ulmfit_ml.")
    task = cfg.get("task", "multilabel")  # models saved before other tasks existed are multi-label
    if task not in MODEL_KINDS:
        raise ValueError(f"{path / 'config.json'} has task={task!r}; this ulmfit_ml knows {sorted(MODEL_KINDS)}.")
    return cfg, task


def _read_vocab_and_labels(path: Path, cfg: dict[str, Any], task: str) -> tuple[list[str], list[str], Any]:
    """``(vocab, labels, thresholds)`` (``None`` unless multi-label), checked against config.json."""
    vocab = read_json(path / "vocab.json")
    labels = read_json(path / "labels.json")
    thresholds = read_json(path / "thresholds.json") if task == "multilabel" else None
    if not isinstance(vocab, list) or not all(isinstance(t, str) for t in vocab):
        raise ValueError(f"{path / 'vocab.json'} must hold a list of strings.")
    if len(vocab) != cfg.get("vocab_size"):
        raise ValueError(f"{path / 'vocab.json'} lists {len(vocab)} tokens but config.json says vocab_size="
                         f"{cfg.get('vocab_size')}: the files come from different models.")
    if not isinstance(labels, list) or len(labels) != cfg.get("n_labels") or not all(isinstance(x, str) for x in labels) \
            or len(set(labels)) != len(labels):
        raise ValueError(f"{path / 'labels.json'} must list {cfg.get('n_labels')} distinct label names (config.json n_labels).")
    if task == "multilabel" and (not isinstance(thresholds, list) or len(thresholds) != len(labels) or not all(
            isinstance(t, (int, float)) and not isinstance(t, bool) and 0 <= t <= 1 for t in thresholds)):
        raise ValueError(f"{path / 'thresholds.json'} must hold {len(labels)} numbers in [0, 1] (one per label).")
    return vocab, labels, thresholds


def _n_out(path: Path, cfg: dict[str, Any], labels: list[str], task: str) -> int:
    """The network's outputs: one per label, or as the saved target spec says (other tasks)."""
    if task == "multilabel":
        return len(labels)
    try:
        spec = target_spec_from_dict(cfg.get("targets"))
    except ValueError as e:
        raise ValueError(f"{path / 'config.json'}: {e} (the file was edited or corrupted; save the model again)") from e
    if spec.columns != labels:
        raise ValueError(f"{path / 'labels.json'} lists {labels} but config.json's targets are {spec.columns}: "
                         "the files come from different models.")
    return spec.n_out


def _load_network(path: Path, cfg: dict[str, Any], vocab_size: int, n_out: int) -> tuple[nn.Module, str | None]:
    """The network rebuilt from config.json with the saved weights; ``(network, weights sha256)``
    (the sha256 is ``None`` for models saved before checksums existed)."""
    try:
        model = _model_from_meta(vocab_size, n_out, cfg)
    except KeyError as e:
        raise ValueError(f"{path / 'config.json'} lacks the key {e}.") from e
    except (TypeError, ValueError) as e:
        raise ValueError(f"{path / 'config.json'} has invalid architecture values ({type(e).__name__}: {e}).") from e
    load_weights(model, path / "model.safetensors")  # unreadable or misshapen weights: its own message
    want = cfg.get("weights_sha256")  # models saved before checksums existed have none
    weights_sha = file_sha256(path / "model.safetensors") if want is not None else None
    if want is not None and weights_sha != want:
        raise ValueError(f"{path / 'model.safetensors'} does not match the checksum stored in config.json: the "
                         "weights were changed or corrupted after saving. Restore the file or save the model again.")
    return model, weights_sha


def _read_history(path: Path) -> pd.DataFrame | None:
    """The saved training table (informational), if any."""
    try:
        return pd.read_csv(path / "history.csv") if (path / "history.csv").exists() else None
    except (ValueError, UnicodeDecodeError) as e:  # pandas' ParserError/EmptyDataError are ValueErrors
        raise ValueError(f"Model file {path / 'history.csv'} is corrupt ({type(e).__name__}: {e}); delete it "
                         "(it is informational) to load the model.") from e
