"""The throughput A/B's estimator (bench/throughput.py): what it keeps and what it discards."""
from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))
from run_bench import _tp_opts  # noqa: E402
from throughput import _per_batch  # noqa: E402


def _runs(times, tokens):
    return [{"batch_s": list(t), "batch_tokens": list(tokens)} for t in times]


def test_per_batch_median_ignores_a_burst_in_one_run():
    tokens = [1000] * 10
    quiet = [0.1] * 10
    burst = [0.1] * 5 + [0.5] * 5  # another process hogged the cores for half of one run
    est = _per_batch(_runs([quiet, burst, quiet], tokens))
    assert est["median_tokens_per_s"] == pytest.approx(10_000 / 1.0)
    assert est["best_tokens_per_s"] == pytest.approx(10_000)


def test_per_batch_median_keeps_a_fixed_per_batch_overhead():
    tokens = [1000] * 10
    plain = _per_batch(_runs([[0.100] * 10] * 3, tokens))
    slower = _per_batch(_runs([[0.110] * 10, [0.110] * 5 + [0.4] * 5, [0.110] * 10], tokens))
    assert slower["median_tokens_per_s"] / plain["median_tokens_per_s"] == pytest.approx(1 / 1.1)


def test_per_batch_uses_the_shortest_run():
    est = _per_batch([{"batch_s": [0.1, 0.1, 9.0], "batch_tokens": [10, 10, 10]},
                      {"batch_s": [0.1, 0.1], "batch_tokens": [10, 10]}])
    assert est["median_tokens_per_s"] == pytest.approx(20 / 0.2)


def test_tp_opts_model_sub_dict_overrides_top_level():
    tp = {"n_batches": 15, "repeats": 4, "classifier": {"n_batches": 20, "repeats": 20}, "ignored": 1}
    assert _tp_opts(tp, "classifier") == {"n_batches": 20, "repeats": 20}
    assert _tp_opts(tp, "lm") == {"n_batches": 15, "repeats": 4}
