"""The README's main job (python -m ulmfit_ml.demo) and its shared config file."""
import dataclasses

import numpy as np

import ulmfit_ml as um
from ulmfit_ml.cli import load_config_file
from ulmfit_ml.utils.config import ClassifierConfig, DataConfig, LMConfig, config_from_dict
from ulmfit_ml.experiments.demo import demo_config_path, load_demo, main

EKMAN = ["anger", "disgust", "fear", "joy", "neutral", "sadness", "surprise"]


def test_demo_data_is_real_goemotions_with_both_schemes():
    df = load_demo()
    assert len(df) == 4000 and list(df.columns) == ["id", "text", "emotions", "ekman"]
    assert df["text"].is_unique
    ek = um.MultiLabelData.from_df(df, label_col="ekman", labels=EKMAN)
    full = um.MultiLabelData.from_df(df, label_col="emotions")
    assert ek.labels == EKMAN and ek.y.sum(0).min() > 50  # every Ekman label has examples
    assert len(full.labels) == 28 and (ek.y.sum(1) >= 1).all()
    # a comment labelled joy in the 28-label scheme's 'joy' is joy in Ekman's too
    joy28 = full.y[:, full.labels.index("joy")] == 1
    assert (ek.y[joy28, EKMAN.index("joy")] == 1).all()


def test_demo_config_maps_onto_the_config_dataclasses():
    sections = load_config_file(demo_config_path())
    assert config_from_dict(DataConfig, sections["data"]).label_col == "ekman"
    lm = config_from_dict(LMConfig, sections["lm"])
    assert lm.pretrained == "en-small" and lm.arch == "cpu"  # the shipped LM, the defaults
    # the library's classifier defaults but the epochs, which the 5-minute budget of the README's command sets
    clf = config_from_dict(ClassifierConfig, sections["classifier"])
    assert clf.epochs == (12,) and dataclasses.replace(clf, epochs=None) == ClassifierConfig()


def test_demo_runs_end_to_end_on_a_slice(tmp_path, capsys):
    out = tmp_path / "demo_model"
    metrics = main(["--rows", "400", "--arch", "tiny", "--lm-epochs", "1", "--quiet", "--out", str(out)])
    assert {"f1_macro", "roc_auc_macro"} <= set(metrics)
    printed = capsys.readouterr().out
    assert "Test metrics" in printed and "TF-IDF" in printed and "trivial" in printed and "->" in printed
    assert "ULMFiT + TF-IDF blend, tuned" in printed
    clf = um.load_classifier(out)
    assert clf.labels == EKMAN
    texts = ["Thank you so much!", "I hate this"]
    probs = clf.predict_proba(texts)
    assert probs.shape == (2, 7) and np.isfinite(probs).all()
    assert all(set(p) <= set(EKMAN) for p in clf.predict(texts))


def test_the_readme_command_name_runs_the_demo():
    """`python -m ulmfit_ml.demo` (the README's main command) reaches the job in experiments/."""
    import subprocess
    import sys

    r = subprocess.run([sys.executable, "-m", "ulmfit_ml.demo", "--help"], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0 and "python -m ulmfit_ml.demo" in r.stdout, r.stderr[-2000:]
