"""fastai's word tokenisation, once per process: the tokens the LM, the classifier and prediction share."""
from __future__ import annotations

import functools
from collections.abc import Sequence
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


def tokenize_texts(texts: Sequence[str], *, n_workers: int | None = None) -> list[list[str]]:
    """Tokenise with fastai's default pipeline (spaCy + ``defaults.text_proc_rules``).

    Same tokens as fastai's ``Tokenizer``; runs in worker processes for large inputs.
    """
    from fastai.text.core import defaults, parallel_tokenize

    texts = list(texts)
    if n_workers is None:
        n_workers = defaults.cpus if len(texts) >= _PARALLEL_TOKENIZE_MIN else 0
    rules = list(defaults.text_proc_rules)
    out = parallel_tokenize(texts, word_tokenizer(), rules, n_workers=n_workers)
    res: list[list[str] | None] = [None] * len(texts)
    for i, toks in out:
        res[int(i)] = list(toks)
    return res  # type: ignore[return-value]


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
