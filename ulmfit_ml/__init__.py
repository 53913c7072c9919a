"""ulmfit_ml: multi-label text classification with fastai's ULMFiT recipe.

Pipeline: ``MultiLabelData.from_df`` -> ``finetune_lm`` -> ``train_classifier`` ->
``MultiLabelClassifier`` (predict, predict_proba, evaluate, tune_thresholds, save) ->
``load_classifier``. Category columns (``category_cols=``) give a ``MultiCategoryClassifier``,
numeric targets (``target_cols=``) a ``TextRegressor``; ``tokenizer="sentencepiece"`` trains
subword tokens. The folders and their import direction: README "Architecture".

The names below load on first use (PEP 562 ``__getattr__``): ``import ulmfit_ml`` and the
``ulmfit-ml`` command start without importing torch or fastai, so that Ctrl-C during start-up is
one line, not an import traceback. The first name used imports every module, as an eager
``from .x import y`` list would.
"""
import importlib
import sys
import types
from typing import Any

from .utils.version import __version__

#: public name -> the module of ulmfit_ml that defines it
_EXPORTS: dict[str, str] = {
    "TfidfBaseline": "models.baseline",
    "ClassifierTrainer": "training.trainer",
    "train_classifier": "training.trainer",
    "self_train": "training.selftrain",
    "with_soft_labels": "data.soft",
    "ARCH_PRESETS": "utils.arch",
    "ClassifierConfig": "utils.config",
    "DataConfig": "utils.config",
    "LMConfig": "utils.config",
    "PretrainConfig": "utils.config",
    "RunConfig": "utils.config",
    "TokenCorpus": "data.corpus",
    "tokenize_corpus": "data.corpus",
    "CVResult": "experiments.cv",
    "cross_validate": "experiments.cv",
    "kfold_assignments": "experiments.cv",
    "MultiLabelData": "data.core",
    "PredictDaskResult": "inference.distributed",
    "predict_dask": "inference.distributed",
    "read_predictions": "inference.distributed",
    "MultiLabelEnsemble": "models.ensemble",
    "load_predictor": "models.ensemble",
    "explain": "inference.explain",
    "explain_html": "inference.explain",
    "LMTrainer": "training.finetune",
    "finetune_lm": "training.finetune",
    "MultiCategoryClassifier": "models.heads",
    "TextRegressor": "models.heads",
    "read_table": "utils.io",
    "write_table": "utils.io",
    "LanguageModel": "models.lm",
    "load_lm": "models.lm",
    "LRFindResult": "experiments.lr_find",
    "lr_find": "experiments.lr_find",
    "MultiLabelReport": "evaluation.metrics",
    "multilabel_report": "evaluation.metrics",
    "MultiLabelClassifier": "models.classifier",
    "TextModel": "models.classifier",
    "load_classifier": "models.registry",
    "EvaluateFileResult": "experiments.evaluate",
    "evaluate_file": "experiments.evaluate",
    "run_cv": "experiments.pipeline",
    "run_lm": "experiments.pipeline",
    "run_train": "experiments.pipeline",
    "plot_f1_vs_threshold": "experiments.plots",
    "plot_label_frequency": "experiments.plots",
    "plot_labels_per_text": "experiments.plots",
    "plot_loss": "experiments.plots",
    "plot_lr_find": "experiments.plots",
    "plot_per_label_f1": "experiments.plots",
    "PredictFileResult": "inference.predict",
    "load_fastai_learner": "inference.predict",
    "predict_file": "inference.predict",
    "pretrain_lm": "training.pretrain",
    "RunDir": "experiments.runs",
    "CategoryReport": "tasks.multicategory",
    "CategorySpec": "tasks.multicategory",
    "RegressionReport": "tasks.regression",
    "RegressionSpec": "tasks.regression",
    "apply_thresholds": "evaluation.thresholds",
    "tune_thresholds": "evaluation.thresholds",
    "TextTokenizer": "data.tokens",
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
    "self_train",
    "with_soft_labels",
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
    try:  # a folder (um.models, `from ulmfit_ml import data`), imported alone
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
