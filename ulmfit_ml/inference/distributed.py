"""Batch prediction of a table too big for one machine, on a Dask cluster (:func:`predict_dask`).

Why Dask (and not Ray): ``dask.dataframe`` already reads CSV/TSV (split into byte blocks),
JSON lines and parquet (row groups) partition by partition into *pandas* frames, with the
same pandas options :func:`~ulmfit_ml.utils.io.read_table` uses (:func:`~ulmfit_ml.utils.io.pandas_read_options`),
so every cell is parsed exactly as in :func:`~ulmfit_ml.inference.predict.predict_file`; partitions keep
the file order; ``dask.distributed`` retries failed tasks (``retries=``) and runs the same code
on a laptop (``LocalCluster``) or on an existing cluster (``Client("tcp://host:8786")``). Ray
would need its own reader (Ray Data's CSV parsing is pyarrow's, not pandas'), so the cell
policy would live twice.

How: a first cheap pass counts the rows of every partition, so each partition knows the global
number of its first row. Then each partition is one task that turns its rows into output rows
with :func:`~ulmfit_ml.inference.predict.predict_frame` (the one chunk -> rows step of ``predict_file``:
same columns, same ``row`` numbers, same probabilities) and writes them atomically to
``part-NNNNN.parquet`` (the partition's number): a failed task that Dask retries rewrites its
own part, so rows are never duplicated. Each worker process loads the model once (a cache in
this module, keyed by the model's fingerprint) and checks that the files it sees are the ones the
client hashed. The parts are written into a temporary sibling of the output directory, with
``manifest.json`` (rows per part, model fingerprint, options) written last, and the directory
is renamed into place in one step (:func:`~ulmfit_ml.utils.persist.atomic_dir`): an output directory
is complete or absent. :func:`read_predictions` reads it back in row order.

The output directory and the input must be on storage every worker can read and write (a
shared filesystem). Dask is optional: ``pip install 'ulmfit_ml[dask]'``.
"""
from __future__ import annotations

import hashlib
import os
import socket
import threading
import time
from collections import Counter, OrderedDict
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

import pandas as pd

from ..models.ensemble import load_predictor, resolve_model_dirs
from ..utils.io import (ReadOptions, check_output_file, named_columns, pandas_read_options, read_table, table_bytes,
                 table_columns, write_table)
from ..utils.persist import atomic_dir, atomic_file, file_sha256, read_json, write_json_atomic
from ..utils.config import OUTPUTS
from .predict import predict_frame, quantized_predictor
from ..utils.validation import check_bs, check_columns, warn_empty_texts

__all__ = ["predict_dask", "read_predictions", "PredictDaskResult", "worker_model_loads", "MANIFEST",
           "DASK_MISSING"]

#: The manifest of an output directory, written after every part.
MANIFEST = "manifest.json"
DASK_MISSING = "predict_dask needs Dask: pip install 'ulmfit_ml[dask]'"
_MANIFEST_VERSION = 1
_PART_FORMATS = {"parquet": "parquet", "csv": "csv"}
_MODEL_FILES = ("config.json", "model.safetensors", "vocab.json", "labels.json", "thresholds.json")
_BLOCK_HINT = ("If a quoted text holds a line break, a CSV block boundary may fall inside it: pass blocksize=None "
               "(one partition per file; split the input into several files) or convert the input to parquet.")

# ---------------------------------------------------------------------- worker side
#: Models loaded in this process (a Dask worker): fingerprint key -> predictor, the last few kept.
_CACHE: OrderedDict[str, Any] = OrderedDict()
_CACHE_SIZE = 2
#: How many times this process loaded each model (``worker_model_loads``).
_LOADS: Counter[str] = Counter()
#: One model call at a time per process: loading once, and predicting (which toggles eval mode).
_LOCK = threading.Lock()
#: Output directory -> tasks writing into it now, in this process (a failed call waits for 0).
_RUNNING: Counter[str] = Counter()
_RUNNING_LOCK = threading.Lock()


def _running(out_dir: str) -> int:
    """Tasks of the job writing into ``out_dir`` that run in this process now (``client.run``)."""
    return _RUNNING[out_dir]


def worker_model_loads() -> dict[str, int]:
    """Model key -> times this process loaded it; run on the workers with ``client.run(worker_model_loads)``."""
    return dict(_LOADS)


def _fingerprint(model_dirs: list[Path]) -> str:
    """sha256 over the files that define the model(s): weights, config, vocab, labels, thresholds."""
    h = hashlib.sha256()
    for i, d in enumerate(model_dirs):
        for name in _MODEL_FILES:
            if (d / name).is_file():
                h.update(f"{i}:{name}:{file_sha256(d / name)}\n".encode())
    return h.hexdigest()


def _predictor(model: dict[str, Any]) -> tuple[Any, bool]:
    """The model of this job, loaded once per process; ``(predictor, loaded_now)``. Called under ``_LOCK``."""
    key = model["key"]
    if key in _CACHE:
        _CACHE.move_to_end(key)
        return _CACHE[key], False
    here = _fingerprint([Path(d) for d in model["dirs"]])
    if here != model["fingerprint"]:
        raise ValueError(f"The model files at {model['path']} on worker {_worker_name()} differ from the ones the "
                         "client hashed: every worker must see the same model directory (a shared filesystem).")
    pred = load_predictor(model["path"], device="cpu" if model["int8"] else model["device"])
    if model["int8"]:
        pred = quantized_predictor(pred)
    _CACHE[key] = pred
    _LOADS[key] += 1
    while len(_CACHE) > _CACHE_SIZE:
        _CACHE.popitem(last=False)
    return pred, True


def _worker_name() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def _write_part(out: pd.DataFrame, path: Path, fmt: str) -> None:
    if fmt == "parquet":
        write_table(out, path)
    else:  # the bytes of predict_file's streamed CSV output (6 significant digits)
        with atomic_file(path) as tmp:
            tmp.write_bytes(table_bytes(out, "csv"))


def _score_partition(part: pd.DataFrame, index: int, start: int, n_rows: int, job: dict[str, Any]) -> dict[str, Any]:
    """One task: partition ``index`` (global rows ``start`` ...) -> ``part-NNNNN`` in ``job["out_dir"]``."""
    part = named_columns(part)
    if len(part) != n_rows:
        raise ValueError(f"Partition {index} has {len(part)} rows, {n_rows} when counted: the input changed "
                         "during the run.")
    out_dir = Path(job["out_dir"])
    with _RUNNING_LOCK:
        _RUNNING[job["out_dir"]] += 1
    try:
        with _LOCK:
            pred, loaded = _predictor(job["model"])
            out, n_empty = predict_frame(pred, part[job["cols"]], start=start, **job["opts"])
        name = f"part-{index:05d}.{job['format']}"
        if not out_dir.is_dir():  # the call failed and removed its directory: never recreate it
            raise FileNotFoundError(f"{out_dir} is gone: the predict_dask call of this task failed.")
        _write_part(out, out_dir / name, job["format"])  # same name on a retry: rewritten, not added
    finally:
        with _RUNNING_LOCK:
            _RUNNING[job["out_dir"]] -= 1
    return {"file": name, "start": start, "rows": len(out), "n_empty": n_empty, "worker": _worker_name(),
            "loaded": loaded, "dtypes": {str(c): str(t) for c, t in out.dtypes.items()}}


# ---------------------------------------------------------------------- client side
@dataclass
class PredictDaskResult:
    """What :func:`predict_dask` wrote.

    Attributes:
        output_dir: the directory of parts and ``manifest.json``.
        n_rows: input rows predicted (all of them).
        n_empty: rows whose text was missing or empty.
        parts: the part files, in row order.
        model_loads: worker -> times it loaded the model during this call (0 or 1 each).
        seconds: wall time.
    """

    output_dir: Path
    n_rows: int
    n_empty: int
    parts: list[Path] = field(default_factory=list)
    model_loads: dict[str, int] = field(default_factory=dict)
    seconds: float = 0.0

    def read(self) -> pd.DataFrame:
        """The whole output as one frame, in row order (:func:`read_predictions`)."""
        return read_predictions(self.output_dir)


def read_predictions(path: str | Path) -> pd.DataFrame:
    """Read a :func:`predict_dask` output directory back as one frame, in input row order
    (the layout of :func:`~ulmfit_ml.inference.predict.predict_file`'s output)."""
    path = Path(path)
    manifest = read_json(path / MANIFEST)
    if not isinstance(manifest, dict) or manifest.get("version") != _MANIFEST_VERSION:
        raise ValueError(f"{path / MANIFEST} is not a predict_dask manifest.")
    frames = []
    for p in manifest["parts"]:
        df = read_table(path / p["file"])
        if len(df) != p["rows"]:
            raise ValueError(f"{path / p['file']} has {len(df)} rows, the manifest says {p['rows']}.")
        frames.append(df)
    df = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=list(manifest.get("dtypes", {})))
    if manifest["format"] == "csv":  # CSV cells are read as text: numbers back to numbers
        for c, t in manifest.get("dtypes", {}).items():
            if t.startswith(("int", "float")) and c in df:
                df[c] = df[c].astype(t)
        if "labels" in df:  # no label passed: an empty cell, never a missing one
            df["labels"] = df["labels"].fillna("")
    return df


def _loads(reports: list[dict[str, Any]]) -> dict[str, int]:
    """worker -> models it loaded for these tasks."""
    loads: Counter[str] = Counter()
    for r in reports:
        loads[r["worker"]] += int(r["loaded"])
    return dict(loads)


def _stop(client: Any, futures: list[Any], out_dir: str, timeout: float = 300.0) -> None:
    """After a failure: cancel the tasks not started and wait until none still writes into ``out_dir``
    (so that removing it is final)."""
    deadline = time.monotonic() + timeout
    try:
        client.cancel(futures)
        while time.monotonic() < deadline and any(client.run(_running, out_dir).values()):
            time.sleep(0.1)
    except Exception:  # noqa: BLE001 - the cluster may be gone; the original error is the one to report
        pass


def _import_dask() -> tuple[Any, Any, Any]:
    try:  # optional heavy dependency, imported only here (pip install 'ulmfit_ml[dask]')
        import dask
        import dask.dataframe as dd
        import distributed
    except ImportError as e:
        raise ImportError(f"{DASK_MISSING} ({e}).") from e
    return dask, dd, distributed


@dataclass(frozen=True)
class _Inputs:
    """The input files of one call (one format) and the pandas options that parse them."""

    paths: list[Path]
    fmt: str
    pandas_opts: dict[str, Any]
    blocksize: int | None

    def describe(self) -> Any:
        return self.paths[0] if len(self.paths) == 1 else self.paths


def _read_frame(dd: Any, src: _Inputs) -> Any:
    """The inputs as one Dask frame, parsed like :func:`~ulmfit_ml.utils.io.read_table`."""
    files, blocksize, opts = [str(p) for p in src.paths], src.blocksize, src.pandas_opts
    if src.fmt in ("csv", "tsv"):
        packed = any(p.suffixes and p.suffixes[-1].lower() in (".gz", ".bz2", ".zip", ".xz", ".zst") for p in src.paths)
        ddf = dd.read_csv(files, blocksize=None if packed else blocksize, **opts)  # compressed: one block per file
    elif src.fmt == "jsonl":
        ddf = dd.read_json(files, blocksize=blocksize, orient="records", **opts)
    else:
        ddf = dd.read_parquet(files, split_row_groups="adaptive" if blocksize else False,
                              **({"blocksize": blocksize} if blocksize else {}))
    if not all(isinstance(c, str) for c in ddf.columns):  # header-less CSV: columns "0", "1", ...
        ddf.columns = [str(c) for c in ddf.columns]
    return ddf


def _check_options(output: str, id_col: str | None, bs: int, blocksize: Any, retries: Any, part_format: str) -> None:
    if output not in OUTPUTS:
        raise ValueError(f"output must be one of {list(OUTPUTS)}, got {output!r}.")
    if output == "submission" and id_col is None:
        raise ValueError("output='submission' needs id_col=: the id column of the input, e.g. 'id'.")
    check_bs(bs)
    if blocksize is not None and (isinstance(blocksize, bool) or not isinstance(blocksize, int) or blocksize < 1):
        raise ValueError(f"blocksize must be a positive number of bytes or None, got {blocksize!r}.")
    if isinstance(retries, bool) or not isinstance(retries, int) or retries < 0:
        raise ValueError(f"retries must be an int >= 0, got {retries!r}.")
    if part_format not in _PART_FORMATS:
        raise ValueError(f"part_format must be one of {list(_PART_FORMATS)}, got {part_format!r}.")


def _check_cluster_and_model(model: Any, client: Any, n_workers: int | None) -> None:
    if client is not None and n_workers is not None:
        raise ValueError("Pass client= (an existing cluster) or n_workers= (a local one), not both.")
    if not isinstance(model, (str, Path)):
        raise TypeError(f"predict_dask loads the model on every worker: pass a saved model directory (clf.save(dir)), "
                        f"not a {type(model).__name__}.")


def _resolve_inputs(input_path: Any, read: ReadOptions, blocksize: int | None) -> _Inputs:
    """The input files, all of one format."""
    inputs = [Path(p) for p in (input_path if isinstance(input_path, (list, tuple)) else [input_path])]
    if not inputs:
        raise ValueError("input_path is an empty list.")
    fmts = {pandas_read_options(p, **read.kwargs())[0] for p in inputs}
    if len(fmts) > 1:
        raise ValueError(f"The input files mix formats {sorted(fmts)}: pass files of one format.")
    fmt, opts = pandas_read_options(inputs[0], **read.kwargs())
    return _Inputs(inputs, fmt, opts, blocksize)


def _check_output_dir(output_dir: Path, overwrite: bool, inputs: list[Path]) -> None:
    if not (output_dir.exists() or output_dir.is_symlink()):  # an existing one: atomic_dir's replace policy
        check_output_file(output_dir, inputs=inputs)
    elif not overwrite:
        raise FileExistsError(f"{output_dir} already exists: pass overwrite=True (CLI --overwrite) to replace a "
                              "predict_dask output, or choose another directory.")


def _make_job(model: str | Path, model_dirs: list[Path], src: _Inputs, read: ReadOptions, *, text_col: str | None,
              id_col: str | None, part_format: str, device: str | None, int8: bool, **opts: Any) -> dict[str, Any]:
    """What every task gets: the model to load, the columns to read, the options of predict_frame."""
    text_col = read_json(model_dirs[0] / "config.json").get("text_col", "text") if text_col is None else text_col
    if id_col is not None and id_col == text_col:
        raise ValueError(f"id_col and text_col are both {text_col!r}: name the id column, or leave id_col=None.")
    cols = [text_col] + ([id_col] if id_col is not None else [])
    for p in src.paths:  # also: every file exists and has a readable header
        check_columns(pd.DataFrame(columns=table_columns(p, **read.kwargs())), cols)
    fp = _fingerprint(model_dirs)
    return {"model": {"path": str(Path(model).resolve()), "dirs": [str(d.resolve()) for d in model_dirs],
                      "fingerprint": fp, "key": f"{fp}:{device}:{int8}", "device": device, "int8": int8},
            "cols": cols, "format": part_format,
            "opts": {"text_col": text_col, "id_col": id_col, "output": opts["output"], "threshold": opts["threshold"],
                     "at_least_one": opts["at_least_one"], "bs": opts["bs"]}}


@contextmanager
def _connected(distributed: Any, client: Any, n_workers: int | None) -> Iterator[Any]:
    """A client of ``client`` (a Client or a scheduler address) or of a new ``LocalCluster``;
    closed afterwards (with the cluster) unless it is the caller's."""
    own = None
    if client is None:
        cluster = distributed.LocalCluster(n_workers=n_workers or os.cpu_count() or 1, threads_per_worker=1,
                                           processes=True, dashboard_address=None)
        own = distributed.Client(cluster)
    cl = own or (distributed.Client(client) if isinstance(client, str) else client)
    try:
        yield cl
    finally:
        if own is not None:
            cluster = own.cluster
            own.close()
            cluster.close()
        elif cl is not client:
            cl.close()


def _score_all(dask: Any, dd: Any, cl: Any, src: _Inputs, retries: int, job: dict[str, Any]) -> list[dict[str, Any]]:
    """Count the rows of every partition, then score each one as a task; the tasks' reports, in order."""
    try:
        with dask.config.set({"dataframe.convert-string": False}):  # keep pandas' own string cells
            parts = _read_frame(dd, src)[job["cols"]].to_delayed()
            lengths = cl.gather(cl.compute([dask.delayed(len)(p) for p in parts], retries=retries))
            starts = [sum(lengths[:i]) for i in range(len(lengths))]
            tasks = [dask.delayed(_score_partition)(p, i, starts[i], lengths[i], {**job}) for i, p in enumerate(parts)]
            futures = cl.compute(tasks, retries=retries)
            try:
                return list(cl.gather(futures))
            except BaseException:
                _stop(cl, futures, job["out_dir"])
                raise
    except pd.errors.ParserError as e:
        raise ValueError(f"Could not read {src.describe()} as {src.fmt}: {e}. {_BLOCK_HINT}") from e
    except UnicodeDecodeError as e:
        raise ValueError(f"{src.paths} is not valid {e.encoding} ({e.reason}): pass the file's real encoding, or "
                         "encoding_errors='replace'.") from e


def _manifest(job: dict[str, Any], src: _Inputs, reports: list[dict[str, Any]]) -> dict[str, Any]:
    """The manifest of a complete output directory: rows per part, model fingerprint, options."""
    return {"version": _MANIFEST_VERSION, "kind": "predictions", "format": job["format"],
            "inputs": [str(p.resolve()) for p in src.paths], "model": job["model"]["path"],
            "model_fingerprint": job["model"]["fingerprint"], **job["opts"], "int8": job["model"]["int8"],
            "n_rows": sum(r["rows"] for r in reports), "n_empty": sum(r["n_empty"] for r in reports),
            "dtypes": reports[0]["dtypes"] if reports else {},
            "parts": [{k: r[k] for k in ("file", "start", "rows")} for r in reports], "model_loads": _loads(reports)}


def predict_dask(model: str | Path, input_path: str | Path | list[str | Path], output_dir: str | Path, *,
                 text_col: str | None = None, id_col: str | None = None, output: str = "proba",
                 threshold: float | list[float] | None = None, at_least_one: bool = False, sep: str | None = None,
                 header: bool = True, encoding: str = "utf-8", encoding_errors: str = "strict", bs: int = 128,
                 blocksize: int | None = 64_000_000, part_format: str = "parquet", client: Any = None,
                 n_workers: int | None = None, retries: int = 2, overwrite: bool = False, device: str | None = "cpu",
                 int8: bool = False) -> PredictDaskResult:
    """Predict every row of one or more table files on a Dask cluster, into a directory of parts.

    The rows, columns and probabilities are those of :func:`~ulmfit_ml.inference.predict.predict_file`
    on the same input (``row`` numbers the input rows across all files, in order); see its
    options of the same names. The output directory holds ``part-00000.<format>`` ... (one per
    partition, in row order) and ``manifest.json``; read it with :func:`read_predictions`.

    Args:
        model: a saved model directory, a ``train`` run or a ``cv`` run with fold models, on
            storage every worker reads (each worker loads it once).
        input_path: a ``.csv``/``.tsv`` (compressed: one partition per file), ``.jsonl`` or
            ``.parquet`` file, or a list of files of one format (rows numbered across them).
        output_dir: the directory to write; it must not exist unless ``overwrite`` and
            ulmfit_ml wrote it (:func:`~ulmfit_ml.utils.persist.check_replaceable`).
        blocksize: bytes per partition (CSV/JSON lines; parquet: row groups gathered up to
            it); ``None``: one partition per file.
        part_format: ``"parquet"`` or ``"csv"`` (``predict_file``'s CSV bytes).
        client: a ``distributed.Client`` or a scheduler address (``"tcp://host:8786"``); ``None``
            starts a ``LocalCluster`` of ``n_workers`` processes (default: one per CPU core), one
            thread each, and closes it afterwards.
        retries: times a failed partition is run again before the call fails.

    Raises:
        ImportError: Dask is not installed (``pip install 'ulmfit_ml[dask]'``).
        FileExistsError: ``output_dir`` exists (and may not be replaced) or lies inside an input.
        ValueError: bad options, missing columns, an input that cannot be parsed.
    """
    t0 = time.perf_counter()
    dask, dd, distributed = _import_dask()  # first: without Dask nothing else matters
    _check_options(output, id_col, bs, blocksize, retries, part_format)
    _check_cluster_and_model(model, client, n_workers)
    read = ReadOptions(sep=sep, header=header, encoding=encoding, encoding_errors=encoding_errors)
    src = _resolve_inputs(input_path, read, blocksize)
    model_dirs = resolve_model_dirs(model)
    output_dir = Path(output_dir)
    _check_output_dir(output_dir, overwrite, [*src.paths, *model_dirs])
    job = _make_job(model, model_dirs, src, read, text_col=text_col, id_col=id_col, part_format=part_format,
                    device=device, int8=int8, output=output, threshold=threshold, at_least_one=at_least_one, bs=bs)
    reports: list[dict[str, Any]] = []

    def write(tmp: Path) -> None:
        with _connected(distributed, client, n_workers) as cl:
            reports.extend(_score_all(dask, dd, cl, src, retries, {**job, "out_dir": str(tmp)}))
        write_json_atomic(tmp / MANIFEST, _manifest(job, src, reports))  # last: its presence says every part is there

    atomic_dir(output_dir, write, overwrite=overwrite, kind="predictions", inputs=[*src.paths, *model_dirs])
    n_rows, n_empty = sum(r["rows"] for r in reports), sum(r["n_empty"] for r in reports)
    inputs = src.paths
    warn_empty_texts(n_empty, where=inputs[0].name if len(inputs) == 1 else f"{len(inputs)} files",
                     col=job["opts"]["text_col"])
    return PredictDaskResult(output_dir, n_rows, n_empty, [output_dir / r["file"] for r in reports], _loads(reports),
                             time.perf_counter() - t0)
