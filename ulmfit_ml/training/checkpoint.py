"""Resumable epoch checkpoints of fastai training: model, optimizer and every RNG state.

Checkpoints are written after every completed epoch: the weights file first, then
``checkpoint.json`` that names it (each through :func:`~ulmfit_ml.utils.persist.atomic_file`), so a
kill at any moment leaves a consistent pair from the last completed epoch. Weights are loaded
back with ``torch.load(weights_only=True)``: nothing is unpickled.
"""
from __future__ import annotations

import json
import random
import time
from fnmatch import fnmatch
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..utils.distrib import barrier, is_main, unwrap_model
from ..utils.persist import atomic_file, write_json_atomic, write_marker

__all__ = ["open_checkpoint_dir", "save_checkpoint", "load_checkpoint", "checkpoint_info", "clear_checkpoint",
           "restore_rng_states", "checkpoint_callback", "resumable_save_model_callback", "CHECKPOINT_JSON"]

CHECKPOINT_JSON = "checkpoint.json"
_CKPT_FORMAT = 1


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


def open_checkpoint_dir(directory: str | Path) -> Path:
    """``directory``, created with the ``checkpoints`` ownership marker when it does not exist yet
    (so a later cleanup may remove it; a directory the caller made is left unmarked)."""
    d = Path(directory)
    if not d.is_dir():
        d.mkdir(parents=True, exist_ok=True)
        write_marker(d, "checkpoints")
    return d


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
    d = open_checkpoint_dir(directory)
    name = f"ckpt-s{stage}-e{epoch}.pt"
    # unwrapped: the plain key names of a single-process run, also while DDP wraps the model
    tensors: dict[str, Any] = {"model": unwrap_model(learn.model).state_dict(), "torch_rng": torch.get_rng_state()}
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
    with atomic_file(d / name) as tmp:
        torch.save(_plain(tensors), tmp)
    meta = {"format": _CKPT_FORMAT, "weights": name, "stage": int(stage), "epoch": int(epoch),
            "time": time.strftime("%Y-%m-%d %H:%M:%S"), "rng": _rng_states(learn), **info}
    out = write_json_atomic(d / CHECKPOINT_JSON, meta)
    for old in d.glob("ckpt-s*-e*.pt"):
        if old.name != name:
            old.unlink(missing_ok=True)  # our own older checkpoint, in our own marked directory
    return out


def checkpoint_info(directory: str | Path) -> dict[str, Any] | None:
    """The JSON of the last checkpoint in ``directory`` (position, RNG states, ``info``; no
    tensors), or ``None`` if there is none.

    Raises:
        ValueError: ``checkpoint.json`` is unreadable or not a ulmfit_ml checkpoint.
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
    return meta


def load_checkpoint(directory: str | Path) -> dict[str, Any] | None:
    """The last checkpoint in ``directory`` (its JSON plus ``"tensors"``), or ``None`` if there is none.

    Raises:
        ValueError: ``checkpoint.json`` or the weights it names are unreadable.
    """
    meta = checkpoint_info(directory)
    if meta is None:
        return None
    d = Path(directory)
    w = d / meta["weights"]
    try:
        meta["tensors"] = torch.load(w, map_location="cpu", weights_only=True)
    except FileNotFoundError as e:
        raise ValueError(f"Checkpoint weights {w} named by {d / CHECKPOINT_JSON} are missing; delete {d} to start over.") from e
    except Exception as e:  # noqa: BLE001 - torch raises several types for truncated/foreign files
        raise ValueError(f"Checkpoint weights {w} are unreadable ({type(e).__name__}: {e}); delete {d} to start over.") from e
    return meta


def clear_checkpoint(directory: str | Path) -> None:
    """Remove the epoch checkpoint in ``directory`` (``checkpoint.json``, then the weight file it
    names), so that the next training run there starts afresh. Only a checkpoint that
    :func:`save_checkpoint` wrote is removed (its format, a weight file named as it names them);
    anything else, and every other file, is left alone."""
    d = Path(directory)
    try:
        meta = checkpoint_info(d)
    except (OSError, ValueError):  # unreadable, or not ulmfit_ml's
        return
    weights = meta.get("weights") if meta is not None else None
    if not isinstance(weights, str) or Path(weights).name != weights or not fnmatch(weights, "ckpt-s*-e*.pt"):
        return
    (d / CHECKPOINT_JSON).unlink()
    (d / weights).unlink(missing_ok=True)


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
    from fastai.callback.core import Callback  # fastai is imported lazily: `import ulmfit_ml` stays light

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
            if is_main():  # rank 0 alone writes
                save_checkpoint(directory, learn=self.learn, stage=stage, epoch=self.epoch + 1,
                                info=info(self.learn) if info is not None else {})
            barrier()  # no rank goes on (or stops, and resumes) before the checkpoint is complete

    return EpochCheckpoint()


def resumable_save_model_callback(*, monitor: str, comp: Any, fname: str = "best", start_epoch: int = 0,
                                  best: float | None = None) -> Any:
    """fastai's ``SaveModelCallback`` that ignores epochs skipped on resume and starts from a
    saved ``best`` value (so the best epoch of an interrupted run is still considered).

    In a multi-process run rank 0 saves and reloads the file as fastai does; the other ranks
    (whose metrics are the same gathered ones, so they pick the same epoch) keep the best
    weights in memory instead: they write nothing, and need no file system shared with rank 0.
    """
    from fastai.callback.tracker import SaveModelCallback

    class ResumableSaveModel(SaveModelCallback):
        def before_fit(self) -> None:
            super().before_fit()
            self.best_state = None
            if best is not None:
                self.best = best

        def after_epoch(self) -> None:
            if self.epoch < start_epoch:
                return
            super().after_epoch()

        def _save(self, name: str) -> None:
            if is_main():
                super()._save(name)
            else:
                self.best_state = {k: v.detach().clone() for k, v in unwrap_model(self.learn.model).state_dict().items()}

        def after_fit(self) -> None:
            if is_main() or self.best_state is None:  # no new best here (resumed): the file in the shared checkpoint_dir
                super().after_fit()  # fastai's Learner.load: a barrier (rank 0 has written it), then the file
            else:
                barrier()  # the one in rank 0's Learner.load
                unwrap_model(self.learn.model).load_state_dict(self.best_state)

    return ResumableSaveModel(monitor=monitor, comp=comp, fname=fname, with_opt=False)
