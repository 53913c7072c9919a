"""Issue 22, Reuters diagnosis (session 8): is ULMFiT's weakness on Reuters' topics in the encoder
or in the classifier's training? Both probes read the concat-pooled features (last, max, mean of
the last LSTM layer: 600 values) of the en-small LM fine-tuned on all Reuters training stories
(``python bench/learning_curve.py lm --dataset reuters``), with no classifier training:

* ``frozen``: one-vs-rest logistic regression (class_weight balanced) on the features of all
  training stories, dev average precision by topic frequency, beside the trained classifiers'
  and TF-IDF's dev probabilities of the learning-curve runs (n=all and 2,000, seed 0);
* ``head``: the classifier head alone (fastai's PoolingLinearClassifier layers: batch norm,
  dropout 0.2, 50 units, batch norm, dropout 0.1, linear), trained on the frozen features with the
  defaults' loss (focal, ``pos_weight="auto"``), AdamW one-cycle at 2e-2, wd 0.1, batch 32, on a
  random 80% of the pool, one option changed at a time.

    python bench/reuters_probe.py frozen
    python bench/reuters_probe.py head
"""
from __future__ import annotations

import argparse
import sys
import time
import warnings
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from small_data import load  # noqa: E402

WORK = HERE / "_work"
FEATS = WORK / "reuters_feats.npz"
BUCKETS = [(1, 20), (21, 100), (101, 10**6)]


def features() -> np.lib.npyio.NpzFile:
    """The pooled encoder features of the pool and dev stories (computed once, cached in bench/_work)."""
    if not FEATS.exists():
        import pandas as pd
        import torch

        import ulmfit_ml as um
        from ulmfit_ml.training.trainer import ClassifierTrainer
        from ulmfit_ml.utils.config import ClassifierConfig

        pool, dev, names = load("reuters")
        lm = um.load_lm(WORK / "curve-lm-reuters-en-small")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            data = um.MultiLabelData.from_df(pool.sample(n=300, random_state=0), label_cols=names)
            tr = ClassifierTrainer(data, encoder=lm, config=ClassifierConfig(quiet=True))
            clf = tr._trained_model(tr.learner, pd.DataFrame(), torch.zeros(len(data.y_valid), len(names)), 0.0)
        clf.model[1].layers = torch.nn.Identity()  # the head's input: the pooled features
        width = 3 * int(lm.arch["emb_sz"]) if "emb_sz" in getattr(lm, "arch", {}) else 600
        type(clf).n_out = property(lambda self: width)
        t0 = time.time()
        f_pool, f_dev = (clf.predict_logits(f["text"].tolist(), bs=64) for f in (pool, dev))
        print(f"features {f_pool.shape} in {time.time() - t0:.0f} s", flush=True)
        np.savez_compressed(FEATS, pool=f_pool, dev=f_dev)
    return np.load(FEATS)


def ap_by_bucket(y_dev: np.ndarray, p: np.ndarray, freq: np.ndarray) -> list[float]:
    from sklearn.metrics import average_precision_score as aps

    out = []
    for lo, hi in BUCKETS + [(0, 10**9)]:
        js = [j for j in range(y_dev.shape[1]) if lo <= freq[j] <= hi and y_dev[:, j].sum() > 0]
        out.append(float(np.mean([aps(y_dev[:, j], p[:, j]) for j in js])))
    return out


def cmd_frozen() -> None:
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    pool, dev, names = load("reuters")
    F = features()
    sc = StandardScaler().fit(F["pool"])
    xp, xd = sc.transform(F["pool"]), sc.transform(F["dev"])
    y, y_dev = pool[names].to_numpy(), dev[names].to_numpy()
    rows = {}
    for c in (0.01, 0.1):
        p = np.zeros(y_dev.shape)
        for j in range(len(names)):
            if y[:, j].any():
                p[:, j] = LogisticRegression(C=c, max_iter=500, class_weight="balanced").fit(xp, y[:, j]).predict_proba(xd)[:, 1]
        rows[f"frozen features + LR, C={c}"] = p
    for name, f in (("ULMFiT classifier, all", "all-0-en-small"), ("TF-IDF, all", "all-0-tfidf"),
                    ("ULMFiT classifier, 2,000", "2000-0-en-small")):
        path = WORK / f"curve-probs-reuters-{f}.npz"
        if path.exists():
            rows[name] = np.load(path)["p_dev"]
    _table(rows, y.sum(0), y_dev)


def cmd_head() -> None:
    import torch
    import torch.nn as nn

    from ulmfit_ml.tasks.losses import make_loss

    torch.set_num_threads(1)
    pool, dev, names = load("reuters")
    F = features()
    y, y_dev = pool[names].to_numpy().astype(np.float32), dev[names].to_numpy()
    tr = np.random.default_rng(0).permutation(len(pool))[: int(0.8 * len(pool))]
    xt, yt, xd = torch.tensor(F["pool"][tr]), torch.tensor(y[tr]), torch.tensor(F["dev"])

    def head(lin: tuple[int, ...]) -> nn.Module:
        sizes, ps, layers = [xt.shape[1], *lin, len(names)], [0.2] + [0.1] * len(lin), []
        for i in range(len(sizes) - 1):
            layers += [nn.BatchNorm1d(sizes[i]), nn.Dropout(ps[i]), nn.Linear(sizes[i], sizes[i + 1])]
            layers += [nn.ReLU()] if i < len(sizes) - 2 else []
        return nn.Sequential(*layers)

    def run(lin=(50,), loss="focal", wd=0.1, epochs=6, lr=2e-2, pw="auto", bs=32) -> np.ndarray:
        torch.manual_seed(0)
        m, lf = head(lin), make_loss(loss, y_train=y[tr], pos_weight=pw)
        opt = torch.optim.AdamW(m.parameters(), lr=lr, weight_decay=wd, betas=(0.9, 0.99))
        sch = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=epochs * -(-len(tr) // bs), pct_start=0.25,
                                                  base_momentum=0.7, max_momentum=0.8)
        for _ in range(epochs):
            m.train()
            perm = torch.randperm(len(tr))
            for s in range(0, len(tr), bs):
                idx = perm[s:s + bs]
                if len(idx) > 1:
                    opt.zero_grad()
                    lf(m(xt[idx]), yt[idx]).backward()
                    opt.step()
                    sch.step()
        m.eval()
        with torch.no_grad():
            return torch.sigmoid(m(xd)).numpy()

    variants = {"the defaults' head, 6 epochs (all stories' schedule)": {}, "20 epochs": dict(epochs=20),
                "wd 0.01": dict(wd=0.01), "wd 0": dict(wd=0.0), "BCE": dict(loss="bce"), "no hidden layer": dict(lin=()),
                "200 hidden units": dict(lin=(200,)), "pos_weight None": dict(pw=None), "lr 5e-3": dict(lr=5e-3),
                "20 epochs + wd 0.01": dict(epochs=20, wd=0.01), "20 epochs, no hidden layer": dict(epochs=20, lin=())}
    _table({k: run(**v) for k, v in variants.items()}, y.sum(0), y_dev)


def _table(rows: dict[str, np.ndarray], freq: np.ndarray, y_dev: np.ndarray) -> None:
    print("| dev average precision | topics with 1-20 stories | 21-100 | over 100 | all topics |")
    print("| --- | --- | --- | --- | --- |")
    for name, p in rows.items():
        print(f"| {name} | " + " | ".join(f"{v:.3f}" for v in ap_by_bucket(y_dev, p, freq)) + " |", flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("job", choices=["frozen", "head"])
    {"frozen": cmd_frozen, "head": cmd_head}[ap.parse_args().job]()


if __name__ == "__main__":
    main()
