"""ulmfit_ml: multi-label text classification with fastai's ULMFiT recipe.

Pipeline: ``MultiLabelData.from_df`` -> ``finetune_lm`` -> ``train_classifier`` ->
``MultiLabelClassifier`` (predict, predict_proba, evaluate, tune_thresholds, save) ->
``load_classifier``. Category columns (``category_cols=``) give a ``MultiCategoryClassifier``,
numeric targets (``target_cols=``) a ``TextRegressor``; ``tokenizer="sentencepiece"`` trains
subword tokens. The layers and their import direction: README "Architecture".
"""
from .baseline import TfidfBaseline
from .classifier import ClassifierTrainer, train_classifier
from .config import ARCH_PRESETS, ClassifierConfig, DataConfig, LMConfig, PretrainConfig, RunConfig
from .corpus import TokenCorpus, tokenize_corpus
from .cv import CVResult, cross_validate, kfold_assignments
from .data import MultiLabelData
from .distributed import PredictDaskResult, predict_dask, read_predictions
from .ensemble import MultiLabelEnsemble, load_predictor
from .explain import explain, explain_html
from .finetune import LMTrainer, finetune_lm
from .heads import MultiCategoryClassifier, TextRegressor
from .io import read_table, write_table
from .lm import LanguageModel, load_lm
from .lr_find import LRFindResult, lr_find
from .metrics import MultiLabelReport, multilabel_report
from .model import MultiLabelClassifier, TextModel, load_classifier
from .pipeline import EvaluateFileResult, evaluate_file, run_cv, run_lm, run_train
from .plots import (plot_f1_vs_threshold, plot_label_frequency, plot_labels_per_text, plot_loss, plot_lr_find,
                    plot_per_label_f1)
from .predict import PredictFileResult, load_fastai_learner, predict_file
from .pretrain import pretrain_lm
from .runs import RunDir
from .targets import CategoryReport, CategorySpec, RegressionReport, RegressionSpec
from .thresholds import apply_thresholds, tune_thresholds
from .tokens import TextTokenizer
from .version import __version__

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
