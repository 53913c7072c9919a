"""Rules written once (issue 23): each test pins one owner that every path goes through."""
from __future__ import annotations

import pytest

from ulmfit_ml.cli.parser import build_parser
from ulmfit_ml.experiments.runs import RunDir
from ulmfit_ml.utils.config import OUTPUTS
from ulmfit_ml.utils.persist import RUN_FILES, check_replaceable


def test_a_run_directory_file_outside_the_layout_is_refused_when_written(tmp_path):
    run = RunDir.create(tmp_path / "run")
    run.write_json("metrics.json", {"ok": 1})
    with pytest.raises(ValueError, match=r"'surprise.json' is not a file of the run-directory layout"):
        run.write_json("surprise.json", {})
    assert not (run.path / "surprise.json").exists()
    check_replaceable(run.path)  # every file a writer made is one overwrite knows


def test_the_layout_list_names_what_the_runs_write():
    for name in ("config.toml", "metrics.json", "history.csv", "status.json", "oof.csv", "run.log"):
        assert name in RUN_FILES


def test_prediction_outputs_are_one_list_for_the_cli_and_the_library():
    sub = build_parser()._subparsers._group_actions[0].choices["predict"]
    fmt = next(a for a in sub._actions if "--format" in a.option_strings)
    assert tuple(fmt.choices) == OUTPUTS


def test_both_trainers_are_run_by_train():
    import ulmfit_ml as um

    assert callable(um.LMTrainer.train) and callable(um.ClassifierTrainer.train) and not hasattr(um.LMTrainer, "fit")


def test_from_df_merges_keywords_into_a_given_config_and_checks_them():
    import pandas as pd

    import ulmfit_ml as um

    df = pd.DataFrame({"text": [f"t {i}" for i in range(20)], "a": [i % 2 for i in range(20)]})
    cfg = um.DataConfig(label_cols=["a"], valid_pct=0.3, seed=1)
    d = um.MultiLabelData.from_df(df, config=cfg, valid_pct=0.5)  # a keyword is not ignored
    assert d.config.valid_pct == 0.5 and d.config.seed == 1 and int(d.is_valid.sum()) == 10
    assert um.MultiLabelData.from_df(df, config=cfg).config.valid_pct == 0.3
    with pytest.raises(TypeError, match="valid_pct"):
        um.MultiLabelData.from_df(df, config=cfg, valid_pct="half")


def test_an_unknown_key_gets_one_message_on_every_path():
    """Config file / flag, keyword option and dict all name the key, its close match and the
    accepted keys in the same words; only the exception type is the caller's."""
    from ulmfit_ml.utils.config import ClassifierConfig, config_from_dict, merge_config
    from ulmfit_ml.utils.config_files import ConfigError, resolve_config

    want = r"^unknown config key classifier\.epoch \(did you mean classifier\.epochs\?\); \[classifier\] accepts .*epochs"
    with pytest.raises(ConfigError, match=want):
        resolve_config({"classifier": {"epoch": [1]}})
    with pytest.raises(ConfigError, match=want):
        resolve_config(flags=["--classifier.epoch=[1]"])
    with pytest.raises(TypeError, match=want):
        merge_config(ClassifierConfig, None, {"epoch": (1,)})
    with pytest.raises(ValueError, match=want):
        config_from_dict(ClassifierConfig, {"epoch": (1,)})


def test_the_renamed_threshold_strategy_key_keeps_working_with_a_warning_on_every_path():
    """``thresholds`` (a strategy) is now ``threshold_strategy``: ``clf.thresholds`` is the array and
    ``threshold=`` a value. Old config files, run directories and keyword options still work."""
    from ulmfit_ml.utils.config import ClassifierConfig, config_from_dict, merge_config
    from ulmfit_ml.utils.config_files import ConfigError, resolve_config

    warn = r"classifier\.thresholds is now classifier\.threshold_strategy"
    with pytest.warns(FutureWarning, match=warn):
        assert resolve_config({"classifier": {"thresholds": "global"}})["classifier"].threshold_strategy == "global"
    with pytest.warns(FutureWarning, match=warn):
        assert resolve_config(flags=["--classifier.thresholds=none"])["classifier"].threshold_strategy == "none"
    with pytest.warns(FutureWarning, match=warn):
        assert resolve_config(overrides=[("classifier", "thresholds", "none")])["classifier"].threshold_strategy == "none"
    with pytest.warns(FutureWarning, match=warn):
        assert merge_config(ClassifierConfig, None, {"thresholds": "global"}).threshold_strategy == "global"
    with pytest.warns(FutureWarning, match=warn):
        assert config_from_dict(ClassifierConfig, {"thresholds": "none"}).threshold_strategy == "none"
    both = r"classifier\.thresholds and classifier\.threshold_strategy are one option \(renamed\): give threshold_strategy only"
    with pytest.warns(FutureWarning), pytest.raises(ConfigError, match=both):
        resolve_config({"classifier": {"thresholds": "none", "threshold_strategy": "global"}})
    with pytest.warns(FutureWarning), pytest.raises(TypeError, match=both):
        merge_config(ClassifierConfig, None, {"thresholds": "none", "threshold_strategy": "global"})


def test_the_version_is_written_once(capsys):
    """pyproject.toml reads the version from ulmfit_ml/utils/version.py: the installed package,
    ``um.__version__``, ``ulmfit-ml --version`` and saved models' metadata agree."""
    import importlib.metadata
    import tomllib
    from pathlib import Path

    import ulmfit_ml as um
    from ulmfit_ml.utils.persist import versions

    project = tomllib.loads((Path(__file__).resolve().parents[1] / "pyproject.toml").read_text())["project"]
    assert "version" not in project and "version" in project["dynamic"]
    assert importlib.metadata.version("ulmfit_ml") == um.__version__ == versions()["ulmfit_ml"]
    with pytest.raises(SystemExit):
        build_parser().parse_args(["--version"])
    assert capsys.readouterr().out.strip() == f"ulmfit-ml {um.__version__}"
