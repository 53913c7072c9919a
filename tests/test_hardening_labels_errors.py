"""Hardening round two, classes 3 and 5: label sets changed without a word, and errors that do
not point at the fix. Rows: docs/_rows_labels_errors.md. No test trains for more than an instant
(the classifiers here are built untrained; the LM tests fail before the first batch)."""
from __future__ import annotations

import errno
import json
import os
import re
import signal
import subprocess
import sys
import warnings

import pandas as pd
import pytest

import ulmfit_ml as um
from ulmfit_ml import cli
from ulmfit_ml.cli import build_parser, config_from_args, main
from ulmfit_ml.cli.parser import parse_args
from ulmfit_ml.utils.persist import atomic_file
from ulmfit_ml.experiments.pipeline import load_run_data

from conftest import TINY, TICKET_TEXTS as CLF_TEXTS, untrained_ticket_classifier

M = um.MultiLabelData.from_df
TEXTS = [f"text number {i} about things" for i in range(20)]
LABELS = ["billing", "bug", "login"]


def _frame(**cols) -> pd.DataFrame:
    return pd.DataFrame({"text": TEXTS, **cols})


def _bits(k: int) -> list[int]:
    return [(i >> k) & 1 for i in range(20)]


@pytest.fixture(scope="module")
def clf():
    return untrained_ticket_classifier()


# ====================================================================== class 3: label sets
@pytest.mark.parametrize("kwargs, frame, match", [
    (dict(label_col="tags"), _frame(tags=["BILLING", "billing", "bug", "bug"] * 5), r"'BILLING' and 'billing'.*df\['tags'\] = df\['tags'\]\.str\.lower\(\)"),
    (dict(label_col="tags"), _frame(tags=["late  delivery", "late delivery", "bug", "bug"] * 5),
     r"case or whitespace: 'late  delivery' and 'late delivery'.*str\.replace"),
    (dict(label_col="tags", label_delim="|"), _frame(tags=["Bug|x", "bug", "x", "x"] * 5), r"'Bug' and 'bug'"),
    (dict(label_cols=["BILLING", "billing"]), _frame(BILLING=_bits(0), billing=_bits(1)),
     r"'BILLING' and 'billing'.*merge the columns.*max\(axis=1\)"),
])
def test_labels_differing_only_by_case_or_whitespace_are_refused(kwargs, frame, match):
    with pytest.raises(ValueError, match=match):
        M(frame, split="random", **kwargs)


SIX = _frame(**{c: _bits(k % 4) for k, c in enumerate("abcdef")})


@pytest.mark.parametrize("labels, match", [
    (["a", "b"], r"leaves out 4 of the label_cols: \['c', 'd', 'e', 'f'\].*dropped silently"),
    (["f", "e", "d", "c", "b"], r"leaves out 1 of the label_cols: \['a'\]"),
    (["a", "b", "c", "d", "e", "f", "zz"], r"labels= names \['zz'\], which are not in label_cols"),
])
def test_labels_shorter_than_label_cols_raise_naming_the_columns_left_out(labels, match):
    with pytest.raises(ValueError, match=match):
        M(SIX, label_cols=list("abcdef"), labels=labels, split="random")
    reordered = M(SIX, label_cols=list("abcdef"), labels=list("fedcba"), split="random")  # a full reorder is fine
    assert reordered.labels == list("fedcba")


@pytest.mark.parametrize("seed", range(8))
@pytest.mark.parametrize("split", ["random", "stratified"])
def test_a_label_never_lands_only_in_validation(seed, split):
    df = _frame(a=[1] * 10 + [0] * 10, rare=[0] * 19 + [1], rare2=[0] * 18 + [1, 0])
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter("always")
        d = M(df, label_cols=["a", "rare", "rare2"], split=split, seed=seed)
    counts = d.label_counts()
    assert (counts["train"] >= 1).all(), counts
    assert 0 < d.is_valid.sum() < len(d.texts)
    moved = [str(x.message) for x in w if "only in the validation rows" in str(x.message)]
    assert all("were moved to training" in m for m in moved)


def test_a_label_only_in_a_given_validation_column_warns_naming_it():
    df = _frame(a=[1, 0] * 10, rare=[0] * 19 + [1], v=[False] * 15 + [True] * 5)
    with pytest.warns(UserWarning, match=r"positives only in the validation rows: \['rare'\].*never trains on them"):
        d = M(df, label_cols=["a", "rare"], valid_col="v")
    assert d.is_valid.sum() == 5  # a split the user gave is not changed


@pytest.mark.parametrize("frame, kwargs, match", [
    (_frame(**{"billing;refund": _bits(0), "bug": _bits(1)}), dict(label_cols=["billing;refund", "bug"]),
     r"\['billing;refund'\].*contain the label delimiter ';'.*'billing_refund'.*label_delim="),
    (_frame(**{"a|b": _bits(0), "c": _bits(1)}), dict(label_cols=["a|b", "c"], label_delim="|"),
     r"\['a\|b'\].*delimiter '\|'"),
    (_frame(tags=[["x;y", "z"], ["z"]] * 10), dict(label_col="tags"), r"\['x;y'\].*delimiter ';'"),
])
def test_a_label_holding_the_output_delimiter_is_refused(frame, kwargs, match):
    with pytest.raises(ValueError, match=match):
        M(frame, split="random", **kwargs)


def test_a_label_with_another_delimiter_than_the_output_one_is_fine():
    d = M(_frame(**{"billing;refund": _bits(0), "bug": _bits(1)}), label_cols=["billing;refund", "bug"],
          label_delim="|", split="random")
    assert d.labels == ["billing;refund", "bug"]


@pytest.mark.parametrize("extra, err, match", [
    ("a sentence", TypeError, r"extra_texts must be a list of texts, not a single str .*10 one-character texts"),
    (b"bytes", TypeError, r"not a single bytes"),
    (pd.DataFrame({"text": ["x"]}), TypeError, r"not a DataFrame"),
    (["fine", 3], TypeError, r"Text column 'extra_texts' has 1 non-string value\(s\) \(e\.g\. 3 of type int at position 1"),
    (["fine", b"caf\xe9"], TypeError, r"of type bytes"),
    (["fine", "caf\udce9"], ValueError, r"undecodable \(non-UTF-8\) bytes"),
])
def test_extra_texts_get_the_text_columns_policy(extra, err, match):
    with pytest.raises(err, match=match):
        M(SIX, label_cols=["a", "b"], split="random", extra_texts=extra)


def test_empty_extra_texts_are_dropped_with_a_count_or_refused():
    with pytest.warns(UserWarning, match=r"Dropping 2 row\(s\) with NaN or empty text in column 'extra_texts'"):
        d = M(SIX, label_cols=["a", "b"], split="random", extra_texts=pd.Series(["kept", None, "  "]))
    assert d.extra_texts == ["kept"]
    with pytest.raises(ValueError, match=r"'extra_texts' has 1 NaN or empty text"):
        M(SIX, label_cols=["a", "b"], split="random", extra_texts=["kept", ""], empty_text="raise")


def test_extra_text_files_of_a_run_use_the_same_policy(tmp_path):
    SIX.to_csv(tmp_path / "train.csv", index=False)
    (tmp_path / "extra.jsonl").write_text('{"text": "fine"}\n{"text": 12}\n', encoding="utf-8")
    args = parse_args(build_parser(), ["train", "--train", str(tmp_path / "train.csv"), "--label-cols", "a,b",
                                       "--set", f"run.extra_texts=['{tmp_path / 'extra.jsonl'}']"])
    with pytest.raises(TypeError, match=r"Text column 'text \(in extra\.jsonl\)' has 1 non-string value"):
        load_run_data(config_from_args(args))


# ====================================================================== class 5: errors that point at the fix
@pytest.mark.parametrize("command", ["lm", "train", "cv"])
@pytest.mark.parametrize("layout", ["sep", "no-header"])
def test_training_commands_read_other_separators_and_headerless_files(tmp_path, command, layout):
    df = pd.DataFrame({"text": TEXTS, "tags": ["a;b", "b", "a", "c"] * 5})
    if layout == "sep":
        df.to_csv(tmp_path / "t.csv", sep="|", index=False)
        flags = ["--sep", "|", "--label-col", "tags"]
    else:
        df.to_csv(tmp_path / "t.csv", header=False, index=False)
        flags = ["--no-header", "--text-col", "0", "--label-col", "1"]
    cfgs = config_from_args(parse_args(build_parser(), [command, "--train", str(tmp_path / "t.csv"), *flags]))
    assert (cfgs["run"].sep, cfgs["run"].header) == (("|", True) if layout == "sep" else (None, False))
    data = load_run_data(cfgs)
    assert len(data.texts) == 20 and data.labels == ["a", "b", "c"]


@pytest.mark.parametrize("content, flags, match", [
    ("text;tags\nhello;a\nworld;b\n", [], r"one column 'text;tags'.*CLI --sep ';'"),
    ("text\ttags\nhello\ta\nworld\tb\n", [], r"separator looks like '\\t'.*--sep \$'\\t'"),
    ("hello,a\nworld,b\n", ["--no-header"], r"The columns are numbered.*--text-col 0"),
    ("the first text of this file,a\nworld,b\n", [], r"looks like a row of data.*--no-header"),
])
def test_cli_missing_column_errors_name_sep_no_header_and_text_col(tmp_path, capsys, content, flags, match):
    (tmp_path / "t.csv").write_text(content, encoding="utf-8")
    code = main(["train", "--train", str(tmp_path / "t.csv"), "--label-col", "tags", "--out", str(tmp_path / "run"),
                 "--quiet", *flags])
    err = capsys.readouterr().err
    assert code == 1 and len(err.strip().splitlines()) == 1
    assert re.search(match, err), err


@pytest.mark.parametrize("content, kwargs, match", [
    ("text|tags\nhello|a\n", {}, r"sep='\|' \(read_table\(path, sep='\|'\)"),
    ("0,1\nhello,a\n", {"header": False}, r"numbered.*text_col='0'"),
])
def test_library_missing_column_errors_name_the_reader_options(tmp_path, content, kwargs, match):
    (tmp_path / "t.csv").write_text(content, encoding="utf-8")
    with pytest.raises(ValueError, match=match):
        M(um.read_table(tmp_path / "t.csv", **kwargs), label_col="tags")


FULL = [
    OSError(errno.ENOSPC, "No space left on device"),
    OSError(errno.EFBIG, "File too large"),
    RuntimeError("[enforce fail at inline_container.cc:603] . unexpected pos 64 vs 0"),
    RuntimeError("PytorchStreamWriter failed writing file data/0: file write failed"),
]


@pytest.mark.parametrize("exc", FULL, ids=lambda e: str(e)[:24])
def test_disk_full_in_the_one_atomic_writer_is_one_clear_oserror(tmp_path, exc):
    target = tmp_path / "f.json"
    target.write_text("old", encoding="utf-8")
    with pytest.raises(OSError, match=r"Could not write .*f\.json: no space left on the device / file too large"):
        with atomic_file(target) as tmp:
            tmp.write_text("partial", encoding="utf-8")
            raise exc
    assert target.read_text(encoding="utf-8") == "old" and sorted(os.listdir(tmp_path)) == ["f.json"]


def test_other_errors_in_the_atomic_writer_pass_unchanged(tmp_path):
    with pytest.raises(RuntimeError, match=r"^something else$"):
        with atomic_file(tmp_path / "f.json"):
            raise RuntimeError("something else")


@pytest.mark.parametrize("exc", FULL[::3], ids=lambda e: str(e)[:24])
def test_disk_full_while_saving_a_model_names_the_path_and_keeps_the_old_one(tmp_path, monkeypatch, clf, exc):
    import ulmfit_ml.models.classifier as model_mod

    clf.save(tmp_path / "m")
    before = sorted(os.listdir(tmp_path / "m"))

    def fail(*a, **k):
        raise exc
    monkeypatch.setattr(model_mod, "save_weights", fail)
    with pytest.raises(OSError, match=r"Could not write .*m: no space left") as info:
        clf.save(tmp_path / "m", overwrite=True)
    assert info.value.errno in (errno.ENOSPC, errno.EFBIG)
    assert sorted(os.listdir(tmp_path / "m")) == before and sorted(os.listdir(tmp_path)) == ["m"]


@pytest.mark.parametrize("where", ["_commands", "build_parser"])
def test_ctrl_c_during_cli_start_up_is_one_line_and_exit_130(monkeypatch, capsys, where):
    def interrupt(*a, **k):
        raise KeyboardInterrupt
    monkeypatch.setattr(cli, where, interrupt)
    assert main(["train", "--train", "x.csv"]) == 130
    err = capsys.readouterr().err
    assert err.strip().endswith("interrupted") and len(err.strip().splitlines()) == 1


DRIVER = """
import signal, sys, time
# a terminal's Ctrl-C: a job started in the background by a non-interactive shell inherits SIGINT ignored
signal.signal(signal.SIGINT, signal.default_int_handler)
import ulmfit_ml.cli as c
load = c._commands
def slow():  # a real SIGINT while the sub-commands (torch, fastai) load
    print("loading", flush=True)
    time.sleep(60)
    return load()
c._commands = slow
sys.exit(c.main(["lm", "--train", "x.csv"]))
"""


def test_cli_start_up_imports_no_torch_and_sigint_while_loading_is_one_line(tmp_path):
    code = "import sys, ulmfit_ml.cli, ulmfit_ml; print(sorted(m for m in ('torch', 'fastai') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.stdout.strip() == "[]", out.stderr
    p = subprocess.Popen([sys.executable, "-c", DRIVER], cwd=tmp_path, stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True)
    assert p.stdout.readline().strip() == "loading"
    p.send_signal(signal.SIGINT)
    _, err = p.communicate(timeout=120)
    assert p.returncode == 130 and err.strip().splitlines() == ["ulmfit-ml lm: interrupted"], err


def test_load_on_a_run_directory_names_the_model_inside(tmp_path, clf):
    run = tmp_path / "run"
    clf.save(run / "model")
    (run / "config.json").write_text(json.dumps({"command": "train", "data": {}}), encoding="utf-8")
    with pytest.raises(FileNotFoundError, match=r"run is a run directory.*its model is in .*run/model"):
        um.load_classifier(run)
    cv = tmp_path / "cv"
    clf.save(cv / "folds" / "fold0" / "model")
    (cv / "config.json").write_text(json.dumps({"command": "cv"}), encoding="utf-8")
    with pytest.raises(FileNotFoundError, match=r"cv run directory.*fold0/model.*load_predictor"):
        um.load_classifier(cv)
    lm_run = tmp_path / "lmrun"
    (lm_run / "lm").mkdir(parents=True)
    (lm_run / "lm" / "lm.json").write_text("{}", encoding="utf-8")
    with pytest.raises(FileNotFoundError, match=r"language model is in .*lmrun/lm"):
        um.load_lm(lm_run)
    assert um.load_classifier(run / "model").labels == LABELS


def test_paths_with_a_tilde_are_the_home_directory(tmp_path, monkeypatch, clf):
    home, work = tmp_path / "home", tmp_path / "work"
    home.mkdir()
    work.mkdir()
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.chdir(work)
    assert clf.save("~/m") == home / "m"
    assert um.load_classifier("~/m").labels == LABELS
    um.write_table(pd.DataFrame({"text": ["a"]}), "~/t.csv")
    assert um.read_table("~/t.csv").text.tolist() == ["a"]
    cfgs = config_from_args(parse_args(build_parser(), ["train", "--train", "~/t.csv", "--out", "~/run"]))
    assert (cfgs["run"].train, cfgs["run"].out) == (str(home / "t.csv"), str(home / "run"))
    assert not any(p.name == "~" for p in tmp_path.rglob("*"))


@pytest.mark.parametrize("target", ["model", "missing"])
def test_saving_over_a_symlink_says_it_is_one(tmp_path, clf, target):
    clf.save(tmp_path / "model")
    link = tmp_path / "link"
    link.symlink_to(tmp_path / target)
    with pytest.raises(FileExistsError, match=r"link: it is a symbolic link .*will not replace a link"):
        clf.save(link, overwrite=True)
    assert link.is_symlink() and (tmp_path / "model" / "config.json").is_file()


@pytest.mark.parametrize("n_texts, bs, match", [
    (5, 64, r"validation split \(valid_pct=0\.1\) of 5 texts is empty; it needs at least 10 texts"),
    (30, 64, r"with bs=64 .* need more than 64 tokens .*the 30 texts give \d+ training and \d+ validation tokens"
             r".*smaller bs / seq_len"),
    (30, 16, r"with bs=16 .*extra_texts="),
])
def test_finetune_lm_on_too_few_tokens_says_how_many(n_texts, bs, match):
    words = ["alpha", "beta", "gamma", "delta", "omega"]
    df = pd.DataFrame({"text": [f"{words[i % 5]} {i}" for i in range(n_texts)], "tags": ["a", "b"] * (n_texts // 2)
                       + ["a"] * (n_texts % 2)})
    data = M(df, label_col="tags", split="random")
    with pytest.raises(ValueError, match=match):
        um.finetune_lm(data, arch=TINY, pretrained=False, epochs=1, bs=bs, seq_len=8, quiet=True, device="cpu")


class FakeFrame:
    """A frame of another library: not pandas, but it can convert itself."""

    def __init__(self, df: pd.DataFrame | None) -> None:
        self.df = df

    def to_pandas(self):
        return self.df


def test_frames_with_to_pandas_are_converted(clf):
    d = M(FakeFrame(SIX), label_cols=["a", "b"], split="random")
    assert len(d.texts) == 20
    df = pd.DataFrame({"text": CLF_TEXTS[:6], "tags": ["billing", "bug", "login", "bug", "billing", "bug"]})
    assert set(clf.evaluate(FakeFrame(df))) >= {"f1_micro", "f1_macro"}
    with pytest.raises(TypeError, match=r"from_df expects a pandas DataFrame, got FakeFrame \(from [\w.]+\): convert it with "
                                        r"\.to_pandas\(\)"):
        M(FakeFrame(None), label_cols=["a"])
    with pytest.raises(TypeError, match=r"from_df expects a pandas DataFrame, got dict\.$"):
        M({"text": ["x"]}, label_cols=["a"])


def test_polars_frames_are_converted(clf):
    pl = pytest.importorskip("polars")
    d = M(pl.from_pandas(SIX), label_cols=["a", "b"], split="random")
    assert len(d.texts) == 20
    with pytest.raises(TypeError, match="not a DataFrame"):
        clf.predict_proba(pl.DataFrame({"text": ["x"]}))
