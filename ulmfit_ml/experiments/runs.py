"""Run directories: one reproducible experiment on disk.

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

Every file is written through :mod:`ulmfit_ml.utils.persist`'s atomic writer; checkpoints are
:mod:`ulmfit_ml.training.checkpoint`'s.
"""
from __future__ import annotations

import json
import logging
import os
import platform
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from . import plots
from ..utils.config_files import to_toml
from ..utils.distrib import is_main, on_main, world_size
from ..utils.io import write_table
from ..utils.persist import atomic_dir, atomic_file, run_file_name, write_json_atomic, write_marker, write_text_atomic
from ..utils.valuetypes import user_path
from ..utils.version import __version__

__all__ = ["RunDir", "environment_info"]

CHECKPOINT_JSON = "checkpoint.json"
_CKPT_FORMAT = 1


def environment_info(device: str | torch.device | None = None) -> dict[str, Any]:
    """Versions (python, torch, fastai, numpy, pandas, scikit-learn, ulmfit_ml), platform and device."""
    import fastai
    import sklearn

    dev = torch.device(device) if device is not None else torch.device("cuda" if torch.cuda.is_available() else "cpu")
    info: dict[str, Any] = {
        "python": sys.version.split()[0], "platform": platform.platform(), "machine": platform.machine(),
        "ulmfit_ml": __version__, "torch": torch.__version__, "fastai": fastai.__version__,
        "numpy": np.__version__, "pandas": pd.__version__, "scikit-learn": sklearn.__version__,
        "device": str(dev), "cuda_available": torch.cuda.is_available(), "torch_threads": torch.get_num_threads(),
        "cpu_count": os.cpu_count(), "world_size": world_size(),
    }
    if dev.type == "cuda" and torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(dev)
        info["cuda"] = torch.version.cuda
    return info


# ---------------------------------------------------------------------- run directory
class RunDir:
    """The files of one experiment (see the module docstring for the layout).

    Every file is written atomically (temp file + rename), so an interrupted run never
    leaves a half-written file behind; the directory can be resumed or inspected as is.

    In a multi-process run (``torchrun``) only rank 0 writes: on the other ranks (``writes``
    false) the writers and the log file do nothing, and :meth:`create` makes nothing.
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.writes = is_main()

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
                ever replaced (:func:`~ulmfit_ml.utils.persist.check_replaceable`), atomically.
            inputs: files and directories the run reads (training file, config, ...): a
                directory that is or holds one of them (or the current directory) is never replaced.

        Raises:
            FileExistsError: ``path`` exists and is not empty, unless ``overwrite``; or it may
                not be replaced (not ulmfit_ml's, holds other files, the current directory or
                an input). Nothing is deleted then.
        """
        p = user_path(path)
        on_main(lambda: cls._make(p, overwrite, inputs))  # rank 0 makes it; its refusal stops every rank
        return cls(p)

    @classmethod
    def _make(cls, p: Path, overwrite: bool, inputs: Any) -> None:
        if p.exists() and not p.is_dir():
            raise FileExistsError(f"{p} exists and is not a directory: choose another --out.")
        if p.is_dir() and not any(p.iterdir()):  # an empty directory (made by the user): nothing to lose
            write_marker(p, "run")
            return
        if p.is_dir() and not overwrite:
            raise FileExistsError(f"Run directory {p} already exists: choose another --out, pass --overwrite, "
                                  f"or continue it with --resume {p}.")
        atomic_dir(p, lambda tmp: None, overwrite=overwrite, kind="run", inputs=inputs)

    @classmethod
    def open(cls, path: str | Path) -> "RunDir":
        """An existing run directory (one with ``config.json``)."""
        p = user_path(path)
        if not (p / "config.json").is_file():
            raise FileNotFoundError(f"{p} is not a run directory (no config.json); pass the --out of an earlier run.")
        return cls(p)

    # writers
    def write_json(self, name: str, obj: Any) -> Path:
        """``obj`` as ``<run>/<name>`` (atomic); ``name`` is one of the layout's (``persist.RUN_FILES``)."""
        if not self.writes:
            return self.path / run_file_name(name)
        return write_json_atomic(self.path / run_file_name(name), obj)

    def read_json(self, name: str) -> Any:
        """The JSON file ``<run>/<name>``."""
        return json.loads((self.path / name).read_text(encoding="utf-8"))

    def write_config(self, sections: dict[str, dict[str, Any]], *, command: str) -> None:
        """The resolved configuration as ``config.toml`` (for people) and ``config.json`` (exact)."""
        if not self.writes:
            return
        header = (f"Resolved configuration of `ulmfit-ml {command}` ({time.strftime('%Y-%m-%d %H:%M:%S')}).\n"
                  f"Rerun: ulmfit-ml {command} --config {self.config_toml} --out NEW_RUN_DIR")
        write_text_atomic(self.config_toml, to_toml(sections, header=header))
        self.write_json("config.json", {"command": command, **sections})

    def write_fingerprint(self, data: Any) -> Path:
        """``data.json``: :meth:`~ulmfit_ml.data.core.MultiLabelData.fingerprint`."""
        return self.write_json("data.json", data.fingerprint())

    def write_environment(self, device: str | torch.device | None = None) -> Path:
        """``environment.json``: :func:`environment_info`."""
        return self.write_json("environment.json", environment_info(device))

    def write_table(self, name: str, df: pd.DataFrame) -> Path:
        """A CSV/TSV/parquet/JSONL table (by extension), atomically; ``name`` is one of the layout's."""
        if not self.writes:
            return self.path / run_file_name(name)
        return write_table(df, self.path / run_file_name(name))

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
        if not self.writes:  # rank 0 logs for the run
            log.addHandler(logging.NullHandler())
            return log
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
        """Save the figures of :mod:`ulmfit_ml.experiments.plots` that the given results allow, as PNGs.

        Plotting is optional: without ``ulmfit_ml.plots`` (or matplotlib) nothing is written,
        and a figure that fails is logged and skipped -- a plot never fails a finished run.
        """
        jobs: list[tuple[str, str, tuple]] = []
        if not self.writes:
            return []
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
                with atomic_file(self.plots_dir / fname) as tmp:
                    fig.savefig(tmp, dpi=100, bbox_inches="tight", format="png")
                out.append(self.plots_dir / fname)
            except Exception as e:  # noqa: BLE001 - a figure must never fail the run
                if log:
                    log.warning(f"plot {fname} skipped: {type(e).__name__}: {e}")
        return out
