"""The multi-label report equals scikit-learn's metrics; single-class labels; epoch metrics."""
import numpy as np
import pandas as pd
import pytest
from sklearn import metrics as skm

from ulmfit_ml.evaluation.metrics import (EPOCH_METRICS, MultiLabelReport, _roc_auc_macro, _roc_auc_micro, epoch_metrics,
                               multilabel_report, roc_auc_present)


@pytest.fixture
def arrays() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    y = (rng.random((80, 4)) < [0.1, 0.3, 0.5, 0.7]).astype(int)
    p = np.clip(0.35 * y + rng.random((80, 4)) * 0.7, 0, 1)
    t = np.array([0.3, 0.4, 0.5, 0.6])
    return y, p, t


def test_report_equals_sklearn(arrays) -> None:
    y, p, t = arrays
    pred = (p >= t).astype(int)
    r = multilabel_report(y, p, t, labels=["a", "b", "c", "d"], k=(1, 2))
    s = r.summary
    for avg in ("micro", "macro", "weighted", "samples"):
        assert s[f"f1_{avg}"] == pytest.approx(skm.f1_score(y, pred, average=avg, zero_division=0))
        assert s[f"precision_{avg}"] == pytest.approx(skm.precision_score(y, pred, average=avg, zero_division=0))
        assert s[f"recall_{avg}"] == pytest.approx(skm.recall_score(y, pred, average=avg, zero_division=0))
    assert s["roc_auc_macro"] == pytest.approx(skm.roc_auc_score(y, p, average="macro"))
    assert s["roc_auc_micro"] == pytest.approx(skm.roc_auc_score(y, p, average="micro"))
    assert s["average_precision_macro"] == pytest.approx(skm.average_precision_score(y, p, average="macro"))
    assert s["average_precision_micro"] == pytest.approx(skm.average_precision_score(y, p, average="micro"))
    assert s["hamming_loss"] == pytest.approx(skm.hamming_loss(y, pred))
    assert s["subset_accuracy"] == pytest.approx(skm.accuracy_score(y, pred))
    assert s["accuracy_multi"] == pytest.approx(1 - skm.hamming_loss(y, pred))
    top1 = p.argmax(1)
    assert s["precision_at_1"] == pytest.approx(y[np.arange(len(y)), top1].mean())
    top2 = np.argsort(-p, 1)[:, :2]
    assert s["precision_at_2"] == pytest.approx(np.take_along_axis(y, top2, 1).sum(1).mean() / 2)

    per = r.per_label
    assert list(per.index) == ["a", "b", "c", "d"]
    assert per["support"].tolist() == y.sum(0).tolist()
    np.testing.assert_allclose(per["f1"], skm.f1_score(y, pred, average=None, zero_division=0))
    np.testing.assert_allclose(per["precision"], skm.precision_score(y, pred, average=None, zero_division=0))
    np.testing.assert_allclose(per["recall"], skm.recall_score(y, pred, average=None, zero_division=0))
    np.testing.assert_allclose(per["roc_auc"], skm.roc_auc_score(y, p, average=None))
    np.testing.assert_allclose(per["threshold"], t)
    assert per["predicted"].tolist() == pred.sum(0).tolist()
    assert r.auc_skipped == []


def test_single_class_labels_are_skipped_and_reported(arrays) -> None:
    y, p, _ = arrays
    y = y.copy()
    y[:, 0] = 0  # never positive
    y[:, 3] = 1  # always positive
    r = multilabel_report(y, p, 0.5, labels=["none", "b", "c", "all"])
    assert r.auc_skipped == ["none", "all"]
    assert r.summary["roc_auc_macro"] == pytest.approx(skm.roc_auc_score(y[:, 1:3], p[:, 1:3], average="macro"))
    assert np.isnan(r.per_label.loc["none", "roc_auc"]) and np.isnan(r.per_label.loc["all", "roc_auc"])
    assert np.isnan(r.per_label.loc["none", "average_precision"])
    assert r.summary["average_precision_macro"] == pytest.approx(
        skm.average_precision_score(y[:, 1:], p[:, 1:], average="macro"))
    assert "skipped for 2 label(s)" in repr(r)
    d = r.to_dict()
    assert d["auc_skipped"] == ["none", "all"] and len(d["per_label"]) == 4


def test_all_labels_single_class_gives_nan_auc() -> None:
    y = np.zeros((5, 2), dtype=int)
    r = multilabel_report(y, np.full((5, 2), 0.1))
    assert np.isnan(r.summary["roc_auc_macro"]) and np.isnan(r.summary["roc_auc_micro"])
    assert r.auc_skipped == ["0", "1"]
    assert r.summary["f1_macro"] == 0.0


def test_one_label_column_is_scored_as_that_label() -> None:
    """sklearn reads a 1-column indicator as binary; the report must score the label itself."""
    rng = np.random.default_rng(1)
    y = (rng.random((50, 1)) < 0.3).astype(int)
    p = rng.random((50, 1))
    r = multilabel_report(y, p)
    f1 = skm.f1_score(y.ravel(), p.ravel() >= 0.5)
    assert r.summary["f1_macro"] == pytest.approx(f1)
    assert r.summary["f1_micro"] == pytest.approx(f1)
    assert r.per_label["f1"].iloc[0] == pytest.approx(f1)
    assert 0 <= r.summary["f1_samples"] <= 1


def test_roc_auc_present() -> None:
    y = np.array([[0, 1], [1, 1], [0, 1], [1, 1]])
    p = np.array([[0.1, 0.5], [0.9, 0.4], [0.2, 0.3], [0.8, 0.2]])
    auc, skipped = roc_auc_present(y, p)
    assert auc == 1.0 and skipped == [1]


def test_report_errors(arrays) -> None:
    y, p, _ = arrays
    with pytest.raises(ValueError, match="must both be"):
        multilabel_report(y, p[:, :2])
    with pytest.raises(ValueError, match="0 rows"):
        multilabel_report(y[:0], p[:0])
    with pytest.raises(ValueError, match="only 0/1"):
        multilabel_report(p, p)
    with pytest.raises(ValueError, match="NaN or infinite"):
        multilabel_report(y, np.full(p.shape, np.nan))
    with pytest.raises(ValueError, match="k must be positive ints"):
        multilabel_report(y, p, k=(0,))
    with pytest.raises(ValueError, match="3 label names for 4 columns"):
        multilabel_report(y, p, labels=["a", "b", "c"])
    with pytest.raises(ValueError, match="one per label"):
        multilabel_report(y, p, [0.5, 0.5])


def test_epoch_metrics() -> None:
    ms = epoch_metrics()
    names = [getattr(m, "name", getattr(m, "__name__", None)) for m in ms]
    assert names == ["accuracy_multi", "f1_macro", "f1_micro", "roc_auc_macro", "roc_auc_micro"]
    assert len(epoch_metrics(EPOCH_METRICS)) == len(EPOCH_METRICS)
    with pytest.raises(ValueError, match="Unknown epoch metric 'f2'"):
        epoch_metrics(["f2"])
    # the AUC metrics skip single-class labels instead of raising (fastai's RocAucMulti raises)
    y = np.array([[0, 1], [1, 1], [0, 1], [1, 1]], dtype=np.float32)
    p = np.array([[0.1, 0.5], [0.9, 0.4], [0.2, 0.3], [0.8, 0.2]], dtype=np.float32)
    assert _roc_auc_macro(p, y) == 1.0
    assert _roc_auc_micro(p, y) == pytest.approx(skm.roc_auc_score(y.ravel(), p.ravel()))
    assert np.isnan(_roc_auc_micro(p, np.ones_like(y)))


def test_report_is_a_dataclass_with_dataframe() -> None:
    r = multilabel_report(np.array([[1, 0], [0, 1]]), np.array([[0.9, 0.2], [0.3, 0.7]]))
    assert isinstance(r, MultiLabelReport) and isinstance(r.per_label, pd.DataFrame)
    assert r.summary["f1_macro"] == 1.0 and r.summary["subset_accuracy"] == 1.0
