"""Streaming prediction: chunked CSV/TSV/parquet input, resumable output without duplicated or
missing rows after an interruption (exception, torn write, SIGKILL)."""
from __future__ import annotations

import contextlib
import gzip
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import ulmfit_ml as um
from ulmfit_ml.inference import predict as P
from conftest import support_tickets_model

DATA = Path(__file__).resolve().parents[1] / "data" / "support_tickets.csv"
N, CHUNK = 230, 50  # 5 chunks, the last one partial


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    return support_tickets_model(tmp_path_factory.mktemp("m"), N)


@pytest.fixture(scope="module")
def clf(model_dir):
    return um.load_classifier(model_dir)


@pytest.fixture(scope="module")
def frame():
    df = pd.read_csv(DATA, dtype={"id": str}).iloc[240:240 + N].reset_index(drop=True)
    df["id"] = [f"{i:05d}" for i in range(N)]  # leading zeros must survive
    df.loc[5, "text"] = ""
    df.loc[6, "text"] = "   "
    df.loc[7, "text"] = "NA"  # a real text, not a missing value
    df.loc[8, "text"] = 'quoted, "comma" and\na newline'
    return df[["id", "text"]]


@pytest.fixture(scope="module")
def inputs(frame, tmp_path_factory):
    d = tmp_path_factory.mktemp("in")
    frame.to_csv(d / "in.csv", index=False)
    frame.to_csv(d / "in.tsv", index=False, sep="\t")
    with gzip.open(d / "in.csv.gz", "wt", encoding="utf-8") as f:
        frame.to_csv(f, index=False)
    frame.to_parquet(d / "in.parquet", row_group_size=64)
    return d


@pytest.fixture(scope="module")
def reference(model_dir, inputs, tmp_path_factory):
    """An uninterrupted run: the bytes every resumed run must reproduce."""
    out = tmp_path_factory.mktemp("ref") / "out.csv"
    with pytest.warns(UserWarning, match=r"2 row\(s\) of in\.csv have an empty or missing text in 'text'"):
        res = um.predict_file(model_dir, inputs / "in.csv", out, chunksize=CHUNK, id_col="id", output="both")
    assert (res.n_rows, res.n_new, res.resumed_from, res.n_empty) == (N, N, 0, 2)
    return out.read_bytes()


def _run(model, inputs, out, *, src="in.csv", _warn=True, **kw):
    """predict_file with the reference options; ``_warn``: expect the empty-texts warning."""
    opts = {"chunksize": CHUNK, "id_col": "id", "output": "both", **kw}
    with pytest.warns(UserWarning, match="empty or missing text") if _warn else contextlib.nullcontext():
        return um.predict_file(model, inputs / src, out, **opts)


# ---------------------------------------------------------------------- content
def test_output_matches_predict_proba(reference, frame, clf, tmp_path):
    (tmp_path / "o.csv").write_bytes(reference)
    out = pd.read_csv(tmp_path / "o.csv", dtype={"id": str}, keep_default_na=False, na_values=[""])
    assert out.columns.tolist() == ["row", "id", "labels"] + [f"proba_{lab}" for lab in clf.labels]
    assert out["row"].tolist() == list(range(N)) and out["id"].tolist() == frame["id"].tolist()
    probs = out[[f"proba_{lab}" for lab in clf.labels]].to_numpy()
    empty = [5, 6]  # missing/empty texts: predicted from an empty input (the one text policy)
    with pytest.warns(UserWarning, match="empty or missing text"):
        from_empty = clf.predict_proba(["", ""])
    np.testing.assert_allclose(probs[empty], from_empty, rtol=1e-5)
    ok = [i for i in range(N) if i not in empty]
    expected = clf.predict_proba(frame["text"][ok].tolist())
    np.testing.assert_allclose(probs[ok], expected, rtol=1e-5)  # written with 6 significant digits
    labels = [";".join(lab for lab, on in zip(clf.labels, row) if on) for row in expected >= clf.thresholds]
    assert out.loc[ok, "labels"].fillna("").tolist() == labels
    assert len(set(labels)) > 1  # the thresholds make the labels informative


def test_output_modes(model_dir, inputs, clf, tmp_path):
    p = _run(model_dir, inputs, tmp_path / "p.csv", output="proba", id_col=None)
    cols = pd.read_csv(p.output_path).columns.tolist()
    assert cols == ["row"] + [f"proba_{lab}" for lab in clf.labels]
    l_ = _run(model_dir, inputs, tmp_path / "l.csv", output="labels")
    assert pd.read_csv(l_.output_path).columns.tolist() == ["row", "id", "labels"]


@pytest.mark.parametrize("src", ["in.tsv", "in.csv.gz", "in.parquet"])
def test_formats_give_the_same_file(reference, model_dir, inputs, tmp_path, src):
    res = _run(model_dir, inputs, tmp_path / "o.csv", src=src)
    assert res.output_path.read_bytes() == reference


def test_chunks_bound_memory(model_dir, inputs, tmp_path, monkeypatch):
    """Never more than ``chunksize`` texts in memory at once (the input is never read whole)."""
    sizes = []
    real = P.predict_frame

    def spy(clf, chunk, **kw):
        sizes.append(len(chunk))
        return real(clf, chunk, **kw)

    monkeypatch.setattr(P, "predict_frame", spy)
    _run(model_dir, inputs, tmp_path / "o.csv", chunksize=40)
    assert sizes == [40] * 5 + [30]
    sizes.clear()
    _run(model_dir, inputs, tmp_path / "o2.csv", chunksize=40, src="in.parquet")
    assert max(sizes) <= 40 and sum(sizes) == N


def test_empty_input_writes_header(model_dir, tmp_path, clf):
    (tmp_path / "e.csv").write_text("id,text\n")
    res = um.predict_file(model_dir, tmp_path / "e.csv", tmp_path / "o.csv", id_col="id", output="both")
    assert res.n_rows == 0
    assert pd.read_csv(tmp_path / "o.csv").columns.tolist() == ["row", "id", "labels"] + [f"proba_{lab}" for lab in clf.labels]


def test_accepts_a_classifier_object(reference, clf, inputs, tmp_path):
    assert _run(clf, inputs, tmp_path / "o.csv").output_path.read_bytes() == reference


# ---------------------------------------------------------------------- interruption and resume
def _progress(out: Path) -> dict:
    return json.loads((out.parent / (out.name + P.PROGRESS_SUFFIX)).read_text())


def test_resume_after_exception(reference, model_dir, inputs, tmp_path, monkeypatch):
    out = tmp_path / "o.csv"
    real, calls = P.predict_frame, []

    def boom(*a, **kw):
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt("interrupted during chunk 3")
        return real(*a, **kw)

    monkeypatch.setattr(P, "predict_frame", boom)
    with pytest.raises(KeyboardInterrupt):
        um.predict_file(model_dir, inputs / "in.csv", out, chunksize=CHUNK, id_col="id", output="both")
    assert _progress(out)["rows"] == 2 * CHUNK and not _progress(out)["complete"]
    assert len(pd.read_csv(out)) == 2 * CHUNK
    monkeypatch.setattr(P, "predict_frame", real)
    res = um.predict_file(model_dir, inputs / "in.csv", out, chunksize=CHUNK, id_col="id", output="both")
    assert (res.resumed_from, res.n_new, res.n_rows) == (2 * CHUNK, N - 2 * CHUNK, N)
    assert out.read_bytes() == reference


def test_resume_after_crash_between_write_and_commit(reference, model_dir, inputs, tmp_path, monkeypatch):
    """Rows of chunk 3 reached the file but the progress file was not updated: they are
    dropped and predicted again, not duplicated."""
    out = tmp_path / "o.csv"
    real, calls = P._write_progress, []

    def crash(p, state):
        calls.append(1)
        if len(calls) == 4:  # call 1 is the 0-rows progress file written before the output is created
            raise KeyboardInterrupt("killed before the commit of chunk 3")
        real(p, state)

    monkeypatch.setattr(P, "_write_progress", crash)
    with pytest.raises(KeyboardInterrupt):
        _run(model_dir, inputs, out, _warn=False)
    assert len(pd.read_csv(out)) == 3 * CHUNK and _progress(out)["rows"] == 2 * CHUNK
    monkeypatch.setattr(P, "_write_progress", real)
    _run(model_dir, inputs, out, _warn=False)  # the empty texts were in an already committed chunk
    assert out.read_bytes() == reference


def test_resume_after_torn_write(reference, model_dir, inputs, tmp_path, monkeypatch):
    out = tmp_path / "o.csv"
    real = P.predict_frame
    monkeypatch.setattr(P, "predict_frame", lambda *a, **kw: (_ for _ in ()).throw(MemoryError("x"))
                        if kw["start"] >= 3 * CHUNK else real(*a, **kw))
    with pytest.raises(MemoryError):
        _run(model_dir, inputs, out, _warn=False)
    with open(out, "ab") as f:  # half a line of the next chunk, as a power cut may leave
        f.write(b"150,00150,billing,0.4")
    monkeypatch.setattr(P, "predict_frame", real)
    _run(model_dir, inputs, out, _warn=False)  # the empty texts were in an already committed chunk
    assert out.read_bytes() == reference


def test_resume_with_another_chunksize(reference, model_dir, inputs, tmp_path, monkeypatch):
    out = tmp_path / "o.csv"
    real = P.predict_frame
    monkeypatch.setattr(P, "predict_frame", lambda *a, **kw: (_ for _ in ()).throw(KeyboardInterrupt())
                        if kw["start"] >= 2 * CHUNK else real(*a, **kw))
    with pytest.raises(KeyboardInterrupt):
        _run(model_dir, inputs, out, _warn=False)
    monkeypatch.setattr(P, "predict_frame", real)
    res = _run(model_dir, inputs, out, chunksize=33, _warn=False)
    assert res.resumed_from == 2 * CHUNK
    ref = pd.read_csv(pd.io.common.BytesIO(reference), dtype={"id": str})
    got = pd.read_csv(out, dtype={"id": str})
    pd.testing.assert_frame_equal(got, ref, rtol=1e-5)


def test_completed_run_is_not_redone(reference, model_dir, inputs, tmp_path):
    out = tmp_path / "o.csv"
    _run(model_dir, inputs, out)
    mtime = out.stat().st_mtime_ns
    res = _run(model_dir, inputs, out, _warn=False)
    assert (res.n_new, res.resumed_from, res.n_rows) == (0, N, N)
    assert out.stat().st_mtime_ns == mtime and out.read_bytes() == reference


_KILLED = """
import sys, ulmfit_ml as um
um.predict_file(sys.argv[1], sys.argv[2], sys.argv[3], chunksize=int(sys.argv[4]), id_col="id", output="both")
"""


def test_resume_after_sigkill(reference, model_dir, inputs, tmp_path):
    out = tmp_path / "o.csv"
    proc = subprocess.Popen([sys.executable, "-c", _KILLED, str(model_dir), str(inputs / "in.csv"), str(out), "25"],
                            env={**os.environ, "OMP_NUM_THREADS": "1"}, stderr=subprocess.DEVNULL)
    prog = out.parent / (out.name + P.PROGRESS_SUFFIX)
    deadline = time.time() + 120
    try:
        while time.time() < deadline and proc.poll() is None:  # kill once a few chunks are committed
            if prog.exists() and json.loads(prog.read_text() or "{}").get("rows", 0) >= 50:
                break
            time.sleep(0.01)
    finally:
        proc.kill()
        proc.wait()
    done = _progress(out)["rows"]
    assert 50 <= done < N, "the run was not killed mid-way"
    res = um.predict_file(model_dir, inputs / "in.csv", out, chunksize=25, id_col="id", output="both")
    assert res.resumed_from == done and res.n_rows == N
    assert out.read_bytes() == reference


def _children(pid: int) -> set[int]:
    """Live processes whose parent is ``pid`` (from /proc)."""
    out = set()
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                stat = (d / "stat").read_text()
            except OSError:
                continue
            fields = stat[stat.rindex(")") + 2:].split()
            if int(fields[1]) == pid and fields[0] != "Z":
                out.add(int(d.name))
    return out


def _alive(pid: int) -> bool:
    try:
        stat = (Path("/proc") / str(pid) / "stat").read_text()
    except OSError:
        return False
    return stat[stat.rindex(")") + 2:].split()[0] != "Z"


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc; PR_SET_PDEATHSIG is Linux-only")
def test_sigkill_in_first_chunk_leaves_no_tokenizer_workers_and_resumes(model_dir, tmp_path):
    """A run SIGKILLed while its first chunk is tokenised in worker processes: the workers exit
    with it, and the rerun resumes to the file an uninterrupted run writes."""
    n = 30000
    df = pd.DataFrame({"id": [f"{i:06d}" for i in range(n)],
                       "text": [f"text number {i} is happy and calm today" for i in range(n)]})
    src = tmp_path / "big.csv"
    df.to_csv(src, index=False)
    out = tmp_path / "o.csv"
    proc = subprocess.Popen([sys.executable, "-c", _KILLED, str(model_dir), str(src), str(out), str(n)],
                            env={**os.environ, "OMP_NUM_THREADS": "1"}, stderr=subprocess.DEVNULL)
    workers: set[int] = set()
    deadline = time.time() + 120
    try:
        while time.time() < deadline and proc.poll() is None and not workers:
            workers = _children(proc.pid)
            time.sleep(0.005)
    finally:
        proc.kill()
        proc.wait()
    assert workers, "the run ended before its tokenizer workers were seen"
    deadline = time.time() + 20
    while time.time() < deadline and any(_alive(w) for w in workers):
        time.sleep(0.1)
    assert not any(_alive(w) for w in workers), "tokenizer workers outlived the killed run"
    assert _progress(out)["rows"] == 0  # killed inside the first chunk
    res = um.predict_file(model_dir, src, out, chunksize=n, id_col="id", output="both")
    assert res.n_rows == n
    ref = tmp_path / "ref.csv"
    um.predict_file(model_dir, src, ref, chunksize=n, id_col="id", output="both")
    assert out.read_bytes() == ref.read_bytes()


# ---------------------------------------------------------------------- refusals
def test_existing_foreign_output(model_dir, inputs, tmp_path):
    out = tmp_path / "o.csv"
    out.write_text("precious,data\n")
    for resume in (True, False):  # a file predict_file did not write (no progress file): refused either way
        with pytest.raises(FileExistsError, match=r"o\.csv already exists: pass --overwrite \(Python: overwrite=True\)"):
            _run(model_dir, inputs, out, _warn=False, resume=resume)
    assert out.read_text() == "precious,data\n"
    assert not (tmp_path / ("o.csv" + P.PROGRESS_SUFFIX)).exists()
    assert _run(model_dir, inputs, out, overwrite=True).n_rows == N


@pytest.mark.parametrize("change,match", [
    (dict(output="proba"), r"belongs to a run with other \['output'\]"),
    (dict(id_col=None), r"other \['id_col'\]"),
    (dict(threshold=0.3), r"other \['threshold'\]"),
])
def test_progress_of_another_run_refused(model_dir, inputs, tmp_path, monkeypatch, change, match):
    out = tmp_path / "o.csv"
    real = P.predict_frame
    monkeypatch.setattr(P, "predict_frame", lambda *a, **kw: (_ for _ in ()).throw(KeyboardInterrupt())
                        if kw["start"] >= CHUNK else real(*a, **kw))
    with pytest.raises(KeyboardInterrupt):
        _run(model_dir, inputs, out, _warn=False)
    monkeypatch.setattr(P, "predict_frame", real)
    with pytest.raises(ValueError, match=match):
        _run(model_dir, inputs, out, _warn=False, **change)


def test_progress_with_another_model_or_input_refused(model_dir, inputs, tmp_path):
    out = tmp_path / "o.csv"
    _run(model_dir, inputs, out)
    other = um.load_classifier(model_dir)
    other.thresholds = np.full(len(other.labels), 0.4)
    with pytest.raises(ValueError, match=r"other \['model'\]"):
        _run(other, inputs, out, _warn=False)
    src = tmp_path / "in.csv"
    src.write_bytes((inputs / "in.csv").read_bytes())
    _run(model_dir, inputs, out, resume=False, src=str(src))
    src.write_bytes(src.read_bytes() + b"99999,one more row\n")
    with pytest.raises(ValueError, match=r"other \['input_size', 'input_mtime_ns'\]"):
        _run(model_dir, inputs, out, _warn=False, src=str(src))


def test_corrupt_progress_file(model_dir, inputs, tmp_path):
    out = tmp_path / "o.csv"
    _run(model_dir, inputs, out)
    (tmp_path / ("o.csv" + P.PROGRESS_SUFFIX)).write_text('{"rows": 1')
    with pytest.raises(ValueError, match=r"progress file .* is corrupt .*resume=False"):
        _run(model_dir, inputs, out, _warn=False)


def test_non_utf8_input(model_dir, tmp_path):
    src = tmp_path / "latin.csv"
    src.write_bytes("id,text\n1,café crème\n2,déjà vu\n".encode("latin-1"))
    with pytest.raises(ValueError, match=r"latin\.csv is not valid utf-8 .*encoding='latin-1'.*encoding_errors='replace'"):
        um.predict_file(model_dir, src, tmp_path / "o.csv")
    um.predict_file(model_dir, src, tmp_path / "o.csv", encoding="latin-1", id_col="id", output="labels", resume=False)
    assert pd.read_csv(tmp_path / "o.csv")["id"].tolist() == [1, 2]
    res = um.predict_file(model_dir, src, tmp_path / "o2.csv", encoding_errors="replace")
    assert res.n_rows == 2


def test_non_string_text_column(model_dir, tmp_path):
    pd.DataFrame({"text": [1, 2, 3]}).to_parquet(tmp_path / "n.parquet")
    with pytest.raises(TypeError, match=r"Text column 'text' has 3 non-string value\(s\) \(e\.g\. 1 of type int at position 0\)"):
        um.predict_file(model_dir, tmp_path / "n.parquet", tmp_path / "o.csv")


@pytest.mark.parametrize("kwargs,exc,match", [
    (dict(text_col="body"), ValueError, r"Missing column\(s\) \['body'\]"),
    (dict(id_col="ids"), ValueError, r"Missing column\(s\) \['ids'\].*did you mean 'id'"),
    (dict(id_col="text"), ValueError, r"id_col and text_col are both 'text'"),
    (dict(output="json"), ValueError, r"output must be one of \['proba', 'labels', 'both', 'submission'\]"),
    (dict(chunksize=0), ValueError, r"chunksize must be a positive int"),
    (dict(chunksize=2.5), ValueError, r"chunksize must be a positive int"),
])
def test_bad_options(model_dir, inputs, tmp_path, kwargs, exc, match):
    with pytest.raises(exc, match=match):
        um.predict_file(model_dir, inputs / "in.csv", tmp_path / "o.csv", **kwargs)


def test_bad_paths(model_dir, inputs, tmp_path):
    with pytest.raises(FileNotFoundError, match=r"No input file at .*missing\.csv"):
        um.predict_file(model_dir, tmp_path / "missing.csv", tmp_path / "o.csv")
    for overwrite in (False, True):
        with pytest.raises(FileExistsError, match=r"Refusing to write .*in\.csv: it is the input .*even with --overwrite"):
            um.predict_file(model_dir, inputs / "in.csv", inputs / "in.csv", overwrite=overwrite)
    (tmp_path / "x.json").write_text("{}")
    with pytest.raises(ValueError, match=r"Cannot tell the format of .*x\.json"):
        um.predict_file(model_dir, tmp_path / "x.json", tmp_path / "o.csv")
    (tmp_path / "fake.parquet").write_text("id,text\n1,hello\n")
    with pytest.raises(ValueError, match=r"fake\.parquet is not a readable parquet file"):
        um.predict_file(model_dir, tmp_path / "fake.parquet", tmp_path / "o.csv")
    (tmp_path / "empty.csv").write_bytes(b"")
    with pytest.raises(ValueError, match=r"empty\.csv is empty: it needs at least a header row"):
        um.predict_file(model_dir, tmp_path / "empty.csv", tmp_path / "o.csv")
    with pytest.raises(TypeError, match=r"model must be a saved model directory, a run directory, a MultiLabelClassifier, a MultiLabelEnsemble or a TfidfBaseline, got int"):
        um.predict_file(3, inputs / "in.csv", tmp_path / "o.csv")
    with pytest.raises(FileNotFoundError, match=r"No saved model at"):
        um.predict_file(tmp_path / "no_model", inputs / "in.csv", tmp_path / "o.csv")


# ---------------------------------------------------------------------- int8 inference
def test_int8_copy_predicts_close_to_the_float_model(clf, frame, tmp_path):
    q = clf.quantized()
    texts = frame["text"].tolist()[:200]
    pf, pq = clf.predict_proba(texts), q.predict_proba(texts)
    assert q.labels == clf.labels and np.array_equal(q.thresholds, clf.thresholds)
    assert np.abs(pf - pq).mean() < 0.01 and np.abs(pf - pq).max() < 0.1  # int8 weights: small, bounded drift
    with pytest.raises(ValueError, match=r"this is a quantized copy for inference"):
        q.save(tmp_path / "q")
    assert not (tmp_path / "q").exists()


def test_predict_file_int8_matches_the_quantized_model(model_dir, inputs, clf, frame, tmp_path):
    with pytest.warns(UserWarning, match="empty or missing text"):
        um.predict_file(model_dir, inputs / "in.csv", tmp_path / "q.csv", output="proba", int8=True)
    got = pd.read_csv(tmp_path / "q.csv")[[f"proba_{lab}" for lab in clf.labels]].to_numpy()
    with pytest.warns(UserWarning, match="empty or missing text"):
        want = clf.quantized().predict_proba(frame["text"].tolist())
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
