"""Training plumbing shared by the LM and classifier trainers: device choice, seeding, quiet mode, history collection."""
from __future__ import annotations

import contextlib
from typing import Any, Iterator

import pandas as pd
import torch

__all__ = ["resolve_device", "seed_everything", "quiet_mode", "history_frame", "use_fp16", "patch_fastai"]


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


@contextlib.contextmanager
def quiet_mode(learn: Any, quiet: bool) -> Iterator[None]:
    """Silence fastai's progress bars and metric tables when ``quiet``."""
    if not quiet:
        yield
        return
    with learn.no_bar(), learn.no_logging():
        yield


def history_frame(learn: Any, stage: str, start_epoch: int = 0) -> pd.DataFrame:
    """The recorder's per-epoch table of the last ``fit`` call, with a ``stage`` column."""
    rec = learn.recorder
    names = [str(n) for n in rec.metric_names[1:-1]]
    rows = [list(map(float, v)) for v in rec.values]
    df = pd.DataFrame(rows, columns=names[: len(rows[0])] if rows else names)
    df.insert(0, "epoch", range(start_epoch, start_epoch + len(df)))
    df.insert(0, "stage", stage)
    return df
