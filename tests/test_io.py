"""Tables by extension: CSV, TSV, parquet, JSON lines (+ compression), and clear errors."""
from __future__ import annotations

import pandas as pd
import pytest

from ulmfit_ml.utils.io import read_table, table_format, write_table


@pytest.fixture()
def df() -> pd.DataFrame:
    return pd.DataFrame({"id": ["a", "b", "c"], "text": ["hello, world", "tab\there", "é ünïcode \"quoted\""],
                         "tags": ["x;y", "", "y"], "joy": [1, 0, 1]})


@pytest.mark.parametrize("name", ["t.csv", "t.tsv", "t.tab", "t.parquet", "t.pq", "t.jsonl", "t.ndjson",
                                  "t.csv.gz", "t.jsonl.gz", "T.CSV"])
def test_round_trip_every_format(tmp_path, df, name):
    if name.endswith((".parquet", ".pq")):
        pytest.importorskip("pyarrow")
    p = write_table(df, tmp_path / name)
    back = read_table(p)
    assert list(back.columns) == list(df.columns)
    assert back["text"].tolist() == df["text"].tolist()
    # text formats come back as text (the one reader guesses no types); typed formats keep theirs
    text_format = table_format(name) in ("csv", "tsv")
    assert back["joy"].tolist() == (["1", "0", "1"] if text_format else [1, 0, 1])
    assert not list(tmp_path.glob(".tmp-*")), "the temporary file must be renamed away"


def test_tsv_is_tab_separated(tmp_path, df):
    write_table(df, tmp_path / "t.tsv")
    first = (tmp_path / "t.tsv").read_text(encoding="utf-8").splitlines()[0]
    assert first == "id\ttext\ttags\tjoy"


def test_format_by_extension():
    assert table_format("a/b.csv") == "csv"
    assert table_format("b.TSV") == "tsv"
    assert table_format("b.jsonl.gz") == "jsonl"
    assert table_format("b.parquet") == "parquet"


@pytest.mark.parametrize("name", ["data.xlsx", "data", "data.txt", "data.gz"])
def test_unknown_extension_names_the_known_ones(tmp_path, name):
    p = tmp_path / name
    p.write_text("x")
    with pytest.raises(ValueError, match=r"Cannot tell the format .*use one of \.csv"):
        read_table(p)
    with pytest.raises(ValueError, match="Cannot tell the format"):
        write_table(pd.DataFrame({"a": [1]}), p)


def test_compressed_parquet_is_refused():
    with pytest.raises(ValueError, match="parquet files are compressed internally"):
        table_format("x.parquet.gz")


def test_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="No such data file"):
        read_table(tmp_path / "nope.csv")


def test_unparsable_file_names_file_and_format(tmp_path):
    p = tmp_path / "bad.jsonl"
    p.write_text("{not json\n", encoding="utf-8")
    with pytest.raises(ValueError, match=r"Could not read .*bad\.jsonl as jsonl"):
        read_table(p)


def test_failed_write_leaves_no_file(tmp_path, monkeypatch):
    def boom(self, *a, **k):
        raise RuntimeError("disk full")

    monkeypatch.setattr(pd.DataFrame, "to_csv", boom)
    with pytest.raises(RuntimeError, match="disk full"):
        write_table(pd.DataFrame({"a": [1]}), tmp_path / "out.csv")
    assert list(tmp_path.iterdir()) == []


def test_parquet_without_pyarrow_says_what_to_install(tmp_path, monkeypatch):
    p = tmp_path / "t.parquet"
    p.write_bytes(b"PAR1")

    def no_engine(*a, **k):
        raise ImportError("Unable to find a usable engine")

    monkeypatch.setattr(pd, "read_parquet", no_engine)
    with pytest.raises(ImportError, match=r"pip install ulmfit_ml\[parquet\]"):
        read_table(p)
