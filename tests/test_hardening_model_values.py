"""Hardening round two: every file of a saved model is covered by the sha256 manifest (a
hand-edited labels.json / config.json / thresholds.json refuses to load), and loose values are
not taken as something else (bool/str thresholds, tuning on too little data, [run] keys a
command ignores, an id column named like an output column).

No test trains: the classifier is an untrained tiny network, which predicts deterministically."""
from __future__ import annotations

import glob
import json
import shutil
import tomllib
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

import ulmfit_ml as um
from conftest import TINY
from ulmfit_ml.utils import persist
from ulmfit_ml.cli import main
from ulmfit_ml.utils.config import RunConfig
from ulmfit_ml.utils.config_files import ConfigError, check_run_keys
from ulmfit_ml.models.lm import pretrained_model_dir
from ulmfit_ml.models.classifier import MultiLabelClassifier, build_classifier_model
from ulmfit_ml.evaluation.thresholds import check_thresholds, tune_thresholds

LABELS = ["a", "b", "c"]
TEXTS = ["the happy movie", "a furious day", "scared of the road", "blue green window"]
VOCAB = ["xxunk", "xxpad", "xxbos", "xxeos", "xxfld", "xxrep", "xxwrep", "xxup", "xxmaj", "the", "a", "happy",
         "movie", "furious", "day", "scared", "of", "road", "blue", "green", "window"]


def _untrained(backwards: bool = False) -> MultiLabelClassifier:
    torch.manual_seed(0)
    net = build_classifier_model(len(VOCAB), len(LABELS), arch=TINY, seq_len=20, max_len=40, lin_ftrs=[8],
                                 drop_mult=0.5)
    meta = {"arch": dict(TINY), "seq_len": 20, "max_len": 40, "lin_ftrs": [8], "drop_mult": 0.5, "text_col": "text",
            "task": "multilabel", "backwards": backwards,
            "label_spec": {"label_cols": LABELS, "label_col": None, "label_delim": ";"}}
    clf = MultiLabelClassifier(net.eval(), VOCAB, LABELS, meta=meta, thresholds=np.array([0.3, 0.5, 0.7]),
                               history=pd.DataFrame({"epoch": [0], "train_loss": [0.7]}))
    return clf


@pytest.fixture(scope="module")
def clf() -> MultiLabelClassifier:
    return _untrained()


@pytest.fixture(scope="module")
def saved(clf, tmp_path_factory) -> Path:
    return clf.save(tmp_path_factory.mktemp("mv") / "model")


@pytest.fixture
def model_dir(saved, tmp_path) -> Path:
    return Path(shutil.copytree(saved, tmp_path / "model"))


def _edit_json(p: Path, f) -> None:
    p.write_text(json.dumps(f(json.loads(p.read_text(encoding="utf-8")))), encoding="utf-8")


def _labelled() -> pd.DataFrame:
    return pd.DataFrame({"text": TEXTS, "a": [1, 0, 0, 1], "b": [0, 1, 0, 1], "c": [0, 0, 1, 0]})


# ---------------------------------------------------------------------- class 1: the manifest
def test_manifest_lists_the_sha256_of_every_file(saved, clf):
    marker = json.loads((saved / persist.MARKER).read_text())
    files = sorted(p.name for p in saved.iterdir() if p.name != persist.MARKER)
    assert sorted(marker["sha256"]) == files == sorted(marker["files"])
    assert all(marker["sha256"][f] == persist.file_sha256(saved / f) for f in files)
    assert json.loads((saved / "config.json").read_text())["format_version"] == persist.FORMAT_VERSION >= 2
    back = um.load_classifier(saved)  # the untouched copy loads and predicts as saved
    np.testing.assert_allclose(back.predict_proba(TEXTS), clf.predict_proba(TEXTS), rtol=1e-6)
    assert back.predict(TEXTS) == clf.predict(TEXTS)


@pytest.mark.parametrize("name,edit", [
    ("labels.json", lambda v: [v[1], v[0], v[2]]),  # two names swapped: every prediction relabelled
    ("config.json", lambda d: {**d, "backwards": True}),  # changes every probability
    ("config.json", lambda d: {**d, "seq_len": 30}),  # a valid value, but not the saved one
    ("config.json", lambda d: {**d, "format_version": 1}),  # a downgrade does not skip the check
    ("thresholds.json", lambda v: [0.9, 0.9, 0.9]),
    ("vocab.json", lambda v: v[:9] + [v[10], v[9]] + v[11:]),  # two tokens swapped
])
def test_a_hand_edited_model_file_refuses_to_load(model_dir, name, edit):
    _edit_json(model_dir / name, edit)
    with pytest.raises(ValueError, match=rf"{name} was changed after the model was saved: its sha256 differs .*"
                                         r"edited by hand or corrupted.*save it again"):
        um.load_classifier(model_dir)


def test_changed_history_and_weights_name_the_file(model_dir):
    (model_dir / "history.csv").write_text("epoch,train_loss\n0,0.1\n")
    with pytest.raises(ValueError, match=r"history\.csv was changed after .*informational: delete it"):
        um.load_classifier(model_dir)
    (model_dir / "history.csv").unlink()  # informational: a missing one is fine
    assert um.load_classifier(model_dir).labels == LABELS
    raw = bytearray((model_dir / "model.safetensors").read_bytes())
    raw[-3] ^= 0xFF
    (model_dir / "model.safetensors").write_bytes(bytes(raw))
    with pytest.raises(ValueError, match=r"model\.safetensors does not match the checksum"):
        um.load_classifier(model_dir)


def test_missing_or_broken_manifest_of_a_new_model(model_dir):
    marker = model_dir / persist.MARKER
    good = marker.read_text()
    _edit_json(marker, lambda m: {k: v for k, v in m.items() if k != "sha256"})
    with pytest.raises(ValueError, match=r"\.ulmfit_ml\.json .* has no sha256 checksums.*save the model again"):
        um.load_classifier(model_dir)
    _edit_json(marker, lambda m: {**json.loads(good), "kind": "language_model"})
    with pytest.raises(ValueError, match=r"is not the manifest of a ulmfit_ml classifier"):
        um.load_classifier(model_dir)
    marker.unlink()  # e.g. copied without hidden files
    with pytest.raises(ValueError, match=r"\.ulmfit_ml\.json .* is missing or unreadable.*hidden files included"):
        um.load_classifier(model_dir)


def test_model_of_the_format_before_the_manifest_still_loads(model_dir, clf):
    (model_dir / persist.MARKER).unlink()
    _edit_json(model_dir / "config.json", lambda d: {**d, "format_version": 1})
    back = um.load_classifier(model_dir)
    np.testing.assert_allclose(back.predict_proba(TEXTS), clf.predict_proba(TEXTS), rtol=1e-6)


def test_language_model_files_are_covered_too(tmp_path):
    lm = um.LanguageModel(["xxunk", "xxpad", "a"], {"emb_sz": 4, "n_hid": 8, "n_layers": 1},
                          {"0.encoder.weight": torch.zeros(3, 4)})
    d = lm.save(tmp_path / "lm")
    assert um.load_lm(d).backwards is False
    _edit_json(d / "lm.json", lambda m: {**m, "backwards": True})
    with pytest.raises(ValueError, match=r"lm\.json was changed after the model was saved"):
        um.load_lm(d)


def test_shipped_language_models_load_and_ship_their_marker():
    for backwards in (False, True):
        d = pretrained_model_dir("en-small", backwards=backwards)
        assert um.load_lm(d).backwards is backwards
    # package-data globs skip hidden files: the marker (the manifest of a regenerated LM) has its own pattern
    root = Path(um.__file__).parent
    patterns = tomllib.loads((root.parent / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]
    packaged = {Path(f) for pat in patterns["ulmfit_ml"] for f in glob.glob(pat, root_dir=root)}
    shipped = {p.relative_to(root) for p in (root / "pretrained").rglob("*") if p.is_file()}
    assert shipped <= packaged, sorted(map(str, shipped - packaged))


# ---------------------------------------------------------------------- class 4: thresholds
@pytest.mark.parametrize("value,match", [
    (True, r"threshold = True: a threshold must be a number in \[0, 1\], got bool; True is not read as 1\.0: pass "
           r"a number, e\.g\. threshold=0\.5"),
    (np.bool_(False), r"threshold = .*False.*got bool"),
    ("0.3", r"threshold = '0\.3': .*got str; convert it first: threshold=0\.3 \(strings are not read as numbers\)"),
    ("high", r"threshold = 'high': .*got str; pass a number, e\.g\. threshold=0\.5"),
    ([0.5, True, 0.5], r"threshold\[1\] = True: .*got bool"),
    (["0.2", "0.5", "0.1"], r"threshold\[0\] = '0\.2' \(3 such values\): .*convert it first"),
    (np.array([True, False, True]), r"threshold\[0\] = .*True.*got bool"),
    (None, r"threshold = None: .*got NoneType"),
])
def test_bool_and_string_thresholds_raise_type_error(value, match):
    with pytest.raises(TypeError, match=match):
        check_thresholds(value, 3)


def test_every_threshold_entry_point_uses_the_check(clf, tmp_path):
    with pytest.raises(TypeError, match=r"threshold = True: .*not read as 1\.0"):
        clf.predict(TEXTS, threshold=True)
    with pytest.raises(TypeError, match=r"threshold = '0\.3'"):
        clf.predict(TEXTS, threshold="0.3")
    with pytest.raises(TypeError, match=r"threshold = True"):
        clf.evaluate(_labelled(), threshold=True)
    with pytest.raises(TypeError, match=r"threshold = '0\.3'"):
        clf.output_table(TEXTS, output="both", threshold="0.3")
    src = tmp_path / "in.csv"
    pd.DataFrame({"text": TEXTS}).to_csv(src, index=False)
    for output in ("proba", "both"):  # proba writes no labels: still refused, before any file is written
        with pytest.raises(TypeError, match=r"threshold = True"):
            um.predict_file(clf, src, tmp_path / "o.csv", threshold=True, output=output)
        assert not (tmp_path / "o.csv").exists() and not (tmp_path / "o.csv.progress.json").exists()
    bad = _untrained()
    bad.thresholds = "0.3"
    with pytest.raises(ValueError, match=r"clf\.thresholds is invalid \(clf\.thresholds = '0\.3'"):
        bad.save(tmp_path / "m")
    # numbers of any numeric type still work: 0 and 1 as ints, numpy scalars and arrays
    assert clf.predict(TEXTS, threshold=0) == [LABELS] * len(TEXTS)
    assert clf.predict(TEXTS, threshold=np.float32(1.0)) == [[]] * len(TEXTS)
    assert check_thresholds(np.array([0, 1, 0]), 3).tolist() == [0.0, 1.0, 0.0]


def test_cli_threshold_is_a_number(saved, tmp_path, capsys):
    src = tmp_path / "in.csv"
    pd.DataFrame({"text": TEXTS}).to_csv(src, index=False)
    for cmd in ("predict", "evaluate"):
        extra = ["-o", str(tmp_path / "o.csv")] if cmd == "predict" else []
        with pytest.raises(SystemExit) as e:
            main([cmd, str(saved), str(src), "--threshold", "true", *extra])
        assert e.value.code == 2 and "argument --threshold: invalid float value: 'true'" in capsys.readouterr().err


# ---------------------------------------------------------------------- class 4: tuning on too little data
def test_tuning_on_one_row_warns_and_keeps_half():
    y, p = np.array([[1, 0, 1]]), np.array([[0.8, 0.1, 0.3]])
    for strategy in ("per_label", "global"):
        with pytest.warns(UserWarning, match=r"Only 2 positive example\(s\) in the 1 row\(s\) .*min_positives=5.*"
                                             r"all 3 thresholds stay 0\.5 \(untuned\)"):
            t = tune_thresholds(y, p, strategy=strategy)
        assert t.tolist() == [0.5, 0.5, 0.5]


def test_labels_without_enough_positives_keep_the_global_threshold_with_a_count():
    rng = np.random.default_rng(0)
    y = (rng.random((200, 3)) < [0.4, 0.3, 0.0]).astype(int)
    y[:2, 1], y[2:, 1] = 1, 0  # label b: 2 positives; label c: none
    p = np.clip(0.2 + 0.5 * y + rng.normal(0, 0.1, y.shape), 0, 1)
    with pytest.warns(UserWarning, match=r"2 of 3 label\(s\) have fewer than min_positives=5 positive example\(s\) "
                                         r"in the 200 row\(s\) .*\('b', 'c'\): they keep the global threshold 0\.\d+"):
        t = tune_thresholds(y, p, labels=LABELS)
    glob_t = tune_thresholds(y, p, strategy="global")
    assert t[1] == t[2] == glob_t[0]
    with pytest.warns(UserWarning, match=r"1 of 3 label\(s\) have fewer than min_positives=1 .*\(at column\(s\) 2\)"):
        t0 = tune_thresholds(y, p, min_positives=0)  # a label without positives never gets "its own"
    assert t0[2] == glob_t[0]


def test_model_tune_thresholds_on_a_one_row_frame(tmp_path):
    m = _untrained()
    with pytest.warns(UserWarning, match=r"Only 1 positive example\(s\) in the 1 row\(s\).*stay 0\.5"):
        t = m.tune_thresholds(_labelled().head(1).assign(b=0))
    assert t.tolist() == m.thresholds.tolist() == [0.5, 0.5, 0.5]


# ---------------------------------------------------------------------- class 4: [run] keys a command ignores
@pytest.mark.parametrize("command,key,value,match", [
    ("train", "test", "/data/test.csv", r"run\.test = '/data/test\.csv' is read by `ulmfit-ml cv` only; "
                                        r"`ulmfit-ml train` would ignore it"),
    ("train", "folds", 3, r"run\.folds = 3 is read by `ulmfit-ml cv` only"),
    ("lm", "id_col", "id", r"run\.id_col = 'id' is read by `ulmfit-ml cv` only; `ulmfit-ml lm`"),
    ("train", "save_fold_models", True, r"run\.save_fold_models = True is read by `ulmfit-ml cv` only"),
    ("cv", "keep_checkpoints", True, r"run\.keep_checkpoints = True is read by `ulmfit-ml train` only"),
])
def test_run_keys_a_command_ignores_are_refused(command, key, value, match):
    with pytest.raises(ConfigError, match=match):
        check_run_keys(command, RunConfig(**{key: value}))
    check_run_keys(command, RunConfig())  # defaults (e.g. a saved config's folds = 5) are fine
    check_run_keys("cv" if key != "keep_checkpoints" else "train", RunConfig(**{key: value}))


def test_train_set_run_test_is_a_one_line_config_error(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    pd.DataFrame({"text": TEXTS, "tags": ["a", "b", "c", "a"]}).to_csv("train.csv", index=False)
    for argv in (["train", "--set", "run.test=test.csv"], ["train", "--run.folds=3"],
                 ["lm", "--set", "run.keep_checkpoints=true"]):
        code = main([*argv, "--train", "train.csv", "--label-col", "tags", "--out", "r", "--quiet"])
        err = capsys.readouterr().err
        assert code == 2 and len(err.strip().splitlines()) == 1 and "config error: run." in err, err
        assert "would ignore it" in err
    assert not Path("r").exists()  # refused before the run directory is made


# ---------------------------------------------------------------------- class 4: id_col named like an output column
@pytest.mark.parametrize("id_col,output,match", [
    ("row", "proba", r"id_col='row' clashes with the output column 'row' \(the input row number\)"),
    ("labels", "both", r"id_col='labels' clashes with the output column 'labels' \(the predicted labels\)"),
    ("proba_a", "proba", r"id_col='proba_a' clashes with the output column 'proba_a' \(a prediction column\)"),
    ("b", "submission", r"id_col='b' clashes with the output column 'b'"),
])
def test_id_col_never_replaces_an_output_column(clf, tmp_path, id_col, output, match):
    src = tmp_path / "in.csv"
    pd.DataFrame({"text": TEXTS, id_col: ["x1", "x2", "x3", "x4"]}).to_csv(src, index=False)
    for out in ("o.csv", "o.parquet"):
        with pytest.raises(ValueError, match=match + r".*Rename that column of the input"):
            um.predict_file(clf, src, tmp_path / out, id_col=id_col, output=output)
        assert not (tmp_path / out).exists() and not (tmp_path / f"{out}.progress.json").exists()


def test_a_free_id_col_keeps_the_row_numbers(clf, tmp_path):
    src = tmp_path / "in.csv"
    pd.DataFrame({"text": TEXTS, "row_id": ["x1", "x2", "x3", "x4"]}).to_csv(src, index=False)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        um.predict_file(clf, src, tmp_path / "o.csv", id_col="row_id", output="both")
    out = pd.read_csv(tmp_path / "o.csv")
    assert list(out.columns[:3]) == ["row", "row_id", "labels"] and out["row"].tolist() == [0, 1, 2, 3]
