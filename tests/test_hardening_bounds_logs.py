"""Hardening round two: resource bombs (counts bounded before anything is allocated), diverging
runs (a clear error naming the learning rate) and logs a person can read (one line per epoch
when stdout is not a terminal)."""
from __future__ import annotations

import io
import re

import numpy as np
import pytest

import ulmfit_ml as um
from ulmfit_ml.utils import config as C
from ulmfit_ml.utils.config_files import load_config_file, resolve_config
from ulmfit_ml.utils.runtime import DIVERGENCE_FACTOR, PROGRESS_ENV, loss_diverged, resolve_progress

from conftest import CUES, TINY, make_frame

BIG = 10**9
WORDS = "alpha beta gamma delta epsilon zeta eta theta iota kappa lambda mu".split()


@pytest.fixture(scope="module")
def small():
    """120 rows: enough for a one-epoch tiny LM or classifier in about a second."""
    return um.MultiLabelData.from_df(make_frame(120, seed=3), text_col="text", label_cols=list(CUES), seed=0)


@pytest.fixture(scope="module")
def regression():
    df = make_frame(120, seed=4)
    df["score"] = df["joy"] * 2.0 + np.arange(len(df)) % 3
    return um.MultiLabelData.from_df(df, text_col="text", target_cols=["score"], seed=0)


LM = dict(arch=TINY, pretrained=False, bs=16, seq_len=12, device="cpu", quiet=True)
CLF = dict(arch=TINY, bs=16, seq_len=20, unfreeze=(0,), epochs=(1,), lrs=(1e-2,), lin_ftrs=(8,), device="cpu",
           quiet=True, threshold_strategy="none")


# ---------------------------------------------------------------------- class 2: counts bounded up front
@pytest.mark.parametrize("make, match", [
    (lambda: C.LMConfig(epochs=BIG), r"lm\.epochs = 1000000000 is more than the limit of 10,000: fastai sets up "
                                     r"per-epoch state"),
    (lambda: C.LMConfig(frozen_epochs=10_001), r"lm\.frozen_epochs = 10001 is more than the limit of 10,000"),
    (lambda: C.ClassifierConfig(unfreeze=(1, 0), epochs=(1, BIG), lrs=(1e-2, 1e-3)),
     r"classifier\.epochs\[1\] = 1000000000 is more than the limit of 10,000: .*step or token count"),
    (lambda: C.PretrainConfig(epochs=1e9), r"pretrain\.epochs = 1000000000\.0 is more than the limit of 10,000: "
                                           r".*max_tokens="),
])
def test_epochs_are_bounded_naming_key_value_bound_and_why(make, match):
    with pytest.raises(ValueError, match=match):
        make()


def test_epochs_bound_from_a_toml_file_and_keyword_options(tmp_path, small):
    p = tmp_path / "exp.toml"
    p.write_text("[lm]\nepochs = 1000000000\n", encoding="utf-8")
    with pytest.raises(ValueError, match=r"lm\.epochs = 1000000000 is more than the limit of 10,000"):
        resolve_config(load_config_file(p))
    p.write_text("[classifier]\nepochs = [2, 1000000000]\nunfreeze = [1, 0]\nlrs = [0.01, 0.001]\n", encoding="utf-8")
    with pytest.raises(ValueError, match=r"classifier\.epochs\[1\] = 1000000000"):
        resolve_config(load_config_file(p))
    with pytest.raises(ValueError, match=r"lm\.epochs = 1000000000 is more than the limit"):
        um.finetune_lm(small, epochs=BIG, **LM)  # fails before tokenising or allocating anything
    with pytest.raises(ValueError, match=r"classifier\.epochs\[0\] = 1000000000"):
        um.train_classifier(small, **dict(CLF, epochs=(BIG,)))
    # the bound itself is accepted
    assert C.LMConfig(epochs=C.MAX_EPOCHS).epochs == 10_000
    assert C.ClassifierConfig(epochs=(C.MAX_EPOCHS,)).epochs == (10_000,)


@pytest.mark.parametrize("make, match", [
    (lambda: C.resolve_arch({"n_hid": BIG}), r"arch\['n_hid'\] = 1000000000 is more than the limit of 8,192: the "
                                             r"AWD-LSTM's weights are allocated at once"),
    (lambda: C.resolve_arch({"emb_sz": 100_000}), r"arch\['emb_sz'\] = 100000 is more than the limit of 8,192"),
    (lambda: C.LMConfig(arch={"n_layers": 1000}), r"arch\['n_layers'\] = 1000 is more than the limit of 16"),
    (lambda: C.ClassifierConfig(lin_ftrs=(50, BIG)), r"classifier\.lin_ftrs\[1\] = 1000000000 is more than the "
                                                     r"limit of 16,384: the head's weights are allocated"),
    (lambda: C.ClassifierConfig(lin_ftrs=(0,)), r"lin_ftrs entries \(units of each hidden layer of the head\) must be a number > 0, got 0"),
    (lambda: C.PretrainConfig(n_samples=BIG), r"pretrain\.n_samples = 1000000000 is more than the limit of 65,536: "
                                              r".*softmax='full'"),
    (lambda: C.PretrainConfig(threads=100_000), r"pretrain\.threads = 100000 is more than the limit of 1,024: more threads than cores"),
])
def test_sizes_that_allocate_at_once_are_bounded(make, match):
    with pytest.raises(ValueError, match=match):
        make()


def test_lr_find_iterations_and_explain_steps_are_bounded(small):
    with pytest.raises(ValueError, match=r"num_it = 1000000000 is more than the limit of 10,000: each iteration is "
                                         r"one training batch"):
        um.lr_find(small, stage="lm", num_it=BIG, **LM)
    clf = um.train_classifier(small, **CLF)
    with pytest.raises(ValueError, match=r"n_steps = 1000000000 is more than the limit of 10,000"):
        um.explain(clf, ["happy day"], method="integrated_gradients", n_steps=BIG)
    assert len(um.explain(clf, ["happy day"], labels="joy", method="integrated_gradients", n_steps=4))


# ---------------------------------------------------------------------- class 2: divergence
def test_loss_diverged_rule():
    assert loss_diverged(float("nan"), None) and loss_diverged(float("inf"), 2.0) and loss_diverged(-float("inf"), 2.0)
    assert loss_diverged(DIVERGENCE_FACTOR * 5.0 + 1, 5.0) and not loss_diverged(DIVERGENCE_FACTOR * 5.0, 5.0)
    assert loss_diverged(DIVERGENCE_FACTOR + 1, 0.01)  # the reference is at least 1.0: a tiny start is no trigger
    assert not loss_diverged(50.0, 0.1) and not loss_diverged(1e6, None)  # no start yet: only NaN/inf count


def test_lm_finetuning_at_lr_1e9_names_the_learning_rate(small):
    with pytest.raises(ValueError, match=r"Training diverged in epoch 1, (training|validation) batch \d+: the loss "
                                         r"became .*The learning rate is too high: lm\.lr = 1e\+09\. Lower it"):
        um.finetune_lm(small, epochs=1, lr=1e9, **LM)
    with pytest.raises(ValueError, match=r"learning rate is too high: lm\.lr \(x10 in the frozen epochs\) = 1e\+08"):
        um.finetune_lm(small, epochs=1, frozen_epochs=1, lr=1e8, **LM)


@pytest.mark.parametrize("opts, match", [
    (dict(lrs=(1e9,)), r"classifier\.lrs\[0\] = 1e\+09"),
    (dict(unfreeze=(1, 0), epochs=(1, 1), lrs=(1e-2, 1e9)), r"classifier\.lrs\[1\] = 1e\+09"),
])
def test_classifier_at_lr_1e9_names_the_stage_learning_rate(small, opts, match):
    with pytest.raises(ValueError, match=r"Training diverged .*learning rate is too high: " + match):
        um.train_classifier(small, **dict(CLF, **opts))


def test_regression_at_lr_1e9_names_the_learning_rate(regression):
    with pytest.raises(ValueError, match=r"learning rate is too high: classifier\.lrs\[0\] = 1e\+09.*lr_find"):
        um.train_classifier(regression, **dict(CLF, lrs=(1e9,)))


def test_pretraining_at_lr_1e9_names_the_learning_rate(tmp_path, monkeypatch):
    monkeypatch.setenv("ULMFIT_ML_CACHE", str(tmp_path / "cache"))
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("\n".join(" ".join(WORDS[(i + j) % 12] for j in range(12)) for i in range(200)) + "\n",
                      encoding="utf-8")
    opts = dict(arch=TINY, max_vocab=100, min_freq=1, valid_pct=0.1, bs=8, seq_len=12, drop_mult=0.0, quiet=True,
                threads=1, seed=0, epochs=1, n_samples=8)
    with pytest.raises(ValueError, match=r"Training diverged at pretraining step \d+/\d+: .*pretrain\.lr = 1e\+09"):
        um.pretrain_lm(corpus, lr=1e9, out_dir=tmp_path / "out", **opts)
    assert not (tmp_path / "out" / "checkpoint").exists()  # no checkpoint of the broken weights
    lm = um.pretrain_lm(corpus, lr=2e-2, **opts)  # a sane rate trains as before
    assert np.isfinite(lm.metrics["perplexity"])


# ---------------------------------------------------------------------- class 6: readable logs
def _lines(out: str) -> list[str]:
    return [ln for ln in out.split("\n") if ln.strip()]


def test_lm_log_is_one_line_per_epoch_when_stdout_is_not_a_terminal(small, capsys, monkeypatch):
    monkeypatch.delenv(PROGRESS_ENV, raising=False)
    um.finetune_lm(small, epochs=3, lr=1e-2, **dict(LM, quiet=False))
    out = capsys.readouterr().out
    assert "\r" not in out
    lines = _lines(out)
    assert lines[0].split() == ["epoch", "train_loss", "valid_loss", "accuracy", "perplexity", "time"]
    assert [ln.split()[0] for ln in lines[1:]] == ["0", "1", "2"], out  # one line per epoch, nothing else


def test_classifier_log_has_one_header_per_stage_and_one_line_per_epoch(small, capsys, monkeypatch):
    monkeypatch.setenv(PROGRESS_ENV, "auto")
    um.train_classifier(small, **dict(CLF, unfreeze=(1, 0), epochs=(1, 2), lrs=(1e-2, 1e-2), quiet=False))
    out = capsys.readouterr().out
    assert "\r" not in out  # also no bar from the validation predictions that tune the thresholds
    lines = _lines(out)
    assert [ln.split()[0] for ln in lines] == ["epoch", "0", "epoch", "0", "1"], out
    assert "f1_macro" in lines[0]


@pytest.mark.parametrize("mode, quiet", [("bar", False), ("lines", False), ("none", False), ("lines", True)])
def test_progress_can_be_forced_with_the_environment_variable(small, capsys, monkeypatch, mode, quiet):
    monkeypatch.setenv(PROGRESS_ENV, mode.upper() if mode == "lines" else mode)  # case does not matter
    um.finetune_lm(small, epochs=1, lr=1e-2, **dict(LM, quiet=quiet))
    out = capsys.readouterr().out
    if quiet or mode == "none":
        assert out == ""
    elif mode == "bar":  # fastai's bars even into a pipe
        assert "\r" in out
    else:
        assert "\r" not in out and len(_lines(out)) == 2


def test_bad_progress_mode_and_auto_detection(monkeypatch):
    monkeypatch.setenv(PROGRESS_ENV, "fancy")
    with pytest.raises(ValueError, match=r"ULMFIT_ML_PROGRESS='fancy' is not a progress mode: use 'auto' .*'bar', "
                                         r"'lines' or 'none'"):
        resolve_progress()
    assert resolve_progress(quiet=True) == "none"  # quiet wins over the variable
    monkeypatch.delenv(PROGRESS_ENV)

    class Tty(io.StringIO):
        def isatty(self) -> bool:
            return True

    monkeypatch.setattr("sys.stdout", Tty())
    assert resolve_progress() == "bar"
    monkeypatch.setattr("sys.stdout", io.StringIO())
    assert resolve_progress() == "lines"
    monkeypatch.setattr("sys.stdout", None)  # pythonw / a detached process
    assert resolve_progress() == "lines"
    assert re.fullmatch(r"[a-z]+", resolve_progress())
