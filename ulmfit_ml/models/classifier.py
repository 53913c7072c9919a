"""The trained models: :class:`TextModel` (an AWD-LSTM classifier network with its vocab and
metadata: batched inference, int8 copies, safe save) and :class:`MultiLabelClassifier`, which
predicts, evaluates, tunes thresholds and saves itself; :func:`load_classifier` rebuilds any
saved model (the multi-category and regression models of :mod:`ulmfit_ml.models.heads` register their
``task`` here). No model holds a fastai ``Learner``: training (:mod:`ulmfit_ml.training.trainer`)
produces them, as scikit-learn's fitted estimators and setfit's ``modeling.py`` / ``trainer.py`` split do.

A classifier directory holds::

    model.safetensors   weights (safetensors: tensors only, no code)
    config.json         format version, architecture, sequence lengths, text/label columns, versions
    vocab.json          token list (index = id)
    labels.json         label names (column order of predict_proba); category / target columns
    thresholds.json     per-label decision thresholds (multi-label only)
    history.csv         per-epoch training table (informational)
    .ulmfit_ml.json     the ownership marker, with the sha256 of every file (checked at load;
                        see :mod:`ulmfit_ml.utils.persist`)
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import copy

import numpy as np
import pandas as pd
import torch

from .base import MultiLabelPredictorMixin
from ..utils.arch import resolve_arch, scale_dropouts
from ..utils.persist import (FORMAT_VERSION, atomic_dir, file_sha256, read_json, save_weights, versions,
                      write_json)
from ..utils.runtime import resolve_device
from ..evaluation.thresholds import check_thresholds
from ..data.tokens import TextTokenizer
from ..utils.validation import check_bs, check_texts

__all__ = ["TextModel", "MultiLabelClassifier", "save_classifier", "build_classifier_model", "model_from_meta",
           "clas_arch_config"]


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


def model_from_meta(vocab_size: int, n_out: int, meta: dict[str, Any]) -> torch.nn.Module:
    """The architecture a model's metadata (``config.json``) describes, with fresh weights (the
    model class's :meth:`TextModel.prepare_network` adds what its kind needs)."""
    return build_classifier_model(vocab_size, n_out, arch=meta["arch"], seq_len=meta["seq_len"],
                                  max_len=meta["max_len"], lin_ftrs=meta["lin_ftrs"], drop_mult=meta.get("drop_mult", 0.5))


class TextModel:
    """A trained AWD-LSTM text model: the network, its vocab, output names and metadata.

    Subclasses add what their targets mean: :class:`MultiLabelClassifier` (here),
    :class:`~ulmfit_ml.models.heads.MultiCategoryClassifier` and :class:`~ulmfit_ml.models.heads.TextRegressor`.
    """

    task = "multilabel"
    thresholded = False  #: predictions are probabilities cut at per-label thresholds (multi-label)
    headline_metrics: tuple[str, ...] = ()  #: the report's figures a run's log ends with

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

    # ------------------------------------------------------------------ what a kind adds (the model side of the
    # target-kind seam: training, save and load call these; MultiLabelClassifier and the models of heads.py override)
    @classmethod
    def prepare_network(cls, network: torch.nn.Module, meta: dict[str, Any]) -> None:
        """Anything the kind's network needs besides the saved architecture (regression: its output range)."""

    @classmethod
    def saved_n_out(cls, path: Path, meta: dict[str, Any], labels: list[str]) -> int:
        """The network's outputs, from a model directory's ``config.json`` and labels."""
        return len(labels)

    @classmethod
    def read_saved(cls, path: Path, labels: list[str]) -> dict[str, Any]:
        """The kind's own files of a model directory, as keyword arguments of the constructor."""
        return {}

    def extra_json_files(self) -> dict[str, Any]:
        """The kind's own files to save (file name -> JSON value), checked before anything is written."""
        return {}

    def after_training(self, config: Any) -> None:
        """What training does once the network is trained (multi-label: tune the thresholds)."""

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
        model = model_from_meta(len(self.vocab), self.n_out, self.meta)
        type(self).prepare_network(model, self.meta)
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
    def weight_arrays(self) -> dict[str, np.ndarray]:
        """The network's state as named arrays (a predictor's fingerprint: :func:`~ulmfit_ml.inference.predict.predict_file`)."""
        return {k: v.detach().cpu().contiguous().numpy() for k, v in self.model.state_dict().items()}

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
    thresholded = True
    headline_metrics = ("f1_micro", "f1_macro", "roc_auc_macro")
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

    @classmethod
    def read_saved(cls, path: Path, labels: list[str]) -> dict[str, Any]:
        """``thresholds.json``: one number in [0, 1] per label."""
        thresholds = read_json(path / "thresholds.json")
        if not isinstance(thresholds, list) or len(thresholds) != len(labels) or not all(
                isinstance(t, (int, float)) and not isinstance(t, bool) and 0 <= t <= 1 for t in thresholds):
            raise ValueError(f"{path / 'thresholds.json'} must hold {len(labels)} numbers in [0, 1] (one per label).")
        return {"thresholds": np.asarray(thresholds, dtype=np.float64)}

    def extra_json_files(self) -> dict[str, Any]:
        try:
            t = check_thresholds(self.thresholds, len(self.labels), name="clf.thresholds")
        except (ValueError, TypeError) as e:
            raise ValueError(f"clf.thresholds is invalid ({e}) Set it to {len(self.labels)} numbers in [0, 1], one per "
                             "label (or call clf.tune_thresholds())") from e
        return {"thresholds.json": [float(x) for x in t]}

    def after_training(self, config: Any) -> None:
        """Thresholds tuned on the validation split, as ``config.threshold_strategy`` says (``"none"``: 0.5)."""
        if config.threshold_strategy != "none":
            self.tune_thresholds(strategy=config.threshold_strategy)

    # predict, evaluate, report, tune_thresholds, output_table: see MultiLabelPredictorMixin (ulmfit_ml/base.py)


def save_classifier(clf: Any, path: str | Path, *, overwrite: bool = False, inputs: Any = ()) -> Path:
    """Save a :class:`TextModel` (any task) to directory ``path`` atomically.

    A multi-label model's thresholds are checked first (one number in [0, 1] per label): a
    model that could not be loaded again never replaces a good one.
    """
    if clf.meta.get("quantized"):
        raise ValueError(f"Cannot save to {path}: this is a quantized copy for inference (clf.quantized()); save the "
                         "float model it was made from, and quantize again after loading.")
    try:
        extra = clf.extra_json_files()  # multi-label: thresholds.json, checked first
    except (ValueError, TypeError) as e:
        raise ValueError(f"Cannot save to {path}: {e}; nothing was written.") from e
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
                                          "task": clf.task,
                                          "n_labels": len(clf.labels), "n_out": int(clf.n_out), "vocab_size": len(clf.vocab),
                                          "tokenizer": clf.tokenizer.save(tmp),
                                          "versions": versions(), **meta})
        write_json(tmp / "vocab.json", clf.vocab)
        write_json(tmp / "labels.json", clf.labels)
        for name, obj in extra.items():
            write_json(tmp / name, obj)
        if clf.history is not None and len(clf.history):
            clf.history.to_csv(tmp / "history.csv", index=False)

    return atomic_dir(path, write, overwrite=overwrite, kind="classifier", inputs=inputs)
