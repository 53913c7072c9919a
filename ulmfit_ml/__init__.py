"""ulmfit_ml: multi-label text classification with fastai's ULMFiT recipe.

Pipeline: ``MultiLabelData.from_df`` -> ``finetune_lm`` -> ``train_classifier`` ->
``MultiLabelClassifier`` (predict, predict_proba, evaluate, tune_thresholds, save) ->
``load_classifier``.
"""
__version__ = "0.1.0"

from .baseline import TfidfBaseline
from .classifier import MultiLabelClassifier, train_classifier
from .config import ARCH_PRESETS, ClassifierConfig, DataConfig, LMConfig, PretrainConfig
from .cv import CVResult, cross_validate, kfold_assignments
from .data import MultiLabelData
from .ensemble import MultiLabelEnsemble
from .explain import explain, explain_html
from .io import read_table, write_table
from .corpus import TokenCorpus, tokenize_corpus
from .lm import LanguageModel, finetune_lm, load_lm
from .pretrain import pretrain_lm
from .metrics import MultiLabelReport, multilabel_report
from .persist import load_classifier
from .plots import (LRFindResult, lr_find, plot_f1_vs_threshold, plot_label_frequency, plot_labels_per_text,
                    plot_loss, plot_lr_find, plot_per_label_f1)
from .predict import PredictFileResult, load_fastai_learner, predict_file
from .runs import RunDir
from .thresholds import apply_thresholds, tune_thresholds

__all__ = [
    "__version__",
    "cross_validate",
    "CVResult",
    "kfold_assignments",
    "read_table",
    "write_table",
    "RunDir",
    "MultiLabelData",
    "DataConfig",
    "LMConfig",
    "ClassifierConfig",
    "ARCH_PRESETS",
    "LanguageModel",
    "finetune_lm",
    "pretrain_lm",
    "PretrainConfig",
    "TokenCorpus",
    "tokenize_corpus",
    "load_lm",
    "MultiLabelClassifier",
    "train_classifier",
    "load_classifier",
    "predict_file",
    "PredictFileResult",
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
