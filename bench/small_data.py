"""Issue 22's small-data recipe: which change makes ULMFiT beat TF-IDF at 500 and 2,000 labels?

The user path, nothing else: ``n`` labelled texts sampled from a dataset's training part, the
default split (20% of them for validation, where thresholds are tuned), ``finetune_lm(data)``
(on those texts only, plus ``extra_texts`` when a variant says so), ``train_classifier(data,
encoder=lm)``; figures on the dataset's dev part, which no threshold ever sees. TF-IDF gets the
same rows and the same validation split. Each run appends one key to
``bench/small_data_results.json`` (dataset/n/seed/variant), so runs can be split over processes.

    python bench/small_data.py run --dataset goemotions --n 500 --seeds 0,1,2 --variants base,vocab
    python bench/small_data.py blend --dataset goemotions --n 500 --seeds 0,1,2 --variants defaults
    python bench/small_data.py report            # median (min-max) per dataset, size and variant
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import ulmfit_ml as um  # noqa: E402
from run_bench import read_goemotions  # noqa: E402
from ulmfit_ml.evaluation.metrics import multilabel_report  # noqa: E402
from ulmfit_ml.evaluation.thresholds import tune_thresholds  # noqa: E402
from ulmfit_ml.models.ensemble import average_probabilities  # noqa: E402

SHARED = HERE.parent.parent / "shared" / "datasets"
RESULTS = HERE / "small_data_results.json"
#: each variant: finetune_lm options, train_classifier options, and whether the LM also reads the
#: pool's other (unlabelled) texts
VARIANTS: dict[str, dict[str, Any]] = {
    "base": dict(lm=dict(pretrained_vocab="drop"), clf={}),  # v0.2's defaults (the LM's vocab: the texts' tokens only)
    "defaults": dict(lm={}, clf={}),  # the library's defaults as they are today
    "vocab": dict(lm=dict(pretrained_vocab="train"), clf={}),
    "vocab-ext": dict(lm=dict(pretrained_vocab="extend"), clf={}),
    "vocab-40ep": dict(lm=dict(pretrained_vocab="train"), clf=dict(epochs=(40,))),
    "vocab-10ep": dict(lm=dict(pretrained_vocab="train"), clf=dict(epochs=(10,))),
    "vocab-gradual": dict(lm=dict(pretrained_vocab="train"),
                          clf=dict(unfreeze=(1, 2, 3, 0), epochs=(2, 2, 2, 20), lrs=(2e-2, 1e-2, 5e-3, 5e-3))),
    "vocab-frozen-head": dict(lm=dict(pretrained_vocab="train"), clf=dict(unfreeze=(1, 0), epochs=(4, 20),
                                                                            lrs=(2e-2, 2e-2))),
    "vocab-head": dict(lm=dict(pretrained_vocab="train"), clf=dict(unfreeze=(1,), epochs=(20,), lrs=(2e-2,))),
    "vocab-head2": dict(lm=dict(pretrained_vocab="train"), clf=dict(unfreeze=(1, 2), epochs=(10, 10), lrs=(2e-2, 1e-2))),
    "vocab-drop": dict(lm=dict(pretrained_vocab="train"), clf=dict(drop_mult=1.0)),
    "vocab-lm5": dict(lm=dict(pretrained_vocab="train", epochs=5), clf={}),
    "vocab-extra": dict(lm=dict(pretrained_vocab="train"), clf={}, extra=5000),
    # seed averaging: the same LM, k classifiers (seeds 0..k-1), probabilities averaged (um.MultiLabelEnsemble)
    "defaults-avg3": dict(lm={}, clf={}, clf_seeds=3),
    "defaults-extra": dict(lm={}, clf={}, extra=5000),
    "defaults-drop1": dict(lm={}, clf=dict(drop_mult=1.0)),
    # 5-fold CV over all n rows (no held-out 20%): thresholds tuned on the out-of-fold probabilities
    # of every row, dev scored by the mean of the 5 fold models (um.cross_validate, keep_models=True)
    "defaults-cv5": dict(lm={}, clf={}, cv=5),
    "defaults-nohidden": dict(lm={}, clf=dict(lin_ftrs=())),
    # session 5: the 500-row model fits its training split (train AP 0.95) but not dev (0.13): regularisers
    "defaults-wd1": dict(lm={}, clf=dict(wd=1.0)),
    "defaults-head": dict(lm={}, clf=dict(unfreeze=(1,))),
    "defaults-lr5e-3": dict(lm={}, clf=dict(lrs=(5e-3,))),
    # forward + backward (the shipped backward LM fine-tuned the same way), probabilities averaged
    "defaults-fwdbwd": dict(lm={}, clf={}, backward=True),
    # session 6, self-training / distillation: a teacher scores `self_train` unlabelled texts of the pool
    # (never the dev part); a new ULMFiT classifier (the student, the same fine-tuned LM) trains on the
    # labelled training split + those texts with the teacher's probabilities as soft targets, and keeps
    # the labelled validation split for its thresholds. Teacher "self": the default classifier;
    # "blend": it and TF-IDF averaged. What predicts is one ULMFiT model either way.
    "defaults-st-self": dict(lm={}, clf={}, self_train=2000, teacher="self"),
    "defaults-st-blend": dict(lm={}, clf={}, self_train=2000, teacher="blend"),
    "defaults-st-blend-5k": dict(lm={}, clf={}, self_train=5000, teacher="blend"),
    "defaults-st-blend-fb": dict(lm={}, clf={}, self_train=2000, teacher="blend", backward=True),  # fwd+bwd in the teacher
}


def _labels_cols(df: pd.DataFrame, names: list[str]) -> pd.DataFrame:
    """A delimited ``labels`` column as one 0/1 column per label (the format the bench works in)."""
    sets = df["labels"].fillna("").map(lambda s: set(filter(None, s.replace(";", ",").split(","))))
    return pd.concat([df[["text"]].reset_index(drop=True),
                      pd.DataFrame({n: sets.map(lambda s, n=n: int(n in s)).to_numpy() for n in names})], axis=1)


def load(dataset: str) -> tuple[pd.DataFrame, pd.DataFrame, list[str]]:
    """``(training pool, dev, label names)``, both frames with ``text`` + one 0/1 column per label."""
    if dataset == "goemotions":
        d = SHARED / "goemotions"
        names = [ln.strip() for ln in (d / "labels.txt").read_text().splitlines() if ln.strip()]
        return (_labels_cols(read_goemotions(d / "train.tsv", names), names),
                _labels_cols(read_goemotions(d / "dev.tsv", names), names), names)
    if dataset == "semeval":
        d = SHARED / "semeval2018-ec"
        tr, dv = (pd.read_csv(d / f, sep="\t").rename(columns={"Tweet": "text"}).drop(columns=["ID"])
                  for f in ("train.tsv", "dev.tsv"))
        return tr, dv, [c for c in tr.columns if c != "text"]
    if dataset == "reuters":  # only ModApte's training part is shipped: a fixed stratified 15% is our dev part
        from iterstrat.ml_stratifiers import MultilabelStratifiedShuffleSplit

        raw = pd.read_csv(SHARED / "reuters-21578" / "train.csv", keep_default_na=False)
        names = sorted({t for s in raw["labels"] for t in s.split(";") if t})
        frame = _labels_cols(raw, names)
        mss = MultilabelStratifiedShuffleSplit(n_splits=1, test_size=0.15, random_state=0)
        tr, dv = next(mss.split(np.zeros((len(frame), 1)), frame[names].to_numpy()))
        return frame.iloc[np.sort(tr)].reset_index(drop=True), frame.iloc[np.sort(dv)].reset_index(drop=True), names
    raise SystemExit(f"unknown dataset {dataset!r}")


class _OOF:
    """A CV result scored like a model: thresholds from the out-of-fold probabilities of every row,
    dev probabilities the mean of the fold models."""

    def __init__(self, res: Any) -> None:
        self.res = res
        self.validation_predictions = (res.y, res.oof)

    def predict_proba(self, texts: list[str]) -> np.ndarray:
        return self.res.predict_proba(texts)


def save_result(key: str, value: dict[str, Any]) -> None:
    res = json.loads(RESULTS.read_text()) if RESULTS.exists() else {}
    res[key] = {**value, "date": time.strftime("%Y-%m-%d %H:%M"), "machine": f"{platform.machine()}, {os.cpu_count()} CPU cores"}
    tmp = RESULTS.with_suffix(".tmp")
    tmp.write_text(json.dumps(res, indent=1, sort_keys=True))
    os.replace(tmp, RESULTS)
    print(f"[small-data] {key}: {json.dumps(value)[:300]}", flush=True)


def mean_ap(y: np.ndarray, p: np.ndarray) -> float:
    """Macro average precision over the labels with a positive in ``y``."""
    from sklearn.metrics import average_precision_score

    return float(np.mean([average_precision_score(y[:, j], p[:, j]) for j in range(y.shape[1]) if y[:, j].any()]))


def scores(model: Any, y_dev: np.ndarray, p_dev: np.ndarray) -> dict[str, float]:
    """Dev macro/micro-F1 at 0.5 and with thresholds tuned on the model's own validation split."""
    y_val, p_val = model.validation_predictions
    out = {"roc_auc_macro": multilabel_report(y_dev, p_dev).summary["roc_auc_macro"], "ap_macro": mean_ap(y_dev, p_dev)}
    # "per_label": each label's own threshold (shrink=0, as before 2026-12-07's default); "shrunk": the
    # library's default since then (pulled toward the global one by 10 positives' worth)
    for strategy, kw in (("none", None), ("global", dict(strategy="global")), ("per_label", dict(shrink=0)),
                         ("shrunk", dict(shrink=10))):
        t = 0.5 if kw is None else tune_thresholds(y_val, p_val, **kw)
        s = multilabel_report(y_dev, p_dev, t).summary
        out[f"f1_macro_{strategy}"], out[f"f1_micro_{strategy}"] = s["f1_macro"], s["f1_micro"]
    return {k: round(float(v), 4) for k, v in out.items()}


def run_one(dataset: str, n: int, seed: int, variant: str, pool: pd.DataFrame, dev: pd.DataFrame,
            names: list[str], *, tfidf: bool) -> None:
    import warnings

    v = VARIANTS[variant]
    rows = pool.sample(n=n, random_state=seed)
    extra = pool.drop(rows.index).sample(n=min(v.get("extra", 0), len(pool) - n), random_state=seed)["text"].tolist()
    y_dev = dev[names].to_numpy()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the few-positives warnings of tiny validation splits
        t0 = time.perf_counter()
        data = um.MultiLabelData.from_df(rows, label_cols=names, extra_texts=extra or None)
        lm = um.finetune_lm(data, quiet=True, **v["lm"])
        if v.get("cv"):
            res = um.cross_validate(data, encoder=lm, n_folds=v["cv"], keep_models=True,
                                    config=um.ClassifierConfig(quiet=True, **v["clf"]))
            clf = _OOF(res)
        else:
            clf = um.train_classifier(data, encoder=lm, quiet=True, **v["clf"])
        if v.get("backward"):
            lm_b = um.finetune_lm(data, quiet=True, backwards=True, **v["lm"])
            clf = um.MultiLabelEnsemble([clf, um.train_classifier(data, encoder=lm_b, quiet=True, **v["clf"])])
            clf.tune_thresholds()
        if v.get("clf_seeds"):  # the first member is the seed-42 default; then seeds 0, 1, ...
            more = [um.train_classifier(data, encoder=lm, quiet=True, seed=s, **v["clf"]) for s in range(v["clf_seeds"] - 1)]
            clf = um.MultiLabelEnsemble([clf, *more])
            clf.tune_thresholds()
        if v.get("self_train"):
            clf = _student(data, lm, clf, pool.drop(rows.index).sample(n=v["self_train"], random_state=seed + 1000),
                           teacher=v["teacher"], clf_options=v["clf"])
        seconds = time.perf_counter() - t0
        p_dev = clf.predict_proba(dev["text"].tolist())
        res = {**scores(clf, y_dev, p_dev), "seconds": round(seconds, 1), "lm_vocab": len(lm.vocab)}
        (HERE / "_work").mkdir(exist_ok=True)  # the probabilities, for threshold strategies compared afterwards
        np.savez_compressed(HERE / "_work" / f"probs-{dataset}-{n}-{seed}-{variant}.npz", y_val=clf.validation_predictions[0],
                            p_val=clf.validation_predictions[1], y_dev=y_dev, p_dev=p_dev)
        save_result(f"{dataset}/n={n}/seed={seed}/{variant}", res)
        if v.get("cv"):  # TF-IDF with the same folds: fold models averaged, OOF thresholds
            tf = [um.TfidfBaseline().fit(data.with_split(clf.res.folds == k)) for k in range(v["cv"])]
            oof = np.zeros_like(clf.res.oof)
            for k, m in enumerate(tf):
                oof[clf.res.folds == k] = m.predict_proba(list(np.asarray(data.texts, dtype=object)[clf.res.folds == k]))
            fake = type("TfidfCV", (), {"validation_predictions": (clf.res.y, oof)})()
            p_tf = np.mean([m.predict_proba(dev["text"].tolist()) for m in tf], axis=0)
            save_result(f"{dataset}/n={n}/seed={seed}/tfidf-cv{v['cv']}", scores(fake, y_dev, p_tf))
        if tfidf:
            run_tfidf(dataset, n, seed, data, dev, y_dev)


def _student(data: Any, lm: Any, clf: Any, unlabelled: pd.DataFrame, *, teacher: str, clf_options: dict) -> Any:
    """``um.self_train`` with the classifier already trained as the teacher (or its blend with TF-IDF)."""
    t = clf if teacher == "self" else um.MultiLabelEnsemble([clf, um.TfidfBaseline().fit(data)])
    return um.self_train(data, encoder=lm, texts=unlabelled["text"].tolist(), teacher=t, quiet=True, **clf_options)


def run_tfidf(dataset: str, n: int, seed: int, data: Any, dev: pd.DataFrame, y_dev: np.ndarray) -> None:
    """TF-IDF on the same rows and split; its probabilities saved like the ULMFiT runs'."""
    base = um.TfidfBaseline().fit(data)
    p_dev = base.predict_proba(dev["text"].tolist())
    save_result(f"{dataset}/n={n}/seed={seed}/tfidf", scores(base, y_dev, p_dev))
    np.savez_compressed(HERE / "_work" / f"probs-{dataset}-{n}-{seed}-tfidf.npz", y_val=base.validation_predictions[0],
                        p_val=base.validation_predictions[1], y_dev=y_dev, p_dev=p_dev)


def cmd_tfidf(a: argparse.Namespace) -> None:
    """TF-IDF alone on the rows ``run`` would sample (cheap: threshold strategies over many seeds)."""
    import warnings

    pool, dev, names = load(a.dataset)
    for seed in map(int, a.seeds.split(",")):
        rows = pool.sample(n=a.n, random_state=seed)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            data = um.MultiLabelData.from_df(rows, label_cols=names)
            run_tfidf(a.dataset, a.n, seed, data, dev, dev[names].to_numpy())


def cmd_blend(a: argparse.Namespace) -> None:
    """The equal-weight blend of ``--variants``' first variant and TF-IDF (um.MultiLabelEnsemble's
    arithmetic, thresholds tuned on the blend's validation probabilities), from the probabilities
    the runs saved in bench/_work; stored as variant ``blend-<variant>``."""
    variant = a.variants.split(",")[0]
    for seed in map(int, a.seeds.split(",")):
        f1, f2 = (HERE / "_work" / f"probs-{a.dataset}-{a.n}-{seed}-{v}.npz" for v in (variant, "tfidf"))
        if not (f1.exists() and f2.exists()):
            print(f"[small-data] skip seed {seed}: run {variant} and tfidf first ({f1.name}, {f2.name})")
            continue
        u, t = np.load(f1), np.load(f2)
        if not (np.array_equal(u["y_val"], t["y_val"]) and np.array_equal(u["y_dev"], t["y_dev"])):
            raise SystemExit(f"{f1.name} and {f2.name} were not scored on the same rows")
        w, name = [0.5, 0.5], f"blend-{variant}"
        if a.tune_weight:  # ULMFiT's weight from 0, 0.1, ... 1 by the validation split's mean average precision
            ap = {x: mean_ap(u["y_val"], x * u["p_val"] + (1 - x) * t["p_val"]) for x in np.round(np.linspace(0, 1, 11), 1)}
            best = max(ap, key=ap.get)
            w, name = [best, 1 - best], f"blend-{variant}-tuned"
            print(f"[small-data] seed {seed}: ULMFiT weight {best} (validation mean AP {ap[best]:.3f})")
        fake = type("Blend", (), {"validation_predictions": (u["y_val"], average_probabilities([u["p_val"], t["p_val"]], w))})()
        save_result(f"{a.dataset}/n={a.n}/seed={seed}/{name}",
                    {**scores(fake, u["y_dev"], average_probabilities([u["p_dev"], t["p_dev"]], w)), "weight": w[0]})


def cmd_run(a: argparse.Namespace) -> None:
    pool, dev, names = load(a.dataset)
    done = json.loads(RESULTS.read_text()) if RESULTS.exists() else {}
    for seed in map(int, a.seeds.split(",")):
        for variant in a.variants.split(","):
            if f"{a.dataset}/n={a.n}/seed={seed}/{variant}" in done and not a.again:
                continue
            need_tfidf = f"{a.dataset}/n={a.n}/seed={seed}/tfidf" not in done
            run_one(a.dataset, a.n, seed, variant, pool, dev, names, tfidf=need_tfidf)
            done = json.loads(RESULTS.read_text())


def cmd_thresholds(a: argparse.Namespace) -> None:
    """Threshold strategies compared on the saved probabilities of every run (validation split ->
    thresholds, dev -> macro-F1): per label with min_positives 5 (the library's), 10 and 20, one
    global threshold, 0.5. Printed as median (min-max) over runs, per dataset / size / variant."""
    import warnings

    rows: dict[tuple[str, str, str], dict[str, list[float]]] = {}
    for f in sorted((HERE / "_work").glob("probs-*.npz")):
        ds, n, _seed, variant = f.stem.split("-", 4)[1:5] if f.stem.count("-") >= 4 else (None,) * 4
        z = np.load(f)
        out: dict[str, float] = {"0.5": multilabel_report(z["y_dev"], z["p_dev"]).summary["f1_macro"]}
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            out["global"] = multilabel_report(z["y_dev"], z["p_dev"], tune_thresholds(z["y_val"], z["p_val"], strategy="global")).summary["f1_macro"]
            for mp in (5, 10, 20, 50):
                t = tune_thresholds(z["y_val"], z["p_val"], strategy="per_label", min_positives=mp, shrink=0)
                out[f"per_label/{mp}"] = multilabel_report(z["y_dev"], z["p_dev"], t).summary["f1_macro"]
            # each label's own threshold shrunk to the global one by its number of positives k: (k t + m g) / (k + m)
            g = float(np.atleast_1d(tune_thresholds(z["y_val"], z["p_val"], strategy="global"))[0])
            own = tune_thresholds(z["y_val"], z["p_val"], strategy="per_label", min_positives=1, shrink=0)
            k = z["y_val"].sum(0)
            for m in (10, 30):
                out[f"shrunk/{m}"] = multilabel_report(z["y_dev"], z["p_dev"], (k * own + m * g) / (k + m)).summary["f1_macro"]
        for k, v in out.items():
            rows.setdefault((ds, n, variant), {}).setdefault(k, []).append(float(v))
    cols = ["0.5", "global", "per_label/5", "per_label/10", "per_label/20", "per_label/50", "shrunk/10", "shrunk/30"]
    print("| dataset | labelled | variant | runs | " + " | ".join(cols) + " |\n" + "|---" * (len(cols) + 4) + "|")
    for (ds, n, variant), d in sorted(rows.items()):
        cells = [f"{np.median(d[c]):.3f} ({min(d[c]):.3f}-{max(d[c]):.3f})" for c in cols]
        print(f"| {ds} | {n} | {variant} | {len(d['0.5'])} | " + " | ".join(cells) + " |")


def cmd_report(a: argparse.Namespace) -> None:
    res = json.loads(RESULTS.read_text())
    groups: dict[tuple[str, str, str], list[dict]] = {}
    for key, v in res.items():
        ds, n, _seed, variant = key.split("/")
        groups.setdefault((ds, n, variant), []).append(v)
    # shrunk: the library's default thresholds (recorded since 2026-12-07; older runs: `thresholds` job); ap: session 5 on
    metric_cols = ["f1_macro_shrunk", "f1_macro_per_label", "f1_macro_global", "f1_macro_none", "roc_auc_macro", "ap_macro"]
    lines = ["| dataset | labelled | variant | seeds | " + " | ".join(metric_cols) + " | seconds |",
             "|---" * (len(metric_cols) + 5) + "|"]
    for (ds, n, variant), vs in sorted(groups.items()):
        cells = []
        for m in metric_cols:
            xs = [x[m] for x in vs if m in x]
            cells.append("" if not xs else f"{np.median(xs):.3f}" + (f" ({min(xs):.3f}-{max(xs):.3f})" if len(xs) > 1 else "")
                         + (f" [{len(xs)}]" if 0 < len(xs) < len(vs) else ""))
        secs = [x.get("seconds") for x in vs if x.get("seconds")]
        sec = f"{np.median(secs):.0f}" if secs else ""
        lines.append(f"| {ds} | {n.split('=')[1]} | {variant} | {len(vs)} | " + " | ".join(cells) + f" | {sec} |")
    print("\n".join(lines))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("job", choices=["run", "report", "thresholds", "tfidf", "blend"])
    ap.add_argument("--dataset", default="goemotions", choices=["goemotions", "semeval", "reuters"])
    ap.add_argument("--n", type=int, default=500)
    ap.add_argument("--seeds", default="0")
    ap.add_argument("--variants", default="base")
    ap.add_argument("--again", action="store_true", help="re-run keys already in the results file")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--tune-weight", action="store_true", help="blend: choose ULMFiT's weight on the validation split")
    a = ap.parse_args()
    import torch

    torch.set_num_threads(a.threads)
    {"run": cmd_run, "report": cmd_report, "thresholds": cmd_thresholds, "tfidf": cmd_tfidf, "blend": cmd_blend}[a.job](a)


if __name__ == "__main__":
    main()
