"""Reading and writing tables by file extension (CSV, TSV, parquet, JSON lines).

The CLI and the run directories read every data file through :func:`read_table`, so one
option (the extension) decides the format everywhere. Every file written under a name the user
chose (CLI ``--out``/``--per-label``, ``predict_file``'s output) first passes
:func:`check_output_file`: one output policy for every writer.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pandas as pd

__all__ = ["read_table", "write_table", "check_output_file", "check_bs", "TABLE_FORMATS", "table_format"]

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


def read_table(path: str | Path) -> pd.DataFrame:
    """Read a CSV, TSV, parquet or JSON-lines file into a DataFrame, choosing by extension.

    Text cells are read as strings (``keep_default_na`` stays on, so empty cells are NaN,
    which the data checks report). Parquet needs ``pyarrow`` (``pip install ulmfit_ml[parquet]``).

    Args:
        path: the file.

    Returns:
        The table.

    Raises:
        FileNotFoundError: no such file.
        ValueError: unknown extension, or a file pandas cannot parse (the message names the file).
    """
    path = Path(path)
    fmt = table_format(path)
    if not path.is_file():
        raise FileNotFoundError(f"No such data file: {path}")
    try:
        if fmt == "csv":
            return pd.read_csv(path)
        if fmt == "tsv":
            return pd.read_csv(path, sep="\t")
        if fmt == "jsonl":
            return pd.read_json(path, lines=True)
        return pd.read_parquet(path)
    except ImportError as e:
        raise ImportError(f"Reading {path} needs an optional dependency: {e}. "
                          "Install it with `pip install ulmfit_ml[parquet]` (pyarrow).") from e
    except (ValueError, pd.errors.ParserError, UnicodeDecodeError, OSError) as e:
        raise ValueError(f"Could not read {path} as {fmt}: {type(e).__name__}: {e}") from e


def write_table(df: pd.DataFrame, path: str | Path) -> Path:
    """Write ``df`` (without its index) in the format of ``path``'s extension, atomically.

    The table is written to a temporary sibling and renamed into place, so an interrupted
    write never leaves a half-written file under ``path``.

    Returns:
        ``path`` as a :class:`~pathlib.Path`.
    """
    path = Path(path)
    fmt = table_format(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    # same name with a prefix: the suffixes (and so pandas' compression inference) are kept
    tmp = path.with_name(f".tmp-{os.getpid()}-{path.name}")
    try:
        if fmt == "csv":
            df.to_csv(tmp, index=False)
        elif fmt == "tsv":
            df.to_csv(tmp, sep="\t", index=False)
        elif fmt == "jsonl":
            df.to_json(tmp, orient="records", lines=True, force_ascii=False)
        else:
            df.to_parquet(tmp, index=False)
        os.replace(tmp, path)
    except BaseException:
        if tmp.exists():
            tmp.unlink()
        raise
    return path


def _same_or_inside(out: Path, inp: Path) -> bool:
    """Is ``out`` the file ``inp`` (also through a link), or a path inside directory ``inp``?"""
    o, i = out.resolve(), inp.resolve()
    if o == i or i in o.parents:
        return True
    try:
        return out.exists() and inp.exists() and os.path.samefile(out, inp)
    except OSError:
        return False


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
    path = Path(path)
    for inp in inputs or ():
        if inp is not None and _same_or_inside(path, Path(inp)):
            what = "is the input" if path.resolve() == Path(inp).resolve() or not Path(inp).is_dir() else "lies inside the input"
            raise FileExistsError(f"Refusing to write {path}: it {what} {inp} of this command (even with --overwrite); "
                                  "choose another output file.")
    if path.is_dir():
        raise FileExistsError(f"Cannot write {path}: it is a directory; give a file name.")
    if (path.exists() or path.is_symlink()) and not overwrite:
        raise FileExistsError(f"{path} already exists: pass --overwrite (Python: overwrite=True) to replace it, "
                              "or choose another output file.")
    return path


def check_bs(bs: Any, name: str = "bs") -> int:
    """A batch size: a positive int (``bs=0`` or ``-1`` would predict nothing, or 0.5 everywhere)."""
    import numbers

    if isinstance(bs, bool) or not isinstance(bs, numbers.Integral):
        raise TypeError(f"{name} must be a positive int (texts per batch), got {bs!r} of type {type(bs).__name__}.")
    if bs < 1:
        raise ValueError(f"{name} must be >= 1 (texts per batch), got {bs}: use e.g. {name}=128.")
    return int(bs)
