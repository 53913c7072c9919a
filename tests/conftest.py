"""Shared tiny fixtures: synthetic frames with a learnable signal, a tiny LM and classifier."""
from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

os.environ.setdefault("MPLBACKEND", "Agg")
# corpus token caches (um.tokenize_corpus) go to a throw-away folder, never the user's ~/.cache
os.environ["ULMFIT_ML_CACHE"] = tempfile.mkdtemp(prefix="ulmfit_ml_test_cache_")

import torch  # noqa: E402

# Tiny models gain nothing from intra-op threads, and on a shared, loaded 2-core machine
# two threads per op thrash (measured: one small LSTM call 6 ms with 1 thread, 1.2 s with 2).
torch.set_num_threads(1)

REPO = Path(__file__).resolve().parent.parent
GOEMOTIONS = REPO.parent / "shared" / "datasets" / "goemotions"

FILLER = ("the a is was very really today then also just some more there here it this that with and of "
          "movie food day night city road house book table window green blue").split()
CUES = {"joy": "happy", "anger": "furious", "fear": "scared"}
TINY = {"emb_sz": 16, "n_hid": 32, "n_layers": 1}


def make_frame(n: int = 400, seed: int = 0, n_words: int = 10) -> pd.DataFrame:
    """Texts of filler words; label L is on iff its cue word is in the text (independent, p~0.3)."""
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(n):
        words = list(rng.choice(FILLER, n_words))
        labs = [lab for lab in CUES if rng.random() < 0.3]
        for lab in labs:
            words.insert(int(rng.integers(0, len(words) + 1)), CUES[lab])
        row = {"id": i, "text": " ".join(words), "tags": ";".join(labs)}
        row.update({lab: int(lab in labs) for lab in CUES})
        rows.append(row)
    return pd.DataFrame(rows)


@pytest.fixture(scope="session")
def frame() -> pd.DataFrame:
    return make_frame(600)


@pytest.fixture(scope="session")
def data(frame):
    import ulmfit_ml as um

    return um.MultiLabelData.from_df(frame, text_col="text", label_cols=list(CUES), seed=0)


@pytest.fixture(scope="session")
def tiny_lm(data):
    import ulmfit_ml as um

    return um.finetune_lm(data, arch=TINY, pretrained=False, epochs=1, bs=32, seq_len=20, lr=1e-2, quiet=True, device="cpu")


FAST_CLF = dict(bs=32, seq_len=20, drop_mult=0.0, unfreeze=(1, 0), epochs=(2, 10), lrs=(5e-2, 3e-2), quiet=True,
                device="cpu", lin_ftrs=(16,))


@pytest.fixture(scope="session")
def tiny_clf(data, tiny_lm):
    import ulmfit_ml as um

    return um.train_classifier(data, encoder=tiny_lm, **FAST_CLF)


SUPPORT_TICKETS = REPO / "data" / "support_tickets.csv"


TICKET_LABELS = ["billing", "bug", "login"]
TICKET_TEXTS = ["my invoice is wrong", "the app crashes", "cannot log in", "network down", "refund please",
                "error on start"] * 4


def untrained_ticket_classifier() -> Any:
    """An untrained tiny classifier over TICKET_TEXTS / TICKET_LABELS, built directly (no training):
    for tests about files and messages."""
    import warnings

    import ulmfit_ml as um
    from ulmfit_ml.models.classifier import MultiLabelClassifier, build_classifier_model

    df = pd.DataFrame({"text": TICKET_TEXTS, "tags": ["billing", "bug", "login", "bug;login", "billing", "bug"] * 4})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the repeated texts: irrelevant here
        spec = um.MultiLabelData.from_df(df, text_col="text", label_col="tags", split="random").spec
    vocab = ["xxunk", "xxpad", "xxbos", "xxeos", "xxfld", "xxrep", "xxwrep", "xxup", "xxmaj"] + \
        sorted({w for t in TICKET_TEXTS for w in t.lower().split()})
    vocab += [f"xxfake{i}" for i in range(-len(vocab) % 8)]
    arch = {"emb_sz": 8, "n_hid": 16, "n_layers": 1}
    model = build_classifier_model(len(vocab), len(TICKET_LABELS), arch=arch, seq_len=20, max_len=200, lin_ftrs=[8],
                                   drop_mult=0.0)
    meta = {"arch": arch, "seq_len": 20, "max_len": 200, "lin_ftrs": [8], "drop_mult": 0.0, "text_col": "text",
            "label_spec": spec.to_dict()}
    return MultiLabelClassifier(model, vocab, TICKET_LABELS, meta=meta)


def support_tickets_model(directory: Path, n_probe: int) -> Path:
    """A tiny classifier of the bundled support tickets (first 240 rows), saved in ``directory``,
    with each label's threshold at the median probability of the next ``n_probe`` rows (so each
    label is on for about half of them): the model the prediction-file tests score with."""
    import ulmfit_ml as um

    df = pd.read_csv(SUPPORT_TICKETS).head(240)
    data = um.MultiLabelData.from_df(df, text_col="text", label_col="labels", split="random")
    clf = um.train_classifier(data, arch="tiny", epochs=(1,), unfreeze=(0,), lrs=(1e-2,), bs=64, quiet=True, device="cpu")
    probe = pd.read_csv(SUPPORT_TICKETS).text.iloc[240:240 + n_probe].tolist()
    clf.thresholds = np.median(clf.predict_proba(probe), axis=0)
    return clf.save(directory / "clf")


def run_cli(args: list[str], cwd: Path, *, console_script: bool = False) -> Any:
    """``ulmfit-ml ARGS --quiet --device cpu`` in a subprocess (the console script or ``python -m``)."""
    import shutil
    import subprocess
    import sys

    exe = shutil.which("ulmfit-ml", path=os.path.dirname(sys.executable)) if console_script else None
    cmd = [exe] if exe else [sys.executable, "-m", "ulmfit_ml.cli"]
    env = dict(os.environ, MPLBACKEND="Agg")
    return subprocess.run(cmd + args + ["--quiet", "--device", "cpu"], cwd=cwd, capture_output=True, text=True,
                          env=env, timeout=600)
