"""``ulmfit-ml evaluate``: a saved model's (or a cv run's averaged fold models') full report on a
labelled file, as ``model.report(df)`` computes it, optionally written as JSON and a detail table."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from ..evaluation.metrics import MultiLabelReport
from ..models.classifier import TextModel
from ..models.ensemble import MultiLabelEnsemble, load_predictor, resolve_model_dirs
from ..tasks.multicategory import CategoryReport
from ..tasks.regression import RegressionReport
from ..utils.io import check_output_file, read_table, table_format, write_table
from ..utils.persist import write_json_atomic
from ..utils.validation import text_cells

__all__ = ["EvaluateFileResult", "evaluate_file", "report_table"]


@dataclass
class EvaluateFileResult:
    """What :func:`evaluate_file` computed: the report, the rows scored and the models averaged."""

    report: MultiLabelReport | CategoryReport | RegressionReport
    n_rows: int
    n_models: int


def evaluate_file(model: str | Path, input_path: str | Path, *, text_col: str | None = None,
                  threshold: float | None = None, out: str | Path | None = None, per_label: str | Path | None = None,
                  overwrite: bool = False, device: str | None = "cpu", sep: str | None = None,
                  header: bool = True) -> EvaluateFileResult:
    """``ulmfit-ml evaluate``: the full report of a saved model (or a cv run's averaged fold
    models) on a labelled file, as ``model.report(df)`` computes it; optionally written as
    JSON (``out``) and a per-label table (``per_label``), both under the output-file policy."""
    model_dirs = resolve_model_dirs(model)
    for path in (out, per_label):  # the output policy, before any work
        if path:
            check_output_file(path, overwrite=overwrite, inputs=[input_path, *model_dirs])
    if out and per_label and Path(out).resolve() == Path(per_label).resolve():
        raise ValueError("out and per_label name the same file: give two different files.")
    if per_label:
        table_format(per_label)
    predictor = load_predictor(model, device=device)
    df = read_table(input_path, sep=sep, header=header)
    if isinstance(predictor, TextModel) and not predictor.thresholded:
        if threshold is not None:
            raise ValueError(f"threshold is for multi-label models; this is a {predictor.task} model.")
        report = predictor.report(df, text_col=text_col)
    else:
        report = predictor.report(df, threshold=threshold, text_col=text_col)
    col = predictor.meta.get("text_col", "text") if text_col is None else text_col
    n_rows = int((~text_cells(df[col], col=col)[1]).sum())  # the rows report() scored
    n_models = len(predictor.models) if isinstance(predictor, MultiLabelEnsemble) else 1
    if out:
        write_json_atomic(out, {"model": str(model), "input": str(input_path), "n_rows": n_rows,
                                "n_models": n_models, **report.to_dict()})
    if per_label:
        write_table(report_table(report).reset_index(), per_label)
    return EvaluateFileResult(report, n_rows, n_models)


def report_table(report: MultiLabelReport | CategoryReport | RegressionReport) -> pd.DataFrame:
    """The detail table of a report: per label, per (column, category), or per target."""
    if isinstance(report, CategoryReport):
        return report.per_category
    if isinstance(report, RegressionReport):
        return report.per_target
    return report.per_label
