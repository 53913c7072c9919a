"""The tokenizer's fast path gives exactly fastai's tokens (``TokenizeWithRules`` with spaCy or
SentencePiece and the default rules), so models trained before and after it read the same ids."""
from __future__ import annotations

import csv

import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ulmfit_ml.data.tokens import TextTokenizer, tokenize_texts, word_tokenizer

from conftest import GOEMOTIONS

ODD = ["", " ", "HELLO World!!!!", "soooooo good", "this this this this is it", "&amp; &quot;quoted&quot; <br />",
       "Ünïcödé — “quotes” …", "tabs\tand\nnewlines", "xxbos xxmaj literal", "ALL CAPS SENTENCE. Then Case.",
       "http://example.com/a?b=c", "emoji 😀😀😀", "a  b   c", "#hashtag @user", "I'M NOT SURE"]


def fastai_tokens(texts, tok=None):
    from fastai.text.core import TokenizeWithRules, defaults

    return [list(t) for t in TokenizeWithRules(tok=tok or word_tokenizer(), rules=list(defaults.text_proc_rules))(texts)]


def goemotions_sample(n: int = 1500) -> list[str]:
    path = GOEMOTIONS / "dev.tsv"
    if not path.is_file():
        pytest.skip(f"GoEmotions is not at {path}")
    df = pd.read_csv(path, sep="\t", header=None, names=["text", "ids", "id"], quoting=csv.QUOTE_NONE, dtype=str,
                     keep_default_na=False)
    return df.text.tolist()[:n]


def test_spacy_tokens_equal_fastai_on_real_and_odd_texts():
    texts = goemotions_sample() + ODD
    assert tokenize_texts(texts, n_workers=0) == fastai_tokens(texts)


def test_parallel_tokens_equal_serial():
    texts = goemotions_sample(600) + ODD
    assert tokenize_texts(texts, n_workers=2) == tokenize_texts(texts, n_workers=0)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.text(alphabet=st.characters(codec="utf-8", exclude_categories=("Cs",)), max_size=40), min_size=1,
                max_size=5))
def test_spacy_tokens_equal_fastai_on_random_texts(texts):
    assert tokenize_texts(texts, n_workers=0) == fastai_tokens(texts)


def test_sentencepiece_tokens_equal_fastai(tmp_path):
    pytest.importorskip("sentencepiece")
    from fastai.text.core import SentencePieceTokenizer

    texts = goemotions_sample(800)
    tok = TextTokenizer.train_sentencepiece(texts, vocab_size=300)
    (tmp_path / "spm.model").write_bytes(tok.sp_model)
    fastai_sp = SentencePieceTokenizer(sp_model=tmp_path / "spm.model", cache_dir=tmp_path)
    sample = texts[:300] + ODD
    assert tok(sample) == fastai_tokens(sample, fastai_sp)
