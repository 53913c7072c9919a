"""Plots are built without a display (Agg) and return matplotlib Figures; lr_find for both stages."""
import matplotlib

matplotlib.use("Agg")  # no display: must work on a headless machine

import io  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

import ulmfit_ml as um  # noqa: E402
from ulmfit_ml.evaluation.metrics import multilabel_report  # noqa: E402
from ulmfit_ml.experiments.lr_find import LRFindResult, lr_find  # noqa: E402
from ulmfit_ml.experiments.plots import (plot_f1_vs_threshold, plot_label_frequency, plot_labels_per_text, plot_loss,  # noqa: E402
                             plot_lr_find, plot_per_label_f1)

TINY = {"emb_sz": 16, "n_hid": 32, "n_layers": 1}


def _png(fig: Figure) -> int:
    assert isinstance(fig, Figure)
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return buf.tell()


@pytest.fixture(scope="module")
def tickets() -> um.MultiLabelData:
    df = pd.read_csv(Path(__file__).resolve().parent.parent / "data" / "support_tickets.csv").iloc[:160]
    return um.MultiLabelData.from_df(df, label_col="labels")


def test_data_plots(tickets) -> None:
    data = tickets
    fig = plot_label_frequency(data)
    assert _png(fig) > 1000
    ax = fig.axes[0]
    assert sorted(t.get_text() for t in ax.get_yticklabels()) == sorted(data.labels)
    heights = [p.get_width() for p in ax.patches]  # stacked bars: train then valid
    counts = data.label_counts()
    assert sum(heights) == counts.to_numpy().sum()
    fig = plot_labels_per_text(data)
    assert _png(fig) > 1000
    n = data.y.sum(1).astype(int)
    assert sum(p.get_height() for p in fig.axes[0].patches) == len(n)


def test_report_plots() -> None:
    rng = np.random.default_rng(0)
    y = (rng.random((100, 3)) < [0.1, 0.5, 0.3]).astype(int)
    p = np.clip(0.4 * y + 0.6 * rng.random((100, 3)), 0, 1)
    r = multilabel_report(y, p, labels=["rare", "common", "mid"])
    fig = plot_per_label_f1(r)
    assert _png(fig) > 1000
    ticks = [t.get_text() for t in fig.axes[0].get_yticklabels()]
    assert ticks == ["rare", "mid", "common"]  # ascending support, bottom-up: most frequent on top
    assert _png(plot_per_label_f1(r.per_label, metric="roc_auc")) > 1000
    fig = plot_f1_vs_threshold(y, p)
    assert _png(fig) > 1000 and len(fig.axes[0].lines) == 4  # macro, micro, 0.5 line, best point


def test_loss_plots_from_history_and_stored_batches() -> None:
    hist = pd.DataFrame({"stage": ["s1", "s2", "s2"], "epoch": [0, 1, 2], "train_loss": [0.7, 0.5, 0.4],
                         "valid_loss": [0.6, 0.5, 0.45]})
    fig = plot_loss(hist)
    assert _png(fig) > 1000 and len(fig.axes) == 1
    assert len(fig.axes[0].lines) == 3  # train, valid, one stage boundary

    class Trained:  # anything with a history (and, optionally, batch losses)
        history = hist
        batch_losses = [0.9, 0.8, 0.7, 0.65]
        learner = None

    fig = plot_loss(Trained())
    assert len(fig.axes) == 2 and _png(fig) > 1000
    assert len(plot_loss(Trained(), per_batch=False).axes) == 1


def test_loss_plot_of_a_trained_classifier(tiny_clf) -> None:
    fig = plot_loss(tiny_clf)  # the shared tiny classifier of conftest.py
    assert _png(fig) > 1000
    assert list(fig.axes[0].lines[0].get_ydata()) == tiny_clf.history["train_loss"].tolist()


def test_lr_find_classifier_stage(tickets) -> None:
    res = lr_find(tickets, stage="classifier", arch=TINY, num_it=12, bs=32, lin_ftrs=(16,), quiet=True, device="cpu")
    assert isinstance(res, LRFindResult) and res.stage == "classifier"
    assert 6 <= len(res.lrs) == len(res.losses) <= 12 and np.all(np.diff(res.lrs) > 0)
    assert set(res.suggestions) <= {"valley", "slide", "minimum", "steep"}
    assert _png(res.figure) > 1000
    assert _png(plot_lr_find(res)) > 1000


def test_lr_find_lm_stage(tickets) -> None:
    res = lr_find(tickets, stage="lm", arch=TINY, pretrained=False, num_it=6, bs=16, seq_len=24, quiet=True, device="cpu")
    assert res.stage == "lm" and len(res.lrs) == 6 and np.isfinite(res.losses).all()
    assert _png(plot_lr_find(res)) > 1000


def test_errors(tickets) -> None:
    data = tickets
    with pytest.raises(TypeError, match="plot_loss expects"):
        plot_loss([0.1, 0.2])
    with pytest.raises(ValueError, match="Nothing to plot"):
        plot_loss(pd.DataFrame())
    with pytest.raises(TypeError, match="MultiLabelReport or its per_label"):
        plot_per_label_f1({"f1": 1})
    with pytest.raises(ValueError, match="no 'auc' column"):
        plot_per_label_f1(multilabel_report(np.array([[1], [0]]), np.array([[0.9], [0.1]])), metric="auc")
    with pytest.raises(TypeError, match="expects a MultiLabelData"):
        plot_label_frequency(pd.DataFrame())
    with pytest.raises(TypeError, match="expects a MultiLabelData"):
        plot_labels_per_text(None)
    with pytest.raises(ValueError, match="must both be"):
        plot_f1_vs_threshold(np.zeros((3, 2)), np.zeros((3, 1)))
    with pytest.raises(TypeError, match="LRFindResult or a fastai Learner"):
        plot_lr_find("x")
    with pytest.raises(ValueError, match="run lr_find first"):
        plot_lr_find(LRFindResult("lm", np.zeros(0), np.zeros(0)))
    with pytest.raises(ValueError, match="stage must be 'lm' or 'classifier'"):
        lr_find(data, stage="both")
    with pytest.raises(ValueError, match="start_lr < end_lr"):
        lr_find(data, start_lr=1.0, end_lr=0.1)
    with pytest.raises(ValueError, match="num_it must be an int >= 6"):
        lr_find(data, num_it=2)
    with pytest.raises(ValueError, match="encoder= is for stage='classifier'"):
        lr_find(data, stage="lm", encoder="x")
    with pytest.raises(TypeError, match="expects a MultiLabelData"):
        lr_find(pd.DataFrame())
