"""Smoke test of bench/run_bench.py: the whole benchmark on a few hundred GoEmotions rows with
a tiny model, so the script cannot silently rot. Figures are meaningless at this size; the test
checks that every section is produced and well-formed."""
from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
DATA = REPO.parent / "shared" / "datasets" / "goemotions"
SCRIPT = REPO / "bench" / "run_bench.py"

pytestmark = pytest.mark.skipif(not (DATA / "train.tsv").exists(),
                                reason=f"GoEmotions not found at {DATA} (the shared datasets folder is absent)")


@pytest.fixture(scope="module")
def smoke(tmp_path_factory):
    out = tmp_path_factory.mktemp("bench")
    dev = DATA / "dev.tsv"
    proc = subprocess.run(
        [sys.executable, str(SCRIPT), "--preset", "smoke", "--max-rows", "120", "--out", str(out),
         "--eval-file", str(dev), "--threads", "1", "--note", "CI smoke"],
        capture_output=True, text=True, timeout=300, cwd=REPO)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return out, json.loads((out / "results.json").read_text())["smoke"], proc.stdout


def _is_prob(x):
    return isinstance(x, float) and (0.0 <= x <= 1.0 or math.isnan(x))


def test_every_model_reports_dev_and_eval_file_at_05_and_tuned(smoke):
    _, r, _ = smoke
    models = r["models"]
    assert {"tfidf", "ulmfit_fwd", "ulmfit_bwd", "ulmfit_fwd+bwd", "ulmfit_fwd+bwd+tfidf"} <= set(models)
    for name in ("tfidf", "ulmfit_fwd", "ulmfit_fwd+bwd", "ulmfit_fwd+bwd+tfidf"):
        for set_name in ("dev", "eval:dev.tsv"):
            for th in ("at_0.5", "tuned"):
                figs = models[name][set_name][th]
                assert {"f1_macro", "f1_micro", "roc_auc_macro"} <= set(figs)
                assert all(_is_prob(v) for v in figs.values()), figs


def test_side_by_side_sections(smoke):
    _, r, _ = smoke
    assert r["data"]["n_train_file"] == 120 and r["data"]["n_heldout"] > 0
    for k in ("lm", "classifier"):
        t = r["throughput"][k]
        assert t["ulmfit_ml_tokens_per_s"]["median"] > 0 and t["plain_loop_tokens_per_s"]["median"] > 0
        assert t["ratio_of_medians"] > 0 and t["ratio"] > 0 and t["ratio_best_batches"] > 0
        assert t["same_batches"] is True  # the replayed DataLoader gave both sides the same batches
    assert r["inference_cpu"]["texts_per_s_cached_tokens"] > 0
    assert 0 < r["padding"]["train"]["real_token_share"] <= 1
    assert r["peak_rss_mb"] > 0
    # smoke trains all layers at once, so its schedule ablation is ULMFiT's gradual unfreezing
    assert {"random_init_encoder", "gradual_unfreezing", "reference_finetuned_all_at_once"} <= set(r["ablations"])
    assert r["ablations"]["gradual_unfreezing"]["options"]["unfreeze"] == [1, 2, 0]
    for stage in ("load", "tokenize", "tfidf_baseline", "finetune_lm_fwd", "classifier_fwd", "inference_cpu"):
        assert r["stages_s"][stage] >= 0


def test_markdown_written_next_to_json_not_into_bench(smoke):
    out, _, _ = smoke
    md = (out / "RESULTS.md").read_text()
    assert "## Preset `smoke`" in md and "| tfidf | dev |" in md and "**ratio** (per-batch medians)" in md
    assert (out / "tokens.json.gz").exists()  # the smoke run's token cache stays in --out too


def test_bad_set_override_and_missing_data_dir_fail_clearly(tmp_path):
    sys.path.insert(0, str(SCRIPT.parent))
    try:
        import run_bench
    finally:
        sys.path.pop(0)
    with pytest.raises(ValueError, match="KEY=VALUE"):
        run_bench._parse_set(["clf.epochs"], run_bench.PRESETS["smoke"])
    assert run_bench._parse_set(["clf.epochs=[2]", "arch=small"], run_bench.PRESETS["smoke"])["clf"]["epochs"] == [2]
    with pytest.raises(FileNotFoundError, match="--data-dir"):
        run_bench.main(["--preset", "smoke", "--data-dir", str(tmp_path), "--out", str(tmp_path)])
    bad = tmp_path / "bad.tsv"
    bad.write_text("some text\t3,x\tid1\n")
    with pytest.raises(ValueError, match="comma-separated ids"):
        run_bench.read_goemotions(bad, ["a", "b", "c", "d"])
