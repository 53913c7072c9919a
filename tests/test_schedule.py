"""Defaults by size (issue 22): ``epochs=None`` picks the LM's and the classifier's epochs from the
tokens they read (and the classifier's updates per epoch), as training/schedule.py documents, for a
small frame, a large frame of long texts and a large frame of short ones."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

import ulmfit_ml as um
from ulmfit_ml.training.finetune import LMTrainer
from ulmfit_ml.training.schedule import (CLASSIFIER_STEP_FLOOR, CLASSIFIER_TOKEN_BUDGET, CLASSIFIER_TOKEN_CAP,
                                         classifier_epochs, count_tokens, lm_epochs)
from ulmfit_ml.training.trainer import ClassifierTrainer
from ulmfit_ml.utils.config import ClassifierConfig, LMConfig

from conftest import CUES, FILLER, TINY, make_frame


@pytest.mark.parametrize("n_tokens, want", [
    (0, 20), (30_000, 20), (118_000, 20),  # GoEmotions 2,000 / 8,000 comments' training splits
    (256_410, 20), (256_411, 19),  # 5M / 19.5: the last size that keeps all 20
    (640_000, 8),  # all 43k GoEmotions comments
    (690_000, 7),  # 10,000 texts of ~70 words (bench/scale_timing.py)
    (1_000_000, 5), (1_500_000, 3), (10**9, 3),  # never below 3
])
def test_classifier_epochs_follow_the_documented_token_budget(n_tokens, want):
    """Many short texts (3,000 batches of 32 or more per epoch): the token budget alone decides."""
    assert classifier_epochs(n_tokens, n_texts=96_000, bs=32) == want
    assert CLASSIFIER_TOKEN_BUDGET == 5_000_000


@pytest.mark.parametrize("n_tokens, n_texts, bs, want", [
    (900_000, 5_286, 32, 18),  # all Reuters training stories: 166 batches; by tokens alone 6
    (272_000, 1_600, 32, 20),  # 2,000 Reuters stories' training split: 18 by tokens, 20 by steps
    (690_000, 8_000, 32, 12),  # 10,000 texts of ~70 words (bench/scale_timing.py): 7 by tokens
    (690_000, 8_000, 64, 20),  # the same at batch 64: 125 batches, the floor wants 24, the epoch range allows 20
    (640_000, 34_728, 32, 8),  # all GoEmotions comments: 1,086 batches, the token budget's 8
    (5_000_000, 5_000, 32, 4),  # 5,000 texts of 1,000 tokens: the floor wants 19, the cap allows 4
    (20_000_000, 5_000, 32, 3),  # never below 3
    (0, 0, 32, 20),
])
def test_few_long_texts_get_the_step_floor_within_the_token_cap(n_tokens, n_texts, bs, want):
    assert classifier_epochs(n_tokens, n_texts=n_texts, bs=bs) == want
    assert CLASSIFIER_STEP_FLOOR == 3_000 and CLASSIFIER_TOKEN_CAP == 20_000_000


@pytest.mark.parametrize("n_tokens, want", [(0, 2), (150_000, 2), (666_666, 2), (666_667, 1), (900_000, 1), (10**9, 1)])
def test_lm_epochs_follow_the_documented_token_budget(n_tokens, want):
    assert lm_epochs(n_tokens) == want


def test_defaults_leave_epochs_to_the_size_and_given_epochs_win():
    assert ClassifierConfig().epochs is None and LMConfig().epochs is None
    assert ClassifierConfig(epochs=(20,)).epochs == (20,)
    with pytest.raises(ValueError, match=r"epochs=None sets one stage's epochs by the data's size, but unfreeze=\(1, 0\) "
                                         r"has 2 stages: give epochs, one per stage, e.g. epochs=\(1, 1\)"):
        ClassifierConfig(unfreeze=(1, 0), lrs=(1e-2, 1e-3))


def _long_frame(n: int, n_words: int) -> pd.DataFrame:
    rng = np.random.default_rng(0)
    words = rng.choice(FILLER, size=(n, n_words))
    labels = rng.random((n, len(CUES))) < 0.3
    return pd.DataFrame({"text": [" ".join(w) for w in words], **{lab: labels[:, j].astype(int) for j, lab in enumerate(CUES)}})


@pytest.fixture(scope="module")
def large():
    """3,000 texts of 250 words: ~0.75M LM tokens, ~0.6M in the training split."""
    return um.MultiLabelData.from_df(_long_frame(3000, 250), label_cols=list(CUES), seed=0)


@pytest.fixture(scope="module")
def small():
    return um.MultiLabelData.from_df(make_frame(200), label_cols=list(CUES), seed=0)


def test_a_small_frame_keeps_the_small_data_schedule(small):
    lm = LMTrainer(small, arch=TINY, pretrained=False, bs=8, seq_len=10, quiet=True, device="cpu")
    clf = ClassifierTrainer(small, arch=TINY, bs=8, quiet=True, device="cpu")
    assert lm.config.epochs == 2 and clf.config.epochs == (20,)


def test_a_large_frame_reads_each_text_fewer_times_unless_it_makes_few_updates(large):
    n_lm = count_tokens(large.lm_tokens())
    train = [t for t, v in zip(large.tokens, large.is_valid) if not v]
    n_train = count_tokens(train)
    assert n_lm > 700_000 and 550_000 < n_train < 650_000 and 2_300 < len(train) < 2_500
    lm = LMTrainer(large, arch=TINY, pretrained=False, quiet=True, device="cpu")
    assert lm.config.epochs == 1
    # batches of 2 make ~1,200 updates per epoch: the token budget decides (5M / 0.6M tokens)
    many = ClassifierTrainer(large, arch=TINY, bs=2, quiet=True, device="cpu")
    assert many.config.epochs == (classifier_epochs(n_train, n_texts=len(train), bs=2),) and 8 <= many.config.epochs[0] <= 9
    # the default batch of 32 makes ~75 per epoch: the step floor (3,000 updates) raises them to 20
    few = ClassifierTrainer(large, arch=TINY, quiet=True, device="cpu")
    assert few.config.epochs == (20,) and n_train * 20 <= CLASSIFIER_TOKEN_CAP
    assert ClassifierTrainer(large, arch=TINY, quiet=True, device="cpu", epochs=(7,)).config.epochs == (7,)


def test_the_trained_model_records_the_epochs_it_ran(small):
    clf = um.train_classifier(small, arch=TINY, bs=32, seq_len=20, lin_ftrs=(8,), quiet=True, device="cpu")
    assert clf.meta["config"]["epochs"] == [20] and len(clf.history) == 20
