"""Stage 2: AWD-LSTM language models (fine-tuning on the task's texts, pretraining on a corpus).

``finetune_lm`` follows ULMFiT: start from general-domain weights (fastai's WikiText-103
download, local weights, or a model from :func:`pretrain_lm`), train the new embeddings and
head first while the LSTM is frozen, then unfreeze, all with one-cycle schedules. The result
is a :class:`LanguageModel` holding the encoder and vocab that :func:`train_classifier` uses.
"""
from __future__ import annotations

import math
import pickle
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from ._train import history_frame, quiet_mode, resolve_device, seed_everything, use_fp16
from .config import LMConfig, config_to_dict, merge_config, resolve_arch, scale_dropouts
from .data import MultiLabelData

__all__ = ["LanguageModel", "finetune_lm", "load_lm", "lm_arch_config", "build_lm_learner", "PRETRAINED_MODELS",
           "pretrained_model_dir"]


def lm_arch_config(arch: str | dict[str, Any]) -> dict[str, Any]:
    """fastai's ``awd_lstm_lm_config`` with the sizes of ``arch``."""
    from fastai.text.models.awdlstm import awd_lstm_lm_config

    cfg = dict(awd_lstm_lm_config)
    cfg.update(resolve_arch(arch))
    return cfg


class LanguageModel:
    """A trained AWD-LSTM language model: vocab, weights and how it was trained.

    Attributes:
        vocab: token list (index = id).
        arch: the resolved AWD-LSTM config (sizes and dropouts).
        state_dict: full LM weights (encoder ``0.*`` and decoder ``1.*``) on CPU.
        history: per-epoch table (loss, accuracy, perplexity).
        metrics: final validation loss / accuracy / perplexity and timings.
        learner: the fastai ``LMLearner`` (in memory after training, ``None`` after loading).
    """

    def __init__(self, vocab: list[str], arch: dict[str, Any], state_dict: dict[str, torch.Tensor], *,
                 backwards: bool = False, history: pd.DataFrame | None = None, metrics: dict[str, float] | None = None,
                 config: dict[str, Any] | None = None, learner: Any = None) -> None:
        self.vocab = list(vocab)
        self.arch = dict(arch)
        self.state_dict = state_dict
        self.backwards = backwards
        self.history = history if history is not None else pd.DataFrame()
        self.metrics = dict(metrics or {})
        self.config = dict(config or {})
        self.learner = learner
        self.batch_losses = np.zeros(0, dtype=np.float32)  # per-batch training losses (set by training)

    @property
    def encoder_state_dict(self) -> dict[str, torch.Tensor]:
        """The AWD-LSTM encoder weights (keys without the ``0.`` prefix)."""
        return {k[2:]: v for k, v in self.state_dict.items() if k.startswith("0.")}

    def save(self, path: str | Path, *, overwrite: bool = False, half: bool = False) -> Path:
        """Write ``lm.safetensors`` + JSON (vocab, arch, metrics) atomically to directory ``path``
        (``half``: float16 weights, half the size)."""
        from .persist import save_lm

        return save_lm(self, path, overwrite=overwrite, half=half)

    def __repr__(self) -> str:
        ppl = self.metrics.get("perplexity")
        return (f"LanguageModel(vocab={len(self.vocab)}, emb_sz={self.arch['emb_sz']}, n_hid={self.arch['n_hid']}, "
                f"n_layers={self.arch['n_layers']}" + (f", valid perplexity={ppl:.1f})" if ppl else ")"))


def load_lm(path: str | Path) -> LanguageModel:
    """Load a :class:`LanguageModel` saved with :meth:`LanguageModel.save` (no pickle)."""
    from .persist import load_lm as _load

    return _load(path)


# ---------------------------------------------------------------------- pretrained weights
#: General-domain language models shipped inside the package (``pretrained="NAME"``), each with
#: a forward and a backward direction; ``ulmfit_ml/pretrained/NAME/MODEL_CARD.md`` says how
#: each was made (corpus, tokens seen, held-out perplexity, licences).
PRETRAINED_MODELS: dict[str, str] = {
    "en-small": "AWD-LSTM (arch 'cpu': emb 200, hidden 512, 2 layers), 12k-token vocab, pretrained on ~20M words "
                "of English Wikipedia and movie reviews",
}
_PRETRAINED_ROOT = Path(__file__).resolve().parent / "pretrained"

_PRETRAINED_HELP = (
    f"Alternatives: pretrained='en-small' (shipped with ulmfit_ml, offline), pretrained='path/to/dir' (a language model saved by ulmfit_ml, or a folder "
    "with fastai's .pth weights and .pkl vocab), um.pretrain_lm(corpus) to pretrain your own "
    "on a general-domain corpus, or pretrained=False to train from scratch."
)


class _VocabUnpickler(pickle.Unpickler):
    """Only lets a fastai vocab pickle (a list of str) through: no classes, no code."""

    def find_class(self, module: str, name: str):  # noqa: D401
        raise pickle.UnpicklingError(f"refusing to load {module}.{name} from a vocab file (only lists of strings are allowed)")


def _read_fastai_pretrained(dir_or_prefix: Path) -> tuple[dict[str, torch.Tensor], list[str]]:
    """fastai's ``.pth`` + ``.pkl`` pair, read safely (``weights_only`` torch load, restricted unpickler)."""
    p = Path(dir_or_prefix)
    if p.is_dir():
        pths, pkls = sorted(p.glob("*.pth")), sorted(p.glob("*.pkl"))
    else:
        pths, pkls = [p.with_suffix(".pth")], [p.with_suffix(".pkl")]
    if not pths or not pkls or not pths[0].exists() or not pkls[0].exists():
        raise FileNotFoundError(f"No fastai weights (.pth) and vocab (.pkl) found at {p}. {_PRETRAINED_HELP}")
    try:
        wgts = torch.load(pths[0], map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001
        raise ValueError(f"Could not read weights {pths[0]}: {e}") from e
    if isinstance(wgts, dict) and "model" in wgts:
        wgts = wgts["model"]
    with open(pkls[0], "rb") as f:
        try:
            vocab = _VocabUnpickler(f).load()
        except Exception as e:  # noqa: BLE001
            raise ValueError(f"Could not read vocab {pkls[0]}: {e}") from e
    if not isinstance(vocab, list) or not all(isinstance(t, str) for t in vocab):
        raise ValueError(f"Vocab file {pkls[0]} does not hold a list of strings.")
    return wgts, vocab


def pretrained_model_dir(name: str, *, backwards: bool = False) -> Path:
    """The directory of a shipped language model (``name`` a key of :data:`PRETRAINED_MODELS`)."""
    if name not in PRETRAINED_MODELS:
        raise ValueError(f"Unknown pretrained model {name!r}: shipped ones are {sorted(PRETRAINED_MODELS)}. "
                         f"{_PRETRAINED_HELP}")
    d = _PRETRAINED_ROOT / name / ("backward" if backwards else "forward")
    if not (d / "lm.safetensors").exists():
        raise FileNotFoundError(f"The shipped model {name!r} ({'backward' if backwards else 'forward'}) is missing "
                                f"from this installation ({d}); reinstall ulmfit_ml. {_PRETRAINED_HELP}")
    return d


def _download_wt103(backwards: bool) -> Path:
    """fastai's WikiText-103 AWD-LSTM (forward or backward), downloaded once and cached."""
    from fastai.data.external import URLs, untar_data

    url = URLs.WT103_BWD if backwards else URLs.WT103_FWD
    try:
        return Path(untar_data(url, c_key="model"))
    except Exception as e:  # noqa: BLE001 - any network/IO failure gets the same advice
        raise RuntimeError(f"Could not download fastai's pretrained WikiText-103 weights from {url} ({type(e).__name__}: {e}). "
                           f"{_PRETRAINED_HELP}") from e


def _pretrained_weights(pretrained: bool | str | Path, arch: dict[str, Any], backwards: bool
                        ) -> tuple[dict[str, torch.Tensor], list[str]] | None:
    """Load the starting weights and their vocab, or ``None`` for a from-scratch model."""
    if pretrained is False or pretrained is None:
        return None
    if pretrained is True:
        paper = resolve_arch("paper")
        if any(arch[k] != paper[k] for k in paper):
            raise ValueError(
                f"pretrained=True loads fastai's WikiText-103 weights, which only fit arch='paper' {paper}; got "
                f"{ {k: arch[k] for k in paper} }. Use arch='paper', or a smaller arch with pretrained=False or a "
                "language model you pretrained with um.pretrain_lm.")
        return _read_fastai_pretrained(_download_wt103(backwards))
    if isinstance(pretrained, str) and pretrained in PRETRAINED_MODELS:
        lm = load_lm(pretrained_model_dir(pretrained, backwards=backwards))
        sizes = {k: lm.arch[k] for k in ("emb_sz", "n_hid", "n_layers")}
        if any(arch[k] != v for k, v in sizes.items()):
            raise ValueError(f"pretrained={pretrained!r} (the default) is an AWD-LSTM with arch {sizes}, but this run asks "
                             f"for { {k: arch[k] for k in sizes} }: leave arch at 'cpu', or pass pretrained=False to "
                             "train this size from scratch.")
        return dict(lm.state_dict), lm.vocab
    p = Path(pretrained)
    if not p.exists() and not p.with_suffix(".pth").exists():
        raise FileNotFoundError(f"pretrained={str(pretrained)!r} does not exist. {_PRETRAINED_HELP}")
    if p.is_dir() and (p / "lm.safetensors").exists():
        lm = load_lm(p)
        sizes = {k: lm.arch[k] for k in ("emb_sz", "n_hid", "n_layers")}
        if any(arch[k] != v for k, v in sizes.items()):
            raise ValueError(f"The language model at {p} has arch {sizes}, but this run asks for "
                             f"{ {k: arch[k] for k in sizes} }: pass arch={sizes}.")
        return dict(lm.state_dict), lm.vocab
    return _read_fastai_pretrained(p)


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


# ---------------------------------------------------------------------- training
def build_lm_learner(dls: Any, cfg: LMConfig, *, start: tuple[dict[str, torch.Tensor], list[str]] | None = None,
                     metrics: list | None = None) -> Any:
    """fastai's ``language_model_learner`` for AWD-LSTM of size ``cfg.arch``, starting from
    ``start`` weights (re-mapped to this vocab) when given. Used by training and ``lr_find``."""
    from fastai.text.learner import language_model_learner
    from fastai.text.models.awdlstm import AWD_LSTM

    arch = lm_arch_config(cfg.arch)
    learn = language_model_learner(dls, AWD_LSTM, config=scale_dropouts(arch, cfg.drop_mult), drop_mult=1.0,
                                   pretrained=False, metrics=metrics or [], wd=cfg.wd)
    if start is not None:
        _load_into(learn, *start)
    return learn


def _fit_lm(dls: Any, cfg: LMConfig, *, start: tuple[dict[str, torch.Tensor], list[str]] | None,
            device: torch.device) -> LanguageModel:
    from fastai.metrics import Perplexity, accuracy

    arch = lm_arch_config(cfg.arch)
    learn = build_lm_learner(dls, cfg, start=start, metrics=[accuracy, Perplexity()])
    if use_fp16(cfg.fp16, device):
        learn = learn.to_fp16()
    frozen = cfg.frozen_epochs if cfg.frozen_epochs is not None else (1 if start is not None else 0)
    # ULMFiT's 2e-3 fine-tunes pretrained weights; a model trained from scratch needs a larger
    # rate (measured on the demo data: perplexity 27 with 1e-2 vs 200+ with 2e-3 after 6 epochs).
    lr = cfg.lr if cfg.lr is not None else (2e-3 if start is not None else 1e-2)
    hist = []
    batch_losses: list[float] = []
    t0 = time.perf_counter()
    with quiet_mode(learn, cfg.quiet):
        if frozen:
            learn.freeze()
            learn.fit_one_cycle(frozen, lr * 10, moms=cfg.moms)
            batch_losses += [float(v) for v in learn.recorder.losses]
            hist.append(history_frame(learn, "frozen"))
        learn.unfreeze()
        if cfg.epochs:
            learn.fit_one_cycle(cfg.epochs, lr, moms=cfg.moms)
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
    vocab = list(dls.vocab)
    learn.model.float()
    lm = LanguageModel(vocab, arch, state, backwards=cfg.backwards, history=history, metrics=metrics,
                       config=config_to_dict(cfg), learner=learn)
    lm.batch_losses = np.asarray(batch_losses, dtype=np.float32)
    return lm


def finetune_lm(data: MultiLabelData, *, config: LMConfig | None = None, **options: Any) -> LanguageModel:
    """Fine-tune an AWD-LSTM language model on all texts of ``data`` (+ its ``extra_texts``).

    Args:
        data: a :class:`~ulmfit_ml.data.MultiLabelData`.
        config: an :class:`~ulmfit_ml.config.LMConfig`; keyword ``options`` override its fields
            (``epochs``, ``arch``, ``pretrained``, ``lr``, ``bs``, ``seq_len``, ``drop_mult``,
            ``device``, ``fp16``, ``quiet``, ``seed`` ...).

    Returns:
        :class:`LanguageModel` (vocab + encoder for :func:`~ulmfit_ml.train_classifier`).

    Raises:
        RuntimeError: ``pretrained=True`` and the WikiText-103 download failed (the message
            names the alternatives).
    """
    if not isinstance(data, MultiLabelData):
        raise TypeError(f"finetune_lm expects a MultiLabelData (um.MultiLabelData.from_df(...)), got {type(data).__name__}.")
    cfg = merge_config(LMConfig, config, options)
    device = resolve_device(cfg.device)
    arch = lm_arch_config(cfg.arch)
    start = _pretrained_weights(cfg.pretrained, arch, cfg.backwards)
    seed_everything(cfg.seed)
    dls = data.lm_dataloaders(bs=cfg.bs, seq_len=cfg.seq_len, min_freq=cfg.min_freq, max_vocab=cfg.max_vocab,
                              backwards=cfg.backwards, seed=cfg.seed, device=device)
    return _fit_lm(dls, cfg, start=start, device=device)
