"""Stage 3: the multi-label classifier (gradual unfreezing, discriminative learning rates) and
the :class:`MultiLabelClassifier` object that predicts, evaluates, tunes thresholds and saves."""
from __future__ import annotations

import json
import tempfile
import time
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import pandas as pd
import torch

from ._train import history_frame, quiet_mode, resolve_device, seed_everything, use_fp16
from .base import MultiLabelPredictorMixin
from .config import ClassifierConfig, config_to_dict, merge_config, resolve_arch, scale_dropouts
from .data import MultiLabelData, tokenize_texts
from .io import check_bs
from .lm import LanguageModel, load_lm
from .losses import make_loss
from .metrics import epoch_metrics
from .runs import checkpoint_callback, load_checkpoint, restore_rng_states, resumable_save_model_callback
from .thresholds import check_thresholds

__all__ = ["MultiLabelClassifier", "train_classifier", "build_classifier_learner", "clas_arch_config",
           "build_classifier_model"]


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


class MultiLabelClassifier(MultiLabelPredictorMixin):
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
        self.batch_losses = np.zeros(0, dtype=np.float32)  # per-batch training losses (set by train_classifier)
        self._o2i = {t: i for i, t in enumerate(self.vocab)}

    # ------------------------------------------------------------------ inference
    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

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

    # predict, evaluate, report, tune_thresholds: see MultiLabelPredictorMixin (ulmfit_ml/base.py)

    # ------------------------------------------------------------------ interpretation
    def explain(self, texts: Sequence[str], labels: str | Sequence[str] | None = None, *,
                method: str = "grad_x_input", n_steps: int = 32) -> pd.DataFrame:
        """Per-token attributions on each label's own logit; see :func:`ulmfit_ml.explain.explain`."""
        from .explain import explain

        return explain(self, texts, labels, method=method, n_steps=n_steps)

    def explain_html(self, texts: Sequence[str], labels: str | Sequence[str] | None = None, *,
                     method: str = "grad_x_input", n_steps: int = 32) -> str:
        """Colour-highlighted tokens per (text, label); see :func:`ulmfit_ml.explain.explain_html`."""
        from .explain import explain_html

        return explain_html(self, texts, labels, method=method, n_steps=n_steps)

    # ------------------------------------------------------------------ persistence
    def save(self, path: str | Path, *, overwrite: bool = False, inputs: Sequence[str | Path] = ()) -> Path:
        """Write the model directory atomically (safetensors weights + JSON); see :mod:`ulmfit_ml.persist`.

        ``overwrite`` replaces only a directory ulmfit_ml wrote (it carries ``.ulmfit_ml.json``),
        never the current directory or one that holds any of ``inputs``; anything else raises
        ``FileExistsError`` and nothing is deleted.
        """
        from .persist import save_classifier

        return save_classifier(self, path, overwrite=overwrite, inputs=inputs)

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


def _stage_history(learn: Any, name: str, first_epoch: int) -> pd.DataFrame:
    """The recorder's table of the current stage; epochs skipped on resume (fastai's
    ``SkipToEpoch``) leave empty rows, which are dropped."""
    rec = learn.recorder
    rec.values = [v for v in rec.values if len(v)]
    return history_frame(learn, name, start_epoch=first_epoch) if rec.values else pd.DataFrame()


def _open_checkpoint(data: MultiLabelData, cfg: ClassifierConfig, checkpoint_dir: str | Path | None,
                     resume: bool) -> tuple[dict[str, Any] | None, dict[str, Any]]:
    """Load the checkpoint to resume from (checked against this config and data) and the info
    every new checkpoint records."""
    volatile = ("quiet", "device", "fp16")  # may change between the run and its resumption
    conf = {k: v for k, v in config_to_dict(cfg).items() if k not in volatile}
    if checkpoint_dir is None and not resume:  # no checkpoints: skip hashing every text
        return None, {}
    info = {"config": conf, "data_sha256": data.fingerprint()["sha256"]}
    if not resume:
        return None, info
    if checkpoint_dir is None:
        raise ValueError("resume=True needs checkpoint_dir= (the directory the interrupted run saved its checkpoints to).")
    ckpt = load_checkpoint(checkpoint_dir)
    if ckpt is None:
        return None, info
    old = ckpt.get("config", {})
    diff = sorted(k for k in set(conf) | set(old) if json.dumps(conf.get(k)) != json.dumps(old.get(k)))
    if diff:
        raise ValueError(f"The checkpoint in {checkpoint_dir} was made with other classifier options {diff}: "
                         "resume with the same config, or delete the checkpoint to start over.")
    if ckpt.get("data_sha256") != info["data_sha256"]:
        raise ValueError(f"The checkpoint in {checkpoint_dir} was made on other data (or another split): "
                         "resume with the same data, or delete the checkpoint to start over.")
    return ckpt, info


def _restore_checkpoint(learn: Any, ckpt: dict[str, Any], *, with_opt: bool) -> None:
    """Model weights (and optimizer state) and RNG states of a checkpoint, into ``learn``."""
    t = ckpt["tensors"]
    learn.model.load_state_dict(t["model"])
    if with_opt and "opt" in t:
        if learn.opt is None:
            learn.create_opt()
        learn.opt.load_state_dict(t["opt"])
    restore_rng_states(learn, ckpt)


def build_classifier_learner(data: MultiLabelData, encoder: LanguageModel | str | Path | None, cfg: ClassifierConfig, *,
                             arch: str | dict[str, Any] = "cpu", device: torch.device | None = None,
                             metrics: list | None = None, path: Path | None = None
                             ) -> tuple[Any, LanguageModel | None, list[str], dict[str, Any]]:
    """The fastai classifier ``Learner`` of :func:`train_classifier` (also used by ``lr_find``).

    Returns ``(learn, lm, vocab, arch)``: the learner with the encoder weights loaded (not
    yet frozen), the resolved language model (or ``None``), its vocab and AWD-LSTM sizes.
    """
    from fastai.text.learner import text_classifier_learner
    from fastai.text.models.awdlstm import AWD_LSTM

    device = resolve_device(cfg.device) if device is None else device
    lm = _resolve_encoder(encoder)
    if lm is not None:
        vocab, arch_cfg = lm.vocab, lm.arch
    else:
        arch_cfg = resolve_arch(arch)
        vocab = _vocab_from_data(data, 2, 30000)
    seed_everything(cfg.seed)
    backwards = bool(lm.backwards) if lm is not None else False  # a backward LM's encoder reads reversed texts
    dls = data.classifier_dataloaders(vocab, bs=cfg.bs, seq_len=cfg.seq_len, device=device, backwards=backwards)
    loss = make_loss(cfg.loss, y_train=data.y_train, pos_weight=cfg.pos_weight, cap=cfg.pos_weight_cap,
                     gamma=cfg.focal_gamma, device=device)
    kw = {"path": path} if path is not None else {}
    learn = text_classifier_learner(dls, AWD_LSTM, seq_len=cfg.seq_len,
                                    config=scale_dropouts(clas_arch_config(arch_cfg), cfg.drop_mult),
                                    pretrained=False, drop_mult=1.0, n_out=data.n_labels,
                                    lin_ftrs=list(cfg.lin_ftrs), max_len=cfg.max_len, loss_func=loss,
                                    metrics=metrics or [], wd=cfg.wd, **kw)
    if lm is not None:
        try:
            learn.model[0].module.load_state_dict(lm.encoder_state_dict)
        except RuntimeError as e:
            raise ValueError(f"The encoder's weights do not fit the classifier: {e}") from e
    return learn, lm, list(vocab), arch_cfg


def train_classifier(data: MultiLabelData, *, encoder: LanguageModel | str | Path | None = None,
                     config: ClassifierConfig | None = None, arch: str | dict[str, Any] = "cpu",
                     checkpoint_dir: str | Path | None = None, resume: bool = False,
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
        checkpoint_dir: when set, the model, optimizer and RNG states are saved there after
            every completed epoch (see :func:`ulmfit_ml.runs.save_checkpoint`).
        resume: continue from the checkpoint in ``checkpoint_dir`` (completed stages and
            epochs are skipped, the one-cycle schedule goes on from the saved epoch); starts
            from scratch when there is no checkpoint yet. Same data, config and seed on CPU ->
            the same final weights as an uninterrupted run.

    Returns:
        :class:`MultiLabelClassifier`; its thresholds are tuned on ``data``'s validation split
        (``thresholds="per_label"``, the default, or ``"global"``), or 0.5 with ``thresholds="none"``.

    Raises:
        ValueError: ``resume`` without ``checkpoint_dir``, or a checkpoint made with another
            config or other data.
    """
    if not isinstance(data, MultiLabelData):
        raise TypeError(f"train_classifier expects a MultiLabelData, got {type(data).__name__}.")
    cfg = merge_config(ClassifierConfig, config, options)
    device = resolve_device(cfg.device)
    ckpt, ckpt_info = _open_checkpoint(data, cfg, checkpoint_dir, resume)
    learn, lm, vocab, arch_cfg = build_classifier_learner(
        data, encoder, cfg, arch=arch, device=device, metrics=epoch_metrics(),
        path=Path(checkpoint_dir) if checkpoint_dir is not None else Path(tempfile.mkdtemp(prefix="ulmfit_ml_")))
    dls = learn.dls
    if use_fp16(cfg.fp16, device):
        learn = learn.to_fp16()
    learn.freeze()
    hist = [pd.DataFrame(ckpt["history"])] if ckpt is not None and ckpt["history"] else []
    epoch = 0
    t0 = time.perf_counter()
    n_stages = len(cfg.unfreeze)
    restored = False
    batch_losses: list[float] = []  # fastai's recorder forgets them at the next fit / get_preds
    with quiet_mode(learn, cfg.quiet):
        for i, (k, ep, lr) in enumerate(zip(cfg.unfreeze, cfg.epochs, cfg.lrs)):
            if k == 0:
                learn.unfreeze()
            else:
                learn.freeze_to(-k)
            if not ep:
                continue
            start = 0
            if ckpt is not None and not restored:
                if (i, ep) <= (ckpt["stage"], ckpt["epoch"]):  # stage finished before the interruption
                    epoch += ep
                    continue
                start = ckpt["epoch"] if i == ckpt["stage"] else 0
                _restore_checkpoint(learn, ckpt, with_opt=start > 0)  # freeze_to cleared the optimizer at stage start
                restored = True
            lr_arg = lr if k == 1 else slice(lr / cfg.lr_div, lr)
            cbs = []
            tracker = None
            if cfg.save_best_by and i == n_stages - 1:
                best = ckpt.get("tracker_best") if ckpt is not None and start > 0 else None
                tracker = resumable_save_model_callback(monitor=cfg.save_best_by, comp=np.less if "loss" in cfg.save_best_by else np.greater,
                                                        fname="best", start_epoch=start, best=best)
                cbs.append(tracker)
            name = f"stage{i + 1}:" + ("all" if k == 0 else f"last{k}")
            if checkpoint_dir is not None:
                def info(learn: Any, _done: list = list(hist), _name: str = name, _off: int = epoch + start,
                         _tracker: Any = tracker) -> dict[str, Any]:
                    frames = _done + [_stage_history(learn, _name, _off)]
                    frames = [f for f in frames if len(f)]
                    return {**ckpt_info, "history": pd.concat(frames, ignore_index=True).to_dict(orient="records"),
                            "tracker_best": None if _tracker is None else float(_tracker.best)}
                cbs.append(checkpoint_callback(checkpoint_dir, stage=i, start_epoch=start, info=info,
                                               resume_state=ckpt["tensors"] if start > 0 else None))
            learn.fit_one_cycle(ep, lr_arg, moms=cfg.moms, cbs=cbs, start_epoch=start)
            batch_losses += [float(v) for v in learn.recorder.losses]
            hist.append(_stage_history(learn, name, epoch + start))
            hist = [f for f in hist if len(f)]
            epoch += ep
        if ckpt is not None and not restored:  # every epoch was done before the interruption
            _restore_checkpoint(learn, ckpt, with_opt=False)
            if cfg.save_best_by and (Path(checkpoint_dir) / "models" / "best.pth").exists():
                learn.load("best", with_opt=False)
    seconds = time.perf_counter() - t0
    history = pd.concat(hist, ignore_index=True) if hist else pd.DataFrame()
    with quiet_mode(learn, cfg.quiet):
        probs, targs = learn.get_preds(dl=dls.valid)
    learn.model.float()
    meta = {
        "arch": {k: arch_cfg[k] for k in ("emb_sz", "n_hid", "n_layers")},
        "seq_len": cfg.seq_len, "max_len": cfg.max_len, "lin_ftrs": list(cfg.lin_ftrs), "drop_mult": cfg.drop_mult,
        "text_col": data.text_col, "label_spec": data.spec.to_dict(),
        "config": config_to_dict(cfg), "train_seconds": seconds,
        "encoder": "language_model" if lm is not None else "random",
        "backwards": bool(lm.backwards) if lm is not None else False,
    }
    clf = MultiLabelClassifier(learn.model, vocab, data.labels, meta=meta, history=history, learner=learn,
                               valid_data=(targs.numpy().astype(np.float32), probs.float().numpy()))
    clf.batch_losses = np.asarray(batch_losses, dtype=np.float32)
    if cfg.thresholds != "none":
        clf.tune_thresholds(strategy=cfg.thresholds)
    return clf
