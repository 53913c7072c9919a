"""Training throughput: ulmfit_ml's fastai ``Learner`` versus a hand-written loop.

Both sides run the same model, the same DataLoader (replayed with the same random state, so
the same batches in the same order), the same loss and fastai's own optimizer; the plain
loop is ``forward -> loss -> backward -> step -> zero_grad`` with no ``Learner`` and no
callbacks (AMP by hand on CUDA, as fastai's ``MixedPrecision`` does). Runs are interleaved
(A, B, B, A, A, B, ...) so that load from other processes on a shared machine hits both alike;
we report medians with min/max and the median of the per-pair ratios.
"""
from __future__ import annotations

import random
import statistics
import time
from typing import Any

import numpy as np
import torch

__all__ = ["compare_training_throughput"]


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def _replay_state(dl: Any) -> dict[str, Any]:
    """What decides the order of batches of a fastai DataLoader (restored before every run)."""
    st = {"rng": dl.rng.getstate()}
    items = getattr(dl, "items", None)
    if items is not None and hasattr(items, "idxs"):  # LMDataLoader shuffles its items in place
        st["idxs"] = list(items.idxs)
    return st


def _restore(dl: Any, st: dict[str, Any], seed: int) -> None:
    dl.rng.setstate(st["rng"])
    if "idxs" in st:
        dl.items.idxs[:] = st["idxs"]  # in place: LMDataLoader.lens shares this list
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def _batch_tokens(xb: torch.Tensor, pad_idx: int | None) -> tuple[int, int]:
    real = int((xb != pad_idx).sum()) if pad_idx is not None else xb.numel()
    return xb.numel(), real


def _learner_run(learn: Any, n_batches: int, lr: float, device: torch.device, pad_idx: int | None) -> dict[str, float]:
    """ulmfit_ml's path: ``learn.fit_one_cycle`` (what finetune_lm / train_classifier call),
    quiet, stopped after ``n_batches`` timed batches (the first batch is a warm-up)."""
    from fastai.callback.core import Callback, CancelFitException

    class _Timer(Callback):
        order = 100

        def __init__(self) -> None:
            self.i, self.tok, self.real, self.t0, self.t1 = 0, 0, 0, 0.0, 0.0

        def after_batch(self) -> None:
            if not self.training:
                return
            _sync(device)
            if self.i == 0:
                self.t0 = time.perf_counter()
            else:
                a, b = _batch_tokens(self.learn.xb[0], pad_idx)
                self.tok += a
                self.real += b
            self.t1 = time.perf_counter()
            self.i += 1
            if self.i > n_batches:
                raise CancelFitException()

    timer = _Timer()
    with learn.no_bar(), learn.no_logging():
        learn.fit_one_cycle(1, lr, cbs=[timer])
    dt = max(timer.t1 - timer.t0, 1e-9)
    return {"tokens_per_s": timer.tok / dt, "real_tokens_per_s": timer.real / dt, "seconds": dt}


class _ScalerOpt:
    """What ``GradScaler.step`` needs from an optimizer, over fastai's optimizer (as fastai's
    ``MixedPrecision`` does: fastai optimizers are not ``torch.optim.Optimizer``)."""

    def __init__(self, opt: Any) -> None:
        self.opt = opt

    @property
    def param_groups(self) -> Any:
        return self.opt.param_groups

    def step(self, *args: Any, **kwargs: Any) -> None:
        self.opt.step()


def _plain_run(model: torch.nn.Module, dl: Any, loss_func: Any, opt: Any, n_batches: int, device: torch.device,
               fp16: bool, pad_idx: int | None, alpha: float = 0.0, beta: float = 0.0) -> dict[str, float]:
    """The hand-written loop over the same model / batches / loss / fastai optimizer, with the
    same AR/TAR penalty (``alpha``/``beta``) fastai's ``RNNRegularizer`` adds: it is part of the
    recipe's loss, not framework overhead."""
    model.train()
    if hasattr(model, "reset"):
        model.reset()
    scaler = torch.amp.GradScaler("cuda") if fp16 else None
    sopt = _ScalerOpt(opt)
    tok = real = 0
    t0 = t1 = 0.0
    for i, (xb, yb) in enumerate(dl):
        with torch.autocast(device_type=device.type, dtype=torch.float16, enabled=fp16):
            pred = model(xb)
        out = pred[0] if isinstance(pred, tuple) else pred
        loss = loss_func(out.float(), yb)
        if isinstance(pred, tuple) and len(pred) == 3 and (alpha or beta):
            raw_out, dropped = [o[-1] if isinstance(o, (list, tuple)) else o for o in pred[1:]]
            if alpha:
                loss = loss + alpha * dropped.float().pow(2).mean()
            if beta and raw_out.shape[1] > 1:
                loss = loss + beta * (raw_out[:, 1:] - raw_out[:, :-1]).float().pow(2).mean()
        if scaler is not None:
            scaler.scale(loss).backward()
            scaler.step(sopt)
            scaler.update()
        else:
            loss.backward()
            opt.step()
        opt.zero_grad()
        _sync(device)
        if i == 0:
            t0 = time.perf_counter()
        else:
            a, b = _batch_tokens(xb, pad_idx)
            tok += a
            real += b
        t1 = time.perf_counter()
        if i >= n_batches:
            break
    dt = max(t1 - t0, 1e-9)
    return {"tokens_per_s": tok / dt, "real_tokens_per_s": real / dt, "seconds": dt}


def _summ(xs: list[float]) -> dict[str, float]:
    return {"median": statistics.median(xs), "min": min(xs), "max": max(xs), "n": len(xs)}


def compare_training_throughput(learn: Any, *, n_batches: int = 20, repeats: int = 3, lr: float = 1e-3,
                                pad_idx: int | None = None, seed: int = 0) -> dict[str, Any]:
    """Interleaved A/B of training throughput on ``learn``'s model and train DataLoader.

    Args:
        learn: a trained fastai Learner from ulmfit_ml (``LanguageModel.learner`` or
            ``MultiLabelClassifier.learner``); its weights keep changing, so call this last.
        n_batches: timed batches per run (plus one warm-up batch).
        repeats: runs per side, interleaved.
        pad_idx: count tokens different from it as real tokens (classifier); None: all are real.

    Returns:
        ``{"ulmfit_ml": {...}, "plain": {...}, "ratio": {...}}`` with tokens/s medians, min, max.
    """
    device = next(learn.model.parameters()).device
    from fastai.callback.fp16 import MixedPrecision

    from fastai.callback.rnn import RNNRegularizer

    fp16 = any(isinstance(cb, MixedPrecision) for cb in learn.cbs)
    reg = [cb for cb in learn.cbs if isinstance(cb, RNNRegularizer)]
    alpha, beta = (float(reg[0].alpha), float(reg[0].beta)) if reg else (0.0, 0.0)
    dl = learn.dls.train
    state = _replay_state(dl)
    learn.unfreeze()
    a_runs: list[dict[str, float]] = []
    b_runs: list[dict[str, float]] = []
    def run_a() -> None:
        _restore(dl, state, seed)
        a_runs.append(_learner_run(learn, n_batches, lr, device, pad_idx))

    def run_b() -> None:
        _restore(dl, state, seed)
        opt = learn.opt_func(learn.splitter(learn.model), lr=lr)
        b_runs.append(_plain_run(learn.model, dl, learn.loss_func, opt, n_batches, device, fp16, pad_idx, alpha, beta))

    for r in range(repeats):  # A B, B A, A B, ...: neither side always runs first (caches, load drift)
        for run in ((run_a, run_b) if r % 2 == 0 else (run_b, run_a)):
            run()
    a = [x["tokens_per_s"] for x in a_runs]
    b = [x["tokens_per_s"] for x in b_runs]
    pair = [x / y for x, y in zip(a, b)]
    return {
        "ulmfit_ml_tokens_per_s": _summ(a),
        "plain_loop_tokens_per_s": _summ(b),
        "ulmfit_ml_real_tokens_per_s": _summ([x["real_tokens_per_s"] for x in a_runs]),
        "ratio_of_medians": statistics.median(a) / statistics.median(b),
        "paired_ratio": _summ(pair),
        "n_batches": n_batches, "repeats": repeats, "fp16": fp16, "device": str(device),
        "plain_loop_ar_tar": [alpha, beta],
    }
