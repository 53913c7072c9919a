"""TF-IDF + logistic-regression baseline: learns a signal, same interface as the classifier."""
import warnings

import numpy as np
import pandas as pd
import pytest

import ulmfit_ml as um
import ulmfit_ml.models.baseline
from ulmfit_ml.models.baseline import TfidfBaseline
from ulmfit_ml.evaluation.metrics import MultiLabelReport

WORDS = "the a cat dog runs fast slow blue red green house tree river sky sun moon car road bird fish".split()
CUES = {"billing": "invoice", "shipping": "parcel", "bug": "crash"}


def _frame(n: int, seed: int) -> pd.DataFrame:
    """Each label is signalled by its own cue word (70% of its texts) among random words."""
    rng = np.random.default_rng(seed)
    rows = []
    for _ in range(n):
        toks = list(rng.choice(WORDS, 8))
        labs = [lab for lab, rate in zip(CUES, (0.3, 0.2, 0.1)) if rng.random() < rate]
        for lab in labs:
            if rng.random() < 0.9:
                toks.insert(int(rng.integers(0, len(toks))), CUES[lab])
        rows.append({"text": " ".join(toks), "tags": ";".join(labs)})
    return pd.DataFrame(rows)


@pytest.fixture(scope="module")
def fitted():
    data = um.MultiLabelData.from_df(_frame(400, 0), label_col="tags")
    return TfidfBaseline().fit(data), data


def test_learns_a_learnable_signal(fitted) -> None:
    model, _ = fitted
    test = _frame(300, 1)
    res = model.evaluate(test)
    # chance (random guessing at the label rates) gives macro-F1 around 0.2
    assert res["f1_macro"] > 0.8, res
    assert res["roc_auc_macro"] > 0.9
    assert model.predict(["the invoice is wrong", "my parcel", "app crash on start"]) == [["billing"], ["shipping"], ["bug"]]


def test_same_interface_as_the_classifier(fitted) -> None:
    model, data = fitted
    assert ulmfit_ml.models.baseline.TfidfBaseline is TfidfBaseline and um.TfidfBaseline is TfidfBaseline
    assert model.labels == data.labels == ["billing", "bug", "shipping"]
    p = model.predict_proba(pd.Series(["invoice crash", "sky"]))
    assert p.shape == (2, 3) and p.dtype == np.float32 and ((0 <= p) & (p <= 1)).all()
    assert model.predict_proba([]).shape == (0, 3)
    np.testing.assert_allclose(model.predict_proba(data.valid_texts, bs=7), model.predict_proba(data.valid_texts), rtol=1e-6)
    r = model.report()
    assert isinstance(r, MultiLabelReport) and list(r.per_label.index) == model.labels
    assert model.evaluate() == r.summary
    # the validation predictions stored at fit equal fresh ones
    y, probs = model._valid
    np.testing.assert_array_equal(y, data.y_valid)
    np.testing.assert_allclose(probs, model.predict_proba(data.valid_texts), rtol=1e-6)
    assert "TfidfBaseline(3 labels" in repr(model)


def test_thresholds_tune_store_and_override(fitted) -> None:
    model, data = fitted
    old = model.thresholds.copy()
    try:
        t = model.tune_thresholds(strategy="global")
        assert np.array_equal(model.thresholds, t) and len(set(t.tolist())) == 1
        probs = model.predict_proba(data.valid_texts)
        assert model.predict(data.valid_texts) == [[model.labels[j] for j in np.flatnonzero(r >= t)] for r in probs]
        assert model.predict(["sky"], threshold=0.0) == [model.labels]
        assert model.predict(["sky"], threshold=1.0, at_least_one=True) == [[model.labels[int(model.predict_proba(["sky"]).argmax())]]]
        assert model.evaluate()["f1_macro"] >= model.evaluate(threshold=0.5)["f1_macro"] - 1e-9
    finally:
        model.thresholds = old


def test_labels_without_positives_in_train_get_constant_probability() -> None:
    df = _frame(200, 2)
    df["never"] = 0
    df["always"] = 1
    df["billing"] = df["tags"].str.contains("billing").astype(int)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        data = um.MultiLabelData.from_df(df, label_cols=["billing", "never", "always"])
    model = TfidfBaseline().fit(data)
    p = model.predict_proba(["invoice", "sky"])
    assert p[:, 1].tolist() == [0.0, 0.0] and p[:, 2].tolist() == [1.0, 1.0]
    assert p[0, 0] > p[1, 0] + 0.3
    r = model.report()
    assert "never" in r.auc_skipped and "always" in r.auc_skipped


def test_single_label_and_all_constant_labels() -> None:
    df = _frame(200, 3)
    df["billing"] = df["tags"].str.contains("billing").astype(int)
    one = TfidfBaseline(min_df=1).fit(um.MultiLabelData.from_df(df, label_cols=["billing"]))
    p = one.predict_proba(["invoice", "sky"])
    assert p.shape == (2, 1) and p[0, 0] > p[1, 0] + 0.3
    df["x"] = 1
    const = TfidfBaseline().fit(um.MultiLabelData.from_df(df, label_cols=["x"]))
    assert const.predict_proba(["sky"]).tolist() == [[1.0]]


def test_errors(fitted) -> None:
    model, data = fitted
    with pytest.raises(ValueError, match="not fitted yet"):
        TfidfBaseline().predict_proba(["x"])
    with pytest.raises(TypeError, match="expects a MultiLabelData"):
        TfidfBaseline().fit(pd.DataFrame({"text": ["a"]}))
    with pytest.raises(TypeError, match="not a single string"):
        model.predict("invoice")
    with pytest.raises(TypeError, match="not a DataFrame"):
        model.predict_proba(pd.DataFrame({"text": ["a"]}))
    with pytest.raises(ValueError, match="C must be a number > 0"):
        TfidfBaseline(C=0)
    with pytest.raises(ValueError, match="class_weight must be"):
        TfidfBaseline(class_weight="auto")
    with pytest.raises(ValueError, match="bs must be a positive int"):
        model.predict_proba(["x"], bs=0)
    with pytest.raises(ValueError, match="lower min_df"):
        TfidfBaseline(min_df=10_000).fit(data)
    with pytest.raises(ValueError, match=r"Missing column\(s\) \['tags'\]"):
        model.evaluate(pd.DataFrame({"text": ["a"]}))
    with pytest.raises(TypeError):
        TfidfBaseline((1, 2))  # options are keyword-only


def test_probabilities_are_scikit_learns_logistic_regressions(fitted) -> None:
    """predict_proba computes sigmoid(x . coef + intercept) from the fitted arrays (what save
    writes); that is exactly OneVsRestClassifier(LogisticRegression).predict_proba."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.multiclass import OneVsRestClassifier

    model, data = fitted
    o = model.options
    ovr = OneVsRestClassifier(LogisticRegression(C=o["C"], class_weight=o["class_weight"], max_iter=o["max_iter"],
                                                 random_state=o["seed"]))
    ovr.fit(model.vectorizer.transform(data.train_texts), np.asarray(data.y_train).astype(int))
    texts = _frame(50, 7)["text"].tolist()
    np.testing.assert_allclose(model.predict_proba(texts), ovr.predict_proba(model.vectorizer.transform(texts)), atol=1e-5)


def test_save_and_load_round_trip(fitted, tmp_path) -> None:
    model, _ = fitted
    model.tune_thresholds()
    out = model.save(tmp_path / "tfidf")
    back = TfidfBaseline.load(out)
    test = _frame(100, 8)
    np.testing.assert_allclose(back.predict_proba(test.text), model.predict_proba(test.text), atol=1e-6)
    np.testing.assert_array_equal(back.thresholds, model.thresholds)
    assert back.labels == model.labels and back.label_delim == model.label_delim
    assert back.evaluate(test) == model.evaluate(test)  # meta (text and label columns) kept
    loaded = um.load_predictor(out)  # the one loader of every saved predictor
    assert isinstance(loaded, TfidfBaseline)
    np.testing.assert_allclose(loaded.predict_proba(["invoice"]), model.predict_proba(["invoice"]), atol=1e-6)
    assert not any(p.suffix in (".pkl", ".joblib", ".pickle") for p in out.rglob("*"))  # nothing to unpickle


def test_constant_labels_survive_save(tmp_path) -> None:
    df = _frame(200, 2)
    df["never"] = 0
    df["billing"] = df["tags"].str.contains("billing").astype(int)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = TfidfBaseline().fit(um.MultiLabelData.from_df(df, label_cols=["billing", "never"]))
    back = TfidfBaseline.load(model.save(tmp_path / "m"))
    np.testing.assert_allclose(back.predict_proba(["invoice", "sky"]), model.predict_proba(["invoice", "sky"]), atol=1e-6)
    assert back.predict_proba(["invoice"])[0, 1] == 0.0


def test_save_and_load_errors(fitted, tmp_path) -> None:
    model, _ = fitted
    with pytest.raises(ValueError, match="not fitted yet"):
        TfidfBaseline().save(tmp_path / "unfitted")
    assert not (tmp_path / "unfitted").exists()
    foreign = tmp_path / "mine"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("keep me")
    with pytest.raises(FileExistsError):
        model.save(foreign, overwrite=True)
    assert (foreign / "notes.txt").read_text() == "keep me"
    out = model.save(tmp_path / "m")
    model.save(out, overwrite=True)  # its own directory may be replaced
    with pytest.raises(FileExistsError, match="already exists"):
        model.save(out)
    with pytest.raises(ValueError, match="load it with um.load_predictor"):
        um.load_classifier(out)
    (out / "thresholds.json").write_text("[" + ", ".join(["0.01"] * len(model.labels)) + "]")
    with pytest.raises(ValueError, match="thresholds.json was changed after the model was saved"):
        TfidfBaseline.load(out)
    with pytest.raises(ValueError, match="is not a saved TfidfBaseline"):
        (tmp_path / "other").mkdir()
        (tmp_path / "other" / "config.json").write_text('{"kind": "classifier"}')
        TfidfBaseline.load(tmp_path / "other")
