"""Issue 22, "defaults that scale in time": ``finetune_lm(data)`` + ``train_classifier(data,
encoder=lm)`` with every default, on N labelled texts of about 70 words, timed stage by stage.

Texts: IMDb reviews (``../shared/datasets/imdb-ratings``) cut to their first 70 words; three 0/1
labels from the star rating (``positive`` >= 7, ``negative`` <= 4, ``extreme`` 1 or 10), so the
texts have the length the issue names and the labels a learnable signal. Each run appends its
figures to ``bench/scale_timing.json`` under ``n=<N>/threads=<T>``.

    python bench/scale_timing.py --n 10000 --threads 2
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

import numpy as np
import pandas as pd

HERE = Path(__file__).resolve().parent
DATA = HERE.parent.parent / "shared" / "datasets" / "imdb-ratings"
RESULTS = HERE / "scale_timing.json"
WORDS = 70


def frame(path: Path, n: int, seed: int) -> pd.DataFrame:
    df = pd.read_csv(path).sample(n=n, random_state=seed)
    text_col = "text" if "text" in df.columns else "review"
    rating = df["rating"].astype(int)
    return pd.DataFrame({"text": df[text_col].map(lambda t: " ".join(str(t).split()[:WORDS])).to_numpy(),
                         "positive": (rating >= 7).astype(int).to_numpy(), "negative": (rating <= 4).astype(int).to_numpy(),
                         "extreme": rating.isin([1, 10]).astype(int).to_numpy()})


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=10000)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args()
    import torch

    torch.set_num_threads(a.threads)
    import ulmfit_ml as um

    train, dev = frame(DATA / "train.csv", a.n, a.seed), frame(DATA / "dev.csv", 2000, a.seed)
    labels = ["positive", "negative", "extreme"]
    t0 = time.perf_counter()
    data = um.MultiLabelData.from_df(train, label_cols=labels)
    _ = data.tokens
    t1 = time.perf_counter()
    print(f"tokenised {a.n} texts in {t1 - t0:.0f} s", flush=True)
    lm = um.finetune_lm(data, quiet=True)
    t2 = time.perf_counter()
    print(f"finetune_lm: {t2 - t1:.0f} s (vocab {len(lm.vocab)}, perplexity {lm.metrics['perplexity']:.1f})", flush=True)
    clf = um.train_classifier(data, encoder=lm)  # one line per epoch in a log (not a terminal)
    t3 = time.perf_counter()
    print(f"train_classifier: {t3 - t2:.0f} s", flush=True)
    r = clf.evaluate(dev)
    base = um.TfidfBaseline().fit(data)
    rb = base.evaluate(dev)
    words = [len(t.split()) for t in train["text"]]
    out = {"n_texts": a.n, "mean_words": round(float(np.mean(words)), 1), "threads": a.threads,
           "seconds_tokenise": round(t1 - t0, 1), "seconds_finetune_lm": round(t2 - t1, 1),
           "seconds_train_classifier": round(t3 - t2, 1), "seconds_total": round(t3 - t0, 1),
           "lm_vocab": len(lm.vocab), "lm_perplexity": round(lm.metrics["perplexity"], 2),
           "lm_epochs_after_the_frozen_one": lm.config.get("epochs"),
           "classifier_epochs": clf.meta["config"]["epochs"],
           "dev_f1_macro": round(float(r["f1_macro"]), 4), "tfidf_dev_f1_macro": round(float(rb["f1_macro"]), 4),
           "date": time.strftime("%Y-%m-%d %H:%M"), "machine": f"{platform.machine()}, {os.cpu_count()} CPU cores",
           "command": f"python bench/scale_timing.py --n {a.n} --threads {a.threads}"}
    res = json.loads(RESULTS.read_text()) if RESULTS.exists() else {}
    from ulmfit_ml.training.schedule import CLASSIFIER_STEP_FLOOR, CLASSIFIER_TOKEN_BUDGET

    res[f"n={a.n}/threads={a.threads}/budget={CLASSIFIER_TOKEN_BUDGET / 1e6:g}M/steps={CLASSIFIER_STEP_FLOOR}"] = out
    tmp = RESULTS.with_suffix(".tmp")
    tmp.write_text(json.dumps(res, indent=1, sort_keys=True))
    os.replace(tmp, RESULTS)
    print(json.dumps(out), flush=True)


if __name__ == "__main__":
    main()
