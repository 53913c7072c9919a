"""ULMFiT stage 3: train the classifier (gradual unfreezing, discriminative learning rates,
one-cycle) on top of a fine-tuned language model's encoder.

:class:`ClassifierTrainer` owns the fastai ``Learner`` (``trainer.learner``: ``lr_find``, the
throughput bench); :meth:`ClassifierTrainer.train` returns the model for the data's task, which
holds no Learner: a :class:`~ulmfit_ml.models.classifier.MultiLabelClassifier` (multi-label 0/1 targets), a
:class:`~ulmfit_ml.models.heads.MultiCategoryClassifier` (category columns: one softmax head each,
the sum of their cross-entropies as loss) or a :class:`~ulmfit_ml.models.heads.TextRegressor`
(numeric targets: standardised, MSE or Huber loss, outputs bounded to the training range).
"""
from __future__ import annotations

import dataclasses
import json
import tempfile
import time
import warnings
from collections import Counter
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from .schedule import classifier_epochs, count_tokens
from .checkpoint import checkpoint_callback, load_checkpoint, restore_rng_states, resumable_save_model_callback
from ..utils.arch import resolve_arch, scale_dropouts
from ..utils.config import ClassifierConfig, config_to_dict, merge_config
from ..data.core import MultiLabelData
from ..utils.distrib import distributed_ctx, init_distributed, is_main, local_only, rank
from ..models.lm import LanguageModel, resolve_encoder
from ..models.classifier import TextModel, clas_arch_config
from ..models.registry import MODEL_KINDS
from ..utils.runtime import fit_one_cycle_checked, history_frame, progress_mode, resolve_device, seed_everything, use_fp16

__all__ = ["ClassifierTrainer", "train_classifier"]


def _vocab_from_data(data: MultiLabelData, min_freq: int, max_vocab: int) -> list[str]:
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


class ClassifierTrainer:
    """Trains a classifier on ``data``'s training split; :meth:`train` returns the model.

    Building the trainer resolves the encoder, makes the classifier ``DataLoaders`` and the
    fastai ``Learner`` (``self.learner``) with the encoder weights loaded (not yet frozen).
    Arguments are those of :func:`train_classifier`.

    Attributes:
        learner: the fastai ``Learner``.
        lm: the resolved :class:`~ulmfit_ml.models.lm.LanguageModel` (``None``: random encoder).
        vocab: the token list the classifier reads.
        arch: the AWD-LSTM sizes and dropouts.
    """

    def __init__(self, data: MultiLabelData, *, encoder: LanguageModel | str | Path | None = None,
                 config: ClassifierConfig | None = None, arch: str | dict[str, Any] = "cpu",
                 checkpoint_dir: str | Path | None = None, resume: bool = False, **options: Any) -> None:
        from fastai.text.learner import text_classifier_learner
        from fastai.text.models.awdlstm import AWD_LSTM

        if not isinstance(data, MultiLabelData):
            raise TypeError(f"train_classifier expects a MultiLabelData, got {type(data).__name__}.")
        self.data = data
        self.config = cfg = merge_config(ClassifierConfig, config, options)
        init_distributed()  # a launched multi-process run (torchrun): join its group, pin this rank's GPU
        self.device = resolve_device(cfg.device)
        self.checkpoint_dir = checkpoint_dir
        self.resume = resume
        self.lm = lm = resolve_encoder(encoder)
        if lm is not None:
            if lm.tokenizer.name != data.config.tokenizer:
                raise ValueError(f"The encoder reads {lm.tokenizer.name!r} tokens but the data tokenises with "
                                 f"{data.config.tokenizer!r}: build the data with tokenizer={lm.tokenizer.name!r}.")
            data.use_tokenizer(lm.tokenizer)  # the encoder's vocab is made of its tokenizer's tokens
            self.vocab, self.arch = list(lm.vocab), lm.arch
        else:
            self.arch = resolve_arch(arch)
            self.vocab = _vocab_from_data(data, 2, 30000)
        if cfg.epochs is None:  # by size; the config the model records (and a resume checks) holds the number
            train = [t for t, valid in zip(data.tokens, data.is_valid) if not valid]
            epochs = classifier_epochs(count_tokens(train), n_texts=len(train), bs=cfg.bs)
            self.config = cfg = dataclasses.replace(cfg, epochs=(epochs,))
        self._ckpt, self._ckpt_info = _open_checkpoint(data, cfg, checkpoint_dir, resume)
        seed_everything(cfg.seed)
        backwards = bool(lm.backwards) if lm is not None else False  # a backward LM's encoder reads reversed texts
        dls = data.classifier_dataloaders(self.vocab, bs=cfg.bs, seq_len=cfg.seq_len, device=self.device,
                                          backwards=backwards)
        _warn_long_texts(data, cfg.max_len)
        loss = data.spec.make_loss(data.y_train, cfg, device=self.device)  # the kind's loss and epoch metrics
        metrics = data.spec.epoch_metrics()
        if checkpoint_dir is not None:
            path = Path(checkpoint_dir)
        elif is_main():
            path = Path(tempfile.mkdtemp(prefix="ulmfit_ml_"))
        else:  # only rank 0 writes (fastai's save_model skips the other ranks): nothing is made here
            path = Path(tempfile.gettempdir()) / f"ulmfit_ml_rank{rank()}"
        self.learner = text_classifier_learner(
            dls, AWD_LSTM, seq_len=cfg.seq_len, config=scale_dropouts(clas_arch_config(self.arch), cfg.drop_mult),
            pretrained=False, drop_mult=1.0, n_out=data.n_out, lin_ftrs=list(cfg.lin_ftrs), max_len=cfg.max_len,
            loss_func=loss, metrics=metrics, wd=cfg.wd, path=path)
        data.spec.finish_network(self.learner.model)  # regression: the output range
        if lm is not None:
            try:
                self.learner.model[0].module.load_state_dict(lm.encoder_state_dict)
            except RuntimeError as e:
                raise ValueError(f"The encoder's weights do not fit the classifier: {e}") from e

    def train(self) -> TextModel:
        """Gradual unfreezing with discriminative rates and one-cycle; thresholds tuned on the
        validation split (``thresholds`` option). Resumes from the checkpoint when asked."""
        cfg, learn = self.config, self.learner
        dls = learn.dls
        if use_fp16(cfg.fp16, self.device):
            learn = self.learner = learn.to_fp16()
        learn.freeze()
        t0 = time.perf_counter()
        with distributed_ctx(learn), progress_mode(learn, cfg.quiet):
            hist, batch_losses = self._fit_stages(learn)
        seconds = time.perf_counter() - t0
        history = pd.concat(hist, ignore_index=True) if hist else pd.DataFrame()
        # outside distributed_ctx and without fastai's gathering: every rank predicts the whole
        # validation set itself, in its order (the thresholds are tuned on it)
        with progress_mode(learn, cfg.quiet), local_only():
            probs, _ = learn.get_preds(dl=dls.valid)
        learn.model.float()
        clf = self._trained_model(learn, history, probs, seconds)
        clf.batch_losses = np.asarray(batch_losses, dtype=np.float32)
        return clf

    def _fit_stages(self, learn: Any) -> tuple[list[pd.DataFrame], list[float]]:
        """Every unfreezing stage in turn, skipping what the checkpoint to resume from already did;
        ``(history frames, batch losses)``."""
        cfg, ckpt = self.config, self._ckpt
        hist = [pd.DataFrame(ckpt["history"])] if ckpt is not None and ckpt["history"] else []
        epoch, restored = 0, False
        batch_losses: list[float] = []  # fastai's recorder forgets them at the next fit / get_preds
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
            name = f"stage{i + 1}:" + ("all" if k == 0 else f"last{k}")
            self._fit_stage(learn, i, name, start=start, offset=epoch + start, done=hist)
            batch_losses += [float(v) for v in learn.recorder.losses]
            hist.append(_stage_history(learn, name, epoch + start))
            hist = [f for f in hist if len(f)]
            epoch += ep
        if ckpt is not None and not restored:  # every epoch was done before the interruption
            _restore_checkpoint(learn, ckpt, with_opt=False)
            if cfg.save_best_by and (Path(self.checkpoint_dir) / "models" / "best.pth").exists():
                learn.load("best", with_opt=False)
        return hist, batch_losses

    def _fit_stage(self, learn: Any, i: int, name: str, *, start: int, offset: int, done: list[pd.DataFrame]) -> None:
        """One-cycle over stage ``i`` from its epoch ``start``, with the best-model tracker (last
        stage) and the epoch checkpoints (``offset``: the run's epoch of this stage's ``start``)."""
        cfg, ckpt = self.config, self._ckpt
        k, ep, lr = cfg.unfreeze[i], cfg.epochs[i], cfg.lrs[i]
        lr_arg = lr if k == 1 else slice(lr / cfg.lr_div, lr)
        cbs = []
        tracker = None
        if cfg.save_best_by and i == len(cfg.unfreeze) - 1:
            best = ckpt.get("tracker_best") if ckpt is not None and start > 0 else None
            lower = any(k in cfg.save_best_by for k in ("loss", "mae", "rmse"))
            tracker = resumable_save_model_callback(monitor=cfg.save_best_by, comp=np.less if lower else np.greater,
                                                    fname="best", start_epoch=start, best=best)
            cbs.append(tracker)
        if self.checkpoint_dir is not None:
            info = partial(_checkpoint_payload, info=self._ckpt_info, done=list(done), name=name, offset=offset,
                           tracker=tracker)
            cbs.append(checkpoint_callback(self.checkpoint_dir, stage=i, start_epoch=start, info=info,
                                           resume_state=ckpt["tensors"] if start > 0 else None))
        fit_one_cycle_checked(learn, ep, lr_arg, moms=cfg.moms, cbs=cbs, start_epoch=start, lr=lr,
                              lr_option=f"classifier.lrs[{i}]")

    def _trained_model(self, learn: Any, history: pd.DataFrame, probs: Any, seconds: float) -> TextModel:
        """The model of the data's task around ``learn.model``, with its validation outputs
        (multi-label: thresholds tuned on them)."""
        data, cfg = self.data, self.config
        meta = {
            "arch": {k: self.arch[k] for k in ("emb_sz", "n_hid", "n_layers")},
            "seq_len": cfg.seq_len, "max_len": cfg.max_len, "lin_ftrs": list(cfg.lin_ftrs), "drop_mult": cfg.drop_mult,
            "text_col": data.text_col, "task": data.task, data.spec.meta_key: data.spec.to_dict(),
            "config": config_to_dict(cfg), "train_seconds": seconds,
            "encoder": "language_model" if self.lm is not None else "random",
            "backwards": bool(self.lm.backwards) if self.lm is not None else False,
        }
        # the validation outputs (probabilities after the multi-label loss's sigmoid; raw outputs of the
        # other kinds' losses, which have no activation) against the targets in their own units
        clf: TextModel = MODEL_KINDS[data.task](learn.model, self.vocab, data.labels, meta=meta, history=history,
                                                valid_data=(data.y_valid, probs.float().numpy()), tokenizer=data.tokenizer)
        clf.after_training(cfg)  # multi-label: thresholds tuned on the validation split
        return clf


def _checkpoint_payload(learn: Any, *, info: dict[str, Any], done: list[pd.DataFrame], name: str, offset: int,
                        tracker: Any) -> dict[str, Any]:
    """What an epoch checkpoint records besides the tensors: ``info`` (config, data hash), the
    history so far (``done`` then this stage's epochs) and the best-model tracker's best value."""
    frames = done + [_stage_history(learn, name, offset)]
    frames = [f for f in frames if len(f)]
    return {**info, "history": pd.concat(frames, ignore_index=True).to_dict(orient="records"),
            "tracker_best": None if tracker is None else float(tracker.best)}


def _warn_long_texts(data: MultiLabelData, max_len: int) -> None:
    """fastai's ``SentenceEncoder`` reads a long text in ``seq_len`` chunks and pools only the
    outputs of its last ``max_len`` tokens; earlier tokens still feed the LSTM state, without
    gradient. Say how many texts that touches."""
    n_long = sum(len(t) > max_len for t in data.tokens)
    if n_long:
        warnings.warn(f"{n_long} of {len(data.tokens)} texts are longer than max_len={max_len} tokens: only their last "
                      f"{max_len} tokens' outputs are pooled (earlier tokens feed the LSTM state without gradient). "
                      "Raise max_len (memory grows with it) if the start of long texts matters.", UserWarning, stacklevel=3)


def train_classifier(data: MultiLabelData, *, encoder: LanguageModel | str | Path | None = None,
                     config: ClassifierConfig | None = None, arch: str | dict[str, Any] = "cpu",
                     checkpoint_dir: str | Path | None = None, resume: bool = False,
                     **options: Any) -> TextModel:
    """Train an AWD-LSTM classifier (or regressor) on ``data``'s training split.

    Args:
        data: a :class:`~ulmfit_ml.data.core.MultiLabelData`.
        encoder: the fine-tuned :class:`~ulmfit_ml.models.lm.LanguageModel` (or its saved
            directory); its vocab and encoder weights are used. ``None`` (or ``"random"``, the
            spelling of a config file's ``[run] encoder``) trains from a randomly initialised
            encoder of size ``arch`` with a vocab built from ``data`` (an ablation).
        config: a :class:`~ulmfit_ml.utils.config.ClassifierConfig`; keyword ``options`` override
            its fields (``epochs``, ``lrs``, ``unfreeze``, ``pos_weight``, ``loss``,
            ``device``, ``quiet`` ...).
        checkpoint_dir: when set, the model, optimizer and RNG states are saved there after
            every completed epoch (see :func:`ulmfit_ml.training.checkpoint.save_checkpoint`).
        resume: continue from the checkpoint in ``checkpoint_dir`` (completed stages and
            epochs are skipped, the one-cycle schedule goes on from the saved epoch); starts
            from scratch when there is no checkpoint yet. Same data, config and seed on CPU ->
            the same final weights as an uninterrupted run.

    Returns:
        For multi-label data a :class:`~ulmfit_ml.models.classifier.MultiLabelClassifier`; its thresholds are tuned on
        ``data``'s validation split (``threshold_strategy="per_label"``, the default, or ``"global"``), or 0.5 with
        ``threshold_strategy="none"``. For ``category_cols`` data a :class:`~ulmfit_ml.models.heads.MultiCategoryClassifier`,
        for ``target_cols`` data a :class:`~ulmfit_ml.models.heads.TextRegressor` (``regression_loss``: ``"mse"``
        or ``"huber"``). Texts longer than ``max_len`` tokens are pooled over their last ``max_len``
        tokens, with a warning giving their count.

    Raises:
        ValueError: ``resume`` without ``checkpoint_dir``, or a checkpoint made with another
            config or other data.
    """
    return ClassifierTrainer(data, encoder=encoder, config=config, arch=arch, checkpoint_dir=checkpoint_dir,
                             resume=resume, **options).train()
