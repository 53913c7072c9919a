"""ULMFiT stage 2: fine-tune a general-domain AWD-LSTM language model on the task's texts.

``finetune_lm`` follows ULMFiT: start from general-domain weights (the model shipped with
ulmfit_ml by default, fastai's WikiText-103 download, local weights, or one from
:func:`~ulmfit_ml.training.pretrain.pretrain_lm`), train the new embeddings and head first while the
LSTM is frozen, then unfreeze, all with one-cycle schedules. :class:`LMTrainer` owns the fastai
``Learner`` (``trainer.learner``, e.g. for ``lr_find``); the result is a
:class:`~ulmfit_ml.models.lm.LanguageModel`, which holds none.
"""
from __future__ import annotations

import dataclasses
import math
import time
from typing import Any

import numpy as np
import pandas as pd
import torch

from .schedule import count_tokens, lm_epochs
from ..utils.arch import scale_dropouts
from ..utils.config import LMConfig, config_to_dict, merge_config
from ..data.core import MultiLabelData
from ..utils.distrib import distributed_ctx, init_distributed
from ..models.lm import LanguageModel, lm_arch_config, pretrained_tokenizer, pretrained_weights
from ..utils.runtime import fit_one_cycle_checked, history_frame, progress_mode, resolve_device, seed_everything, use_fp16

__all__ = ["LMTrainer", "finetune_lm", "build_lm_learner", "lm_vocab", "extend_vocab"]


def lm_vocab(tokens: Any, *, min_freq: int, max_vocab: int, pretrained_vocab: list[str] | None = None) -> list[str]:
    """The fine-tuned LM's vocabulary: fastai's ``make_vocab`` over the texts' tokens, followed by
    every token of ``pretrained_vocab`` the texts did not bring (padded to a multiple of 8 as fastai does).

    Keeping the pretrained vocabulary is what lets a classifier trained on a few hundred texts read
    words only its test texts contain: a vocab built from 500 comments alone (about 1,000 tokens at
    ``min_freq=2``) turns everything else into ``xxunk`` and throws the general LM's embeddings of
    those words away (bench/RESULTS.md, "Small data"). ``max_vocab`` caps the tokens taken from the texts.
    """
    from collections import Counter

    from fastai.text.data import make_vocab

    vocab = [t for t in make_vocab(Counter(t for doc in tokens for t in doc), min_freq=min_freq, max_vocab=max_vocab)
             if t != "xxfake"]
    seen = set(vocab)
    for t in pretrained_vocab or ():
        if t not in seen and t != "xxfake":
            vocab.append(t)
            seen.add(t)
    return vocab + ["xxfake"] * (-len(vocab) % 8)


def extend_vocab(vocab: list[str], state: dict[str, torch.Tensor], start_state: dict[str, torch.Tensor],
                 start_vocab: list[str]) -> tuple[list[str], dict[str, torch.Tensor]]:
    """``pretrained_vocab="extend"``: a fine-tuned LM's ``(vocab, weights)`` with every token of the
    start model the texts did not bring appended, each with its pretrained row of every
    vocabulary-sized tensor (embedding, tied decoder, decoder bias).

    Fine-tuning then costs what a vocab of the texts' own tokens costs, while a classifier trained
    on a few hundred texts still reads the words only its test texts contain (a vocab of 500
    comments' tokens turns the rest into ``xxunk``; bench/RESULTS.md, "Small data").
    """
    have = set(vocab)
    rows = [i for i, t in enumerate(start_vocab) if t not in have and t != "xxfake" and not have.add(t)]
    if not rows:
        return list(vocab), state
    idx = torch.tensor(rows)
    out = dict(state)
    for k, v in state.items():
        sv = start_state.get(k)
        if sv is not None and v.shape[0] == len(vocab) and sv.shape[0] == len(start_vocab) and sv.shape[1:] == v.shape[1:]:
            out[k] = torch.cat([v, sv.detach().float().cpu()[idx].to(v.dtype)])
    return list(vocab) + [start_vocab[i] for i in rows], out


def _load_into(learn: Any, wgts: dict[str, torch.Tensor], old_vocab: list[str]) -> None:
    """fastai's ``LMLearner.load_pretrained`` without its pickle loads: re-map embeddings to the
    new vocab (``match_embeds``; unseen tokens get the mean embedding) and load in order."""
    from fastai.text.learner import _get_text_vocab, clean_raw_keys, load_ignore_keys, match_embeds

    wgts = match_embeds(dict(wgts), old_vocab, _get_text_vocab(learn.dls))
    try:
        own = learn.model.state_dict()
        if set(own) <= set(wgts):  # same key names (our own files): load by name
            learn.model.load_state_dict({k: wgts[k] for k in own}, strict=True)
        else:  # fastai's files: same tensors in the same order, older key names
            load_ignore_keys(learn.model, clean_raw_keys(wgts))
    except RuntimeError as e:
        raise ValueError(f"The pretrained weights do not fit this architecture: {e}") from e


def build_lm_learner(dls: Any, cfg: LMConfig, *, start: tuple[dict[str, torch.Tensor], list[str]] | None = None,
                     metrics: list | None = None) -> Any:
    """fastai's ``language_model_learner`` for AWD-LSTM of size ``cfg.arch``, starting from
    ``start`` weights (re-mapped to this vocab) when given."""
    from fastai.text.learner import language_model_learner
    from fastai.text.models.awdlstm import AWD_LSTM

    arch = lm_arch_config(cfg.arch)
    learn = language_model_learner(dls, AWD_LSTM, config=scale_dropouts(arch, cfg.drop_mult), drop_mult=1.0,
                                   pretrained=False, metrics=metrics or [], wd=cfg.wd)
    if start is not None:
        _load_into(learn, *start)
    return learn


class LMTrainer:
    """Fine-tunes a language model on ``data``'s texts; ``train()`` returns the :class:`LanguageModel`
    (as :meth:`ClassifierTrainer.train <ulmfit_ml.training.trainer.ClassifierTrainer.train>` returns the classifier).

    Building the trainer loads the pretrained weights, tokenises the texts and makes the fastai
    ``Learner`` (``self.learner``), so ``lr_find`` can run on it before (or instead of) ``train``.

    Args:
        data: a :class:`~ulmfit_ml.data.core.MultiLabelData`.
        config: an :class:`~ulmfit_ml.utils.config.LMConfig`; keyword ``options`` override its fields.
    """

    def __init__(self, data: MultiLabelData, *, config: LMConfig | None = None, **options: Any) -> None:
        from fastai.metrics import Perplexity, accuracy

        if not isinstance(data, MultiLabelData):
            raise TypeError(f"finetune_lm expects a MultiLabelData (um.MultiLabelData.from_df(...)), "
                            f"got {type(data).__name__}.")
        self.config = cfg = merge_config(LMConfig, config, options)
        init_distributed()  # a launched multi-process run (torchrun): join its group, pin this rank's GPU
        self.device = resolve_device(cfg.device)
        self.arch = lm_arch_config(cfg.arch)
        self.start = pretrained_weights(cfg.pretrained, self.arch, cfg.backwards)
        tok = pretrained_tokenizer(cfg.pretrained, cfg.backwards)
        if tok is not None and tok.name != data.config.tokenizer:
            raise ValueError(f"pretrained={cfg.pretrained!r} reads {tok.name!r} tokens but the data tokenises with "
                             f"{data.config.tokenizer!r}: build the data with tokenizer={tok.name!r}, or fine-tune from "
                             "scratch (pretrained=False) or from a language model pretrained with this tokenizer.")
        if tok is not None:  # fine-tuning keeps the pretrained model's pieces (its vocab is made of them)
            data.use_tokenizer(tok)
        self.tokenizer = data.tokenizer
        seed_everything(cfg.seed)
        vocab = None
        if self.start is not None and cfg.pretrained_vocab == "train":
            vocab = lm_vocab(data.lm_tokens(), min_freq=cfg.min_freq, max_vocab=cfg.max_vocab,
                             pretrained_vocab=self.start[1])
        if cfg.epochs is None:  # by size; the saved LM's config records the number
            self.config = cfg = dataclasses.replace(cfg, epochs=lm_epochs(count_tokens(data.lm_tokens())))
        self.dls = data.lm_dataloaders(bs=cfg.bs, seq_len=cfg.seq_len, min_freq=cfg.min_freq, max_vocab=cfg.max_vocab,
                                       backwards=cfg.backwards, seed=cfg.seed, device=self.device, vocab=vocab)
        self.learner = build_lm_learner(self.dls, cfg, start=self.start, metrics=[accuracy, Perplexity()])

    def train(self) -> LanguageModel:
        """Frozen epochs (new embeddings and head) then all layers, one-cycle; the trained model."""
        cfg, learn = self.config, self.learner
        if use_fp16(cfg.fp16, self.device):
            learn = self.learner = learn.to_fp16()
        frozen = cfg.frozen_epochs if cfg.frozen_epochs is not None else (1 if self.start is not None else 0)
        # ULMFiT's 2e-3 fine-tunes pretrained weights; a model trained from scratch needs a larger
        # rate (measured on the demo data: perplexity 27 with 1e-2 vs 200+ with 2e-3 after 6 epochs).
        lr = cfg.lr if cfg.lr is not None else (2e-3 if self.start is not None else 1e-2)
        hist = []
        batch_losses: list[float] = []
        t0 = time.perf_counter()
        with distributed_ctx(learn), progress_mode(learn, cfg.quiet):
            if frozen:
                learn.freeze()
                fit_one_cycle_checked(learn, frozen, lr * 10, moms=cfg.moms, lr=lr,
                                      lr_option="lm.lr (x10 in the frozen epochs)")
                batch_losses += [float(v) for v in learn.recorder.losses]
                hist.append(history_frame(learn, "frozen"))
            learn.unfreeze()
            if cfg.epochs:
                fit_one_cycle_checked(learn, cfg.epochs, lr, moms=cfg.moms, lr=lr, lr_option="lm.lr")
                batch_losses += [float(v) for v in learn.recorder.losses]
                hist.append(history_frame(learn, "unfrozen", start_epoch=frozen))
        seconds = time.perf_counter() - t0
        history = pd.concat(hist, ignore_index=True) if hist else pd.DataFrame()
        metrics: dict[str, float] = {"train_seconds": seconds, "lr": lr}
        if len(history):
            last = history.iloc[-1]
            metrics.update({"valid_loss": float(last["valid_loss"]), "accuracy": float(last.get("accuracy", np.nan)),
                            "perplexity": float(math.exp(min(float(last["valid_loss"]), 50)))})
        state = {k: v.detach().float().cpu().clone() for k, v in learn.model.state_dict().items()}
        learn.model.float()
        vocab = list(self.dls.vocab)
        if self.start is not None and cfg.pretrained_vocab == "extend":
            vocab, state = extend_vocab(vocab, state, *self.start)
        lm = LanguageModel(vocab, self.arch, state, backwards=cfg.backwards, history=history,
                           metrics=metrics, config=config_to_dict(cfg), tokenizer=self.tokenizer)
        lm.batch_losses = np.asarray(batch_losses, dtype=np.float32)
        return lm


def finetune_lm(data: MultiLabelData, *, config: LMConfig | None = None, **options: Any) -> LanguageModel:
    """Fine-tune an AWD-LSTM language model on all texts of ``data`` (+ its ``extra_texts``).

    Args:
        data: a :class:`~ulmfit_ml.data.core.MultiLabelData`.
        config: an :class:`~ulmfit_ml.utils.config.LMConfig`; keyword ``options`` override its fields
            (``epochs``, ``arch``, ``pretrained``, ``lr``, ``bs``, ``seq_len``, ``drop_mult``,
            ``device``, ``fp16``, ``quiet``, ``seed`` ...).

    Returns:
        :class:`~ulmfit_ml.models.lm.LanguageModel` (vocab + encoder for :func:`~ulmfit_ml.train_classifier`).

    Raises:
        RuntimeError: ``pretrained=True`` and the WikiText-103 download failed (the message
            names the alternatives).
    """
    return LMTrainer(data, config=config, **options).train()
