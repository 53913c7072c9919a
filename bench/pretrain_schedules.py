"""Which schedule should a continued pretraining session use? One-cycle restarted from the shipped
weights vs warmup-stable-decay, at the same token budget, from the same start, on the same tokens.

    ULMFIT_ML_CACHE=bench/_work/cache python bench/pretrain_schedules.py --tokens 1500000

Each run continues the shipped forward ``en-small`` (``init_from``) over the extended english-web
corpus (newsgroups last, so the held-out tokens are the model card's), one torch thread, and
reports the held-out perplexity (full softmax, the card's 199,360 tokens). Results go to
``bench/pretrain_schedules.json`` (replaced atomically; our own file).
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

import ulmfit_ml as um
from ulmfit_ml.models import lm as lm_module  # noqa: E402

HERE = Path(__file__).resolve().parent
CORPUS = HERE.parent.parent / "shared" / "corpora" / "english-web"
FILES = [CORPUS / "imdb_unsup_reviews.txt", CORPUS / "wikipedia.txt", CORPUS / "newsgroups.txt"]
SCHEDULES = {
    "one_cycle": dict(schedule="one_cycle", pct_start=0.1),
    "wsd": dict(schedule="wsd", pct_start=0.1, decay_pct=0.2),
}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tokens", type=int, default=1_500_000)
    ap.add_argument("--lr", type=float, default=3e-3)
    ap.add_argument("--data-offset", type=float, default=0.7)
    args = ap.parse_args()
    start = um.load_lm(lm_module.pretrained_model_dir("en-small"))
    out = {"start": {"tokens_seen_total": start.metrics.get("tokens_seen_total", start.metrics["tokens_seen"]),
                     "perplexity": start.metrics["perplexity"]},
           "tokens": args.tokens, "lr": args.lr, "machine": f"{platform.machine()}, {os.cpu_count()} CPU cores",
           "date": time.strftime("%Y-%m-%d %H:%M"), "runs": {}}
    for name, opts in SCHEDULES.items():
        lm = um.pretrain_lm(FILES, init_from="en-small", max_tokens=args.tokens, lr=args.lr, threads=1, quiet=True,
                            data_offset=args.data_offset, checkpoint_every=None, **opts)
        m = lm.metrics
        out["runs"][name] = {**opts, "perplexity": round(m["perplexity"], 3), "accuracy": round(m["accuracy"], 4),
                             "tokens_seen": m["tokens_seen"], "seconds": m["train_seconds"]}
        print(name, out["runs"][name], flush=True)
    path = HERE / "pretrain_schedules.json"
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(out, indent=1) + "\n")
    os.replace(tmp, path)


if __name__ == "__main__":
    main()
