"""Subword tokens (issue 15): ``tokenizer="sentencepiece"`` through pretraining, fine-tuning and
classification; the model is kept in the saved directories so a loaded model tokenises exactly
as the trained one (nothing trained or downloaded at load time)."""
from __future__ import annotations

import builtins
import json
import shutil

import numpy as np
import pytest

import ulmfit_ml as um
from ulmfit_ml.data.tokens import SP_MODEL_FILE, TextTokenizer

from conftest import CUES, FAST_CLF, TINY, make_frame

pytest.importorskip("sentencepiece")

SMALL = dict(arch=TINY, bs=32, seq_len=20, quiet=True, device="cpu")
CLF = FAST_CLF  # what the spaCy learning tests use


@pytest.fixture(scope="module")
def frame():
    return make_frame(400, seed=5)


@pytest.fixture(scope="module")
def sp_data(frame):
    return um.MultiLabelData.from_df(frame, label_cols=list(CUES), tokenizer="sentencepiece", sp_vocab_size=120, seed=0)


@pytest.fixture(scope="module")
def sp_lm(sp_data):
    return um.finetune_lm(sp_data, pretrained=False, epochs=1, **SMALL)


@pytest.fixture(scope="module")
def sp_clf(sp_data, sp_lm):
    return um.train_classifier(sp_data, encoder=sp_lm, **CLF)


def test_data_trains_a_subword_model_on_the_lm_corpus(sp_data):
    tok = sp_data.tokenizer
    assert tok.name == "sentencepiece" and 50 <= tok.vocab_size <= 120
    toks = sp_data.tokens[0]
    assert toks[0] == "▁xxbos" and all(isinstance(t, str) for t in toks)
    assert any(t.startswith("▁") for t in toks[1:])


def test_classifier_learns_from_subword_tokens(sp_clf):
    assert sp_clf.tokenizer.name == "sentencepiece"
    assert sp_clf.evaluate()["f1_macro"] > 0.7  # all-positive scores ~0.46; measured 0.83


def test_saved_tokenizer_gives_identical_token_ids(sp_clf, sp_lm, frame, tmp_path):
    sp_clf.save(tmp_path / "clf")
    assert (tmp_path / "clf" / SP_MODEL_FILE).is_file()
    back = um.load_classifier(tmp_path / "clf")
    texts = frame.text[:50].tolist() + ["Unseen WORDS, like zyxwv!"]
    assert back.tokenizer == sp_clf.tokenizer
    assert back._numericalize(back.tokenizer(texts))[-1].tolist() == sp_clf._numericalize(sp_clf.tokenizer(texts))[-1].tolist()
    assert [x.tolist() for x in back._numericalize(back.tokenizer(texts))] == \
        [x.tolist() for x in sp_clf._numericalize(sp_clf.tokenizer(texts))]
    np.testing.assert_array_equal(back.predict_proba(texts), sp_clf.predict_proba(texts))
    sp_lm.save(tmp_path / "lm")
    assert um.load_lm(tmp_path / "lm").tokenizer == sp_lm.tokenizer


def test_loading_never_retrains_the_tokenizer(sp_clf, tmp_path, monkeypatch):
    sp_clf.save(tmp_path / "clf")
    monkeypatch.setattr(TextTokenizer, "train_sentencepiece", lambda *a, **k: pytest.fail("trained at load time"))
    um.load_classifier(tmp_path / "clf").predict_proba(["a happy day"])


def test_missing_or_changed_tokenizer_file_fails_at_load(sp_clf, tmp_path):
    sp_clf.save(tmp_path / "clf")
    shutil.copytree(tmp_path / "clf", tmp_path / "bad")
    (tmp_path / "bad" / SP_MODEL_FILE).write_bytes(b"not a model")
    with pytest.raises(ValueError, match="tokenizer.model does not match the checksum"):
        um.load_classifier(tmp_path / "bad")
    (tmp_path / "bad" / SP_MODEL_FILE).unlink()
    with pytest.raises(FileNotFoundError, match="tokenizer.model is missing: this model tokenises with SentencePiece"):
        um.load_classifier(tmp_path / "bad")


def test_pretrain_finetune_classify_with_one_subword_model(frame, tmp_path):
    corpus = make_frame(300, seed=11).text.tolist()
    plm = um.pretrain_lm(corpus, tokenizer="sentencepiece", sp_vocab_size=100, epochs=0.5, max_vocab=500, min_freq=1,
                         checkpoint_every=None, **SMALL)
    assert plm.tokenizer.name == "sentencepiece"
    plm.save(tmp_path / "plm")
    data = um.MultiLabelData.from_df(frame, label_cols=list(CUES), tokenizer="sentencepiece", seed=0)
    lm = um.finetune_lm(data, pretrained=str(tmp_path / "plm"), epochs=1, **SMALL)
    # fine-tuning keeps the pretrained model's pieces: the data now tokenises with them
    assert lm.tokenizer == plm.tokenizer == data.tokenizer
    clf = um.train_classifier(data, encoder=lm, **{**CLF, "epochs": (1, 1)})
    assert clf.tokenizer == plm.tokenizer


def test_word_and_subword_tokens_do_not_mix(frame, sp_lm, tmp_path):
    words = um.MultiLabelData.from_df(frame, label_cols=list(CUES))
    with pytest.raises(ValueError, match="encoder reads 'sentencepiece' tokens but the data tokenises with 'spacy'"):
        um.train_classifier(words, encoder=sp_lm, **CLF)
    sp_lm.save(tmp_path / "lm")
    with pytest.raises(ValueError, match="reads 'sentencepiece' tokens but the data tokenises with 'spacy': build the data "
                                         "with tokenizer='sentencepiece'"):
        um.finetune_lm(words, pretrained=str(tmp_path / "lm"), **SMALL)
    subwords = um.MultiLabelData.from_df(frame, label_cols=list(CUES), tokenizer="sentencepiece")
    with pytest.raises(ValueError, match="pretrained='en-small' reads 'spacy' tokens but the data tokenises with "
                                         "'sentencepiece'.*pretrained=False"):
        um.finetune_lm(subwords, quiet=True)


def test_bad_tokenizer_options():
    with pytest.raises(ValueError, match="tokenizer must be 'spacy' or 'sentencepiece', got 'bpe'"):
        um.DataConfig(label_col="tags", tokenizer="bpe")
    with pytest.raises(ValueError, match="sp_vocab_size must be an int >= 50"):
        um.DataConfig(label_col="tags", sp_vocab_size=10)
    with pytest.raises(ValueError, match="needs its trained model"):
        TextTokenizer("sentencepiece")
    with pytest.raises(ValueError, match="No text to train"):
        TextTokenizer.train_sentencepiece(["", "  "])


def test_missing_package_fails_clearly(monkeypatch):
    real = builtins.__import__

    def no_sp(name, *a, **k):
        if name == "sentencepiece":
            raise ImportError("No module named 'sentencepiece'")
        return real(name, *a, **k)

    monkeypatch.setattr(builtins, "__import__", no_sp)
    with pytest.raises(ImportError, match=r"pip install 'ulmfit_ml\[sentencepiece\]'"):
        TextTokenizer.train_sentencepiece(["some text here"])


def test_spacy_models_record_their_tokenizer(tmp_path):
    frame = make_frame(120, seed=3)
    data = um.MultiLabelData.from_df(frame, label_cols=list(CUES))
    clf = um.train_classifier(data, arch=TINY, **{**FAST_CLF, "epochs": (1, 1)})
    clf.save(tmp_path / "m")
    info = json.loads((tmp_path / "m" / "config.json").read_text())["tokenizer"]
    assert info["name"] == "spacy" and not (tmp_path / "m" / SP_MODEL_FILE).exists()
    assert um.load_classifier(tmp_path / "m").tokenizer == TextTokenizer("spacy")
