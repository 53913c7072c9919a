"""ulmfit_ml: multi-label text classification with fastai's ULMFiT recipe.

Pipeline: ``MultiLabelData.from_df`` -> ``finetune_lm`` -> ``train_classifier`` ->
``MultiLabelClassifier`` (predict, predict_proba, evaluate, tune_thresholds, save) ->
``load_classifier``.
"""
__version__ = "0.1.0"

from .classifier import MultiLabelClassifier, train_classifier
from .config import ARCH_PRESETS, ClassifierConfig, DataConfig, LMConfig
from .data import MultiLabelData
from .lm import LanguageModel, finetune_lm, load_lm, pretrain_lm
from .metrics import MultiLabelReport, multilabel_report
from .persist import load_classifier
from .thresholds import apply_thresholds, tune_thresholds

__all__ = [
    "__version__",
    "MultiLabelData",
    "DataConfig",
    "LMConfig",
    "ClassifierConfig",
    "ARCH_PRESETS",
    "LanguageModel",
    "finetune_lm",
    "pretrain_lm",
    "load_lm",
    "MultiLabelClassifier",
    "train_classifier",
    "load_classifier",
    "MultiLabelReport",
    "multilabel_report",
    "tune_thresholds",
    "apply_thresholds",
]
