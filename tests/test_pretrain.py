"""Pretraining (corpus cache, sampled softmax, checkpoints, exact resume), shipped and fastai-cache LMs."""
from __future__ import annotations

import json
import os
import pickle
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

import ulmfit_ml as um
from ulmfit_ml.models import lm as lm_module
from ulmfit_ml.data.corpus import TokenCorpus, tokenize_corpus
from ulmfit_ml.data.tokens import tokenize_texts

from conftest import TINY

REPO = Path(__file__).resolve().parent.parent
WORDS = "alpha beta gamma delta epsilon zeta eta theta iota kappa lambda mu".split()


def write_corpus(path: Path, n_lines: int = 300, seed: int = 0) -> Path:
    """Lines that cycle through WORDS from a random offset: a next-token signal an LM can learn."""
    rng = np.random.default_rng(seed)
    lines = []
    for _ in range(n_lines):
        o = int(rng.integers(len(WORDS)))
        lines.append(" ".join(WORDS[(o + j) % len(WORDS)] for j in range(12)) + ".")
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


@pytest.fixture()
def corpus(tmp_path, monkeypatch):
    monkeypatch.setenv("ULMFIT_ML_CACHE", str(tmp_path / "cache"))
    return write_corpus(tmp_path / "corpus.txt")


def test_tokenize_corpus_ids_match_fastai_tokens_and_are_cached(corpus, tmp_path, monkeypatch):
    tc = tokenize_corpus(corpus, max_vocab=100, min_freq=1, valid_pct=0.0, quiet=True)
    lines = corpus.read_text().splitlines()
    expected = [t for toks in tokenize_texts(lines) for t in toks]
    assert [tc.vocab[i] for i in tc.train] == expected  # same tokens, in file order
    assert tc.vocab[:2] == ["xxunk", "xxpad"] and len(tc.valid) == 0
    assert tc.counts[tc.vocab.index("alpha")] == expected.count("alpha")
    # second call: read from the cache, nothing tokenised again
    monkeypatch.setattr("ulmfit_ml.data.tokens.tokenize_texts", lambda *a, **k: pytest.fail("tokenised twice"))
    again = tokenize_corpus(corpus, max_vocab=100, min_freq=1, valid_pct=0.0, quiet=True)
    assert again.path == tc.path and np.array_equal(np.asarray(again.train), np.asarray(tc.train))
    assert isinstance(again.train, np.memmap)


def test_tokenize_corpus_holds_out_blocks_and_caps_vocab(tmp_path, monkeypatch):
    monkeypatch.setenv("ULMFIT_ML_CACHE", str(tmp_path / "cache"))
    f = write_corpus(tmp_path / "c.txt", n_lines=2000)
    tc = tokenize_corpus(f, max_vocab=10, min_freq=1, valid_pct=0.25, quiet=True)
    assert len(tc.vocab) <= 16 and 0.2 < len(tc.valid) / (len(tc.train) + len(tc.valid)) < 0.3
    assert (np.asarray(tc.train) == 0).any()  # words outside the 10-token vocab became xxunk


def test_tokenize_corpus_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="No corpus text found"):
        tokenize_corpus(tmp_path / "missing.txt", cache_dir=tmp_path)
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="No .txt files in corpus folder"):
        tokenize_corpus(tmp_path / "empty", cache_dir=tmp_path)
    blank = tmp_path / "blank.txt"
    blank.write_text("\n  \n\n")
    with pytest.raises(ValueError, match="no non-empty text"):
        tokenize_corpus(blank, cache_dir=tmp_path / "c", quiet=True)


TINY_PT = dict(arch=TINY, max_vocab=100, min_freq=1, valid_pct=0.1, bs=8, seq_len=12, lr=2e-2, drop_mult=0.0,
               quiet=True, threads=1, seed=0)


@pytest.mark.parametrize("softmax", ["sampled", "full"])
def test_pretraining_learns_the_corpus(corpus, softmax):
    lm = um.pretrain_lm(corpus, epochs=6, softmax=softmax, n_samples=8, **TINY_PT)
    # 12 words cycling: a model that learnt the cycle is far below the ~20-token uniform perplexity
    assert lm.metrics["perplexity"] < 4, lm.metrics
    assert lm.metrics["tokens_seen"] > 0 and lm.metrics["accuracy"] > 0.6
    assert set(lm.state_dict) >= {"0.encoder.weight", "1.decoder.weight", "1.decoder.bias"}


def test_pretraining_reports_progress_and_heldout_perplexity(corpus, capsys):
    um.pretrain_lm(corpus, epochs=1, **dict(TINY_PT, quiet=False, log_every=1e-6))
    out = capsys.readouterr().out
    assert "tokenised 300 lines" in out
    assert "pretrain step 1/" in out and "tokens/s" in out and "ETA" in out
    assert "held-out perplexity" in out


def test_pretrain_save_load_finetune_round_trip(corpus, data, tmp_path):
    base = um.pretrain_lm(corpus, epochs=1, **TINY_PT)
    d = base.save(tmp_path / "general")
    loaded = um.load_lm(d)
    assert loaded.vocab == base.vocab
    for k, v in base.state_dict.items():
        assert torch.equal(loaded.state_dict[k], v), k
    lm = um.finetune_lm(data, arch=TINY, pretrained=d, epochs=0, frozen_epochs=0, quiet=True, bs=32, seq_len=20)
    old = {t: i for i, t in enumerate(base.vocab)}
    emb_new, emb_old = lm.state_dict["0.encoder.weight"], base.state_dict["0.encoder.weight"]
    shared = [(i, old[t]) for i, t in enumerate(lm.vocab) if t in old]
    assert len(shared) >= 5  # xx-tokens and punctuation at least
    for i, j in shared:
        assert torch.equal(emb_new[i], emb_old[j])
    unseen = [i for i, t in enumerate(lm.vocab) if t not in old]
    assert unseen and torch.allclose(emb_new[unseen[0]], emb_old.mean(0))
    assert torch.equal(lm.state_dict["0.rnns.0.weight_hh_l0_raw"], base.state_dict["0.rnns.0.weight_hh_l0_raw"])


def test_half_precision_save_is_smaller_and_loads_as_float32(corpus, tmp_path):
    base = um.pretrain_lm(corpus, epochs=1, **TINY_PT)
    full, half = base.save(tmp_path / "f32"), base.save(tmp_path / "f16", half=True)
    assert (half / "lm.safetensors").stat().st_size < 0.6 * (full / "lm.safetensors").stat().st_size
    lm = um.load_lm(half)
    assert lm.state_dict["0.encoder.weight"].dtype == torch.float32
    assert torch.allclose(lm.state_dict["0.encoder.weight"], base.state_dict["0.encoder.weight"], atol=1e-2)
    assert torch.equal(lm.state_dict["1.decoder.weight"], lm.state_dict["0.encoder.weight"])  # tied copy restored


def test_pretrain_option_errors(corpus, tmp_path):
    with pytest.raises(ValueError, match="softmax must be 'sampled' or 'full'"):
        um.pretrain_lm(corpus, softmax="adaptive")
    with pytest.raises(ValueError, match="resume=True needs out_dir"):
        um.pretrain_lm(corpus, resume=True, **TINY_PT)
    with pytest.raises(FileNotFoundError, match="No pretraining checkpoint"):
        um.pretrain_lm(corpus, resume=True, out_dir=tmp_path / "none", **TINY_PT)
    with pytest.raises(ValueError, match="too few for bs=4096"):
        um.pretrain_lm(corpus, **dict(TINY_PT, bs=4096))
    with pytest.raises(TypeError, match=r"unknown config key pretrain\.epoch \(did you mean pretrain\.epochs\?\)"):
        um.pretrain_lm(corpus, epoch=2)


def _weights_equal(a: dict, b: dict) -> bool:
    return set(a) == set(b) and all(torch.equal(a[k], b[k]) for k in a)


def test_resume_after_sigkill_gives_the_uninterrupted_weights(corpus, tmp_path):
    """A real ``ulmfit-ml pretrain`` process is killed with SIGKILL after a checkpoint; resuming
    it ends with exactly the weights of a run that was never interrupted."""
    opts = dict(TINY_PT, bs=4, seq_len=8, epochs=12, checkpoint_every_steps=25)
    out = tmp_path / "run"
    sets = [f"--set=pretrain.{k}={json.dumps(v) if not isinstance(v, dict) else '{' + ', '.join(f'{a}={b}' for a, b in v.items()) + '}'}"
            for k, v in opts.items()]
    env = dict(os.environ, ULMFIT_ML_CACHE=os.environ["ULMFIT_ML_CACHE"])
    proc = subprocess.Popen([sys.executable, "-m", "ulmfit_ml.cli", "pretrain", str(corpus), "--out", str(out), *sets],
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    state = out / "checkpoint" / "state.json"
    deadline = time.time() + 120
    while time.time() < deadline and proc.poll() is None:
        if state.exists() and json.loads(state.read_text()).get("step", 0) >= 50:
            break
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL, proc.stderr.read().decode()[-2000:]
    info = json.loads(state.read_text())
    assert not info.get("finished") and 0 < info["step"] < info["total_steps"]
    resumed = um.pretrain_lm(corpus, out_dir=out, resume=True, **opts)
    straight = um.pretrain_lm(corpus, **opts)
    assert resumed.metrics["steps"] == straight.metrics["steps"]
    assert _weights_equal(resumed.state_dict, straight.state_dict)
    with pytest.raises(FileExistsError, match="already holds a pretraining checkpoint.*resume=True"):
        um.pretrain_lm(corpus, out_dir=out, **opts)


# ---------------------------------------------------------------------- fastai's WikiText-103 cache
def _fastai_wt103_fixture(home: Path, direction: str, vocab: list[str], seed: int) -> dict[str, torch.Tensor]:
    """Lay out ``$FASTAI_HOME/models/wt103-{fwd,bwd}/`` as fastai's ``untar_data(URLs.WT103_*, c_key='model')``
    leaves it: ``lstm_{fwd,bwd}.pth`` (a plain state dict with fastai's AWD-LSTM key names, the
    ``_raw`` weight-dropout copies and their ``module.`` twins) and ``itos_wt103.pkl`` (a pickled
    list of tokens). Paper sizes (emb 400, hidden 1152, 3 layers), small vocab."""
    g = torch.Generator().manual_seed(seed)
    emb, hid, V = 400, 1152, len(vocab)
    w: dict[str, torch.Tensor] = {}
    w["0.encoder.weight"] = torch.randn(V, emb, generator=g) * 0.1
    w["0.encoder_dp.emb.weight"] = w["0.encoder.weight"].clone()
    for i, (n_in, n_out) in enumerate([(emb, hid), (hid, hid), (hid, emb)]):
        w[f"0.rnns.{i}.weight_hh_l0_raw"] = torch.randn(4 * n_out, n_out, generator=g) * 0.01
        w[f"0.rnns.{i}.module.weight_ih_l0"] = torch.randn(4 * n_out, n_in, generator=g) * 0.01
        w[f"0.rnns.{i}.module.weight_hh_l0"] = w[f"0.rnns.{i}.weight_hh_l0_raw"].clone()
        w[f"0.rnns.{i}.module.bias_ih_l0"] = torch.randn(4 * n_out, generator=g) * 0.01
        w[f"0.rnns.{i}.module.bias_hh_l0"] = torch.randn(4 * n_out, generator=g) * 0.01
    w["1.decoder.weight"] = w["0.encoder.weight"].clone()
    w["1.decoder.bias"] = torch.randn(V, generator=g) * 0.1
    d = home / "models" / f"wt103-{direction}"
    d.mkdir(parents=True)
    torch.save(w, d / f"lstm_{direction}.pth")
    with open(d / "itos_wt103.pkl", "wb") as f:
        pickle.dump(list(vocab), f)
    return w


@pytest.mark.parametrize("backwards", [False, True])
def test_wikitext103_path_through_fastai_cache_offline(tmp_path, monkeypatch, data, backwards):
    from fastai.data.external import fastai_cfg

    import fastdownload

    home = tmp_path / "fastai_home"
    monkeypatch.setenv("FASTAI_HOME", str(home))
    fastai_cfg.cache_clear()
    monkeypatch.setattr(fastdownload.FastDownload, "download",
                        lambda *a, **k: pytest.fail("untar_data tried the network"))
    try:
        vocab = ["xxunk", "xxpad", "xxbos", "xxeos", "xxfld", "xxrep", "xxwrep", "xxup", "xxmaj",
                 "the", "a", "happy", "movie", "day", ".", "zzneverseen"] + [f"tok{i}" for i in range(48)]
        direction = "bwd" if backwards else "fwd"
        w = _fastai_wt103_fixture(home, direction, vocab, seed=int(backwards))
        lm = um.finetune_lm(data, arch="paper", pretrained=True, backwards=backwards, epochs=0, frozen_epochs=0,
                            quiet=True, bs=16, seq_len=20, device="cpu")
    finally:
        fastai_cfg.cache_clear()
    assert lm.backwards is backwards
    old = {t: i for i, t in enumerate(vocab)}
    emb = lm.state_dict["0.encoder.weight"]
    shared = [(i, old[t]) for i, t in enumerate(lm.vocab) if t in old]
    assert {"the", "a", "happy", "movie", "xxbos"} <= {lm.vocab[i] for i, _ in shared}
    for i, j in shared:  # shared tokens: the fixture's rows exactly
        assert torch.equal(emb[i], w["0.encoder.weight"][j])
        assert torch.equal(lm.state_dict["1.decoder.bias"][i], w["1.decoder.bias"][j])
    unseen = [i for i, t in enumerate(lm.vocab) if t not in old]
    assert unseen
    for i in unseen:  # match_embeds: the mean embedding
        assert torch.allclose(emb[i], w["0.encoder.weight"].mean(0))
    for k in ("0.rnns.0.weight_hh_l0_raw", "0.rnns.2.module.weight_ih_l0", "0.rnns.1.module.bias_hh_l0"):
        assert torch.equal(lm.state_dict[k], w[k]), k


# ---------------------------------------------------------------------- the shipped model
SHIPPED = lm_module.PRETRAINED_MODELS


@pytest.mark.parametrize("backwards", [False, True])
def test_shipped_model_loads_offline_with_its_vocab(backwards):
    d = lm_module.pretrained_model_dir("en-small", backwards=backwards)
    lm = um.load_lm(d)
    assert lm.backwards is backwards
    assert {"emb_sz": 200, "n_hid": 512, "n_layers": 2}.items() <= lm.arch.items()
    assert lm.vocab[:2] == ["xxunk", "xxpad"] and len(lm.vocab) > 5000 and "the" in lm.vocab
    assert lm.metrics["perplexity"] < 1000 and lm.metrics["tokens_seen"] > 1_000_000
    assert (d.parent / "MODEL_CARD.md").read_text().count("perplexity") >= 1
    size = sum(f.stat().st_size for f in d.parent.rglob("*") if f.is_file())
    other = lm_module.pretrained_model_dir("en-small", backwards=not backwards)
    assert size < 20e6 and other != d


def test_default_finetune_starts_from_the_shipped_model_and_reaches_the_classifier(data):
    shipped = um.load_lm(lm_module.pretrained_model_dir("en-small"))
    lm = um.finetune_lm(data, epochs=0, frozen_epochs=0, quiet=True, bs=32, seq_len=20, device="cpu")
    old = {t: i for i, t in enumerate(shipped.vocab)}
    shared = [(i, old[t]) for i, t in enumerate(lm.vocab) if t in old]
    assert len(shared) > 0.8 * len(lm.vocab)  # the synthetic words are ordinary English
    for i, j in shared:
        assert torch.equal(lm.state_dict["0.encoder.weight"][i], shipped.state_dict["0.encoder.weight"][j])
    clf = um.train_classifier(data, encoder=lm, unfreeze=(0,), epochs=(0,), lrs=(1e-3,), quiet=True, device="cpu",
                              bs=32, seq_len=20)
    enc = clf.model[0].module.state_dict()
    for k, v in lm.encoder_state_dict.items():
        assert torch.equal(enc[k], v), k


def test_named_model_errors(data):
    with pytest.raises(ValueError, match="pretrained='en-small' \\(the default\\) is an AWD-LSTM with arch.*pretrained=False"):
        um.finetune_lm(data, arch=TINY)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        um.finetune_lm(data, pretrained="en-large")


def test_resume_with_another_number_of_processes_fails(corpus, tmp_path):
    um.pretrain_lm(corpus, out_dir=tmp_path / "run", **TINY_PT, epochs=1, checkpoint_every_steps=2)
    state = tmp_path / "run" / "checkpoint" / "state.json"
    info = json.loads(state.read_text())
    assert info["world_size"] == 1
    state.write_text(json.dumps({**info, "world_size": 2}))
    with pytest.raises(ValueError, match=r"made by 2 process\(es\); resume it with as many \(this run has 1\)"):
        um.pretrain_lm(corpus, out_dir=tmp_path / "run", resume=True, **TINY_PT, epochs=1, checkpoint_every_steps=2)


# ---------------------------------------------------------------------- continued pretraining (init_from)
def test_continued_pretraining_keeps_the_start_model_and_runs_a_new_one_cycle(corpus, tmp_path):
    base = um.pretrain_lm(corpus, epochs=2, **TINY_PT)
    start = base.save(tmp_path / "start")
    more = tmp_path / "more.txt"  # the start corpus plus lines with a word the start vocabulary lacks
    more.write_text(corpus.read_text() + "omega " * 12 + "\n", encoding="utf-8")
    opts = dict(TINY_PT, quiet=False, log_every=1e-6, lr=2e-3, div=10.0, div_final=100.0, pct_start=0.25)
    lm = um.pretrain_lm(more, init_from=str(start), epochs=1, **opts)
    scratch = um.pretrain_lm(more, epochs=1, **dict(opts, min_freq=1))
    assert lm.vocab == base.vocab and "omega" not in lm.vocab  # the start model's ids, unknown words -> xxunk
    assert lm.config["init_from"] == str(start)
    assert lm.metrics["tokens_seen_total"] == base.metrics["tokens_seen"] + lm.metrics["tokens_seen"]
    # it starts where the start model stands, far below a run from random weights
    assert lm.history["train_loss"].iloc[0] < 0.7 * scratch.history["train_loss"].iloc[0]
    # the documented schedule: a fresh one-cycle from lr/div up to lr at pct_start, down to lr/div_final
    lrs = lm.history["lr"].to_numpy()
    n = len(lrs)
    assert lrs[0] == pytest.approx(2e-3 / 10, rel=0.05)
    assert lrs.max() == pytest.approx(2e-3, rel=0.05) and abs(int(lrs.argmax()) - 0.25 * n) <= 0.05 * n + 1
    assert lrs[-1] < 2e-3 / 10 and lrs[-1] == pytest.approx(2e-3 / 100, rel=0.5)


def test_continued_pretraining_from_a_shipped_name_reads_its_direction(tmp_path, monkeypatch):
    monkeypatch.setenv("ULMFIT_ML_CACHE", str(tmp_path / "cache"))
    f = tmp_path / "c.txt"
    f.write_text("\n".join(["the film was good and the story was not bad at all ."] * 200) + "\n", encoding="utf-8")
    shipped = um.load_lm(lm_module.pretrained_model_dir("en-small", backwards=True))
    lm = um.pretrain_lm(f, init_from="en-small", backwards=True, max_tokens=2 * 8 * 20, bs=8, seq_len=20,
                        valid_pct=0.0, quiet=True, lr=1e-9, threads=1)
    assert lm.backwards and lm.vocab == shipped.vocab
    assert torch.allclose(lm.state_dict["0.rnns.0.weight_hh_l0_raw"], shipped.state_dict["0.rnns.0.weight_hh_l0_raw"],
                          atol=1e-6)


def test_continued_pretraining_errors(corpus, tmp_path):
    start = um.pretrain_lm(corpus, epochs=1, **TINY_PT).save(tmp_path / "start")
    with pytest.raises(ValueError, match="is a forward model but this run has backwards=True"):
        um.pretrain_lm(corpus, init_from=str(start), backwards=True, **TINY_PT)
    with pytest.raises(ValueError, match=r"has arch .* pass arch="):
        um.pretrain_lm(corpus, init_from=str(start), **dict(TINY_PT, arch="tiny"))
    with pytest.raises(FileNotFoundError, match="init_from='nowhere': no language model there"):
        um.pretrain_lm(corpus, init_from="nowhere", **TINY_PT)
    with pytest.raises(ValueError, match=r"data_offset must be a fraction of an epoch in \[0, 1\)"):
        um.pretrain_lm(corpus, data_offset=1.5, **TINY_PT)
    other = tokenize_corpus(corpus, max_vocab=8, min_freq=1, valid_pct=0.0, quiet=True)
    with pytest.raises(ValueError, match="another vocabulary than init_from"):
        um.pretrain_lm(other, init_from=str(start), **TINY_PT)


def test_data_offset_starts_reading_inside_the_epoch(corpus, monkeypatch):
    from ulmfit_ml.models.lmsteps import TokenStream

    seen: list[int] = []
    real = TokenStream.batch
    monkeypatch.setattr(TokenStream, "batch", lambda self, i: (seen.append(i), real(self, i))[1])
    um.pretrain_lm(corpus, epochs=1, data_offset=0.5, **dict(TINY_PT, valid_pct=0.0))  # no held-out batches
    n = len(seen)
    assert seen[0] == round(0.5 * n) and sorted(seen) == list(range(n))  # every batch once, from the middle on


def test_appending_a_corpus_file_keeps_the_held_out_lines(tmp_path, monkeypatch):
    """The shipped model's card compares perplexities on the same held-out lines across sessions:
    a file added after the others leaves the earlier files' held-out part as it was."""
    monkeypatch.setenv("ULMFIT_ML_CACHE", str(tmp_path / "cache"))
    # large enough for full 500-line held-out blocks (a small corpus gets smaller blocks, sized to it)
    a, b = write_corpus(tmp_path / "a.txt", 4000, seed=1), write_corpus(tmp_path / "b.txt", 1200, seed=2)
    one = tokenize_corpus([a], max_vocab=100, min_freq=1, valid_pct=0.5, quiet=True)
    vocab = one.vocab
    two = tokenize_corpus([a, b], valid_pct=0.5, quiet=True, vocab=vocab)
    assert one.meta["valid_block_lines"] == two.meta["valid_block_lines"] == 500
    assert two.vocab == vocab and len(two.valid) > len(one.valid) > 0
    assert np.array_equal(np.asarray(two.valid[:len(one.valid)]), np.asarray(one.valid))


def test_warmup_stable_decay_schedule_holds_the_peak_then_decays(corpus):
    from ulmfit_ml.training.pretrain import lr_schedule

    cfg = um.PretrainConfig(lr=1e-2, div=10.0, div_final=100.0, pct_start=0.1, schedule="wsd", decay_pct=0.2)
    lr, mom = lr_schedule(cfg)
    assert lr(0.0) == pytest.approx(1e-3) and lr(0.05) < 1e-2 < lr(0.05) * 2.5  # cosine warm-up
    assert lr(0.1) == lr(0.5) == lr(0.79) == pytest.approx(1e-2)  # held at the peak
    assert lr(0.9) == pytest.approx((1e-2 + 1e-4) / 2) and lr(0.999) == pytest.approx(1e-4, rel=0.01)
    assert mom(0.5) == pytest.approx(0.7) and mom(0.999) == pytest.approx(0.8, rel=0.01)
    one, _ = lr_schedule(um.PretrainConfig(lr=1e-2, div=10.0, div_final=100.0, pct_start=0.1))
    assert one(0.5) < 1e-2 * 0.9  # one-cycle decays from the warm-up's end on
    lm = um.pretrain_lm(corpus, epochs=2, schedule="wsd", decay_pct=0.3, **dict(TINY_PT, log_every=1e-6))
    lrs = lm.history["lr"].to_numpy()
    assert (lrs == lrs.max()).sum() >= 0.4 * len(lrs) - 2  # the stable part
    with pytest.raises(ValueError, match="schedule must be 'one_cycle' or 'wsd'"):
        um.PretrainConfig(schedule="cosine")
    with pytest.raises(ValueError, match=r"decay_pct must be in \(0, 1 - pct_start\]"):
        um.PretrainConfig(schedule="wsd", pct_start=0.5, decay_pct=0.6)
