"""The language model: :class:`LanguageModel` (vocab, AWD-LSTM weights, how it was trained),
its safe save/load, and the general-domain weights a fine-tuning run starts from (the models
shipped with ulmfit_ml, fastai's WikiText-103 download, local files).

Training lives elsewhere: :mod:`ulmfit_ml.training.finetune` (ULMFiT fine-tuning on the task's texts) and
:mod:`ulmfit_ml.training.pretrain` (pretraining on a corpus) produce :class:`LanguageModel` objects.

A language-model directory holds ``lm.safetensors``, ``lm.json``, ``vocab.json`` (and
``history.csv``; ``tokenizer.model`` for a SentencePiece LM) plus the ownership marker.
"""
from __future__ import annotations

import pickle
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from ..utils.arch import resolve_arch
from ..utils.manifest import verify_files
from ..utils.persist import FORMAT_VERSION, atomic_dir, read_json, versions, write_json
from ..data.tokens import TextTokenizer
from ..utils.valuetypes import user_path

__all__ = ["LanguageModel", "load_lm", "save_lm", "lm_arch_config", "PRETRAINED_MODELS", "pretrained_model_dir",
           "pretrained_weights", "pretrained_tokenizer", "resolve_encoder", "lm_dir_of"]


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
        tokenizer: the :class:`~ulmfit_ml.data.tokens.TextTokenizer` its vocab comes from (spaCy words
            unless it was trained on SentencePiece pieces).
    """

    def __init__(self, vocab: list[str], arch: dict[str, Any], state_dict: dict[str, torch.Tensor], *,
                 backwards: bool = False, history: pd.DataFrame | None = None, metrics: dict[str, float] | None = None,
                 config: dict[str, Any] | None = None, tokenizer: TextTokenizer | None = None) -> None:
        self.tokenizer = tokenizer if tokenizer is not None else TextTokenizer()
        self.vocab = list(vocab)
        self.arch = dict(arch)
        self.state_dict = state_dict
        self.backwards = backwards
        self.history = history if history is not None else pd.DataFrame()
        self.metrics = dict(metrics or {})
        self.config = dict(config or {})
        self.batch_losses = np.zeros(0, dtype=np.float32)  # per-batch training losses (set by training)

    @property
    def encoder_state_dict(self) -> dict[str, torch.Tensor]:
        """The AWD-LSTM encoder weights (keys without the ``0.`` prefix)."""
        return {k[2:]: v for k, v in self.state_dict.items() if k.startswith("0.")}

    def save(self, path: str | Path, *, overwrite: bool = False, half: bool = False) -> Path:
        """Write ``lm.safetensors`` + JSON (vocab, arch, metrics) atomically to directory ``path``
        (``half``: float16 weights, half the size)."""
        return save_lm(self, path, overwrite=overwrite, half=half)

    def __repr__(self) -> str:
        ppl = self.metrics.get("perplexity")
        return (f"LanguageModel(vocab={len(self.vocab)}, emb_sz={self.arch['emb_sz']}, n_hid={self.arch['n_hid']}, "
                f"n_layers={self.arch['n_layers']}" + (f", valid perplexity={ppl:.1f})" if ppl else ")"))


# ---------------------------------------------------------------------- save / load
#: Tensors fastai's AWD-LSTM LM ties to ``0.encoder.weight``: not stored, restored on load.
_TIED_LM_KEYS = ("0.encoder_dp.emb.weight", "1.decoder.weight")


def save_lm(lm: LanguageModel, path: str | Path, *, overwrite: bool = False, half: bool = False) -> Path:
    """Save a :class:`~ulmfit_ml.models.lm.LanguageModel` (weights, vocab, arch) atomically.

    The tied copies of the embedding (:data:`_TIED_LM_KEYS`) are left out; ``half`` stores the
    weights as float16 (half the size, e.g. for the models shipped in the package; they load as
    float32).
    """
    from safetensors.torch import save_file

    dtype = torch.float16 if half else torch.float32

    def write(tmp: Path) -> None:
        save_file({k: v.detach().cpu().to(dtype).contiguous().clone() for k, v in lm.state_dict.items()
                   if k not in _TIED_LM_KEYS}, str(tmp / "lm.safetensors"))
        write_json(tmp / "lm.json", {"format_version": FORMAT_VERSION, "kind": "language_model", "arch": lm.arch,
                                      "backwards": lm.backwards, "metrics": lm.metrics, "config": lm.config,
                                      "vocab_size": len(lm.vocab), "dtype": str(dtype).replace("torch.", ""),
                                      "tokenizer": lm.tokenizer.save(tmp),
                                      "versions": versions()})
        write_json(tmp / "vocab.json", lm.vocab)
        if lm.history is not None and len(lm.history):
            lm.history.to_csv(tmp / "history.csv", index=False)

    return atomic_dir(path, write, overwrite=overwrite, kind="language_model")


def load_lm(path: str | Path) -> LanguageModel:
    """Load a :class:`LanguageModel` saved with :meth:`LanguageModel.save` (no pickle); a file
    changed after saving raises (:func:`~ulmfit_ml.utils.manifest.verify_files`)."""
    from safetensors.torch import load_file

    path = user_path(path)
    if not path.is_dir():
        raise FileNotFoundError(f"No language-model directory at {path}.")
    if not (path / "lm.json").exists() and (path / "lm" / "lm.json").is_file():
        raise FileNotFoundError(f"{path} is a run directory, not a language-model directory: its language model is "
                                f"in {path / 'lm'}. Load that: load_lm({str(path / 'lm')!r}).")
    meta = read_json(path / "lm.json")
    if not isinstance(meta, dict) or meta.get("kind") != "language_model":
        raise ValueError(f"{path / 'lm.json'} is not a ulmfit_ml language-model config.")
    vocab = read_json(path / "vocab.json")
    if not isinstance(vocab, list) or len(vocab) != meta.get("vocab_size"):
        raise ValueError(f"{path / 'vocab.json'} must list {meta.get('vocab_size')} tokens.")
    wp = path / "lm.safetensors"
    if not wp.exists():
        raise FileNotFoundError(f"Model file lm.safetensors is missing from {path}.")
    try:
        state = load_file(str(wp), device="cpu")
    except Exception as e:  # noqa: BLE001
        raise ValueError(f"Model file {wp} is corrupt or not a safetensors file ({type(e).__name__}: {e}).") from e
    emb = state.get("0.encoder.weight")
    if emb is None or emb.shape[0] != len(vocab):
        raise ValueError(f"{wp} does not match vocab.json ({len(vocab)} tokens).")
    state = {k: v.float() for k, v in state.items()}
    for k in _TIED_LM_KEYS:
        state.setdefault(k, state["0.encoder.weight"])
    history = pd.read_csv(path / "history.csv") if (path / "history.csv").exists() else None
    tokenizer = TextTokenizer.load(meta.get("tokenizer"), path)
    # every file against the sha256 recorded at save time (a flipped "backwards" loads silently otherwise);
    # the shipped models and LMs saved before format 2 have none
    verify_files(path, "language_model", format_version=meta.get("format_version", 0))
    return LanguageModel(vocab, meta["arch"], state, backwards=meta.get("backwards", False), history=history,
                         metrics=meta.get("metrics"), config=meta.get("config"), tokenizer=tokenizer)


# ---------------------------------------------------------------------- pretrained weights
#: General-domain language models shipped inside the package (``pretrained="NAME"``), each with
#: a forward and a backward direction; ``ulmfit_ml/pretrained/NAME/MODEL_CARD.md`` says how
#: each was made (corpus, tokens seen, held-out perplexity, licences).
PRETRAINED_MODELS: dict[str, str] = {
    "en-small": "AWD-LSTM (arch 'cpu': emb 200, hidden 512, 2 layers), 12k-token vocab, pretrained on ~23M words "
                "of English Wikipedia, movie reviews and usenet discussions (see its model card)",
}
_PRETRAINED_ROOT = Path(__file__).resolve().parents[1] / "pretrained"

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


def pretrained_weights(pretrained: bool | str | Path, arch: dict[str, Any], backwards: bool
                        ) -> tuple[dict[str, torch.Tensor], list[str]] | None:
    """The starting weights of a fine-tuning run and their vocab (``None``: from scratch).

    ``pretrained``: ``True`` (fastai's WikiText-103 download, arch ``paper`` only), a shipped
    name (:data:`PRETRAINED_MODELS`), a directory saved by ulmfit_ml, or fastai ``.pth`` + ``.pkl``
    files; ``False``/``None`` for none.
    """
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


def pretrained_tokenizer(pretrained: bool | str | Path, backwards: bool = False) -> TextTokenizer | None:
    """The tokenizer the vocab of ``pretrained`` weights comes from: the LM's own for a directory
    saved by ulmfit_ml, spaCy words for the shipped models and fastai's files; ``None`` for none."""
    if pretrained is False or pretrained is None:
        return None
    if isinstance(pretrained, str) and pretrained in PRETRAINED_MODELS:
        return load_lm(pretrained_model_dir(pretrained, backwards=backwards)).tokenizer
    p = Path(pretrained) if not isinstance(pretrained, bool) else None
    if p is not None and p.is_dir() and (p / "lm.json").exists():
        return TextTokenizer.load(read_json(p / "lm.json").get("tokenizer"), p)
    return TextTokenizer()  # WikiText-103 and fastai .pth/.pkl files: fastai's spaCy words


def lm_dir_of(path: str | Path) -> Path:
    """A saved language model's directory: ``path`` itself (with ``lm.json``) or the ``lm/`` of the
    run directory ``path`` (``ulmfit-ml lm`` / ``train``)."""
    p = user_path(path)
    if (p / "lm.json").is_file():
        return p
    if (p / "lm" / "lm.json").is_file():
        return p / "lm"
    raise FileNotFoundError(f"No language model at {p}: pass a directory saved by `ulmfit-ml lm`/`pretrain` "
                            "(with lm.json) or a run directory that holds lm/.")


def resolve_encoder(encoder: "LanguageModel | str | Path | None") -> "LanguageModel | None":
    """The classifier's ``encoder`` option, resolved in one place for every path (``train_classifier``,
    ``cross_validate``, ``[run] encoder``): a :class:`LanguageModel` as it is; ``None`` or
    ``"random"``: no pretrained encoder; a saved LM directory (or a run directory holding ``lm/``): loaded."""
    if encoder is None or isinstance(encoder, LanguageModel):
        return encoder
    if isinstance(encoder, str) and encoder == "random":  # as [run] encoder = "random" in a config file
        return None
    if isinstance(encoder, (str, Path)):
        return load_lm(lm_dir_of(encoder))
    raise TypeError(f"encoder must be a LanguageModel, a saved LM directory or None, got {type(encoder).__name__}.")
