"""GoEmotions benchmark for ulmfit_ml: one command, side by side with a TF-IDF baseline.

    python bench/run_bench.py --preset cpu-quick            # writes bench/RESULTS.md + bench/results.json
    python bench/run_bench.py --preset smoke --max-rows 300 --out /tmp/b   # CI smoke (tiny model)

See bench/README.md for the presets, what each figure means and how to reproduce the GPU run.
Splits: the classifier trains on train.tsv minus a stratified held-out part; thresholds are
tuned on that held-out part (never on dev); every figure is reported on dev.tsv (and on each
``--eval-file``).
"""
from __future__ import annotations

import argparse
import copy
import csv
import json
import os
import platform
import resource
import sys
import time
import warnings
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np
import pandas as pd
import torch

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
if str(HERE) not in sys.path:  # run as a script: make the sibling helpers importable
    sys.path.insert(0, str(HERE))
if str(REPO) not in sys.path:  # on the GPU machine ulmfit_ml is not installed, only carried
    sys.path.insert(0, str(REPO))

import ulmfit_ml as um  # noqa: E402
from ulmfit_ml.data import tokens as tokens_module  # noqa: E402
from ulmfit_ml.utils import validation  # noqa: E402
from tokcache import load_cache, save_cache, spacy_available, use_cache  # noqa: E402

__all__ = ["PRESETS", "read_goemotions", "main"]

DEFAULT_DATA = REPO.parent / "shared" / "datasets" / "goemotions"
DEFAULT_CORPUS = REPO.parent / "shared" / "corpora" / "wikitext-2"
WORK = HERE / "_work"
METRICS = ("f1_macro", "f1_micro", "roc_auc_macro", "average_precision_macro", "precision_micro", "recall_micro")

#: The CPU presets' throughput A/B: many short interleaved runs, so that drift on a shared
#: machine hits both sides alike (bench/README.md). Shared, read-only (presets are deep-copied).
CPU_THROUGHPUT_AB: dict[str, Any] = {"lm": {"n_batches": 8, "repeats": 10}, "classifier": {"n_batches": 20, "repeats": 20}}

#: Each preset: AWD-LSTM size, optional pretraining on WikiText-2, LM fine-tuning and
#: classifier options (LMConfig / ClassifierConfig fields), forward+backward ensembling,
#: ablations and the throughput A/B. Chosen from the measurements in RESULTS.md.
PRESETS: dict[str, dict[str, Any]] = {
    "smoke": {  # CI only: proves the script runs end to end; figures are meaningless
        "arch": "tiny", "heldout_pct": 0.2, "pretrain": None, "backwards": True, "ablations": True,
        "lm": {"epochs": 1, "bs": 16, "seq_len": 24},
        "clf": {"bs": 16, "seq_len": 24, "unfreeze": [0], "epochs": [1], "lrs": [1e-2], "pos_weight": "auto"},
        "throughput": {"n_batches": 2, "repeats": 2},
    },
    "cpu-quick": {  # under 20 minutes on 2 CPU cores, ablations included
        "arch": "small", "heldout_pct": 0.1, "pretrain": None, "backwards": False, "ablations": True,
        "lm": {"epochs": 2, "bs": 64, "seq_len": 48, "lr": 1e-2, "drop_mult": 0.2, "max_vocab": 8000},
        "clf": {"bs": 64, "seq_len": 48, "unfreeze": [0], "epochs": [5], "lrs": [1e-2],
                "drop_mult": 0.3, "pos_weight": "auto"},
        "throughput": CPU_THROUGHPUT_AB,
    },
    "cpu-full": {  # under 2 hours on 2 CPU cores: longer LM and classifier, fwd+bwd ensemble
        "arch": "small", "heldout_pct": 0.1, "pretrain": None, "backwards": True, "ablations": False,
        "lm": {"epochs": 4, "bs": 64, "seq_len": 48, "lr": 1e-2, "drop_mult": 0.2, "max_vocab": 8000},
        "clf": {"bs": 64, "seq_len": 48, "unfreeze": [0], "epochs": [12], "lrs": [1e-2],
                "drop_mult": 0.3, "pos_weight": "auto"},
        "throughput": CPU_THROUGHPUT_AB,
    },
    "gpu": {  # the paper-size AWD-LSTM, fp16 on CUDA, WikiText-2 pretraining, fwd+bwd (bigger batches: GPU)
        "arch": "paper", "heldout_pct": 0.1, "pretrain": {"epochs": 5, "bs": 128, "seq_len": 70, "lr": 3e-3},
        "backwards": True, "ablations": False,
        "lm": {"epochs": 5, "bs": 128, "seq_len": 70, "lr": 3e-3, "drop_mult": 0.3},
        "clf": {"bs": 256, "seq_len": 70, "unfreeze": [1, 2, 3, 0], "epochs": [1, 1, 1, 3],
                "lrs": [2e-2, 1e-2, 5e-3, 2e-3], "drop_mult": 0.4, "pos_weight": "auto"},
        "throughput": {"n_batches": 30, "repeats": 3},
    },
}


# ---------------------------------------------------------------------- small helpers
def _tp_opts(tp: dict[str, Any], model: str) -> dict[str, Any]:
    """Throughput A/B options for ``model`` ("lm" or "classifier"): the preset's ``throughput``
    dict, whose ``lm`` / ``classifier`` sub-dicts override its top-level keys (a classifier batch
    is ~5x faster than an LM batch, so it takes more batches per run)."""
    keys = ("n_batches", "repeats", "lr", "plain_cast")
    out = {k: v for k, v in tp.items() if k in keys}
    out.update({k: v for k, v in tp.get(model, {}).items() if k in keys})
    return out


def _now() -> float:
    return time.perf_counter()


def peak_rss_mb() -> float:
    """Peak resident set size of this process so far, in MiB (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


class Stages:
    """Wall time of each stage (``with stages("name"): ...``) and peak RSS after it."""

    def __init__(self, device: torch.device, on_stage: Any = None) -> None:
        self.times: dict[str, float] = {}
        self.rss: dict[str, float] = {}
        self.device = device
        self.on_stage = on_stage  # called after each stage (writes partial results)

    @contextmanager
    def __call__(self, name: str, *, quiet: bool = False) -> Iterator[None]:
        t0 = _now()
        yield
        if self.device.type == "cuda":
            torch.cuda.synchronize()
        self.times[name] = round(self.times.get(name, 0.0) + _now() - t0, 2)
        self.rss[name] = round(peak_rss_mb(), 1)
        if not quiet:
            print(f"[bench] {name}: {self.times[name]:.1f} s (peak RSS {self.rss[name]:.0f} MiB)", flush=True)
        if self.on_stage is not None:
            self.on_stage()


def read_goemotions(path: str | Path, label_names: Sequence[str]) -> pd.DataFrame:
    """A GoEmotions TSV (text, comma-separated label ids, id; no header) with a ``labels``
    column of comma-delimited label *names* (ids mapped through ``labels.txt``)."""
    df = pd.read_csv(path, sep="\t", header=None, names=["text", "labels", "id"], quoting=csv.QUOTE_NONE,
                     dtype={"labels": str, "id": str}, keep_default_na=False)
    names = list(label_names)

    def to_names(cell: str) -> str:
        try:
            return ",".join(names[int(i)] for i in str(cell).split(",") if i.strip())
        except (ValueError, IndexError) as e:
            raise ValueError(f"{path}: label cell {cell!r} is not comma-separated ids in 0..{len(names) - 1}.") from e

    df["labels"] = df["labels"].map(to_names)
    return df


def _parse_set(items: Sequence[str], cfg: dict[str, Any]) -> dict[str, Any]:
    """Apply ``--set a.b=VALUE`` overrides (VALUE read as JSON, else as a string)."""
    cfg = copy.deepcopy(cfg)
    for it in items:
        if "=" not in it:
            raise ValueError(f"--set expects KEY=VALUE (e.g. clf.epochs=[1,1,2]), got {it!r}.")
        key, raw = it.split("=", 1)
        try:
            val = json.loads(raw)
        except json.JSONDecodeError:
            val = raw
        node = cfg
        parts = key.split(".")
        for p in parts[:-1]:
            if node.get(p) is None:
                node[p] = {}
            node = node[p]
        node[parts[-1]] = val
    return cfg


def summarise(y: np.ndarray, probs: np.ndarray, thresholds: float | np.ndarray, labels: Sequence[str]) -> dict[str, float]:
    """The reported subset of :func:`ulmfit_ml.multilabel_report`'s summary."""
    s = um.multilabel_report(y, probs, thresholds, labels=labels).summary
    return {k: round(float(s[k]), 4) for k in METRICS}


def score(name: str, results: dict[str, Any], sets: dict[str, tuple[np.ndarray, np.ndarray]],
          thresholds: np.ndarray, labels: Sequence[str]) -> None:
    """Store figures at 0.5 and at the tuned thresholds for every evaluation set."""
    out = results.setdefault("models", {}).setdefault(name, {})
    for set_name, (y, p) in sets.items():
        out[set_name] = {"at_0.5": summarise(y, p, 0.5, labels), "tuned": summarise(y, p, thresholds, labels)}
    dev = out.get("dev")
    if dev:
        print(f"[bench] {name}: dev macro-F1 {dev['at_0.5']['f1_macro']:.4f} @0.5, {dev['tuned']['f1_macro']:.4f} tuned; "
              f"micro-F1 {dev['tuned']['f1_micro']:.4f}; macro AUC {dev['tuned']['roc_auc_macro']:.4f}", flush=True)


# ---------------------------------------------------------------------- TF-IDF baseline
def tfidf_probs(data: um.MultiLabelData, texts_by_set: dict[str, list[str]], *, plain: bool = False
                ) -> tuple[dict[str, np.ndarray], str]:
    """TF-IDF + one-vs-rest logistic regression, fitted on ``data``'s training split.

    ``plain=False``: the package's :class:`ulmfit_ml.TfidfBaseline` with its defaults.
    ``plain=True``: the bare scikit-learn recipe the team's 0.464 figure was measured with
    (scikit-learn defaults except ngram_range and class_weight).
    """
    if not plain:
        from ulmfit_ml.models.baseline import TfidfBaseline

        base = TfidfBaseline().fit(data)
        return {k: base.predict_proba(v) for k, v in texts_by_set.items()}, f"ulmfit_ml.TfidfBaseline({base.options})"
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression
    from sklearn.multiclass import OneVsRestClassifier
    from sklearn.pipeline import make_pipeline

    pipe = make_pipeline(TfidfVectorizer(ngram_range=(1, 2)),
                         OneVsRestClassifier(LogisticRegression(class_weight="balanced", max_iter=1000)))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        pipe.fit(data.train_texts, data.y_train.astype(int))
    return {k: pipe.predict_proba(v).astype(np.float32) for k, v in texts_by_set.items()}, \
        "TfidfVectorizer(ngram_range=(1,2)) + OneVsRestClassifier(LogisticRegression(class_weight='balanced'))"


# ---------------------------------------------------------------------- the run
def _machine(device: torch.device, note: str | None) -> dict[str, Any]:
    m: dict[str, Any] = {"python": platform.python_version(), "torch": torch.__version__, "cpu_count": os.cpu_count(),
                         "torch_threads": torch.get_num_threads(), "platform": platform.platform(),
                         "device": str(device), "load_avg_start": list(os.getloadavg())}
    try:
        import fastai
        m["fastai"] = fastai.__version__
    except ImportError:  # pragma: no cover
        pass
    if device.type == "cuda":
        m["gpu"] = torch.cuda.get_device_name(0)
    if note:
        m["note"] = note
    return m


def _pretrained_lm(cfg: dict[str, Any], corpus: Path, cache_dir: Path | None, *, backwards: bool, arch: Any,
                   device: str | None, stages: Stages) -> tuple[Path, dict[str, Any]]:
    """Pretrain on the corpus (or reuse an identical earlier pretraining from ``cache_dir``)."""
    opts = {"epochs": 4, "bs": 64, "seq_len": 48, "lr": 3e-3, "drop_mult": 0.1, "min_freq": 2, "max_vocab": 30000}
    opts.update(cfg)
    key = json.dumps({"arch": arch, "backwards": backwards, "corpus": corpus.name, **opts}, sort_keys=True)
    import hashlib
    tag = hashlib.sha1(key.encode()).hexdigest()[:10]
    target = (cache_dir or WORK / "pretrained") / f"wt-{'bwd' if backwards else 'fwd'}-{tag}"
    name = f"pretrain_lm_{'bwd' if backwards else 'fwd'}"
    if (target / "lm.safetensors").exists():
        lm = um.load_lm(target)
        info = {"reused_from": str(target), "train_seconds_when_made": lm.metrics.get("train_seconds"),
                "perplexity": lm.metrics.get("perplexity"), "options": opts}
        print(f"[bench] {name}: reusing {target} (made in {info['train_seconds_when_made']} s)", flush=True)
        return target, info
    with stages(name):
        lm = um.pretrain_lm(corpus, arch=arch, backwards=backwards, quiet=True, device=device, **opts)
    lm.save(target, overwrite=True)
    return target, {"perplexity": lm.metrics.get("perplexity"), "train_seconds": lm.metrics.get("train_seconds"),
                    "options": opts, "saved_to": str(target)}


def run(args: argparse.Namespace) -> dict[str, Any]:
    cfg = _parse_set(args.set or [], PRESETS[args.preset])
    device = torch.device(args.device) if args.device else torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev_arg = str(device)
    out_dir = Path(args.out) if args.out else HERE

    def checkpoint() -> None:  # partial results after every stage: a killed run still leaves figures
        if not args.tokenize_only:
            R["partial"] = True
            R["peak_rss_mb"] = round(peak_rss_mb(), 1)
            R["total_seconds"] = round(_now() - t_start, 1)
            write_results(R, out_dir, key=args.key)

    stages = Stages(device, checkpoint)
    R: dict[str, Any] = {"preset": args.preset, "config": cfg, "machine": _machine(device, args.note),
                         "started": time.strftime("%Y-%m-%d %H:%M:%S"), "stages_s": stages.times,
                         "peak_rss_mb_after_stage": stages.rss, "missing": []}
    t_start = _now()
    data_dir = Path(args.data_dir)
    for f in ("train.tsv", "dev.tsv", "labels.txt"):
        if not (data_dir / f).exists():
            raise FileNotFoundError(f"{data_dir / f} not found: pass --data-dir pointing at the GoEmotions folder.")

    # ---- load
    with stages("load"):
        label_names = [ln.strip() for ln in (data_dir / "labels.txt").read_text().splitlines() if ln.strip()]
        train_df = read_goemotions(data_dir / "train.tsv", label_names)
        dev_df = read_goemotions(data_dir / "dev.tsv", label_names)
        evals = {f"eval:{Path(p).name}": read_goemotions(p, label_names) for p in (args.eval_file or [])}
        if args.max_rows:
            train_df = train_df.sample(n=min(args.max_rows, len(train_df)), random_state=0)
            dev_df = dev_df.sample(n=min(max(args.max_rows // 2, 50), len(dev_df)), random_state=0)
            evals = {k: v.sample(n=min(max(args.max_rows // 2, 50), len(v)), random_state=0) for k, v in evals.items()}
    R["data"] = {"dir": str(data_dir), "n_train_file": len(train_df), "n_dev": len(dev_df),
                 "n_labels": len(label_names), "eval_files": {k: len(v) for k, v in evals.items()}}

    # ---- tokens (cached: spaCy is not on the GPU machine)
    cache_path = Path(args.token_cache) if args.token_cache else (Path(args.out) / "tokens.json.gz" if args.out else WORK / "tokens.json.gz")
    cache = load_cache(cache_path)
    n_cached = len(cache)
    corpus_dir = Path(args.corpus)
    need_corpus = bool(cfg.get("pretrain")) or args.tokenize_only
    with use_cache(cache):
        with stages("tokenize"):
            all_texts = list(train_df.text) + list(dev_df.text) + [t for v in evals.values() for t in v.text]
            tokens_module.tokenize_texts(all_texts)
            if need_corpus:
                from ulmfit_ml.models.lm import _read_corpus  # the exact lines pretrain_lm reads
                tokens_module.tokenize_texts(_read_corpus(corpus_dir))
        R["tokenize"] = {"cache": str(cache_path), "texts_in_cache_before": n_cached, "texts_tokenised_now": len(cache) - n_cached,
                         "note": "seconds include spaCy only for texts not already in the cache"}
        if len(cache) > n_cached:
            save_cache(cache, cache_path)
        if args.tokenize_only:
            return R

        # ---- split: held-out part of train for thresholds (and the classifier's validation)
        with stages("split"):
            data = um.MultiLabelData.from_df(train_df, label_col="labels", label_delim=",", labels=label_names,
                                             split="stratified", valid_pct=cfg["heldout_pct"], seed=42)
        R["data"].update({"n_fit": int((~data.is_valid).sum()), "n_heldout": int(data.is_valid.sum())})
        y_dev = validation.parse_label_matrix(dev_df, validation.LabelSpec(label_col="labels", label_delim=","), label_names)[0]
        y_eval = {k: validation.parse_label_matrix(v, validation.LabelSpec(label_col="labels", label_delim=","), label_names)[0]
                  for k, v in evals.items()}
        texts_sets = {"dev": list(dev_df.text), **{k: list(v.text) for k, v in evals.items()}}
        y_sets = {"dev": y_dev, **y_eval}
        labels = data.labels

        # ---- TF-IDF baselines on the same split
        R["tfidf_recipes"] = {}
        tfidf_probs_by_name: dict[str, dict[str, np.ndarray]] = {}
        tfidf_runs = ([False, True] if cfg.get("tfidf_plain", False) else [False]) if cfg.get("tfidf", True) else []
        if not tfidf_runs:
            R["missing"].append("TF-IDF baseline (tfidf=false: it is CPU-only and deterministic, see the CPU presets)")
        for plain in tfidf_runs:
            name = "tfidf_plain_sklearn" if plain else "tfidf"
            with stages(f"{name}_baseline"):
                tp, recipe = tfidf_probs(data, {"heldout": data.valid_texts, **texts_sets}, plain=plain)
                t_tfidf = um.tune_thresholds(data.y_valid, tp["heldout"])
            R["tfidf_recipes"][name] = recipe
            tfidf_probs_by_name[name] = tp
            score(name, R, {k: (y_sets[k], tp[k]) for k in texts_sets}, t_tfidf, labels)

        # ---- language models (+ optional pretraining on WikiText-2)
        arch = cfg["arch"]
        directions = [False, True] if cfg.get("backwards") else [False]
        lms: dict[bool, um.LanguageModel] = {}
        lm_learners: dict[bool, object] = {}  # the trainers' fastai Learners
        R["lm"] = {}
        for bwd in directions:
            d = "bwd" if bwd else "fwd"
            pretrained: Any = False
            if cfg.get("pretrain"):
                path, info = _pretrained_lm(cfg["pretrain"], corpus_dir, Path(args.pretrained_cache) if args.pretrained_cache else None,
                                            backwards=bwd, arch=arch, device=dev_arg, stages=stages)
                R.setdefault("pretrain", {})[d] = info
                pretrained = str(path)
            with stages(f"finetune_lm_{d}"):
                lm_trainer = um.LMTrainer(data, arch=arch, pretrained=pretrained, backwards=bwd, quiet=True,
                                          device=dev_arg, seed=cfg.get("seed", 42), **cfg.get("lm", {}))
                lm = lm_trainer.train()
                lm_learners[bwd] = lm_trainer.learner
            n_tok = sum(len(t) for t in data.tokens)
            epochs = lm.config.get("epochs", 0) + (lm.config.get("frozen_epochs") or (1 if pretrained else 0))
            R["lm"][d] = {"perplexity": lm.metrics.get("perplexity"), "accuracy": lm.metrics.get("accuracy"),
                          "train_seconds": lm.metrics.get("train_seconds"), "vocab": len(lm.vocab),
                          "end_to_end_tokens_per_s": round(n_tok * 0.9 * epochs / lm.metrics["train_seconds"], 1)
                          if lm.metrics.get("train_seconds") else None}
            lms[bwd] = lm

        # ---- classifiers
        clfs: dict[bool, um.MultiLabelClassifier] = {}
        clf_learners: dict[bool, object] = {}  # the trainers' fastai Learners (the models hold none)
        probs: dict[bool, dict[str, np.ndarray]] = {}
        heldout: dict[bool, np.ndarray] = {}
        for bwd in directions:
            d = "bwd" if bwd else "fwd"
            with stages(f"classifier_{d}"):  # a backward LM's classifier reverses its texts itself
                clf_trainer = um.ClassifierTrainer(data, encoder=lms[bwd], quiet=True, device=dev_arg,
                                                   seed=cfg.get("seed", 42), **cfg.get("clf", {}))
                clf = clf_trainer.train()
                clf_learners[bwd] = clf_trainer.learner
            heldout[bwd] = clf._valid[1]
            tuned = clf.tune_thresholds()  # on the held-out part of train (the classifier's validation split)
            with stages(f"predict_sets_{d}"):
                probs[bwd] = {k: clf.predict_proba(v, bs=256) for k, v in texts_sets.items()}
            score(f"ulmfit_{d}", R, {k: (y_sets[k], probs[bwd][k]) for k in texts_sets}, tuned, labels)
            R["models"][f"ulmfit_{d}"]["train_seconds"] = round(clf.meta["train_seconds"], 1)
            R["models"][f"ulmfit_{d}"]["history"] = clf.history.round(4).to_dict(orient="records")
            clfs[bwd] = clf
        # Ensembles: equal-weight probability means (um.MultiLabelEnsemble's arithmetic, on the arrays
        # already predicted), thresholds tuned on the held-out part like every other row.
        from ulmfit_ml.models.ensemble import average_probabilities as avg
        ens_h = avg([heldout[b] for b in directions])
        ens_p = {k: avg([probs[b][k] for b in directions]) for k in texts_sets}
        if len(directions) == 2:
            score("ulmfit_fwd+bwd", R, {k: (y_sets[k], ens_p[k]) for k in texts_sets},
                  um.tune_thresholds(data.y_valid, ens_h), labels)
        if "tfidf" in tfidf_probs_by_name:  # ULMFiT blended 50/50 with the TF-IDF baseline
            tp = tfidf_probs_by_name["tfidf"]
            name = "ulmfit_" + "+".join("bwd" if b else "fwd" for b in directions) + "+tfidf"
            score(name, R, {k: (y_sets[k], avg([ens_p[k], tp[k]])) for k in texts_sets},
                  um.tune_thresholds(data.y_valid, avg([ens_h, tp["heldout"]])), labels)

        # ---- padding share in classifier batches
        clf = clfs[False]
        with stages("padding_share"):
            R["padding"] = {}
            for split_name, dl in (("train", clf_learners[False].dls.train), ("heldout", clf_learners[False].dls.valid)):
                tot = real = nb = 0
                for xb, _ in dl:
                    tot += xb.numel()
                    real += int((xb != 1).sum())
                    nb += 1
                    if args.pad_batches and nb >= args.pad_batches:
                        break
                R["padding"][split_name] = {"real_token_share": round(real / max(tot, 1), 4), "batches": nb}
        print(f"[bench] real-token share: {R['padding']}", flush=True)

        # ---- inference on CPU, large batches
        with stages("inference_cpu"):
            R["inference_cpu"] = _inference(clf, texts_sets["dev"], device)

        # ---- training throughput: ulmfit_ml vs plain loop (last: it keeps training the models)
        tp_cfg = cfg.get("throughput", {})
        if not args.no_throughput:
            with stages("throughput_ab"):
                from throughput import compare_training_throughput
                clf.to(device)
                R["throughput"] = {
                    "lm": compare_training_throughput(lm_learners[False], **_tp_opts(tp_cfg, "lm")),
                    "classifier": compare_training_throughput(clf_learners[False], pad_idx=1, **_tp_opts(tp_cfg, "classifier")),
                }
            _print_throughput(R["throughput"])
        else:
            R["missing"].append("throughput A/B (--no-throughput)")

        # ---- ablations (the ULMFiT paper's claims); last: the longest optional part.
        # (throughput changed lm_learners[False]'s weights, not lms[False].state_dict used here)
        if cfg.get("ablations"):
            R["ablations"] = {}
            base_clf = dict(cfg.get("clf", {}))
            n_ep = int(sum(base_clf.get("epochs", [1])))
            gradual_ref = list(base_clf.get("unfreeze", [0])) != [0]
            # The other schedule with the same total epochs: all at once at the last stage's rate
            # when the preset unfreezes gradually; else ULMFiT's gradual unfreezing (1 epoch with the
            # head only, 1 with the last 2 groups, the rest unfrozen; rates 2x, 1.5x, 1x).
            lr = float(base_clf.get("lrs", [1e-3])[-1])
            schedule = ({"all_layers_at_once": {"unfreeze": [0], "epochs": [n_ep], "lrs": [lr]}} if gradual_ref else
                        {"gradual_unfreezing": {"unfreeze": [1, 2, 0], "epochs": [1, 1, max(n_ep - 2, 1)],
                                                "lrs": [2 * lr, 1.5 * lr, lr]}})
            variants = {"random_init_encoder": {"encoder": None},
                        **{k: {"encoder": lms[False], **v} for k, v in cfg.get("schedule_ablation", schedule).items()}}
            for vname, v in variants.items():
                opts = dict(base_clf)
                enc = v.pop("encoder")
                opts.update(v)
                with stages(f"ablation_{vname}"):
                    c2 = um.train_classifier(data, encoder=enc, arch=arch, quiet=True, device=dev_arg, seed=cfg.get("seed", 42), **opts)
                t2 = c2.tune_thresholds()
                p2 = c2.predict_proba(texts_sets["dev"], bs=256)
                R["ablations"][vname] = {"dev": {"at_0.5": summarise(y_dev, p2, 0.5, labels),
                                                 "tuned": summarise(y_dev, p2, t2, labels)},
                                         "options": {k: v for k, v in opts.items()}, "train_seconds": round(c2.meta["train_seconds"], 1)}
                print(f"[bench] ablation {vname}: dev macro-F1 {R['ablations'][vname]['dev']['tuned']['f1_macro']:.4f} tuned", flush=True)
                del c2
            m = R["models"]["ulmfit_fwd"]["dev"]
            R["ablations"]["reference_finetuned_" + ("gradual" if gradual_ref else "all_at_once")] = {"dev": m}
            R["ablations"]["thresholds_tuned_vs_0.5"] = {"at_0.5": m["at_0.5"]["f1_macro"], "tuned": m["tuned"]["f1_macro"]}

    R["peak_rss_mb"] = round(peak_rss_mb(), 1)
    R["total_seconds"] = round(_now() - t_start, 1)
    R["machine"]["load_avg_end"] = list(os.getloadavg())
    R["partial"] = False
    return R


def run_speed(args: argparse.Namespace) -> dict[str, Any]:
    """``--speed-only``: the throughput A/B and CPU inference with *untrained*
    models of the preset's size (speed does not depend on the weights), in minutes."""
    cfg = _parse_set(args.set or [], PRESETS[args.preset])
    device = torch.device(args.device) if args.device else torch.device("cuda" if torch.cuda.is_available() else "cpu")
    stages = Stages(device)
    R: dict[str, Any] = {"preset": args.preset, "mode": "speed-only (untrained models of the preset's size)",
                         "config": cfg, "machine": _machine(device, args.note), "started": time.strftime("%Y-%m-%d %H:%M:%S"),
                         "stages_s": stages.times, "peak_rss_mb_after_stage": stages.rss, "missing": ["quality figures (speed-only run)"]}
    t0 = _now()
    data_dir = Path(args.data_dir)
    names = [ln.strip() for ln in (data_dir / "labels.txt").read_text().splitlines() if ln.strip()]
    train_df = read_goemotions(data_dir / "train.tsv", names)
    dev_df = read_goemotions(data_dir / "dev.tsv", names)
    cache = load_cache(Path(args.token_cache) if args.token_cache else WORK / "tokens.json.gz")
    with use_cache(cache):
        data = um.MultiLabelData.from_df(train_df, label_col="labels", label_delim=",", labels=names,
                                         split="stratified", valid_pct=cfg["heldout_pct"], seed=42)
        lm_opts = dict({"pretrained": False}, **cfg.get("lm", {}), epochs=0, frozen_epochs=0)
        with stages("build_untrained"):
            lm_trainer = um.LMTrainer(data, arch=cfg["arch"], quiet=True, device=str(device), **lm_opts)
            lm = lm_trainer.train()
            clf_opts = dict(cfg.get("clf", {}))
            clf_opts["epochs"] = [0] * len(clf_opts.get("unfreeze", [0]))
            clf_trainer = um.ClassifierTrainer(data, encoder=lm, quiet=True, device=str(device), **clf_opts)
            clf = clf_trainer.train()
        with stages("inference_cpu"):
            R["inference_cpu"] = _inference(clf, list(dev_df.text), device)
        with stages("throughput_ab"):
            from throughput import compare_training_throughput
            tp = cfg.get("throughput", {})
            R["throughput"] = {"lm": compare_training_throughput(lm_trainer.learner, **_tp_opts(tp, "lm")),
                               "classifier": compare_training_throughput(clf_trainer.learner, pad_idx=1,
                                                                         **_tp_opts(tp, "classifier"))}
    _print_throughput(R["throughput"])
    R["peak_rss_mb"] = round(peak_rss_mb(), 1)
    R["total_seconds"] = round(_now() - t0, 1)
    R["machine"]["load_avg_end"] = list(os.getloadavg())
    R["partial"] = False
    return R


def _print_throughput(tp: dict[str, Any]) -> None:
    for k, v in tp.items():
        print(f"[bench] throughput {k}: ulmfit_ml {v['ulmfit_ml_tokens_per_s']['median']:.0f} tok/s, plain "
              f"{v['plain_loop_tokens_per_s']['median']:.0f} tok/s, ratio {v['ratio']:.3f} (per-batch medians; "
              f"run medians {v['ratio_of_medians']:.3f}; same batches: {v['same_batches']})"
              + (f"; vs plain loop with cast {v['ratio_vs_plain_cast']:.3f}" if "ratio_vs_plain_cast" in v else ""), flush=True)


def _inference(clf: um.MultiLabelClassifier, texts: list[str], device: torch.device) -> dict[str, Any]:
    """``predict_proba`` texts/s on CPU with bs=512: end to end (spaCy tokenisation included,
    where spaCy is installed) and from cached tokens (numericalise + model)."""
    clf.to("cpu")
    texts = list(texts)
    out: dict[str, Any] = {"n_texts": len(texts), "bs": 512, "torch_threads": torch.get_num_threads()}
    clf.predict_proba(texts[:64], bs=512)  # warm-up
    t0 = _now()
    clf.predict_proba(texts, bs=512)  # tokens from the cache (use_cache is active)
    out["texts_per_s_cached_tokens"] = round(len(texts) / (_now() - t0), 1)
    if spacy_available():
        import ulmfit_ml.models.classifier as cm  # predict_proba tokenises through ulmfit_ml.models.classifier.tokenize_texts
        saved = cm.tokenize_texts
        cm.tokenize_texts = _ORIG_TOKENIZE  # bypass the cache: spaCy tokenises every text
        try:
            t0 = _now()
            clf.predict_proba(texts, bs=512)
            out["texts_per_s_end_to_end"] = round(len(texts) / (_now() - t0), 1)
        finally:
            cm.tokenize_texts = saved
    else:
        out["texts_per_s_end_to_end"] = None
        out["note"] = "spaCy not installed on this machine: only the cached-token figure"
    clf.to(device)
    return out


#: ulmfit_ml's own tokenize_texts, captured before tokcache.use_cache patches it.
_ORIG_TOKENIZE = tokens_module.tokenize_texts


# ---------------------------------------------------------------------- report
def _fmt(v: Any, nd: int = 4) -> str:
    if v is None:
        return "–"
    if isinstance(v, float):
        return f"{v:.{nd}f}"
    return str(v)


def render_markdown(all_results: dict[str, Any]) -> str:
    """RESULTS.md from results.json (one section per preset run)."""
    lines = ["# GoEmotions benchmark results", "",
             "Generated by `bench/run_bench.py` from `bench/results.json` (see bench/README.md). Split: the models "
             "train on train.tsv minus a stratified held-out 10%; thresholds are tuned per label on that held-out "
             "part (never on dev); all figures below are on **dev.tsv** unless a set is named.", ""]
    notes = all_results.get("_notes")
    if notes:
        lines += ["## Notes", ""] + [f"- {n}" for n in notes] + [""]
    for preset, R in all_results.items():
        if preset.startswith("_"):
            continue
        m = R.get("machine", {})
        lines += [f"## Preset `{preset}`", "",
                  f"Machine: {m.get('gpu', 'CPU')} / {m.get('cpu_count')} CPU cores visible, torch {m.get('torch')}, "
                  f"{m.get('torch_threads')} torch threads, device `{m.get('device')}`; started {R.get('started')}; "
                  f"total {R.get('total_seconds')} s; peak RSS {R.get('peak_rss_mb')} MiB."]
        if m.get("note"):
            lines += ["", f"Note: {m['note']}"]
        if R.get("partial"):
            lines += ["", "**PARTIAL RUN: it stopped (or was stopped) before the end; sections below that are "
                          "absent were not measured.** Last stage written: " + (list(R.get("stages_s", {}))[-1:] or ["none"])[0]]
        if R.get("missing"):
            lines += ["", "**Missing from this run:** " + "; ".join(R["missing"])]
        lines += ["", "| model | set | macro-F1 @0.5 | macro-F1 tuned | micro-F1 @0.5 | micro-F1 tuned | macro ROC-AUC |",
                  "| --- | --- | --- | --- | --- | --- | --- |"]
        for name, mod in R.get("models", {}).items():
            for set_name, v in mod.items():
                if not isinstance(v, dict) or "at_0.5" not in v:
                    continue
                a, t = v["at_0.5"], v["tuned"]
                lines.append(f"| {name} | {set_name} | {_fmt(a['f1_macro'])} | {_fmt(t['f1_macro'])} | {_fmt(a['f1_micro'])} | "
                             f"{_fmt(t['f1_micro'])} | {_fmt(a['roc_auc_macro'])} |")
        if R.get("ablations"):
            lines += ["", "Ablations (dev):", "", "| variant | macro-F1 @0.5 | macro-F1 tuned | micro-F1 tuned | macro ROC-AUC | train s |",
                      "| --- | --- | --- | --- | --- | --- |"]
            for k, v in R["ablations"].items():
                if "dev" in v:
                    a, t = v["dev"]["at_0.5"], v["dev"]["tuned"]
                    lines.append(f"| {k} | {_fmt(a['f1_macro'])} | {_fmt(t['f1_macro'])} | {_fmt(t['f1_micro'])} | "
                                 f"{_fmt(a['roc_auc_macro'])} | {_fmt(v.get('train_seconds'))} |")
        if R.get("lm"):
            lines += ["", "Language models: " + "; ".join(
                f"{d}: perplexity {_fmt(v.get('perplexity'), 1)}, {_fmt(v.get('train_seconds'), 0)} s, "
                f"~{_fmt(v.get('end_to_end_tokens_per_s'), 0)} tok/s end to end" for d, v in R["lm"].items())]
        if R.get("pretrain"):
            lines += ["", "Pretraining (WikiText-2): " + "; ".join(
                f"{d}: perplexity {_fmt(v.get('perplexity'), 1)}, "
                + (f"{_fmt(v.get('train_seconds'), 0)} s" if v.get("train_seconds") else f"reused (made in {_fmt(v.get('train_seconds_when_made'), 0)} s)")
                for d, v in R["pretrain"].items())]
        if R.get("throughput"):
            lines += ["", "Training throughput, interleaved A/B in the same process (whole-run tokens/s: median [min–max]; "
                          "**ratio** = ulmfit_ml / plain from per-batch median times, the figure the 0.95 bar applies to, "
                          "see bench/README.md):", "",
                      "| model | ulmfit_ml | plain fastai loop | **ratio** (per-batch medians) | best batches | ratio of run medians | paired ratio median [min–max] |",
                      "| --- | --- | --- | --- | --- | --- | --- |"]
            for k, v in R["throughput"].items():
                a, b, p = v["ulmfit_ml_tokens_per_s"], v["plain_loop_tokens_per_s"], v["paired_ratio"]
                head = f"**{v['ratio']:.3f}**" if "ratio" in v else "–"  # runs before per-batch timing
                best = f"{v['ratio_best_batches']:.3f}" if "ratio_best_batches" in v else "–"
                lines.append(f"| {k} | {a['median']:.0f} [{a['min']:.0f}–{a['max']:.0f}] | {b['median']:.0f} [{b['min']:.0f}–{b['max']:.0f}] | "
                             f"{head} | {best} | {v['ratio_of_medians']:.3f} | {p['median']:.3f} [{p['min']:.3f}–{p['max']:.3f}] |")
            casts = [f"{k} {v['ratio_vs_plain_cast']:.3f}" for k, v in R["throughput"].items() if "ratio_vs_plain_cast" in v]
            if casts:
                lines += ["", "ulmfit_ml / a plain loop that also casts batches to plain `Tensor` (as the Learner's "
                              "`CastToTensor` does), per-batch medians: " + ", ".join(casts) + "."]
        if R.get("inference_cpu"):
            i = R["inference_cpu"]
            lines += ["", f"`predict_proba` on CPU, bs=512, {i['n_texts']} dev texts, {i['torch_threads']} threads: "
                          f"{_fmt(i.get('texts_per_s_end_to_end'), 0)} texts/s end to end (spaCy tokenisation included), "
                          f"{_fmt(i.get('texts_per_s_cached_tokens'), 0)} texts/s from cached tokens."]
        if R.get("padding"):
            lines += ["", "Real (non-pad) token share in classifier batches: " + ", ".join(
                f"{k} {v['real_token_share']:.3f} ({v['batches']} batches)" for k, v in R["padding"].items())]
        if R.get("stages_s"):
            lines += ["", "Wall time per stage (s): " + ", ".join(f"{k} {v}" for k, v in R["stages_s"].items())]
        lines += [""]
    return "\n".join(lines) + "\n"


def write_results(R: dict[str, Any], out_dir: Path, *, key: str | None = None) -> None:
    """Merge ``R`` into ``out_dir/results.json`` under ``key`` (default: its preset) and
    regenerate ``out_dir/RESULTS.md``."""
    out_dir.mkdir(parents=True, exist_ok=True)
    jp = out_dir / "results.json"
    allr: dict[str, Any] = json.loads(jp.read_text()) if jp.exists() else {}
    allr[key or R["preset"]] = R
    tmp = jp.with_name("results.json.tmp-write")
    tmp.write_text(json.dumps(allr, indent=1, default=float))
    tmp.replace(jp)
    (out_dir / "RESULTS.md").write_text(render_markdown(allr))


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--preset", choices=sorted(PRESETS), default="cpu-quick")
    p.add_argument("--data-dir", default=str(DEFAULT_DATA), help="GoEmotions folder (train.tsv, dev.tsv, labels.txt)")
    p.add_argument("--eval-file", action="append", help="extra labelled TSV (GoEmotions format) to score; repeatable")
    p.add_argument("--max-rows", type=int, default=None, help="sample this many train rows (dev: half) - for the CI smoke")
    p.add_argument("--out", default=None, help="write results.json/RESULTS.md here instead of bench/ (smoke runs)")
    p.add_argument("--key", default=None, help="name of this run in results.json (default: the preset)")
    p.add_argument("--set", action="append", metavar="KEY=JSON", help="override a preset field, e.g. clf.epochs=[1,1,3]")
    p.add_argument("--device", default=None, help="cpu or cuda (default: cuda when available)")
    p.add_argument("--corpus", default=str(DEFAULT_CORPUS), help="pretraining corpus (.txt file or folder)")
    p.add_argument("--token-cache", default=None, help="gzipped JSON token cache (default bench/_work/tokens.json.gz)")
    p.add_argument("--pretrained-cache", default=None, help="folder of reusable pretrained LMs (default bench/_work/pretrained)")
    p.add_argument("--tokenize-only", action="store_true", help="only build the token cache (run where spaCy is installed)")
    p.add_argument("--speed-only", action="store_true", help="only the throughput A/B + CPU inference, untrained models")
    p.add_argument("--no-throughput", action="store_true", help="skip the ulmfit_ml vs plain-loop throughput A/B")
    p.add_argument("--pad-batches", type=int, default=0, help="classifier batches inspected for the padding share (0: all)")
    p.add_argument("--threads", type=int, default=None, help="torch.set_num_threads")
    p.add_argument("--note", default=None, help="free text stored with the machine info (e.g. 'shared with 4 others')")
    p.add_argument("--merge", default=None, help="fold an existing results.json (e.g. from the GPU) into --out/bench and exit")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    out_dir = Path(args.out) if args.out else HERE
    if args.merge:
        other = json.loads(Path(args.merge).read_text())
        for k, v in other.items():
            write_results(v, out_dir, key=k)
        print(f"[bench] merged {list(other)} into {out_dir / 'results.json'}")
        return 0
    if args.threads:
        torch.set_num_threads(args.threads)
    R = run_speed(args) if args.speed_only else run(args)
    if args.tokenize_only:
        print(f"[bench] token cache: {R['tokenize']}")
        return 0
    write_results(R, out_dir, key=args.key)
    print(f"[bench] wrote {out_dir / 'results.json'} and {out_dir / 'RESULTS.md'} in {R['total_seconds']} s", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
