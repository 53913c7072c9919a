"""Training throughput: ulmfit_ml's fastai ``Learner`` versus a hand-written loop.

Both sides run the same model, the same DataLoader (replayed with the same random state, so
the same batches in the same order), the same loss and fastai's own optimizer; the plain
loop is ``forward -> loss -> backward -> step -> zero_grad`` with no ``Learner`` and no
callbacks (AMP by hand on CUDA, as fastai's ``MixedPrecision`` does). Runs are interleaved
(A B, B A, A B, ...) so that load from other processes on a shared machine hits both alike.

Every batch is timed on its own. Both sides run the *same* sequence of batches (checked: the
per-batch token counts must match), so the headline estimate is, per side, the total tokens
over the sum of per-batch median times (median over the repeats of batch i's time). A fixed
per-batch framework cost is in every repeat of every batch and survives the median; a burst of
load from another process hits a few batches of one run and does not. This matters on a
2-core shared machine, where whole runs of the same side differ by 10-20 % (RESULTS.md notes).
The older estimates (median of whole-run tokens/s, per-pair ratios, best batch times as
``timeit`` reports) are kept next to it.
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


class _BatchClock:
    """Per-batch wall times and token counts of one run (the first batch is a warm-up, untimed)."""

    def __init__(self, device: torch.device, pad_idx: int | None) -> None:
        self.device, self.pad_idx = device, pad_idx
        self.n, self.last = 0, 0.0
        self.batch_s: list[float] = []
        self.batch_tokens: list[int] = []
        self.real = 0

    def tick(self, xb: torch.Tensor) -> int:
        """Call after each training step with its input batch; returns the batches seen so far."""
        _sync(self.device)
        now = time.perf_counter()
        if self.n:
            tok, real = _batch_tokens(xb, self.pad_idx)
            self.batch_s.append(now - self.last)
            self.batch_tokens.append(tok)
            self.real += real
        self.last = now
        self.n += 1
        return self.n

    def result(self) -> dict[str, Any]:
        dt = max(sum(self.batch_s), 1e-9)
        return {"tokens_per_s": sum(self.batch_tokens) / dt, "real_tokens_per_s": self.real / dt, "seconds": dt,
                "batch_s": self.batch_s, "batch_tokens": self.batch_tokens}


def _learner_run(learn: Any, n_batches: int, lr: float, device: torch.device, pad_idx: int | None) -> dict[str, Any]:
    """ulmfit_ml's path: ``learn.fit_one_cycle`` (what finetune_lm / train_classifier call),
    quiet, stopped after ``n_batches`` timed batches (the first batch is a warm-up)."""
    from fastai.callback.core import Callback, CancelFitException

    clock = _BatchClock(device, pad_idx)

    class _Timer(Callback):
        order = 100

        def after_batch(self) -> None:
            if self.training and clock.tick(self.learn.xb[0]) > n_batches:
                raise CancelFitException()

    with learn.no_bar(), learn.no_logging():
        learn.fit_one_cycle(1, lr, cbs=[_Timer()])
    return clock.result()


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
               fp16: bool, pad_idx: int | None, alpha: float = 0.0, beta: float = 0.0,
               cast: bool = False) -> dict[str, Any]:
    """The hand-written loop over the same model / batches / loss / fastai optimizer, with the
    same AR/TAR penalty (``alpha``/``beta``) fastai's ``RNNRegularizer`` adds: it is part of the
    recipe's loss, not framework overhead. ``cast``: turn fastai's tensor subclasses
    (``TensorText``...) into plain ``Tensor``s first, as the Learner's ``CastToTensor`` does
    (subclasses cost a Python ``__torch_function__`` call per op)."""
    model.train()
    if hasattr(model, "reset"):
        model.reset()
    scaler = torch.amp.GradScaler("cuda") if fp16 else None
    sopt = _ScalerOpt(opt)
    clock = _BatchClock(device, pad_idx)
    for xb, yb in dl:
        if cast:
            xb, yb = xb.as_subclass(torch.Tensor), yb.as_subclass(torch.Tensor)
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
        if clock.tick(xb) > n_batches:
            break
    return clock.result()


def _summ(xs: list[float]) -> dict[str, float]:
    return {"median": statistics.median(xs), "min": min(xs), "max": max(xs), "n": len(xs)}


def _per_batch(runs: list[dict[str, Any]]) -> dict[str, float]:
    """Tokens/s from the per-batch median (and best) times over the repeats of one side."""
    n = min(len(r["batch_s"]) for r in runs)
    times = np.array([r["batch_s"][:n] for r in runs])  # (repeats, batches)
    tokens = float(sum(runs[0]["batch_tokens"][:n]))
    return {"median_tokens_per_s": tokens / max(float(np.median(times, axis=0).sum()), 1e-9),
            "best_tokens_per_s": tokens / max(float(times.min(axis=0).sum()), 1e-9),
            "median_batch_ms": 1000 * float(np.median(times))}


def compare_training_throughput(learn: Any, *, n_batches: int = 20, repeats: int = 3, lr: float = 1e-3,
                                pad_idx: int | None = None, seed: int = 0, plain_cast: bool = False) -> dict[str, Any]:
    """Interleaved A/B of training throughput on ``learn``'s model and train DataLoader.

    Args:
        learn: a trained fastai Learner from ulmfit_ml (``LanguageModel.learner`` or
            ``MultiLabelClassifier.learner``); its weights keep changing, so call this last.
        n_batches: timed batches per run (plus one warm-up batch).
        repeats: runs per side, interleaved.
        pad_idx: count tokens different from it as real tokens (classifier); None: all are real.
        plain_cast: also time a third side, the plain loop casting batches to plain ``Tensor``
            as ``CastToTensor`` does (a like-for-like reference for the Learner's own overhead).

    Returns:
        ``ratio`` (the headline: ulmfit_ml / plain from per-batch median times, see the module
        docstring), ``ratio_best_batches``, ``per_batch`` (tokens/s of each side), the whole-run
        tokens/s of each side (median, min, max), ``ratio_of_medians``, ``paired_ratio`` and
        ``same_batches`` (both sides saw the same per-batch token counts in every run).
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
    a_runs: list[dict[str, Any]] = []
    b_runs: list[dict[str, Any]] = []
    c_runs: list[dict[str, Any]] = []

    def run_a() -> None:
        _restore(dl, state, seed)
        a_runs.append(_learner_run(learn, n_batches, lr, device, pad_idx))

    def run_plain(runs: list[dict[str, Any]], cast: bool) -> None:
        _restore(dl, state, seed)
        opt = learn.opt_func(learn.splitter(learn.model), lr=lr)
        runs.append(_plain_run(learn.model, dl, learn.loss_func, opt, n_batches, device, fp16, pad_idx, alpha, beta,
                               cast=cast))

    sides = [run_a, lambda: run_plain(b_runs, False)] + ([lambda: run_plain(c_runs, True)] if plain_cast else [])
    for r in range(repeats):  # A B, B A, ... (A B C, B C A, C A B): no side always first (caches, drift)
        for run in sides[r % len(sides):] + sides[:r % len(sides)]:
            run()
    a = [x["tokens_per_s"] for x in a_runs]
    b = [x["tokens_per_s"] for x in b_runs]
    pair = [x / y for x, y in zip(a, b)]
    pa, pb = _per_batch(a_runs), _per_batch(b_runs)
    ref = b_runs[0]["batch_tokens"]
    same = all(r["batch_tokens"] == ref for r in a_runs + b_runs + c_runs)
    out: dict[str, Any] = {
        "ratio": pa["median_tokens_per_s"] / pb["median_tokens_per_s"],
        "ratio_best_batches": pa["best_tokens_per_s"] / pb["best_tokens_per_s"],
        "per_batch": {"ulmfit_ml": pa, "plain_loop": pb},
        "same_batches": same,
        "ulmfit_ml_tokens_per_s": _summ(a),
        "plain_loop_tokens_per_s": _summ(b),
        "ulmfit_ml_real_tokens_per_s": _summ([x["real_tokens_per_s"] for x in a_runs]),
        "ratio_of_medians": statistics.median(a) / statistics.median(b),
        "paired_ratio": _summ(pair),
        "n_batches": n_batches, "repeats": repeats, "fp16": fp16, "device": str(device),
        "plain_loop_ar_tar": [alpha, beta],
    }
    if c_runs:
        pc = _per_batch(c_runs)
        out.update({"plain_loop_cast_per_batch": pc, "ratio_vs_plain_cast": pa["median_tokens_per_s"] / pc["median_tokens_per_s"],
                    "plain_loop_cast_tokens_per_s": _summ([x["tokens_per_s"] for x in c_runs])})
    return out
