"""Multi-category heads and multi-target regression (issue 15): validation with clear errors,
learning tests on tiny models, save -> load round trips, predict_file and the CLI."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

import ulmfit_ml as um
from ulmfit_ml.tasks.multicategory import CategorySpec
from ulmfit_ml.tasks.regression import RegressionSpec
from ulmfit_ml.tasks.registry import target_spec_from_dict

from conftest import FILLER, TINY, run_cli

COLORS = {"red": "crimson", "green": "grassy", "blue": "azure"}
MOODS = {"pos": "wonderful", "neg": "dreadful"}
FAST = dict(bs=32, seq_len=20, drop_mult=0.0, unfreeze=(0,), epochs=(12,), lrs=(3e-2,), quiet=True, device="cpu",
            lin_ftrs=(16,), arch=TINY)


def cat_frame(n: int = 300, seed: int = 0) -> pd.DataFrame:
    """Each text names its colour's cue word and its mood's cue word among filler words; ``score``
    is a number the cues determine (2 * colour index + mood) and ``n_words`` the text length."""
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(n):
        color, mood = rng.choice(list(COLORS)), rng.choice(list(MOODS))
        words = list(rng.choice(FILLER, int(rng.integers(6, 12))))
        for cue in (COLORS[color], MOODS[mood]):
            words.insert(int(rng.integers(0, len(words) + 1)), cue)
        rows.append({"id": f"r{i}", "text": " ".join(words), "color": color, "mood": mood,
                     "score": 2.0 * list(COLORS).index(color) + (mood == "pos") + 1.0, "n_words": float(len(words))})
    return pd.DataFrame(rows)


@pytest.fixture(scope="module")
def frame() -> pd.DataFrame:
    return cat_frame()


@pytest.fixture(scope="module")
def cat_model(frame):
    data = um.MultiLabelData.from_df(frame, category_cols=["color", "mood"], seed=0)
    return um.train_classifier(data, **FAST)


@pytest.fixture(scope="module")
def reg_model(frame):
    data = um.MultiLabelData.from_df(frame, target_cols=["score", "n_words"], seed=0)
    return um.train_classifier(data, **FAST)


# ---------------------------------------------------------------------- learning
def test_category_heads_learn_each_column(cat_model):
    assert isinstance(cat_model, um.MultiCategoryClassifier)
    s = cat_model.evaluate()
    # chance is 1/3 and 1/2; the cue words decide both columns
    assert s["color_accuracy"] > 0.85 and s["mood_accuracy"] > 0.85, s
    assert s["f1_macro"] > 0.8
    hist = cat_model.history
    assert {"color_accuracy", "color_f1_macro", "mood_accuracy", "mood_f1_macro", "f1_macro"} <= set(hist.columns)


def test_category_predictions_have_the_documented_types(cat_model):
    new = cat_frame(40, seed=9)
    pred = cat_model.predict(new.text)
    assert list(pred.columns) == ["color", "mood"] and len(pred) == 40
    assert (pred.to_numpy() == new[["color", "mood"]].to_numpy()).mean() > 0.85
    probs = cat_model.predict_proba(new.text[:2])
    assert [p.shape for p in probs] == [(2, 3), (2, 2)]
    assert all(np.allclose(p.sum(1), 1, atol=1e-5) for p in probs)
    assert cat_model.categories == {"color": ["blue", "green", "red"], "mood": ["neg", "pos"]}


def test_regression_learns_the_targets_in_their_units(reg_model, frame):
    assert isinstance(reg_model, um.TextRegressor)
    s = reg_model.evaluate()
    assert s["score_r2"] > 0.6 and s["score_spearman"] > 0.7, s
    pred = reg_model.predict(frame.text[:50])
    assert pred.shape == (50, 2) and pred.dtype == np.float32
    # outputs are bounded by the training range (+- 5 %) and reported in the targets' units
    assert pred[:, 0].min() >= 1.0 - 0.3 and pred[:, 0].max() <= 6.0 + 0.3
    assert abs(float(np.median(pred[:, 1])) - float(frame.n_words.median())) < 3
    assert {"score_mae", "score_r2", "n_words_mae", "r2"} <= set(reg_model.history.columns)
    rep = reg_model.report(frame)
    assert list(rep.per_target.index) == ["score", "n_words"]
    assert set(rep.per_target.columns) >= {"mae", "rmse", "r2", "spearman"}


def test_huber_loss_trains_too(frame):
    data = um.MultiLabelData.from_df(frame.iloc[:150], target_cols=["score"], seed=0)
    reg = um.train_classifier(data, regression_loss="huber", **{**FAST, "epochs": (2,)})
    assert reg.meta["config"]["regression_loss"] == "huber" and np.isfinite(reg.evaluate()["score_mae"])


def test_balanced_class_weights_are_scikit_learns_and_weigh_the_loss(frame):
    import torch
    from sklearn.utils.class_weight import compute_class_weight

    df = frame.copy()
    df.loc[df.index[:250], "mood"] = "pos"  # imbalanced: few "neg"
    data = um.MultiLabelData.from_df(df, category_cols=["color", "mood"], seed=0)
    w = data.spec.class_weights(data.y_train)
    for j, k in enumerate(data.spec.sizes):
        np.testing.assert_allclose(w[j], compute_class_weight("balanced", classes=np.arange(k), y=data.y_train[:, j]))
    assert w[1][0] > 1 > w[1][1]  # the rare "neg" weighs more
    cfg = um.ClassifierConfig()  # class_weight="balanced" is the default
    loss_w, loss = data.spec.make_loss(data.y_train, cfg), data.spec.make_loss(data.y_train, um.ClassifierConfig(class_weight=None))
    logits = torch.zeros(4, 5)
    logits[:, 3:] = torch.tensor([-2.0, 2.0])  # every text called "pos"
    y = torch.tensor([[0, 0], [1, 0], [2, 1], [0, 1]])  # two rare "neg" texts called "pos", two "pos" right
    assert float(loss_w(logits, y)) > float(loss(logits, y)) + 0.5  # errors on the rare category count more
    clf = um.train_classifier(data, class_weight="balanced", **{**FAST, "epochs": (6,)})
    assert clf.meta["config"]["class_weight"] == "balanced" and clf.evaluate()["mood_accuracy"] > 0.8
    with pytest.raises(ValueError, match="class_weight must be None or 'balanced'"):
        um.ClassifierConfig(class_weight="auto")


def test_gradual_unfreezing_and_discriminative_rates_work_for_categories(frame):
    data = um.MultiLabelData.from_df(frame.iloc[:120], category_cols=["color"], seed=0)
    clf = um.train_classifier(data, **{**FAST, "unfreeze": (1, 0), "epochs": (1, 1), "lrs": (3e-2, 1e-2)})
    assert list(clf.history["stage"].unique()) == ["stage1:last1", "stage2:all"]


# ---------------------------------------------------------------------- round trips
def test_category_model_save_load_identical(cat_model, frame, tmp_path):
    cat_model.save(tmp_path / "m")
    back = um.load_classifier(tmp_path / "m")
    assert isinstance(back, um.MultiCategoryClassifier) and back.categories == cat_model.categories
    for a, b in zip(back.predict_proba(frame.text[:40]), cat_model.predict_proba(frame.text[:40])):
        np.testing.assert_array_equal(a, b)
    assert not (tmp_path / "m" / "thresholds.json").exists()
    assert back.evaluate(frame) == cat_model.evaluate(frame)


def test_regression_model_save_load_identical(reg_model, frame, tmp_path):
    reg_model.save(tmp_path / "r")
    back = um.load_classifier(tmp_path / "r")
    assert isinstance(back, um.TextRegressor)
    np.testing.assert_array_equal(back.predict(frame.text[:40]), reg_model.predict(frame.text[:40]))


def test_int_categories_match_a_csv_frame_read_as_text(frame, tmp_path):
    df = frame.assign(level=frame.color.map({"red": 0, "green": 1, "blue": 2}))
    data = um.MultiLabelData.from_df(df.iloc[:100], category_cols=["level"], seed=0)
    clf = um.train_classifier(data, **{**FAST, "epochs": (1,)})
    assert clf.categories == {"level": [0, 1, 2]}
    df.iloc[:30].to_csv(tmp_path / "l.csv", index=False)
    back = um.read_table(tmp_path / "l.csv")  # cells read as strings: "0", "1", "2"
    assert clf.evaluate(back) == clf.evaluate(df.iloc[:30])
    assert set(clf.predict(["x"])["level"]) <= {0, 1, 2}


@pytest.mark.parametrize("kind", ["cat", "reg"])
def test_predict_file_matches_the_model(kind, cat_model, reg_model, frame, tmp_path):
    model = cat_model if kind == "cat" else reg_model
    model.save(tmp_path / "m")
    inp = frame[["id", "text"]].iloc[:25].copy()
    inp.loc[3, "text"] = ""
    inp.to_csv(tmp_path / "in.csv", index=False)
    with pytest.warns(UserWarning, match="empty"):
        um.predict_file(tmp_path / "m", tmp_path / "in.csv", tmp_path / "out.csv", id_col="id", output="both",
                        chunksize=10)
    out = pd.read_csv(tmp_path / "out.csv")
    texts = inp.text.fillna("").tolist()
    assert out["row"].tolist() == list(range(25)) and out["id"].tolist() == inp.id.tolist()
    if kind == "cat":
        probs = model.predict_proba(texts)
        np.testing.assert_allclose(out["proba_color:blue"], probs[0][:, 0], rtol=1e-5)
        assert out["mood"].tolist() == model.predict(texts)["mood"].tolist()
    else:
        np.testing.assert_allclose(out[["score", "n_words"]].to_numpy(), model.predict(texts), rtol=1e-5)
    # parquet output: the same table
    um.predict_file(tmp_path / "m", tmp_path / "in.csv", tmp_path / "out.parquet", id_col="id", output="both")
    pq = pd.read_parquet(tmp_path / "out.parquet")
    assert list(pq.columns) == list(out.columns)


def test_quantized_copies_keep_the_task(cat_model, reg_model, frame):
    q = reg_model.quantized()
    assert isinstance(q, um.TextRegressor)
    np.testing.assert_allclose(q.predict(frame.text[:20]), reg_model.predict(frame.text[:20]), atol=0.5)
    qc = cat_model.quantized()
    assert (qc.predict(frame.text[:20]) == cat_model.predict(frame.text[:20])).to_numpy().mean() > 0.8


# ---------------------------------------------------------------------- bad input
def test_mixed_target_kinds_fail_naming_the_fix(frame):
    with pytest.raises(ValueError, match="label_cols and category_cols are both set.*category_cols for columns"):
        um.MultiLabelData.from_df(frame.assign(a=0), label_cols=["a"], category_cols=["color"])
    with pytest.raises(ValueError, match="category_cols and target_cols are both set"):
        um.MultiLabelData.from_df(frame, category_cols=["color"], target_cols=["score"])


def test_string_regression_targets_fail_naming_category_cols(frame):
    with pytest.raises(ValueError, match=r"non-numeric values like \['(red|green|blue)'.*category_cols=\['color'\]"):
        um.MultiLabelData.from_df(frame, target_cols=["color"])


def test_numeric_strings_are_regression_targets(frame):
    data = um.MultiLabelData.from_df(frame.assign(score=frame.score.astype(str)), target_cols=["score"])
    assert data.y.dtype == np.float32 and data.y.max() == 6.0


@pytest.mark.parametrize("bad, match", [
    (lambda f: f.assign(score=f.score.where(f.index != 3)), "1 missing value"),
    (lambda f: f.assign(score=f.score.replace(6.0, np.inf)), "infinite"),
    (lambda f: f.assign(score=5.0), r"'score' is constant \(every row is 5.0\).*drop it from target_cols"),
])
def test_bad_regression_targets(frame, bad, match):
    with pytest.raises(ValueError, match=match):
        um.MultiLabelData.from_df(bad(frame), target_cols=["score"])


def test_bad_category_columns(frame):
    with pytest.raises(ValueError, match=r"'color' has 2 missing value\(s\).*dropna"):
        um.MultiLabelData.from_df(frame.assign(color=frame.color.where(frame.index > 1)), category_cols=["color"])
    with pytest.raises(ValueError, match="single category.*nothing to learn"):
        um.MultiLabelData.from_df(frame.assign(color="red"), category_cols=["color"])
    with pytest.raises(ValueError, match="300 distinct values, more than max_categories=50.*text or id column"):
        um.MultiLabelData.from_df(frame, category_cols=["id"])
    with pytest.raises(ValueError, match="max_categories must be an int >= 2"):
        CategorySpec(["color"], max_categories=1)
    with pytest.raises(ValueError, match="Missing column"):
        um.MultiLabelData.from_df(frame, category_cols=["colour"])
    with pytest.raises(TypeError, match=r"category_cols must be a list of column names.*\['color'\]"):
        um.MultiLabelData.from_df(frame, category_cols="color")


def test_a_category_seen_once_warns(frame):
    df = frame.copy()
    df.loc[0, "mood"] = "meh"
    with pytest.warns(UserWarning, match=r"'mood': 1 category occur once \(\['meh'\]\)"):
        um.MultiLabelData.from_df(df, category_cols=["mood"], seed=0)


def test_unseen_category_at_evaluate_is_named(cat_model, frame):
    with pytest.raises(ValueError, match=r"'color' has value\(s\) \['purple'\] the model was not trained on"):
        cat_model.evaluate(frame.assign(color="purple"))


def test_multilabel_options_on_other_models_fail(cat_model, reg_model, frame, tmp_path):
    with pytest.raises(ValueError, match="threshold and at_least_one are for multi-label models"):
        cat_model.output_table(["x"], threshold=0.3)
    with pytest.raises(TypeError, match="an ensemble averages multi-label probabilities"):
        um.MultiLabelEnsemble([cat_model, cat_model])
    data = um.MultiLabelData.from_df(frame, category_cols=["color"])
    with pytest.raises(ValueError, match="cross_validate works on multi-label data"):
        um.cross_validate(data, n_folds=2)
    with pytest.raises(ValueError, match="regression data has targets"):
        um.MultiLabelData.from_df(frame, target_cols=["score"]).label_counts()
    with pytest.raises(TypeError, match="explain needs a MultiLabelClassifier"):
        um.explain(cat_model, ["x"])
    with pytest.raises(ValueError, match="no decision thresholds"):
        um.TextRegressor(reg_model.model, reg_model.vocab, reg_model.labels, meta=reg_model.meta, thresholds=[0.5])


def test_tampered_target_spec_fails_at_load(reg_model, tmp_path):
    import json

    reg_model.save(tmp_path / "r")
    cfg = json.loads((tmp_path / "r" / "config.json").read_text())
    cfg["targets"]["std"] = [0.0, 1.0]
    (tmp_path / "r" / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(ValueError, match=r"config.json: Invalid saved regression spec.*std \(> 0\)"):
        um.load_classifier(tmp_path / "r")
    with pytest.raises(ValueError, match="Not a saved target spec"):
        target_spec_from_dict({"task": "ranking"})
    with pytest.raises(ValueError, match="call fit"):
        RegressionSpec(["a"]).to_units(np.zeros((1, 1)))


# ---------------------------------------------------------------------- long documents
def test_a_label_signal_at_the_end_of_a_3000_token_text_is_learnt():
    """fastai's SentenceEncoder pools the last max_len tokens: a cue word at the very end of a
    3,000-token text decides the label, and the model learns it (with a warning on cut texts)."""
    rng = np.random.default_rng(0)
    n = 48
    cue = rng.integers(0, 2, n)
    texts = [" ".join(rng.choice(FILLER, 3000)) + (" wonderful" if c else " dreadful") for c in cue]
    df = pd.DataFrame({"text": texts, "mood": np.where(cue == 1, "pos", "neg")})
    data = um.MultiLabelData.from_df(df, category_cols=["mood"], seed=0, valid_pct=0.25)
    with pytest.warns(UserWarning, match=r"48 of 48 texts are longer than max_len=200 tokens: only their last 200"):
        clf = um.train_classifier(data, **{**FAST, "bs": 8, "max_len": 200, "epochs": (12,)})  # 1.0 from epoch 8 on
    assert clf.evaluate()["mood_accuracy"] >= 0.9
    assert clf.meta["max_len"] == 200


# ---------------------------------------------------------------------- CLI
_cli = run_cli


CLI_TOML = """\
[lm]
arch = {emb_sz = 16, n_hid = 32, n_layers = 1}
[classifier]
unfreeze = [0]
epochs = [3]
lrs = [3e-2]
bs = 32
seq_len = 20
lin_ftrs = [8]
[run]
train = "train.csv"
encoder = "random"
"""


@pytest.mark.parametrize("flag, cols", [("--category-cols", "color,mood"), ("--target-cols", "score")])
def test_cli_train_evaluate_predict_equal_the_library(flag, cols, frame, tmp_path):
    frame.iloc[:120].to_csv(tmp_path / "train.csv", index=False)
    (tmp_path / "exp.toml").write_text(CLI_TOML, encoding="utf-8")
    p = _cli(["train", "--config", "exp.toml", flag, cols, "--out", "run"], tmp_path)
    assert p.returncode == 0, p.stderr
    model = um.load_classifier(tmp_path / "run" / "model")
    assert model.labels == cols.split(",")
    p = _cli(["evaluate", "run/model", "train.csv", "--out", "ev.json"], tmp_path)
    assert p.returncode == 0, p.stderr
    import json

    ev = json.loads((tmp_path / "ev.json").read_text())
    assert ev["summary"] == pytest.approx(model.evaluate(frame.iloc[:120]))
    p = _cli(["predict", "run/model", "train.csv", "--out", "pred.csv"], tmp_path)
    assert p.returncode == 0, p.stderr
    um.predict_file(model, tmp_path / "train.csv", tmp_path / "lib.csv", output="both")  # the CLI default
    assert (tmp_path / "pred.csv").read_bytes() == (tmp_path / "lib.csv").read_bytes()
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert metrics["task"] == model.task and metrics["thresholds"] is None


def test_cli_two_target_kinds_exit_2(tmp_path):
    p = _cli(["train", "--train", "x.csv", "--category-cols", "a", "--label-col", "tags"], tmp_path)
    assert p.returncode == 2 and "not allowed with argument" in p.stderr
