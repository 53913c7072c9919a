"""Run directories (one reproducible experiment on disk) and resumable epoch checkpoints.

A run directory written by ``ulmfit-ml train`` holds::

    config.toml / config.json   the resolved configuration ([data], [lm], [classifier], [run])
    data.json                   data fingerprint (row counts, label counts, sha256)
    environment.json            python / torch / fastai / ulmfit_ml versions, platform, device
    lm/                         the fine-tuned language model (reused by --resume)
    checkpoints/                classifier epoch checkpoint (model + optimizer + RNG states)
    history.csv                 per-epoch metrics of the LM and the classifier
    metrics.json                final validation metrics (summary, per label, thresholds)
    plots/                      figures (when ulmfit_ml.plots is available)
    model/                      the saved classifier (load with um.load_classifier)
    run.log                     the log
    status.json                 "running", "interrupted", "failed" or "done"

Checkpoints are written after every completed epoch: the weights file first (temp file +
``os.replace``), then ``checkpoint.json`` that names it, so a kill at any moment leaves a
consistent pair from the last completed epoch.
"""
from __future__ import annotations

import json
import logging
import os
import platform
import random
import re
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

__all__ = [
    "RunDir",
    "to_toml",
    "environment_info",
    "write_json_atomic",
    "save_checkpoint",
    "load_checkpoint",
    "restore_rng_states",
    "checkpoint_callback",
    "resumable_save_model_callback",
    "CHECKPOINT_JSON",
]

CHECKPOINT_JSON = "checkpoint.json"
_CKPT_FORMAT = 1


def write_json_atomic(path: str | Path, obj: Any) -> Path:
    """Write ``obj`` as JSON to ``path`` through a temporary file and ``os.replace``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".tmp-{os.getpid()}-{path.name}")
    try:
        tmp.write_text(json.dumps(_jsonable(obj), indent=2, ensure_ascii=False, allow_nan=True), encoding="utf-8")
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


def _jsonable(obj: Any) -> Any:
    """numpy scalars/arrays, tuples and paths -> plain JSON types."""
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return _jsonable(obj.tolist())
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, Path):
        return str(obj)
    return obj


def environment_info(device: str | torch.device | None = None) -> dict[str, Any]:
    """Versions (python, torch, fastai, numpy, pandas, scikit-learn, ulmfit_ml), platform and device."""
    import fastai
    import sklearn

    from . import __version__

    dev = torch.device(device) if device is not None else torch.device("cuda" if torch.cuda.is_available() else "cpu")
    info: dict[str, Any] = {
        "python": sys.version.split()[0], "platform": platform.platform(), "machine": platform.machine(),
        "ulmfit_ml": __version__, "torch": torch.__version__, "fastai": fastai.__version__,
        "numpy": np.__version__, "pandas": pd.__version__, "scikit-learn": sklearn.__version__,
        "device": str(dev), "cuda_available": torch.cuda.is_available(), "torch_threads": torch.get_num_threads(),
        "cpu_count": os.cpu_count(),
    }
    if dev.type == "cuda" and torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(dev)
        info["cuda"] = torch.version.cuda
    return info


# ---------------------------------------------------------------------- TOML
_BARE_KEY = re.compile(r"^[A-Za-z0-9_-]+$")


def _toml_key(k: str) -> str:
    return k if _BARE_KEY.match(k) else json.dumps(k, ensure_ascii=False)


def _toml_value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, np.integer)):
        return str(int(v))
    if isinstance(v, (float, np.floating)):
        f = float(v)
        if f != f:
            return "nan"
        if f in (float("inf"), float("-inf")):
            return "inf" if f > 0 else "-inf"
        return repr(f)
    if isinstance(v, (str, Path)):
        # JSON string escapes are valid TOML basic-string escapes; DEL must be escaped in TOML
        return json.dumps(str(v), ensure_ascii=False).replace("\x7f", "\\u007F")
    if isinstance(v, (list, tuple)):
        if any(x is None for x in v):
            raise ValueError(f"TOML cannot hold None inside a list: {v!r}.")
        return "[" + ", ".join(_toml_value(x) for x in v) + "]"
    if isinstance(v, dict):
        items = [f"{_toml_key(str(k))} = {_toml_value(x)}" for k, x in v.items() if x is not None]
        return "{ " + ", ".join(items) + " }" if items else "{}"
    raise TypeError(f"Cannot write {type(v).__name__} {v!r} to TOML.")


def to_toml(sections: dict[str, dict[str, Any]], *, header: str = "") -> str:
    """Write ``{section: {key: value}}`` as TOML text.

    Hand-rolled because the standard library reads TOML (``tomllib``) but cannot write it,
    and the config values are simple (scalars, lists, small inline tables). ``None`` has no
    TOML form: such keys are written as comments (a missing key means "default", and every
    ``None`` default stays ``None``).
    """
    lines = [f"# {ln}" for ln in header.splitlines()] if header else []
    for name, values in sections.items():
        if lines:
            lines.append("")
        lines.append(f"[{_toml_key(name)}]")
        for k, v in values.items():
            if v is None:
                lines.append(f"# {k} = (not set)")
            else:
                lines.append(f"{_toml_key(k)} = {_toml_value(v)}")
    return "\n".join(lines) + "\n"


def _write_text_atomic(path: Path, text: str) -> Path:
    tmp = path.with_name(f".tmp-{os.getpid()}-{path.name}")
    try:
        tmp.write_text(text, encoding="utf-8")
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


# ---------------------------------------------------------------------- run directory
class RunDir:
    """The files of one experiment (see the module docstring for the layout).

    Every file is written atomically (temp file + rename), so an interrupted run never
    leaves a half-written file behind; the directory can be resumed or inspected as is.
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)

    # paths
    @property
    def config_toml(self) -> Path:
        return self.path / "config.toml"

    @property
    def config_json(self) -> Path:
        return self.path / "config.json"

    @property
    def lm_dir(self) -> Path:
        return self.path / "lm"

    @property
    def checkpoint_dir(self) -> Path:
        return self.path / "checkpoints"

    @property
    def model_dir(self) -> Path:
        return self.path / "model"

    @property
    def plots_dir(self) -> Path:
        return self.path / "plots"

    @property
    def log_file(self) -> Path:
        return self.path / "run.log"

    @classmethod
    def create(cls, path: str | Path, *, overwrite: bool = False, inputs: Any = ()) -> "RunDir":
        """Make a new run directory (it gets ulmfit_ml's ownership marker).

        Args:
            path: the directory; an existing empty one is used as is.
            overwrite: replace an existing run directory. Only a directory ulmfit_ml wrote is
                ever replaced (:func:`~ulmfit_ml.persist.check_replaceable`), atomically.
            inputs: files and directories the run reads (training file, config, ...): a
                directory that is or holds one of them (or the current directory) is never replaced.

        Raises:
            FileExistsError: ``path`` exists and is not empty, unless ``overwrite``; or it may
                not be replaced (not ulmfit_ml's, holds other files, the current directory or
                an input). Nothing is deleted then.
        """
        from .persist import atomic_dir, write_marker

        p = Path(path)
        if p.exists() and not p.is_dir():
            raise FileExistsError(f"{p} exists and is not a directory: choose another --out.")
        if p.is_dir() and not any(p.iterdir()):  # an empty directory (made by the user): nothing to lose
            write_marker(p, "run")
            return cls(p)
        if p.is_dir() and not overwrite:
            raise FileExistsError(f"Run directory {p} already exists: choose another --out, pass --overwrite, "
                                  f"or continue it with --resume {p}.")
        atomic_dir(p, lambda tmp: None, overwrite=overwrite, kind="run", inputs=inputs)
        return cls(p)

    @classmethod
    def open(cls, path: str | Path) -> "RunDir":
        """An existing run directory (one with ``config.json``)."""
        p = Path(path)
        if not (p / "config.json").is_file():
            raise FileNotFoundError(f"{p} is not a run directory (no config.json); pass the --out of an earlier run.")
        return cls(p)

    # writers
    def write_json(self, name: str, obj: Any) -> Path:
        """``obj`` as ``<run>/<name>`` (atomic)."""
        return write_json_atomic(self.path / name, obj)

    def read_json(self, name: str) -> Any:
        """The JSON file ``<run>/<name>``."""
        return json.loads((self.path / name).read_text(encoding="utf-8"))

    def write_config(self, sections: dict[str, dict[str, Any]], *, command: str) -> None:
        """The resolved configuration as ``config.toml`` (for people) and ``config.json`` (exact)."""
        header = (f"Resolved configuration of `ulmfit-ml {command}` ({time.strftime('%Y-%m-%d %H:%M:%S')}).\n"
                  f"Rerun: ulmfit-ml {command} --config {self.config_toml} --out NEW_RUN_DIR")
        _write_text_atomic(self.config_toml, to_toml(sections, header=header))
        self.write_json("config.json", {"command": command, **sections})

    def write_fingerprint(self, data: Any) -> Path:
        """``data.json``: :meth:`~ulmfit_ml.data.MultiLabelData.fingerprint`."""
        return self.write_json("data.json", data.fingerprint())

    def write_environment(self, device: str | torch.device | None = None) -> Path:
        """``environment.json``: :func:`environment_info`."""
        return self.write_json("environment.json", environment_info(device))

    def write_table(self, name: str, df: pd.DataFrame) -> Path:
        """A CSV/TSV/parquet/JSONL table (by extension), atomically."""
        from .io import write_table

        return write_table(df, self.path / name)

    def set_status(self, status: str, **extra: Any) -> Path:
        """``status.json``: ``running``, ``interrupted``, ``failed`` or ``done``, with a time stamp."""
        return self.write_json("status.json", {"status": status, "time": time.strftime("%Y-%m-%d %H:%M:%S"), **extra})

    def logger(self, *, quiet: bool = False, name: str = "ulmfit_ml.run") -> logging.Logger:
        """A logger writing to ``run.log`` (appending, so a resumed run keeps the earlier log)
        and, unless ``quiet``, to stderr (records logged with ``extra={"file_only": True}`` go
        to the file only)."""
        log = logging.getLogger(f"{name}.{id(self)}")
        log.setLevel(logging.INFO)
        log.propagate = False
        for h in list(log.handlers):
            log.removeHandler(h)
            h.close()
        fh = logging.FileHandler(self.log_file, encoding="utf-8")
        fh.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
        log.addHandler(fh)
        if not quiet:
            sh = logging.StreamHandler(sys.stderr)
            sh.setFormatter(logging.Formatter("%(message)s"))
            sh.addFilter(lambda record: not getattr(record, "file_only", False))  # extra={"file_only": True}
            log.addHandler(sh)
        return log

    def save_plots(self, *, history: pd.DataFrame | None = None, report: Any = None,
                   valid: tuple[np.ndarray, np.ndarray] | None = None, data: Any = None,
                   log: logging.Logger | None = None) -> list[Path]:
        """Save the figures of :mod:`ulmfit_ml.plots` that the given results allow, as PNGs.

        Plotting is optional: without ``ulmfit_ml.plots`` (or matplotlib) nothing is written,
        and a figure that fails is logged and skipped -- a plot never fails a finished run.
        """
        try:
            import matplotlib

            matplotlib.use("Agg", force=False)
            from . import plots
        except ImportError as e:
            if log:
                log.info(f"plots skipped ({e})")
            return []
        jobs: list[tuple[str, str, tuple]] = []
        if history is not None and len(history):
            for model, h in (history.groupby("model", sort=False) if "model" in history else [("", history)]):
                jobs.append((f"loss_{model}.png" if model else "loss.png", "plot_loss",
                             (h.drop(columns=["model"], errors="ignore").reset_index(drop=True),)))
        if report is not None:
            jobs.append(("per_label_f1.png", "plot_per_label_f1", (report,)))
        if valid is not None:
            jobs.append(("f1_vs_threshold.png", "plot_f1_vs_threshold", valid))
        if data is not None:
            jobs.append(("label_frequency.png", "plot_label_frequency", (data,)))
            jobs.append(("labels_per_text.png", "plot_labels_per_text", (data,)))
        out = []
        for fname, fn, args in jobs:
            func = getattr(plots, fn, None)
            if func is None:
                continue
            try:
                fig = func(*args)
                self.plots_dir.mkdir(exist_ok=True)
                tmp = self.plots_dir / f".tmp-{fname}"
                fig.savefig(tmp, dpi=100, bbox_inches="tight", format="png")
                os.replace(tmp, self.plots_dir / fname)
                out.append(self.plots_dir / fname)
            except Exception as e:  # noqa: BLE001 - a figure must never fail the run
                if log:
                    log.warning(f"plot {fname} skipped: {type(e).__name__}: {e}")
        return out


# ---------------------------------------------------------------------- checkpoints
def _rng_states(learn: Any) -> dict[str, Any]:
    """Python, numpy and the DataLoaders' RNG states (JSON-friendly)."""
    py = random.getstate()
    npst = np.random.get_state()
    dls = {}
    for name in ("train", "valid"):
        dl = getattr(learn.dls, name, None)
        if dl is not None and hasattr(dl, "rng"):
            s = dl.rng.getstate()
            dls[name] = [s[0], list(s[1]), s[2]]
    return {"python": [py[0], list(py[1]), py[2]],
            "numpy": [npst[0], npst[1].tolist(), int(npst[2]), int(npst[3]), float(npst[4])],
            "dataloaders": dls}


def restore_rng_states(learn: Any, ckpt: dict[str, Any]) -> None:
    """Put back the python, numpy, torch (and CUDA) and DataLoader RNG states of a checkpoint.

    The dropout masks and the shuffling of the epochs after the checkpoint then match an
    uninterrupted run exactly (on CPU).
    """
    rng = ckpt["rng"]
    py = rng["python"]
    random.setstate((py[0], tuple(py[1]), py[2]))
    n = rng["numpy"]
    np.random.set_state((n[0], np.asarray(n[1], dtype=np.uint32), n[2], n[3], n[4]))
    for name, s in rng.get("dataloaders", {}).items():
        dl = getattr(learn.dls, name, None)
        if dl is not None:
            dl.rng.setstate((s[0], tuple(s[1]), s[2]))
    tensors = ckpt["tensors"]
    torch.set_rng_state(tensors["torch_rng"])
    if torch.cuda.is_available() and tensors.get("cuda_rng"):
        try:
            torch.cuda.set_rng_state_all(list(tensors["cuda_rng"]))
        except RuntimeError:  # different number of GPUs: exact replay is impossible anyway
            pass


def _plain(obj: Any) -> Any:
    """fastai's tensor subclasses -> plain tensors, so ``torch.load(weights_only=True)`` accepts them."""
    if isinstance(obj, torch.Tensor):
        return obj.detach().as_subclass(torch.Tensor)
    if isinstance(obj, dict):
        return {k: _plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(_plain(v) for v in obj)
    return obj


def _opt_state(opt: Any) -> dict[str, Any]:
    sd = opt.state_dict()
    hypers = [{k: float(v) if isinstance(v, (int, float, np.number)) and not isinstance(v, bool) else v
               for k, v in h.items()} for h in sd["hypers"]]
    return {"state": sd["state"], "hypers": hypers}


def save_checkpoint(directory: str | Path, *, learn: Any, stage: int, epoch: int,
                    info: dict[str, Any]) -> Path:
    """Save the state after a completed epoch.

    Writes ``ckpt-s{stage}-e{epoch}.pt`` (model and optimizer state, torch RNG; loaded back
    with ``weights_only=True``, so no code is unpickled) then ``checkpoint.json`` (position,
    python/numpy/DataLoader RNG states and ``info``), each atomically, and removes older
    weight files.

    Args:
        directory: the checkpoint directory (created if needed).
        learn: the fastai ``Learner``.
        stage: index of the training stage the epoch belongs to.
        epoch: number of completed epochs in that stage.
        info: JSON-friendly extra state (history so far, tracker best, config, data hash).

    Returns:
        The path of ``checkpoint.json``.
    """
    d = Path(directory)
    if not d.is_dir():  # ours: marked, so a later cleanup may remove it (a directory the caller made is not)
        from .persist import write_marker

        d.mkdir(parents=True, exist_ok=True)
        write_marker(d, "checkpoints")
    name = f"ckpt-s{stage}-e{epoch}.pt"
    tensors: dict[str, Any] = {"model": learn.model.state_dict(), "torch_rng": torch.get_rng_state()}
    if getattr(learn, "opt", None) is not None:
        tensors["opt"] = _opt_state(learn.opt)
    if torch.cuda.is_available():
        tensors["cuda_rng"] = torch.cuda.get_rng_state_all()
    scaler = getattr(learn, "scaler", None)
    if scaler is not None and hasattr(scaler, "state_dict"):
        tensors["scaler"] = scaler.state_dict()
    smooth = getattr(getattr(learn, "recorder", None), "smooth_loss", None)
    if smooth is not None and hasattr(smooth, "val"):  # the train_loss column is a running average
        tensors["smooth_loss"] = {"val": torch.as_tensor(smooth.val).detach().cpu(), "count": int(smooth.count)}
    tmp = d / f".tmp-{os.getpid()}-{name}"
    try:
        torch.save(_plain(tensors), tmp)
        os.replace(tmp, d / name)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    meta = {"format": _CKPT_FORMAT, "weights": name, "stage": int(stage), "epoch": int(epoch),
            "time": time.strftime("%Y-%m-%d %H:%M:%S"), "rng": _rng_states(learn), **info}
    out = write_json_atomic(d / CHECKPOINT_JSON, meta)
    for old in d.glob("ckpt-s*-e*.pt"):
        if old.name != name:
            old.unlink(missing_ok=True)
    return out


def load_checkpoint(directory: str | Path) -> dict[str, Any] | None:
    """The last checkpoint in ``directory`` (its JSON plus ``"tensors"``), or ``None`` if there is none.

    Raises:
        ValueError: ``checkpoint.json`` or the weights it names are unreadable.
    """
    d = Path(directory)
    p = d / CHECKPOINT_JSON
    if not p.exists():
        return None
    try:
        meta = json.loads(p.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ValueError(f"Checkpoint {p} is corrupt (not valid JSON: {e}); delete {d} to start over.") from e
    if not isinstance(meta, dict) or meta.get("format") != _CKPT_FORMAT or "weights" not in meta:
        raise ValueError(f"{p} is not a ulmfit_ml checkpoint (format {_CKPT_FORMAT}).")
    w = d / meta["weights"]
    try:
        meta["tensors"] = torch.load(w, map_location="cpu", weights_only=True)
    except FileNotFoundError as e:
        raise ValueError(f"Checkpoint weights {w} named by {p} are missing; delete {d} to start over.") from e
    except Exception as e:  # noqa: BLE001 - torch raises several types for truncated/foreign files
        raise ValueError(f"Checkpoint weights {w} are unreadable ({type(e).__name__}: {e}); delete {d} to start over.") from e
    return meta


def checkpoint_callback(directory: str | Path, *, stage: int, start_epoch: int = 0, info: Any = None,
                        resume_state: dict[str, Any] | None = None) -> Any:
    """A fastai callback that calls :func:`save_checkpoint` after every completed epoch.

    Args:
        directory: the checkpoint directory.
        stage: the training stage this ``fit`` belongs to.
        start_epoch: epochs below it are being skipped (resume) and are not saved again.
        info: ``info(learn) -> dict`` of extra JSON state, called at each save.
        resume_state: the ``tensors`` of the checkpoint being resumed mid-fit: its mixed-precision
            ``GradScaler`` and running train loss are put back at the start of the fit.
    """
    from fastai.callback.core import Callback

    class EpochCheckpoint(Callback):
        order = 65  # after the Recorder (50) and SaveModelCallback (60) have seen the epoch

        def before_fit(self) -> None:  # runs after MixedPrecision and Recorder have reset theirs
            if resume_state is None:
                return
            scaler = getattr(self.learn, "scaler", None)
            if resume_state.get("scaler") is not None and scaler is not None:
                scaler.load_state_dict(resume_state["scaler"])
            smooth = resume_state.get("smooth_loss")
            if smooth is not None and hasattr(self.learn, "recorder"):
                self.learn.recorder.smooth_loss.val = smooth["val"]
                self.learn.recorder.smooth_loss.count = smooth["count"]

        def after_epoch(self) -> None:
            if self.epoch < start_epoch:  # skipped by fastai's SkipToEpoch
                return
            save_checkpoint(directory, learn=self.learn, stage=stage, epoch=self.epoch + 1,
                            info=info(self.learn) if info is not None else {})

    return EpochCheckpoint()


def resumable_save_model_callback(*, monitor: str, comp: Any, fname: str = "best", start_epoch: int = 0,
                                  best: float | None = None) -> Any:
    """fastai's ``SaveModelCallback`` that ignores epochs skipped on resume and starts from a
    saved ``best`` value (so the best epoch of an interrupted run is still considered)."""
    from fastai.callback.tracker import SaveModelCallback

    class ResumableSaveModel(SaveModelCallback):
        def before_fit(self) -> None:
            super().before_fit()
            if best is not None:
                self.best = best

        def after_epoch(self) -> None:
            if self.epoch < start_epoch:
                return
            super().after_epoch()

    return ResumableSaveModel(monitor=monitor, comp=comp, fname=fname, with_opt=False)
