"""The main job on the bundled dataset: ``python -m ulmfit_ml.demo``.

Reads ``data/goemotions_sample.csv`` (4,000 real Reddit comments from GoEmotions, labelled with
Ekman's emotions; see data/README.md), keeps 1,000 of them aside as a test set, fine-tunes the
shipped general-domain AWD-LSTM language model on the other 3,000, trains the multi-label
classifier, tunes per-label thresholds on the validation split, prints the test metrics next to
the TF-IDF baseline, their equal-weight blend and a trivial predictor, saves the model and predicts three new comments.
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ..models.baseline import TfidfBaseline
from ..models.ensemble import MultiLabelEnsemble
from ..training.trainer import train_classifier
from ..utils.config import ClassifierConfig, DataConfig, LMConfig, config_from_dict
from ..utils.config_files import load_config_file
from ..data.core import MultiLabelData
from ..training.finetune import finetune_lm
from ..evaluation.metrics import multilabel_report
from ..models.registry import load_classifier
from ..utils.validation import LabelSpec, parse_label_matrix

__all__ = ["demo_path", "demo_config_path", "load_demo", "main"]


N_TEST = 1000  #: comments kept aside as the demo's test set


def demo_path() -> Path:
    """Path of the bundled demo CSV (``data/goemotions_sample.csv`` in the source tree)."""
    return Path(__file__).resolve().parents[2] / "data" / "goemotions_sample.csv"


def demo_config_path() -> Path:
    """Path of ``data/demo.toml``: the demo's settings, also usable with ``ulmfit-ml train --config``."""
    return demo_path().with_name("demo.toml")


def load_demo() -> pd.DataFrame:
    """The bundled demo frame: ``id``, ``text``, ``emotions`` (28 labels) and ``ekman`` (7), ``;``-delimited."""
    p = demo_path()
    if not p.exists():
        raise FileNotFoundError(f"{p} is missing; regenerate it with `python data/make_goemotions_sample.py`.")
    return pd.read_csv(p, keep_default_na=False, dtype=str)


def main(argv: list[str] | None = None) -> dict[str, float]:
    """Run the demo; returns the tuned-threshold validation metrics."""
    args = _parse_args(argv)
    data_cfg, lm_cfg, clf_cfg = _demo_configs(args)

    t0 = time.perf_counter()
    df = load_demo()
    if args.rows:
        df = df.head(args.rows)
    n_test = min(N_TEST, len(df) // 4)
    test = df.sample(n=n_test, random_state=0)
    df = df.drop(test.index)
    data = MultiLabelData.from_df(df, config=data_cfg)
    print(f"{len(df)} comments for training and validation, {n_test} kept aside for the test below")
    print(data)
    print(data.label_counts().T.to_string(), "\n")

    start = lm_cfg.pretrained if lm_cfg.pretrained else "random weights"
    print(f"== 1. Fine-tuning the AWD-LSTM language model (from {start!s}) on the texts (settings: {demo_config_path().name})")
    lm = finetune_lm(data, config=lm_cfg)
    print(lm, "\n")

    print("== 2. Training the classifier (the defaults: all layers at once, discriminative learning rates, one-cycle)")
    clf = train_classifier(data, encoder=lm, config=clf_cfg)
    tuned = _print_test_metrics(clf, data, test, data_cfg)
    _save_and_predict(clf, args.out)
    print(f"\nDone in {time.perf_counter() - t0:.0f} s.")
    return tuned


def _parse_args(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(prog="python -m ulmfit_ml.demo", description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="models/demo", help="where to save the classifier (default: models/demo)")
    ap.add_argument("--arch", default=None, help="AWD-LSTM size preset (tiny, small, cpu, paper); default from data/demo.toml")
    ap.add_argument("--lm-epochs", type=int, default=None, help="LM epochs (default from data/demo.toml)")
    ap.add_argument("--rows", type=int, default=None, help="use only the first N rows (quick check)")
    ap.add_argument("--labels", default=None, choices=["ekman", "emotions"],
                    help="label scheme: ekman (7 labels, default) or emotions (GoEmotions' 28)")
    ap.add_argument("--quiet", action="store_true", help="no progress bars")
    return ap.parse_args(argv)


def _demo_configs(args: argparse.Namespace) -> tuple[DataConfig, LMConfig, ClassifierConfig]:
    """data/demo.toml's sections with the command line's changes."""
    sections = load_config_file(demo_config_path())
    lm_opts = dict(sections.get("lm", {}), quiet=args.quiet)
    if args.arch:
        lm_opts["arch"] = args.arch
        if args.arch != "cpu":  # the shipped LM is arch 'cpu': other sizes start from scratch
            lm_opts["pretrained"] = False
    if args.lm_epochs is not None:
        lm_opts["epochs"] = args.lm_epochs
    data_sec = dict(sections.get("data", {}))
    if args.labels:
        data_sec["label_col"] = args.labels
    data_cfg = config_from_dict(DataConfig, data_sec, section="data")
    lm_cfg = config_from_dict(LMConfig, lm_opts, section="lm")
    clf_cfg = config_from_dict(ClassifierConfig, dict(sections.get("classifier", {}), quiet=args.quiet), section="classifier")
    return data_cfg, lm_cfg, clf_cfg


def _print_test_metrics(clf: Any, data: MultiLabelData, test: pd.DataFrame, data_cfg: DataConfig) -> dict[str, float]:
    """The test table: ULMFiT, the TF-IDF baseline, their blend and label frequencies; returns ULMFiT's tuned metrics."""
    at_half = clf.evaluate(test, threshold=0.5)
    tuned = clf.evaluate(test)  # train_classifier tuned per-label thresholds on the validation split

    base = TfidfBaseline().fit(data)
    base_half = base.evaluate(test)
    base.tune_thresholds(strategy="per_label")
    blend = MultiLabelEnsemble([clf, base])  # the documented small-data option: equal weights, its own thresholds
    blend.tune_thresholds(strategy="per_label")
    rows = {"ULMFiT, threshold 0.5": at_half, "ULMFiT, tuned thresholds": tuned,
            "TF-IDF + LogReg baseline, 0.5": base_half, "TF-IDF + LogReg baseline, tuned": base.evaluate(test),
            "ULMFiT + TF-IDF blend, tuned": blend.evaluate(test)}
    prior = data.y_train.mean(0)
    y_test, _ = parse_label_matrix(test, LabelSpec(label_col=data_cfg.label_col, label_delim=data_cfg.label_delim),
                                   data.labels)
    trivial = multilabel_report(y_test, np.tile(prior, (len(y_test), 1)), 0.5).summary
    rows["trivial (label frequencies)"] = trivial
    cols = ["f1_macro", "f1_micro", "roc_auc_macro", "precision_at_1", "subset_accuracy"]
    table = pd.DataFrame(rows).T[cols]
    print(f"\n== 3. Test metrics ({len(test)} comments never seen in training; thresholds tuned on the validation split)")
    print(table.round(3).to_string())
    print("\nPer label (tuned thresholds, test set):")
    print(clf.report(test).per_label.round(3).to_string())
    return tuned


def _save_and_predict(clf: Any, out_dir: str) -> None:
    out = clf.save(out_dir, overwrite=True)
    print(f"\n== 4. Saved to {out}/ ; reloading it to predict")
    clf2 = load_classifier(out)
    examples = ["Thank you so much, this made my day!", "This is disgusting, I can't believe they got away with it.",
                "Wait, what? I had no idea that was even possible."]
    for text, labels in zip(examples, clf2.predict(examples)):
        print(f"  {text!r} -> {labels}")


if __name__ == "__main__":
    main()
