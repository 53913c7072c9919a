"""Which tokens drive each predicted label: per-text, per-label token attributions.

Attributions are taken on **each label's own logit** (the sigmoid output of that label), by
gradient x input or integrated gradients on the embedding output of the AWD-LSTM. fastai's
``intrinsic_attention`` (and fastinference's) differentiate a softmax over the classes,
which ties the labels together and is wrong for multi-label models, where every label is
an independent yes/no decision; Captum is not a dependency, and the two methods are a few
lines on a forward hook, hence this small module.

* ``grad_x_input``: ``sum_d  e[t, d] * dlogit/de[t, d]`` for the embedding ``e`` of token
  ``t``; fast (one backward pass for all requested labels).
* ``integrated_gradients``: the same with the gradient averaged along the straight path
  from an all-zero embedding to ``e`` (``n_steps`` points); the attributions then add up to
  ``logit(text) - logit(zero embeddings)`` (completeness).

The AWD-LSTM detaches its hidden state between ``seq_len`` chunks; texts up to the
classifier's ``max_len`` tokens are run as one chunk here (same outputs), so every token
gets the gradient of the whole text. Longer texts keep the chunking, and gradients of a
token then flow only within its chunk.
"""
from __future__ import annotations

import html
from typing import Any, Sequence

import numpy as np
import pandas as pd
import torch

from ..models.classifier import MultiLabelClassifier
from ..evaluation.thresholds import apply_thresholds
from ..utils.arch import check_at_most
from ..utils.validation import check_texts

__all__ = ["explain", "explain_html", "EXPLAIN_METHODS"]

#: Attribution methods accepted by :func:`explain`.
EXPLAIN_METHODS = ("grad_x_input", "integrated_gradients")

# rows of one forward/backward pass when integrated gradients replicates a text
_MAX_ROWS = 256
#: integrated-gradients path points (the rows of every label are listed up front)
_MAX_N_STEPS = 10_000


def _check_clf(clf: Any) -> None:
    if not isinstance(clf, MultiLabelClassifier):
        raise TypeError(f"explain needs a MultiLabelClassifier (the AWD-LSTM model), got {type(clf).__name__}; "
                        "a TfidfBaseline's explanation is its logistic-regression coefficients.")


def _label_indexes(clf: Any, labels: str | Sequence[str] | None, probs: np.ndarray) -> list[list[int]]:
    """Per text, the label columns to explain."""
    if labels is None:
        pred = apply_thresholds(probs, clf.thresholds, at_least_one=True)
        return [np.flatnonzero(row).tolist() for row in pred]
    if isinstance(labels, str):
        labels = [labels]
    labels = list(labels)
    if not labels:
        raise ValueError("labels is empty: pass None (explain each text's predicted labels) or label names.")
    unknown = [lab for lab in labels if lab not in clf.labels]
    if unknown:
        raise ValueError(f"Unknown label(s) {unknown}: the model's labels are {clf.labels}.")
    idx = [clf.labels.index(lab) for lab in dict.fromkeys(labels)]  # dict: drop repeats, keep order
    return [list(idx) for _ in range(len(probs))]


def _attribute(clf: Any, ids: torch.Tensor, label_idx: list[int], method: str, n_steps: int) -> np.ndarray:
    """Attributions ``(len(label_idx), n_tokens)`` of one numericalised text."""
    model = clf.model
    sent_enc = model[0]
    awd = sent_enc.module
    sl = int(ids.shape[0])
    alphas = torch.ones(1) if method == "grad_x_input" else (torch.arange(n_steps, dtype=torch.float32) + 0.5) / n_steps
    rows = [(j, a) for j in label_idx for a in alphas.tolist()]  # (label, alpha) per batch row
    out = np.zeros((len(label_idx), sl), dtype=np.float64)
    captured: list[tuple[torch.Tensor, torch.Tensor]] = []
    row_alpha: list[torch.Tensor] = []

    def hook(module: torch.nn.Module, inp: Any, output: torch.Tensor) -> torch.Tensor:
        base = output.detach()
        scaled = (base * row_alpha[0].to(base.device, base.dtype).view(-1, 1, 1)).requires_grad_(True)
        captured.append((base, scaled))
        return scaled

    handle = awd.encoder_dp.register_forward_hook(hook)
    old_bptt = sent_enc.bptt
    was_training = model.training
    model.eval()
    if sent_enc.max_len is None or sl <= sent_enc.max_len:
        sent_enc.bptt = max(sl, old_bptt)  # one chunk: full gradient, same outputs
    try:
        with torch.enable_grad(), torch.backends.cudnn.flags(enabled=False):  # cuDNN RNN backward needs train mode
            for s in range(0, len(rows), _MAX_ROWS):
                chunk = rows[s:s + _MAX_ROWS]
                captured.clear()
                row_alpha[:] = [torch.tensor([a for _, a in chunk], dtype=torch.float32)]
                x = ids.to(clf.device)[None, :].expand(len(chunk), sl).contiguous()
                logits = model(x)[0]
                target = torch.tensor([j for j, _ in chunk], device=logits.device)
                logits.float().gather(1, target[:, None]).sum().backward()
                emb = torch.cat([b for b, _ in captured], dim=1)  # (rows, sl, emb)
                # chunks before the last max_len tokens feed no output: no gradient there
                grad = torch.cat([e.grad if e.grad is not None else torch.zeros_like(e) for _, e in captured], dim=1)
                contrib = (emb * grad).sum(-1).double().cpu().numpy()  # (rows, sl)
                for r, (j, _) in enumerate(chunk):
                    out[label_idx.index(j)] += contrib[r] / len(alphas)
    finally:
        handle.remove()
        sent_enc.bptt = old_bptt
        model.train(was_training)
        model.zero_grad(set_to_none=True)
    return out


def explain(clf: Any, texts: Sequence[str], labels: str | Sequence[str] | None = None, *,
            method: str = "grad_x_input", n_steps: int = 32) -> pd.DataFrame:
    """Token attributions per text and label, on that label's own logit.

    Args:
        clf: a trained :class:`~ulmfit_ml.training.trainer.MultiLabelClassifier`.
        texts: list or Series of strings (a handful: one backward pass per text).
        labels: ``None`` explains each text's predicted labels (stored thresholds; the most
            probable label when none passes); label names explain those labels for every text.
        method: ``"grad_x_input"`` or ``"integrated_gradients"`` (``n_steps`` path points).

    Returns:
        DataFrame with columns ``text_id`` (position in ``texts``), ``label``, ``position``,
        ``token`` (fastai tokens, incl. ``xxbos``/``xxmaj``) and ``attribution`` (> 0 pushes
        the label's logit up), one row per token for every (text, label) pair.

    Raises:
        TypeError: ``clf`` is not a MultiLabelClassifier, or ``texts`` is a single string.
        ValueError: unknown method or label, bad ``n_steps``.
    """
    _check_clf(clf)
    if method not in EXPLAIN_METHODS:
        raise ValueError(f"method must be one of {list(EXPLAIN_METHODS)}, got {method!r}.")
    if isinstance(n_steps, bool) or not isinstance(n_steps, int) or n_steps < 1:
        raise ValueError(f"n_steps must be a positive int, got {n_steps!r}.")
    check_at_most("n_steps", n_steps, _MAX_N_STEPS, "the path points are listed (and run) per label before the "
                  "first backward pass, and integrated gradients converge with 20 to 300")
    texts = check_texts(texts)
    columns = ["text_id", "label", "position", "token", "attribution"]
    if not texts:
        return pd.DataFrame({c: pd.Series(dtype=d) for c, d in zip(columns, ("int64", "object", "int64", "object", "float64"))})
    probs = clf.predict_proba(texts)
    per_text = _label_indexes(clf, labels, probs)
    tokens = clf.tokenizer(texts)
    ids = clf._numericalize(tokens)
    parts = []
    for i, (toks, x, lab_idx) in enumerate(zip(tokens, ids, per_text)):
        if not lab_idx:
            continue
        attr = _attribute(clf, x, lab_idx, method, n_steps)
        if clf.meta.get("backwards"):  # the ids were reversed for a backward model: back to text order
            attr = attr[:, ::-1]
        toks = toks or ["xxunk"]  # _numericalize gives an empty text one unknown token
        for r, j in enumerate(lab_idx):
            parts.append(pd.DataFrame({"text_id": i, "label": clf.labels[j], "position": np.arange(len(toks)),
                                       "token": toks, "attribution": attr[r]}))
    return pd.concat(parts, ignore_index=True)[columns]


def _colour(a: float) -> str:
    # red pushes the label up, blue pushes it down; alpha = relative strength
    return f"rgba(220,38,38,{a:.2f})" if a >= 0 else f"rgba(37,99,235,{-a:.2f})"


def explain_html(clf: Any, texts: Sequence[str], labels: str | Sequence[str] | None = None, *,
                 method: str = "grad_x_input", n_steps: int = 32) -> str:
    """:func:`explain` as colour-highlighted tokens, one line per (text, label), for notebooks.

    Red tokens raise the label's logit, blue ones lower it; colour strength is relative to
    the strongest token of that line. Show it with ``IPython.display.HTML(...)``.

    Returns:
        An HTML fragment (tokens are escaped).
    """
    frame = explain(clf, texts, labels, method=method, n_steps=n_steps)
    texts = check_texts(texts)
    probs = clf.predict_proba(texts) if texts else np.zeros((0, len(clf.labels)))
    out = ['<div class="ulmfit-ml-explain" style="font-family:sans-serif;line-height:1.9">']
    for (i, lab), g in frame.groupby(["text_id", "label"], sort=False):
        p = float(probs[int(i), clf.labels.index(lab)])
        scale = float(np.abs(g["attribution"]).max()) or 1.0
        spans = []
        for tok, a in zip(g["token"], g["attribution"]):
            style = f"background:{_colour(float(a) / scale)};padding:1px 2px;border-radius:3px"
            if str(tok).startswith("xx"):
                style += ";color:#888;font-size:80%"
            spans.append(f'<span style="{style}" title="{float(a):+.4f}">{html.escape(str(tok))}</span>')
        out.append(f'<p><b>text {int(i)}</b> &middot; <b>{html.escape(str(lab))}</b> (p={p:.2f}): ' + " ".join(spans) + "</p>")
    out.append("</div>")
    return "\n".join(out)
