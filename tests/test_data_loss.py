"""Data loss must be impossible: overwrite replaces only what ulmfit_ml wrote, never the current
directory, an input, or a file beside or inside the paths it writes (issue 14, "Data loss")."""
from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import ulmfit_ml as um
from ulmfit_ml.inference import predict as P
from ulmfit_ml.cli import main
from ulmfit_ml.utils.persist import MARKER, atomic_dir, check_replaceable, remove_owned_dir
from ulmfit_ml.training.checkpoint import save_checkpoint
from ulmfit_ml.experiments.runs import RunDir

from conftest import TICKET_LABELS as LABELS, TICKET_TEXTS as TEXTS, untrained_ticket_classifier



@pytest.fixture(scope="module")
def clf():
    return untrained_ticket_classifier()


def _snapshot(root: Path) -> dict[str, str]:
    """relative path -> sha256 of every file below ``root`` (ulmfit_ml's marker excluded)."""
    return {p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def _plant(*paths: Path) -> dict[Path, bytes]:
    out = {}
    for p in paths:
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(b"precious " + p.name.encode())
        out[p] = p.read_bytes()
    return out


def _intact(planted: dict[Path, bytes]) -> None:
    for p, b in planted.items():
        assert p.is_file() and p.read_bytes() == b, f"{p} was removed or changed"


# ---------------------------------------------------------------------- model directories
def test_save_overwrite_refuses_a_directory_ulmfit_ml_did_not_write(clf, tmp_path):
    precious = tmp_path / "precious"
    planted = _plant(precious / "notes.txt")
    with pytest.raises(FileExistsError, match=r"Refusing to replace .*precious: it was not written by ulmfit_ml "
                                              r"\(no \.ulmfit_ml\.json marker\).*Nothing was deleted"):
        clf.save(precious, overwrite=True)
    _intact(planted)
    assert sorted(p.name for p in precious.iterdir()) == ["notes.txt"]


def test_save_overwrite_refuses_own_directory_with_a_foreign_file_inside(clf, tmp_path):
    m = clf.save(tmp_path / "m")
    assert (m / MARKER).is_file()
    planted = _plant(m / "notes.txt", m / "sub" / "deep.txt")
    with pytest.raises(FileExistsError, match=r"besides ulmfit_ml's files it holds notes\.txt, sub/deep\.txt.*move them out"):
        clf.save(m, overwrite=True)
    _intact(planted)
    assert um.load_classifier(m).labels == LABELS


def test_save_overwrite_replaces_own_directory_and_nothing_beside(clf, tmp_path):
    m = clf.save(tmp_path / "m")
    planted = _plant(tmp_path / "notes.txt", tmp_path / "m2" / "x.txt", tmp_path / ".m.backup")
    before = _snapshot(m)
    clf.save(m, overwrite=True)
    _intact(planted)
    assert _snapshot(m).keys() == before.keys()
    assert sorted(p.name for p in tmp_path.iterdir()) == [".m.backup", "m", "m2", "notes.txt"]  # no temp dirs left


def test_save_overwrite_refuses_the_current_directory_and_input_holders(clf, tmp_path, monkeypatch):
    m = clf.save(tmp_path / "m")
    monkeypatch.chdir(m)
    with pytest.raises(FileExistsError, match=r"Refusing to replace \.: it is or contains the current directory"):
        clf.save(".", overwrite=True)
    with pytest.raises(FileExistsError, match=r"it is or contains the current directory"):
        clf.save(tmp_path, overwrite=True)
    monkeypatch.chdir(tmp_path)
    with pytest.raises(FileExistsError, match=r"Refusing to replace m: it holds the input .*config\.json of this run"):
        clf.save("m", overwrite=True, inputs=[m / "config.json"])
    assert um.load_classifier(m).labels == LABELS


def test_model_saved_before_the_marker_still_loads_and_overwrites(clf, tmp_path):
    m = clf.save(tmp_path / "m")
    (m / MARKER).unlink()  # as written by ulmfit_ml before the marker existed (format 1: no checksums)
    cfg = m / "config.json"
    cfg.write_text(cfg.read_text(encoding="utf-8").replace('"format_version": 2', '"format_version": 1'), encoding="utf-8")
    assert um.load_classifier(m).labels == LABELS
    check_replaceable(m)
    clf.save(m, overwrite=True)
    assert (m / MARKER).is_file()
    # a user's own config.json alone is not mistaken for an old model directory
    own = tmp_path / "own"
    _plant(own / "config.json")
    with pytest.raises(FileExistsError, match="not written by ulmfit_ml"):
        clf.save(own, overwrite=True)


def test_atomic_dir_pretrain_checkpoint_without_marker_is_replaceable(tmp_path):
    ck = tmp_path / "checkpoint"
    ck.mkdir()
    (ck / "state.safetensors").write_bytes(b"x")
    (ck / "state.json").write_text('{"step": 3}')
    atomic_dir(ck, lambda t: (t / "state.json").write_text('{"step": 4}'), overwrite=True)
    assert (ck / "state.json").read_text() == '{"step": 4}' and not (ck / "state.safetensors").exists()
    with pytest.raises(FileExistsError, match="already exists; pass overwrite=True"):
        atomic_dir(ck, lambda t: None)


# ---------------------------------------------------------------------- run directories
def test_run_dir_overwrite_refuses_foreign_cwd_and_inputs(tmp_path, monkeypatch):
    mydata = tmp_path / "mydata"
    planted = _plant(mydata / "train.csv", tmp_path / "beside.txt")
    with pytest.raises(FileExistsError, match=r"Refusing to replace .*mydata: it holds the input .*train\.csv"):
        RunDir.create(mydata, overwrite=True, inputs=[mydata / "train.csv"])
    with pytest.raises(FileExistsError, match=r"mydata: it was not written by ulmfit_ml"):
        RunDir.create(mydata, overwrite=True)
    with pytest.raises(FileExistsError, match=r"already exists: choose another --out, pass --overwrite"):
        RunDir.create(mydata)
    monkeypatch.chdir(tmp_path)
    with pytest.raises(FileExistsError, match=r"Refusing to replace \.: it is or contains the current directory"):
        RunDir.create(".", overwrite=True)
    _intact(planted)


def test_run_dir_overwrite_replaces_only_its_own_files(clf, tmp_path):
    run = RunDir.create(tmp_path / "run")
    run.write_json("metrics.json", {"a": 1})
    run.set_status("done")
    clf.save(run.model_dir)
    (run.plots_dir).mkdir()
    (run.plots_dir / "loss.png").write_bytes(b"png")
    planted = _plant(tmp_path / "notes.txt", tmp_path / "run.bak" / "keep.txt")
    RunDir.create(run.path, overwrite=True)  # only ulmfit_ml's files: replaced
    assert sorted(p.name for p in run.path.iterdir()) == [MARKER]
    _intact(planted)
    inside = _plant(run.path / "notes.txt", run.path / "plots" / "mine.pdf")
    with pytest.raises(FileExistsError, match=r"it holds notes\.txt, plots/mine\.pdf"):
        RunDir.create(run.path, overwrite=True)
    _intact({**planted, **inside})
    with pytest.raises(FileExistsError, match=r"holds the input .*config\.json"):
        RunDir.create(run.path, overwrite=True, inputs=[run.path / "config.json"])


def test_checkpoint_cleanup_removes_only_ulmfit_ml_checkpoints(tmp_path):
    class _Learn:  # what save_checkpoint reads
        import torch

        model = torch.nn.Linear(2, 2)
        opt = None
        dls = None

    d = tmp_path / "checkpoints"
    save_checkpoint(d, learn=_Learn(), stage=0, epoch=1, info={})
    assert (d / MARKER).is_file()
    planted = _plant(d / "mine.txt")
    with pytest.raises(FileExistsError, match=r"holds mine\.txt"):
        remove_owned_dir(d)
    _intact(planted)
    (d / "mine.txt").unlink()
    remove_owned_dir(d)
    assert not d.exists()
    user = tmp_path / "user_ckpts"  # a directory the caller made is not claimed by a marker
    user.mkdir()
    save_checkpoint(user, learn=_Learn(), stage=0, epoch=1, info={})
    assert not (user / MARKER).exists()


@pytest.mark.parametrize("where", ["cwd", "input_dir", "foreign"])
def test_cli_train_overwrite_never_deletes_user_files(tmp_path, monkeypatch, capsys, where):
    mydata = tmp_path / "mydata"
    planted = _plant(mydata / "notes.txt", tmp_path / "beside.txt")
    train = mydata / "train.csv"
    pd.DataFrame({"text": TEXTS, "tags": "bug"}).to_csv(train, index=False)
    planted[train] = train.read_bytes()
    monkeypatch.chdir(mydata if where == "cwd" else tmp_path)
    out = {"cwd": ".", "input_dir": str(mydata), "foreign": str(mydata)}[where]
    extra = [str(tmp_path / "other.csv")] if where == "foreign" else []
    if extra:
        Path(extra[0]).write_bytes(train.read_bytes())
    rc = main(["train", "--train", extra[0] if extra else str(train), "--label-col", "tags", "--out", out,
               "--overwrite", "--quiet", "--device", "cpu"])
    err = capsys.readouterr().err
    assert rc == 1
    msg = {"cwd": "current directory", "input_dir": "holds the input", "foreign": "not written by ulmfit_ml"}[where]
    assert msg in err and "Nothing was deleted" in err
    _intact(planted)


# ---------------------------------------------------------------------- CLI output files
@pytest.fixture(scope="module")
def model_dir(clf, tmp_path_factory):
    return clf.save(tmp_path_factory.mktemp("m") / "clf")


def _input(tmp_path: Path, name: str) -> Path:
    p = tmp_path / name
    df = pd.DataFrame({"id": [f"{i:03d}" for i in range(len(TEXTS))], "text": TEXTS,
                       "tags": ["billing", "bug", "login", "bug;login", "billing", "bug"] * 4})
    if name.endswith(".tsv"):
        df.to_csv(p, sep="\t", index=False)
    elif name.endswith(".jsonl"):
        df.to_json(p, orient="records", lines=True)
    else:
        df.to_csv(p, index=False)
    return p


@pytest.mark.parametrize("argv", [
    ["predict", "{m}", "{d}/in.tsv", "-o", "{d}/in.tsv"],
    ["predict", "{m}", "{d}/in.csv", "-o", "{d}/in.csv"],
    ["predict", "{m}", "{d}/test.csv", "--format", "submission", "--id-col", "id", "-o", "{d}/test.csv"],
    ["predict", "{m}", "{d}/in.jsonl", "-o", "{d}/in.jsonl"],
    ["predict", "{m}", "{d}/in.csv", "-o", "{m}/config.csv"],
    ["evaluate", "{m}", "{d}/test.csv", "--per-label", "{d}/test.csv"],
    ["evaluate", "{m}", "{d}/test.csv", "--out", "{m}/config.json"],
])
def test_cli_never_writes_over_an_input(model_dir, tmp_path, capsys, argv):
    for name in ("in.tsv", "in.csv", "test.csv", "in.jsonl"):
        _input(tmp_path, name)
    (model_dir / "config.csv").write_text("keep")
    before = {**_snapshot(tmp_path), **{f"m/{k}": v for k, v in _snapshot(model_dir).items()}}
    args = [a.format(m=model_dir, d=tmp_path) for a in argv] + ["--overwrite"]
    assert main(args) == 1
    err = capsys.readouterr().err
    assert "Refusing to write" in err and "of this command (even with --overwrite)" in err
    assert {**_snapshot(tmp_path), **{f"m/{k}": v for k, v in _snapshot(model_dir).items()}} == before
    (model_dir / "config.csv").unlink()


@pytest.mark.parametrize("out,extra", [("o.tsv", []), ("o.jsonl", []), ("o.parquet", []), ("o.csv", ["--format", "submission", "--id-col", "id"]),
                                       ("o.csv", [])])
def test_cli_predict_refuses_existing_output_without_overwrite(model_dir, tmp_path, capsys, out, extra):
    pytest.importorskip("pyarrow") if out.endswith(".parquet") else None
    src = _input(tmp_path, "in.csv")
    planted = _plant(tmp_path / out)
    assert main(["predict", str(model_dir), str(src), "-o", str(tmp_path / out), *extra]) == 1
    err = capsys.readouterr().err
    assert f"{out} already exists: pass --overwrite" in err
    _intact(planted)
    assert main(["predict", str(model_dir), str(src), "-o", str(tmp_path / out), "--overwrite", *extra]) == 0
    assert (tmp_path / out).read_bytes() != planted[tmp_path / out]


def test_cli_evaluate_refuses_existing_outputs_without_overwrite(model_dir, tmp_path, capsys):
    src = _input(tmp_path, "test.csv")
    planted = _plant(tmp_path / "per_label.csv", tmp_path / "report.json")
    for flag, name in (("--per-label", "per_label.csv"), ("--out", "report.json")):
        assert main(["evaluate", str(model_dir), str(src), flag, str(tmp_path / name)]) == 1
        assert f"{name} already exists: pass --overwrite" in capsys.readouterr().err
    _intact(planted)
    assert main(["evaluate", str(model_dir), str(src), "--per-label", str(tmp_path / "per_label.csv"),
                 "--out", str(tmp_path / "report.json"), "--overwrite"]) == 0
    assert pd.read_csv(tmp_path / "per_label.csv").shape[0] == len(LABELS)


# ---------------------------------------------------------------------- predict_file, first chunk
def test_predict_file_killed_in_first_chunk_resumes(clf, tmp_path, monkeypatch):
    src = _input(tmp_path, "in.csv")
    ref = tmp_path / "ref.csv"
    um.predict_file(clf, src, ref, chunksize=5, id_col="id")
    out = tmp_path / "o.csv"
    real = P.predict_frame

    def boom(*a, **kw):
        if kw["start"] == 0:
            with open(out, "ab") as f:
                f.write(b"row,half a chunk")  # as if killed mid-write
            raise KeyboardInterrupt
        return real(*a, **kw)

    monkeypatch.setattr(P, "predict_frame", boom)
    with pytest.raises(KeyboardInterrupt):
        um.predict_file(clf, src, out, chunksize=5, id_col="id")
    assert out.exists() and P._progress_path(out).exists()
    monkeypatch.setattr(P, "predict_frame", real)
    res = um.predict_file(clf, src, out, chunksize=5, id_col="id")  # resumes: no "not written by predict_file"
    assert res.resumed_from == 0 and res.n_rows == len(TEXTS)
    assert out.read_bytes() == ref.read_bytes()


def test_predict_file_killed_before_output_exists_resumes(clf, tmp_path, monkeypatch):
    src = _input(tmp_path, "in.csv")
    out = tmp_path / "o.csv"
    real_open = open

    def no_output(path, *a, **kw):
        if Path(path) == out:
            raise KeyboardInterrupt
        return real_open(path, *a, **kw)

    monkeypatch.setattr("builtins.open", no_output)
    with pytest.raises(KeyboardInterrupt):
        um.predict_file(clf, src, out, chunksize=5)
    monkeypatch.setattr("builtins.open", real_open)
    assert not out.exists() and P._progress_path(out).exists()
    assert um.predict_file(clf, src, out, chunksize=5).n_rows == len(TEXTS)


def test_predict_file_messages_name_the_cli_flags(clf, tmp_path):
    src = _input(tmp_path, "in.csv")
    out = tmp_path / "o.csv"
    um.predict_file(clf, src, out, chunksize=5)
    P._progress_path(out).write_text("{bad")
    with pytest.raises(ValueError, match=r"corrupt .*pass resume=False \(CLI: --no-resume\) to start over"):
        um.predict_file(clf, src, out)
    P._progress_path(out).unlink()
    with pytest.raises(FileExistsError, match=r"o\.csv already exists: pass --overwrite \(Python: overwrite=True\)"):
        um.predict_file(clf, src, out)
    with pytest.raises(FileExistsError, match=r"Refusing to write .*in\.csv: it is the input"):
        um.predict_file(clf, src, src, overwrite=True)


# ---------------------------------------------------------------------- batch size
@pytest.mark.parametrize("bs,err,match", [(0, ValueError, r"bs must be >= 1 .*got 0"),
                                          (-1, ValueError, r"bs must be >= 1 .*got -1"),
                                          (1.5, TypeError, r"bs must be a positive int .*got 1\.5"),
                                          (True, TypeError, r"bs must be a positive int")])
def test_bad_batch_size(clf, tmp_path, bs, err, match):
    with pytest.raises(err, match=match):
        clf.predict_proba(["a text"], bs=bs)
    with pytest.raises(err, match=match):
        um.predict_file(clf, _input(tmp_path, "in.csv"), tmp_path / "o.csv", bs=bs)
    assert not (tmp_path / "o.csv").exists() and not P._progress_path(tmp_path / "o.csv").exists()
    assert clf.predict_proba(["a text", "another"], bs=1).shape == (2, len(LABELS))


# ---------------------------------------------------------------------- thresholds checked by save()
@pytest.mark.parametrize("bad", [[0.5, 0.5], [0.5, 0.5, 1.5], [0.5, float("nan"), 0.5]])
def test_save_refuses_bad_thresholds_and_keeps_the_saved_model(clf, tmp_path, bad):
    m = clf.save(tmp_path / "m")
    before = _snapshot(m)
    good = clf.thresholds
    try:
        clf.thresholds = np.asarray(bad)
        with pytest.raises(ValueError, match=r"Cannot save to .*m: clf\.thresholds is invalid .*3 numbers in \[0, 1\].*"
                                             r"nothing was written"):
            clf.save(m, overwrite=True)
    finally:
        clf.thresholds = good
    assert _snapshot(m) == before and um.load_classifier(m).labels == LABELS


def test_evaluate_out_and_per_label_must_differ(model_dir, tmp_path, capsys):
    src = _input(tmp_path, "test.csv")
    assert main(["evaluate", str(model_dir), str(src), "--out", str(tmp_path / "r.csv"),
                 "--per-label", str(tmp_path / "r.csv")]) == 2
    assert "--out and --per-label name the same file" in capsys.readouterr().err
    assert not (tmp_path / "r.csv").exists()


# ---------------------------------------------------------------------- clear_checkpoint (self_train's teacher)
def test_clear_checkpoint_removes_only_a_checkpoint_ulmfit_ml_wrote(tmp_path):
    from ulmfit_ml.training.checkpoint import CHECKPOINT_JSON, clear_checkpoint

    d = tmp_path / "ck"
    d.mkdir()
    theirs = {CHECKPOINT_JSON: b'{"my": "own file"}', "ckpt-s0-e1.pt": b"their weights", "notes.txt": b"keep"}
    for name, body in theirs.items():
        (d / name).write_bytes(body)
    clear_checkpoint(d)  # a checkpoint.json of another format: nothing is touched
    assert {f.name: f.read_bytes() for f in d.iterdir()} == theirs
    (d / CHECKPOINT_JSON).write_text('{"format": 1, "weights": "../outside.pt", "stage": 0, "epoch": 1}')
    (tmp_path / "outside.pt").write_bytes(b"x")
    clear_checkpoint(d)  # names a file outside the directory: nothing is touched
    assert (tmp_path / "outside.pt").exists() and (d / CHECKPOINT_JSON).exists()
    (d / CHECKPOINT_JSON).write_text('{"format": 1, "weights": "ckpt-s0-e1.pt", "stage": 0, "epoch": 1}')
    clear_checkpoint(d)  # ulmfit_ml's own: the JSON and the weights it names go, the rest stays
    assert sorted(f.name for f in d.iterdir()) == ["notes.txt"]
    clear_checkpoint(tmp_path / "absent")  # nothing to clear
