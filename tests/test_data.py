import numpy as np
import pandas as pd
import pytest

import ulmfit_ml as um
from ulmfit_ml.utils.config import DataConfig

from conftest import CUES, GOEMOTIONS, make_frame


def from_df(df, **kw):
    kw.setdefault("text_col", "text")
    if "label_col" not in kw:
        kw.setdefault("label_cols", list(CUES))
    return um.MultiLabelData.from_df(df, **kw)


def test_both_label_formats_give_identical_targets(frame):
    a = from_df(frame, seed=3)
    b = um.MultiLabelData.from_df(frame, text_col="text", label_col="tags", label_delim=";", labels=list(CUES), seed=3)
    assert a.labels == b.labels == list(CUES)
    assert a.y.dtype == np.float32 and a.y.shape == (len(frame), 3)
    np.testing.assert_array_equal(a.y, b.y)
    np.testing.assert_array_equal(a.is_valid, b.is_valid)
    np.testing.assert_array_equal(a.y, frame[list(CUES)].to_numpy(dtype=np.float32))


def test_delimited_labels_default_vocab_is_sorted_and_strips_spaces():
    df = pd.DataFrame({"text": ["a b", "c d", "e f", "g h"], "tags": [" joy ; anger", "anger;;", "fear", "joy"]})
    d = um.MultiLabelData.from_df(df, label_col="tags", split="random", valid_pct=0.25)
    assert d.labels == ["anger", "fear", "joy"]
    np.testing.assert_array_equal(d.y, [[1, 0, 1], [1, 0, 0], [0, 1, 0], [0, 0, 1]])


def test_bool_label_columns_accepted(frame):
    df = frame.copy()
    df[list(CUES)] = df[list(CUES)].astype(bool)
    np.testing.assert_array_equal(from_df(df).y, frame[list(CUES)].to_numpy(dtype=np.float32))


@pytest.mark.parametrize("kw, match", [
    (dict(text_col="txt"), r"Missing column\(s\) \['txt'\].*Expected.*found.*did you mean 'text'"),
    (dict(label_cols=["joy", "angr"]), r"Missing column\(s\) \['angr'\].*did you mean 'anger'"),
    (dict(label_cols=["joy"], label_col="tags"), "exactly one of label_cols"),
    (dict(label_cols=[]), "label_cols is empty"),
    (dict(label_cols=["joy", "joy"]), "repeated names"),
    (dict(split="kfold"), "split must be"),
    (dict(valid_pct=1.5), "valid_pct must be"),
    (dict(split="column"), "needs valid_col"),
    (dict(empty_text="ignore"), "empty_text must be"),
    (dict(unlabelled="maybe"), "unlabelled must be"),
    (dict(label_col="tags", label_cols=None, label_delim=""), "label_delim must be"),
])
def test_argument_errors(frame, kw, match):
    with pytest.raises(ValueError, match=match):
        from_df(frame, **kw)


def test_label_cols_string_is_type_error(frame):
    with pytest.raises(TypeError, match="label_cols must be a list"):
        um.MultiLabelData.from_df(frame, label_cols="joy")


def test_not_a_dataframe():
    with pytest.raises(TypeError, match="pandas DataFrame"):
        um.MultiLabelData.from_df([["a", 1]], label_cols=["x"])


def test_empty_frame(frame):
    with pytest.raises(ValueError, match="empty"):
        from_df(frame.iloc[:0])


def test_duplicate_columns(frame):
    df = frame.copy()
    df.columns = ["id", "text", "tags", "joy", "joy", "fear"]
    with pytest.raises(ValueError, match="duplicate column names \\['joy'\\]"):
        from_df(df, label_cols=["joy", "fear"])


@pytest.mark.parametrize("bad", [0.7, 2, -1, "yes"])
def test_non_binary_labels(frame, bad):
    df = frame.copy().astype({"joy": object})
    df.loc[5, "joy"] = bad
    with pytest.raises(ValueError, match="Label column 'joy' has 1 value\\(s\\) that are not 0/1"):
        from_df(df)


def test_nan_label(frame):
    df = frame.copy().astype({"joy": float})
    df.loc[[1, 2], "joy"] = np.nan
    with pytest.raises(ValueError, match="'joy' has 2 missing value"):
        from_df(df)


def test_empty_texts_dropped_with_count(frame):
    df = frame.copy()
    df.loc[0, "text"] = None
    df.loc[1, "text"] = "   "
    df.loc[2, "text"] = ""
    with pytest.warns(UserWarning, match="Dropping 3 row\\(s\\) with NaN or empty text"):
        d = from_df(df)
    assert len(d.texts) == len(df) - 3
    assert list(d.index[:2]) == [3, 4]


def test_empty_texts_raise_when_asked(frame):
    df = frame.copy()
    df.loc[4, "text"] = np.nan
    with pytest.raises(ValueError, match="1 NaN or empty text\\(s\\) \\(first at position 4\\)"):
        from_df(df, empty_text="raise")


def test_all_texts_empty(frame):
    df = frame.head(5).copy()
    df["text"] = ""
    with pytest.raises(ValueError, match="no non-empty text"):
        from_df(df)


def test_non_string_texts(frame):
    df = frame.copy().astype({"text": object})
    df.loc[3, "text"] = 42
    with pytest.raises(TypeError, match="1 non-string value\\(s\\) \\(e.g. 42.*astype\\(str\\)"):
        from_df(df)


def test_unknown_labels_with_fixed_vocab(frame):
    with pytest.raises(ValueError, match="Unknown label\\(s\\) \\['fear'\\]"):
        um.MultiLabelData.from_df(frame, label_col="tags", labels=["joy", "anger"])


def test_no_label_anywhere():
    df = pd.DataFrame({"text": ["a", "b", "c"], "x": [0, 0, 0]})
    with pytest.raises(ValueError, match="No row has any label"):
        um.MultiLabelData.from_df(df, label_cols=["x"])
    df2 = pd.DataFrame({"text": ["a", "b"], "tags": ["", None]})
    with pytest.raises(ValueError, match="has no labels at all"):
        um.MultiLabelData.from_df(df2, label_col="tags")


def test_label_that_never_occurs_warns(frame):
    df = frame.copy()
    df["never"] = 0
    with pytest.warns(UserWarning, match="1 label\\(s\\) never occur in the data: \\['never'\\]"):
        from_df(df, label_cols=list(CUES) + ["never"], split="random")


def test_unlabelled_rows_keep_drop_raise(frame):
    n_none = int((frame[list(CUES)].sum(1) == 0).sum())
    assert n_none > 0
    assert len(from_df(frame).texts) == len(frame)
    with pytest.warns(UserWarning, match=f"Dropping {n_none} row\\(s\\) that have no label"):
        d = from_df(frame, unlabelled="drop")
    assert len(d.texts) == len(frame) - n_none and (d.y.sum(1) > 0).all()
    with pytest.raises(ValueError, match=f"{n_none} row\\(s\\) have no label"):
        from_df(frame, unlabelled="raise")


def test_one_row_frame(frame):
    one = frame[frame["joy"] == 1].head(1)
    with pytest.raises(ValueError, match="at least 2 rows"):
        from_df(one, split="random")


def test_random_split_is_seeded(frame):
    a, b, c = from_df(frame, split="random", seed=1), from_df(frame, split="random", seed=1), from_df(frame, split="random", seed=2)
    np.testing.assert_array_equal(a.is_valid, b.is_valid)
    assert (a.is_valid != c.is_valid).any()
    assert a.is_valid.sum() == round(0.2 * len(frame))


def test_column_split(frame):
    df = frame.copy()
    df["is_valid"] = df.index % 4 == 0
    d = from_df(df, valid_col="is_valid")
    np.testing.assert_array_equal(d.is_valid, df["is_valid"].to_numpy())
    df["is_valid"] = "x"
    with pytest.raises(ValueError, match="must be boolean"):
        from_df(df, valid_col="is_valid")
    df["is_valid"] = False
    with pytest.raises(ValueError, match="every row on one side"):
        from_df(df, valid_col="is_valid")


def test_stratified_split_keeps_every_label_on_both_sides():
    # rare labels: 4 labels with only 3-6 positives each out of 200 rows
    rng = np.random.default_rng(0)
    n = 200
    y = np.zeros((n, 6), dtype=int)
    y[:, 0] = rng.random(n) < 0.5
    y[:, 1] = rng.random(n) < 0.3
    for j, k in zip(range(2, 6), (3, 4, 5, 6)):
        y[rng.choice(n, k, replace=False), j] = 1
    df = pd.DataFrame(y, columns=[f"l{j}" for j in range(6)])
    df["text"] = [f"text {i}" for i in range(n)]
    strat = um.MultiLabelData.from_df(df, label_cols=list(df.columns[:6]), split="stratified", valid_pct=0.2, seed=0)
    assert (strat.y_train.sum(0) > 0).all() and (strat.y_valid.sum(0) > 0).all()
    # label proportions in valid close to the overall ones for the frequent labels
    np.testing.assert_allclose(strat.y_valid.mean(0)[:2], y.mean(0)[:2], atol=0.05)


def test_extra_texts_go_to_the_lm_only(frame):
    d = from_df(frame, extra_texts=["unlabelled words here", "", None, "more text"])
    assert d.extra_texts == ["unlabelled words here", "more text"]
    dls = d.lm_dataloaders(bs=8, seq_len=10)
    assert "unlabelled" in dls.vocab or "unlabelled" not in d.texts  # vocab built over LM corpus
    assert len(d.texts) == len(frame)


def test_classifier_dataloaders_batches(data, tiny_lm):
    dls = data.classifier_dataloaders(tiny_lm.vocab, bs=16, seq_len=20)
    x, y = dls.one_batch()
    assert x.shape[0] == 16 and y.shape == (16, 3)
    assert y.dtype.is_floating_point and set(y.unique().tolist()) <= {0.0, 1.0}
    assert len(dls.valid.dataset) == int(data.is_valid.sum())


def test_lm_dataloaders_cover_all_texts(data):
    dls = data.lm_dataloaders(bs=8, seq_len=12)
    x, y = dls.one_batch()
    assert x.shape == (8, 12) and y.shape == (8, 12)
    assert "happy" in dls.vocab and "xxbos" in dls.vocab


def test_config_object_is_used(frame):
    cfg = DataConfig(text_col="text", label_col="tags", split="random", valid_pct=0.5, seed=7)
    d = um.MultiLabelData.from_df(frame, config=cfg)
    assert d.is_valid.sum() == len(frame) // 2
    with pytest.raises(TypeError, match="config must be a DataConfig"):
        um.MultiLabelData.from_df(frame, config={"text_col": "text"})


def test_fingerprint_changes_with_content(frame):
    a = from_df(frame).fingerprint()
    df = frame.copy()
    df.loc[0, "text"] = "changed"
    b = from_df(df).fingerprint()
    assert a["n_rows"] == b["n_rows"] == len(frame) and a["sha256"] != b["sha256"]


@pytest.mark.skipif(not GOEMOTIONS.exists(), reason=f"GoEmotions not found at {GOEMOTIONS} (shared data absent)")
def test_goemotions_slice_parses_delimited_ids():
    import csv

    df = pd.read_csv(GOEMOTIONS / "train.tsv", sep="\t", header=None, names=["text", "labels", "id"],
                     quoting=csv.QUOTE_NONE, nrows=3000, dtype={"labels": str})
    names = (GOEMOTIONS / "labels.txt").read_text().split()
    assert len(names) == 28
    d = um.MultiLabelData.from_df(df, label_col="labels", label_delim=",", labels=[str(i) for i in range(28)])
    expected = sum(len(str(s).split(",")) for s in df["labels"])
    assert d.y.shape == (len(df), 28) and int(d.y.sum()) == expected
    present = d.y.sum(0) >= 2
    assert (d.y_train.sum(0)[present] > 0).all() and (d.y_valid.sum(0)[present] > 0).all()
