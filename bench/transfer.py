"""ULMFiT's claims on GoEmotions: does the shipped general-domain LM transfer?

Every job appends its figures to ``bench/transfer_results.json`` (one key per job), so jobs can
run in separate processes and a killed one is simply re-run. Data: train.tsv minus a stratified
10% held-out part (thresholds are tuned there, never on dev), figures on dev.tsv.

    python bench/transfer.py lm [--backwards] [--scratch]   # fine-tune en-small (or a scratch LM) on all 43k train texts
    python bench/transfer.py curve --n 2000 --seed 0 [--schedules all,gradual] [--random]
    python bench/transfer.py curve --schedules defaults-large --both-directions --save-model  # all labelled rows
    python bench/transfer.py ensemble --schedules defaults-large  # forward + backward classifiers saved above
    python bench/transfer.py defaults --n 2000 --seed 0     # finetune_lm(data), train_classifier(data, encoder=lm), nothing else
    python bench/transfer.py defaults --n 2000 --seed 0 --both-directions --label fwd+bwd  # the same forward and backward, averaged
    python bench/transfer.py report                         # markdown table + learning-curve plot
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

WORK = HERE / "_work"
RESULTS = HERE / "transfer_results.json"
DATA = HERE.parent.parent / "shared" / "datasets" / "goemotions"
#: classifier schedules compared with a pretrained encoder
SCHEDULES = {
    "gradual": dict(unfreeze=(1, 2, 3, 0), epochs=(2, 2, 2, 12), lrs=(2e-2, 1e-2, 5e-3, 2e-3), bs=32),
    "all": dict(unfreeze=(0,), epochs=(20,), lrs=(1e-2,), bs=32),  # = ClassifierConfig defaults
    "all-large": dict(unfreeze=(0,), epochs=(6,), lrs=(1e-2,), bs=64),  # 8,000+ labelled rows
    "paper": dict(unfreeze=(1, 2, 3, 0), epochs=(1, 1, 1, 2), lrs=(2e-2, 1e-2, 5e-3, 1e-3)),
    "defaults": {},  # ClassifierConfig's defaults as they are today (train_classifier(data, encoder=lm))
    "defaults-large": dict(epochs=(8,), bs=64),  # the README's advice for tens of thousands of texts
    "defaults-large-12": dict(epochs=(12,), bs=64),  # the same, 12 epochs (the 8-epoch run's valid loss still fell)
}
LM_OPTS = dict(epochs=1, max_vocab=12000, quiet=True)


def load() -> tuple[pd.DataFrame, pd.DataFrame, list[str], np.ndarray]:
    names = [ln.strip() for ln in (DATA / "labels.txt").read_text().splitlines() if ln.strip()]
    train, dev = read_goemotions(DATA / "train.tsv", names), read_goemotions(DATA / "dev.tsv", names)
    full = um.MultiLabelData.from_df(train, label_col="labels", label_delim=",", labels=names, valid_pct=0.1, seed=42)
    return train, dev, names, full.is_valid


def save_result(key: str, value: dict[str, Any], *, path: Path = RESULTS, tag: str = "transfer") -> None:
    """Add ``value`` (with the date and machine) under ``key`` in the JSON results file ``path``,
    replacing the file atomically under an exclusive lock (``fcntl.flock`` on a side file), so
    benchmark jobs running side by side never lose each other's keys."""
    import fcntl

    with open(path.with_suffix(".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        res = json.loads(path.read_text()) if path.exists() else {}
        res[key] = {**value, "date": time.strftime("%Y-%m-%d %H:%M"), "machine": f"{platform.machine()}, {os.cpu_count()} CPU cores"}
        tmp = path.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_text(json.dumps(res, indent=1, sort_keys=True))
        os.replace(tmp, path)
    print(f"[{tag}] {key}: {json.dumps({k: v for k, v in value.items() if k not in ('per_label', 'history')})[:400]}",
          flush=True)


def evaluate(model: Any, dev: pd.DataFrame, heldout: pd.DataFrame) -> dict[str, float]:
    """macro/micro-F1 on dev at 0.5 and with per-label thresholds tuned on the held-out part."""
    out = {}
    y_dev = model.evaluate(dev, threshold=0.5)
    out["f1_macro_05"], out["f1_micro_05"] = y_dev["f1_macro"], y_dev["f1_micro"]
    model.tune_thresholds(heldout, strategy="per_label")
    t = model.evaluate(dev)
    out.update(f1_macro_tuned=t["f1_macro"], f1_micro_tuned=t["f1_micro"], roc_auc_macro=t["roc_auc_macro"])
    return {k: round(float(v), 4) for k, v in out.items()}


def labelled(train: pd.DataFrame, is_heldout: np.ndarray, names: list[str], n: int | None, seed: int) -> um.MultiLabelData:
    """``n`` stratified labelled rows of the non-held-out part + the held-out part as validation."""
    from iterstrat.ml_stratifiers import MultilabelStratifiedShuffleSplit

    pool = train[~is_heldout].reset_index(drop=True)
    if n is not None and n < len(pool):
        y = um.MultiLabelData.from_df(pool, label_col="labels", label_delim=",", labels=names, split="random").y
        mss = MultilabelStratifiedShuffleSplit(n_splits=1, train_size=n, test_size=len(pool) - n, random_state=seed)
        idx, _ = next(mss.split(np.zeros((len(pool), 1)), y.astype(int)))
        pool = pool.iloc[np.sort(idx)]
    frame = pd.concat([pool.assign(is_valid=False), train[is_heldout].assign(is_valid=True)], ignore_index=True)
    return um.MultiLabelData.from_df(frame, label_col="labels", label_delim=",", labels=names, split="column",
                                     valid_col="is_valid")


def lm_dir(backwards: bool, scratch: bool) -> Path:
    return WORK / f"lm-goemotions-{'scratch' if scratch else 'ensmall'}-{'bwd' if backwards else 'fwd'}"


def cmd_lm(a: argparse.Namespace) -> None:
    train, _, names, is_heldout = load()
    data = um.MultiLabelData.from_df(train, label_col="labels", label_delim=",", labels=names, valid_col=None,
                                     split="random", valid_pct=0.1, seed=42)
    t0 = time.perf_counter()
    opts = dict(LM_OPTS, backwards=a.backwards, seed=a.seed)
    if a.scratch:
        opts.update(pretrained=False, epochs=2, lr=1e-2)
    lm = um.finetune_lm(data, **opts)
    lm.save(lm_dir(a.backwards, a.scratch), overwrite=True)
    save_result(f"lm/{lm_dir(a.backwards, a.scratch).name}", {"seconds": round(time.perf_counter() - t0, 1),
                                                             "perplexity": round(lm.metrics["perplexity"], 2),
                                                             "options": {k: str(v) for k, v in opts.items()}})


def cmd_curve(a: argparse.Namespace) -> None:
    train, dev, names, is_heldout = load()
    heldout = train[is_heldout]
    data = labelled(train, is_heldout, names, a.n, a.seed)
    tag = f"n={a.n or 'all'}/seed={a.seed}"
    if a.tfidf:
        t0 = time.perf_counter()
        base = um.TfidfBaseline().fit(data)
        save_result(f"curve/{tag}/tfidf", {**evaluate(base, dev, heldout), "seconds": round(time.perf_counter() - t0, 1)})
    for sched in [s for s in a.schedules.split(",") if s]:
        for backwards in ([False, True] if a.both_directions else [a.backwards]):
            t0 = time.perf_counter()
            enc = None if a.random else um.load_lm(lm_dir(backwards, a.scratch))
            kind = "random" if a.random else ("scratch-lm" if a.scratch else "en-small-ft")
            clf = um.train_classifier(data, encoder=enc, arch="cpu", quiet=True, seed=a.seed, **SCHEDULES[sched])
            save_result(f"curve/{tag}/{kind}/{sched}/{'bwd' if backwards else 'fwd'}",
                        {**evaluate(clf, dev, heldout), "seconds": round(time.perf_counter() - t0, 1)})
            if a.save_probs:
                np.save(WORK / f"probs-{tag.replace('/', '_')}-{kind}-{sched}-{'bwd' if backwards else 'fwd'}.npy",
                        clf.predict_proba(dev.text.tolist()))
            if a.save_model:
                clf.save(clf_dir(tag, kind, sched, backwards), overwrite=True)


def clf_dir(tag: str, kind: str, sched: str, backwards: bool) -> Path:
    return WORK / f"clf-{tag.replace('/', '_').replace('=', '')}-{kind}-{sched}-{'bwd' if backwards else 'fwd'}"


def cmd_ensemble(a: argparse.Namespace) -> None:
    """Forward + backward: the library's MultiLabelEnsemble of the two classifiers saved by
    ``curve --save-model`` (mean of probabilities), thresholds tuned on the held-out part."""
    train, dev, names, is_heldout = load()
    tag = f"n={a.n or 'all'}/seed={a.seed}"
    kind = "scratch-lm" if a.scratch else "en-small-ft"
    sched = a.schedules.split(",")[0]
    models = [um.load_classifier(clf_dir(tag, kind, sched, bwd)) for bwd in (False, True)]
    t0 = time.perf_counter()
    ens = um.MultiLabelEnsemble(models)
    save_result(f"curve/{tag}/{kind}/{sched}/fwd+bwd", {**evaluate(ens, dev, train[is_heldout]),
                                                         "seconds": round(time.perf_counter() - t0, 1)})
    # the two directions as one half, TF-IDF on the same labelled rows as the other
    tfidf = um.TfidfBaseline().fit(labelled(train, is_heldout, names, a.n, a.seed))
    blend = um.MultiLabelEnsemble([*models, tfidf], weights=[0.25, 0.25, 0.5])
    save_result(f"blend/{tag}/{kind}/{sched}/fwd+bwd+tfidf", {**evaluate(blend, dev, train[is_heldout]),
                                                               "weights": [0.25, 0.25, 0.5]})


def _tuned(model: Any, dev: pd.DataFrame) -> float:
    model.tune_thresholds(strategy="per_label")  # on the model's own validation split, like train_classifier
    return model.evaluate(dev)["f1_macro"]


def cmd_defaults(a: argparse.Namespace) -> None:
    """What a user gets from the README's three calls, nothing tuned: 2,000 labelled comments,
    the default split (20% of them for validation), the default LM and classifier."""
    train, dev, names, is_heldout = load()
    pool = train[~is_heldout].sample(n=a.n, random_state=a.seed)
    t0 = time.perf_counter()
    data = um.MultiLabelData.from_df(pool, label_col="labels", label_delim=",", labels=names)
    lm_opts = {} if a.pretrained is None else {"pretrained": False if a.pretrained == "false" else a.pretrained}
    clf_opts = dict(SCHEDULES[a.schedule]) if a.schedule else {}
    if a.thresholds:
        clf_opts["threshold_strategy"] = a.thresholds
    models = []
    for backwards in ([False, True] if a.both_directions else [False]):
        lm = um.finetune_lm(data, quiet=True, backwards=backwards, **lm_opts)
        models.append(um.train_classifier(data, encoder=lm, quiet=True, **clf_opts))
    clf = models[0]
    if a.both_directions:  # ULMFiT's forward + backward: the mean of the two, thresholds tuned on the validation split
        clf = um.MultiLabelEnsemble(models)
        clf.tune_thresholds(strategy="per_label")
    r = clf.evaluate(dev)
    base = um.TfidfBaseline().fit(data)
    rb = base.evaluate(dev)
    save_result(f"defaults/n={a.n}/seed={a.seed}/{a.label}", {
        "ulmfit_f1_macro": round(float(r["f1_macro"]), 4), "ulmfit_f1_micro": round(float(r["f1_micro"]), 4),
        "ulmfit_roc_auc_macro": round(float(r["roc_auc_macro"]), 4), "tfidf_f1_macro": round(float(rb["f1_macro"]), 4),
        "thresholds": "tuned by train_classifier" if np.any(clf.thresholds != 0.5) else "0.5",
        "tfidf_f1_macro_tuned": round(float(_tuned(base, dev)), 4), "schedule": a.schedule or "library default",
        "seconds": round(time.perf_counter() - t0, 1)})


def cmd_report(a: argparse.Namespace) -> None:
    """Median (min-max over seeds) dev macro-F1 (tuned) per size and model, and the learning-curve plot."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    res = json.loads(RESULTS.read_text())
    rows: dict[tuple[str, str], list[float]] = {}
    for key, v in res.items():
        parts = key.split("/")
        if parts[0] != "curve":
            continue
        n = parts[1].split("=")[1]
        model = "/".join(parts[3:])
        rows.setdefault((n, model), []).append(v["f1_macro_tuned"])
    sizes = sorted({n for n, _ in rows}, key=lambda n: float("inf") if n == "all" else int(n))
    models = sorted({m for _, m in rows})
    lines = ["| labelled comments | " + " | ".join(models) + " |", "|---" * (len(models) + 1) + "|"]
    for n in sizes:
        cells = []
        for m in models:
            v = rows.get((n, m))
            cells.append("" if not v else (f"{np.median(v):.3f}" + (f" ({min(v):.3f}-{max(v):.3f}, {len(v)} seeds)" if len(v) > 1 else "")))
        lines.append(f"| {n} | " + " | ".join(cells) + " |")
    table = "\n".join(lines)
    print(table)
    fig, ax = plt.subplots(figsize=(9, 4.5))
    colours = plt.cm.tab20(np.linspace(0, 1, max(len(models), 2)))
    for i, m in enumerate(models):
        xs = [int(n) if n != "all" else 39069 for n in sizes if (n, m) in rows]
        ys = [np.median(rows[(n, m)]) for n in sizes if (n, m) in rows]
        ax.plot(xs, ys, marker="os^Dv<>p*"[i % 9], color=colours[i], label=m)
    ax.set_xscale("log")
    ax.set_xlabel("labelled training comments")
    ax.set_ylabel("dev macro-F1 (tuned thresholds)")
    ax.set_title("GoEmotions (28 labels): learning curve")
    ax.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.01, 0.5))
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(HERE / "transfer_curve.png", dpi=110)
    (HERE / "transfer_table.md").write_text(table + "\n")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("job", choices=["lm", "curve", "ensemble", "defaults", "report"])
    ap.add_argument("--n", type=int, default=None)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--backwards", action="store_true")
    ap.add_argument("--both-directions", action="store_true")
    ap.add_argument("--scratch", action="store_true", help="an LM trained from scratch on the task (no en-small)")
    ap.add_argument("--random", action="store_true", help="randomly initialised encoder")
    ap.add_argument("--tfidf", action="store_true", help="also the TF-IDF baseline on the same rows")
    ap.add_argument("--schedules", default="all")
    ap.add_argument("--schedule", default=None, choices=sorted(SCHEDULES), help="defaults job: override the classifier schedule")
    ap.add_argument("--thresholds", default=None, help="defaults job: train_classifier's thresholds option")
    ap.add_argument("--save-probs", action="store_true")
    ap.add_argument("--save-model", action="store_true", help="curve job: save each classifier (for the ensemble job)")
    ap.add_argument("--label", default="today")
    ap.add_argument("--pretrained", default=None, help="defaults job: override finetune_lm's pretrained ('false' for v0.1's default)")
    ap.add_argument("--threads", type=int, default=1)
    a = ap.parse_args()
    import torch

    torch.set_num_threads(a.threads)
    WORK.mkdir(exist_ok=True)
    {"lm": cmd_lm, "curve": cmd_curve, "ensemble": cmd_ensemble, "defaults": cmd_defaults, "report": cmd_report}[a.job](a)


if __name__ == "__main__":
    main()
