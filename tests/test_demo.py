"""The README's main job (python -m ulmfit_ml.demo) and its shared config file."""
import ulmfit_ml as um
from ulmfit_ml.cli import load_config_file
from ulmfit_ml.config import ClassifierConfig, DataConfig, LMConfig, config_from_dict
from ulmfit_ml.demo import demo_config_path, load_demo, main


def test_demo_data_both_label_formats_agree():
    df = load_demo()
    labels = ["billing", "shipping", "account", "bug", "praise", "refund"]
    a = um.MultiLabelData.from_df(df, label_col="labels", labels=labels)
    b = um.MultiLabelData.from_df(df, label_cols=labels)
    assert (a.y == b.y).all() and len(df) == 3000


def test_demo_config_maps_onto_the_config_dataclasses():
    sections = load_config_file(demo_config_path())
    assert config_from_dict(DataConfig, sections["data"]).label_col == "labels"
    assert config_from_dict(LMConfig, sections["lm"]).arch == "small"
    assert len(config_from_dict(ClassifierConfig, sections["classifier"]).epochs) == 4


def test_demo_runs_end_to_end_on_a_slice(tmp_path, capsys):
    out = tmp_path / "demo_model"
    metrics = main(["--rows", "400", "--arch", "tiny", "--lm-epochs", "1", "--quiet", "--out", str(out)])
    assert {"f1_macro", "roc_auc_macro"} <= set(metrics)
    printed = capsys.readouterr().out
    assert "Validation metrics" in printed and "TF-IDF" in printed and "->" in printed
    assert (out / "model.safetensors").exists() and um.load_classifier(out).predict(["refund please"])[0] is not None
