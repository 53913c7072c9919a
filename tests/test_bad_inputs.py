"""The bad-input matrix (docs/bad_inputs.md): each messy input gets its documented result --
a clear error, a warning with a count, or a defined handling -- never a deep traceback."""
from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import pytest

import ulmfit_ml as um
from ulmfit_ml.data.tokens import tokenize_texts

M = um.MultiLabelData.from_df
TINY_CLF = dict(arch="tiny", epochs=(1,), unfreeze=(0,), lrs=(1e-2,), quiet=True, device="cpu", bs=16, seq_len=20)
WORDS = "alpha beta gamma delta refund parcel login broken thanks invoice".split()


def frame(n: int = 12) -> pd.DataFrame:
    """Texts with two 0/1 label columns ``a``, ``b`` and the same labels as ``tags`` ("a;b")."""
    a = [i % 2 for i in range(n)]
    b = [int(i % 3 == 0) for i in range(n)]
    tags = [";".join(lab for lab, v in (("a", x), ("b", y)) if v) for x, y in zip(a, b)]
    return pd.DataFrame({"text": [f"text number {i} {WORDS[i % 10]}" for i in range(n)], "a": a, "b": b, "tags": tags})


def with_cell(col: str, row: int, value, df: pd.DataFrame | None = None) -> pd.DataFrame:
    df = frame() if df is None else df
    df[col] = df[col].astype(object)
    df.at[row, col] = value
    return df


def dup_cols() -> pd.DataFrame:
    df = frame()[["text", "a", "b"]]
    df.columns = ["text", "a", "a"]
    return df


BIN = dict(label_cols=["a", "b"], split="random")
DELIM = dict(label_col="tags", split="random")

# (id, frame factory, from_df kwargs, exception, match)
ERRORS = [
    ("wrong text column", frame, dict(text_col="txt", **BIN), ValueError, r"Missing column\(s\) \['txt'\].*did you mean 'text'\?"),
    ("wrong label column", frame, dict(label_cols=["a", "bb"]), ValueError, r"Missing column\(s\) \['bb'\]"),
    ("duplicate column names", dup_cols, dict(label_cols=["a"]), ValueError, r"duplicate column names \['a'\]"),
    ("number text", lambda: with_cell("text", 3, 12345), BIN, TypeError, r"1 non-string value\(s\) \(e\.g\. 12345 of type int"),
    ("float text", lambda: with_cell("text", 3, 1.5), BIN, TypeError, r"non-string value.*astype\(str\)"),
    ("bytes text", lambda: with_cell("text", 3, b"caf\xe9"), BIN, TypeError, r"non-string value\(s\) \(e\.g\. b'caf\\xe9' of type bytes"),
    ("surrogate-escaped text", lambda: with_cell("text", 3, b"caf\xe9".decode("utf-8", "surrogateescape")), BIN,
     ValueError, r"1 text\(s\) with undecodable \(non-UTF-8\) bytes, first at position 3.*encoding="),
    ("all texts empty", lambda: frame().assign(text=["", " ", None, np.nan] * 3), BIN, ValueError, r"has no non-empty text"),
    ("empty text, empty_text=raise", lambda: with_cell("text", 2, "  "), dict(empty_text="raise", **BIN), ValueError,
     r"1 NaN or empty text\(s\) \(first at position 2\)"),
    ("label 2", lambda: with_cell("a", 3, 2), BIN, ValueError, r"Label column 'a' has 1 value\(s\) that are not 0/1 \(e\.g\. \[2\]\)"),
    ("label -1", lambda: with_cell("a", 3, -1), BIN, ValueError, r"not 0/1 \(e\.g\. \[-1\]\)"),
    ("label 'yes'", lambda: with_cell("b", 0, "yes"), BIN, ValueError, r"Label column 'b' .*not 0/1 \(e\.g\. \['yes'\]\)"),
    ("label inf", lambda: with_cell("a", 3, np.inf), BIN, ValueError, r"not 0/1"),
    ("float label 0.7", lambda: with_cell("a", 3, 0.7), BIN, ValueError, r"1 value\(s\) that are not 0/1 \(e\.g\. \[0\.7\]\)"),
    ("NaN label", lambda: with_cell("a", 3, np.nan), BIN, ValueError, r"Label column 'a' has 1 missing value\(s\).*fillna\(0\)"),
    ("all rows unlabelled (0/1 columns)", lambda: frame().assign(a=0, b=0), BIN, ValueError, r"No row has any label"),
    ("all rows unlabelled (delimited)", lambda: frame().assign(tags=["", None, " ; "] * 4), DELIM, ValueError,
     r"Label column 'tags' has no labels at all"),
    ("unknown label vs labels=", frame, dict(labels=["a"], **DELIM), ValueError, r"Unknown label\(s\) \['b'\] in column 'tags'"),
    ("one-row frame", lambda: frame(1).assign(a=1), BIN, ValueError, r"Need at least 2 rows"),
    ("two-row frame", lambda: frame(2).assign(a=1), BIN, ValueError, r"valid_pct=0\.2 of 2 rows leaves no training or no validation row"),
    ("label_cols as a string", frame, dict(label_cols="a"), TypeError, r"label_cols must be a list.*label_cols=\['a'\]"),
    ("both label formats", frame, dict(label_cols=["a"], label_col="tags"), ValueError, r"Give exactly one of label_cols"),
    ("empty frame", lambda: frame().iloc[:0], BIN, ValueError, r"The DataFrame is empty"),
    ("not a frame", lambda: {"text": ["x"]}, BIN, TypeError, r"from_df expects a pandas DataFrame, got dict"),
]


@pytest.mark.parametrize("make,kwargs,exc,match", [c[1:] for c in ERRORS], ids=[c[0] for c in ERRORS])
def test_clear_errors(make, kwargs, exc, match):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # e.g. "label never occurs" may come first; the error is what counts
        with pytest.raises(exc, match=match):
            M(make(), **kwargs)


@pytest.mark.parametrize("bad", [np.nan, None, "", "   ", "\t\n"], ids=["NaN", "None", "empty", "spaces", "whitespace"])
def test_empty_texts_dropped_with_count(bad):
    df = with_cell("text", 3, bad)
    df = with_cell("text", 7, bad, df)
    with pytest.warns(UserWarning, match=r"Dropping 2 row\(s\) with NaN or empty text in column 'text'"):
        d = M(df, **BIN)
    assert len(d.texts) == 10 and list(d.index) == [i for i in range(12) if i not in (3, 7)]
    np.testing.assert_array_equal(d.y, df.drop(index=[3, 7])[["a", "b"]].to_numpy(dtype=np.float32))


def test_texts_that_look_like_missing_values_are_texts():
    df = with_cell("text", 0, "NA")
    df = with_cell("text", 1, "null", df)
    d = M(df, **BIN)
    assert d.texts[:2] == ["NA", "null"]


def test_one_megabyte_text_is_kept_whole():
    big = " ".join(WORDS[i % 10] for i in range(190_000))  # ~1.2 MB: over spaCy's 1,000,000-character default limit
    assert len(big) > 1_000_000
    d = M(with_cell("text", 3, big), **BIN)
    assert d.texts[3] == big
    toks = tokenize_texts([big, "short text"])
    assert toks[1] == ["xxbos", "short", "text"]
    assert toks[0][0] == "xxbos" and len(toks[0]) == 190_001


def test_integer_like_label_values_accepted():
    df = frame()
    expected = df[["a", "b"]].to_numpy(dtype=np.float32)
    variants = {"float 0.0/1.0": df.assign(a=df["a"].astype(float)), "bool": df.assign(a=df["a"].astype(bool)),
                "strings '0'/'1'": df.assign(a=df["a"].astype(str)),
                "object mix True/0": with_cell("a", 1, True, df.copy())}
    for name, v in variants.items():
        np.testing.assert_array_equal(M(v, **BIN).y, expected, err_msg=name)


def test_delimited_labels_with_stray_spaces_and_empty_parts():
    df = frame(6).assign(tags=[" a ; b;;", "a", ";", "", None, " b ;"])
    d = M(df, **DELIM)
    assert d.labels == ["a", "b"]
    np.testing.assert_array_equal(d.y, [[1, 1], [1, 0], [0, 0], [0, 0], [0, 0], [0, 1]])


def test_label_with_zero_positives_warns_with_count():
    df = frame().assign(c=0, d=0)
    with pytest.warns(UserWarning, match=r"2 label\(s\) never occur in the data: \['c', 'd'\]"):
        d = M(df, label_cols=["a", "b", "c", "d"], split="random")
    assert d.labels == ["a", "b", "c", "d"] and d.y[:, 2:].sum() == 0


def test_some_rows_unlabelled_keep_drop_raise():
    df = frame()
    n = int(((df.a == 0) & (df.b == 0)).sum())
    assert n > 0
    assert len(M(df, **BIN).texts) == 12  # default: kept (valid multi-label rows)
    with pytest.warns(UserWarning, match=rf"Dropping {n} row\(s\) that have no label"):
        assert len(M(df, unlabelled="drop", **BIN).texts) == 12 - n
    with pytest.raises(ValueError, match=rf"{n} row\(s\) have no label"):
        M(df, unlabelled="raise", **BIN)


@pytest.mark.parametrize("split", ["random", "stratified"])
def test_only_one_label_column(split):
    d = M(frame(20), label_cols=["a"], split=split)
    assert d.labels == ["a"] and d.y.shape == (20, 1)
    assert 0 < d.is_valid.sum() < 20
    if split == "stratified":  # both classes of the single label reach the validation split
        assert set(d.y_valid[:, 0]) == {0.0, 1.0}


# ---------------------------------------------------------------------- with a trained model
@pytest.fixture(scope="module")
def clf():
    df = pd.concat([frame(60)] * 2, ignore_index=True)
    return um.train_classifier(M(df, **DELIM), **TINY_CLF)


def test_unknown_labels_at_evaluate(clf):
    df = frame().assign(tags=["a;zzz", "b", "a", "yy"] * 3)
    with pytest.raises(ValueError, match=r"Unknown label\(s\) \['yy', 'zzz'\] in column 'tags'.*vocabulary is \['a', 'b'\]"):
        clf.evaluate(df)


def test_missing_label_column_at_evaluate(clf):
    with pytest.raises(ValueError, match=r"Missing column\(s\) \['tags'\]"):
        clf.evaluate(frame().drop(columns="tags"))


def test_label_with_zero_positives_at_evaluate(clf):
    df = frame().assign(tags="a")  # 'b' never occurs, 'a' is on every row
    rep = clf.report(df)
    assert rep.auc_skipped == ["a", "b"]  # one class only: ROC-AUC undefined, reported as NaN
    assert np.isnan(rep.per_label.loc["b", "roc_auc"]) and rep.per_label.loc["b", "support"] == 0
    assert np.isnan(rep.summary["roc_auc_macro"])
    assert 0 <= rep.summary["f1_micro"] <= 1


def test_empty_texts_at_evaluate_dropped_with_count(clf):
    df = with_cell("text", 0, "")
    with pytest.warns(UserWarning, match=r"Dropping 1 row\(s\) with NaN or empty text"):
        clf.evaluate(df)


def test_one_row_predict_and_evaluate(clf):
    assert clf.predict_proba(["just one"]).shape == (1, 2)
    assert len(clf.predict(["just one"])) == 1
    rep = clf.report(frame(1))
    assert rep.per_label["support"].tolist() == [0, 1]


@pytest.mark.parametrize("texts,exc,match", [
    ("one string", TypeError, r"Pass a list of texts, not a single string"),
    (["ok", 3], TypeError, r"1 non-string value\(s\) \(e\.g\. 3 of type int at position 1\)"),
    (["ok", b"x"], TypeError, r"1 non-string value\(s\) \(e\.g\. b'x' of type bytes at position 1\)"),
    (["caf\udce9"], ValueError, r"undecodable \(non-UTF-8\) bytes"),
])
def test_bad_texts_at_predict(clf, texts, exc, match):
    with pytest.raises(exc, match=match):
        clf.predict_proba(texts)


def test_empty_string_at_predict_is_predicted(clf):
    # predict_proba is given texts explicitly: an empty one is a valid (if uninformative) input
    p = clf.predict_proba(["", "   ", "alpha"])
    assert p.shape == (3, 2) and np.isfinite(p).all()


def test_one_label_column_trains_and_predicts():
    d = M(pd.concat([frame(40)] * 2, ignore_index=True), label_cols=["a"])
    one = um.train_classifier(d, **TINY_CLF)
    p = one.predict_proba(["alpha", "beta gamma"])
    assert one.labels == ["a"] and p.shape == (2, 1) and ((p >= 0) & (p <= 1)).all()


def test_tiny_stratified_split_falls_back_to_random():
    # iterative stratification puts all 5 rows of this frame in training
    y = np.array([[0, 0, 1], [0, 1, 0], [0, 0, 1], [1, 0, 0], [0, 1, 0]])
    df = pd.DataFrame({"text": [f"t{i}" for i in range(5)], "a": y[:, 0], "b": y[:, 1], "c": y[:, 2]})
    with pytest.warns(UserWarning, match=r"Stratified split of 5 rows left no training or no validation row; "
                                         r"using a random split of 1 validation row"):
        d = M(df, label_cols=["a", "b", "c"], split="stratified")
    assert d.is_valid.sum() == 1
