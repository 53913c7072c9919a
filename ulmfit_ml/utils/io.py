"""Reading and writing tables by file extension (CSV, TSV, parquet, JSON lines): ONE format map
(:data:`TABLE_FORMATS`) and ONE reader (:func:`read_table`, and :func:`iter_table` in chunks).

Training, prediction, streaming prediction and the CLI read every data file here, so the
extension decides the format and cells are parsed the same way everywhere. Every file written under a name the user
chose (CLI ``--out``/``--per-label``, ``predict_file``'s output) first passes
:func:`check_output_file`: one output policy for every writer.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Iterator

import pandas as pd

from .persist import atomic_file
from .valuetypes import same_or_inside, user_path

__all__ = ["read_table", "iter_table", "table_columns", "table_bytes", "write_table", "check_output_file",
           "TABLE_FORMATS", "table_format", "pandas_read_options", "named_columns", "ReadOptions"]

#: File extensions -> format name. ``.gz``/``.bz2``/``.zip``/``.xz``/``.zst`` after a text
#: format are decompressed by pandas.
TABLE_FORMATS: dict[str, str] = {
    ".csv": "csv",
    ".tsv": "tsv",
    ".tab": "tsv",
    ".parquet": "parquet",
    ".pq": "parquet",
    ".jsonl": "jsonl",
    ".ndjson": "jsonl",
}

_COMPRESSIONS = (".gz", ".bz2", ".zip", ".xz", ".zst")


@dataclass(frozen=True)
class ReadOptions:
    """The read options that travel together from a caller to the reader (checked by the reader):
    ``sep``, ``header`` (CSV/TSV only), ``encoding`` and ``encoding_errors``."""

    sep: str | None = None
    header: bool = True
    encoding: str = "utf-8"
    encoding_errors: str = "strict"

    def kwargs(self) -> dict[str, Any]:
        """The options as the keyword arguments of :func:`read_table`, :func:`iter_table`, ..."""
        return asdict(self)


def table_format(path: str | Path) -> str:
    """The format of ``path`` from its extension: ``"csv"``, ``"tsv"``, ``"parquet"`` or ``"jsonl"``.

    Raises:
        ValueError: the extension is not one of :data:`TABLE_FORMATS` (the message lists them).
    """
    suffixes = [s.lower() for s in Path(path).suffixes]
    if suffixes and suffixes[-1] in _COMPRESSIONS:
        suffixes = suffixes[:-1]
    ext = suffixes[-1] if suffixes else ""
    if ext not in TABLE_FORMATS:
        known = ", ".join(sorted(TABLE_FORMATS))
        raise ValueError(f"Cannot tell the format of {str(path)!r} from its extension {ext or '(none)'!r}: "
                         f"use one of {known} (optionally followed by .gz).")
    fmt = TABLE_FORMATS[ext]
    if fmt == "parquet" and Path(path).suffixes[-1].lower() in _COMPRESSIONS:
        raise ValueError(f"{str(path)!r}: parquet files are compressed internally; drop the outer compression suffix.")
    return fmt


def _read_options(fmt: str, sep: str | None, header: bool, encoding: str, encoding_errors: str) -> dict[str, Any]:
    """pandas options of the one text-table policy: every cell a string, only empty cells missing."""
    if fmt in ("csv", "tsv"):
        return {"sep": sep if sep is not None else ("\t" if fmt == "tsv" else ","), "header": 0 if header else None,
                "dtype": str, "keep_default_na": False, "na_values": [""], "encoding": encoding,
                "encoding_errors": encoding_errors}
    if sep is not None or not header:
        raise ValueError(f"sep= and header=False apply to CSV/TSV files, not {fmt}.")
    return {}


#: pandas.read_json options of JSON-lines files: their own types, no dtype or date guessing.
_JSONL_OPTIONS: dict[str, Any] = {"lines": True, "dtype": False, "convert_dates": False}


def pandas_read_options(path: str | Path, *, sep: str | None = None, header: bool = True, encoding: str = "utf-8",
                        encoding_errors: str = "strict") -> tuple[str, dict[str, Any]]:
    """``(format, options)``: the keyword arguments :func:`read_table` gives pandas' reader of
    ``path``'s format (``read_csv``, ``read_json``; ``{}`` for ``read_parquet``), so that other
    readers of the same files (Dask's, in :mod:`ulmfit_ml.inference.distributed`) parse cells the same way.
    Apply :func:`named_columns` to what they read."""
    fmt = table_format(path)
    opts = _read_options(fmt, sep, header, encoding, encoding_errors)
    return fmt, (dict(_JSONL_OPTIONS) if fmt == "jsonl" else opts)


def named_columns(df: pd.DataFrame) -> pd.DataFrame:
    """Header-less files get column names "0", "1", ... (strings, like every other column name)."""
    if not all(isinstance(c, str) for c in df.columns):
        df.columns = [str(c) for c in df.columns]
    return df


def _read_error(path: Path, fmt: str, e: BaseException) -> Exception:
    if isinstance(e, ImportError):
        return ImportError(f"Reading {path} needs an optional dependency: {e}. "
                           "Install it with `pip install ulmfit_ml[parquet]` (pyarrow).")
    if isinstance(e, UnicodeDecodeError):
        return ValueError(f"{path} is not valid {e.encoding} ({e.reason} at byte {e.start} of a chunk). Pass the file's "
                          "real encoding (e.g. encoding='latin-1'), or encoding_errors='replace' to replace bad bytes.")
    if fmt == "parquet" and not isinstance(e, OSError):
        return ValueError(f"{path} is not a readable parquet file ({type(e).__name__}: {e}).")
    if isinstance(e, pd.errors.EmptyDataError):
        return ValueError(f"{path} is empty: it needs at least a header row.")
    hint = (" A row with more fields than the header usually holds an unquoted separator inside a text: quote the "
            "text column, or pass the file's separator (CLI --sep)." if "Expected" in str(e) and "fields" in str(e) else "")
    msg = " ".join(str(e).split())
    return ValueError(f"Could not read {path} as {fmt}: {type(e).__name__}: {msg}{hint}")


def _checked_path(path: str | Path) -> tuple[Path, str]:
    path = user_path(path)
    fmt = table_format(path)
    if not path.is_file():
        raise FileNotFoundError(f"No such data file: {path}")
    return path, fmt


def read_table(path: str | Path, *, sep: str | None = None, header: bool = True, encoding: str = "utf-8",
               encoding_errors: str = "strict") -> pd.DataFrame:
    """Read a CSV, TSV, parquet or JSON-lines file, choosing the format by extension.

    The one reader of ulmfit_ml (training files, prediction inputs, the CLI): CSV/TSV cells are
    read as strings with no NA guessing (``NA``, ``null``, ``None`` stay texts, ids like
    ``000123`` keep their zeros; only empty cells are missing); JSON lines keep their own types
    without date or dtype guessing; parquet keeps its schema (needs ``pyarrow``). A CSV row with
    more fields than the header raises, here and in :func:`iter_table` alike.

    Args:
        path: the file.
        sep: CSV/TSV separator (default ``,``, or a tab for ``.tsv``).
        header: ``False`` for a CSV/TSV without a header row (columns are then ``"0"``, ``"1"``, ...).
        encoding, encoding_errors: how CSV/TSV bytes are decoded.

    Raises:
        FileNotFoundError: no such file.
        ValueError: unknown extension, or a file pandas cannot parse (the message names the file).
    """
    path, fmt = _checked_path(path)
    opts = _read_options(fmt, sep, header, encoding, encoding_errors)
    try:
        if fmt in ("csv", "tsv"):
            return named_columns(pd.read_csv(path, **opts))
        if fmt == "jsonl":
            return named_columns(pd.read_json(path, **_JSONL_OPTIONS))
        return named_columns(pd.read_parquet(path))
    except (ImportError, ValueError, pd.errors.ParserError, UnicodeDecodeError, OSError) as e:
        raise _read_error(path, fmt, e) from e


def table_columns(path: str | Path, *, sep: str | None = None, header: bool = True, encoding: str = "utf-8",
                  encoding_errors: str = "strict") -> list[str]:
    """The column names of a table file without reading its rows (parquet: the schema)."""
    path, fmt = _checked_path(path)
    opts = _read_options(fmt, sep, header, encoding, encoding_errors)
    try:
        if fmt in ("csv", "tsv"):
            return [str(c) for c in pd.read_csv(path, nrows=1 if not header else 0, **opts).columns]
        if fmt == "jsonl":
            return next(iter_table(path, chunksize=1), pd.DataFrame()).columns.tolist()
        import pyarrow.parquet as pq

        with pq.ParquetFile(path) as pf:
            return [str(c) for c in pf.schema_arrow.names]
    except (ImportError, ValueError, pd.errors.ParserError, UnicodeDecodeError, OSError) as e:
        raise _read_error(path, fmt, e) from e
    except Exception as e:  # noqa: BLE001 - pyarrow raises ArrowInvalid on non-parquet bytes
        raise ValueError(f"{path} is not a readable {fmt} file ({type(e).__name__}: {e}).") from e


def iter_table(path: str | Path, *, chunksize: int, sep: str | None = None, header: bool = True,
               encoding: str = "utf-8", encoding_errors: str = "strict") -> Iterator[pd.DataFrame]:
    """:func:`read_table` in chunks of ``chunksize`` rows (same parsing, same cells), for files
    larger than memory: pandas' chunked CSV/JSON readers, pyarrow's ``iter_batches``."""
    path, fmt = _checked_path(path)
    opts = _read_options(fmt, sep, header, encoding, encoding_errors)
    try:
        if fmt in ("csv", "tsv"):
            with pd.read_csv(path, chunksize=chunksize, **opts) as reader:
                for chunk in reader:
                    yield named_columns(chunk)
        elif fmt == "jsonl":
            with pd.read_json(path, chunksize=chunksize, **_JSONL_OPTIONS) as reader:
                for chunk in reader:
                    yield named_columns(chunk)
        else:
            import pyarrow.parquet as pq

            with pq.ParquetFile(path) as pf:
                for batch in pf.iter_batches(batch_size=chunksize):
                    yield named_columns(batch.to_pandas())
    except (ImportError, ValueError, pd.errors.ParserError, UnicodeDecodeError, OSError) as e:
        raise _read_error(path, fmt, e) from e


def table_bytes(df: pd.DataFrame, fmt: str, *, header: bool = True) -> bytes:
    """``df`` serialised as a piece of a ``csv``/``tsv``/``jsonl`` file (appendable; floats with
    6 significant digits), the format of every streamed output."""
    if fmt == "jsonl":
        return (df.to_json(orient="records", lines=True, force_ascii=False, double_precision=6) or "").encode("utf-8")
    if fmt not in ("csv", "tsv"):
        raise ValueError(f"{fmt} tables cannot be written piece by piece; use csv, tsv or jsonl.")
    return df.to_csv(index=False, header=header, sep="\t" if fmt == "tsv" else ",", lineterminator="\n",
                     float_format="%.6g").encode("utf-8")


def write_table(df: pd.DataFrame, path: str | Path) -> Path:
    """Write ``df`` (without its index) in the format of ``path``'s extension, atomically
    (:func:`~ulmfit_ml.utils.persist.atomic_file`: an interrupted write never leaves half a file).

    Returns:
        ``path`` as a :class:`~pathlib.Path`.
    """
    path = user_path(path)
    fmt = table_format(path)
    with atomic_file(path) as tmp:
        if fmt == "csv":
            df.to_csv(tmp, index=False)
        elif fmt == "tsv":
            df.to_csv(tmp, sep="\t", index=False)
        elif fmt == "jsonl":
            df.to_json(tmp, orient="records", lines=True, force_ascii=False)
        else:
            df.to_parquet(tmp, index=False)
    return path



def check_output_file(path: str | Path, *, overwrite: bool = False, inputs: Any = ()) -> Path:
    """The output policy of every user-named file ulmfit_ml writes: raise unless writing ``path`` is safe.

    An existing file is replaced only with ``overwrite`` (CLI ``--overwrite``); an input of the
    run (``inputs``: the data file, the model directory ...) or a file inside an input directory
    is never replaced, even with ``overwrite``.

    Returns:
        ``path`` as a :class:`~pathlib.Path`.

    Raises:
        FileExistsError: ``path`` is an input, lies inside one, is a directory, or exists
            without ``overwrite``. Nothing is written then.
    """
    path = user_path(path)
    for inp in inputs or ():
        if inp is not None and same_or_inside(path, user_path(inp)):
            what = "is the input" if path.resolve() == Path(inp).resolve() or not Path(inp).is_dir() else "lies inside the input"
            raise FileExistsError(f"Refusing to write {path}: it {what} {inp} of this command (even with --overwrite); "
                                  "choose another output file.")
    if path.is_dir():
        raise FileExistsError(f"Cannot write {path}: it is a directory; give a file name.")
    if (path.exists() or path.is_symlink()) and not overwrite:
        raise FileExistsError(f"{path} already exists: pass --overwrite (Python: overwrite=True) to replace it, "
                              "or choose another output file.")
    return path
