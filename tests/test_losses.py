"""Class imbalance: pos_weight, focal loss, and a tiny training run using them
(plus the classifier-level threshold / epoch-metric behaviour on that model)."""
import warnings

import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn.functional as F

import ulmfit_ml as um
from ulmfit_ml.tasks.losses import BCEFocalLossFlat, make_loss, pos_weight_from_labels


def test_pos_weight_auto_is_neg_over_pos_clipped() -> None:
    y = np.zeros((100, 4))
    y[:2, 0] = 1  # 98/2 = 49 -> cap 10
    y[:20, 1] = 1  # 80/20 = 4
    y[:70, 2] = 1  # 30/70 < 1 -> 1
    # label 3: no positive -> cap
    w = pos_weight_from_labels(y, cap=10.0)
    np.testing.assert_allclose(w, [10.0, 4.0, 1.0, 10.0])
    assert w.dtype == np.float32
    np.testing.assert_allclose(pos_weight_from_labels(y, cap=50.0), [49.0, 4.0, 1.0, 50.0])


def test_pos_weight_errors() -> None:
    with pytest.raises(ValueError, match="must be 2-D"):
        pos_weight_from_labels(np.zeros(5))
    with pytest.raises(ValueError, match="cap must be >= 1"):
        pos_weight_from_labels(np.zeros((3, 2)), cap=0.5)


def _batch() -> tuple[torch.Tensor, torch.Tensor, np.ndarray]:
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(32, 3, generator=g)
    targ = (torch.rand(32, 3, generator=g) < torch.tensor([0.1, 0.3, 0.5])).float()
    return logits, targ, targ.numpy()


def test_auto_pos_weight_changes_the_loss_as_documented() -> None:
    logits, targ, y = _batch()
    plain = make_loss("bce", y_train=y, pos_weight=None)(logits, targ)
    auto = make_loss("bce", y_train=y, pos_weight="auto", cap=10.0)(logits, targ)
    w = torch.tensor(pos_weight_from_labels(y, cap=10.0))
    expected = F.binary_cross_entropy_with_logits(logits, targ, pos_weight=w)
    assert float(plain) == pytest.approx(float(F.binary_cross_entropy_with_logits(logits, targ)), rel=1e-6)
    assert float(auto) == pytest.approx(float(expected), rel=1e-6)
    assert float(auto) > float(plain) * 1.05
    fixed = make_loss("bce", y_train=y, pos_weight=[1.0, 2.0, 3.0])(logits, targ)
    expected = F.binary_cross_entropy_with_logits(logits, targ, pos_weight=torch.tensor([1.0, 2.0, 3.0]))
    assert float(fixed) == pytest.approx(float(expected), rel=1e-6)
    scalar = make_loss("bce", y_train=y, pos_weight=2.0)(logits, targ)
    expected = F.binary_cross_entropy_with_logits(logits, targ, pos_weight=torch.full((3,), 2.0))
    assert float(scalar) == pytest.approx(float(expected), rel=1e-6)


def test_focal_loss_equals_bce_at_gamma_zero_and_downweights_easy_examples() -> None:
    logits, targ, y = _batch()
    bce = F.binary_cross_entropy_with_logits(logits, targ)
    assert float(BCEFocalLossFlat(gamma=0.0)(logits, targ)) == pytest.approx(float(bce), rel=1e-6)
    w = torch.tensor([1.0, 2.0, 5.0])
    assert float(BCEFocalLossFlat(gamma=0.0, pos_weight=w)(logits, targ)) == pytest.approx(
        float(F.binary_cross_entropy_with_logits(logits, targ, pos_weight=w)), rel=1e-6)
    focal = make_loss("focal", y_train=y, pos_weight=None, gamma=2.0)
    assert float(focal(logits, targ)) < float(bce)
    p = torch.sigmoid(logits)
    p_t = p * targ + (1 - p) * (1 - targ)
    manual = (F.binary_cross_entropy_with_logits(logits, targ, reduction="none") * (1 - p_t) ** 2).mean()
    assert float(focal(logits, targ)) == pytest.approx(float(manual), rel=1e-6)
    assert torch.equal(focal.decodes(torch.tensor([0.2, 0.7])), torch.tensor([False, True]))


def test_loss_errors() -> None:
    _, _, y = _batch()
    with pytest.raises(ValueError, match="gamma must be >= 0"):
        BCEFocalLossFlat(gamma=-1)
    with pytest.raises(ValueError, match="loss must be 'bce' or 'focal'"):
        make_loss("mse", y_train=y, pos_weight=None)
    with pytest.raises(ValueError, match="pos_weight must be None, 'auto'"):
        make_loss("bce", y_train=y, pos_weight="balanced")
    with pytest.raises(ValueError, match="2 values but there are 3 labels"):
        make_loss("bce", y_train=y, pos_weight=[1.0, 2.0])
    with pytest.raises(ValueError, match="finite and > 0"):
        make_loss("bce", y_train=y, pos_weight=[1.0, 0.0, 2.0])
    with pytest.raises(ValueError, match="y_train must be 2-D"):
        make_loss("bce", y_train=y[:, 0], pos_weight="auto")


# ---------------------------------------------------------------------- tiny training run
def _frame(n: int = 240, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    words = "the a cat dog runs fast slow blue red green house tree river sky sun".split()
    rows = []
    for i in range(n):
        toks = list(rng.choice(words, 6))
        rare, common = rng.random() < 0.15, rng.random() < 0.5
        if rare:
            toks.insert(2, "zebra")
        if common:
            toks.insert(0, "lion")
        rows.append({"text": " ".join(toks), "rare": int(rare), "common": int(common)})
    return pd.DataFrame(rows)


_SMALL = dict(arch={"emb_sz": 16, "n_hid": 32, "n_layers": 1}, unfreeze=(1, 0), epochs=(1, 1), lrs=(3e-2, 3e-2),
              bs=32, lin_ftrs=(16,), quiet=True, device="cpu", threshold_strategy="none")


@pytest.fixture(scope="module")
def focal_clf():
    data = um.MultiLabelData.from_df(_frame(), label_cols=["rare", "common"], split="random")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        trainer = um.ClassifierTrainer(data, loss="focal", pos_weight="auto", save_best_by="f1_macro", **_SMALL)
        clf = trainer.train()
    return clf, data, trainer


def test_train_classifier_with_focal_loss_and_auto_pos_weight(focal_clf) -> None:
    clf, data, trainer = focal_clf
    assert isinstance(trainer.learner.loss_func, BCEFocalLossFlat)
    np.testing.assert_allclose(trainer.learner.loss_func.pos_weight.cpu().numpy(), pos_weight_from_labels(data.y_train))
    p = clf.predict_proba(["zebra lion the", "cat"])
    assert p.shape == (2, 2) and np.isfinite(p).all()
    h = clf.history
    for col in ("train_loss", "valid_loss", "f1_macro", "f1_micro", "roc_auc_macro", "roc_auc_micro"):
        assert col in h.columns
    assert len(h) == 2 and np.isfinite(h["train_loss"]).all()
    assert h[["f1_macro", "f1_micro", "roc_auc_micro"]].apply(lambda c: c.between(0, 1)).all().all()


def test_thresholds_are_stored_used_by_predict_and_saved(focal_clf, tmp_path) -> None:
    clf, data, _ = focal_clf
    old = clf.thresholds.copy()
    try:
        t = clf.tune_thresholds(strategy="per_label", min_positives=1)
        assert np.array_equal(t, clf.thresholds) and t.shape == (2,)
        texts = data.valid_texts
        probs = clf.predict_proba(texts)
        expected = [[clf.labels[j] for j in np.flatnonzero(row >= t)] for row in probs]
        assert clf.predict(texts) == expected
        assert clf.predict(texts, threshold=0.0) == [list(clf.labels)] * len(texts)  # override
        assert all(len(x) >= 1 for x in clf.predict(texts, threshold=1.0, at_least_one=True))
        tuned_f1 = clf.evaluate()["f1_macro"]
        assert tuned_f1 >= clf.evaluate(threshold=0.5)["f1_macro"] - 1e-9  # tuned on this very split
        clf.save(tmp_path / "m")
        loaded = um.load_classifier(tmp_path / "m")
        np.testing.assert_allclose(loaded.thresholds, t)
        assert loaded.predict(texts) == expected
        with pytest.raises(ValueError, match="No validation predictions are stored"):
            loaded.tune_thresholds()
        frame = pd.DataFrame({"text": texts, "rare": data.y_valid[:, 0].astype(int), "common": data.y_valid[:, 1].astype(int)})
        assert loaded.evaluate(frame) == pytest.approx(clf.evaluate(frame), nan_ok=True)
    finally:
        clf.thresholds = old


def test_pos_weight_changes_what_is_learnt():
    """Up-weighting the rare label's positives (pos_weight="auto") raises its predicted
    probabilities against an otherwise identical run (same seed, data and schedule)."""
    data = um.MultiLabelData.from_df(_frame(), label_cols=["rare", "common"], split="random")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        plain = um.train_classifier(data, **_SMALL, loss="bce", pos_weight=None)
        weighted = um.train_classifier(data, **_SMALL, loss="bce", pos_weight="auto")
    texts = data.valid_texts
    j = data.labels.index("rare")
    assert pos_weight_from_labels(data.y_train)[j] > 2  # the label is rare: its positives get a big weight
    gap = weighted.predict_proba(texts)[:, j].mean() - plain.predict_proba(texts)[:, j].mean()
    assert gap > 0.02, gap
