"""Tokenisation shared by the LM, the classifier and prediction: fastai's spaCy word tokenizer
(once per process, parallel for large inputs) or a SentencePiece subword model
(:class:`TextTokenizer`), both behind fastai's default rules."""
from __future__ import annotations

import ctypes
import functools
import hashlib
import os
import signal
import sys
import tempfile
from collections.abc import Iterable, Sequence
from pathlib import Path
from concurrent.futures import ProcessPoolExecutor
from typing import Any

__all__ = ["tokenize_texts", "word_tokenizer", "pretokenized_tfm", "TextTokenizer", "TOKENIZERS", "SP_MODEL_FILE"]

#: ``tokenizer=`` values: fastai's spaCy words, or a SentencePiece model trained on the LM corpus.
TOKENIZERS = ("spacy", "sentencepiece")
#: The SentencePiece model inside a saved model or LM directory.
SP_MODEL_FILE = "tokenizer.model"

# Below this many texts, tokenising in worker processes costs more than it saves.
_PARALLEL_TOKENIZE_MIN = 2000
# Longest text the tokenizer accepts (characters); spaCy's own default is 1,000,000.
_MAX_TEXT_CHARS = 100_000_000


@functools.lru_cache(maxsize=1)  # spacy.blank takes ~0.3 s: build it once per process, not per predict call
def word_tokenizer() -> Any:
    """fastai's default word tokenizer (spaCy, blank English) with its default rules."""
    from fastai.text.core import WordTokenizer
    tok = WordTokenizer()
    # spaCy refuses texts over 1,000,000 characters (E088) to protect its parser/NER memory;
    # fastai uses only the blank tokenizer, which is linear in length, so 1 MB+ texts are safe.
    tok.pipe.__self__.max_length = _MAX_TEXT_CHARS
    return tok




def _die_with_parent(parent: int) -> None:
    """Make this worker exit when the process that started it dies, even by SIGKILL.

    Forked workers inherit the task pipe's write end, so they never see end-of-file and would
    wait forever (~350 MB each) after their parent is killed. Linux: ``PR_SET_PDEATHSIG``;
    elsewhere the pool's own shutdown is all there is.
    """
    if sys.platform.startswith("linux"):
        try:
            libc = ctypes.CDLL(None, use_errno=True)
            libc.prctl(1, signal.SIGKILL, 0, 0, 0)  # PR_SET_PDEATHSIG = 1
        except (OSError, AttributeError):
            return
    if os.getppid() != parent:  # the parent died before prctl took effect
        os._exit(1)


def _with_rules(split: Any, texts: Sequence[str]) -> list[list[str]]:
    """fastai's ``TokenizeWithRules(tok, rules=defaults.text_proc_rules)`` without its fastcore
    wrappers: the same rule functions in the same order, then ``split`` (an iterable of token
    iterables, one per text), then the same post rules on every token.

    Reimplemented because fastai's per-token ``L(...).map(compose(...))`` and
    ``L(doc).attrgot("text")`` took two thirds of the tokenisation time of short texts
    (profile in bench/INFERENCE.md); tests/test_tokens.py checks the tokens equal fastai's.
    """
    from fastai.text.core import defaults

    rules, post = list(defaults.text_proc_rules), list(defaults.text_postproc_rules)
    pre = []
    for t in texts:
        t = str(t)
        for r in rules:
            t = r(t)
        pre.append(t)
    out = []
    for toks in split(pre):
        toks = list(toks)
        for r in post:
            toks = [r(x) for x in toks]
        out.append(toks)
    return out


def _spacy_split(texts: list[str]) -> Any:
    """fastai's ``SpacyTokenizer.__call__`` (same ``nlp.pipe``, special cases and batch size),
    yielding plain lists of token texts."""
    tok = word_tokenizer()
    return ([t.text for t in doc] for doc in tok.pipe(texts, batch_size=tok.buf_sz))


def _worker_setup(parent: int) -> None:
    _die_with_parent(parent)
    word_tokenizer()  # build spaCy once per worker


def _worker_tokenize(batch: list[str]) -> list[list[str]]:
    return _with_rules(_spacy_split, batch)


def tokenize_texts(texts: Sequence[str], *, n_workers: int | None = None) -> list[list[str]]:
    """Tokenise with fastai's default pipeline (spaCy + ``defaults.text_proc_rules``).

    Same tokens as fastai's ``Tokenizer`` (its ``TokenizeWithRules``; see :func:`_with_rules`). Large inputs run in
    worker processes: fastai's ``parallel_tokenize`` pool, except that the workers here exit
    with their parent (:func:`_die_with_parent`) instead of outliving a killed run.
    """
    from fastai.text.core import defaults

    texts = list(texts)
    if n_workers is None:
        n_workers = defaults.cpus if len(texts) >= _PARALLEL_TOKENIZE_MIN else 0
    if n_workers <= 1 or len(texts) < 2:
        return _with_rules(_spacy_split, texts)
    size = -(-len(texts) // n_workers)
    batches = [texts[i:i + size] for i in range(0, len(texts), size)]
    with ProcessPoolExecutor(n_workers, initializer=_worker_setup, initargs=(os.getpid(),)) as ex:
        return [toks for part in ex.map(_worker_tokenize, batches) for toks in part]


def pretokenized_tfm() -> Any:
    """A fastai ``Tokenizer`` transform for texts that are already token lists.

    fastai's ``Tokenizer.from_df`` tokenises the whole frame again in every DataBlock; we
    tokenise once (shared by the LM and the classifier) and keep the same transform so raw
    strings given later (``test_dl``) are tokenised the same way.
    """
    from fastai.text.core import Tokenizer

    class _Pretokenized(Tokenizer):
        def setups(self, dsets):  # tokens already there: nothing to do
            return None

    tok = _Pretokenized(word_tokenizer(), mode="df", lengths=True)
    tok.tok_text_col = "text"
    return tok


def _sentencepiece() -> Any:
    """The optional ``sentencepiece`` package (imported here, on use: most users never need it)."""
    try:
        import sentencepiece
    except ImportError as e:
        raise ImportError("tokenizer='sentencepiece' needs the sentencepiece package: "
                          "pip install 'ulmfit_ml[sentencepiece]'") from e
    return sentencepiece


class TextTokenizer:
    """How texts become tokens: ``"spacy"`` (fastai's ``WordTokenizer``) or ``"sentencepiece"``
    (fastai's ``SentencePieceTokenizer`` with a trained model, held as bytes), both after fastai's
    ``defaults.text_proc_rules``. A saved model or LM directory keeps the SentencePiece model
    (:data:`SP_MODEL_FILE`), so a loaded model tokenises exactly as the trained one: nothing is
    downloaded or trained at load time.
    """

    def __init__(self, name: str = "spacy", *, sp_model: bytes | None = None) -> None:
        if name not in TOKENIZERS:
            raise ValueError(f"tokenizer must be one of {list(TOKENIZERS)}, got {name!r}.")
        if (name == "sentencepiece") != (sp_model is not None):
            raise ValueError("A SentencePiece tokenizer needs its trained model (sp_model bytes); spaCy takes none. "
                             "Train one with TextTokenizer.train_sentencepiece(texts).")
        self.name, self.sp_model = name, sp_model
        self._tok: Any = None

    @classmethod
    def train_sentencepiece(cls, texts: Iterable[str], *, vocab_size: int = 8000, max_texts: int = 300_000,
                            model_type: str = "unigram") -> "TextTokenizer":
        """Train a SentencePiece model (fastai's trainer and special tokens) on up to ``max_texts``
        texts after fastai's rules. ``vocab_size`` is a soft limit (fastai trains with
        ``--hard_vocab_limit=false``: a small corpus gets fewer pieces)."""
        from fastai.text.core import SentencePieceTokenizer, defaults
        from fastcore.basics import maps

        _sentencepiece()
        if isinstance(vocab_size, bool) or not isinstance(vocab_size, int) or vocab_size < 50:
            raise ValueError(f"sp_vocab_size must be an int >= 50, got {vocab_size!r}.")
        sample = []
        for t in texts:
            if isinstance(t, str) and t.strip():
                sample.append(t)
                if len(sample) >= max_texts:
                    break
        if not sample:
            raise ValueError("No text to train the SentencePiece model on.")
        with tempfile.TemporaryDirectory(prefix="ulmfit_ml_spm_") as d:  # fastai's trainer reads a file, writes spm.model
            raw = Path(d) / "texts.out"  # what fastai's ``SentencePieceTokenizer.setup`` writes, without its progress bar
            with open(raw, "w", encoding="utf-8") as f:
                for t in maps(*defaults.text_proc_rules, sample):
                    f.write(f"{t}\n")
            sp = SentencePieceTokenizer(vocab_sz=vocab_size, cache_dir=d, model_type=model_type)
            return cls("sentencepiece", sp_model=Path(sp.train(raw)).read_bytes())

    @property
    def sha256(self) -> str:
        """Identifies the tokenizer: two equal hashes tokenise identically."""
        return hashlib.sha256(self.name.encode() + b"\0" + (self.sp_model or b"")).hexdigest()

    def __eq__(self, other: object) -> bool:
        return isinstance(other, TextTokenizer) and other.sha256 == self.sha256

    def __hash__(self) -> int:
        return hash(self.sha256)

    def __repr__(self) -> str:
        return f"TextTokenizer({self.name!r}" + (f", {self.vocab_size} pieces)" if self.sp_model else ")")

    @property
    def vocab_size(self) -> int | None:
        """Pieces of the SentencePiece model (``None`` for spaCy words)."""
        return None if self.sp_model is None else int(self._processor().GetPieceSize())

    def _processor(self) -> Any:
        SentencePieceProcessor = _sentencepiece().SentencePieceProcessor
        if self._tok is None:
            proc = SentencePieceProcessor()
            proc.LoadFromSerializedProto(self.sp_model)
            self._tok = proc
        return self._tok

    def __call__(self, texts: Sequence[str], *, n_workers: int | None = None) -> list[list[str]]:
        """Token lists (fastai's rules, then words or pieces)."""
        if self.name == "spacy":
            return tokenize_texts(texts, n_workers=n_workers)
        proc = self._processor()  # fastai's SentencePieceTokenizer.__call__ with this model (no file, no cache dir)
        return _with_rules(lambda pre: (proc.EncodeAsPieces(t) for t in pre), list(texts))

    # -------------------------------------------------------------- persistence
    def info(self) -> dict[str, Any]:
        """What ``config.json`` / ``lm.json`` record about the tokenizer."""
        if self.name == "spacy":
            return {"name": "spacy", "rules": "fastai.defaults.text_proc_rules"}
        return {"name": "sentencepiece", "rules": "fastai.defaults.text_proc_rules", "file": SP_MODEL_FILE,
                "vocab_size": self.vocab_size, "sha256": hashlib.sha256(self.sp_model).hexdigest()}

    def save(self, directory: str | Path) -> dict[str, Any]:
        """Write the SentencePiece model into ``directory`` (a save's temporary directory); the info."""
        if self.sp_model is not None:
            (Path(directory) / SP_MODEL_FILE).write_bytes(self.sp_model)
        return self.info()

    @classmethod
    def load(cls, info: Any, directory: str | Path) -> "TextTokenizer":
        """The tokenizer a saved directory describes (no ``"name"`` or an old fixed description: spaCy)."""
        if not isinstance(info, dict) or info.get("name") != "sentencepiece":
            return cls("spacy")
        path = Path(directory) / SP_MODEL_FILE
        if not path.is_file():
            raise FileNotFoundError(f"{path} is missing: this model tokenises with SentencePiece and keeps its model "
                                    "there (copy the whole model directory).")
        data = path.read_bytes()
        if info.get("sha256") and hashlib.sha256(data).hexdigest() != info["sha256"]:
            raise ValueError(f"{path} does not match the checksum its config records: the file was changed or "
                             "comes from another model.")
        return cls("sentencepiece", sp_model=data)
