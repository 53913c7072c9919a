"""The ``ulmfit-ml`` sub-commands: each parses its options, calls one library function, prints."""
from __future__ import annotations

import argparse
import signal
from pathlib import Path
from typing import Any

from ..utils.config import SECTIONS
from ..utils.config_files import ConfigError, load_config_file, parse_set, resolve_config
from ..utils.distrib import is_distributed, is_main, on_main, world_size
from ..inference.distributed import predict_dask
from ..experiments.evaluate import evaluate_file, report_table
from ..experiments.pipeline import run_cv, run_inputs, run_lm, run_train
from ..utils.io import table_format
from ..inference.predict import predict_file
from ..training.pretrain import pretrain_lm
from ..experiments.runs import RunDir
from .parser import FLAG_KEYS, config_from_args, flag_overrides

__all__ = ["COMMANDS", "cmd_lm", "cmd_train", "cmd_evaluate", "cmd_predict", "cmd_cv", "cmd_pretrain"]


def _install_sigterm() -> None:
    """``kill`` (SIGTERM) interrupts like Ctrl-C, so the run is marked interrupted and the
    last checkpoint is reported."""
    def handler(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt(f"signal {signum}")
    try:
        signal.signal(signal.SIGTERM, handler)
    except ValueError:  # not in the main thread (e.g. called from a test runner thread)
        pass


def _single_process(command: str) -> None:
    """``cv`` does not train distributed (yet): under a launcher every process would run the
    whole job into the same directory."""
    if is_distributed():
        raise ConfigError(f"`ulmfit-ml {command}` does not train distributed (WORLD_SIZE={world_size()}): "
                          "run it as one process; `lm`, `train` and `pretrain` run under torchrun / accelerate launch.")


def cmd_lm(args: argparse.Namespace) -> int:
    """``ulmfit-ml lm`` -> :func:`~ulmfit_ml.experiments.pipeline.run_lm`."""
    cfgs = config_from_args(args)
    run = run_lm(cfgs, inputs=run_inputs(cfgs, config_path=args.config))
    print(f"language model saved to {run.lm_dir}")
    return 0


def cmd_train(args: argparse.Namespace) -> int:
    """``ulmfit-ml train`` -> :func:`~ulmfit_ml.experiments.pipeline.run_train` (``--resume``: the run's own config)."""
    if args.resume:
        saved = RunDir.open(args.resume).read_json("config.json")
        if saved.get("command") != "train":
            raise ConfigError(f"{args.resume} is a `{saved.get('command')}` run directory; --resume continues `train` runs.")
        changed = [f"--{d.replace('_', '-')}" for d in FLAG_KEYS if d not in ("quiet", "device")
                   and getattr(args, d, None) not in (None, False)]
        extra = (["--config"] if args.config else []) + (["--set"] if args.set else []) + changed + args.config_flags
        if extra:
            raise ConfigError(f"--resume uses the run's own config.json; drop {', '.join(extra)} "
                              "(only --quiet and --device may change).")
        cfgs = resolve_config({k: v for k, v in saved.items() if k in SECTIONS},
                              flag_overrides(args) + [("run", "out", str(Path(args.resume).resolve()))])
    else:
        cfgs = config_from_args(args)
    _install_sigterm()
    run = run_train(cfgs, resume=bool(args.resume), inputs=run_inputs(cfgs, config_path=args.config))
    print(f"run directory: {run.path}")
    return 0


def cmd_evaluate(args: argparse.Namespace) -> int:
    """``ulmfit-ml evaluate`` -> :func:`~ulmfit_ml.experiments.evaluate.evaluate_file`."""
    if args.out and args.per_label and Path(args.out).resolve() == Path(args.per_label).resolve():
        raise ConfigError("--out and --per-label name the same file: give two different files.")
    if args.per_label:
        try:
            table_format(args.per_label)
        except ValueError as e:
            raise ConfigError(f"--per-label: {e}") from e
    res = evaluate_file(args.model, args.input, text_col=args.text_col, threshold=args.threshold, out=args.out,
                        per_label=args.per_label, overwrite=args.overwrite, device=args.device, sep=args.sep,
                        header=not args.no_header)
    table = report_table(res.report)  # labels, (column, category) pairs or targets
    what = {"category": "categories", "target": "targets"}.get(str(table.index.names[-1]), "labels")
    print(f"{res.n_rows} rows, {len(table)} {what}" + (f", {res.n_models} models averaged" if res.n_models > 1 else ""))
    for k, v in res.report.summary.items():
        print(f"{k:>24s}  {v:.4f}")
    return 0


def cmd_predict(args: argparse.Namespace) -> int:
    """``ulmfit-ml predict`` -> :func:`~ulmfit_ml.inference.predict.predict_file` (every input and output format)."""
    if args.format == "submission" and not args.id_col:
        raise ConfigError("--format submission needs --id-col (the id column of the input, e.g. --id-col id).")
    if args.bs < 1:
        raise ConfigError(f"--bs must be >= 1, got {args.bs}.")
    if args.dask_workers is not None or args.scheduler:
        return _predict_on_dask(args)
    if args.blocksize is not None:
        raise ConfigError("--blocksize applies to --dask-workers/--scheduler runs; predict_file reads in chunks.")
    try:
        table_format(args.out)  # unknown output extension: a usage error, before any work
    except ValueError as e:
        raise ConfigError(f"--out: {e}") from e
    res = predict_file(args.model, args.input, args.out, text_col=args.text_col, id_col=args.id_col,
                       output=args.format, resume=not args.no_resume, threshold=args.threshold,
                       at_least_one=args.at_least_one, bs=args.bs, overwrite=args.overwrite, device=args.device,
                       sep=args.sep, header=not args.no_header, int8=args.int8)
    print(f"{res.n_rows} rows -> {res.output_path}")
    return 0


def _predict_on_dask(args: argparse.Namespace) -> int:
    """``ulmfit-ml predict --dask-workers N | --scheduler ADDRESS`` -> :func:`~ulmfit_ml.inference.distributed.predict_dask`."""
    if args.dask_workers is not None and args.dask_workers < 1:
        raise ConfigError(f"--dask-workers must be >= 1, got {args.dask_workers}.")
    if args.no_resume:
        raise ConfigError("--no-resume applies to predict_file outputs; a Dask run retries failed partitions instead.")
    res = predict_dask(args.model, args.input, args.out, text_col=args.text_col, id_col=args.id_col,
                       output=args.format, threshold=args.threshold, at_least_one=args.at_least_one, sep=args.sep,
                       header=not args.no_header, bs=args.bs, client=args.scheduler, n_workers=args.dask_workers,
                       overwrite=args.overwrite, device=args.device, int8=args.int8,
                       **({"blocksize": args.blocksize} if args.blocksize is not None else {}))
    print(f"{res.n_rows} rows -> {res.output_dir} ({len(res.parts)} parts)")
    return 0


def cmd_cv(args: argparse.Namespace) -> int:
    """``ulmfit-ml cv`` -> :func:`~ulmfit_ml.experiments.pipeline.run_cv`."""
    _single_process("cv")
    cfgs = config_from_args(args)
    _install_sigterm()
    run, _ = run_cv(cfgs, inputs=run_inputs(cfgs, config_path=args.config))
    print(f"run directory: {run.path}")
    return 0


def cmd_pretrain(args: argparse.Namespace) -> int:
    """``ulmfit-ml pretrain`` -> :func:`~ulmfit_ml.training.pretrain.pretrain_lm` (its ``[pretrain]`` section only)."""
    base = load_config_file(args.config) if args.config else {}
    sets = [parse_set(s) for s in (args.set or [])]
    bad = [f"{s}.{k}" for s, k, _ in sets if s != "pretrain"]
    if bad:
        raise ConfigError(f"pretrain only uses [pretrain] options; got {bad}.")
    flags = [("pretrain", k, v) for k, v in (("arch", args.arch), ("epochs", args.epochs), ("max_tokens", args.max_tokens),
                                              ("backwards", args.backwards), ("seed", args.seed),
                                              ("init_from", args.init_from), ("device", args.device), ("quiet", args.quiet)) if v is not None]
    cfg = resolve_config({"pretrain": base.get("pretrain", {})}, sets + flags, flags=args.config_flags,
                         sections=("pretrain",))["pretrain"]
    out = Path(args.out)
    if (out / "model").exists():
        raise FileExistsError(f"{out / 'model'} already exists: choose another --out.")
    lm = pretrain_lm(args.corpus, config=cfg, out_dir=out, resume=args.resume)
    on_main(lambda: lm.save(out / "model"))  # under torchrun every rank holds the same model: rank 0 saves it
    if is_main():
        print(f"language model saved to {out / 'model'} ({lm!r})")
    return 0


#: sub-command name -> its function
COMMANDS = {"lm": cmd_lm, "train": cmd_train, "evaluate": cmd_evaluate, "predict": cmd_predict, "cv": cmd_cv,
            "pretrain": cmd_pretrain}
