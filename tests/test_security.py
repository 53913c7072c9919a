"""Safe model format: planted pickles never run, broken model directories fail naming the file,
saving is atomic (a killed save leaves the old or the new complete model)."""
from __future__ import annotations

import json
import os
import pickle
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

import ulmfit_ml as um
from ulmfit_ml.models import classifier as um_model
from ulmfit_ml.utils import persist
from ulmfit_ml.models.lm import _read_fastai_pretrained

DATA = Path(__file__).resolve().parents[1] / "data" / "support_tickets.csv"
PROBE = ["the parcel never arrived", "great support, thanks", "refund my last invoice please"]


class _Payload:
    """Unpickling this writes ``marker``: stands in for arbitrary code in a hostile file."""

    def __init__(self, marker: Path) -> None:
        self.marker = str(marker)

    def __reduce__(self):
        return (Path.write_text, (Path(self.marker), "pwned"))


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    df = pd.read_csv(DATA).head(240)
    data = um.MultiLabelData.from_df(df, text_col="text", label_col="labels", split="random")
    clf = um.train_classifier(data, arch="tiny", epochs=(1,), unfreeze=(0,), lrs=(1e-2,), quiet=True, device="cpu")
    path = clf.save(tmp_path_factory.mktemp("models") / "clf")
    return path, clf.predict_proba(PROBE)


@pytest.fixture
def model_dir(saved, tmp_path):
    """A fresh copy of the saved model to tamper with."""
    return Path(shutil.copytree(saved[0], tmp_path / "model"))


@pytest.fixture
def marker(tmp_path):
    return tmp_path / "PWNED"


def test_payload_is_live(marker):
    # control: the payload really runs when unpickled, so "marker absent" below means something
    pickle.loads(pickle.dumps(_Payload(marker)))
    assert marker.read_text() == "pwned"


def test_saved_dir_holds_no_pickle(saved):
    names = sorted(p.name for p in saved[0].iterdir())
    assert names == [".ulmfit_ml.json", "config.json", "history.csv", "labels.json", "model.safetensors", "thresholds.json",
                     "vocab.json"]
    with open(saved[0] / "model.safetensors", "rb") as f:  # safetensors: 8-byte header length + JSON header
        n = int.from_bytes(f.read(8), "little")
        assert json.loads(f.read(n))


@pytest.mark.parametrize("kind", ["pickle", "torch_save"])
def test_pickle_as_weights_is_not_executed(model_dir, marker, kind):
    w = model_dir / "model.safetensors"
    if kind == "pickle":
        w.write_bytes(pickle.dumps(_Payload(marker)))
    else:
        torch.save(_Payload(marker), w)
    with pytest.raises(ValueError, match=r"model\.safetensors is corrupt or not a safetensors file"):
        um.load_classifier(model_dir)
    assert not marker.exists()


def test_planted_pickles_are_ignored(saved, model_dir, marker):
    for name in ("model.pkl", "export.pkl", "learner.pkl", "vocab.pkl", "model.pth", "models/best.pth"):
        p = model_dir / name
        p.parent.mkdir(exist_ok=True)
        if name.endswith(".pth"):
            torch.save(_Payload(marker), p)
        else:
            p.write_bytes(pickle.dumps(_Payload(marker)))
    clf = um.load_classifier(model_dir)
    assert not marker.exists()
    np.testing.assert_allclose(clf.predict_proba(PROBE), saved[1], rtol=1e-5, atol=1e-6)


def test_lm_dir_with_pickle_weights(tmp_path, marker):
    lm = um.LanguageModel(["xxunk", "xxpad", "a"], {"emb_sz": 4, "n_hid": 8, "n_layers": 1},
                          {"0.encoder.weight": torch.zeros(3, 4)})
    d = lm.save(tmp_path / "lm")
    (d / "lm.safetensors").write_bytes(pickle.dumps(_Payload(marker)))
    with pytest.raises(ValueError, match=r"lm\.safetensors is corrupt or not a safetensors file"):
        um.load_lm(d)
    assert not marker.exists()


def test_fastai_pretrained_pair_is_read_safely(tmp_path, marker):
    d = tmp_path / "wt103"
    d.mkdir()
    torch.save(_Payload(marker), d / "fwd_wt103.pth")
    pickle.dump(["xxunk", "xxpad"], open(d / "itos_wt103.pkl", "wb"))
    with pytest.raises(ValueError, match=r"Could not read weights .*fwd_wt103\.pth"):
        _read_fastai_pretrained(d)
    assert not marker.exists()
    torch.save({"0.encoder.weight": torch.zeros(2, 4)}, d / "fwd_wt103.pth")
    (d / "itos_wt103.pkl").write_bytes(pickle.dumps(_Payload(marker)))
    with pytest.raises(ValueError, match=r"Could not read vocab .*itos_wt103\.pkl.*refusing to load"):
        _read_fastai_pretrained(d)
    assert not marker.exists()
    pickle.dump(["xxunk", "xxpad"], open(d / "itos_wt103.pkl", "wb"))  # the genuine pair loads
    wgts, vocab = _read_fastai_pretrained(d)
    assert vocab == ["xxunk", "xxpad"] and wgts["0.encoder.weight"].shape == (2, 4)


# ---------------------------------------------------------------------- broken directories
@pytest.mark.parametrize("name", ["config.json", "vocab.json", "labels.json", "thresholds.json", "model.safetensors"])
def test_missing_file(model_dir, name):
    (model_dir / name).unlink()
    with pytest.raises(FileNotFoundError, match=rf"{name} is missing"):
        um.load_classifier(model_dir)


@pytest.mark.parametrize("name", ["config.json", "vocab.json", "labels.json", "thresholds.json"])
def test_corrupt_json(model_dir, name):
    p = model_dir / name
    p.write_bytes(p.read_bytes()[: len(p.read_bytes()) // 2])  # a torn write
    with pytest.raises(ValueError, match=rf"{name} is corrupt"):
        um.load_classifier(model_dir)


def test_truncated_weights(model_dir):
    p = model_dir / "model.safetensors"
    p.write_bytes(p.read_bytes()[:1000])
    with pytest.raises(ValueError, match=r"model\.safetensors is corrupt"):
        um.load_classifier(model_dir)


def _edit(p: Path, f) -> None:
    p.write_text(json.dumps(f(json.loads(p.read_text()))))


def _set(**kv):
    return lambda d: {**d, **kv}


@pytest.mark.parametrize("name,edit,match", [
    ("vocab.json", lambda v: v + ["extra_token"], r"vocab\.json lists \d+ tokens but config\.json says vocab_size"),
    ("vocab.json", lambda v: v[:-1], r"vocab\.json lists"),
    ("vocab.json", lambda v: {"tokens": v}, r"vocab\.json must hold a list of strings"),
    ("labels.json", lambda v: v[:-1], r"labels\.json must list 6 distinct label names"),
    ("labels.json", lambda v: [v[0]] * len(v), r"labels\.json must list 6 distinct"),
    ("thresholds.json", lambda v: v + [0.5], r"thresholds\.json must hold 6 numbers in \[0, 1\]"),
    ("thresholds.json", lambda v: ["high"] * len(v), r"thresholds\.json must hold 6 numbers"),
    ("thresholds.json", lambda v: [1.5] * len(v), r"thresholds\.json must hold 6 numbers in \[0, 1\]"),
    ("config.json", _set(kind="language_model"), r"config\.json is not a ulmfit_ml classifier config"),
    ("config.json", _set(format_version=99), r"saved by a newer ulmfit_ml"),
    ("config.json", lambda d: {k: v for k, v in d.items() if k != "seq_len"}, r"config\.json lacks the key 'seq_len'"),
    ("config.json", _set(lin_ftrs="fifty"), r"config\.json has invalid architecture values"),
    ("config.json", _set(arch={"emb_sz": 32, "n_hid": 32, "n_layers": 2}),
     r"model\.safetensors do not match the architecture in config\.json"),
])
def test_mismatched_files(model_dir, name, edit, match):
    _edit(model_dir / name, edit)
    with pytest.raises(ValueError, match=match):
        um.load_classifier(model_dir)


def test_consistent_but_wrong_label_count_hits_weights(model_dir):
    # labels.json and config.json agree on 7 labels, the weights have 6 outputs
    _edit(model_dir / "labels.json", lambda v: v + ["new"])
    _edit(model_dir / "thresholds.json", lambda v: v + [0.5])
    _edit(model_dir / "config.json", lambda d: {**d, "n_labels": 7})
    with pytest.raises(ValueError, match=r"model\.safetensors do not match the architecture"):
        um.load_classifier(model_dir)


def test_corrupt_history(model_dir):
    (model_dir / "history.csv").write_text('stage,epoch\n"never closed,1\n')
    with pytest.raises(ValueError, match=r"history\.csv is corrupt .*delete it"):
        um.load_classifier(model_dir)


def test_no_directory(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"No model directory at .*nowhere\.$"):
        um.load_classifier(tmp_path / "nowhere")


def test_no_directory_points_at_leftover_of_interrupted_save(saved, tmp_path):
    shutil.copytree(saved[0], tmp_path / ".clf.old-1234abcd")
    with pytest.raises(FileNotFoundError, match=r"interrupted save left the previous model at .*\.clf\.old-1234abcd"):
        um.load_classifier(tmp_path / "clf")


# ---------------------------------------------------------------------- atomic saves
def _leftovers(parent: Path) -> list[str]:
    return sorted(p.name for p in parent.iterdir() if ".tmp-" in p.name or ".old-" in p.name)


def test_failed_overwrite_keeps_previous_model(saved, model_dir, monkeypatch):
    clf = um.load_classifier(model_dir)
    before = clf.thresholds.copy()
    clf.thresholds = np.full(len(clf.labels), 0.3)
    real = um_model.write_json

    def crash(p, obj):
        if p.name == "labels.json":
            raise KeyboardInterrupt("killed mid-save")
        real(p, obj)

    monkeypatch.setattr(um_model, "write_json", crash)
    with pytest.raises(KeyboardInterrupt):
        clf.save(model_dir, overwrite=True)
    assert _leftovers(model_dir.parent) == []
    old = um.load_classifier(model_dir)
    assert np.array_equal(old.thresholds, before) and not np.any(old.thresholds == 0.3)
    np.testing.assert_allclose(old.predict_proba(PROBE), saved[1], rtol=1e-5, atol=1e-6)
    with pytest.raises(KeyboardInterrupt):
        clf.save(model_dir.parent / "fresh")
    assert not (model_dir.parent / "fresh").exists() and _leftovers(model_dir.parent) == []


def test_save_refuses_to_overwrite_by_default(model_dir):
    clf = um.load_classifier(model_dir)
    with pytest.raises(FileExistsError, match=r"already exists; pass overwrite=True"):
        clf.save(model_dir)


@pytest.mark.parametrize("exchange", [True, False], ids=["renameat2", "two-renames"])
def test_overwrite_replaces_model(model_dir, monkeypatch, exchange):
    if exchange and not sys.platform.startswith("linux"):
        pytest.skip("the atomic exchange (renameat2) is Linux-only")
    real, calls = persist._exchange, []

    def spy(a, b):
        calls.append(real(a, b) if exchange else False)
        return calls[-1]

    monkeypatch.setattr(persist, "_exchange", spy)
    clf = um.load_classifier(model_dir)
    clf.thresholds = np.full(len(clf.labels), 0.25)
    clf.save(model_dir, overwrite=True)
    assert calls == [exchange]
    assert np.all(um.load_classifier(model_dir).thresholds == 0.25)
    assert _leftovers(model_dir.parent) == []


_KILLER = """
import os, signal, sys, time, numpy as np, ulmfit_ml as um
src, dst, rounds = sys.argv[1], sys.argv[2], int(sys.argv[3])
clf = um.load_classifier(src)
rng = np.random.default_rng(0)
for r in range(rounds):
    rd, wr = os.pipe()
    pid = os.fork()
    if pid == 0:  # child: save forever, alternating two models
        os.close(rd)
        i = 0
        while True:
            i += 1
            clf.thresholds = np.full(len(clf.labels), 0.25 if i % 2 else 0.75)
            clf.save(dst, overwrite=True)
            if i == 1:
                os.write(wr, b"saved")
    os.close(wr)
    assert os.read(rd, 5) == b"saved"
    time.sleep(float(rng.uniform(0.05, 0.6)))
    os.kill(pid, signal.SIGKILL)
    os.waitpid(pid, 0)
    got = um.load_classifier(dst)
    print(sorted(set(np.round(got.thresholds, 2).tolist())), got.predict_proba(["a parcel"]).shape, flush=True)
"""


def test_kill_during_saves_leaves_a_complete_model(saved, tmp_path):
    """SIGKILL a process that saves in a loop, at random moments: the directory always loads
    and holds one complete model (all thresholds 0.25 or 0.75, never a mix or a missing file)."""
    dst = tmp_path / "live"
    out = subprocess.run([sys.executable, "-c", _KILLER, str(saved[0]), str(dst), "6"], capture_output=True,
                         text=True, timeout=300, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert out.returncode == 0, out.stderr[-2000:]
    lines = out.stdout.strip().splitlines()
    assert len(lines) == 6
    assert set(lines) <= {"[0.25] (1, 6)", "[0.75] (1, 6)"}
    for p in tmp_path.glob(".live.*"):  # a killed save may leave its temp dir behind, never an .old- model
        assert ".tmp-" in p.name, p.name


# ---------------------------------------------------------------------- the unsafe fastai opt-in
def test_load_fastai_learner_needs_explicit_trust(tmp_path, marker):
    f = tmp_path / "export.pkl"
    torch.save(_Payload(marker), f)
    for flag in (False, "yes", 1):
        with pytest.raises(ValueError, match=r"Refusing to load .*executes arbitrary code"):
            um.load_fastai_learner(f, i_trust_this_file=flag)
    assert not marker.exists()
    with pytest.raises(TypeError, match="i_trust_this_file"):
        um.load_fastai_learner(f)  # keyword required, no default
    with pytest.raises(FileNotFoundError, match="No fastai export"):
        um.load_fastai_learner(tmp_path / "none.pkl", i_trust_this_file=True)


def test_load_fastai_learner_opt_in_really_unpickles(tmp_path, marker):
    # what the warning is about: with the opt-in, a hostile export runs its code
    f = tmp_path / "export.pkl"
    torch.save(_Payload(marker), f)
    try:
        um.load_fastai_learner(f, i_trust_this_file=True)
    except Exception:  # noqa: BLE001 - the payload is not a Learner; what matters is that it ran
        pass
    assert marker.read_text() == "pwned"
