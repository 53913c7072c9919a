"""The experiment runs behind the CLI, as library functions: ``run_lm``, ``run_train``,
``run_cv`` (run directories with config, data fingerprint, environment, history, metrics,
plots, models, log and status) and ``evaluate_file``. Each CLI subcommand parses its options and
calls one of these (or :func:`~ulmfit_ml.inference.predict.predict_file` /
:func:`~ulmfit_ml.training.pretrain.pretrain_lm`), so the shell and Python give the same results.
"""
from __future__ import annotations

import dataclasses
import time
from contextlib import contextmanager
from functools import partial
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import pandas as pd

from ..training.selftrain import SelfTrainPlan, self_train, self_train_plan, unlabelled_texts
from ..training.trainer import train_classifier
from ..training.checkpoint import checkpoint_info
from ..utils.config import SELF_TRAIN_TEACHERS, DataConfig, RunConfig
from ..utils.config_files import ConfigError, check_run_keys, config_sections
from .cv import CVResult, cross_validate
from ..data.core import MultiLabelData
from ..data.soft import check_soft_label_targets, takes_soft_labels
from ..utils.distrib import barrier, broadcast_object, init_distributed, is_distributed, world_size
from ..training.finetune import finetune_lm
from ..utils.io import read_table
from ..models.lm import LanguageModel, load_lm, resolve_encoder
from ..models.classifier import MultiLabelClassifier, TextModel
from ..utils.persist import remove_owned_dir
from .runs import RunDir
from ..utils.runtime import resolve_device
from ..tasks.registry import spec_for_config
from ..utils.validation import check_columns, check_texts, extra_text_list

__all__ = ["run_lm", "run_train", "run_cv", "run_inputs", "default_out", "load_run_data", "read_run_table",
           "require_train", "require_labels", "saved_encoder"]


def require_labels(data_cfg: DataConfig) -> None:
    if all(getattr(data_cfg, k) is None for k in ("label_cols", "label_col", "category_cols", "target_cols")):
        raise ConfigError("no labels configured: set data.label_col = \"tags\" (one delimited column) or "
                          "data.label_cols = [\"a\", \"b\"] (0/1 columns), data.category_cols (columns of categories) "
                          "or data.target_cols (numbers), or pass --label-col/--label-cols/--category-cols/--target-cols.")


def require_train(run_cfg: RunConfig) -> str:
    if not run_cfg.train:
        raise ConfigError("no training file: set run.train = \"data.csv\" in the config or pass --train FILE.")
    return run_cfg.train


def run_inputs(cfgs: dict[str, Any], *, config_path: str | Path | None = None) -> list[str]:
    """Every file or directory a run reads: a run directory that is or holds one is never replaced."""
    rc = cfgs["run"]
    out = [rc.train, rc.test, saved_encoder(rc), *rc.extra_texts, config_path]
    pretrained = getattr(cfgs["lm"], "pretrained", None)
    if isinstance(pretrained, (str, Path)) and Path(pretrained).expanduser().exists():  # a path, not a shipped name
        out.append(str(Path(pretrained).expanduser()))
    return [str(x) for x in out if x]


def default_out(command: str) -> str:
    """``runs/<command>-<date>-<time>``: the run directory when ``[run] out`` is not set."""
    return str(Path("runs") / f"{command}-{time.strftime('%Y%m%d-%H%M%S')}")


def read_run_table(run_cfg: RunConfig, path: str | Path) -> pd.DataFrame:
    """A file of the run (train, test, extra texts): :func:`~ulmfit_ml.utils.io.read_table` with the
    run's ``sep`` / ``header`` (CLI ``--sep`` / ``--no-header``)."""
    return read_table(path, sep=run_cfg.sep, header=run_cfg.header)


def _read_extra_texts(run_cfg: RunConfig, data_cfg: DataConfig) -> list[str]:
    texts: list[str] = []
    for f in run_cfg.extra_texts:  # each file under the text column's policy (non-strings raise, empties warn)
        df = read_run_table(run_cfg, f)
        check_columns(df, [data_cfg.text_col])
        texts += extra_text_list(df[data_cfg.text_col], empty_text=data_cfg.empty_text,
                                 col=f"{data_cfg.text_col} (in {Path(f).name})")
    return texts


def load_run_data(cfgs: dict[str, Any], *, labelled: bool = True) -> MultiLabelData:
    """The training file as a MultiLabelData (``labelled=False``: texts only, for the LM)."""
    df = read_run_table(cfgs["run"], require_train(cfgs["run"]))
    extra = _read_extra_texts(cfgs["run"], cfgs["data"])
    if labelled:
        return MultiLabelData.from_df(df, config=cfgs["data"], extra_texts=extra)
    return MultiLabelData.texts_only(df, config=cfgs["data"], extra_texts=extra)  # LM fine-tuning reads no labels


def saved_encoder(run_cfg: RunConfig) -> str | None:
    """The saved language model ``[run] encoder`` names, or ``None`` for "lm" / "random"."""
    return None if run_cfg.encoder in ("lm", "random") else run_cfg.encoder


def _language_model(cfgs: dict[str, Any], data: MultiLabelData, run: RunDir, log: Any) -> LanguageModel | None:
    """Reuse [run] lm, or the run directory's lm/ (resume), or fine-tune one and save it to lm/."""
    if cfgs["run"].encoder == "random":
        log.info("encoder = random: no language model (ablation)")
        return None
    if saved_encoder(cfgs["run"]):
        lm = resolve_encoder(saved_encoder(cfgs["run"]))
        log.info(f"language model: reusing {saved_encoder(cfgs['run'])} ({lm!r})")
        return lm
    if broadcast_object((run.lm_dir / "lm.json").is_file()):  # rank 0 decides (other ranks read the same file)
        lm = load_lm(run.lm_dir)
        log.info(f"language model: reusing {run.lm_dir} from the interrupted run")
        return lm
    log.info(f"fine-tuning the language model on {len(data.texts) + len(data.extra_texts)} texts")
    lm = finetune_lm(data, config=cfgs["lm"])
    if run.writes:
        lm.save(run.lm_dir, overwrite=True)
    if len(lm.history):
        run.write_table("lm_history.csv", lm.history)
    log.info(f"language model saved to {run.lm_dir}: {lm.metrics}")
    return lm


def _history(lm: LanguageModel | None, clf: MultiLabelClassifier) -> pd.DataFrame:
    parts = []
    if lm is not None and lm.history is not None and len(lm.history):
        parts.append(lm.history.assign(model="lm"))
    if clf.history is not None and len(clf.history):
        parts.append(clf.history.assign(model="classifier"))
    if not parts:
        return pd.DataFrame()
    h = pd.concat(parts, ignore_index=True)
    return h[["model"] + [c for c in h.columns if c != "model"]]


def _device_of(cfgs: dict[str, Any]) -> Any:
    return resolve_device(cfgs["classifier"].device)


# ---------------------------------------------------------------------- the run lifecycle
def _create_run(cfgs: dict[str, Any], command: str, out: str, inputs: Sequence[str]) -> RunDir:
    """A new run directory (``[run] overwrite`` may replace an earlier run) with the run's config."""
    run = RunDir.create(out, overwrite=cfgs["run"].overwrite, inputs=inputs)
    run.write_config(config_sections(cfgs), command=command)
    return run


@contextmanager
def _running(run: RunDir, log: Any, *, on_interrupt: Callable[[], None] | None = None,
             word: str = "failed") -> Iterator[None]:
    """The one status lifecycle of a run: ``running`` while the body runs, then ``done``. An error
    sets ``failed`` with its message (logged to the file only: main() prints the one line);
    Ctrl-C calls ``on_interrupt`` (which records where the run stopped), or without one sets
    ``interrupted`` like an error. The exception always goes on."""
    run.set_status("running")
    try:
        yield
    except BaseException as e:
        if isinstance(e, KeyboardInterrupt) and on_interrupt is not None:
            on_interrupt()
        else:
            run.set_status("interrupted" if isinstance(e, KeyboardInterrupt) else "failed", error=str(e))
            log.error(f"{word}: {type(e).__name__}: {e}", extra={"file_only": True})
        raise
    run.set_status("done")


def _load_and_record_data(cfgs: dict[str, Any], run: RunDir, device: Any, *, labelled: bool = True,
                          resume: bool = False) -> MultiLabelData:
    """The run's data, with its fingerprint and the environment written to the run directory
    (``resume``: the data must be the interrupted run's)."""
    data = load_run_data(cfgs, labelled=labelled)
    if resume and (run.path / "data.json").is_file():
        old = run.read_json("data.json").get("sha256")
        if old != data.fingerprint()["sha256"]:
            raise ValueError(f"The training data changed since {run.path} started (data.json hash differs); "
                             "resume needs the same file.")
    run.write_fingerprint(data)
    run.write_environment(device)
    return data


def _checkpoint_place(run: RunDir, none: str) -> str:
    """Where the classifier checkpoint of ``run`` stands (``none``: the words for no checkpoint)."""
    ck = checkpoint_info(run.checkpoint_dir)  # the JSON alone (the trainer loads the weights); None without one
    return f"stage {ck['stage'] + 1}, epoch {ck['epoch']}" if ck else none


# ---------------------------------------------------------------------- the runs
def run_lm(cfgs: dict[str, Any], *, inputs: Sequence[str] = ()) -> RunDir:
    """``ulmfit-ml lm``: fine-tune a language model into a run directory (``lm/``).

    Args:
        cfgs: the resolved sections (:func:`~ulmfit_ml.utils.config_files.resolve_config`).
        inputs: every file the run reads (:func:`run_inputs`); never replaced.
    """
    require_train(cfgs["run"])
    check_run_keys("lm", cfgs["run"])
    if saved_encoder(cfgs["run"]):
        raise ConfigError("run.encoder is a saved LM: `ulmfit-ml lm` fine-tunes a new LM; start it from saved weights with "
                          "lm.pretrained = \"DIR\" instead.")
    if cfgs["run"].encoder == "random":
        raise ConfigError("run.encoder = \"random\" means no language model: `ulmfit-ml lm` needs encoder = \"lm\".")
    device = _device_of(cfgs)
    init_distributed()  # under torchrun: rank 0 writes the run directory, every rank trains
    run = _create_run(cfgs, "lm", broadcast_object(cfgs["run"].out or default_out("lm")), inputs)  # rank 0's clock
    log = run.logger(quiet=cfgs["lm"].quiet)
    with _running(run, log, word="stopped"):
        labelled = cfgs["data"].label_cols is not None or cfgs["data"].label_col is not None
        data = _load_and_record_data(cfgs, run, device, labelled=labelled)
        lm = _language_model(cfgs, data, run, log)
        run.write_json("metrics.json", {"lm": lm.metrics})
        if len(lm.history):
            run.write_table("history.csv", lm.history.assign(model="lm"))
        if cfgs["run"].plots:
            run.save_plots(history=lm.history, log=log)
    return run


def _open_train_run(cfgs: dict[str, Any], resume: bool, inputs: Sequence[str]) -> RunDir:
    """The interrupted run's directory (``resume``), or a new one for ``cfgs``."""
    if resume:
        return RunDir.open(cfgs["run"].out)
    require_train(cfgs["run"])
    require_labels(cfgs["data"])
    check_run_keys("train", cfgs["run"])
    _check_self_train(cfgs)
    if cfgs["run"].out is None:
        out = broadcast_object(str(Path(default_out("train")).resolve()))  # one directory (rank 0's clock)
        cfgs["run"] = dataclasses.replace(cfgs["run"], out=out)
    return _create_run(cfgs, "train", cfgs["run"].out, inputs)


def _check_self_train(cfgs: dict[str, Any]) -> None:
    """``run.self_train`` needs unlabelled texts, one process and multi-label targets (checked before any work)."""
    rc, dc = cfgs["run"], cfgs["data"]
    if rc.self_train not in SELF_TRAIN_TEACHERS:  # "none"; "auto" decides once the data is loaded (_fit_classifier)
        return
    if not rc.extra_texts:
        raise ConfigError(f"run.self_train = {rc.self_train!r} trains on unlabelled texts: list their files in "
                          "run.extra_texts (or pass --extra-texts FILE[,FILE...]).")
    try:  # self_train's own rule, on the configured targets before any work
        check_soft_label_targets(spec_for_config(dc), what=f"run.self_train = {rc.self_train!r} needs")
    except ValueError as e:
        raise ConfigError(str(e)) from e
    if is_distributed():
        raise ConfigError(f"run.self_train does not train distributed (WORLD_SIZE={world_size()}): run it as one process.")


def _nothing_to_resume(run: RunDir, log: Any) -> bool:
    """A finished run is left as it is; otherwise say where the run resumes from."""
    status = run.read_json("status.json").get("status") if (run.path / "status.json").is_file() else None
    if broadcast_object(status == "done" and (run.model_dir / "config.json").is_file()):
        log.info(f"{run.path} is already complete (status done); nothing to resume.")
        return True
    log.info(f"resuming {run.path} from {_checkpoint_place(run, 'the start (no classifier checkpoint yet)')}")
    barrier()  # every rank has read status.json and the checkpoint before rank 0 writes
    return False


def _fit_classifier(cfgs: dict[str, Any], data: MultiLabelData, lm: LanguageModel | None, run: RunDir, log: Any,
                    *, resume: bool) -> tuple[TextModel, SelfTrainPlan]:
    """The classifier alone or a self-trained student, as ``run.self_train`` comes to on this data
    (:func:`~ulmfit_ml.training.selftrain.self_train_plan`; the same data gives the same plan on resume)."""
    plan = self_train_plan(cfgs["run"].self_train, n_train=int((~data.is_valid).sum()),
                           n_unlabelled=len(unlabelled_texts(data)), multilabel=takes_soft_labels(data.spec),
                           distributed=is_distributed())
    log.info("training the classifier" + (f" (self-training, teacher {plan.teacher!r})" if plan.teacher else "")
             + f": {plan.reason}")
    fit = (train_classifier if plan.teacher is None else
           partial(self_train, teacher=plan.teacher, max_texts=plan.max_texts))
    clf = fit(data, encoder=lm, config=cfgs["classifier"], arch=cfgs["lm"].arch,
              checkpoint_dir=run.checkpoint_dir, resume=resume)
    return clf, plan


def _write_train_results(cfgs: dict[str, Any], run: RunDir, log: Any, data: MultiLabelData,
                         lm: LanguageModel | None, clf: TextModel, inputs: Sequence[str], plan: SelfTrainPlan) -> Any:
    """History, metrics, the model, plots; the checkpoints removed unless kept. Returns the report."""
    report = clf.report()
    history = _history(None if saved_encoder(cfgs["run"]) else lm, clf)  # a reused LM was trained elsewhere
    if len(history):
        run.write_table("history.csv", history)
    thresholds = dict(zip(clf.labels, clf.thresholds)) if isinstance(clf, MultiLabelClassifier) else None
    run.write_json("metrics.json", {"valid": report.to_dict(), "task": clf.task, "thresholds": thresholds,
                                    "lm": lm.metrics if lm is not None else None,
                                    "self_train": {"teacher": plan.teacher, "max_texts": plan.max_texts, "reason": plan.reason},
                                    "train_seconds": clf.meta.get("train_seconds")})
    if run.writes:  # rank 0 saves the model
        clf.save(run.model_dir, overwrite=True, inputs=inputs)
    if cfgs["run"].plots:
        if isinstance(clf, MultiLabelClassifier):
            run.save_plots(history=history, report=report, valid=clf.validation_predictions, data=data, log=log)
        else:  # the label plots are multi-label ones
            run.save_plots(history=history, log=log)
    if not cfgs["run"].keep_checkpoints and run.writes:
        try:
            remove_owned_dir(run.checkpoint_dir, inputs=inputs)
        except FileExistsError as e:  # someone else's files in there: keep them, the run is done
            log.warning(f"checkpoints kept: {e}")
    return report


def run_train(cfgs: dict[str, Any], *, resume: bool = False, inputs: Sequence[str] = ()) -> RunDir:
    """``ulmfit-ml train``: LM + classifier into a run directory, resumable.

    Args:
        cfgs: the resolved sections; ``[run] out`` is the run directory (default
            :func:`default_out`). With ``resume``, it is the interrupted run's directory and
            ``cfgs`` its own saved config.
        resume: continue the run from its last completed epoch (a finished run is left as is).
        inputs: every file the run reads (:func:`run_inputs`); never replaced.
    """
    init_distributed()  # under torchrun: rank 0 writes the run directory, every rank trains
    run = _open_train_run(cfgs, resume, inputs)
    log = run.logger(quiet=cfgs["classifier"].quiet)
    device = _device_of(cfgs)
    if resume and _nothing_to_resume(run, log):
        return run

    def on_interrupt() -> None:
        where = _checkpoint_place(run, "no completed classifier epoch yet")
        run.set_status("interrupted", checkpoint=where)
        log.info(f"interrupted; last checkpoint: {where}. Continue with: ulmfit-ml train --resume {run.path}")

    with _running(run, log, on_interrupt=on_interrupt):
        data = _load_and_record_data(cfgs, run, device, resume=resume)
        log.info(f"data: {data!r}")
        lm = _language_model(cfgs, data, run, log)
        clf, plan = _fit_classifier(cfgs, data, lm, run, log, resume=resume)
        report = _write_train_results(cfgs, run, log, data, lm, clf, inputs, plan)
    log.info("done: " + " ".join(f"{k}={report.summary[k]:.4f}" for k in clf.headline_metrics))
    return run


def _write_cv_results(run: RunDir, rc: RunConfig, res: CVResult, df: pd.DataFrame, lm: LanguageModel | None,
                      inputs: Sequence[str]) -> None:
    """Out-of-fold probabilities (with the ids), fold metrics, summary metrics, the fold models if kept."""
    oof = res.oof_frame()
    if rc.id_col is not None:
        oof.insert(1, rc.id_col, df.loc[res.index, rc.id_col].to_numpy())
    run.write_table("oof.csv", oof)
    run.write_table("cv_metrics.csv", res.fold_metrics)
    run.write_json("metrics.json", {"n_folds": rc.folds, "mean": res.mean, "std": res.std, "oof": res.oof_metrics,
                                    "thresholds": dict(zip(res.labels, res.thresholds)),
                                    "lm": lm.metrics if lm is not None else None})
    if rc.save_fold_models:
        for k, m in enumerate(res.models):
            m.save(run.path / "folds" / f"fold{k}" / "model", overwrite=True, inputs=inputs)


def _write_cv_test_predictions(run: RunDir, rc: RunConfig, text_col: str, res: CVResult) -> None:
    """``[run] test``'s probabilities averaged over the fold models, one column per label."""
    test = read_run_table(rc, rc.test)
    check_columns(test, [text_col])
    probs = res.predict_proba(check_texts(test[text_col], col=text_col, where=Path(rc.test).name))
    pred = pd.DataFrame({rc.id_col: test[rc.id_col].to_numpy()} if rc.id_col and rc.id_col in test
                        else {"row": range(len(test))})
    for j, lab in enumerate(res.labels):
        pred[lab] = probs[:, j]
    run.write_table("test_predictions.csv", pred)


def run_cv(cfgs: dict[str, Any], *, inputs: Sequence[str] = ()) -> tuple[RunDir, CVResult]:
    """``ulmfit-ml cv``: k-fold CV with one shared LM, OOF probabilities, mean/std metrics."""
    require_train(cfgs["run"])
    require_labels(cfgs["data"])
    check_run_keys("cv", cfgs["run"])
    rc = cfgs["run"]
    if rc.out is None:
        cfgs["run"] = rc = dataclasses.replace(rc, out=str(Path(default_out("cv")).resolve()))
    device = _device_of(cfgs)
    run = _create_run(cfgs, "cv", rc.out, inputs)
    log = run.logger(quiet=cfgs["classifier"].quiet)

    def on_interrupt() -> None:
        run.set_status("interrupted")
        log.info("interrupted (cv runs are not resumable: start it again)")

    def on_fold(k: int, clf: Any, summary: dict[str, float]) -> None:
        log.info(f"fold {k + 1}/{rc.folds}: f1_micro={summary['f1_micro']:.4f} f1_macro={summary['f1_macro']:.4f} "
                 f"roc_auc_macro={summary['roc_auc_macro']:.4f}")

    with _running(run, log, on_interrupt=on_interrupt):
        df = read_run_table(rc, rc.train)
        if rc.id_col is not None:
            check_columns(df, [rc.id_col])
        data = _load_and_record_data(cfgs, run, device)
        lm = _language_model(cfgs, data, run, log)
        res = cross_validate(data, n_folds=rc.folds, encoder=lm, finetune=False, config=cfgs["classifier"],
                             arch=cfgs["lm"].arch, keep_models=bool(rc.test) or rc.save_fold_models, on_fold=on_fold)
        _write_cv_results(run, rc, res, df, lm, inputs)
        if rc.test:
            _write_cv_test_predictions(run, rc, cfgs["data"].text_col, res)
        if rc.plots:
            run.save_plots(valid=(res.y, res.oof), log=log)
    for k in ("f1_micro", "f1_macro", "roc_auc_macro"):
        log.info(f"{k}: {res.mean[k]:.4f} +- {res.std[k]:.4f} (OOF {res.oof_metrics[k]:.4f})")
    return run, res
