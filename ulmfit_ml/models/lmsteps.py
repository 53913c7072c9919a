"""The pieces of a language model's pretraining step: fastai's AWD-LSTM LM, the token stream over
memory-mapped ids, the sampled softmax on the tied output embedding, and held-out perplexity with
the full softmax (used by :mod:`ulmfit_ml.training.pretrain` and ``bench/pretrain_speed.py``)."""
from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from ..utils.arch import scale_dropouts

__all__ = ["build_pretrain_model", "TokenStream", "sampled_softmax_loss", "decoder_input", "evaluate_perplexity"]


def build_pretrain_model(vocab_size: int, arch: dict[str, Any], drop_mult: float) -> torch.nn.Module:
    """fastai's AWD-LSTM language model (encoder ``0.*``, tied ``LinearDecoder`` ``1.*``)."""
    from fastai.text.models.awdlstm import AWD_LSTM
    from fastai.text.models.core import get_language_model

    return get_language_model(AWD_LSTM, vocab_size, config=scale_dropouts(arch, drop_mult))


class TokenStream:
    """``bs`` contiguous streams over a 1-d id array, cut into ``seq_len`` windows (as fastai's
    ``LMDataLoader`` does for one epoch without shuffling); reversed for a backward model."""

    def __init__(self, ids: np.ndarray, bs: int, seq_len: int, backwards: bool) -> None:
        self.ids, self.bs, self.seq_len, self.backwards = ids, bs, seq_len, backwards
        self.row_len = len(ids) // bs
        self.n_batches = (self.row_len - 1) // seq_len
        if self.n_batches < 1:
            raise ValueError(f"The corpus has {len(ids):,} tokens: too few for bs={bs} x seq_len={seq_len}; "
                             "lower bs or seq_len, or add text.")

    def batch(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        s = i * self.seq_len
        n = len(self.ids)
        rows = []
        for r in range(self.bs):
            a = r * self.row_len + s
            if self.backwards:  # position p of the reversed array is n-1-p of the stored one
                rows.append(np.asarray(self.ids[n - 1 - a - self.seq_len:n - a])[::-1])
            else:
                rows.append(np.asarray(self.ids[a:a + self.seq_len + 1]))
        arr = torch.from_numpy(np.stack(rows).astype(np.int64))
        return arr[:, :-1], arr[:, 1:]


def sampled_softmax_loss(h: torch.Tensor, y: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor,
                  log_q: torch.Tensor, probs: torch.Tensor, n_samples: int) -> torch.Tensor:
    """Sampled softmax cross-entropy with shared negatives and log-Q correction; the true class
    is masked out of the negatives (accidental hits)."""
    neg = torch.multinomial(probs, n_samples, replacement=True)
    corr = math.log(n_samples)
    true_logit = (h * weight[y]).sum(1) + bias[y] - (log_q[y] + corr)
    neg_logit = h @ weight[neg].t() + bias[neg] - (log_q[neg] + corr)
    neg_logit = neg_logit.masked_fill(neg[None, :] == y[:, None], float("-inf"))
    logits = torch.cat([true_logit[:, None], neg_logit], 1)
    return F.cross_entropy(logits, torch.zeros(len(y), dtype=torch.long, device=logits.device))


def decoder_input(model: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    """Encoder output after the decoder's output dropout (what the decoder multiplies)."""
    enc, dec = model[0], model[1]
    return dec.output_dp(enc(x))


@torch.no_grad()
def evaluate_perplexity(model: torch.nn.Module, ids: np.ndarray, *, bs: int = 32, seq_len: int = 70,
                        max_tokens: int | None = None, backwards: bool = False) -> dict[str, float]:
    """Full-softmax loss, perplexity and next-token accuracy of ``model`` on held-out ``ids``."""
    ids = ids[:max_tokens] if max_tokens else ids
    stream = TokenStream(ids, bs, seq_len, backwards)
    was_training = model.training
    model.eval()
    model[0].reset()
    tot_loss, tot_correct, n = 0.0, 0, 0
    for i in range(stream.n_batches):
        x, y = (t.to(next(model.parameters()).device) for t in stream.batch(i))
        out = model(x)[0]
        tot_loss += float(F.cross_entropy(out.reshape(-1, out.shape[-1]), y.reshape(-1), reduction="sum"))
        tot_correct += int((out.argmax(-1) == y).sum())
        n += y.numel()
    model[0].reset()
    model.train(was_training)
    loss = tot_loss / max(n, 1)
    return {"valid_loss": loss, "perplexity": math.exp(min(loss, 50)), "accuracy": tot_correct / max(n, 1),
            "valid_tokens": n}


# ---------------------------------------------------------------------- checkpoints
