"""MultiLabelEnsemble: weighted probability averaging of models with the same labels."""
import json

import numpy as np
import pandas as pd
import pytest

import ulmfit_ml as um
from ulmfit_ml.utils.validation import LabelSpec
from conftest import CUES, make_frame


class FixedModel:
    """A stand-in member: constant probabilities per label, optional validation pair."""

    def __init__(self, labels, row, valid=None):
        self.labels = list(labels)
        self.row = np.asarray(row, dtype=np.float32)
        self._valid = valid
        self.meta = {"text_col": "text", "label_spec": LabelSpec(label_col="tags", label_delim=";").to_dict()}

    def predict_proba(self, texts, *, bs=128):
        return np.tile(self.row, (len(texts), 1))


LABELS = ["a", "b", "c"]


def test_probabilities_are_the_weighted_mean_of_the_members() -> None:
    m1, m2 = FixedModel(LABELS, [0.2, 0.4, 0.9]), FixedModel(LABELS, [0.6, 0.0, 0.3])
    ens = um.MultiLabelEnsemble([m1, m2], weights=[3, 1])
    p = ens.predict_proba(["x", "y"])
    assert p.shape == (2, 3) and p.dtype == np.float32
    np.testing.assert_allclose(p[0], [0.3, 0.3, 0.75], atol=1e-6)
    np.testing.assert_allclose(um.MultiLabelEnsemble([m1, m2]).predict_proba(["x"])[0], [0.4, 0.2, 0.6], atol=1e-6)
    assert um.MultiLabelEnsemble([m1, m2]).predict(["x"]) == [["c"]]  # only c reaches 0.5
    assert ens.predict_proba([]).shape == (0, 3)


def test_validation_probabilities_are_averaged_only_for_a_shared_split() -> None:
    y = np.array([[1, 0, 0], [0, 1, 1]], dtype=np.float32)
    m1 = FixedModel(LABELS, [0.1] * 3, valid=(y, np.array([[0.8, 0.2, 0.0], [0.2, 0.6, 1.0]])))
    m2 = FixedModel(LABELS, [0.1] * 3, valid=(y, np.array([[0.6, 0.0, 0.2], [0.0, 0.8, 0.6]])))
    ens = um.MultiLabelEnsemble([m1, m2])
    np.testing.assert_allclose(ens._valid[1], [[0.7, 0.1, 0.1], [0.1, 0.7, 0.8]], atol=1e-6)
    assert ens.evaluate()["f1_macro"] == pytest.approx(1.0)
    other = FixedModel(LABELS, [0.1] * 3, valid=(y[::-1].copy(), np.zeros((2, 3))))
    with pytest.raises(ValueError, match="No validation predictions"):
        um.MultiLabelEnsemble([m1, other]).tune_thresholds()


@pytest.mark.parametrize("models, weights, err, match", [
    ("one", None, ValueError, "at least 2 models"),
    ("object", None, TypeError, r"models\[1\] \(object\) has no labels/predict_proba"),
    ("labels", None, ValueError, r"models\[1\] has labels .* same labels in the same order"),
    ("two", [1.0], ValueError, "one entry per model"),
    ("two", [1.0, -1.0], ValueError, "finite, >= 0 and not all 0"),
    ("two", [0.0, 0.0], ValueError, "finite, >= 0 and not all 0"),
])
def test_bad_ensembles_are_refused(models, weights, err, match) -> None:
    m = FixedModel(LABELS, [0.1] * 3)
    members = {"one": [m], "object": [m, object()], "labels": [m, FixedModel(["a", "c", "b"], [0.1] * 3)],
               "two": [m, m]}[models]
    with pytest.raises(err, match=match):
        um.MultiLabelEnsemble(members, weights=weights)


def test_ulmfit_and_tfidf_members_blend_on_real_models(data, tiny_clf) -> None:
    """A trained classifier and the TF-IDF baseline share labels and the validation split,
    so their blend tunes thresholds and scores a held-out frame without any extra step."""
    base = um.TfidfBaseline().fit(data)
    ens = um.MultiLabelEnsemble([tiny_clf, base])
    test = make_frame(200, seed=5)
    p = ens.predict_proba(test.text)
    np.testing.assert_allclose(p, (tiny_clf.predict_proba(test.text) + base.predict_proba(test.text)) / 2, atol=1e-5)
    t = ens.tune_thresholds()
    assert t.shape == (len(CUES),)
    res = ens.evaluate(test)
    assert res["f1_macro"] > 0.9  # the cue words make this data learnable for both members
    assert isinstance(ens.report(pd.DataFrame(test)), um.MultiLabelReport)


def test_average_probabilities_matches_the_ensemble_and_checks_shapes() -> None:
    from ulmfit_ml.models.ensemble import average_probabilities

    a, b = np.array([[0.2, 0.4, 0.9]]), np.array([[0.6, 0.0, 0.3]])
    np.testing.assert_allclose(average_probabilities([a, b], [3, 1]), [[0.3, 0.3, 0.75]], atol=1e-6)
    assert average_probabilities([a, b]).dtype == np.float32
    with pytest.raises(ValueError, match="share one shape"):
        average_probabilities([a, np.zeros((2, 3))])
    with pytest.raises(ValueError, match="at least one array"):
        average_probabilities([])
    with pytest.raises(ValueError, match="one entry per model"):
        average_probabilities([a, b], [1.0])


def test_a_blend_saves_and_loads_as_one_predictor(data, tiny_clf, tmp_path) -> None:
    """ULMFiT + TF-IDF saved as one directory (each member in its own format) loads back
    through load_predictor with the same probabilities, weights and thresholds."""
    ens = um.MultiLabelEnsemble([tiny_clf, um.TfidfBaseline().fit(data)], weights=[2, 1])
    ens.tune_thresholds()
    out = ens.save(tmp_path / "blend")
    assert sorted(p.name for p in (out / "members").iterdir()) == ["00", "01"]
    assert ens.save(out, overwrite=True) == out  # its own directory (nested members included) may be replaced
    back = um.load_predictor(out)
    assert isinstance(back, um.MultiLabelEnsemble)
    assert isinstance(back.models[0], um.MultiLabelClassifier) and isinstance(back.models[1], um.TfidfBaseline)
    test = make_frame(60, seed=9)
    np.testing.assert_allclose(back.predict_proba(test.text), ens.predict_proba(test.text), atol=1e-5)
    np.testing.assert_allclose(back.weights, [2 / 3, 1 / 3])
    np.testing.assert_array_equal(back.thresholds, ens.thresholds)
    assert back.predict(test.text[:5].tolist()) == ens.predict(test.text[:5].tolist())
    res = um.predict_file(out, _csv(tmp_path, test), tmp_path / "pred.csv", output="both")  # the file path too
    got = pd.read_csv(tmp_path / "pred.csv")
    np.testing.assert_allclose(got[[f"proba_{c}" for c in ens.labels]].to_numpy(), ens.predict_proba(test.text), atol=1e-4)
    assert res.n_rows == len(test)


def _csv(tmp_path, frame):
    p = tmp_path / "in.csv"
    frame[["id", "text"]].to_csv(p, index=False)
    return p


def test_saving_and_loading_ensembles_errors(data, tiny_clf, tmp_path) -> None:
    with pytest.raises(TypeError, match=r"models\[1\] \(FixedModel\) has no save\(\)"):
        um.MultiLabelEnsemble([tiny_clf, FixedModel(tiny_clf.labels, [0.1] * len(tiny_clf.labels))]).save(tmp_path / "x")
    assert not (tmp_path / "x").exists()
    out = um.MultiLabelEnsemble([tiny_clf, um.TfidfBaseline().fit(data)]).save(tmp_path / "blend")
    with pytest.raises(ValueError, match="load it with um.load_predictor"):
        um.load_classifier(out)
    cfg = (out / "config.json").read_text()
    (out / "config.json").write_text(json.dumps({**json.loads(cfg), "weights": [0.9, 0.1]}))
    with pytest.raises(ValueError, match="config.json was changed after the model was saved"):
        um.load_predictor(out)
    (out / "config.json").write_text(cfg)
    assert isinstance(um.load_predictor(out), um.MultiLabelEnsemble)
    (out / "members" / "01" / "labels.json").write_text('["x"]')
    with pytest.raises(ValueError, match="changed after the model was saved"):
        um.load_predictor(out)
