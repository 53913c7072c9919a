"""Checks of the data that every kind of target shares: the matrix iterative-stratification splits
on (:func:`stratification_matrix`, the train/validation split and the CV folds) and enough tokens
for one language-model batch (:func:`check_lm_tokens`). The label vocabulary's checks are the
multi-label kind's own (:mod:`ulmfit_ml.tasks.multilabel`).
"""
from __future__ import annotations

import numpy as np

__all__ = ["check_lm_tokens", "stratification_matrix"]


def stratification_matrix(y: np.ndarray) -> np.ndarray:
    """The 0/1 int matrix iterative-stratification splits on (the train/validation split and the CV
    folds); a single label column gets its complement, as iterstrat rejects a "binary" target."""
    strat = (np.asarray(y) > 0).astype(int)
    return np.hstack([strat, 1 - strat]) if strat.shape[1] == 1 else strat


def check_lm_tokens(lengths: np.ndarray, train_idx: list[int], valid_idx: list[int], *, bs: int, seq_len: int,
                    valid_pct: float) -> None:
    """fastai's LM DataLoader cuts each split's token stream into ``bs`` rows: with ``bs`` tokens
    or fewer it has no batch and training ends in a bare ``IndexError`` (or a validation loss of
    None). Refuse early, with the counts and the fix."""
    n_train, n_valid = int(lengths[train_idx].sum()), int(lengths[valid_idx].sum())
    more = "Add texts (unlabelled ones can go in extra_texts=, CLI [run] extra_texts)"
    if not valid_idx:
        raise ValueError(f"Too few texts for the language model: its validation split (valid_pct={valid_pct}) of "
                         f"{len(lengths)} texts is empty; it needs at least {int(np.ceil(1 / valid_pct))} texts. {more}.")
    if n_train <= bs or n_valid <= bs:
        raise ValueError(f"Too few tokens for the language model: with bs={bs} its training and its validation texts "
                         f"each need more than {bs} tokens (one stream per batch row; {bs * seq_len + 1} for one full "
                         f"batch of seq_len={seq_len}), but the {len(lengths)} texts give {n_train} training and "
                         f"{n_valid} validation tokens ({len(valid_idx)} validation text(s), valid_pct={valid_pct}). "
                         f"{more}, or use a smaller bs / seq_len (e.g. bs={max(1, min(n_train, n_valid) - 1)}).")
