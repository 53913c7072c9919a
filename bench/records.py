"""The history files of the interleaved speed benchmarks (``bench/*_speed.json``-style lists of runs):
one function appends a run with the date, machine and ulmfit_ml version, written atomically."""
from __future__ import annotations

import json
import os
import platform
import time
from pathlib import Path
from typing import Any

__all__ = ["append_record"]


def append_record(path: Path, record: dict[str, Any]) -> None:
    """Append ``record`` to the JSON list in ``path`` (created when absent), with ``date``,
    ``machine`` and ``ulmfit_ml_version`` added; the file is replaced atomically."""
    import ulmfit_ml as um

    rec = {"date": time.strftime("%Y-%m-%d %H:%M"), "machine": f"{platform.machine()}, {os.cpu_count()} CPU cores",
           **record, "ulmfit_ml_version": um.__version__}
    hist = json.loads(path.read_text()) if path.exists() else []
    hist.append(rec)
    tmp = path.with_suffix(f".{os.getpid()}.tmp")
    tmp.write_text(json.dumps(hist, indent=1))
    os.replace(tmp, path)  # our own results file
