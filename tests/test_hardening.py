"""Issue 14's silent-wrong-answer and unclear-failure cases, and issue 13's CLI = library parity:
each case fails loudly (or warns with the fix) and the shell gives what Python gives."""
from __future__ import annotations

import json
import warnings

import numpy as np
import pandas as pd
import pytest

import ulmfit_ml as um
from ulmfit_ml.cli import main
from ulmfit_ml.utils.validation import LabelSpec, parse_label_matrix

from conftest import CUES, make_frame


def _tags(cells) -> tuple[np.ndarray, list[str]]:
    df = pd.DataFrame({"tags": cells})
    return parse_label_matrix(df, LabelSpec(label_col="tags"))


# ---------------------------------------------------------------------- label cells
def test_pd_na_label_cells_are_no_label_not_a_label_named_na():
    y, labels = _tags(pd.array(["a;b", pd.NA, "b"], dtype="string"))
    assert labels == ["a", "b"] and y.tolist() == [[1, 1], [0, 0], [0, 1]]


def test_list_cells_are_label_lists():
    y, labels = _tags([np.array(["account", "bug"]), ["bug"], np.array([], dtype=object)])
    assert labels == ["account", "bug"] and y.tolist() == [[1, 1], [0, 1], [0, 0]]


def test_wrong_delimiter_warns_with_the_fix():
    with pytest.warns(UserWarning, match=r"look ','-separated, but label_delim is ';'\. Pass label_delim=','"):
        _tags(["2,15", "3,4", "2", "15,3"])


def test_ids_read_as_floats_warn():
    with pytest.warns(UserWarning, match=r"look like integers read as floats \(e\.g\. '27\.0'\)"):
        _tags(["27.0", "3.0", "27.0"])


def test_one_label_per_row_warns():
    with pytest.warns(UserWarning, match=r"nearly one label per row"):
        _tags([f"free text number {i}" for i in range(80)])


# ---------------------------------------------------------------------- readers
def test_the_one_reader_keeps_na_strings_and_leading_zeros(tmp_path):
    p = tmp_path / "t.csv"
    p.write_text("id,text\n000123,NA\n000124,null\n000125,None\n000126,\n", encoding="utf-8")
    df = um.read_table(p)
    assert df["id"].tolist() == ["000123", "000124", "000125", "000126"]
    assert df["text"].tolist()[:3] == ["NA", "null", "None"] and pd.isna(df["text"].iloc[3])


def test_unquoted_separator_raises_in_both_readers(tmp_path, tiny_clf):
    p = tmp_path / "bad.csv"
    p.write_text("id,text\n1,fine\n2,a text, with a comma\n", encoding="utf-8")
    with pytest.raises(ValueError, match=r"Could not read .*bad\.csv.*unquoted separator"):
        um.read_table(p)
    with pytest.raises(ValueError, match=r"Could not read .*bad\.csv.*unquoted separator"):
        um.predict_file(tiny_clf, p, tmp_path / "o.csv")
    assert not (tmp_path / "o.csv").exists() or (tmp_path / "o.csv").stat().st_size == 0


# ---------------------------------------------------------------------- options and files
def test_scalar_where_a_list_is_expected_names_the_key_and_the_fix(data):
    with pytest.raises(TypeError, match=r"classifier\.epochs = 1: expected a list of int or None, got int \(e\.g\. epochs=\(1,\)"):
        um.train_classifier(data, epochs=1)


@pytest.mark.parametrize("value, msg", [(True, r"lm\.epochs = True: expected int or None, got bool"),
                                        (2.5, r"lm\.epochs = 2\.5: expected int or None, got float"),
                                        ("two", r"lm\.epochs = 'two': expected int or None, got str")])
def test_keyword_options_get_the_one_type_check(value, msg):
    from ulmfit_ml.utils.config import LMConfig, merge_config

    with pytest.raises(TypeError, match=msg):
        merge_config(LMConfig, None, {"epochs": value})
    c = merge_config(LMConfig, None, {"epochs": "3", "lr": 1, "moms": [0.9, 0.8, 0.9]})
    assert c.epochs == 3 and c.lr == 1.0 and isinstance(c.lr, float) and c.moms == (0.9, 0.8, 0.9)


def test_tuning_on_data_without_positives_warns_and_keeps_half():
    y = np.zeros((20, 3))
    with pytest.warns(UserWarning, match="No label has a positive example"):
        t = um.tune_thresholds(y, np.random.default_rng(0).random((20, 3)))
    assert t.tolist() == [0.5, 0.5, 0.5]


def test_duplicates_stay_on_one_side_of_the_split():
    df = pd.concat([make_frame(200, seed=1)] * 2, ignore_index=True)  # every text twice
    with pytest.warns(UserWarning, match=r"duplicated text\(s\) fell on both sides of the split"):
        d = um.MultiLabelData.from_df(df, label_cols=list(CUES), split="random", seed=0)
    assert not set(d.train_texts) & set(d.valid_texts)


def test_tampered_config_and_corrupt_weights_fail_at_load(tiny_clf, tmp_path):
    d = tiny_clf.save(tmp_path / "m")
    cfg = json.loads((d / "config.json").read_text())
    bad = dict(cfg, seq_len="20")
    (d / "config.json").write_text(json.dumps(bad))
    with pytest.raises(ValueError, match=r"config\.json has invalid architecture values: seq_len = '20' should be int, got str"):
        um.load_classifier(d)
    (d / "config.json").write_text(json.dumps(cfg))
    raw = bytearray((d / "model.safetensors").read_bytes())
    raw[-5] ^= 0xFF  # one flipped byte in the weights: loads as numbers, but not the saved ones
    (d / "model.safetensors").write_bytes(bytes(raw))
    with pytest.raises(ValueError, match="does not match the checksum stored in config.json"):
        um.load_classifier(d)


# ---------------------------------------------------------------------- CLI = library
@pytest.fixture(scope="module")
def saved(tiny_clf, tmp_path_factory):
    return tiny_clf.save(tmp_path_factory.mktemp("parity") / "model")


@pytest.mark.parametrize("ext", ["csv", "parquet", "jsonl"])
def test_cli_predict_equals_predict_file_with_empty_texts(saved, tmp_path, ext):
    pytest.importorskip("pyarrow")
    df = make_frame(30, seed=4)[["id", "text"]].astype({"id": str})
    df.loc[3, "text"] = ""
    df.loc[7, "text"] = None
    src = tmp_path / "in.csv"
    df.to_csv(src, index=False)
    with pytest.warns(UserWarning, match=r"2 row\(s\) of in\.csv have an empty or missing text"):
        um.predict_file(saved, src, tmp_path / f"lib.{ext}", id_col="id", output="both")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert main(["predict", str(saved), str(src), "--out", str(tmp_path / f"cli.{ext}"), "--id-col", "id"]) == 0
    lib, cli = um.read_table(tmp_path / f"lib.{ext}"), um.read_table(tmp_path / f"cli.{ext}")
    pd.testing.assert_frame_equal(lib, cli)
    probs = lib[[c for c in lib.columns if c.startswith("proba_")]].astype(float).to_numpy()
    assert np.isfinite(probs).all() and len(lib) == 30  # every row predicted, empty ones too


def test_cli_evaluate_equals_model_report(saved, tmp_path, capsys):
    df = make_frame(80, seed=6)
    src = tmp_path / "test.csv"
    df.to_csv(src, index=False)
    assert main(["evaluate", str(saved), str(src), "--out", str(tmp_path / "r.json")]) == 0
    got = json.loads((tmp_path / "r.json").read_text())
    want = um.load_classifier(saved).report(um.read_table(src)).summary
    assert {k: round(v, 6) for k, v in got["summary"].items()} == {k: round(v, 6) for k, v in want.items()}


def test_cli_reads_other_separators_and_headerless_files(saved, tmp_path):
    df = make_frame(20, seed=7)[["id", "text"]]
    df.to_csv(tmp_path / "semi.csv", sep=";", index=False)
    df.to_csv(tmp_path / "nohead.csv", index=False, header=False)
    assert main(["predict", str(saved), str(tmp_path / "semi.csv"), "--sep", ";", "--out", str(tmp_path / "a.csv")]) == 0
    assert main(["predict", str(saved), str(tmp_path / "nohead.csv"), "--no-header", "--text-col", "1",
                 "--out", str(tmp_path / "b.csv")]) == 0
    a, b = um.read_table(tmp_path / "a.csv"), um.read_table(tmp_path / "b.csv")
    pd.testing.assert_frame_equal(a, b)


def test_cli_refuses_conflicting_label_flags(capsys):
    with pytest.raises(SystemExit) as e:
        main(["train", "--train", "x.csv", "--label-col", "tags", "--label-cols", "a,b"])
    assert e.value.code == 2 and "not allowed with argument" in capsys.readouterr().err


def test_integer_label_column_names_evaluate_on_the_training_frame(tmp_path):
    """Label columns named 0, 1, 2 (ints): the model's labels are "0", "1", "2"; evaluating on
    the training frame, on a saved-and-loaded model and on the frame written to CSV all work."""
    df = make_frame(200)[["text", *CUES]]
    df.columns = ["text", 0, 1, 2]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        d = um.MultiLabelData.from_df(df, label_cols=[0, 1, 2])
        clf = um.train_classifier(d, arch={"emb_sz": 16, "n_hid": 32, "n_layers": 1}, epochs=(1,),
                                  bs=32, seq_len=20, quiet=True, device="cpu")
    assert clf.labels == ["0", "1", "2"]
    m = clf.evaluate(df)
    df.to_csv(tmp_path / "t.csv", index=False)
    back = um.load_classifier(clf.save(tmp_path / "m"))
    assert back.evaluate(um.read_table(tmp_path / "t.csv"))["f1_macro"] == pytest.approx(m["f1_macro"], abs=1e-6)
