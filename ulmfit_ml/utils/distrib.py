"""Multi-process training launched by ``torchrun`` / ``accelerate launch``: rank helpers and the
context that puts a fastai ``Learner`` in distributed data-parallel mode.

A launcher starts one process per GPU (or CPU worker) with ``WORLD_SIZE``, ``RANK`` and
``LOCAL_RANK`` in the environment; :func:`finetune_lm` and :func:`train_classifier` see them and
train distributed without any change to the calling code. Without those variables (or with
``WORLD_SIZE=1``) nothing here does anything: single-process training is untouched.

* :func:`init_distributed` joins the process group once (``nccl`` on GPUs, ``gloo`` on CPUs)
  and pins each process to its ``LOCAL_RANK`` GPU.
* :func:`distributed_ctx` wraps one training (all its ``fit`` calls) in fastai's distributed
  mode as fastai's ``Learner.distrib_ctx`` does (its ``DistributedTrainer``: the model in
  ``DistributedDataParallel`` through ``accelerate``, every ``DataLoader`` sharded by
  ``DistributedDL``, validation metrics on the predictions gathered from every rank), with two
  fixes to the sharding: ``gloo`` on CPUs, and language-model loaders (``_trainer_class``).
* Only rank 0 writes files (:func:`is_main`); :func:`barrier` makes the others wait for them.

fastai's distributed module needs ``accelerate`` (``pip install ulmfit_ml[distributed]``); it
is imported inside the functions that use it, so single-process use never needs it.
"""
from __future__ import annotations

import contextlib
import os
from typing import Any, Callable, Iterator

import torch

__all__ = ["world_size", "rank", "local_rank", "is_distributed", "is_main", "init_distributed", "barrier",
           "broadcast_object", "on_main", "unwrap_model", "distributed_ctx", "local_only"]


def world_size() -> int:
    """Number of processes of a launched run (``WORLD_SIZE``; 1 when not launched)."""
    return int(os.environ.get("WORLD_SIZE", "1") or 1)


def rank() -> int:
    """This process's global rank (``RANK``; 0 when not launched)."""
    return int(os.environ.get("RANK", "0") or 0)


def local_rank() -> int:
    """This process's rank on its node (``LOCAL_RANK``): the GPU it uses."""
    return int(os.environ.get("LOCAL_RANK", "0") or 0)


def is_distributed() -> bool:
    """Launched with more than one process (``torchrun``, ``accelerate launch``)."""
    return world_size() > 1


def is_main() -> bool:
    """Rank 0: the process that writes run directories, checkpoints, models and logs."""
    return rank() == 0


def init_distributed() -> bool:
    """Join the process group of a launched run, once (later calls do nothing).

    ``nccl`` when CUDA is available (each process on GPU ``LOCAL_RANK``), else ``gloo``; the
    rendezvous is the launcher's (``MASTER_ADDR``/``MASTER_PORT`` in the environment).

    Returns:
        ``True`` when this is a multi-process run (the group is up), ``False`` otherwise.
    """
    if not is_distributed():
        return False
    if not torch.distributed.is_available():
        raise RuntimeError(f"WORLD_SIZE={world_size()} but this torch build has no torch.distributed.")
    if not torch.distributed.is_initialized():
        if torch.cuda.is_available():
            torch.cuda.set_device(local_rank())  # device "cuda" below means this process's GPU
        backend = "nccl" if torch.cuda.is_available() else "gloo"
        torch.distributed.init_process_group(backend=backend, init_method="env://")
    return True


def barrier() -> None:
    """Wait for every rank (nothing when single-process)."""
    if is_distributed() and torch.distributed.is_initialized():
        torch.distributed.barrier()


def broadcast_object(obj: Any) -> Any:
    """Rank 0's ``obj`` on every rank (``obj`` itself when single-process)."""
    if not (is_distributed() and torch.distributed.is_initialized()):
        return obj
    box = [obj]
    torch.distributed.broadcast_object_list(box, src=0)
    return box[0]


def unwrap_model(model: torch.nn.Module) -> torch.nn.Module:
    """The model inside a ``DistributedDataParallel`` / ``DataParallel`` wrapper (else ``model``):
    its ``state_dict`` has the plain key names a single-process run saves."""
    wrappers = (torch.nn.parallel.DistributedDataParallel, torch.nn.DataParallel)
    return model.module if isinstance(model, wrappers) else model


def _trainer_class() -> type:
    """fastai's ``DistributedTrainer`` with two changes to its ``DistributedDL``, nothing else.

    1. ``gloo``: fastai's ``DistributedDL._broadcast`` (rank 0 sends its batch order to the other
       ranks) moves the index tensor to CUDA unconditionally ("nccl only works with cuda
       tensors"), so without GPUs every ``DataLoader`` iteration fails. With ``gloo`` the
       indices are broadcast from the CPU; with ``nccl`` fastai's own method runs.
    2. Language-model loaders: ``DistributedDL`` gives each rank a contiguous ``1/world_size``
       slice of the sample indices and re-batches it by ``bs``. An ``LMDataLoader``'s sample
       ``i`` is stream ``i % bs`` at time step ``i // bs``, every batch one time step (the last
       one shorter), so a slice that does not start on a step boundary mixes two steps of
       different lengths in one batch and collation fails (seen with 2 ranks whenever the
       number of steps is odd). :class:`_LMDistributedDL` hands out whole time steps: rank ``r``
       gets the ``r``-th contiguous block of ``ceil(steps / world_size)`` steps (its text
       streams stay contiguous, so the LSTM state carries over as in one process), the last
       block topped up with the first steps so every rank runs the same number of batches.

    The model wrapping (``accelerate``'s ``prepare``: ``DistributedDataParallel``, without
    ``device_ids`` on CPU), classifier sharding, padding and the gathering of validation
    predictions are fastai's own.
    """
    from fastai.distributed import DistributedDL, DistributedTrainer
    from fastai.text.data import LMDataLoader
    from fastai.torch_core import LongTensor

    class _DistributedDL(DistributedDL):
        def _broadcast(self, t: Any, rank: int) -> list:
            if torch.distributed.get_backend() == "nccl":
                return super()._broadcast(t, rank)
            t = LongTensor(t)
            torch.distributed.broadcast(t, rank)
            return t.tolist()

    class _LMDistributedDL(_DistributedDL):
        def get_idxs(self) -> list:
            idxs = self._broadcast(list(self.dl.get_idxs()), 0)
            bs = self.dl.bs
            steps = [idxs[i:i + bs] for i in range(0, len(idxs), bs)]
            per = -(-len(steps) // self.world_size)
            mine = steps[self.rank * per:(self.rank + 1) * per]
            mine += (steps * per)[:per - len(mine)]
            self.n = self.n_padded = len(idxs)  # nothing to un-pad: an LM gathers only scalar losses and metrics
            return [i for step in mine for i in step]

    class _UlmfitDistributedTrainer(DistributedTrainer):
        def _wrap_dl(self, dl: Any) -> Any:
            if isinstance(dl, DistributedDL):
                return dl
            return (_LMDistributedDL if isinstance(dl, LMDataLoader) else _DistributedDL)(dl, device=dl.device)

    return _UlmfitDistributedTrainer


@contextlib.contextmanager
def distributed_ctx(learn: Any) -> Iterator[Any]:
    """Train ``learn`` distributed inside the block when this is a launched multi-process run.

    Every ``fit`` in the block runs data-parallel: each rank reads its own ``1/world_size`` of
    every epoch's batches (``bs`` is the per-process batch size), gradients are averaged, and
    the validation metrics are computed on the predictions gathered from all ranks (the whole
    validation set). On exit the model is the plain (unwrapped) module again, the same on every
    rank. Single-process: the block runs unchanged.
    """
    if not init_distributed():
        yield learn
        return
    try:
        import accelerate  # noqa: F401 - fastai's DistributedTrainer is built on it
    except ImportError as e:
        raise ImportError("Distributed training (WORLD_SIZE > 1) uses fastai's DistributedTrainer, which needs "
                          "accelerate: pip install 'ulmfit_ml[distributed]' (or pip install accelerate).") from e
    from fastai.callback.progress import ProgressCallback

    # fastai's Learner.distrib_ctx (not in a notebook), with the trainer above. sync_bn: the
    # classifier head's BatchNorm layers see the global batch on GPUs; torch's SyncBatchNorm
    # runs on GPUs only, so on CPUs each rank normalises its own part of the batch.
    # cpu=True: accelerate treats a launched run without GPUs as multi-CPU (DistributedDataParallel
    # over gloo) only when told so; otherwise it leaves the model unwrapped and ranks diverge.
    gpu = torch.cuda.is_available()
    learn.add_cb(_trainer_class()(sync_bn=gpu) if gpu else _trainer_class()(sync_bn=False, cpu=True))
    if rank():
        learn.remove_cb(ProgressCallback)
    try:
        yield learn
    finally:
        learn.detach_distributed()


def on_main(fn: Callable[[], Any]) -> Any:
    """Run ``fn`` on rank 0 only; its exception, if any, is raised on every rank (so no rank
    goes on to wait for the others at a collective). Returns ``fn()`` on rank 0, ``None`` elsewhere.
    Single-process: ``fn()``."""
    if not (is_distributed() and torch.distributed.is_initialized()):
        return fn()
    out, err = None, None
    if is_main():
        try:
            out = fn()
        except Exception as e:  # noqa: BLE001 - sent to the other ranks, then raised here too
            err = e
    err = broadcast_object(err)
    if err is not None:
        raise err
    return out


@contextlib.contextmanager
def local_only() -> Iterator[None]:
    """fastai gathers the outputs of every ``get_preds`` batch from all ranks whenever
    ``WORLD_SIZE > 1`` (``torch_core.num_distrib`` reads the variable), also on a plain
    ``DataLoader`` outside distributed training: the rows of every rank, concatenated batch by
    batch, and a collective that hangs unless every rank predicts at the same moment. Inside
    this block each rank predicts on its own (fastai sees ``WORLD_SIZE=1``)."""
    old = os.environ.get("WORLD_SIZE")
    if old is None:
        yield
        return
    os.environ["WORLD_SIZE"] = "1"
    try:
        yield
    finally:
        os.environ["WORLD_SIZE"] = old
