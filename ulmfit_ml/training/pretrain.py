"""Stage 1: pretraining a general-domain AWD-LSTM language model on a large corpus.

The model is fastai's (``get_language_model(AWD_LSTM, ...)``, tied embedding and decoder), so
what comes out is an ordinary :class:`~ulmfit_ml.models.lm.LanguageModel` that ``finetune_lm`` starts
from. The loop itself is a plain PyTorch loop rather than a fastai ``Learner``, for three
measured reasons (written down because the project otherwise trains with fastai):

* fastai's ``LMDataLoader`` holds every text as a tensor in RAM; here the batches are read from
  memory-mapped token ids (:mod:`ulmfit_ml.data.corpus`), so a 25M-token corpus costs ~50 MB;
* fastai resumes only at epoch boundaries, and one epoch of the corpus takes hours on a CPU;
  here a checkpoint (weights, optimizer, LSTM hidden state, RNG state, step) is written every
  ``checkpoint_every`` seconds and a resumed run continues bit for bit where it stopped;
* on a CPU the full output softmax over the vocabulary costs more than the LSTM
  (bench/RESULTS.md, "pretraining"); training uses a sampled softmax (``n_samples`` negatives
  shared by the batch, drawn from the unigram^0.75 distribution, with the log-Q correction of
  Jean et al., 2015) on the *same tied weights*, so the saved decoder is fastai's full-softmax
  ``LinearDecoder`` and held-out perplexity is measured with the full softmax.

The schedule is fastai's one-cycle (``combined_cos``: warm-up over ``pct_start``, cosine
annealing, momentum cycled inversely) or warmup-stable-decay (``schedule="wsd"``), the optimizer
AdamW (decoupled weight decay, as fastai's ``Adam``). ``init_from`` continues a language model
(the shipped one, or a saved directory) with its vocabulary: a new schedule over new tokens.
The model, token stream, sampled softmax and perplexity live in :mod:`ulmfit_ml.models.lmsteps`.
"""
from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any, Callable, Sequence

import pandas as pd
import torch
import torch.nn.functional as F

from ..utils.runtime import divergence_message, loss_diverged, resolve_device, seed_everything
from ..utils.config import PretrainConfig, config_to_dict, merge_config
from ..data.corpus import TokenCorpus, corpus_texts, tokenize_corpus
from ..utils.distrib import barrier, broadcast_object, init_distributed, is_main, on_main, rank, world_size
from ..models.lm import PRETRAINED_MODELS, LanguageModel, load_lm, lm_arch_config, pretrained_model_dir
from ..utils.persist import atomic_dir
from ..models.lmsteps import TokenStream, build_pretrain_model, decoder_input, evaluate_perplexity, sampled_softmax_loss
from ..data.tokens import TextTokenizer

__all__ = ["pretrain_lm", "lr_schedule"]

_CKPT = "checkpoint"


def _save_checkpoint(out: Path, model: torch.nn.Module, opt: torch.optim.Optimizer, step: int,
                     extra: dict[str, Any]) -> None:
    """Weights, AdamW moments, LSTM hidden state and torch RNG state as safetensors, the rest as
    JSON: a checkpoint never needs unpickling. Written atomically (temp dir + rename).

    Distributed: the weights and moments are the same on every rank; each rank's own hidden state
    and RNG state are gathered (``rank<r>.`` keys for ranks > 0) and rank 0 writes them all, so a
    resumed run continues every rank exactly; the other ranks wait until the file is there.

    A writer of its own, not :func:`~ulmfit_ml.training.checkpoint.save_checkpoint`: that one saves a
    fastai ``Learner`` at epoch ends, while pretraining has no Learner (its own loop, sampled softmax)
    and checkpoints mid-epoch by time, with the token stream's position and hidden state."""
    from safetensors.torch import save_file

    own = {}
    for i, hc in enumerate(model[0].hidden):
        own[f"hidden.{i}.h"], own[f"hidden.{i}.c"] = hc[0].detach().cpu().contiguous().clone(), hc[1].detach().cpu().contiguous().clone()
    own["rng.torch"] = torch.get_rng_state()
    per_rank = [own]
    if world_size() > 1 and torch.distributed.is_initialized():
        per_rank = [None] * world_size()
        torch.distributed.all_gather_object(per_rank, own)
    if is_main():
        tensors = {f"model.{k}": v.detach().contiguous().clone() for k, v in model.state_dict().items()}
        params = [p for g in opt.param_groups for p in g["params"]]
        for i, p in enumerate(params):
            for k, v in opt.state.get(p, {}).items():
                tensors[f"opt.{i}.{k}"] = v.detach().contiguous().clone() if torch.is_tensor(v) else torch.tensor(v)
        tensors = {k: v.cpu() for k, v in tensors.items()}
        for r, st in enumerate(per_rank):
            tensors.update({(f"rank{r}.{k}" if r else k): v for k, v in st.items()})

        def write(tmp: Path) -> None:
            save_file(tensors, str(tmp / "state.safetensors"))
            (tmp / "state.json").write_text(json.dumps({"step": step, "world_size": len(per_rank), **extra}),
                                            encoding="utf-8")

        atomic_dir(out / _CKPT, write, overwrite=True)
    barrier()


def _load_checkpoint(out: Path, model: torch.nn.Module, opt: torch.optim.Optimizer, me: int = 0) -> dict[str, Any]:
    """Restore a checkpoint into ``model`` and ``opt``; rank ``me`` takes its own hidden and RNG state."""
    from safetensors.torch import load_file

    t = load_file(str(out / _CKPT / "state.safetensors"), device=str(next(model.parameters()).device))
    info = json.loads((out / _CKPT / "state.json").read_text(encoding="utf-8"))
    if info.get("world_size", 1) != world_size():
        raise ValueError(f"The checkpoint in {out} was made by {info.get('world_size', 1)} process(es); resume it with "
                         f"as many (this run has {world_size()}).")
    if me:  # this rank's own state under the plain names
        t.update({k[len(f"rank{me}."):]: v for k, v in t.items() if k.startswith(f"rank{me}.")})
    model.load_state_dict({k[6:]: v for k, v in t.items() if k.startswith("model.")})
    params = [p for g in opt.param_groups for p in g["params"]]
    for i, p in enumerate(params):
        st = {k.split(".", 2)[2]: v for k, v in t.items() if k.startswith(f"opt.{i}.")}
        if st:
            opt.state[p] = st
    model[0].hidden = [(t[f"hidden.{i}.h"], t[f"hidden.{i}.c"]) for i in range(len(model[0].hidden))]
    model[0].bs = model[0].hidden[0][0].shape[1]  # fastai re-sizes the hidden state when bs differs
    torch.set_rng_state(t["rng.torch"].cpu())
    return info


def _average_gradients(model: torch.nn.Module, n_ranks: int) -> None:
    """Data parallelism by hand: every rank's gradients summed (one all-reduce of one flat buffer)
    and divided by the number of ranks, which is what ``DistributedDataParallel`` computes. DDP
    itself does not fit here: the sampled softmax reads the decoder weights outside the module's
    ``forward``, which DDP's reducer does not follow."""
    params = [p for p in model.parameters() if p.requires_grad]
    grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in params]
    flat = torch.cat([g.reshape(-1) for g in grads])
    torch.distributed.all_reduce(flat)
    flat /= n_ranks
    off = 0
    for p, g in zip(params, grads):
        n = g.numel()
        p.grad = flat[off:off + n].view_as(p).clone()
        off += n


# ---------------------------------------------------------------------- the loop
def _start_lm(cfg: PretrainConfig) -> LanguageModel | None:
    """The language model a continued run starts from (``init_from``), checked against the config."""
    if cfg.init_from is None:
        return None
    src = cfg.init_from
    path = pretrained_model_dir(src, backwards=cfg.backwards) if src in PRETRAINED_MODELS else Path(src).expanduser()
    if not (path / "lm.json").exists():
        raise FileNotFoundError(f"init_from={src!r}: no language model there (expected a shipped name "
                                f"{sorted(PRETRAINED_MODELS)} or a directory saved by ulmfit_ml with lm.json).")
    lm = load_lm(path)
    if lm.backwards != cfg.backwards:
        raise ValueError(f"init_from={src!r} is a {'backward' if lm.backwards else 'forward'} model but this run has "
                         f"backwards={cfg.backwards}: pass backwards={lm.backwards} or start from the other direction.")
    want = lm_arch_config(cfg.arch)
    sizes = {k: lm.arch[k] for k in ("emb_sz", "n_hid", "n_layers")}
    if any(want[k] != v for k, v in sizes.items()):
        raise ValueError(f"init_from={src!r} has arch {sizes} but this run asks for "
                         f"{ {k: want[k] for k in sizes} }: pass arch={sizes}.")
    return lm


def _fmt_secs(s: float) -> str:
    s = int(max(s, 0))
    return f"{s // 3600}:{s % 3600 // 60:02d}:{s % 60:02d}"


def _token_corpus(corpus: str | Path | Sequence[str | Path] | TokenCorpus, cfg: PretrainConfig,
                  start: LanguageModel | None) -> TokenCorpus:
    """The corpus as cached token ids: the start model's vocabulary for a continued run, else a new one."""
    if isinstance(corpus, TokenCorpus):
        tc = corpus
    else:
        def tokenised() -> str:
            tokenizer = None
            if start is not None:  # the ids must be the start model's: its tokenizer and vocabulary
                return str(tokenize_corpus(corpus, valid_pct=cfg.valid_pct, quiet=cfg.quiet, tokenizer=start.tokenizer,
                                           vocab=start.vocab).path)
            if cfg.tokenizer == "sentencepiece":  # trained on the corpus's first lines, then kept with the LM
                tokenizer = TextTokenizer.train_sentencepiece(corpus_texts(corpus, limit=cfg.sp_train_lines),
                                                              vocab_size=cfg.sp_vocab_size, max_texts=cfg.sp_train_lines)
            return str(tokenize_corpus(corpus, max_vocab=cfg.max_vocab, min_freq=cfg.min_freq, valid_pct=cfg.valid_pct,
                                       quiet=cfg.quiet, tokenizer=tokenizer).path)

        # rank 0 tokenises (and trains the SentencePiece model) once; every rank reads its cache
        tc = TokenCorpus.load(broadcast_object(on_main(tokenised)))
    if start is not None and list(tc.vocab) != list(start.vocab):
        raise ValueError(f"The corpus {tc.path} was tokenised with another vocabulary than init_from={cfg.init_from!r}: "
                         "pass the corpus files, so that they are tokenised with the start model's vocabulary.")
    if start is None and tc.tokenizer.name != cfg.tokenizer:
        raise ValueError(f"The corpus was tokenised with {tc.tokenizer.name!r} but tokenizer={cfg.tokenizer!r}: "
                         "tokenise it again with this tokenizer (pass the corpus files), or change tokenizer.")
    return tc


def _checked_out_dir(out_dir: str | Path | None, resume: bool) -> Path | None:
    out = Path(out_dir).expanduser() if out_dir is not None else None
    if out is not None and (out / _CKPT).exists() and not resume:
        raise FileExistsError(f"{out / _CKPT} already holds a pretraining checkpoint: pass resume=True "
                              "(CLI: --resume) to continue it, or choose another out_dir.")
    if resume and not (out / _CKPT / "state.json").exists():
        raise FileNotFoundError(f"No pretraining checkpoint in {out}: nothing to resume.")
    return out


def _start_model(tc: TokenCorpus, arch: dict[str, Any], cfg: PretrainConfig, start: LanguageModel | None,
                 device: torch.device, distributed: bool, me: int) -> torch.nn.Module:
    """The model at step 0: the start model's weights, or new ones with the decoder bias at the log unigram frequencies."""
    model = build_pretrain_model(len(tc.vocab), arch, cfg.drop_mult)
    if start is not None:  # a continued run: the start model's weights (tied embedding/decoder included)
        model.load_state_dict(start.state_dict)
    else:
        with torch.no_grad():
            freq = torch.tensor(tc.counts, dtype=torch.float64) + 1.0
            model[1].decoder.bias.copy_((freq / freq.sum()).log().float())
    model.to(device)
    if distributed:  # one start for every rank; then each rank its own dropout masks and sampled negatives
        for prm in model.parameters():
            torch.distributed.broadcast(prm.data, 0)
        torch.manual_seed(cfg.seed + me)
    return model


def _warmup_stable_decay(pct_start: float, decay_pct: float, start: float, peak: float, end: float) -> Callable[[float], float]:
    """Cosine warm-up to ``peak`` over ``pct_start``, ``peak`` held, cosine decay to ``end`` over the last
    ``decay_pct``. Written with fastai's ``sched_cos`` rather than ``combine_scheds``, which asserts that
    the phases sum to exactly 1.0 and fails on float sums such as 0.1 + 0.7 + 0.2."""
    from fastai.callback.schedule import sched_cos

    def at(pos: float) -> float:
        if pos < pct_start:
            return sched_cos(start, peak, pos / pct_start)
        if pos < 1 - decay_pct:
            return peak
        return sched_cos(peak, end, (pos - (1 - decay_pct)) / decay_pct)
    return at


def lr_schedule(cfg: PretrainConfig) -> tuple[Callable[[float], float], Callable[[float], float]]:
    """The learning-rate and momentum schedules of a run (position in [0, 1] -> value): fastai's one-cycle
    (``combined_cos``) or warmup-stable-decay (``schedule="wsd"``)."""
    from fastai.callback.schedule import combined_cos

    lo, end = cfg.lr / cfg.div, cfg.lr / cfg.div_final
    if cfg.schedule == "wsd":
        return (_warmup_stable_decay(cfg.pct_start, cfg.decay_pct, lo, cfg.lr, end),
                _warmup_stable_decay(cfg.pct_start, cfg.decay_pct, *cfg.moms))
    return combined_cos(cfg.pct_start, lo, cfg.lr, end), combined_cos(cfg.pct_start, *cfg.moms)


class _Loop:
    """The training loop's state (optimizer, schedules, step, clocks, history) and its steps."""

    def __init__(self, model: torch.nn.Module, tc: TokenCorpus, cfg: PretrainConfig, arch: dict[str, Any],
                 device: torch.device, out: Path | None, distributed: bool, n_ranks: int, me: int) -> None:
        self.model, self.cfg, self.arch, self.device, self.out = model, cfg, arch, device, out
        self.distributed, self.n_ranks, self.me, self.V = distributed, n_ranks, me, len(tc.vocab)
        # each rank reads its own contiguous 1/n_ranks of the training ids (bs is per process)
        share = len(tc.train) // n_ranks
        self.stream = TokenStream(tc.train[me * share:(me + 1) * share] if distributed else tc.train, cfg.bs, cfg.seq_len,
                              cfg.backwards)
        self.per_epoch = self.stream.n_batches
        total = int(self.per_epoch * cfg.epochs)
        if cfg.max_tokens:
            total = min(total, max(1, cfg.max_tokens // (cfg.bs * cfg.seq_len * n_ranks)))
        if total < 1:
            raise ValueError(f"epochs={cfg.epochs} gives no training step ({self.per_epoch} batches per epoch).")
        self.total = total
        self.opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, betas=(cfg.moms[0], 0.99), eps=1e-5,
                                     weight_decay=cfg.wd)
        self.lr_sched, self.mom_sched = lr_schedule(cfg)
        probs = torch.tensor(tc.counts, dtype=torch.float64).clamp_min(1) ** 0.75
        probs = (probs / probs.sum()).float()
        self.probs, self.log_q = probs.to(device), probs.log().to(device)
        self.offset = int(round(cfg.data_offset * self.per_epoch))
        self.step = self.start_step = 0
        self.seconds_before, self.history = 0.0, []
        self.tokens_per_step = cfg.bs * cfg.seq_len * n_ranks  # every rank's batch
        self.start_loss: float | None = None  # this run's first loss: the divergence check's reference
        model.train()
        model[0].reset()

    def resume(self) -> None:
        info = _load_checkpoint(self.out, self.model, self.opt, self.me)
        if info.get("total_steps") != self.total or info.get("vocab_size") != self.V:
            raise ValueError(f"The checkpoint in {self.out} was made with {info.get('total_steps')} steps and a "
                             f"{info.get('vocab_size')}-token vocab; this run has {self.total} and {self.V}: resume "
                             "with the same corpus and options.")
        self.step, self.seconds_before, self.history = info["step"], info["seconds"], info.get("history", [])
        self.start_step = self.step

    def train_step(self) -> float:
        """One batch at the schedule's position; the loss."""
        cfg, model = self.cfg, self.model
        pos = self.step / self.total
        for g in self.opt.param_groups:
            g["lr"] = float(self.lr_sched(pos))
            g["betas"] = (float(self.mom_sched(pos)), 0.99)
        b = (self.step + self.offset) % self.per_epoch
        if b == 0:
            model[0].reset()
        x, y = (t.to(self.device) for t in self.stream.batch(b))
        h = decoder_input(model, x).reshape(-1, self.arch["emb_sz"])
        dec = model[1].decoder
        if cfg.softmax == "sampled":
            loss = sampled_softmax_loss(h, y.reshape(-1), dec.weight, dec.bias, self.log_q, self.probs, cfg.n_samples)
        else:
            loss = F.cross_entropy(F.linear(h, dec.weight, dec.bias), y.reshape(-1))
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        if self.distributed:
            _average_gradients(model, self.n_ranks)
        if cfg.clip:
            torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.clip)
        self.opt.step()
        self.step += 1
        return float(loss.detach())

    def log(self, mean_loss: float, seconds_here: float) -> None:
        tps = (self.step - self.start_step) * self.tokens_per_step / max(seconds_here, 1e-9)
        eta = (self.total - self.step) * self.tokens_per_step / max(tps, 1e-9)
        if not self.cfg.quiet and is_main():
            print(f"pretrain step {self.step:,}/{self.total:,} ({100 * self.step / self.total:.1f}%) train loss "
                  f"{mean_loss:.3f} | {tps:,.0f} tokens/s | elapsed {_fmt_secs(self.seconds_before + seconds_here)} "
                  f"| ETA {_fmt_secs(eta)}", file=sys.stdout, flush=True)
        self.history.append({"step": self.step, "train_loss": mean_loss, "lr": self.opt.param_groups[0]["lr"],
                             "tokens_per_s": tps, "seconds": self.seconds_before + seconds_here})

    def save(self, seconds: float, **extra: Any) -> None:
        _save_checkpoint(self.out, self.model, self.opt, self.step, {"total_steps": self.total, "vocab_size": self.V,
                                                                     "history": self.history, "seconds": seconds, **extra})

    def run(self) -> float:
        """Train to the end of the schedule, logging and checkpointing by the clock; the training seconds."""
        cfg = self.cfg
        t0 = time.perf_counter()
        last_ckpt = last_log = t0
        run_loss, n_run = 0.0, 0
        while self.step < self.total:
            loss_value = self.train_step()
            diverged = loss_diverged(loss_value, self.start_loss)
            if self.start_loss is None and not diverged:
                self.start_loss = loss_value
            run_loss, n_run = run_loss + loss_value, n_run + 1
            now = time.perf_counter()
            if now - last_log >= cfg.log_every or self.step == self.total:
                self.log(run_loss / n_run, now - t0)
                run_loss, n_run, last_log = 0.0, 0, now
            due = cfg.checkpoint_every_steps and self.step % cfg.checkpoint_every_steps == 0
            due = due or (cfg.checkpoint_every and now - last_ckpt >= cfg.checkpoint_every)
            if self.distributed:  # every rank's clock (and divergence check) decides alike: rank 0's
                due, diverged = broadcast_object((due, diverged))
            if diverged:  # a NaN/inf or exploding loss: stop before a checkpoint keeps the broken weights
                raise ValueError(divergence_message(f"at pretraining step {self.step:,}/{self.total:,}", loss_value,
                                                    self.start_loss, "pretrain.lr", cfg.lr))
            if self.out is not None and due and self.step < self.total:
                self.save(self.seconds_before + now - t0)
                last_ckpt = now
        seconds = self.seconds_before + time.perf_counter() - t0
        if self.out is not None:
            self.save(seconds, finished=True)
        return seconds


def _held_out(model: torch.nn.Module, tc: TokenCorpus, cfg: PretrainConfig) -> dict[str, Any]:
    if len(tc.valid) <= 4 * cfg.seq_len:
        return {}
    return evaluate_perplexity(model, tc.valid, bs=max(1, min(32, len(tc.valid) // (2 * cfg.seq_len))),
                               seq_len=cfg.seq_len, max_tokens=cfg.valid_max_tokens, backwards=cfg.backwards)


def pretrain_lm(corpus: str | Path | Sequence[str | Path] | TokenCorpus, *, config: PretrainConfig | None = None,
                out_dir: str | Path | None = None, resume: bool = False, **options: Any) -> LanguageModel:
    """Pretrain an AWD-LSTM language model on a general-domain corpus, from scratch or on from a
    language model (``init_from``).

    The result is ULMFiT's stage-1 model: save it (``lm.save(dir)``) and pass the directory as
    ``pretrained=`` to :func:`~ulmfit_ml.finetune_lm`.

    Args:
        corpus: a ``.txt`` file (one paragraph per line), a folder of ``.txt`` files, a list of
            either, a list of texts, or a :class:`~ulmfit_ml.data.corpus.TokenCorpus`. Tokenised once and cached
            (memory-mapped ids).
        config: a :class:`~ulmfit_ml.utils.config.PretrainConfig`; keyword ``options`` override its
            fields (``arch``, ``init_from``, ``max_vocab``, ``epochs``, ``max_tokens``, ``bs``, ``seq_len``,
            ``lr``, ``schedule``, ``softmax``, ``n_samples``, ``backwards``, ``checkpoint_every`` ...).
        out_dir: where checkpoints (and nothing else) are written while training; needed for
            ``resume``. A finished run leaves ``out_dir/checkpoint`` in place.
        resume: continue from ``out_dir/checkpoint`` (same corpus and config) instead of
            starting over.

    Returns:
        :class:`~ulmfit_ml.models.lm.LanguageModel` with held-out perplexity in ``metrics``
        (``tokens_seen`` this run, ``tokens_seen_total`` with the start model's).
    """
    cfg = merge_config(PretrainConfig, config, options)
    if resume and out_dir is None:
        raise ValueError("resume=True needs out_dir= (the folder holding the checkpoint).")
    distributed = init_distributed()  # launched by torchrun / accelerate: data-parallel, see _average_gradients
    n_ranks, me = (world_size(), rank()) if distributed else (1, 0)
    start = _start_lm(cfg)
    tc = _token_corpus(corpus, cfg, start)
    out = _checked_out_dir(out_dir, resume)
    barrier()  # every rank checked out_dir before rank 0 writes into it
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    seed_everything(cfg.seed)
    arch = lm_arch_config(cfg.arch)
    model = _start_model(tc, arch, cfg, start, resolve_device(cfg.device), distributed, me)
    loop = _Loop(model, tc, cfg, arch, resolve_device(cfg.device), out, distributed, n_ranks, me)
    if resume:
        loop.resume()
    train_seconds = loop.run()
    ev = broadcast_object(on_main(lambda: _held_out(model, tc, cfg)))  # same weights on every rank: rank 0 scores
    seen = loop.step * loop.tokens_per_step
    before = 0 if start is None else int(start.metrics.get("tokens_seen_total", start.metrics.get("tokens_seen", 0)))
    metrics = {"train_seconds": round(train_seconds, 1), "tokens_seen": seen, "tokens_seen_total": before + seen,
               "tokens_per_s": round(seen / max(train_seconds, 1e-9), 1), "steps": loop.step, **ev}
    if not cfg.quiet and ev and is_main():
        print(f"held-out perplexity {ev['perplexity']:.1f} (accuracy {ev['accuracy']:.3f}, "
              f"{ev['valid_tokens']:,} tokens)", flush=True)
    state = {k: v.detach().float().cpu().clone() for k, v in model.state_dict().items()}
    config_dict = {**config_to_dict(cfg), "corpus": tc.meta.get("sources"), "corpus_tokens": len(tc.train)}
    return LanguageModel(tc.vocab, arch, state, backwards=cfg.backwards, history=pd.DataFrame(loop.history),
                         metrics=metrics, config=config_dict, tokenizer=tc.tokenizer)
