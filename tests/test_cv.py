"""K-fold CV: stratified, disjoint folds covering every row; one LM for all folds; OOF
probabilities from the model that did not see the row; mean/std; fold-model averaging."""
from __future__ import annotations

import numpy as np
import pytest

import ulmfit_ml as um
import ulmfit_ml.experiments.cv as cv_mod
from ulmfit_ml.utils.config import ClassifierConfig, LMConfig
from ulmfit_ml.experiments.cv import CVResult, cross_validate, kfold_assignments

from conftest import CUES, TINY, make_frame


def _y(n: int = 300, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return (rng.random((n, 5)) < [0.5, 0.3, 0.1, 0.05, 0.3]).astype(np.float32)


@pytest.mark.parametrize("k", [2, 3, 5])
def test_folds_are_disjoint_cover_all_rows_and_are_stratified(k):
    y = _y()
    folds = kfold_assignments(y, n_folds=k, seed=1)
    assert folds.shape == (len(y),)
    assert set(folds.tolist()) == set(range(k)), "every fold is used and every row has a fold"
    # disjoint + covering, stated as the index sets of a K-fold split
    idx = [set(np.flatnonzero(folds == f)) for f in range(k)]
    assert sum(len(s) for s in idx) == len(y) and set().union(*idx) == set(range(len(y)))
    assert all(a.isdisjoint(b) for i, a in enumerate(idx) for b in idx[i + 1:])
    sizes = np.bincount(folds)
    assert sizes.max() - sizes.min() <= 2
    per_fold = np.stack([y[folds == f].sum(0) for f in range(k)])  # positives of each label per fold
    expected = y.sum(0) / k
    assert np.all(np.abs(per_fold - expected) <= 1.5), "iterative stratification spreads each label's positives"


def test_folds_are_seeded():
    y = _y()
    assert np.array_equal(kfold_assignments(y, n_folds=4, seed=7), kfold_assignments(y, n_folds=4, seed=7))
    assert not np.array_equal(kfold_assignments(y, n_folds=4, seed=7), kfold_assignments(y, n_folds=4, seed=8))


def test_single_label_column_works():
    y = _y()[:, :1]
    folds = kfold_assignments(y, n_folds=3, seed=0)
    assert sorted(set(folds.tolist())) == [0, 1, 2]


@pytest.mark.parametrize("kwargs, err, msg", [
    ({"n_folds": 1}, ValueError, "n_folds must be an int >= 2"),
    ({"n_folds": True}, ValueError, "n_folds must be an int >= 2"),
    ({"n_folds": 2.0}, ValueError, "n_folds must be an int >= 2"),
    ({"n_folds": 301}, ValueError, "more than the 300 rows"),
])
def test_bad_fold_options(kwargs, err, msg):
    with pytest.raises(err, match=msg):
        kfold_assignments(_y(), **kwargs)


def test_bad_label_matrix():
    with pytest.raises(ValueError, match=r"must be a \(n_rows, n_labels\) matrix"):
        kfold_assignments(np.zeros(10), n_folds=2)


# ---------------------------------------------------------------------- cross_validate
LM = LMConfig(arch=TINY, pretrained=False, epochs=1, bs=32, seq_len=20, quiet=True, device="cpu")
CLF = ClassifierConfig(unfreeze=(0,), epochs=(1,), lrs=(3e-2,), bs=32, seq_len=20, lin_ftrs=(8,), quiet=True,
                       device="cpu")


@pytest.fixture(scope="module")
def cvdata():
    return um.MultiLabelData.from_df(make_frame(90, seed=4), label_cols=list(CUES), seed=0)


@pytest.fixture(scope="module")
def cv_run(cvdata):
    """Three folds with spies: how often the LM is fine-tuned and what each fold trains on."""
    calls = {"lm": 0, "train_valid": []}
    real_ft, real_train = cv_mod.finetune_lm, cv_mod.train_classifier

    def ft(*a, **k):
        calls["lm"] += 1
        return real_ft(*a, **k)

    def train(data, **k):
        calls["train_valid"].append(data.is_valid.copy())
        return real_train(data, **k)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(cv_mod, "finetune_lm", ft)
        mp.setattr(cv_mod, "train_classifier", train)
        res = cross_validate(cvdata, n_folds=3, seed=5, lm_config=LM, config=CLF, keep_models=True)
    return res, calls


def test_one_lm_for_all_folds_and_each_fold_validates_on_its_own_rows(cvdata, cv_run):
    res, calls = cv_run
    assert calls["lm"] == 1, "the LM is fine-tuned once and reused"
    assert len(calls["train_valid"]) == 3
    for k, is_valid in enumerate(calls["train_valid"]):
        assert np.array_equal(is_valid, res.folds == k), "fold k trains on the other folds only"
    assert np.array_equal(res.folds, kfold_assignments(cvdata.y, n_folds=3, seed=5))


def test_oof_probabilities_come_from_the_held_out_model(cvdata, cv_run):
    res, _ = cv_run
    assert isinstance(res, CVResult)
    assert res.oof.shape == (len(cvdata.texts), len(CUES)) and not np.isnan(res.oof).any()
    assert res.labels == list(CUES)
    texts = np.array(cvdata.texts, dtype=object)
    for k, m in enumerate(res.models):
        rows = res.folds == k
        assert np.allclose(m.predict_proba(list(texts[rows])), res.oof[rows], atol=1e-6)
    frame = res.oof_frame()
    assert list(frame.columns) == ["row", "fold"] + list(CUES)
    assert frame["row"].tolist() == list(cvdata.index)


def test_mean_std_and_oof_metrics(cvdata, cv_run):
    res, _ = cv_run
    assert res.fold_metrics["fold"].tolist() == [0, 1, 2]
    assert res.fold_metrics["n_valid"].sum() == len(cvdata.texts)
    f1 = res.fold_metrics["f1_macro"].to_numpy()
    assert res.mean["f1_macro"] == pytest.approx(f1.mean())
    assert res.std["f1_macro"] == pytest.approx(f1.std(ddof=1))
    assert "fold" not in res.mean and "n_valid" not in res.std
    expected = um.multilabel_report(cvdata.y, res.oof, res.thresholds, labels=res.labels).summary
    assert res.oof_metrics == pytest.approx(expected, nan_ok=True)


def test_fold_models_are_averaged_for_test_predictions(cv_run):
    res, _ = cv_run
    texts = ["happy furious day", "the scared movie", "table window"]
    probs = res.predict_proba(texts)
    assert probs.shape == (3, len(CUES)) and probs.dtype == np.float32
    assert np.allclose(probs, np.mean([m.predict_proba(texts) for m in res.models], axis=0), atol=1e-6)
    assert all(np.array_equal(m.thresholds, res.thresholds) for m in res.models)
    assert len(res.predict(texts)) == 3


def test_no_models_kept_cannot_average(cv_run):
    res, _ = cv_run
    bare = CVResult(labels=res.labels, folds=res.folds, oof=res.oof, y=res.y, index=res.index,
                    fold_metrics=res.fold_metrics, thresholds=res.thresholds, oof_metrics=res.oof_metrics)
    with pytest.raises(ValueError, match="keep_models=True"):
        bare.predict_proba(["a text"])


@pytest.mark.parametrize("kwargs, err, msg", [
    ({"tune": "best"}, TypeError, "unexpected keyword argument 'tune'"),  # the strategy is config.threshold_strategy
    ({"config": {"epochs": (1,)}}, TypeError, "config must be a ClassifierConfig"),
    ({"threshold": [0.5]}, ValueError, "Expected one threshold or 3"),
])
def test_bad_cv_options(cvdata, kwargs, err, msg):
    with pytest.raises(err, match=msg):
        cross_validate(cvdata, n_folds=2, **kwargs)


def test_cv_needs_multilabel_data():
    with pytest.raises(TypeError, match="expects a MultiLabelData"):
        cross_validate(make_frame(20), n_folds=2)
