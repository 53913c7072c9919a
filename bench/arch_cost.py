"""What a wider AWD-LSTM or a larger vocabulary costs per token, side by side in one run (issue 22,
requirement 1: "measure whether a larger vocabulary or a wider model pays off ... per CPU minute").

    python bench/arch_cost.py [--rounds 3] [--batches 4] [--threads 1]

Four candidate shipped models: today's ``en-small`` size (arch ``cpu``: emb 200, hidden 512,
2 layers; 12,008-token vocabulary), the same with a 30,000-token vocabulary, a middle size
(emb 300, hidden 768, 2 layers) and the paper's AWD-LSTM (emb 400, hidden 1152, 3 layers), each
timed in the three stages a user's CPU pays for:

* ``pretrain``: one step of ``pretrain_lm``'s loop (sampled softmax, 1,024 negatives, batch 64 x 70);
* ``finetune``: one step of ``finetune_lm``'s fastai model (full softmax over the vocabulary,
  ``LMConfig``'s batch 64 x 72);
* ``classifier``: one step of ``train_classifier``'s model (batch 32 x 72 tokens, the default head,
  28 labels, BCE).

Random token ids (speed does not depend on which ids), AdamW, gradient clipping; the sides
alternate in rounds and every batch is timed; the figure is each side's median batch time (a load
burst on the shared machine hits one round, not the median). Also the parameters and the size of
the float16 weights ``bench/ship_pretrained.py`` would ship per direction (tied decoder left out).
From these, what each size would make of requirement 3's measured 10,000-text run (LM 547 s +
classifier 888 s on 2 cores) and of the campaign's 5,166 pretraining tokens/s. Appends to
``bench/arch_cost.json``.
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

from ulmfit_ml.models.classifier import build_classifier_model
from ulmfit_ml.models.lm import lm_arch_config
from ulmfit_ml.models.lmsteps import (
    build_pretrain_model,
    decoder_input,
    sampled_softmax_loss,
)
from ulmfit_ml.utils.config import ClassifierConfig, LMConfig, PretrainConfig

HERE = Path(__file__).resolve().parent
#: requirement 3's measured run (README "Defaults by size"): 10,000 texts of ~70 words, 2 threads
REQ3_LM_S, REQ3_CLF_S, REQ3_TOTAL_S = 547.0, 888.0, 1446.0
CAMPAIGN_TOKENS_PER_S = 5166.0  # the forward campaign run of session 3, arch cpu, one thread

SIDES: dict[str, tuple[dict, int]] = {
    "en-small size (cpu, 12k vocab)": ({"emb_sz": 200, "n_hid": 512, "n_layers": 2}, 12008),
    "cpu, 30k vocab": ({"emb_sz": 200, "n_hid": 512, "n_layers": 2}, 30000),
    "middle (300/768/2), 12k vocab": ({"emb_sz": 300, "n_hid": 768, "n_layers": 2}, 12008),
    "paper (400/1152/3), 12k vocab": ({"emb_sz": 400, "n_hid": 1152, "n_layers": 3}, 12008),
}


def _zipf(v: int) -> torch.Tensor:
    p = 1.0 / torch.arange(1, v + 1, dtype=torch.float64)
    return (p / p.sum()).float()


class Side:
    """The three models of one candidate, built once, stepped on demand."""

    def __init__(self, sizes: dict, vocab: int, n_out: int = 28) -> None:
        pcfg, lcfg, ccfg = PretrainConfig(), LMConfig(), ClassifierConfig()
        self.vocab, self.pcfg, self.lcfg, self.ccfg = vocab, pcfg, lcfg, ccfg
        arch = lm_arch_config(sizes)
        self.arch = arch
        self.lm = build_pretrain_model(vocab, arch, pcfg.drop_mult)
        self.lm_opt = torch.optim.AdamW(self.lm.parameters(), lr=1e-3)
        self.probs = _zipf(vocab)
        self.log_q = self.probs.log()
        self.clf = build_classifier_model(vocab, n_out, arch=arch, seq_len=ccfg.seq_len, max_len=ccfg.max_len,
                                          lin_ftrs=ccfg.lin_ftrs, drop_mult=ccfg.drop_mult)
        self.clf_opt = torch.optim.AdamW(self.clf.parameters(), lr=1e-3)
        self.n_out = n_out
        enc = self.lm[0]
        self.params = sum(p.numel() for p in enc.parameters()) + self.lm[1].decoder.bias.numel()
        self.ship_mb = 2 * self.params / 1e6  # float16, tied decoder weight not stored

    def _lm_step(self, bs: int, sl: int, full: bool) -> None:
        x = torch.randint(0, self.vocab, (bs, sl))
        y = torch.multinomial(self.probs, bs * sl, replacement=True)
        self.lm.train()
        self.lm[0].reset()
        h = decoder_input(self.lm, x).reshape(-1, self.arch["emb_sz"])
        dec = self.lm[1].decoder
        if full:
            loss = F.cross_entropy(F.linear(h, dec.weight, dec.bias), y)
        else:
            loss = sampled_softmax_loss(h, y, dec.weight, dec.bias, self.log_q, self.probs, self.pcfg.n_samples)
        self.lm_opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(self.lm.parameters(), 0.25)
        self.lm_opt.step()

    def step(self, stage: str) -> float:
        t0 = time.perf_counter()
        if stage == "pretrain":
            self._lm_step(self.pcfg.bs, self.pcfg.seq_len, full=False)
        elif stage == "finetune":
            self._lm_step(self.lcfg.bs, self.lcfg.seq_len, full=True)
        else:
            x = torch.randint(2, self.vocab, (self.ccfg.bs, self.ccfg.seq_len))
            y = (torch.rand(self.ccfg.bs, self.n_out) < 0.1).float()
            self.clf.train()
            self.clf[0].reset()
            out = self.clf(x)
            out = out[0] if isinstance(out, tuple) else out
            loss = F.binary_cross_entropy_with_logits(out, y)
            self.clf_opt.zero_grad(set_to_none=True)
            loss.backward()
            self.clf_opt.step()
        return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--batches", type=int, default=4)
    ap.add_argument("--threads", type=int, default=1)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    sides = {name: Side(sizes, v) for name, (sizes, v) in SIDES.items()}
    stages = ("pretrain", "finetune", "classifier")
    times: dict[tuple[str, str], list[float]] = {(n, s): [] for n in sides for s in stages}
    names = list(sides)
    for r in range(a.rounds):
        order = names[r % len(names):] + names[:r % len(names)]
        for stage in stages:
            for n in order:
                sides[n].step(stage)  # warm-up: one-off allocations
                times[(n, stage)] += [sides[n].step(stage) for _ in range(a.batches)]
        print(f"round {r + 1}/{a.rounds} done", flush=True)
    ref = names[0]
    med = {k: statistics.median(v) for k, v in times.items()}
    out = {}
    for n in names:
        row = {"params": sides[n].params, "ship_mb_per_direction": round(sides[n].ship_mb, 1)}
        for s in stages:
            q = np.percentile(times[(n, s)], [25, 75])
            row[s] = {"batch_ms_median": round(1000 * med[(n, s)], 1),
                      "batch_ms_iqr": [round(1000 * float(q[0]), 1), round(1000 * float(q[1]), 1)],
                      "x_en_small": round(med[(n, s)] / med[(ref, s)], 2)}
        r_pre, r_ft, r_clf = (row[s]["x_en_small"] for s in stages)
        row["req3_10k_texts_min_est"] = round((REQ3_TOTAL_S + REQ3_LM_S * (r_ft - 1) + REQ3_CLF_S * (r_clf - 1)) / 60, 1)
        row["pretrain_tokens_per_cpu_hour_est_M"] = round(CAMPAIGN_TOKENS_PER_S / r_pre * 3600 / 1e6, 1)
        out[n] = row
        print(f"{n:34s} {row['params'] / 1e6:5.1f}M params, {row['ship_mb_per_direction']:5.1f} MB | "
              + " | ".join(f"{s} {row[s]['batch_ms_median']:7.0f} ms x{row[s]['x_en_small']:.2f}" for s in stages)
              + f" | 10k texts ~{row['req3_10k_texts_min_est']} min | {row['pretrain_tokens_per_cpu_hour_est_M']}M tokens/h")
    append_record(HERE / "arch_cost.json", {
           "torch_threads": a.threads, "rounds": a.rounds, "batches_per_round": a.batches,
           "command": f"python bench/arch_cost.py --rounds {a.rounds} --batches {a.batches} --threads {a.threads}",
           "sides": out})


if __name__ == "__main__":
    main()
