"""Epoch checkpoints and resume: an interrupted training, resumed, ends with the same weights
as an uninterrupted one (CPU, same seed), continuing from the saved epoch, not from zero."""
from __future__ import annotations

import json
import shutil

import pytest
import torch

import ulmfit_ml as um
import ulmfit_ml.training.checkpoint as runs  # save_checkpoint lives in ulmfit_ml.training.checkpoint
from ulmfit_ml.cli import main

from conftest import CUES, TINY, make_frame

# 3 epochs in 2 stages: an interruption after epoch 2 is in the middle of stage 2 (the
# optimizer state and the one-cycle position must be restored), after epoch 1 at a boundary.
OPTS = dict(arch=TINY, unfreeze=(1, 0), epochs=(1, 2), lrs=(3e-2, 1e-2), bs=32, seq_len=20, lin_ftrs=(8,),
            quiet=True, device="cpu", seed=3)


@pytest.fixture(scope="module")
def rdata():
    return um.MultiLabelData.from_df(make_frame(100, seed=11), label_cols=list(CUES), seed=0)


@pytest.fixture(scope="module")
def reference(rdata):
    return um.train_classifier(rdata, **OPTS)


def _interrupt_after(monkeypatch, n_saves: int) -> list[tuple[int, int]]:
    """Make the n-th checkpoint save raise KeyboardInterrupt right after it is written (Ctrl-C)."""
    orig, calls = runs.save_checkpoint, []

    def spy(*args, **kwargs):
        out = orig(*args, **kwargs)
        calls.append((kwargs["stage"], kwargs["epoch"]))
        if len(calls) == n_saves:
            raise KeyboardInterrupt
        return out

    monkeypatch.setattr(runs, "save_checkpoint", spy)
    return calls


def _record_saves(monkeypatch) -> list[tuple[int, int]]:
    orig, calls = runs.save_checkpoint, []

    def spy(*args, **kwargs):
        calls.append((kwargs["stage"], kwargs["epoch"]))
        return orig(*args, **kwargs)

    monkeypatch.setattr(runs, "save_checkpoint", spy)
    return calls


def _same_weights(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.allclose(sa[k].float(), sb[k].float()) for k in sa)


@pytest.fixture(scope="module")
def interrupted_dir(rdata, tmp_path_factory):
    """A checkpoint directory of a run interrupted after epoch 2 (stage 2, epoch 1)."""
    d = tmp_path_factory.mktemp("ckpt") / "checkpoints"
    with pytest.MonkeyPatch.context() as mp:
        calls = _interrupt_after(mp, 2)
        with pytest.raises(KeyboardInterrupt):
            um.train_classifier(rdata, checkpoint_dir=d, **OPTS)
    assert calls == [(0, 1), (1, 1)]
    return d


@pytest.mark.parametrize("after, resumed_saves", [(2, [(1, 2)]), (1, [(1, 1), (1, 2)])])
def test_resume_reaches_the_uninterrupted_weights(rdata, reference, interrupted_dir, tmp_path, monkeypatch,
                                                  after, resumed_saves):
    d = tmp_path / "checkpoints"
    if after == 2:
        shutil.copytree(interrupted_dir, d)
    else:
        _interrupt_after(monkeypatch, after)
        with pytest.raises(KeyboardInterrupt):
            um.train_classifier(rdata, checkpoint_dir=d, **OPTS)
        monkeypatch.undo()
    meta = json.loads((d / "checkpoint.json").read_text())
    assert (meta["stage"], meta["epoch"]) == ((1, 1) if after == 2 else (0, 1))
    assert [p.name for p in d.glob("*.pt")] == [meta["weights"]], "one weights file, the one the JSON names"
    assert not list(d.glob(".tmp-*"))

    saves = _record_saves(monkeypatch)
    resumed = um.train_classifier(rdata, checkpoint_dir=d, resume=True, **OPTS)
    assert saves == resumed_saves, "only the epochs after the checkpoint are trained"
    assert _same_weights(resumed.model, reference.model)
    # the history is whole: earlier epochs come from the checkpoint, and equal the reference's
    assert resumed.history["epoch"].tolist() == [0, 1, 2]
    cols = ["valid_loss", "f1_macro", "train_loss"]
    assert resumed.history[cols].to_numpy() == pytest.approx(reference.history[cols].to_numpy(), abs=1e-6)


def test_resume_with_best_epoch_tracking(rdata, tmp_path, monkeypatch):
    opts = dict(OPTS, save_best_by="valid_loss")
    ref = um.train_classifier(rdata, **opts)
    d = tmp_path / "ck"
    _interrupt_after(monkeypatch, 2)
    with pytest.raises(KeyboardInterrupt):
        um.train_classifier(rdata, checkpoint_dir=d, **opts)
    monkeypatch.undo()
    assert json.loads((d / "checkpoint.json").read_text())["tracker_best"] is not None
    resumed = um.train_classifier(rdata, checkpoint_dir=d, resume=True, **opts)
    assert _same_weights(resumed.model, ref.model)


def test_resume_needs_checkpoint_dir(rdata):
    with pytest.raises(ValueError, match="resume=True needs checkpoint_dir"):
        um.train_classifier(rdata, resume=True, **OPTS)


def test_resume_refuses_another_config(rdata, interrupted_dir):
    with pytest.raises(ValueError, match=r"other classifier options \['lrs'\]"):
        um.train_classifier(rdata, checkpoint_dir=interrupted_dir, resume=True, **dict(OPTS, lrs=(1e-2, 1e-2)))


def test_resume_refuses_other_data(interrupted_dir):
    other = um.MultiLabelData.from_df(make_frame(100, seed=12), label_cols=list(CUES), seed=0)
    with pytest.raises(ValueError, match="made on other data"):
        um.train_classifier(other, checkpoint_dir=interrupted_dir, resume=True, **OPTS)


def test_corrupt_checkpoint_is_reported(rdata, interrupted_dir, tmp_path):
    d = tmp_path / "c"
    shutil.copytree(interrupted_dir, d)
    meta = json.loads((d / "checkpoint.json").read_text())
    (d / meta["weights"]).write_bytes(b"garbage")
    with pytest.raises(ValueError, match="unreadable"):
        um.train_classifier(rdata, checkpoint_dir=d, resume=True, **OPTS)
    (d / meta["weights"]).unlink()
    with pytest.raises(ValueError, match="are missing"):
        runs.load_checkpoint(d)
    (d / "checkpoint.json").write_text("{trunc")
    with pytest.raises(ValueError, match="corrupt"):
        runs.load_checkpoint(d)


def test_no_checkpoint_means_none(tmp_path):
    assert runs.load_checkpoint(tmp_path) is None


# ---------------------------------------------------------------------- CLI
def _cli_args(tmp_path, out: str) -> list[str]:
    f = tmp_path / "train.csv"
    if not f.exists():
        make_frame(100, seed=11).to_csv(f, index=False)
    return ["train", "--train", str(f), "--label-col", "tags", "--out", str(tmp_path / out), "--quiet",
            "--device", "cpu", "--seed", "3", "--epochs", "1,2",
            "--set", "lm.arch={emb_sz=16, n_hid=32, n_layers=1}", "--set", "lm.pretrained=false", "--set", "lm.epochs=1", "--set", "lm.bs=32",
            "--set", "lm.seq_len=20", "--set", "classifier.unfreeze=[1,0]", "--set", "classifier.lrs=[3e-2,1e-2]",
            "--set", "classifier.bs=32", "--set", "classifier.seq_len=20", "--set", "classifier.lin_ftrs=[8]",
            "--set", "run.plots=false"]


def test_cli_train_interrupted_then_resumed(tmp_path, monkeypatch):
    assert main(_cli_args(tmp_path, "full")) == 0

    _interrupt_after(monkeypatch, 2)
    run = tmp_path / "cut"
    assert main(_cli_args(tmp_path, "cut")) == 130
    monkeypatch.undo()
    assert json.loads((run / "status.json").read_text())["status"] == "interrupted"
    assert (run / "lm" / "lm.safetensors").is_file(), "the LM stage is kept"
    assert (run / "checkpoints" / "checkpoint.json").is_file()
    assert not (run / "model").exists()
    assert "--resume" in (run / "run.log").read_text()

    # the config cannot change on resume
    assert main(["train", "--resume", str(run), "--epochs", "3,3"]) == 2

    import ulmfit_ml.experiments.pipeline as pipeline_mod

    def no_lm(*a, **k):
        raise AssertionError("the LM must not be fine-tuned again")

    monkeypatch.setattr(pipeline_mod, "finetune_lm", no_lm)
    saves = _record_saves(monkeypatch)
    assert main(["train", "--resume", str(run), "--quiet"]) == 0
    assert "from stage 2, epoch 1" in (run / "run.log").read_text(), "where the run resumed, from the checkpoint's JSON"
    assert saves == [(1, 2)]
    assert json.loads((run / "status.json").read_text())["status"] == "done"
    assert not (run / "checkpoints").exists(), "checkpoints are removed after a successful run"
    a, b = um.load_classifier(tmp_path / "full" / "model"), um.load_classifier(run / "model")
    assert _same_weights(a.model, b.model)
    ma = json.loads((tmp_path / "full" / "metrics.json").read_text())["valid"]["summary"]
    mb = json.loads((run / "metrics.json").read_text())["valid"]["summary"]
    assert ma == pytest.approx(mb, nan_ok=True)
    assert main(["train", "--resume", str(run)]) == 0  # already complete: nothing to do


def test_foreign_checkpoint_json_is_refused(tmp_path):
    (tmp_path / "checkpoint.json").write_text('{"format": 99}')
    with pytest.raises(ValueError, match="is not a ulmfit_ml checkpoint"):
        runs.load_checkpoint(tmp_path)
