"""Defaults that scale with the data: how many epochs the language model and the classifier train
when ``epochs`` is left unset (``None``, the default of both configs).

Training time on a CPU grows with the tokens read, so the budgets are in tokens: small data keeps
the schedules measured best on few labels (20 classifier epochs, 2 LM epochs after the frozen one),
large data reads each text fewer times. Given ``epochs`` always win (``epochs=(20,)`` restores the
fixed schedule whatever the size).

Measured (bench/RESULTS.md, "Defaults by size"; `python bench/scale_timing.py --n 10000`): 10,000
texts of ~70 words hold ~0.69M training tokens. On 2 CPU cores ``finetune_lm`` runs 1 frozen + 1
epoch in 516-546 s and each classifier epoch takes 73-93 s. With this budget the classifier runs 7
epochs and the whole run takes 18 minutes (dev macro-F1 0.752 vs TF-IDF's 0.701); a first budget
of 2.5M token-epochs (4 epochs, 15 minutes) scored the same there, and the larger one keeps more
epochs for large sets of short texts: GoEmotions keeps the 20 epochs measured best at 500-8,000
comments up to ~17,000 comments (256k training tokens); all 43k comments (~640k) get 8 at batch
32, about the optimizer steps of 16 epochs at batch 64 (12 at batch 64 scored 0.499 there, 8
scored 0.490-0.494).

Few long texts make few optimizer steps per epoch: by tokens alone, all 5,286 training stories of
Reuters-21578 (~170 tokens each, 166 batches) got 6 epochs, about 1,000 updates, and scored dev
macro-F1 0.288 (TF-IDF 0.460; its rare topics unlearned); 20 epochs scored 0.440, micro-F1 0.875
vs 0.877 (bench/RESULTS.md, "Learning curve"; 57 minutes on one shared thread). So the classifier
also gets at least :data:`CLASSIFIER_STEP_FLOOR` updates, unless that would read more than
:data:`CLASSIFIER_TOKEN_CAP` token-epochs (4x the budget), within the epoch range: many short
texts keep the token budget (all GoEmotions comments: 1,085 batches, 8 epochs), few long ones get
more epochs (Reuters: 18), and 10,000 texts of ~70 words (250 batches) get 12. The floor counts
updates, so a larger ``bs`` gets more epochs; the cap bounds that run's time to about 4x the
budget's.
"""
from __future__ import annotations

import math
from typing import Iterable, Sequence

__all__ = ["LM_TOKEN_BUDGET", "CLASSIFIER_TOKEN_BUDGET", "CLASSIFIER_STEP_FLOOR", "CLASSIFIER_TOKEN_CAP",
           "CLASSIFIER_EPOCH_RANGE", "lm_epochs", "classifier_epochs", "count_tokens"]

#: unfrozen LM epochs x tokens the LM reads: 2 epochs up to 0.67M tokens, 1 above (never 0).
LM_TOKEN_BUDGET = 1_000_000
#: classifier epochs x tokens of the training split, within :data:`CLASSIFIER_EPOCH_RANGE`.
CLASSIFIER_TOKEN_BUDGET = 5_000_000
#: (fewest, most) classifier epochs: 20 is the small-data schedule measured best at 500 and 2,000
#: labels (bench/RESULTS.md "Small data": 10 and 40 epochs scored lower); 3 keeps a one-cycle
#: schedule with a warm-up, a plateau and a decay on large data.
CLASSIFIER_EPOCH_RANGE = (3, 20)
#: at least this many optimizer steps (batches x epochs), for few long texts (see above)
CLASSIFIER_STEP_FLOOR = 3_000
#: the step floor never makes the classifier read more than this many token-epochs
CLASSIFIER_TOKEN_CAP = 4 * CLASSIFIER_TOKEN_BUDGET
_LM_EPOCH_RANGE = (1, 2)


def count_tokens(tokens: Iterable[Sequence[str]]) -> int:
    """Tokens in a list of tokenised texts."""
    return int(sum(len(t) for t in tokens))


def _by_budget(budget: int, n_tokens: int, lo: int, hi: int) -> int:
    # half rounds up (Python's round() would send 2.5 to 2)
    return int(min(hi, max(lo, math.floor(budget / max(n_tokens, 1) + 0.5))))


def lm_epochs(n_tokens: int) -> int:
    """Unfrozen epochs of LM fine-tuning for an LM corpus of ``n_tokens`` tokens: 2 (the small-data
    default) up to 0.67M tokens, then 1."""
    return _by_budget(LM_TOKEN_BUDGET, n_tokens, *_LM_EPOCH_RANGE)


def classifier_epochs(n_tokens: int, *, n_texts: int, bs: int) -> int:
    """Classifier epochs for a training split of ``n_texts`` texts and ``n_tokens`` tokens read
    in batches of ``bs``: :data:`CLASSIFIER_TOKEN_BUDGET` / tokens (20 up to 256k tokens), raised
    to :data:`CLASSIFIER_STEP_FLOOR` / batches per epoch but to no more than
    :data:`CLASSIFIER_TOKEN_CAP` / tokens; always within :data:`CLASSIFIER_EPOCH_RANGE`."""
    lo, hi = CLASSIFIER_EPOCH_RANGE
    by_tokens = _by_budget(CLASSIFIER_TOKEN_BUDGET, n_tokens, lo, hi)
    by_steps = _by_budget(CLASSIFIER_STEP_FLOOR, math.ceil(max(n_texts, 1) / max(bs, 1)), lo, hi)
    cap = max(lo, CLASSIFIER_TOKEN_CAP // max(n_tokens, 1))
    return int(max(by_tokens, min(by_steps, cap)))
