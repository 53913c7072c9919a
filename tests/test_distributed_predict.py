"""Batch prediction on a Dask cluster (um.predict_dask): a local cluster of 2 worker processes
gives predict_file's rows, ids, order and probabilities; a failed partition is retried without
duplicated rows; each worker loads the model once; missing Dask and foreign directories fail clearly."""
from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import ulmfit_ml as um
from ulmfit_ml.inference import distributed as D
from ulmfit_ml.cli import main

from conftest import support_tickets_model

distributed = pytest.importorskip("distributed")

DATA = Path(__file__).resolve().parents[1] / "data" / "support_tickets.csv"
N = 300
BLOCK = 7_000  # bytes: the ~20 kB CSV splits into several partitions


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    return support_tickets_model(tmp_path_factory.mktemp("m"), N)


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    df = pd.read_csv(DATA, dtype={"id": str}).iloc[240:240 + N].reset_index(drop=True)
    df["id"] = [f"{i:05d}" for i in range(N)]  # leading zeros must survive
    df.loc[5, "text"] = ""
    df.loc[6, "text"] = "   "
    df.loc[7, "text"] = "NA"  # a real text, not a missing value
    df.loc[8, "text"] = 'quoted, "comma" and\na newline'  # far from any block boundary
    d = tmp_path_factory.mktemp("in")
    df[["id", "text"]].to_csv(d / "in.csv", index=False)
    df[["id", "text"]].to_parquet(d / "in.parquet", row_group_size=64)
    df[["id", "text"]].to_json(d / "in.jsonl", orient="records", lines=True)
    df[["id", "text"]].to_csv(d / "noheader.csv", index=False, header=False)
    df[["id", "text"]].head(0).to_csv(d / "empty.csv", index=False)
    return d


@pytest.fixture(scope="module")
def client():
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None) as cluster:
        with distributed.Client(cluster) as c:
            yield c


@pytest.fixture(scope="module")
def reference(model_dir, inputs, tmp_path_factory):
    out = tmp_path_factory.mktemp("ref") / "ref.parquet"
    with pytest.warns(UserWarning, match="empty or missing text"):
        um.predict_file(model_dir, inputs / "in.csv", out, id_col="id", output="both", chunksize=70)
    return pd.read_parquet(out)


def _dask(model_dir, src, out, client, **kw):
    with pytest.warns(UserWarning, match=r"2 row\(s\) of .* have an empty or missing text"):
        return um.predict_dask(model_dir, src, out, client=client, **{"id_col": "id", "output": "both",
                                                                      "blocksize": BLOCK, **kw})


def _same(got: pd.DataFrame, ref: pd.DataFrame) -> None:
    assert list(got.columns) == list(ref.columns)
    assert got["row"].tolist() == list(range(N)) == ref["row"].tolist()
    assert got["id"].tolist() == ref["id"].tolist() == [f"{i:05d}" for i in range(N)]
    assert got["labels"].tolist() == ref["labels"].tolist()
    proba = [c for c in ref.columns if c.startswith("proba_")]
    np.testing.assert_allclose(got[proba].to_numpy(float), ref[proba].to_numpy(float), rtol=0, atol=1e-6)


def test_two_workers_match_predict_file(model_dir, inputs, client, reference, tmp_path):
    res = _dask(model_dir, inputs / "in.csv", tmp_path / "out", client)
    assert res.n_rows == N and res.n_empty == 2 and len(res.parts) >= 3
    assert [p.name for p in res.parts] == [f"part-{i:05d}.parquet" for i in range(len(res.parts))]
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert [p["start"] for p in manifest["parts"]] == list(np.cumsum([0] + [p["rows"] for p in manifest["parts"]])[:-1])
    assert manifest["n_rows"] == N and len(manifest["model_fingerprint"]) == 64
    _same(res.read(), reference)
    _same(um.read_predictions(tmp_path / "out"), reference)
    # each worker loaded the model at most once, for every call on this cluster
    assert all(v <= 1 for v in res.model_loads.values()) and sum(res.model_loads.values()) >= 1


def test_parquet_input_and_csv_parts(model_dir, inputs, client, reference, tmp_path):
    res = _dask(model_dir, inputs / "in.parquet", tmp_path / "out", client, part_format="csv")
    assert len(res.parts) >= 3 and res.parts[0].suffix == ".csv"
    _same(res.read(), reference)


@pytest.mark.parametrize("src, kw", [("in.jsonl", {}), ("noheader.csv", {"header": False, "text_col": "1", "id_col": "0"})])
def test_jsonl_and_headerless_inputs(model_dir, inputs, client, reference, tmp_path, src, kw):
    res = _dask(model_dir, inputs / src, tmp_path / "out", client, **kw)
    assert len(res.parts) >= 2
    _same(res.read().rename(columns={"0": "id"}), reference)


def test_empty_input(model_dir, inputs, client, reference, tmp_path):
    res = um.predict_dask(model_dir, inputs / "empty.csv", tmp_path / "out", id_col="id", output="both", client=client)
    got = res.read()
    assert res.n_rows == 0 and len(got) == 0 and list(got.columns) == list(reference.columns)


def _fail_once_after_write(marker: str) -> None:
    """On a worker: the next part written raises once, after its file is on disk."""
    real = D.write_table

    def flaky(df, path):
        real(df, path)
        try:
            os.unlink(marker)  # only one task, in one process, wins the marker
        except FileNotFoundError:
            return path
        raise RuntimeError("injected failure after the part was written")

    D.write_table = flaky
    D._real_write_table = real


def _restore() -> None:
    D.write_table = getattr(D, "_real_write_table", D.write_table)


def test_failed_partition_is_retried_without_duplicates(model_dir, inputs, client, reference, tmp_path):
    marker = tmp_path / "fail-once"
    marker.write_text("x")
    client.run(_fail_once_after_write, str(marker))
    try:
        res = _dask(model_dir, inputs / "in.csv", tmp_path / "out", client)
    finally:
        client.run(_restore)
    assert not marker.exists(), "the failure was not injected"
    assert res.n_rows == N
    _same(res.read(), reference)
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == sorted(
        [p.name for p in res.parts] + ["manifest.json", ".ulmfit_ml.json"])
    with pytest.raises(RuntimeError, match="injected"):  # retries=0: the failure reaches the caller
        marker.write_text("x")
        client.run(_fail_once_after_write, str(marker))
        try:
            um.predict_dask(model_dir, inputs / "in.csv", tmp_path / "out2", id_col="id", blocksize=BLOCK,
                            client=client, retries=0)
        finally:
            client.run(_restore)
    assert not (tmp_path / "out2").exists()  # no half output directory
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".out2")]


def test_each_worker_loads_the_model_once(client):
    loads = client.run(D.worker_model_loads)  # after every call above, on this cluster
    assert len(loads) == 2
    assert all(n == 1 for per_worker in loads.values() for n in per_worker.values()), loads


def test_missing_dask_fails_clearly(model_dir, inputs, tmp_path, monkeypatch):
    for name in ("dask", "dask.dataframe", "distributed"):
        monkeypatch.setitem(sys.modules, name, None)
    with pytest.raises(ImportError, match=r"pip install 'ulmfit_ml\[dask\]'"):
        um.predict_dask(model_dir, inputs / "in.csv", tmp_path / "out", id_col="id")
    assert not (tmp_path / "out").exists()


def test_refuses_a_directory_it_did_not_write(model_dir, inputs, client, tmp_path):
    foreign = tmp_path / "mine"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("keep me")
    with pytest.raises(FileExistsError, match="already exists"):
        um.predict_dask(model_dir, inputs / "in.csv", foreign, client=client)
    with pytest.raises(FileExistsError, match="not written by ulmfit_ml"):
        um.predict_dask(model_dir, inputs / "in.csv", foreign, client=client, overwrite=True, id_col="id")
    assert (foreign / "notes.txt").read_text() == "keep me"
    with pytest.raises(FileExistsError, match="input"):  # never inside the model directory
        um.predict_dask(model_dir, inputs / "in.csv", Path(model_dir) / "preds", client=client)


def test_overwrite_replaces_its_own_output(model_dir, inputs, client, tmp_path):
    out = tmp_path / "out"
    _dask(model_dir, inputs / "in.csv", out, client, blocksize=None)
    first = um.read_predictions(out)
    assert len(list(out.glob("part-*"))) == 1
    _dask(model_dir, inputs / "in.csv", out, client, overwrite=True)
    assert len(list(out.glob("part-*"))) >= 3
    pd.testing.assert_frame_equal(um.read_predictions(out), first)


def test_line_break_across_a_block_boundary_fails_clearly(model_dir, client, tmp_path):
    df = pd.DataFrame({"text": [f"row {i}\nsecond line of row {i}\nthird" for i in range(120)]})
    df.to_csv(tmp_path / "nl.csv", index=False)
    with pytest.raises(ValueError, match="blocksize=None"):
        um.predict_dask(model_dir, tmp_path / "nl.csv", tmp_path / "out", blocksize=1000, client=client, retries=0)
    res = um.predict_dask(model_dir, tmp_path / "nl.csv", tmp_path / "out", blocksize=None, client=client)
    assert res.read()["row"].tolist() == list(range(120))


def test_cli_predict_on_a_scheduler(model_dir, inputs, client, reference, tmp_path, capsys):
    out = tmp_path / "cli-out"
    with pytest.warns(UserWarning, match="empty or missing text"):
        code = main(["predict", str(model_dir), str(inputs / "in.csv"), "-o", str(out), "--id-col", "id",
                     "--scheduler", client.scheduler.address, "--blocksize", str(BLOCK)])
    assert code == 0, capsys.readouterr().err
    assert f"{N} rows" in capsys.readouterr().out
    _same(um.read_predictions(out), reference)


def test_cli_starts_and_stops_a_local_cluster(model_dir, inputs, tmp_path, capsys):
    out = tmp_path / "local"
    with pytest.warns(UserWarning, match="empty or missing text"):
        code = main(["predict", str(model_dir), str(inputs / "in.csv"), "-o", str(out), "--format", "proba",
                     "--dask-workers", "1", "--blocksize", str(BLOCK)])
    assert code == 0, capsys.readouterr().err
    got = um.read_predictions(out)
    assert got["row"].tolist() == list(range(N)) and "labels" not in got
    assert main(["predict", str(model_dir), str(inputs / "in.csv"), "-o", str(tmp_path / "x.csv"),
                 "--blocksize", "1000"]) == 2  # --blocksize without a cluster: a usage error
    assert "--blocksize applies to" in capsys.readouterr().err
