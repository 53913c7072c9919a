"""The main job on the bundled dataset: ``python -m ulmfit_ml.demo``.

Reads ``data/support_tickets.csv`` (made by ``data/make_demo.py``), fine-tunes an AWD-LSTM
language model on its texts, trains the multi-label classifier with gradual unfreezing,
tunes per-label thresholds on the validation split, prints the metric table next to the
TF-IDF baseline and a trivial predictor, saves the model and predicts two new texts.
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import pandas as pd

__all__ = ["demo_path", "demo_config_path", "load_demo", "main"]


def demo_path() -> Path:
    """Path of the bundled demo CSV (``data/support_tickets.csv`` in the source tree)."""
    return Path(__file__).resolve().parent.parent / "data" / "support_tickets.csv"


def demo_config_path() -> Path:
    """Path of ``data/demo.toml``: the demo's settings, also usable with ``ulmfit-ml train --config``."""
    return demo_path().with_name("demo.toml")


def load_demo() -> pd.DataFrame:
    """The bundled demo frame: ``id``, ``text``, ``labels`` (``;``-delimited) and one 0/1 column per label."""
    p = demo_path()
    if not p.exists():
        raise FileNotFoundError(f"{p} is missing; regenerate it with `python data/make_demo.py`.")
    return pd.read_csv(p, keep_default_na=False)


def main(argv: list[str] | None = None) -> dict[str, float]:
    """Run the demo; returns the tuned-threshold validation metrics."""
    import ulmfit_ml as um

    ap = argparse.ArgumentParser(prog="python -m ulmfit_ml.demo", description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="models/demo", help="where to save the classifier (default: models/demo)")
    ap.add_argument("--arch", default=None, help="AWD-LSTM size preset (tiny, small, cpu, paper); default from data/demo.toml")
    ap.add_argument("--lm-epochs", type=int, default=None, help="LM epochs (default from data/demo.toml)")
    ap.add_argument("--rows", type=int, default=None, help="use only the first N rows (quick check)")
    ap.add_argument("--quiet", action="store_true", help="no progress bars")
    args = ap.parse_args(argv)

    from .cli import load_config_file
    from .config import ClassifierConfig, DataConfig, LMConfig, config_from_dict

    sections = load_config_file(demo_config_path())
    lm_opts = dict(sections.get("lm", {}), quiet=args.quiet)
    if args.arch:
        lm_opts["arch"] = args.arch
    if args.lm_epochs is not None:
        lm_opts["epochs"] = args.lm_epochs
    data_cfg = config_from_dict(DataConfig, sections.get("data", {}), section="data")
    lm_cfg = config_from_dict(LMConfig, lm_opts, section="lm")
    clf_cfg = config_from_dict(ClassifierConfig, dict(sections.get("classifier", {}), quiet=args.quiet), section="classifier")

    t0 = time.perf_counter()
    df = load_demo()
    if args.rows:
        df = df.head(args.rows)
    data = um.MultiLabelData.from_df(df, config=data_cfg)
    print(data)
    print(data.label_counts().T.to_string(), "\n")

    print(f"== 1. Fine-tuning the AWD-LSTM language model on all texts (settings: {demo_config_path().name})")
    lm = um.finetune_lm(data, config=lm_cfg)
    print(lm, "\n")

    print("== 2. Training the classifier (gradual unfreezing, discriminative learning rates)")
    clf = um.train_classifier(data, encoder=lm, config=clf_cfg)

    at_half = clf.evaluate()
    clf.tune_thresholds(strategy="per_label")
    tuned = clf.evaluate()

    base = um.TfidfBaseline().fit(data)
    rows = {"ULMFiT, threshold 0.5": at_half, "ULMFiT, tuned thresholds": tuned,
            "TF-IDF + LogReg baseline, 0.5": base.evaluate()}
    prior = data.y_train.mean(0)
    trivial = um.multilabel_report(data.y_valid, np.tile(prior, (len(data.y_valid), 1)), 0.5).summary
    rows["trivial (label frequencies)"] = trivial
    cols = ["f1_macro", "f1_micro", "roc_auc_macro", "precision_at_1", "subset_accuracy"]
    table = pd.DataFrame(rows).T[cols]
    print("\n== 3. Validation metrics")
    print(table.round(3).to_string())
    print("\nPer label (tuned thresholds):")
    print(clf.report().per_label.round(3).to_string())

    out = clf.save(args.out, overwrite=True)
    print(f"\n== 4. Saved to {out}/ ; reloading it to predict")
    clf2 = um.load_classifier(out)
    examples = ["I was charged twice this month and I want my money back", "the app crashes when I open settings",
                "Hi, my package has not arrived yet. please reply soon"]
    for text, labels in zip(examples, clf2.predict(examples)):
        print(f"  {text!r} -> {labels}")
    print(f"\nDone in {time.perf_counter() - t0:.0f} s.")
    return tuned


if __name__ == "__main__":
    main()
