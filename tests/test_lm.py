import pickle

import numpy as np
import pytest
import torch

import ulmfit_ml as um
from ulmfit_ml.models import lm as lm_mod
from ulmfit_ml.utils.config import LMConfig

from conftest import TINY


def test_finetune_returns_language_model(tiny_lm, data):
    assert isinstance(tiny_lm, um.LanguageModel)
    assert tiny_lm.vocab[:2] == ["xxunk", "xxpad"] and "happy" in tiny_lm.vocab
    assert tiny_lm.state_dict["0.encoder.weight"].shape == (len(tiny_lm.vocab), 16)
    trainer = um.LMTrainer(data, arch=TINY, pretrained=False, bs=32, seq_len=20, quiet=True, device="cpu")
    assert set(tiny_lm.encoder_state_dict) == set(trainer.learner.model[0].state_dict())
    assert not hasattr(tiny_lm, "learner"), "the model holds no fastai Learner (the trainer does)"
    assert {"stage", "epoch", "train_loss", "valid_loss", "accuracy", "perplexity"} <= set(tiny_lm.history.columns)
    assert tiny_lm.metrics["perplexity"] > 1


def test_lm_learns_a_predictable_sequence():
    # each text is a window of one fixed cyclic word sequence: the next word is predictable
    import pandas as pd

    words = "alpha bravo charlie delta echo foxtrot golf hotel india juliet kilo lima mike november".split()
    rng = np.random.default_rng(0)
    starts = rng.integers(0, len(words), 400)
    texts = [" ".join(words[(s + i) % len(words)] for i in range(12)) for s in starts]
    df = pd.DataFrame({"text": texts, "y": (starts % 2).astype(int)})
    d = um.MultiLabelData.from_df(df, label_cols=["y"], split="random")
    lm = um.finetune_lm(d, arch=TINY, pretrained=False, epochs=4, bs=16, seq_len=24, lr=3e-2, drop_mult=0.0, quiet=True, seed=0)
    assert lm.history["valid_loss"].iloc[-1] < lm.history["valid_loss"].iloc[0]
    assert lm.metrics["perplexity"] < 4, lm.history  # uniform guessing over the 14 words: 14
    assert lm.metrics["accuracy"] > 0.6


def test_unknown_option_and_bad_config(data):
    with pytest.raises(TypeError, match=r"unknown config key lm\.epoch \(did you mean lm\.epochs\?\); \[lm\] accepts "):
        um.finetune_lm(data, epoch=2)
    with pytest.raises(TypeError, match=r"unknown config keys lm\.epoch \(did you mean lm\.epochs\?\), lm\.zzz; "):
        um.finetune_lm(data, epoch=2, zzz=1)
    with pytest.raises(ValueError, match=r"unknown config key arch\.nhid \(did you mean arch\.n_hid\?\); \[arch\] accepts "):
        um.finetune_lm(data, arch={"nhid": 8})
    with pytest.raises(ValueError, match="Unknown arch preset 'huge'"):
        um.finetune_lm(data, arch="huge")
    with pytest.raises(ValueError, match="lr must be a number > 0"):
        LMConfig(lr=0)
    with pytest.raises(TypeError, match="MultiLabelData"):
        um.finetune_lm("texts")


def test_pretrained_true_needs_paper_arch(data):
    with pytest.raises(ValueError, match="only fit arch='paper'"):
        um.finetune_lm(data, arch=TINY, pretrained=True)


def test_pretrained_download_failure_names_alternatives(data, monkeypatch):
    import fastai.data.external as ext

    def offline(*a, **k):
        raise ConnectionError("no network")

    monkeypatch.setattr(ext, "untar_data", offline)
    with pytest.raises(RuntimeError, match="Could not download.*WikiText-103.*pretrained='path/to/dir'.*pretrain_lm.*pretrained=False"):
        um.finetune_lm(data, arch="paper", pretrained=True)


def test_pretrained_missing_path(data, tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist.*Alternatives"):
        um.finetune_lm(data, arch=TINY, pretrained=tmp_path / "nope")


def test_lm_save_load_and_use_as_pretrained(tiny_lm, data, tmp_path):
    p = tiny_lm.save(tmp_path / "lm")
    lm2 = um.load_lm(p)
    assert lm2.vocab == tiny_lm.vocab and not hasattr(lm2, "learner")
    for k, v in tiny_lm.state_dict.items():
        torch.testing.assert_close(lm2.state_dict[k], v)
    with pytest.raises(FileExistsError, match="overwrite=True"):
        tiny_lm.save(tmp_path / "lm")
    # start from it without training: weights are carried over token by token
    lm3 = um.finetune_lm(data, arch=TINY, pretrained=p, epochs=0, frozen_epochs=0, quiet=True)
    emb_old = dict(zip(tiny_lm.vocab, tiny_lm.state_dict["0.encoder.weight"]))
    emb_new = lm3.state_dict["0.encoder.weight"]
    for tok in ("happy", "furious", "the"):
        torch.testing.assert_close(emb_new[lm3.vocab.index(tok)], emb_old[tok])
    with pytest.raises(ValueError, match="has arch .* pass arch="):
        um.finetune_lm(data, arch={"emb_sz": 8, "n_hid": 32, "n_layers": 1}, pretrained=p)


def test_fastai_format_weights_are_read_safely(tiny_lm, data, tmp_path):
    torch.save(tiny_lm.state_dict, tmp_path / "wt.pth")
    with open(tmp_path / "wt.pkl", "wb") as f:
        pickle.dump(tiny_lm.vocab, f)
    lm = um.finetune_lm(data, arch=TINY, pretrained=tmp_path, epochs=0, frozen_epochs=0, quiet=True)
    torch.testing.assert_close(lm.state_dict["0.encoder.weight"][lm.vocab.index("happy")],
                               tiny_lm.state_dict["0.encoder.weight"][tiny_lm.vocab.index("happy")])

    class Evil:
        def __reduce__(self):
            return (open, (str(tmp_path / "pwned"), "w"))

    with open(tmp_path / "wt.pkl", "wb") as f:
        pickle.dump([Evil()], f)
    with pytest.raises(ValueError, match="Could not read vocab.*refusing to load"):
        um.finetune_lm(data, arch=TINY, pretrained=tmp_path, epochs=0, frozen_epochs=0, quiet=True)
    assert not (tmp_path / "pwned").exists()


def test_pretrain_lm_on_a_corpus_then_finetune(data, tmp_path):
    corpus = tmp_path / "corpus.txt"
    corpus.write_text(" = Title = \n" + "\n".join(data.texts[:200]) + "\n\n", encoding="utf-8")
    base = um.pretrain_lm(corpus, arch=TINY, epochs=1, bs=16, seq_len=16, quiet=True)
    assert isinstance(base, um.LanguageModel) and len(base.history) >= 1
    d = base.save(tmp_path / "base")
    lm = um.finetune_lm(data, arch=TINY, pretrained=d, epochs=1, bs=32, seq_len=20, quiet=True)
    assert list(lm.history["stage"]) == ["frozen", "unfrozen"]  # ULMFiT: head first, then unfreeze
    with pytest.raises(FileNotFoundError, match="No corpus text"):
        um.pretrain_lm(tmp_path / "missing.txt")
    with pytest.raises(ValueError, match="no non-empty text"):
        um.pretrain_lm(["", "  "])


def test_from_scratch_has_no_frozen_stage(tiny_lm):
    assert list(tiny_lm.history["stage"]) == ["unfrozen"]


@pytest.mark.parametrize("mode", ["train", "extend"])
def test_pretrained_vocab_keeps_every_pretrained_token_and_its_embedding(tiny_lm, data, tmp_path, mode):
    p = tiny_lm.save(tmp_path / "lm")
    small = data.subset(np.arange(len(data.texts)) < 60)  # a small frame: few tokens of its own
    opts = dict(arch=TINY, pretrained=p, epochs=0, frozen_epochs=0, quiet=True, bs=8, seq_len=10)
    kept = um.finetune_lm(small, pretrained_vocab=mode, **opts)
    only = um.finetune_lm(small, pretrained_vocab="drop", **opts)
    pretrained = {t for t in tiny_lm.vocab if t != "xxfake"}
    assert pretrained <= set(kept.vocab) and not pretrained <= set(only.vocab)
    real = [t for t in kept.vocab if t != "xxfake"]
    assert len(real) == len(set(real))  # no token twice
    assert all(v.shape[0] == len(kept.vocab) for k, v in kept.state_dict.items() if "encoder" in k and "weight" in k)
    assert set(only.vocab) - {"xxfake"} <= set(real)  # the texts' own tokens are all still there
    # a word the small frame never shows keeps its pretrained embedding (with the data-only vocab it is xxunk)
    tok = next(t for t in tiny_lm.vocab if t not in only.vocab and t != "xxfake")
    torch.testing.assert_close(kept.state_dict["0.encoder.weight"][kept.vocab.index(tok)],
                               tiny_lm.state_dict["0.encoder.weight"][tiny_lm.vocab.index(tok)])
    clf = um.train_classifier(small, encoder=kept, arch=TINY, epochs=(0,), quiet=True)
    assert clf.vocab == kept.vocab  # the classifier reads the same vocabulary
    scratch = um.finetune_lm(small, arch=TINY, pretrained=False, epochs=0, pretrained_vocab=mode, quiet=True, bs=8,
                             seq_len=10)
    assert set(scratch.vocab) - {"xxfake"} == set(only.vocab) - {"xxfake"}  # nothing to keep from scratch


def test_pretrained_vocab_extend_trains_on_the_texts_vocab_then_appends(tiny_lm, data, tmp_path):
    """"extend" costs what the texts' own vocab costs: the decoder trained has that size; the
    appended rows are the start model's, unchanged by training."""
    p = tiny_lm.save(tmp_path / "lm")
    small = data.subset(np.arange(len(data.texts)) < 60)
    trainer = um.LMTrainer(small, arch=TINY, pretrained=p, epochs=1, frozen_epochs=0, quiet=True, bs=8, seq_len=10,
                           pretrained_vocab="extend")
    n_trained = len(trainer.dls.vocab)
    lm = trainer.train()
    assert len(lm.vocab) > n_trained and lm.vocab[:n_trained] == list(trainer.dls.vocab)
    tok = lm.vocab[-1]
    for key in ("0.encoder.weight", "1.decoder.bias"):
        torch.testing.assert_close(lm.state_dict[key][-1], tiny_lm.state_dict[key][tiny_lm.vocab.index(tok)])
    with pytest.raises(ValueError, match="pretrained_vocab must be"):
        um.finetune_lm(small, pretrained_vocab="keep")
