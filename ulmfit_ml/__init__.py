"""ulmfit_ml: multi-label text classification with fastai's ULMFiT recipe.

Pipeline: ``MultiLabelData.from_df`` -> ``finetune_lm`` -> ``train_classifier`` ->
``MultiLabelClassifier`` (predict, predict_proba, evaluate, tune_thresholds, save) ->
``load_classifier``. Category columns (``category_cols=``) give a ``MultiCategoryClassifier``,
numeric targets (``target_cols=``) a ``TextRegressor``; ``tokenizer="sentencepiece"`` trains
subword tokens. The layers and their import direction: README "Architecture".

The names below load on first use (PEP 562 ``__getattr__``): ``import ulmfit_ml`` and the
``ulmfit-ml`` command start without importing torch or fastai, so that Ctrl-C during start-up is
one line, not an import traceback. The first name used imports every module, as an eager
``from .x import y`` list would (``heads`` registers its model kinds with ``load_classifier``).
"""
import importlib
import sys
import types
from typing import Any

from .version import __version__

#: public name -> the module of ulmfit_ml that defines it
_EXPORTS: dict[str, str] = {
    "TfidfBaseline": "baseline",
    "ClassifierTrainer": "classifier",
    "train_classifier": "classifier",
    "ARCH_PRESETS": "arch",
    "ClassifierConfig": "config",
    "DataConfig": "config",
    "LMConfig": "config",
    "PretrainConfig": "config",
    "RunConfig": "config",
    "TokenCorpus": "corpus",
    "tokenize_corpus": "corpus",
    "CVResult": "cv",
    "cross_validate": "cv",
    "kfold_assignments": "cv",
    "MultiLabelData": "data",
    "PredictDaskResult": "distributed",
    "predict_dask": "distributed",
    "read_predictions": "distributed",
    "MultiLabelEnsemble": "ensemble",
    "load_predictor": "ensemble",
    "explain": "explain",
    "explain_html": "explain",
    "LMTrainer": "finetune",
    "finetune_lm": "finetune",
    "MultiCategoryClassifier": "heads",
    "TextRegressor": "heads",
    "read_table": "io",
    "write_table": "io",
    "LanguageModel": "lm",
    "load_lm": "lm",
    "LRFindResult": "lr_find",
    "lr_find": "lr_find",
    "MultiLabelReport": "metrics",
    "multilabel_report": "metrics",
    "MultiLabelClassifier": "model",
    "TextModel": "model",
    "load_classifier": "model",
    "EvaluateFileResult": "pipeline",
    "evaluate_file": "pipeline",
    "run_cv": "pipeline",
    "run_lm": "pipeline",
    "run_train": "pipeline",
    "plot_f1_vs_threshold": "plots",
    "plot_label_frequency": "plots",
    "plot_labels_per_text": "plots",
    "plot_loss": "plots",
    "plot_lr_find": "plots",
    "plot_per_label_f1": "plots",
    "PredictFileResult": "predict",
    "load_fastai_learner": "predict",
    "predict_file": "predict",
    "pretrain_lm": "pretrain",
    "RunDir": "runs",
    "CategoryReport": "targets",
    "CategorySpec": "targets",
    "RegressionReport": "targets",
    "RegressionSpec": "targets",
    "apply_thresholds": "thresholds",
    "tune_thresholds": "thresholds",
    "TextTokenizer": "tokens",
}

__all__ = [
    "MultiCategoryClassifier", "TextRegressor", "TextModel", "CategoryReport", "CategorySpec",
    "RegressionReport", "RegressionSpec", "TextTokenizer",
    "__version__",
    "cross_validate",
    "CVResult",
    "kfold_assignments",
    "read_table",
    "write_table",
    "RunDir",
    "run_lm",
    "run_train",
    "run_cv",
    "evaluate_file",
    "EvaluateFileResult",
    "MultiLabelData",
    "DataConfig",
    "LMConfig",
    "ClassifierConfig",
    "RunConfig",
    "ARCH_PRESETS",
    "LanguageModel",
    "LMTrainer",
    "finetune_lm",
    "pretrain_lm",
    "PretrainConfig",
    "TokenCorpus",
    "tokenize_corpus",
    "load_lm",
    "MultiLabelClassifier",
    "ClassifierTrainer",
    "train_classifier",
    "load_classifier",
    "load_predictor",
    "predict_file",
    "PredictFileResult",
    "predict_dask",
    "read_predictions",
    "PredictDaskResult",
    "load_fastai_learner",
    "MultiLabelReport",
    "multilabel_report",
    "tune_thresholds",
    "apply_thresholds",
    "TfidfBaseline",
    "MultiLabelEnsemble",
    "explain",
    "explain_html",
    "lr_find",
    "LRFindResult",
    "plot_loss",
    "plot_per_label_f1",
    "plot_f1_vs_threshold",
    "plot_label_frequency",
    "plot_labels_per_text",
    "plot_lr_find",
]


def _load_all() -> None:
    for name, mod in _EXPORTS.items():
        globals()[name] = getattr(importlib.import_module(f".{mod}", __name__), name)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        _load_all()
        return globals()[name]
    if name.startswith("__"):
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    try:  # a submodule (um.validation, `from . import plots`), imported alone
        return importlib.import_module(f".{name}", __name__)
    except ModuleNotFoundError as e:
        if e.name != f"{__name__}.{name}":
            raise
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}") from None


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))


class _Package(types.ModuleType):
    """Importing submodule ``lr_find`` / ``explain`` sets the package attribute of that name: keep
    it for the function of the same name (as the eager ``from .lr_find import lr_find`` did)."""

    def __setattr__(self, name: str, value: Any) -> None:
        if not (name in _EXPORTS and isinstance(value, types.ModuleType)):
            super().__setattr__(name, value)


sys.modules[__name__].__class__ = _Package
