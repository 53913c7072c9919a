"""Stage 3: the multi-label classifier (gradual unfreezing, discriminative learning rates) and
the :class:`MultiLabelClassifier` object that predicts, evaluates, tunes thresholds and saves."""
from __future__ import annotations

import tempfile
import time
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import pandas as pd
import torch

from ._train import history_frame, quiet_mode, resolve_device, seed_everything, use_fp16
from .config import ClassifierConfig, config_to_dict, merge_config, resolve_arch
from .data import LabelSpec, MultiLabelData, check_columns, parse_label_matrix, tokenize_texts, validate_texts
from .lm import LanguageModel, load_lm
from .losses import make_loss
from .metrics import MultiLabelReport, epoch_metrics, multilabel_report
from .thresholds import apply_thresholds, check_thresholds, tune_thresholds

__all__ = ["MultiLabelClassifier", "train_classifier", "clas_arch_config", "build_classifier_model"]


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

    return get_text_classifier(AWD_LSTM, vocab_size, n_out, seq_len=seq_len, config=clas_arch_config(arch),
                               drop_mult=drop_mult, lin_ftrs=list(lin_ftrs), max_len=max_len)


class MultiLabelClassifier:
    """A trained multi-label text classifier.

    ``predict_proba(texts)`` returns ``(n_texts, n_labels)`` probabilities in the order of
    ``labels``; ``predict(texts)`` the label lists above the per-label ``thresholds``.
    """

    def __init__(self, model: torch.nn.Module, vocab: list[str], labels: list[str], *, meta: dict[str, Any],
                 thresholds: np.ndarray | None = None, history: pd.DataFrame | None = None,
                 learner: Any = None, valid_data: tuple[np.ndarray, np.ndarray] | None = None) -> None:
        self.model = model
        self.vocab = list(vocab)
        self.labels = list(labels)
        self.meta = dict(meta)
        self.thresholds = check_thresholds(0.5 if thresholds is None else thresholds, len(self.labels))
        self.history = history if history is not None else pd.DataFrame()
        self.learner = learner
        self._valid = valid_data  # (y_true, probs) of the validation split, for tune_thresholds
        self._o2i = {t: i for i, t in enumerate(self.vocab)}

    # ------------------------------------------------------------------ inference
    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def to(self, device: str | torch.device) -> "MultiLabelClassifier":
        """Move the model (e.g. ``clf.to("cpu")`` after GPU training)."""
        self.model.to(resolve_device(device))
        return self

    def _check_texts(self, texts: Any) -> list[str]:
        if isinstance(texts, str):
            raise TypeError("Pass a list of texts, not a single string: clf.predict([text]).")
        if isinstance(texts, pd.DataFrame):
            raise TypeError("Pass a list or Series of texts, e.g. clf.predict_proba(df['text']), not a DataFrame.")
        texts = list(texts)
        bad = [i for i, t in enumerate(texts) if not isinstance(t, str)]
        if bad:
            raise TypeError(f"{len(bad)} text(s) are not strings (first at position {bad[0]}: {texts[bad[0]]!r}); "
                            "convert or drop them first.")
        return texts

    def _numericalize(self, tokens: list[list[str]]) -> list[torch.Tensor]:
        o2i = self._o2i
        return [torch.tensor([o2i.get(t, 0) for t in toks] or [0], dtype=torch.long) for toks in tokens]

    @torch.no_grad()
    def predict_logits(self, texts: Sequence[str], *, bs: int = 128) -> np.ndarray:
        """Raw logits ``(n_texts, n_labels)``, float32.

        Texts are tokenised with fastai's pipeline, sorted by length and padded in chunks as
        fastai's ``SortedDL`` + ``pad_input_chunk`` do, so batches waste little padding.
        """
        from fastai.text.data import pad_input_chunk

        texts = self._check_texts(texts)
        n = len(texts)
        out = np.zeros((n, len(self.labels)), dtype=np.float32)
        if n == 0:
            return out
        ids = self._numericalize(tokenize_texts(texts))
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

    def predict_proba(self, texts: Sequence[str], *, bs: int = 128) -> np.ndarray:
        """Probabilities ``(n_texts, n_labels)`` (sigmoid of the logits), columns = ``labels``."""
        logits = self.predict_logits(texts, bs=bs)
        return (1.0 / (1.0 + np.exp(-logits))).astype(np.float32)

    def predict(self, texts: Sequence[str], *, threshold: float | Sequence[float] | None = None,
                at_least_one: bool = False, bs: int = 128) -> list[list[str]]:
        """Label lists, one per text, using the stored per-label thresholds (or ``threshold``).

        ``at_least_one``: when no label passes, predict the most probable one.
        """
        probs = self.predict_proba(texts, bs=bs)
        pred = apply_thresholds(probs, self.thresholds if threshold is None else threshold, at_least_one=at_least_one)
        return [[self.labels[j] for j in np.flatnonzero(row)] for row in pred]

    # ------------------------------------------------------------------ evaluation
    def _labelled(self, df: pd.DataFrame) -> tuple[list[str], np.ndarray]:
        text_col = self.meta["text_col"]
        spec = LabelSpec.from_dict(self.meta["label_spec"])
        check_columns(df, [text_col] + spec.columns)
        if len(df) == 0:
            raise ValueError("The DataFrame is empty: nothing to evaluate.")
        keep = validate_texts(df[text_col], col=text_col)
        df = df.loc[keep]
        y, _ = parse_label_matrix(df, spec, self.labels)
        return df[text_col].tolist(), y

    def report(self, df: pd.DataFrame | None = None, *, threshold: float | Sequence[float] | None = None
               ) -> MultiLabelReport:
        """Full :class:`~ulmfit_ml.metrics.MultiLabelReport` on a labelled frame (same columns
        as the training frame), or on the validation split when ``df`` is None."""
        y, probs = self._y_probs(df)
        return multilabel_report(y, probs, self.thresholds if threshold is None else threshold, labels=self.labels)

    def evaluate(self, df: pd.DataFrame | None = None, *, threshold: float | Sequence[float] | None = None
                 ) -> dict[str, float]:
        """Summary metrics (micro/macro F1, ROC-AUC, ...) on a labelled frame, as a dict."""
        return dict(self.report(df, threshold=threshold).summary)

    def _y_probs(self, df: pd.DataFrame | None) -> tuple[np.ndarray, np.ndarray]:
        if df is None:
            if self._valid is None:
                raise ValueError("No validation predictions are stored (a loaded model keeps none): pass a labelled DataFrame.")
            return self._valid
        texts, y = self._labelled(df)
        return y, self.predict_proba(texts)

    def tune_thresholds(self, df: pd.DataFrame | None = None, *, strategy: str = "per_label",
                        min_positives: int = 5) -> np.ndarray:
        """Choose thresholds maximising F1 on the validation split (or ``df``); stores and returns them.

        ``strategy="global"`` (one threshold, best macro-F1) or ``"per_label"`` (each label's
        best F1; labels with fewer than ``min_positives`` positives keep the global one).
        """
        y, probs = self._y_probs(df)
        self.thresholds = tune_thresholds(y, probs, strategy=strategy, min_positives=min_positives)
        return self.thresholds.copy()

    # ------------------------------------------------------------------ persistence
    def save(self, path: str | Path, *, overwrite: bool = False) -> Path:
        """Write the model directory atomically (safetensors weights + JSON); see :mod:`ulmfit_ml.persist`."""
        from .persist import save_classifier

        return save_classifier(self, path, overwrite=overwrite)

    def __repr__(self) -> str:
        return f"MultiLabelClassifier({len(self.labels)} labels, vocab={len(self.vocab)}, device={self.device})"


# ---------------------------------------------------------------------- training
def _resolve_encoder(encoder: LanguageModel | str | Path | None) -> LanguageModel | None:
    if encoder is None or isinstance(encoder, LanguageModel):
        return encoder
    if isinstance(encoder, (str, Path)):
        return load_lm(encoder)
    raise TypeError(f"encoder must be a LanguageModel, a saved LM directory or None, got {type(encoder).__name__}.")


def _vocab_from_data(data: MultiLabelData, min_freq: int, max_vocab: int) -> list[str]:
    from collections import Counter

    from fastai.text.data import make_vocab

    return list(make_vocab(Counter(t for toks in data.tokens for t in toks), min_freq=min_freq, max_vocab=max_vocab))


def train_classifier(data: MultiLabelData, *, encoder: LanguageModel | str | Path | None = None,
                     config: ClassifierConfig | None = None, arch: str | dict[str, Any] = "cpu",
                     **options: Any) -> MultiLabelClassifier:
    """Train a multi-label AWD-LSTM classifier on ``data``'s training split.

    Args:
        data: a :class:`~ulmfit_ml.data.MultiLabelData`.
        encoder: the fine-tuned :class:`~ulmfit_ml.lm.LanguageModel` (or its saved
            directory); its vocab and encoder weights are used. ``None`` trains from a randomly
            initialised encoder of size ``arch`` with a vocab built from ``data`` (an ablation).
        config: a :class:`~ulmfit_ml.config.ClassifierConfig`; keyword ``options`` override
            its fields (``epochs``, ``lrs``, ``unfreeze``, ``pos_weight``, ``loss``,
            ``device``, ``quiet`` ...).

    Returns:
        :class:`MultiLabelClassifier` with thresholds 0.5 (see ``tune_thresholds``).
    """
    from fastai.callback.tracker import SaveModelCallback
    from fastai.text.learner import text_classifier_learner
    from fastai.text.models.awdlstm import AWD_LSTM

    if not isinstance(data, MultiLabelData):
        raise TypeError(f"train_classifier expects a MultiLabelData, got {type(data).__name__}.")
    cfg = merge_config(ClassifierConfig, config, options)
    device = resolve_device(cfg.device)
    lm = _resolve_encoder(encoder)
    if lm is not None:
        vocab, arch_cfg = lm.vocab, lm.arch
    else:
        arch_cfg = resolve_arch(arch)
        vocab = _vocab_from_data(data, 2, 30000)
    seed_everything(cfg.seed)
    dls = data.classifier_dataloaders(vocab, bs=cfg.bs, seq_len=cfg.seq_len, device=device)
    loss = make_loss(cfg.loss, y_train=data.y_train, pos_weight=cfg.pos_weight, cap=cfg.pos_weight_cap,
                     gamma=cfg.focal_gamma, device=device)
    metrics = epoch_metrics()
    workdir = Path(tempfile.mkdtemp(prefix="ulmfit_ml_"))
    learn = text_classifier_learner(dls, AWD_LSTM, seq_len=cfg.seq_len, config=clas_arch_config(arch_cfg),
                                    pretrained=False, drop_mult=cfg.drop_mult, n_out=data.n_labels,
                                    lin_ftrs=list(cfg.lin_ftrs), max_len=cfg.max_len, loss_func=loss,
                                    metrics=metrics, wd=cfg.wd, path=workdir)
    if lm is not None:
        try:
            learn.model[0].module.load_state_dict(lm.encoder_state_dict)
        except RuntimeError as e:
            raise ValueError(f"The encoder's weights do not fit the classifier: {e}") from e
    if use_fp16(cfg.fp16, device):
        learn = learn.to_fp16()
    learn.freeze()
    hist = []
    epoch = 0
    t0 = time.perf_counter()
    n_stages = len(cfg.unfreeze)
    with quiet_mode(learn, cfg.quiet):
        for i, (k, ep, lr) in enumerate(zip(cfg.unfreeze, cfg.epochs, cfg.lrs)):
            if k == 0:
                learn.unfreeze()
            else:
                learn.freeze_to(-k)
            if not ep:
                continue
            lr_arg = lr if k == 1 else slice(lr / cfg.lr_div, lr)
            cbs = []
            if cfg.save_best_by and i == n_stages - 1:
                cbs.append(SaveModelCallback(monitor=cfg.save_best_by, comp=np.less if "loss" in cfg.save_best_by else np.greater,
                                             fname="best", with_opt=False))
            learn.fit_one_cycle(ep, lr_arg, moms=cfg.moms, cbs=cbs)
            hist.append(history_frame(learn, f"stage{i + 1}:" + ("all" if k == 0 else f"last{k}"), start_epoch=epoch))
            epoch += ep
    seconds = time.perf_counter() - t0
    history = pd.concat(hist, ignore_index=True) if hist else pd.DataFrame()
    probs, targs = learn.get_preds(dl=dls.valid)
    learn.model.float()
    meta = {
        "arch": {k: arch_cfg[k] for k in ("emb_sz", "n_hid", "n_layers")},
        "seq_len": cfg.seq_len, "max_len": cfg.max_len, "lin_ftrs": list(cfg.lin_ftrs), "drop_mult": cfg.drop_mult,
        "text_col": data.text_col, "label_spec": data.spec.to_dict(),
        "config": config_to_dict(cfg), "train_seconds": seconds,
        "encoder": "language_model" if lm is not None else "random",
    }
    return MultiLabelClassifier(learn.model, vocab, data.labels, meta=meta, history=history, learner=learn,
                                valid_data=(targs.numpy().astype(np.float32), probs.float().numpy()))
