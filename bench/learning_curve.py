"""Issue 22, requirement 4: the learning curve on three datasets, ULMFiT vs TF-IDF vs a random
encoder vs the first shipped ``en-small``, on the same rows.

Protocol (the paper's semi-supervised setting): the language model is fine-tuned **once per
dataset** on all of its training texts (labels unused; ``finetune_lm`` with every default), then
for each size ``n`` (500, 2,000, 8,000, all) the same ``n`` rows as ``bench/small_data.py``
(``pool.sample(n, random_state=seed)``) get the default split (20% validation, where thresholds
are tuned with the library's default rule) and ``train_classifier(data, encoder=lm)`` with every
default; figures on the dataset's dev part, which no threshold sees. Encoders:

* ``en-small``: today's shipped LM, fine-tuned as above;
* ``en-small-v0``: the first shipped ``en-small`` (commit 89bc1b4, 18M tokens, held-out
  perplexity 61.0), extracted with ``git archive`` and fine-tuned the same way;
* ``en-small-s9``: the forward ``en-small`` shipped in session 9 (122M tokens, perplexity 46.2),
  fine-tuned the same way; the ``en-small`` rows were made with the weights of sessions 3-8 (90M
  tokens, 47.3), their LMs fine-tuned before session 9 (``lm --lm en-small`` now starts from the
  session-9 weights too: the shipped ones);
* ``random``: ``train_classifier(data, encoder=None)``, no language model at all;
* ``tfidf``: ``um.TfidfBaseline`` on the same rows and split;
* ``student``: ``um.self_train`` with en-small's fine-tuned LM, taught by the blend of the
  en-small classifier and TF-IDF on 2,000 other training texts (labels unused; the few-labels
  recipe of README "Few labels"); its seconds include the teacher's classifier;
* ``student-s9``: the same with en-small-s9's fine-tuned LM and classifier (``STUDENT_LM``).

    python bench/learning_curve.py lm --dataset semeval --lm en-small          # once per dataset and LM
    python bench/learning_curve.py run --dataset semeval --n 500 --seeds 0,1,2 --encoders en-small,random,tfidf
    python bench/learning_curve.py report          # bench/learning_curve.md, its tables in RESULTS.md, the .png

Each run adds one key (dataset/n/seed/encoder) to ``bench/learning_curve.json``.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import ulmfit_ml as um  # noqa: E402
from small_data import _student as small_student, load, scores  # noqa: E402
from transfer import save_result as _save  # noqa: E402

WORK = HERE / "_work"
RESULTS = HERE / "learning_curve.json"
V0_COMMIT = "89bc1b4"  #: the first shipped en-small (perplexity 61.0)
ENCODERS = ("en-small", "en-small-v0", "en-small-s9", "random", "tfidf", "student", "student-s9")
STUDENT_LM = {"student": "en-small", "student-s9": "en-small-s9"}  #: the LM (and teacher) each student reads
VS_TFIDF = ("en-small", "en-small-s9", "student", "student-s9")  #: the report's per-seed differences


def _v0_dir() -> Path:
    """The first shipped forward ``en-small``, extracted from git once (never committed again)."""
    out = WORK / "en-small-v0"
    if not (out / "ulmfit_ml/pretrained/en-small/forward").exists():
        out.mkdir(parents=True, exist_ok=True)
        tar = subprocess.run(["git", "archive", V0_COMMIT, "ulmfit_ml/pretrained/en-small/forward"], cwd=HERE.parent,
                             check=True, capture_output=True).stdout
        subprocess.run(["tar", "-x", "-C", str(out)], input=tar, check=True)
    return out / "ulmfit_ml/pretrained/en-small/forward"


def lm_dir(dataset: str, lm: str) -> Path:
    return WORK / f"curve-lm-{dataset}-{lm}"


def save_result(key: str, value: dict[str, Any]) -> None:
    _save(key, value, path=RESULTS, tag="curve")


def cmd_lm(a: argparse.Namespace) -> None:
    pool, _, names = load(a.dataset)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        data = um.MultiLabelData.from_df(pool, label_cols=names)
    t0 = time.perf_counter()
    lm = um.finetune_lm(data, quiet=True, pretrained=str(_v0_dir()) if a.lm == "en-small-v0" else "en-small")
    lm.save(lm_dir(a.dataset, a.lm), overwrite=True)
    save_result(f"lm/{a.dataset}/{a.lm}", {"seconds": round(time.perf_counter() - t0, 1), "texts": len(pool),
                                           "perplexity": round(float(lm.metrics["perplexity"]), 2)})


def cmd_run(a: argparse.Namespace) -> None:
    pool, dev, names = load(a.dataset)
    y_dev = dev[names].to_numpy()
    done = json.loads(RESULTS.read_text()) if RESULTS.exists() else {}
    n = len(pool) if a.n == "all" else int(a.n)
    options = json.loads(a.options) if a.options else {}  # classifier options of a probe (kept apart by --tag)
    if options and not a.tag:
        raise SystemExit("--options needs --tag: the results of a probe are kept apart from the defaults' rows")
    for seed in map(int, a.seeds.split(",")):
        rows = pool.sample(n=n, random_state=seed)
        trained: dict[str, tuple[Any, float]] = {}  # en-small's classifier, the student's teacher when both run
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the few-positives warnings of small validation splits
            data = um.MultiLabelData.from_df(rows, label_cols=names)
            for enc in a.encoders.split(","):
                key = f"{a.dataset}/n={a.n}/seed={seed}/{enc}" + (f"@{a.tag}" if a.tag else "")
                if key in done and not a.again:
                    continue
                if enc not in ENCODERS:
                    raise SystemExit(f"unknown encoder {enc!r}: one of {ENCODERS}")
                t0, extra = time.perf_counter(), 0.0
                if enc == "tfidf":
                    model = um.TfidfBaseline().fit(data)
                elif enc in STUDENT_LM:
                    lm_name = STUDENT_LM[enc]
                    model, extra = _student(a.dataset, lm_name, pool, rows, data, seed, trained.get(lm_name))
                else:
                    lm = None if enc == "random" else um.load_lm(lm_dir(a.dataset, enc))
                    model = um.train_classifier(data, encoder=lm, quiet=True, **options)
                    trained[enc] = (model, time.perf_counter() - t0)
                seconds = time.perf_counter() - t0 + extra
                p_dev = model.predict_proba(dev["text"].tolist())
                history = getattr(model, "history", None)
                save_result(key, {**scores(model, y_dev, p_dev), "seconds": round(seconds, 1), "n": n,
                                  **({"options": options} if options else {}),
                                  **({"history": history.round(4).to_dict(orient="list")} if history is not None and len(history) else {})})
                np.savez_compressed(WORK / (f"curve-probs-{a.dataset}-{a.n}-{seed}-{enc}" + (f"@{a.tag}" if a.tag else "") + ".npz"),
                                    y_val=model.validation_predictions[0], p_val=model.validation_predictions[1],
                                    p_dev=p_dev)
                done = json.loads(RESULTS.read_text())


def _student(dataset: str, lm_name: str, pool: Any, rows: Any, data: Any, seed: int,
             teacher: tuple[Any, float] | None) -> tuple[Any, float]:
    """``bench/small_data.py``'s student (``um.self_train``, the blend teacher: the ``lm_name``
    classifier + TF-IDF) on its 2,000 other training texts, labels unused
    (``pool.drop(rows).sample(2000, random_state=seed + 1000)``). Returns the student and the
    seconds of the teacher's classifier when it was trained in an earlier step of the same run."""
    lm = um.load_lm(lm_dir(dataset, lm_name))
    rest = pool.drop(rows.index)
    clf, before = teacher if teacher is not None else (um.train_classifier(data, encoder=lm, quiet=True), 0.0)
    unlabelled = rest.sample(n=min(2000, len(rest)), random_state=seed + 1000)
    return small_student(data, lm, clf, unlabelled, teacher="blend", clf_options={}), before


def _cell(xs: list[float]) -> str:
    if not xs:
        return ""
    return f"{np.median(xs):.3f}" + (f" ({min(xs):.3f}-{max(xs):.3f})" if len(xs) > 1 else "")


def cmd_report(a: argparse.Namespace) -> None:
    res = {k: v for k, v in json.loads(RESULTS.read_text()).items() if not k.startswith("lm/")}
    groups: dict[tuple[str, str, str], list[dict]] = {}
    for key, v in res.items():
        ds, n, _seed, enc = key.split("/")
        groups.setdefault((ds, n.split("=")[1], enc), []).append(v)
    sizes = ["500", "2000", "8000", "all"]
    lines = ["Dev macro-F1 at the library's default thresholds (tuned on each run's own 20% validation split),",
             "median of seeds (range); `X - TF-IDF`: medians of the per-seed differences (same rows);",
             "ROC-AUC and micro-F1: medians; seconds: the en-small classifier's training, one thread on the shared 2 cores. Generated by `python bench/learning_curve.py report` from `bench/learning_curve.json`",
             "(protocol: the script's docstring; plot: `bench/learning_curve.png`).", ""]
    for ds in sorted({g[0] for g in groups}):
        lines += [f"### {ds}", "", "| labelled | seeds | " + " | ".join(ENCODERS)
                  + "".join(f" | {e} - TF-IDF" for e in VS_TFIDF) + " | ROC-AUC en-small / TF-IDF"
                  " | micro-F1 en-small / TF-IDF | seconds en-small |", "|---" * (len(ENCODERS) + len(VS_TFIDF) + 5) + "|"]
        for n in sizes:
            if not any((ds, n, e) in groups for e in ENCODERS):
                continue
            cells = [_cell([x["f1_macro_shrunk"] for x in groups.get((ds, n, e), [])]) for e in ENCODERS]
            by_seed = {e: {k.split("/")[2]: v for k, v in res.items() if k.startswith(f"{ds}/n={n}/") and k.endswith(f"/{e}")}
                       for e in (*VS_TFIDF, "tfidf")}

            def vs_tfidf(enc: str) -> str:
                common = sorted(set(by_seed[enc]) & set(by_seed["tfidf"]))
                d = [by_seed[enc][s]["f1_macro_shrunk"] - by_seed["tfidf"][s]["f1_macro_shrunk"] for s in common]
                return "%+.3f" % np.median(d) if d else ""
            auc, micro = ("/".join(_cell([x[m] for x in groups.get((ds, n, e), [])]).split(" ")[0] or "-"
                                   for e in ("en-small", "tfidf")) for m in ("roc_auc_macro", "f1_micro_shrunk"))
            secs = [x["seconds"] for x in groups.get((ds, n, "en-small"), [])]
            secs_cell = f"{min(secs):,.0f}-{max(secs):,.0f}" if len(secs) > 1 else (f"{secs[0]:,.0f}" if secs else "")
            seeds = max(len(groups.get((ds, n, e), [])) for e in ENCODERS)
            lines.append(f"| {n} | {seeds} | " + " | ".join(cells) + "".join(f" | {vs_tfidf(e)}" for e in VS_TFIDF) + f" | {auc} | {micro} | {secs_cell} |")
        lines.append("")
    (HERE / "learning_curve.md").write_text("\n".join(lines))
    print("\n".join(lines))
    _splice_results(lines)
    _plot(groups, sizes)


TITLES = {"goemotions": "**GoEmotions** (28 labels, dev 5,426 comments)",
          "reuters": "**Reuters-21578** (90 topics, our dev part: 1,161 stories)",
          "semeval": "**SemEval 2018 E-c** (11 emotions, dev 886 tweets)"}  #: the datasets' names in RESULTS.md
BLOCK = ("<!-- curve-table -->", "<!-- /curve-table -->")  #: where bench/RESULTS.md holds the report's tables


def _splice_results(lines: list[str]) -> None:
    """The report's tables into bench/RESULTS.md, between the :data:`BLOCK` markers (one table per dataset)."""
    results = HERE / "RESULTS.md"
    text = results.read_text()
    if not all(m in text for m in BLOCK):
        raise SystemExit(f"{results} has no {BLOCK[0]} ... {BLOCK[1]} block to write the tables into")
    out, ds = [], None
    for line in lines:
        if line.startswith("### "):
            ds = line[4:].strip()
            out += [TITLES.get(ds, f"**{ds}**"), ""]
        elif ds is not None and (line.startswith("|") or (not line and out and out[-1].startswith("|"))):
            out.append(line)
    head, rest = text.split(BLOCK[0], 1)
    tail = rest.split(BLOCK[1], 1)[1]
    results.write_text(head + BLOCK[0] + "\n" + "\n".join(out).rstrip() + "\n" + BLOCK[1] + tail)


def _plot(groups: dict[tuple[str, str, str], list[dict]], sizes: list[str]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    datasets = sorted({g[0] for g in groups})
    fig, axes = plt.subplots(1, len(datasets), figsize=(4.5 * len(datasets), 3.6), squeeze=False)
    for ax, ds in zip(axes[0], datasets):
        for enc in ENCODERS:
            pts = [(np.median([x["n"] for x in groups[(ds, n, enc)]]), np.median([x["f1_macro_shrunk"] for x in groups[(ds, n, enc)]]))
                   for n in sizes if (ds, n, enc) in groups]
            if pts:
                ax.plot(*zip(*pts), marker="o", label=enc)
        ax.set_xscale("log")
        ns = sorted({float(np.median([x["n"] for x in v])) for (d, _n, _e), v in groups.items() if d == ds})
        ax.minorticks_off()
        ax.set_xticks(ns, [f"{int(n):,}" for n in ns])
        ax.set_title(ds)
        ax.set_xlabel("labelled texts")
        ax.set_ylabel("dev macro-F1")
        ax.grid(alpha=0.3)
    axes[0][0].legend()
    fig.tight_layout()
    fig.savefig(HERE / "learning_curve.png", dpi=110)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("job", choices=["lm", "run", "report"])
    ap.add_argument("--dataset", default="semeval", choices=["goemotions", "semeval", "reuters"])
    ap.add_argument("--lm", default="en-small", choices=["en-small", "en-small-v0", "en-small-s9"])
    ap.add_argument("--n", default="500", help="a number of labelled texts, or 'all'")
    ap.add_argument("--seeds", default="0")
    ap.add_argument("--encoders", default="en-small,tfidf")
    ap.add_argument("--again", action="store_true")
    ap.add_argument("--options", default="", help='classifier options as JSON, e.g. \'{"epochs": [20]}\' (with --tag)')
    ap.add_argument("--tag", default="", help="a probe's name: its keys are ENCODER@TAG, left out of the report's table")
    ap.add_argument("--threads", type=int, default=1)
    a = ap.parse_args()
    import torch

    torch.set_num_threads(a.threads)
    {"lm": cmd_lm, "run": cmd_run, "report": cmd_report}[a.job](a)


if __name__ == "__main__":
    main()
