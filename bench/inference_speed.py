"""CPU inference speed and quality: what a fastai user gets vs ulmfit_ml's paths, one run, same model.

Model: the ULMFiT classifier of 4,000 GoEmotions train comments on the en-small LM fine-tuned on all
train texts (bench/transfer.py lm), arch "cpu" (emb 200, hidden 512). Texts: GoEmotions dev (5,426
comments). Sides, interleaved and repeated (median and min-max of the texts/s):

* ``fastai learn.predict``   one text at a time (a 200-text sample, it is slow);
* ``fastai get_preds``       ``learn.get_preds(dl=learn.dls.test_dl(texts))``;
* ``predict_proba``          ``clf.predict_proba(texts)`` (tokenise once, length-sorted batches);
* ``predict_proba int8``     ``clf.quantized().predict_proba(texts)`` (dynamic int8 LSTM/linear).

Quality: dev macro-F1 of each side's probabilities at the model's thresholds (tuned on its
validation split). Writes bench/inference_results.json and prints the table for bench/INFERENCE.md.

    python bench/inference_speed.py [--repeats 3]
    python bench/inference_speed.py --arch small --epochs 4   # ARCH_PRESETS["small"], random-init encoder
    python bench/inference_speed.py --arch paper --epochs 1   # the ULMFiT paper's size, random-init encoder

``--arch small`` / ``paper`` train the classifier from a random encoder of that size (no LM of
that size is shipped): the speed of each path is what is compared; the F1 column shows the paths
agree, not what a pretrained model of that size would score.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import ulmfit_ml as um  # noqa: E402
from transfer import lm_dir, load  # noqa: E402

OUT = HERE / "inference_results.json"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--n-train", type=int, default=4000)
    ap.add_argument("--arch", default="cpu", choices=("cpu", "small", "paper"))
    ap.add_argument("--epochs", type=int, default=4)
    ap.add_argument("--out", default=str(OUT))
    a = ap.parse_args()
    warnings.simplefilter("ignore")
    train, dev, names, _ = load()
    data = um.MultiLabelData.from_df(train.sample(a.n_train, random_state=0), label_col="labels", label_delim=",",
                                     labels=names, seed=0)
    encoder = um.load_lm(lm_dir(False, False)) if a.arch == "cpu" else None
    trainer = um.ClassifierTrainer(data, encoder=encoder, arch=a.arch, epochs=(a.epochs,), quiet=True, device="cpu")
    clf = trainer.train()
    learn = trainer.learner
    q = clf.quantized()
    texts = dev.text.tolist()
    y = um.MultiLabelData.from_df(dev, label_col="labels", label_delim=",", labels=names, split="random").y

    def f1(p: np.ndarray) -> float:
        return round(float(um.multilabel_report(y, p, clf.thresholds, labels=clf.labels).summary["f1_macro"]), 4)

    def get_preds() -> np.ndarray:
        with learn.no_bar():
            return learn.get_preds(dl=learn.dls.test_dl(texts))[0].numpy()

    sample = texts[:200]

    def predict_loop() -> np.ndarray:
        with learn.no_bar(), learn.no_logging():
            return np.stack([learn.predict(t)[2].numpy() for t in sample])

    sides = {"fastai learn.predict": (predict_loop, len(sample)), "fastai get_preds": (get_preds, len(texts)),
             "predict_proba": (lambda: clf.predict_proba(texts, bs=128), len(texts)),
             "predict_proba int8": (lambda: q.predict_proba(texts, bs=128), len(texts))}
    speed: dict[str, list[float]] = {k: [] for k in sides}
    probs: dict[str, np.ndarray] = {}
    for _ in range(a.repeats):  # interleaved: every side once per round
        for name, (fn, n) in sides.items():
            t0 = time.perf_counter()
            probs[name] = fn()
            speed[name].append(n / (time.perf_counter() - t0))
    base = float(np.median(speed["fastai get_preds"]))
    rows = {}
    for name in sides:
        s = speed[name]
        p = probs[name]
        rows[name] = {"texts_per_s_median": round(float(np.median(s)), 1), "min": round(min(s), 1), "max": round(max(s), 1),
                      "vs_get_preds": round(float(np.median(s)) / base, 2),
                      "dev_f1_macro": f1(p) if len(p) == len(texts) else None}
    rows["predict_proba int8"]["max_abs_prob_diff_vs_float"] = round(float(np.abs(probs["predict_proba int8"] - probs["predict_proba"]).max()), 4)
    rows["fastai get_preds"]["max_abs_prob_diff_vs_predict_proba"] = round(float(np.abs(probs["fastai get_preds"] - probs["predict_proba"]).max()), 6)
    res = {"rows": rows, "n_texts": len(texts), "repeats": a.repeats, "torch_threads": torch.get_num_threads(),
           "arch": clf.meta["arch"], "date": time.strftime("%Y-%m-%d %H:%M"),
           "machine": f"{platform.machine()}, {os.cpu_count()} CPU cores", "command": "python bench/inference_speed.py"}
    res["command"] = "python bench/inference_speed.py " + " ".join(sys.argv[1:])
    Path(a.out).write_text(json.dumps(res, indent=1))
    print("| side | texts/s (median, min-max) | vs get_preds | dev macro-F1 |\n|---|---|---|---|")
    for name, r in rows.items():
        print(f"| {name} | {r['texts_per_s_median']:.0f} ({r['min']:.0f}-{r['max']:.0f}) | {r['vs_get_preds']:.2f}x | "
              f"{r['dev_f1_macro'] if r['dev_f1_macro'] is not None else '-'} |")


if __name__ == "__main__":
    main()
