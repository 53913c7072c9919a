"""The ``ulmfit-ml`` command line: every subcommand end to end on a tiny model (subprocesses),
config file <-> flag precedence, one-line errors naming the bad key, the run directory,
submission columns."""
from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import ulmfit_ml as um
from ulmfit_ml.cli import (ConfigError, RunConfig, build_parser, config_sections, load_config_file, main, parse_set,
                           resolve_config)
from ulmfit_ml.cli import config_from_args as _config_from_args  # the parse -> config step of every training command
from ulmfit_ml.cli.parser import parse_args as _parse_args
from ulmfit_ml.utils.config import ClassifierConfig, DataConfig
from ulmfit_ml.utils.config_files import to_toml

from conftest import CUES, make_frame, run_cli

LABELS_SORTED = sorted(CUES)  # a delimited label column gives the sorted label set: anger, fear, joy

EXP_TOML = """\
[data]
label_col = "tags"
[lm]
arch = {emb_sz = 16, n_hid = 32, n_layers = 1}
pretrained = false
epochs = 1
bs = 32
seq_len = 20
[classifier]
unfreeze = [0]
epochs = [1]
lrs = [3e-2]
bs = 32
seq_len = 20
lin_ftrs = [8]
[run]
train = "train.csv"
"""


_run = run_cli  # conftest: ulmfit-ml ARGS --quiet --device cpu in a subprocess


def _ok(p: subprocess.CompletedProcess) -> None:
    assert p.returncode == 0, f"exit {p.returncode}\nstdout:\n{p.stdout}\nstderr:\n{p.stderr}"


@pytest.fixture(scope="module")
def work(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("cli")
    df = make_frame(120, seed=2)
    df["id"] = [f"r{i:04d}" for i in range(len(df))]
    df.to_csv(d / "train.csv", index=False)
    df.iloc[:30].to_csv(d / "labelled.tsv", sep="\t", index=False)
    make_frame(25, seed=3).assign(id=[f"t{i}" for i in range(25)])[["id", "text"]].to_json(
        d / "test.jsonl", orient="records", lines=True)
    make_frame(25, seed=3)[["text"]].assign(id=[f"t{i}" for i in range(25)]).to_csv(d / "test.csv", index=False)
    (d / "corpus.txt").write_text("\n".join(make_frame(80, seed=4)["text"]), encoding="utf-8")
    (d / "exp.toml").write_text(EXP_TOML, encoding="utf-8")
    return d


@pytest.fixture(scope="module")
def lm_run(work) -> Path:
    p = _run(["lm", "--config", "exp.toml", "--out", "runs/lm"], work, console_script=True)
    _ok(p)
    return work / "runs" / "lm"


@pytest.fixture(scope="module")
def train_run(work, lm_run) -> Path:
    p = _run(["train", "--config", "exp.toml", "--lm", str(lm_run), "--out", "runs/train", "--seed", "5"], work)
    _ok(p)
    return work / "runs" / "train"


# ---------------------------------------------------------------------- subcommands end to end
def test_lm_writes_a_reusable_language_model(lm_run):
    lm = um.load_lm(lm_run / "lm")
    assert lm.arch["n_layers"] == 1 and len(lm.vocab) > 10
    assert json.loads((lm_run / "status.json").read_text())["status"] == "done"
    assert json.loads((lm_run / "config.json").read_text())["command"] == "lm"
    assert "perplexity" in json.loads((lm_run / "metrics.json").read_text())["lm"]


def test_train_writes_the_run_directory(train_run):
    r = train_run
    for f in ("config.toml", "config.json", "data.json", "environment.json", "history.csv", "metrics.json",
              "run.log", "status.json", "model/model.safetensors"):
        assert (r / f).is_file(), f
    assert not (r / "checkpoints").exists()
    assert json.loads((r / "status.json").read_text())["status"] == "done"
    fp = json.loads((r / "data.json").read_text())
    assert fp["n_rows"] == 120 and fp["labels"] == LABELS_SORTED and len(fp["sha256"]) == 64
    env = json.loads((r / "environment.json").read_text())
    assert env["device"] == "cpu" and env["torch"] and env["fastai"] and env["ulmfit_ml"] == um.__version__
    hist = pd.read_csv(r / "history.csv")
    assert set(hist["model"]) == {"classifier"}, "the reused LM is not retrained"
    assert {"epoch", "train_loss", "valid_loss", "f1_macro"} <= set(hist.columns)
    metrics = json.loads((r / "metrics.json").read_text())
    assert set(metrics["thresholds"]) == set(LABELS_SORTED) and "f1_macro" in metrics["valid"]["summary"]
    cfg = load_config_file(r / "config.toml")
    assert cfg["data"]["seed"] == cfg["lm"]["seed"] == cfg["classifier"]["seed"] == 5, "--seed sets every seed"
    assert Path(cfg["run"]["encoder"]).is_absolute() and cfg["run"]["overwrite"] is False
    assert sorted(p.name for p in (r / "plots").glob("*.png")) == sorted(
        ["loss_classifier.png", "per_label_f1.png", "f1_vs_threshold.png", "label_frequency.png",
         "labels_per_text.png"])


def test_train_self_train_from_the_command_line(work, lm_run):
    """`--self-train blend --extra-texts FILE`: the student's run directory, like any train run's."""
    make_frame(60, seed=8)[["text"]].to_csv(work / "unlabelled.csv", index=False)
    p = _run(["train", "--config", "exp.toml", "--lm", str(lm_run), "--out", "runs/student", "--seed", "5",
              "--self-train", "blend", "--extra-texts", "unlabelled.csv"], work)
    _ok(p)
    r = work / "runs" / "student"
    assert json.loads((r / "status.json").read_text())["status"] == "done"
    assert not (r / "checkpoints").exists(), "the teacher's probabilities went with the checkpoints"
    assert "self-training, teacher 'blend'" in (r / "run.log").read_text()
    cfg = load_config_file(r / "config.toml")["run"]
    assert cfg["self_train"] == "blend" and cfg["extra_texts"] == [str(work / "unlabelled.csv")]
    assert um.load_classifier(r / "model").labels == LABELS_SORTED


@pytest.mark.parametrize("flags, log, teacher", [
    ([], r"training the classifier \(self-training, teacher 'blend'\): self_train = 'auto': few labels \(\d+ labelled "
         r"training texts <= 5,000\), a student of the ULMFiT \+ TF-IDF blend on 60 unlabelled texts", "blend"),
    (["--self-train", "none"], r"training the classifier: self_train = 'none'\n", None),
])
def test_train_with_extra_texts_self_trains_by_default_when_labels_are_few(work, lm_run, flags, log, teacher):
    """`--extra-texts FILE` and few labels: a student of the blend unless `--self-train none` (the
    size rule itself: tests/test_selftrain.py); the decision is logged and in metrics.json."""
    make_frame(60, seed=9)[["text"]].to_csv(work / "unlabelled_auto.csv", index=False)
    out = f"runs/auto-{teacher}"
    _ok(_run(["train", "--config", "exp.toml", "--lm", str(lm_run), "--out", out, "--seed", "5",
              "--extra-texts", "unlabelled_auto.csv", *flags], work))
    assert re.search(log, (work / out / "run.log").read_text())
    assert json.loads((work / out / "metrics.json").read_text())["self_train"]["teacher"] == teacher


def test_train_without_extra_texts_trains_the_classifier_alone(train_run):
    assert re.search(r"training the classifier: self_train = 'auto': the classifier alone; no unlabelled texts",
                     (train_run / "run.log").read_text())
    assert json.loads((train_run / "metrics.json").read_text())["self_train"] == {
        "teacher": None, "max_texts": None, "reason": "self_train = 'auto': the classifier alone; no unlabelled texts (run.extra_texts)"}


@pytest.mark.parametrize("args, match", [
    (["train", "--self-train", "blend"], r"run.self_train = 'blend' trains on unlabelled texts: list their files in "
                                         r"run.extra_texts \(or pass --extra-texts"),
    (["train", "--self-train", "blend", "--extra-texts", "x.csv", "--category-cols", "tags"],
     r"run.self_train = 'blend' needs multi-label data \(0/1 label columns or a delimited label column\); these "
     r"targets are 'multicategory'"),
    (["train", "--set", "run.self_train=tfidf"], r"self_train must be one of \('auto', 'none', 'blend', 'self'\), got 'tfidf'"),
    (["cv", "--set", "run.self_train=blend"], r"run.self_train = 'blend' is read by `ulmfit-ml train` only"),
])
def test_self_train_usage_errors(work, capsys, monkeypatch, args, match):
    monkeypatch.chdir(work)
    assert main(args + ["--config", "exp.toml", "--quiet"]) == 2
    assert re.search(match, capsys.readouterr().err)


def test_self_train_flag_names_its_choices(capsys):
    with pytest.raises(SystemExit) as e:
        main(["train", "--self-train", "tfidf"])
    assert e.value.code == 2 and re.search(r"argument --self-train: invalid choice: 'tfidf' \(choose from",
                                           capsys.readouterr().err)


def test_same_config_and_seed_give_the_same_metrics(train_run, work):
    """`ulmfit-ml train` and the library's `um.run_train` on the same config give the same run."""
    out = work / "runs" / "rerun"
    cfgs = resolve_config(load_config_file(train_run / "config.toml"),
                          [("run", "out", str(out)), ("run", "plots", False), ("classifier", "quiet", True),
                           ("lm", "quiet", True)])
    assert um.run_train(cfgs).path == out
    a = json.loads((train_run / "metrics.json").read_text())["valid"]
    b = json.loads((out / "metrics.json").read_text())["valid"]
    assert a["summary"] == pytest.approx(b["summary"], nan_ok=True)
    assert json.loads((train_run / "data.json").read_text()) == json.loads((out / "data.json").read_text())


def test_evaluate(train_run, work):
    p = _run(["evaluate", str(train_run), "labelled.tsv", "--out", "eval.json", "--per-label", "per_label.csv"], work)
    _ok(p)
    rep = json.loads((work / "eval.json").read_text())
    clf = um.load_classifier(train_run / "model")
    expected = clf.report(pd.read_csv(work / "labelled.tsv", sep="\t"))
    assert rep["n_rows"] == 30
    assert rep["summary"] == pytest.approx(expected.summary, nan_ok=True, abs=1e-6)
    assert "f1_macro" in p.stdout
    assert pd.read_csv(work / "per_label.csv")["label"].tolist() == LABELS_SORTED


def test_predict_submission_columns_in_training_label_order(train_run, work):
    p = _run(["predict", str(train_run), "test.jsonl", "--out", "sub.csv", "--format", "submission",
              "--id-col", "id"], work)
    _ok(p)
    sub = pd.read_csv(work / "sub.csv")
    clf = um.load_classifier(train_run / "model")
    assert clf.labels == LABELS_SORTED
    assert list(sub.columns) == ["id"] + clf.labels
    assert sub["id"].tolist() == [f"t{i}" for i in range(25)]
    texts = pd.read_json(work / "test.jsonl", lines=True)["text"].tolist()
    assert np.allclose(sub[clf.labels].to_numpy(), clf.predict_proba(texts), atol=1e-6)


def test_predict_labels_and_probabilities(train_run, work):
    out = work / "both.csv"
    assert main(["predict", str(train_run), str(work / "test.csv"), "--out", str(out), "--id-col", "id",
                 "--threshold", "0.0"]) == 0
    df = pd.read_csv(out)
    assert list(df.columns) == ["row", "id", "labels"] + [f"proba_{lab}" for lab in LABELS_SORTED]
    assert df["labels"].tolist() == [";".join(LABELS_SORTED)] * 25, "threshold 0 -> every label"


def test_cv(work, lm_run):
    p = _run(["cv", "--config", "exp.toml", "--lm", str(lm_run), "--folds", "2", "--out", "runs/cv",
              "--test", "test.csv", "--id-col", "id", "--set", "run.save_fold_models=true",
              "--set", "run.plots=false"], work)
    _ok(p)
    r = work / "runs" / "cv"
    oof = pd.read_csv(r / "oof.csv")
    assert list(oof.columns) == ["row", "id", "fold"] + LABELS_SORTED
    assert sorted(oof["row"]) == list(range(120)), "every row is predicted exactly once"
    assert set(oof["fold"]) == {0, 1}
    assert oof["id"].tolist() == [f"r{i:04d}" for i in oof["row"]]
    assert len(pd.read_csv(r / "cv_metrics.csv")) == 2
    m = json.loads((r / "metrics.json").read_text())
    assert m["n_folds"] == 2 and {"mean", "std", "oof", "thresholds"} <= set(m)
    test = pd.read_csv(r / "test_predictions.csv")
    assert list(test.columns) == ["id"] + LABELS_SORTED and len(test) == 25
    # the saved fold models are averaged by `predict` on the cv run directory
    assert main(["predict", str(r), str(work / "test.csv"), "--out", str(work / "cv_sub.csv"),
                 "--format", "submission", "--id-col", "id"]) == 0
    sub = pd.read_csv(work / "cv_sub.csv")
    assert np.allclose(sub[LABELS_SORTED].to_numpy(), test[LABELS_SORTED].to_numpy(), atol=1e-5)


def test_pretrain(work):
    p = _run(["pretrain", "corpus.txt", "--out", "pre", "--arch", "tiny", "--epochs", "2",
              "--set", "pretrain.bs=16", "--set", "pretrain.seq_len=16", "--set", "pretrain.valid_pct=0.2",
              ], work)
    _ok(p)
    lm = um.load_lm(work / "pre" / "model")
    assert lm.arch["emb_sz"] == 16 and lm.history is not None and len(lm.history) >= 1
    assert lm.metrics["perplexity"] > 1 and lm.metrics["tokens_seen"] > 0
    assert (work / "pre" / "checkpoint" / "state.json").exists()


# ---------------------------------------------------------------------- help and errors
@pytest.mark.parametrize("cmd, expected", [
    ("lm", ["--config", "--set", "--train", "--arch", "--lm-epochs", "--out", "--seed", "--debug"]),
    ("train", ["--config", "--set", "--resume", "--epochs", "--lm", "--label-col", "--label-cols", "--device"]),
    ("evaluate", ["MODEL", "FILE", "--out", "--per-label", "--threshold", "--text-col"]),
    ("predict", ["--format", "submission", "--id-col", "--at-least-one", "--threshold", "--out"]),
    ("cv", ["--folds", "--test", "--id-col", "--config", "--set"]),
    ("pretrain", ["CORPUS", "--out", "--arch", "--epochs", "--max-tokens", "--backwards", "--resume", "--set"]),
])
def test_help_is_complete(cmd, expected, capsys):
    with pytest.raises(SystemExit) as e:
        main([cmd, "--help"])
    assert e.value.code == 0
    out = capsys.readouterr().out
    for word in expected:
        assert word in out, (cmd, word)


def test_top_level_help_lists_every_command(capsys):
    with pytest.raises(SystemExit):
        main(["--help"])
    out = capsys.readouterr().out
    for cmd in ("lm", "train", "evaluate", "predict", "cv", "pretrain"):
        assert cmd in out


def _resolve(argv: list[str]) -> dict:
    return _config_from_args(_parse_args(build_parser(), argv))


def test_every_config_key_is_a_generated_flag_and_means_what_the_file_means(tmp_path):
    f = tmp_path / "c.toml"
    f.write_text('[classifier]\nepochs = [1, 2]\nlrs = [1e-3, 2e-3]\nunfreeze = [1, 0]\n'
                 '[lm]\narch = {emb_sz = 16, n_hid = 32, n_layers = 1}\npretrained = false\nlr = 0.01\n'
                 '[data]\nlabel_cols = ["a", "b"]\n', encoding="utf-8")
    from_file = _resolve(["train", "--config", str(f)])
    from_flags = _resolve(["train", "--classifier.epochs=[1, 2]", "--classifier.lrs", "[1e-3, 2e-3]",
                           "--classifier.unfreeze=[1,0]", "--lm.arch={emb_sz: 16, n_hid: 32, n_layers: 1}",
                           "--lm.pretrained=false", "--lm.lr=0.01", "--data.label_cols=[a, b]"])
    assert from_flags == from_file
    assert from_flags["classifier"].epochs == (1, 2) and from_flags["lm"].pretrained is False
    # precedence: the file < --set < named flags < --SECTION.KEY flags
    c = _resolve(["train", "--config", str(f), "--set", "lm.lr=0.02", "--lm.lr=0.03"])
    assert c["lm"].lr == 0.03
    c = _resolve(["train", "--config", str(f), "--epochs", "3,3", "--classifier.epochs=[4,4]"])
    assert c["classifier"].epochs == (4, 4)
    c = _resolve(["pretrain", "corpus.txt", "--out", "p", "--pretrain.n_samples=64", "--pretrain.softmax", "full"])
    assert c["pretrain"].n_samples == 64 and c["pretrain"].softmax == "full"


@pytest.mark.parametrize("argv, msg", [
    (["train", "--classifier.epochs=abc"], r"config error: classifier\.epochs = 'abc': expected a list of int or None, got str"),
    (["train", "--lm.epochs=true"], r"config error: lm\.epochs = 'true': expected int"),
    (["train", "--classifier.epocs=[1]"], r"unknown config key classifier\.epocs \(did you mean classifier\.epochs\?\)"),
    (["train", "--clasifier.epochs=[1]"], r"unknown config section 'clasifier' .*\(did you mean classifier\?\)"),
    (["train", "--classifier.threshold_strategy=best"], r"\[classifier\] threshold_strategy must be 'per_label', 'global' or 'none'"),
    (["pretrain", "c.txt", "--out", "p", "--lm.lr=1"], r"this command uses \[pretrain\] options only; drop \[lm\]"),
])
def test_bad_generated_flag_fails_with_one_line_naming_the_key(capsys, argv, msg):
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert re.search(msg, err), err


def test_scoring_commands_take_no_config_flags(capsys):
    with pytest.raises(SystemExit) as e:
        main(["predict", "m", "x.csv", "--out", "o.csv", "--lm.lr=3"])
    assert e.value.code == 2 and "unrecognized arguments: --lm.lr=3" in capsys.readouterr().err


@pytest.mark.parametrize("argv, present, absent", [
    (["train", "--help-config"], ["--classifier.epochs", "--lm.lr", "--data.label_cols", "--run.folds"], []),
    (["pretrain", "--help-config"], ["--pretrain.n_samples", "--pretrain.softmax"], ["--classifier.epochs"]),
])
def test_help_config_lists_the_generated_flags(capsys, argv, present, absent):
    with pytest.raises(SystemExit) as e:
        main(argv)
    out = capsys.readouterr().out
    assert e.value.code == 0
    assert all(f in out for f in present) and not any(f in out for f in absent)


def test_precedence_defaults_file_set_flags(tmp_path):
    f = tmp_path / "c.toml"
    f.write_text('[data]\nlabel_cols = ["a", "b"]\nseed = 1\n[lm]\narch = "small"\nlr = 0.01\n'
                 '[classifier]\nunfreeze = [1, 2, 3, 0]\nlrs = [2e-2, 1e-2, 5e-3, 1e-3]\nepochs = [2, 2, 2, 2]\nwd = 0.2\n[run]\ntrain = "x.csv"\n')
    c = _resolve(["train", "--config", str(f)])
    assert c["classifier"].epochs == (2, 2, 2, 2) and c["classifier"].wd == 0.2  # file over defaults
    assert c["lm"].arch == "small" and c["classifier"].bs == ClassifierConfig().bs  # untouched -> default
    assert c["data"].label_cols == ["a", "b"] and c["data"].seed == 1
    c = _resolve(["train", "--config", str(f), "--set", "classifier.epochs=[3,3,3,3]", "--set", "lm.lr=1e-3"])
    assert c["classifier"].epochs == (3, 3, 3, 3) and c["lm"].lr == 1e-3  # --set over file
    c = _resolve(["train", "--config", str(f), "--set", "classifier.epochs=[3,3,3,3]", "--epochs", "4,4,4,4",
                  "--arch", "tiny", "--set", "lm.arch=\"cpu\"", "--seed", "9", "--label-col", "tags"])
    assert c["classifier"].epochs == (4, 4, 4, 4) and c["lm"].arch == "tiny"  # flags over --set
    assert c["data"].seed == c["lm"].seed == c["classifier"].seed == 9 and c["run"].seed == 9
    assert c["data"].label_col == "tags" and c["data"].label_cols is None  # one label format replaces the other
    assert c["run"].train == str((Path.cwd() / "x.csv").resolve())
    c = _resolve(["train", "--quiet", "--device", "cpu"])
    assert c["lm"].quiet and c["classifier"].quiet and c["lm"].device == c["classifier"].device == "cpu"
    assert c["data"] == DataConfig() and isinstance(c["run"], RunConfig)


def test_resolved_config_round_trips_through_toml(tmp_path):
    c = resolve_config({"lm": {"arch": {"emb_sz": 16, "n_hid": 32, "n_layers": 1}, "pretrained": "some/dir"},
                        "data": {"label_cols": ["x y", "z"], "text_col": 'quo"te\\'},
                        "classifier": {"pos_weight": [1.0, 2.5], "save_best_by": "f1_macro"}})
    f = tmp_path / "r.toml"
    f.write_text(to_toml(config_sections(c)), encoding="utf-8")
    back = resolve_config(load_config_file(f))
    assert {k: v for k, v in back.items() if k != "run"} == {k: v for k, v in c.items() if k != "run"}
    assert back["classifier"].fp16 is None and back["lm"].frozen_epochs is None


@pytest.mark.parametrize("value, expected", [
    ("3", 3), ("1e-3", 1e-3), ("[1, 1]", [1, 1]), ("true", True), ('"x y"', "x y"), ("body", "body"),
    ("none", None), ("{emb_sz=16}", {"emb_sz": 16}), ("[a,b]", "[a,b]"),
])
def test_set_values_are_toml_or_plain_strings(value, expected):
    assert parse_set(f"sec.key={value}") == ("sec", "key", expected)


CONFIG_ERRORS = [
    ("[classifier]\nepoch = [1]\n", [], r"unknown config key classifier\.epoch \(did you mean classifier\.epochs\?\)"),
    ("[clasifier]\nepochs = [1]\n", [], r"unknown section \[clasifier\] \(did you mean \[classifier\]\?\)"),
    ('[classifier]\nepochs = "abc"\n', [], r"classifier\.epochs = 'abc': expected a list of int or None, got str"),
    ("[lm]\nmoms = [0.8, 0.7]\n", [], r"lm\.moms = \[0\.8, 0\.7\]: expected a list of 3 float"),
    ("[data]\nvalid_pct = 2\n", [], r"\[data\] valid_pct must be a float in \(0, 1\), got 2"),
    ("[lm]\narch = \"huge\"\n", [], r"\[lm\] Unknown arch preset 'huge'"),
    ("[classifier]\nthreshold_strategy = \"best\"\n", [], r"\[classifier\] threshold_strategy must be 'per_label', 'global' or 'none'"),
    ("[run]\nthresholds = \"global\"\n", [], r"run\.thresholds is now classifier\.threshold_strategy"),
    ("[run]\nfolds = 1\n", [], r"\[run\] folds must be an int >= 2"),
    ('[run]\nlm = "x"\n', [], r"run\.lm is now run\.encoder"),
    ("epochs = 3\n", [], r"key 'epochs' is outside a section"),
    ("[data\n", [], r"is not valid TOML"),
    ("[data]\ntext_col = 'text'\n", ["--set", "classifier.lrs=[0, 1, 1, 1]"], r"\[classifier\] lrs entries must be a number > 0"),
    ("", ["--set", "classifier.epochs"], r"--set 'classifier\.epochs': expected SECTION\.KEY=VALUE"),
    ("", ["--set", "epochs=1"], r"the key needs its section, e\.g\. classifier\.epochs"),
    ("", ["--set", "model.epochs=1"], r"unknown config section 'model' in model\.epochs"),
    ("", ["--set", "lm.frozen_epochs=-1"], r"\[lm\] frozen_epochs must be a number >= 0"),
    ("[data]\nlabel_col = 'tags'\n", [], r"no training file: set run\.train"),
    ("[run]\ntrain = 'x.csv'\n", [], r"no labels configured: set data\.label_col"),
]


@pytest.mark.parametrize("toml, extra, msg", CONFIG_ERRORS)
def test_bad_config_fails_with_one_line_naming_the_key(tmp_path, capsys, toml, extra, msg):
    f = tmp_path / "bad.toml"
    f.write_text(toml, encoding="utf-8")
    assert main(["train", "--config", str(f), *extra]) == 2
    err = capsys.readouterr().err
    assert err.startswith("ulmfit-ml train: config error: ")
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert re.search(msg, err), err


@pytest.mark.parametrize("name, content, msg", [
    ("c.yaml", "data: {}", "YAML configs are not supported"),
    ("c.ini", "", r"must end in \.toml"),
    ("c.json", "[1]", "must hold a JSON object"),
    ("c.json", "{bad", "is not valid JSON"),
])
def test_config_file_formats(tmp_path, name, content, msg):
    f = tmp_path / name
    f.write_text(content, encoding="utf-8")
    with pytest.raises(ConfigError, match=msg):
        load_config_file(f)


def test_missing_config_file(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_config_file(tmp_path / "nope.toml")


def test_json_config_is_accepted(tmp_path):
    f = tmp_path / "c.json"
    f.write_text(json.dumps({"command": "train", "classifier": {"epochs": [1, 2], "unfreeze": [1, 0],
                                                                "lrs": [0.1, 0.1]}}), encoding="utf-8")
    assert resolve_config(load_config_file(f))["classifier"].epochs == (1, 2)


def test_debug_shows_the_traceback(tmp_path):
    f = tmp_path / "bad.toml"
    f.write_text("[classifier]\nepoch = 1\n", encoding="utf-8")
    with pytest.raises(ConfigError, match="classifier.epoch"):
        main(["train", "--config", str(f), "--debug"])


def test_runtime_errors_exit_1_with_one_line(tmp_path, capsys):
    f = tmp_path / "c.toml"
    f.write_text(f'[data]\nlabel_col = "tags"\n[run]\ntrain = "{(tmp_path / "missing.csv").as_posix()}"\n'
                 f'out = "{(tmp_path / "run").as_posix()}"\n', encoding="utf-8")
    assert main(["train", "--config", str(f)]) == 1
    err = capsys.readouterr().err
    assert "No such data file" in err and len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert json.loads((tmp_path / "run" / "status.json").read_text())["status"] == "failed"
    assert main(["train", "--config", str(f)]) == 1  # the run directory now exists
    assert "already exists" in capsys.readouterr().err


def test_predict_usage_errors(train_run, work, capsys):
    assert main(["predict", str(train_run), str(work / "test.csv"), "--out", str(work / "s.csv"),
                 "--format", "submission"]) == 2
    assert "--format submission needs --id-col" in capsys.readouterr().err
    assert main(["predict", str(train_run), str(work / "test.csv"), "--out", str(work / "s.xlsx")]) == 2
    assert "Cannot tell the format" in capsys.readouterr().err
    assert main(["predict", str(work), str(work / "test.csv"), "--out", str(work / "s.csv")]) == 1
    assert "No saved model at" in capsys.readouterr().err
    assert main(["predict", str(train_run), str(work / "test.csv"), "--out", str(work / "s2.csv"),
                 "--format", "submission", "--id-col", "nope"]) == 1
    assert "Missing column(s) ['nope']" in capsys.readouterr().err


def test_resume_needs_a_run_directory(tmp_path, capsys):
    assert main(["train", "--resume", str(tmp_path)]) == 1
    assert "is not a run directory" in capsys.readouterr().err


def test_lm_refuses_run_lm(tmp_path, capsys):
    assert main(["lm", "--train", "x.csv", "--set", "run.encoder=some/dir"]) == 2
    assert "ulmfit-ml lm` fine-tunes a new LM" in capsys.readouterr().err


def test_pretrain_only_takes_lm_options(tmp_path, capsys):
    assert main(["pretrain", "corpus.txt", "--out", str(tmp_path / "p"), "--set", "classifier.epochs=[1]"]) == 2
    assert "pretrain only uses [pretrain] options" in capsys.readouterr().err


def test_lm_refuses_random_encoder(capsys):
    assert main(["lm", "--train", "x.csv", "--set", "run.encoder=random"]) == 2
    assert "needs encoder = \"lm\"" in capsys.readouterr().err


def test_data_loading_extra_texts_and_unlabelled_lm_corpus(tmp_path):
    from ulmfit_ml.experiments.pipeline import load_run_data as _load_data

    make_frame(40, seed=1).to_csv(tmp_path / "train.csv", index=False)
    pd.DataFrame({"text": ["extra one", "", "extra two"]}).to_parquet(tmp_path / "extra.parquet")
    pd.DataFrame({"body": ["only texts here", "no labels at all", "a third"]}).to_csv(tmp_path / "raw.tsv", sep="\t",
                                                                                         index=False)
    c = resolve_config({"data": {"label_cols": list(CUES)},
                        "run": {"train": str(tmp_path / "train.csv"), "extra_texts": [str(tmp_path / "extra.parquet")]}})
    data = _load_data(c)
    assert len(data.texts) == 40 and data.extra_texts == ["extra one", "extra two"]
    assert data.labels == list(CUES)
    # `ulmfit-ml lm` on a file without labels: texts only
    c = resolve_config({"data": {"text_col": "body"}, "run": {"train": str(tmp_path / "raw.tsv")}})
    lm_data = _load_data(c, labelled=False)
    assert lm_data.texts == ["only texts here", "no labels at all", "a third"]
    c = resolve_config({"data": {"text_col": "missing"}, "run": {"train": str(tmp_path / "raw.tsv")}})
    with pytest.raises(ValueError, match=r"Missing column\(s\) \['missing'\]"):
        _load_data(c, labelled=False)


# ---------------------------------------------------------------------- remaining error branches
def test_to_toml_rejects_what_toml_cannot_hold():
    with pytest.raises(ValueError, match="TOML cannot hold None inside a list"):
        to_toml({"a": {"x": [1, None]}})
    with pytest.raises(TypeError, match="Cannot write object"):
        to_toml({"a": {"x": object()}})


def test_section_must_be_a_table(tmp_path):
    f = tmp_path / "c.json"
    f.write_text('{"data": 3}', encoding="utf-8")
    with pytest.raises(ConfigError, match=r"\[data\] must be a section"):
        load_config_file(f)


def test_run_dir_must_be_a_directory(tmp_path):
    from ulmfit_ml.experiments.runs import RunDir

    (tmp_path / "file").write_text("x")
    with pytest.raises(FileExistsError, match="is not a directory"):
        RunDir.create(tmp_path / "file")


def _fake_run(tmp_path: Path, command: str, train: Path) -> Path:
    run = tmp_path / f"run_{command}"
    run.mkdir()
    c = resolve_config({"data": {"label_col": "tags"}, "run": {"train": str(train), "out": str(run)}})
    (run / "config.json").write_text(json.dumps({"command": command, **config_sections(c)}), encoding="utf-8")
    return run


def test_resume_checks_command_and_data(tmp_path, capsys):
    train = tmp_path / "train.csv"
    make_frame(30, seed=1).to_csv(train, index=False)
    assert main(["train", "--resume", str(_fake_run(tmp_path, "lm", train))]) == 2
    assert "is a `lm` run directory" in capsys.readouterr().err
    run = _fake_run(tmp_path, "train", train)
    (run / "data.json").write_text('{"sha256": "0000"}', encoding="utf-8")
    assert main(["train", "--resume", str(run), "--quiet"]) == 1
    assert "The training data changed since" in capsys.readouterr().err
    assert json.loads((run / "status.json").read_text())["status"] == "failed"


def test_train_with_a_missing_lm(tmp_path, capsys):
    train = tmp_path / "train.csv"
    make_frame(30, seed=1).to_csv(train, index=False)
    assert main(["train", "--train", str(train), "--label-col", "tags", "--lm", str(tmp_path / "nope"),
                 "--out", str(tmp_path / "r"), "--quiet"]) == 1
    assert "No language model at" in capsys.readouterr().err


def test_predict_input_and_model_errors(train_run, work, tmp_path, capsys):
    bad = tmp_path / "nums.jsonl"
    pd.DataFrame({"id": [1, 2], "text": [5, 6]}).to_json(bad, orient="records", lines=True)
    assert main(["predict", str(train_run), str(bad), "--out", str(tmp_path / "o.csv"), "--format", "submission",
                 "--id-col", "id"]) == 1
    assert "non-string value(s)" in capsys.readouterr().err
    assert main(["predict", str(train_run), str(work / "test.csv"), "--out", str(tmp_path / "o.csv"),
                 "--bs", "0"]) == 2
    assert "--bs must be >= 1" in capsys.readouterr().err
    # two "fold" models with different labels cannot be averaged
    shutil.copytree(train_run / "model", tmp_path / "cv" / "folds" / "fold0" / "model")
    other = um.load_classifier(train_run / "model")
    other.labels = ["x", "y", "z"]  # saved, not hand-edited: a hand-edited labels.json fails its checksum
    other.save(tmp_path / "cv" / "folds" / "fold1" / "model")
    assert main(["predict", str(tmp_path / "cv"), str(work / "test.csv"), "--out", str(tmp_path / "o.csv"),
                 "--format", "submission", "--id-col", "id"]) == 1
    assert "different labels" in capsys.readouterr().err


def test_pretrain_refuses_existing_out(tmp_path, capsys):
    (tmp_path / "p" / "model").mkdir(parents=True)
    assert main(["pretrain", "corpus.txt", "--out", str(tmp_path / "p")]) == 1
    assert "already exists" in capsys.readouterr().err


# ---------------------------------------------------------------------- the CLI is the library
def _lib_cfgs(work: Path, *overrides: tuple[str, str, object]) -> dict:
    """exp.toml resolved as the CLI resolves it (paths from the run's directory), plus overrides."""
    return resolve_config(load_config_file(work / "exp.toml"),
                          [("run", "train", str(work / "train.csv")), ("lm", "quiet", True), ("classifier", "quiet", True),
                           ("lm", "device", "cpu"), ("classifier", "device", "cpu"), ("run", "plots", False), *overrides])


def _state(lm) -> dict:
    return {k: v.numpy() for k, v in lm.state_dict.items()}


def test_lm_command_equals_run_lm(work, lm_run):
    run = um.run_lm(_lib_cfgs(work, ("run", "out", str(work / "runs" / "lm_lib"))))
    cli, lib = um.load_lm(lm_run / "lm"), um.load_lm(run.lm_dir)
    assert cli.vocab == lib.vocab
    for k, v in _state(cli).items():
        np.testing.assert_allclose(v, _state(lib)[k], atol=1e-6, err_msg=k)


def test_cv_command_equals_run_cv(work, lm_run):
    r = work / "runs" / "cv"
    if not (r / "oof.csv").exists():
        test_cv(work, lm_run)
    _, res = um.run_cv(_lib_cfgs(work, ("run", "out", str(work / "runs" / "cv_lib")), ("run", "encoder", str(lm_run)),
                                 ("run", "folds", 2), ("run", "id_col", "id")))
    cli = pd.read_csv(r / "oof.csv")
    lib = pd.read_csv(work / "runs" / "cv_lib" / "oof.csv")
    pd.testing.assert_frame_equal(cli, lib, atol=1e-6)
    # micro AUC ranks all probabilities together: ties at float32 precision move it by ~1e-5
    assert res.oof_metrics == pytest.approx(json.loads((r / "metrics.json").read_text())["oof"], nan_ok=True, abs=1e-4)


def test_pretrain_command_equals_pretrain_lm(work):
    if not (work / "pre" / "model").exists():
        test_pretrain(work)
    cfg = um.PretrainConfig(arch="tiny", epochs=2, bs=16, seq_len=16, valid_pct=0.2, quiet=True, device="cpu")
    lib = um.pretrain_lm(work / "corpus.txt", config=cfg, out_dir=work / "pre_lib")
    cli = um.load_lm(work / "pre" / "model")
    assert cli.vocab == lib.vocab
    for k, v in _state(cli).items():
        np.testing.assert_allclose(v, _state(lib)[k], atol=1e-6, err_msg=k)
