"""fastai's word tokenisation, once per process: the tokens the LM, the classifier and prediction share."""
from __future__ import annotations

import ctypes
import functools
import os
import signal
import sys
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from typing import Any

__all__ = ["tokenize_texts", "word_tokenizer", "pretokenized_tfm"]

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


_WORKER_TOKENIZER: Any = None  # fastai's TokenizeWithRules, built once in each worker process


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


def _worker_setup(parent: int, rules: list) -> None:
    from fastai.text.core import TokenizeWithRules

    global _WORKER_TOKENIZER
    _die_with_parent(parent)
    _WORKER_TOKENIZER = TokenizeWithRules(tok=word_tokenizer(), rules=rules)


def _worker_tokenize(batch: list[str]) -> list[list[str]]:
    return [list(t) for t in _WORKER_TOKENIZER(batch)]


def tokenize_texts(texts: Sequence[str], *, n_workers: int | None = None) -> list[list[str]]:
    """Tokenise with fastai's default pipeline (spaCy + ``defaults.text_proc_rules``).

    Same tokens as fastai's ``Tokenizer`` (its ``TokenizeWithRules``). Large inputs run in
    worker processes: fastai's ``parallel_tokenize`` pool, except that the workers here exit
    with their parent (:func:`_die_with_parent`) instead of outliving a killed run.
    """
    from fastai.text.core import TokenizeWithRules, defaults

    texts = list(texts)
    if n_workers is None:
        n_workers = defaults.cpus if len(texts) >= _PARALLEL_TOKENIZE_MIN else 0
    rules = list(defaults.text_proc_rules)
    if n_workers <= 1 or len(texts) < 2:
        return [list(t) for t in TokenizeWithRules(tok=word_tokenizer(), rules=rules)(texts)]
    size = -(-len(texts) // n_workers)
    batches = [texts[i:i + size] for i in range(0, len(texts), size)]
    with ProcessPoolExecutor(n_workers, initializer=_worker_setup, initargs=(os.getpid(), rules)) as ex:
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
