"""Threshold checks, application and F1-maximising search (ulmfit_ml.evaluation.thresholds)."""
import numpy as np
import pytest
from sklearn.metrics import f1_score

from ulmfit_ml.evaluation.thresholds import (DEFAULT_GRID, _f1_per_label_at, apply_thresholds, check_thresholds,
                                  f1_vs_threshold, tune_thresholds)


def _skewed(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Rare labels whose positives get low (but ranked-higher) probabilities: 0.5 is far too high."""
    rng = np.random.default_rng(seed)
    rates = np.array([0.05, 0.1, 0.2, 0.4])
    y = (rng.random((n, 4)) < rates).astype(int)
    p = np.clip(0.08 + 0.22 * y + rng.normal(0, 0.07, (n, 4)), 0, 1)
    return y, p


def test_f1_grid_matches_sklearn() -> None:
    rng = np.random.default_rng(0)
    y = (rng.random((60, 4)) < [0.1, 0.3, 0.5, 0.0]).astype(int)  # last label has no positive
    p = rng.random((60, 4))
    grid = np.array([0.05, 0.3, 0.5, 0.77, 0.99])
    per = _f1_per_label_at(y, p, grid)
    g, macro, micro = f1_vs_threshold(y, p, grid)
    assert np.array_equal(g, grid)
    for i, t in enumerate(grid):
        pred = (p >= t).astype(int)
        np.testing.assert_allclose(per[i], f1_score(y, pred, average=None, zero_division=0))
        assert macro[i] == pytest.approx(f1_score(y, pred, average="macro", zero_division=0))
        assert micro[i] == pytest.approx(f1_score(y, pred, average="micro", zero_division=0))


def test_tuning_improves_validation_f1_over_half_on_skewed_data() -> None:
    y_tr, p_tr = _skewed(2000, 1)
    y_va, p_va = _skewed(2000, 2)
    base = f1_score(y_va, p_va >= 0.5, average="macro", zero_division=0)
    for strategy in ("global", "per_label"):
        t = tune_thresholds(y_tr, p_tr, strategy=strategy)
        tuned = f1_score(y_va, apply_thresholds(p_va, t), average="macro", zero_division=0)
        assert tuned > base + 0.3, (strategy, base, tuned)
        assert (t < 0.5).all()


def test_global_strategy_gives_one_threshold_maximising_macro_f1() -> None:
    y, p = _skewed(500, 3)
    t = tune_thresholds(y, p, strategy="global")
    assert len(set(t.tolist())) == 1 and t.shape == (4,)
    _, macro, _ = f1_vs_threshold(y, p)
    assert f1_score(y, p >= t[0], average="macro", zero_division=0) == pytest.approx(macro.max())


def test_per_label_falls_back_to_global_for_rare_labels() -> None:
    y, p = _skewed(400, 4)
    y[:, 0] = 0
    y[:3, 0] = 1  # 3 positives < min_positives
    glob = tune_thresholds(y, p, strategy="global")[0]
    t = tune_thresholds(y, p, strategy="per_label", min_positives=5)
    assert t[0] == glob
    assert not np.all(t == glob)  # frequent labels got their own
    t0 = tune_thresholds(y, p, strategy="per_label", min_positives=0, shrink=0)
    per = _f1_per_label_at(y, p, DEFAULT_GRID)
    for j in range(4):
        assert per[np.searchsorted(DEFAULT_GRID, t0[j]), j] == pytest.approx(per[:, j].max())


def test_per_label_thresholds_are_pulled_to_the_global_one_by_their_positives() -> None:
    """(k t + shrink g) / (k + shrink): a label with few positives moves most of the way to the
    global threshold, a frequent one hardly; shrink=0 keeps each label's own."""
    y, p = _skewed(400, 4)
    y[:, 0] = 0
    y[:8, 0] = 1  # a rare label: 8 positives
    g = tune_thresholds(y, p, strategy="global")[0]
    own = tune_thresholds(y, p, strategy="per_label", shrink=0)
    t = tune_thresholds(y, p, strategy="per_label", shrink=10)
    k = y.sum(0)
    np.testing.assert_allclose(t, (k * own + 10 * g) / (k + 10))
    assert abs(t[0] - g) < abs(own[0] - g) or own[0] == g
    pull = np.abs(t - own) / np.maximum(np.abs(g - own), 1e-12)
    assert pull[0] >= pull[1:].max() - 1e-9  # the rarest label moves the most
    for bad in (-1, True, "10"):
        with pytest.raises(ValueError, match="shrink must be a number >= 0"):
            tune_thresholds(y, p, shrink=bad)


def test_plateau_takes_the_middle_of_equally_good_thresholds() -> None:
    y = np.array([[1], [1], [0], [0]])
    p = np.array([[0.9], [0.7], [0.2], [0.1]])  # 0.3 .. 0.7 on the grid are all perfect
    t = tune_thresholds(y, p, strategy="per_label", min_positives=1, grid=np.round(np.arange(0.1, 0.91, 0.1), 2))
    assert t[0] == pytest.approx(0.5)


def test_apply_thresholds_and_at_least_one() -> None:
    p = np.array([[0.2, 0.4], [0.6, 0.1], [0.3, 0.3]])
    assert apply_thresholds(p, 0.5).tolist() == [[False, False], [True, False], [False, False]]
    assert apply_thresholds(p, [0.1, 0.5]).tolist() == [[True, False], [True, False], [True, False]]
    out = apply_thresholds(p, 0.5, at_least_one=True)
    assert out.tolist() == [[False, True], [True, False], [True, False]]
    assert apply_thresholds(np.zeros((0, 2)), 0.5, at_least_one=True).shape == (0, 2)


@pytest.mark.parametrize("bad, match", [([0.5, 0.5, 0.5], "one per label"), ([0.5, 1.5], r"in \[0, 1\]"),
                                        ([np.nan, 0.5], r"in \[0, 1\]")])
def test_check_thresholds_errors(bad, match) -> None:
    with pytest.raises(ValueError, match=match):
        check_thresholds(bad, 2)


def test_errors() -> None:
    y, p = _skewed(20, 0)
    with pytest.raises(ValueError, match="strategy must be"):
        tune_thresholds(y, p, strategy="best")
    with pytest.raises(ValueError, match=r"must both be \(n_texts, n_labels\)"):
        tune_thresholds(y, p[:, :2])
    with pytest.raises(ValueError, match="0 rows"):
        tune_thresholds(y[:0], p[:0])
    with pytest.raises(ValueError, match="only 0/1"):
        tune_thresholds(p, p)
    with pytest.raises(ValueError, match="grid must be"):
        tune_thresholds(y, p, grid=[])
    with pytest.raises(ValueError, match="grid must be"):
        f1_vs_threshold(y, p, grid=[0.5, 2.0])
    with pytest.raises(ValueError, match="min_positives must be"):
        tune_thresholds(y, p, min_positives=-1)
    with pytest.raises(ValueError, match="must be 2-D"):
        apply_thresholds(np.zeros(3), 0.5)
