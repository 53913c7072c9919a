"""Issue 15 on real data: multi-category heads and multi-target regression vs TF-IDF baselines.

Each job appends its figures to ``bench/targets_results.json`` (one key per job, a killed job is
simply re-run); ``report`` writes ``bench/TARGETS.md``. All figures are on dev rows never seen in
training; the validation split (10 % of the training sample) only reports epochs.

    python bench/targets_bench.py category --n 8000       # GoEmotions ekman (7) + sentiment (4)
    python bench/targets_bench.py regression --n 3000     # imdb-ratings: stars (+ length in words)
    python bench/targets_bench.py tokenizer --tok spacy --n 8000          # GoEmotions 28 labels, LM from scratch
    python bench/targets_bench.py tokenizer --tok sentencepiece --n 8000  # the same budget with subword tokens
    python bench/targets_bench.py report

Multi-category frame: the GoEmotions comments whose Ekman scheme and sentiment-group scheme each
give exactly one label (``goemotions/ekman``, ``goemotions/group``). ULMFiT uses the en-small LM
fine-tuned on the 43k GoEmotions train texts (``bench/transfer.py lm``; no labels, no dev text).
Regression: ULMFiT fine-tunes en-small on the training sample's reviews for one epoch, then trains
the regressor (both targets at once); TF-IDF + ridge regression (one per target) on the same rows,
and on all 25,000 training reviews as a reference.
Tokenizers: spaCy words vs SentencePiece (8,000 pieces) on GoEmotions' 28 labels at the same budget:
an LM trained from scratch on the training sample's texts (4 epochs), then the classifier (8 epochs);
thresholds tuned on the validation split (10 % of the sample); dev macro-F1.
"""
from __future__ import annotations

import argparse
import csv
import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from scipy import stats
from sklearn import metrics as skm
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.linear_model import LogisticRegression, Ridge

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import transfer  # noqa: E402  (bench/transfer.py: the results-file writer)
import ulmfit_ml as um  # noqa: E402

SHARED = HERE.parent.parent / "shared" / "datasets"
RESULTS = HERE / "targets_results.json"
GOEMO_LM = HERE / "_work" / "lm-goemotions-ensmall-fwd"


def save_result(key: str, value: dict[str, Any]) -> None:
    transfer.save_result(key, value, path=RESULTS, tag="targets")


# ---------------------------------------------------------------------- data
def _scheme(split: str, scheme: str) -> pd.DataFrame:
    d = SHARED / "goemotions" / scheme
    names = [ln.strip() for ln in (d / "labels.txt").read_text().splitlines() if ln.strip()]
    df = pd.read_csv(d / f"{split}.tsv", sep="\t", header=None, names=["text", "ids", "id"], quoting=csv.QUOTE_NONE,
                     dtype=str, keep_default_na=False)
    one = ~df["ids"].str.contains(",") & (df["ids"] != "")
    df = df[one].copy()
    df[scheme] = [names[int(i)] for i in df["ids"]]
    return df[["id", "text", scheme]]


def category_frame(split: str) -> pd.DataFrame:
    """Comments with exactly one Ekman label and exactly one sentiment group."""
    ek, gr = _scheme(split, "ekman"), _scheme(split, "group")
    df = ek.merge(gr[["id", "group"]], on="id").rename(columns={"group": "sentiment"})
    return df.reset_index(drop=True)


def imdb(split: str) -> pd.DataFrame:
    df = pd.read_csv(SHARED / "imdb-ratings" / f"{split}.csv")
    df["n_words"] = df["text"].str.split().str.len().astype(float)  # a second target, for several at once
    return df


# ---------------------------------------------------------------------- jobs
def job_category(n: int, seed: int, epochs: int, class_weight: str | None = None) -> None:
    train_all, dev = category_frame("train"), category_frame("dev")
    train = train_all.sample(n=min(n, len(train_all)), random_state=seed).reset_index(drop=True)
    cols = ["ekman", "sentiment"]
    out: dict[str, Any] = {"n_train": len(train), "n_dev": len(dev), "n_train_available": len(train_all),
                           "categories": {c: sorted(train[c].unique().tolist()) for c in cols}}
    t0 = time.perf_counter()
    vec = TfidfVectorizer(ngram_range=(1, 2), min_df=2, sublinear_tf=True, max_features=200_000)
    xtr, xdev = vec.fit_transform(train.text), vec.transform(dev.text)
    for name, cw in (("tfidf", "balanced"), ("tfidf_unweighted", None)):
        tfidf = {}
        for c in cols:
            lr = LogisticRegression(C=4.0, max_iter=2000, class_weight=cw).fit(xtr, train[c])
            pred = lr.predict(xdev)
            tfidf[c] = {"accuracy": float(skm.accuracy_score(dev[c], pred)),
                        "f1_macro": float(skm.f1_score(dev[c], pred, average="macro"))}
        out[name] = {**tfidf, "seconds": time.perf_counter() - t0, "class_weight": cw}
    t0 = time.perf_counter()
    data = um.MultiLabelData.from_df(train, category_cols=cols, valid_pct=0.1, seed=seed)
    lm = um.load_lm(GOEMO_LM)
    clf = um.train_classifier(data, encoder=lm, epochs=(epochs,), quiet=True, seed=seed, class_weight=class_weight)
    train_s = time.perf_counter() - t0
    rep = clf.report(dev)
    out["ulmfit"] = {**{c: {"accuracy": rep.summary[f"{c}_accuracy"], "f1_macro": rep.summary[f"{c}_f1_macro"]} for c in cols},
                     "seconds": train_s, "epochs": epochs, "encoder": str(GOEMO_LM.relative_to(HERE.parent)),
                     "class_weight": class_weight,
                     "history": clf.history.round(4).to_dict(orient="records")}
    save_result(f"category n={n} seed={seed}" + (f" class_weight={class_weight}" if class_weight else ""), out)


def job_regression(n: int, seed: int, epochs: int, n_dev: int) -> None:
    train_all, dev_all = imdb("train"), imdb("dev")
    train = train_all.sample(n=min(n, len(train_all)), random_state=seed).reset_index(drop=True)
    dev = dev_all.sample(n=min(n_dev, len(dev_all)), random_state=seed).reset_index(drop=True)
    cols = ["rating", "n_words"]
    out: dict[str, Any] = {"n_train": len(train), "n_dev": len(dev), "targets": cols}

    def scores(y: np.ndarray, pred: np.ndarray) -> dict[str, float]:
        return {"mae": float(skm.mean_absolute_error(y, pred)), "rmse": float(np.sqrt(skm.mean_squared_error(y, pred))),
                "r2": float(skm.r2_score(y, pred)), "spearman": float(stats.spearmanr(y, pred).statistic)}

    for name, rows in (("tfidf", train), ("tfidf_all_25k", train_all)):
        t0 = time.perf_counter()
        vec = TfidfVectorizer(ngram_range=(1, 2), min_df=2, sublinear_tf=True, max_features=200_000)
        xtr, xdev = vec.fit_transform(rows.text), vec.transform(dev.text)
        res = {}
        for c in cols:
            r = Ridge(alpha=1.0).fit(xtr, rows[c])
            lo, hi = rows[c].min(), rows[c].max()
            res[c] = scores(dev[c].to_numpy(), np.clip(r.predict(xdev), lo, hi))
        out[name] = {**res, "seconds": time.perf_counter() - t0, "n_train": len(rows)}
    t0 = time.perf_counter()
    data = um.MultiLabelData.from_df(train, target_cols=cols, valid_pct=0.1, seed=seed)
    lm = um.finetune_lm(data, epochs=1, quiet=True, seed=seed)
    lm_s = time.perf_counter() - t0
    reg = um.train_classifier(data, encoder=lm, epochs=(epochs,), quiet=True, seed=seed)
    train_s = time.perf_counter() - t0
    pred = reg.predict(dev.text)
    out["ulmfit"] = {**{c: scores(dev[c].to_numpy(), pred[:, j]) for j, c in enumerate(cols)},
                     "seconds": train_s, "lm_seconds": lm_s, "epochs": epochs,
                     "history": reg.history.round(4).to_dict(orient="records")}
    save_result(f"regression n={n} seed={seed}", out)


def job_tokenizer(tok: str, n: int, seed: int, epochs: int) -> None:
    d = SHARED / "goemotions"
    names = [ln.strip() for ln in (d / "labels.txt").read_text().splitlines() if ln.strip()]

    def read(split: str) -> pd.DataFrame:
        df = pd.read_csv(d / f"{split}.tsv", sep="\t", header=None, names=["text", "ids", "id"], quoting=csv.QUOTE_NONE,
                         dtype=str, keep_default_na=False)
        return df.assign(labels=[",".join(names[int(i)] for i in c.split(",") if i) for c in df.ids])

    train = read("train").sample(n=n, random_state=seed).reset_index(drop=True)
    dev = read("dev")
    t0 = time.perf_counter()
    data = um.MultiLabelData.from_df(train, label_col="labels", label_delim=",", labels=names, valid_pct=0.1,
                                     seed=seed, tokenizer=tok)
    lm = um.finetune_lm(data, pretrained=False, epochs=4, quiet=True, seed=seed)
    lm_s = time.perf_counter() - t0
    clf = um.train_classifier(data, encoder=lm, epochs=(epochs,), quiet=True, seed=seed)
    s = clf.evaluate(dev)
    n_tok = sum(len(t) for t in data.tokens) / len(data.tokens)
    save_result(f"tokenizer {tok} n={n} seed={seed}", {
        "tokenizer": repr(lm.tokenizer), "lm_vocab": len(lm.vocab), "tokens_per_text": round(n_tok, 1),
        "lm_perplexity": lm.metrics.get("perplexity"), "dev_f1_macro": s["f1_macro"], "dev_f1_micro": s["f1_micro"],
        "dev_roc_auc_macro": s["roc_auc_macro"], "lm_seconds": lm_s, "seconds": time.perf_counter() - t0,
        "classifier_epochs": epochs, "n_train": n, "n_dev": len(dev)})


# ---------------------------------------------------------------------- report
def report() -> None:
    res = json.loads(RESULTS.read_text())
    lines = ["# Multi-category heads and regression on real data (issue 15)", "",
             "Written by `python bench/targets_bench.py report` from `bench/targets_results.json`; the commands "
             "and data are in the script's docstring. Dev rows are never used for training or selection.", ""]
    for key, r in sorted(res.items()):
        if key.startswith("category"):
            lines += [f"## {key}: GoEmotions ekman + sentiment ({r['n_train']} training comments, {r['n_dev']} dev)", "",
                      f"{r['date']}, {r['machine']}. ULMFiT: {r['ulmfit']['epochs']} epochs, "
                      f"class_weight={r['ulmfit'].get('class_weight')}, {r['ulmfit']['seconds'] / 60:.1f} min; "
                      f"TF-IDF + logistic regression per column: {r['tfidf']['seconds']:.0f} s.", "",
                      "| column | model | accuracy | macro-F1 |", "| --- | --- | --- | --- |"]
            for c in ("ekman", "sentiment"):
                for name, label in (("ulmfit", f"ULMFiT (class_weight={r['ulmfit'].get('class_weight')})"),
                                    ("tfidf", "TF-IDF + LR, class_weight=balanced"),
                                    ("tfidf_unweighted", "TF-IDF + LR, unweighted")):
                    if name in r:
                        lines.append(f"| {c} ({len(r['categories'][c])}) | {label} | {r[name][c]['accuracy']:.3f} | "
                                     f"{r[name][c]['f1_macro']:.3f} |")
            lines.append("")
        elif key.startswith("regression"):
            lines += [f"## {key}: imdb-ratings ({r['n_train']} training reviews, {r['n_dev']} dev)", "",
                      f"{r['date']}, {r['machine']}. ULMFiT: LM fine-tuning 1 epoch + {r['ulmfit']['epochs']} "
                      f"regressor epochs, {r['ulmfit']['seconds'] / 60:.1f} min in all.", "",
                      "| target | model | MAE | RMSE | R^2 | Spearman |", "| --- | --- | --- | --- | --- | --- |"]
            for c in r["targets"]:
                for name, label in (("ulmfit", "ULMFiT"), ("tfidf", "TF-IDF + ridge (same rows)"),
                                    ("tfidf_all_25k", f"TF-IDF + ridge (all {r['tfidf_all_25k']['n_train']})")):
                    s = r[name][c]
                    lines.append(f"| {c} | {label} | {s['mae']:.3f} | {s['rmse']:.3f} | {s['r2']:.3f} | {s['spearman']:.3f} |")
            lines.append("")
    tok = {k: r for k, r in sorted(res.items()) if k.startswith("tokenizer")}
    if tok:
        lines += ["## Tokenizers: spaCy words vs SentencePiece subwords (GoEmotions, 28 labels)", "",
                  "LM from scratch on the training sample's texts (4 epochs), classifier 8 epochs, thresholds tuned on "
                  "the validation split; dev figures. Same data, seed and budget for both.", "",
                  "| tokenizer | training comments | LM vocab | tokens per text | LM perplexity | dev macro-F1 | dev micro-F1 "
                  "| dev ROC-AUC | time |", "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
        for k, r in tok.items():
            lines.append(f"| {r['tokenizer']} | {r['n_train']} | {r['lm_vocab']} | {r['tokens_per_text']} | "
                         f"{r['lm_perplexity']:.1f} | {r['dev_f1_macro']:.3f} | {r['dev_f1_micro']:.3f} | "
                         f"{r['dev_roc_auc_macro']:.3f} | {r['seconds'] / 60:.1f} min |")
        lines += ["", "Perplexities are not comparable across tokenizers (a piece is not a word).", ""]
    (HERE / "TARGETS.md").write_text("\n".join(lines), encoding="utf-8")
    print("\n".join(lines))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("job", choices=("category", "regression", "tokenizer", "report"))
    ap.add_argument("--tok", choices=("spacy", "sentencepiece"), default="spacy")
    ap.add_argument("--class-weight", choices=("balanced",), default=None)
    ap.add_argument("--n", type=int, default=8000)
    ap.add_argument("--n-dev", type=int, default=2000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--epochs", type=int, default=8)
    a = ap.parse_args()
    if a.job == "category":
        job_category(a.n, a.seed, a.epochs, a.class_weight)
    elif a.job == "regression":
        job_regression(a.n, a.seed, a.epochs, a.n_dev)
    elif a.job == "tokenizer":
        job_tokenizer(a.tok, a.n, a.seed, a.epochs)
    else:
        report()


if __name__ == "__main__":
    sys.exit(main())
