"""Training plumbing shared by the LM and classifier trainers: device choice, seeding, progress
output (bars, one line per epoch, or quiet), the divergence check, history collection."""
from __future__ import annotations

import contextlib
import math
import os
import sys
from typing import Any, Iterator

import pandas as pd
import torch

__all__ = ["resolve_device", "seed_everything", "progress_mode", "resolve_progress", "PROGRESS_ENV",
           "history_frame", "use_fp16", "patch_fastai", "fit_one_cycle_checked", "loss_diverged",
           "divergence_message", "DIVERGENCE_FACTOR"]


def patch_fastai() -> None:
    """Import fastai's callbacks: they patch ``Learner`` with ``fit_one_cycle``, ``to_fp16``,
    ``no_bar`` ... (fastai adds these methods at import time)."""
    import fastai.callback.all  # noqa: F401
    import fastai.text.learner  # noqa: F401


def resolve_device(device: str | torch.device | None) -> torch.device:
    """``None`` -> cuda when available else cpu; a named device is checked."""
    if device is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device={device!r} was asked for but CUDA is not available here; use device='cpu' or None.")
    return dev


def use_fp16(fp16: bool | None, device: torch.device) -> bool:
    """Mixed precision: on by default on cuda, never on cpu."""
    if fp16 and device.type != "cuda":
        raise ValueError("fp16=True needs a CUDA device; leave fp16=None to use it only when a GPU is there.")
    return device.type == "cuda" if fp16 is None else bool(fp16)


def seed_everything(seed: int) -> None:
    """Seed python, numpy and torch (fastai's ``set_seed`` with deterministic cuDNN)."""
    from fastai.torch_core import set_seed

    patch_fastai()

    set_seed(seed, reproducible=True)


# ---------------------------------------------------------------------- progress output
#: environment variable that forces the progress output: "auto" (default), "bar", "lines" or "none"
PROGRESS_ENV = "ULMFIT_ML_PROGRESS"
_PROGRESS_MODES = ("auto", "bar", "lines", "none")


def _stdout_is_terminal() -> bool:
    isatty = getattr(sys.stdout, "isatty", None)
    try:
        return bool(isatty()) if callable(isatty) else False
    except ValueError:  # a closed stream
        return False


def resolve_progress(quiet: bool = False) -> str:
    """The progress output of fastai training: ``"bar"``, ``"lines"`` or ``"none"``.

    ``quiet=True`` -> ``"none"``. Otherwise the :data:`PROGRESS_ENV` variable decides
    (``ULMFIT_ML_PROGRESS=bar|lines|none``); unset or ``"auto"``: fastai's progress bars on a
    terminal or in a notebook, and one line per epoch (the metrics table) when stdout is a file,
    a pipe or a CI log, where every bar update would be written out (tens of kB of carriage
    returns per epoch).
    """
    if quiet:
        return "none"
    raw = os.environ.get(PROGRESS_ENV, "auto")
    mode = raw.strip().lower() or "auto"
    if mode not in _PROGRESS_MODES:
        raise ValueError(f"{PROGRESS_ENV}={raw!r} is not a progress mode: use 'auto' (bars on a terminal or in a "
                         "notebook, one line per epoch otherwise), 'bar', 'lines' or 'none', or unset it.")
    if mode != "auto":
        return mode
    from fastprogress.core import IN_NOTEBOOK

    return "bar" if IN_NOTEBOOK or _stdout_is_terminal() else "lines"


_LINES_CB: type | None = None


def _epoch_lines_callback() -> Any:
    """A fastai callback printing the metrics table one line per epoch (header once per ``fit``)."""
    global _LINES_CB
    if _LINES_CB is None:
        from fastai.callback.core import Callback
        from fastai.learner import noop  # fastai's own noop (no_logging sets it), not fastcore's

        class EpochLinesCallback(Callback):
            """Replaces fastai's ``ProgressCallback`` when output goes to a log: the recorder's
            row of each epoch printed as one aligned, flushed line, no progress bars."""
            order = 60  # where ProgressCallback sits: after the Recorder

            def before_fit(self) -> None:
                self.old_logger = None
                if self.learn.logger == noop:  # no_logging (lr_find, quiet)
                    return
                self.old_logger, self.learn.logger = self.learn.logger, self._write
                names = [str(n) for n in self.recorder.metric_names]
                self.widths = [max(len(n), 9) for n in names]
                self._write(names)

            def after_fit(self) -> None:
                if self.old_logger is not None:
                    self.learn.logger, self.old_logger = self.old_logger, None

            def _write(self, log: Any) -> None:
                cells = [f"{v:.6f}" if isinstance(v, float) else str(v) for v in log]
                print("  ".join(c.ljust(w) for c, w in zip(cells, self.widths)).rstrip(), flush=True)

        _LINES_CB = EpochLinesCallback
    return _LINES_CB()


@contextlib.contextmanager
def progress_mode(learn: Any, quiet: bool) -> Iterator[None]:
    """The one place fastai's progress output is configured (every ``fit``, ``lr_find`` and
    ``get_preds`` of the trainers runs inside it): see :func:`resolve_progress`. ``"lines"``
    swaps fastai's ``ProgressCallback`` for one line per epoch (also on rank 0 only in a
    distributed run); ``"none"`` silences bars and tables."""
    mode = resolve_progress(quiet)
    if mode == "bar":
        yield
        return
    from fastai.torch_core import rank_distrib

    if mode == "none" or rank_distrib():
        with learn.no_bar(), learn.no_logging():
            yield
        return
    with learn.no_bar(), learn.added_cbs(_epoch_lines_callback()):
        yield


# ---------------------------------------------------------------------- divergence
#: a training loss this many times above its start (at least 1.0) is a diverging run
DIVERGENCE_FACTOR = 1000.0


def loss_diverged(loss: float, start: float | None) -> bool:
    """A non-finite loss, or one far above the first loss of the run (``DIVERGENCE_FACTOR`` x)."""
    if not math.isfinite(loss):
        return True
    return start is not None and loss > DIVERGENCE_FACTOR * max(start, 1.0)


def divergence_message(where: str, loss: float, start: float | None, lr_option: str, lr: float) -> str:
    """The error of a diverging run: where it happened, the loss, and the learning rate to lower."""
    began = f" (it started at {start:.4g})" if start is not None else ""
    return (f"Training diverged {where}: the loss became {loss:.4g}{began}. The learning rate is too high: "
            f"{lr_option} = {lr:g}. Lower it (e.g. to {lr / 10:g}, or far lower: ULMFiT's rates are 1e-3 to 1e-2) "
            "or pick one with um.lr_find(data, stage=...).")


_DIVERGENCE_CB: type | None = None


def _divergence_callback(lr_option: str, lr: float) -> Any:
    """A fastai callback that stops ``fit`` at the first non-finite (training or validation) loss
    or exploding training loss; :func:`fit_one_cycle_checked` then raises its message."""
    global _DIVERGENCE_CB
    if _DIVERGENCE_CB is None:
        from fastai.callback.core import Callback, CancelFitException

        class DivergenceCallback(Callback):
            """Stops a diverging run before fastai's metrics meet NaN predictions (sklearn's
            "Input contains NaN"); the reason is in ``self.div_error``."""
            order = -5  # before the Recorder and metrics see the batch

            def __init__(self, lr_option: str, lr: float) -> None:
                super().__init__()
                self.lr_option, self.lr_value, self.div_error, self.div_start = lr_option, lr, None, None

            def before_fit(self) -> None:
                self.div_error, self.div_start = None, None

            def after_batch(self) -> None:
                loss = getattr(self.learn, "loss", None)
                if loss is None:
                    return
                value = float(torch.as_tensor(loss).detach().float().mean())
                bad = loss_diverged(value, self.div_start) if self.training else not math.isfinite(value)
                if torch.distributed.is_available() and torch.distributed.is_initialized() \
                        and torch.distributed.get_world_size() > 1:  # every rank stops at the same batch
                    flag = torch.tensor([float(bad)], device=torch.as_tensor(loss).device)
                    torch.distributed.all_reduce(flag, op=torch.distributed.ReduceOp.MAX)
                    bad = bool(flag.item())
                if self.training and self.div_start is None and math.isfinite(value):
                    self.div_start = value
                if bad:
                    where = (f"in epoch {self.epoch + 1}, {'training' if self.training else 'validation'} batch "
                             f"{self.iter + 1}")
                    self.div_error = divergence_message(where, value, self.div_start, self.lr_option, self.lr_value)
                    raise CancelFitException()

        _DIVERGENCE_CB = DivergenceCallback
    return _DIVERGENCE_CB(lr_option, lr)


def fit_one_cycle_checked(learn: Any, n_epoch: int, lr_max: Any, *, lr_option: str, lr: float,
                          cbs: list | None = None, **kwargs: Any) -> None:
    """``learn.fit_one_cycle`` that raises ``ValueError`` (naming ``lr_option = lr`` and the fix)
    when the run diverges: a NaN/inf loss, or a training loss ``DIVERGENCE_FACTOR`` times its start.

    Used by LM fine-tuning and classifier training; the pretraining loop applies the same test
    (:func:`loss_diverged`) step by step."""
    cb = _divergence_callback(lr_option, lr)
    learn.fit_one_cycle(n_epoch, lr_max, cbs=list(cbs or []) + [cb], **kwargs)
    if cb.div_error is not None:
        raise ValueError(cb.div_error)


def history_frame(learn: Any, stage: str, start_epoch: int = 0) -> pd.DataFrame:
    """The recorder's per-epoch table of the last ``fit`` call, with a ``stage`` column."""
    rec = learn.recorder
    names = [str(n) for n in rec.metric_names[1:-1]]
    rows = [list(map(float, v)) for v in rec.values]
    df = pd.DataFrame(rows, columns=names[: len(rows[0])] if rows else names)
    df.insert(0, "epoch", range(start_epoch, start_epoch + len(df)))
    df.insert(0, "stage", stage)
    return df
