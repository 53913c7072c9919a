"""Property tests (hypothesis) on the data helpers: any frame of strings and 0/1 labels either
loads with the right label matrix -- the same for the 0/1-columns and delimited formats -- or
raises ValueError/TypeError; nothing else escapes."""
from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import ulmfit_ml as um
from ulmfit_ml.utils.validation import LabelSpec, parse_label_matrix, validate_texts

SETTINGS = settings(max_examples=50, deadline=None, suppress_health_check=[HealthCheck.too_slow])

texts_st = st.one_of(st.text(max_size=30), st.sampled_from(["", " ", "\t", "\n", "ok text", "NA", "null"]))
label_name = st.text(alphabet=st.characters(blacklist_characters=";", blacklist_categories=("Cs", "Zs", "Cc")),
                     min_size=1, max_size=6)


@st.composite
def labelled_frames(draw):
    n = draw(st.integers(1, 25))
    names = draw(st.lists(label_name, min_size=1, max_size=4, unique=True))
    texts = draw(st.lists(texts_st, min_size=n, max_size=n))
    y = np.array(draw(st.lists(st.lists(st.integers(0, 1), min_size=len(names), max_size=len(names)),
                               min_size=n, max_size=n)), dtype=np.float32).reshape(n, len(names))
    pad = draw(st.sampled_from(["", " ", "  "]))  # stray spaces around delimited labels
    empties = draw(st.booleans())  # empty parts: "a;;b;"
    sep = ";;" if empties else ";"
    tags = [sep.join(f"{pad}{lab}{pad}" for lab, v in zip(names, row) if v) + (";" if empties else "") for row in y]
    df = pd.DataFrame({"text": texts, "tags": tags})
    cols = [f"c{j}" for j in range(len(names))]  # label names need not be valid column names
    for j, c in enumerate(cols):
        df[c] = y[:, j].astype(int)
    return df, names, cols, y


def _load(df, **kw):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            return um.MultiLabelData.from_df(df, **kw), None
        except (ValueError, TypeError) as e:
            return None, e


@SETTINGS
@given(labelled_frames(), st.sampled_from(["random", "stratified"]))
def test_frames_load_right_or_raise(case, split):
    df, names, cols, y = case
    binary, e1 = _load(df, label_cols=cols, split=split)
    delim, e2 = _load(df, label_col="tags", split=split)
    keep = np.array([isinstance(t, str) and bool(t.strip()) for t in df["text"]])
    if binary is not None:
        assert binary.labels == cols
        np.testing.assert_array_equal(binary.y, y[keep])
        assert binary.texts == df["text"][keep].tolist()
        assert 0 < binary.is_valid.sum() < len(binary.texts)
    if delim is not None:
        occurring = [j for j in range(len(names)) if y[keep][:, j].any()]
        order = sorted(occurring, key=lambda j: names[j])
        assert delim.labels == [names[j] for j in order]
        np.testing.assert_array_equal(delim.y, y[keep][:, order])
    # both formats agree on whether the frame is usable
    assert (binary is None) == (delim is None), (e1, e2)


label_values = st.sampled_from([0, 1, True, False, "0", "1", 0.0, 1.0, 2, -1, 0.7, "yes", "", None, np.nan, np.inf])


@SETTINGS
@given(st.lists(label_values, min_size=4, max_size=12))
def test_label_values_parse_or_raise(values):
    n = len(values)
    df = pd.DataFrame({"text": [f"t {i}" for i in range(n)], "a": pd.Series(values, dtype=object), "b": [1] * n})
    ok_vals = {0: 0.0, 1: 1.0, "0": 0.0, "1": 1.0}
    try:
        y, labs = parse_label_matrix(df, LabelSpec(label_cols=["a", "b"]))
    except ValueError as e:
        assert "Label column 'a'" in str(e)
        assert any(not (isinstance(v, (bool, int, float, str)) and v in ok_vals) for v in values)
        return
    assert labs == ["a", "b"]
    np.testing.assert_array_equal(y[:, 0], [ok_vals[v] for v in values])
    np.testing.assert_array_equal(y[:, 1], 1.0)


@SETTINGS
@given(st.lists(st.one_of(st.none(), st.text(max_size=15), st.lists(label_name, max_size=3)), min_size=1, max_size=15))
def test_delimited_cells(cells):
    df = pd.DataFrame({"tags": pd.Series(cells, dtype=object)})
    parts = [[] if c is None else [p.strip() for p in (c if isinstance(c, list) else c.split(";")) if p.strip()]
             for c in cells]
    found = sorted({p for ps in parts for p in ps})
    try:
        y, labs = parse_label_matrix(df, LabelSpec(label_col="tags"))
    except ValueError as e:
        assert not found and "has no labels at all" in str(e)
        return
    assert labs == found
    for i, ps in enumerate(parts):
        assert {labs[j] for j in np.flatnonzero(y[i])} == set(ps)


@SETTINGS
@given(st.lists(st.one_of(texts_st, st.none(), st.just(np.nan), st.integers(), st.binary(max_size=4)), min_size=1, max_size=15))
def test_validate_texts(values):
    s = pd.Series(values, dtype=object)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            keep = validate_texts(s)
        except TypeError as e:
            assert any(v is not None and not isinstance(v, str) and not (isinstance(v, float) and np.isnan(v))
                       for v in values)
            assert "non-string" in str(e)
            return
        except ValueError as e:
            assert "no non-empty text" in str(e)
            assert not any(isinstance(v, str) and v.strip() for v in values)
            return
    assert keep.tolist() == [isinstance(v, str) and bool(v.strip()) for v in values]
