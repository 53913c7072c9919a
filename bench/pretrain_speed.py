"""Pretraining throughput, side by side in one run: v0.1's LM loop vs ulmfit_ml's pretraining loop.

    python bench/pretrain_speed.py [--rounds 5] [--batches 12] [--threads 1]

Same corpus slice (the cached english-web token ids), same AWD-LSTM (arch "cpu"), same
12,000-token vocabulary, same batch (64 x 70 tokens), same torch thread count:

* ``fastai Learner, full softmax``: what v0.1's ``pretrain_lm`` ran: fastai's
  ``language_model_learner`` over ``LMDataLoader`` (texts in RAM), one-cycle ``fit``;
* ``ulmfit_ml loop, full softmax``: the new loop (memory-mapped ids) with the full softmax;
* ``ulmfit_ml loop, sampled softmax``: the new loop as ``pretrain_lm`` runs it by default.

The sides alternate in rounds (A, B, C, A, B, C, ...); every batch is timed and tokens/s comes
from the median batch time of each side (a load burst on this shared 2-core machine hits one
round, not the median). Results are appended to bench/pretrain_speed.json.
"""
from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from records import append_record  # bench/records.py

from ulmfit_ml.data.corpus import tokenize_corpus
from ulmfit_ml.models.lm import lm_arch_config
from ulmfit_ml.models.lmsteps import (
    TokenStream,
    build_pretrain_model,
    decoder_input,
    sampled_softmax_loss,
)
from ulmfit_ml.utils.config import PretrainConfig

HERE = Path(__file__).resolve().parent
CORPUS = HERE.parent.parent / "shared" / "corpora" / "english-web"


def time_ulmfit_loop(tc, cfg: PretrainConfig, softmax: str, n: int, start: int) -> list[float]:
    arch = lm_arch_config(cfg.arch)
    model = build_pretrain_model(len(tc.vocab), arch, cfg.drop_mult)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, betas=(0.8, 0.99), eps=1e-5, weight_decay=cfg.wd)
    probs = torch.tensor(tc.counts, dtype=torch.float64).clamp_min(1) ** 0.75
    probs = (probs / probs.sum()).float()
    log_q = probs.log()
    stream = TokenStream(tc.train, cfg.bs, cfg.seq_len, False)
    model.train()
    model[0].reset()
    times = []
    for i in range(start, start + n):
        t0 = time.perf_counter()
        x, y = stream.batch(i)
        h = decoder_input(model, x).reshape(-1, arch["emb_sz"])
        dec = model[1].decoder
        if softmax == "sampled":
            loss = sampled_softmax_loss(h, y.reshape(-1), dec.weight, dec.bias, log_q, probs, cfg.n_samples)
        else:
            loss = F.cross_entropy(F.linear(h, dec.weight, dec.bias), y.reshape(-1))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.clip)
        opt.step()
        times.append(time.perf_counter() - t0)
    return times[1:]  # the first batch pays one-off allocations


def fastai_learner(tc, cfg: PretrainConfig, n_tokens: int):
    """v0.1's pretraining path: fastai LM DataLoaders over token lists + language_model_learner."""
    from fastai.callback.core import Callback
    from fastai.text.learner import language_model_learner
    from fastai.text.models.awdlstm import AWD_LSTM

    from ulmfit_ml.data.core import lm_dataloaders_from_tokens
    from ulmfit_ml.utils.arch import scale_dropouts

    ids = np.asarray(tc.train[:n_tokens])
    # back to token strings, cut into texts at xxbos (what v0.1 kept in RAM)
    toks = [tc.vocab[i] for i in ids]
    texts, cur = [], []
    for t in toks:
        if t == "xxbos" and cur:
            texts.append(cur)
            cur = []
        cur.append(t)
    texts.append(cur)
    dls = lm_dataloaders_from_tokens(texts, bs=cfg.bs, seq_len=cfg.seq_len, min_freq=1, max_vocab=len(tc.vocab) + 8,
                                     vocab=tc.vocab, valid_pct=0.01, seed=0, device="cpu")
    learn = language_model_learner(dls, AWD_LSTM, config=scale_dropouts(lm_arch_config(cfg.arch), cfg.drop_mult),
                                   drop_mult=1.0, pretrained=False, wd=cfg.wd)

    class BatchClock(Callback):
        order = 100

        def before_fit(self):
            self.times, self.t = [], None

        def before_batch(self):
            if self.training:
                self.t = time.perf_counter()

        def after_step(self):
            if self.training and self.t is not None:
                self.times.append(time.perf_counter() - self.t)

    return learn, BatchClock


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--batches", type=int, default=12)
    ap.add_argument("--threads", type=int, default=1)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    cfg = PretrainConfig()
    tc = tokenize_corpus(CORPUS, max_vocab=cfg.max_vocab, min_freq=cfg.min_freq, valid_pct=cfg.valid_pct, quiet=True)
    learn, Clock = fastai_learner(tc, cfg, n_tokens=cfg.bs * cfg.seq_len * (a.batches + 2) * 2)
    from fastai.callback.training import ShortEpochCallback

    sides = {"fastai Learner, full softmax (v0.1 pretrain_lm)": [], "ulmfit_ml loop, full softmax": [],
             "ulmfit_ml loop, sampled softmax (default)": []}
    names = list(sides)
    for r in range(a.rounds):
        order = names[r % 3:] + names[:r % 3]
        for side in order:
            if side.startswith("fastai"):
                clock = Clock()
                n_b = len(learn.dls.train)
                with learn.no_bar(), learn.no_logging():
                    learn.fit(1, 1e-3, cbs=[clock, ShortEpochCallback(pct=min(1.0, (a.batches + 1) / n_b))])
                sides[side] += clock.times[1:]
            else:
                sides[side] += time_ulmfit_loop(tc, cfg, "full" if "full" in side else "sampled", a.batches + 1,
                                                start=r * (a.batches + 1))
    tok = cfg.bs * cfg.seq_len
    out = {}
    for side, ts in sides.items():
        med = statistics.median(ts)
        q = np.percentile(ts, [25, 75])
        out[side] = {"tokens_per_s": round(tok / med, 1), "batch_ms_median": round(1000 * med, 1),
                     "batch_ms_iqr": [round(1000 * float(q[0]), 1), round(1000 * float(q[1]), 1)], "batches": len(ts)}
    ref = out[names[0]]["tokens_per_s"]
    for side in out:
        out[side]["ratio_vs_v0.1"] = round(out[side]["tokens_per_s"] / ref, 2)
        print(f"{side:48s} {out[side]['tokens_per_s']:8,.0f} tokens/s  median batch {out[side]['batch_ms_median']:.0f} ms "
              f"(IQR {out[side]['batch_ms_iqr']})  x{out[side]['ratio_vs_v0.1']:.2f}")
    append_record(HERE / "pretrain_speed.json", {
           "torch_threads": a.threads, "rounds": a.rounds, "batches_per_round": a.batches,
           "setting": f"arch cpu, vocab {len(tc.vocab)}, bs {cfg.bs} x seq_len {cfg.seq_len}",
           "command": f"python bench/pretrain_speed.py --rounds {a.rounds} --batches {a.batches} --threads {a.threads}",
           "sides": out})


if __name__ == "__main__":
    main()
