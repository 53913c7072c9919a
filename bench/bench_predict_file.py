"""Benchmark ``um.predict_file``: peak RSS and texts/s on large files of short texts.

Trains a small classifier on the demo data (1 epoch: the weights do not matter for speed),
writes a synthetic CSV of N short texts per size, and runs ``predict_file`` on each in a fresh
child process, so every peak-RSS figure is that run's own. RSS is also sampled during the run
(at 10/50/90 % of the elapsed time) to show that memory stays flat as the file is read.

Usage (as recorded in bench/PREDICT_FILE.md)::

    nice -n 10 python bench/bench_predict_file.py --rows 10000 30000 100000 --json /tmp/pf.json
    nice -n 10 python bench/bench_predict_file.py --rows 1000000   # ~15-20 min on 2 shared cores
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import pandas as pd

REPO = Path(__file__).resolve().parents[1]
DATA = REPO / "data" / "support_tickets.csv"


def _rss_mb() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def make_model(path: Path, arch: str) -> None:
    import ulmfit_ml as um

    df = pd.read_csv(DATA)
    data = um.MultiLabelData.from_df(df.head(600), text_col="text", label_col="labels", split="random")
    clf = um.train_classifier(data, arch=arch, epochs=(1,), unfreeze=(0,), lrs=(1e-2,), quiet=True, device="cpu")
    clf.save(path, overwrite=True)


def make_input(path: Path, n: int, seed: int = 0) -> None:
    """``n`` short texts (1-2 sentences of the demo tickets, ~10-25 words), written in blocks."""
    sents = sorted({s.strip() for t in pd.read_csv(DATA).text for s in t.split(". ") if s.strip()})
    rng = np.random.default_rng(seed)
    block = 100_000
    with open(path, "w", encoding="utf-8", newline="") as f:
        for s in range(0, n, block):
            m = min(block, n - s)
            a, b = rng.integers(0, len(sents), m), rng.integers(0, len(sents), m)
            two = rng.random(m) < 0.5
            texts = [sents[i] + (". " + sents[j] if t else "") for i, j, t in zip(a, b, two)]
            pd.DataFrame({"id": np.arange(s, s + m), "text": texts}).to_csv(f, index=False, header=s == 0)


def child(model: str, src: str, out: str, chunksize: int, threads: int) -> None:
    """One measured run; prints a JSON line."""
    import torch

    torch.set_num_threads(threads)
    import ulmfit_ml as um

    clf = um.load_classifier(model)
    base = _rss_mb()
    samples: list[tuple[float, float]] = []
    stop = threading.Event()
    t0 = time.perf_counter()

    def sample() -> None:
        while not stop.wait(0.5):
            samples.append((time.perf_counter() - t0, _rss_mb()))

    th = threading.Thread(target=sample, daemon=True)
    th.start()
    res = um.predict_file(clf, src, out, chunksize=chunksize, id_col="id", output="both", resume=False)
    stop.set()
    th.join()
    total = res.seconds

    def at(frac: float) -> float:
        ok = [r for t, r in samples if t >= frac * total]
        return round(ok[0], 1) if ok else float("nan")

    print(json.dumps({
        "rows": res.n_rows, "seconds": round(total, 1), "texts_per_s": round(res.texts_per_s, 1),
        "rss_after_load_mb": round(base, 1),
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "peak_rss_tokenizer_workers_mb": round(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024, 1),
        "rss_at_10_50_90pct_mb": [at(0.1), at(0.5), at(0.9)],
        "input_mb": round(os.path.getsize(src) / 2**20, 1), "output_mb": round(os.path.getsize(out) / 2**20, 1),
    }))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, nargs="+", default=[100_000])
    ap.add_argument("--chunksize", type=int, default=10_000)
    ap.add_argument("--threads", type=int, default=1, help="torch threads (1: the 2 cores are shared)")
    ap.add_argument("--arch", default="small")
    ap.add_argument("--json", type=Path, help="write the results here")
    ap.add_argument("--child", nargs=5, metavar=("MODEL", "SRC", "OUT", "CHUNKSIZE", "THREADS"), help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.child:
        m, s, o, c, t = a.child
        child(m, s, o, int(c), int(t))
        return
    results = {"machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version(),
                           "load_avg_at_start": os.getloadavg()},
               "command": " ".join(["nice -n 10 python"] + sys.argv),
               "arch": a.arch, "chunksize": a.chunksize, "torch_threads": a.threads, "runs": []}
    with tempfile.TemporaryDirectory(prefix="bench_pf_") as d:
        d = Path(d)
        make_model(d / "model", a.arch)
        for n in a.rows:
            src = d / f"in_{n}.csv"
            make_input(src, n)
            out = subprocess.run([sys.executable, __file__, "--child", str(d / "model"), str(src), str(d / "out.csv"),
                                  str(a.chunksize), str(a.threads)], capture_output=True, text=True, check=True)
            run = json.loads(out.stdout.strip().splitlines()[-1])
            run["load_avg_after"] = [round(x, 2) for x in os.getloadavg()]
            results["runs"].append(run)
            print(json.dumps(run), flush=True)
            src.unlink()
    if a.json:
        a.json.write_text(json.dumps(results, indent=2))
    print("| rows | input MB | seconds | texts/s | RSS after load MB | peak RSS MB | RSS at 10/50/90% MB | worker peak MB |")
    print("|---:|---:|---:|---:|---:|---:|---|---:|")
    for r in results["runs"]:
        print(f"| {r['rows']:,} | {r['input_mb']} | {r['seconds']} | {r['texts_per_s']} | {r['rss_after_load_mb']} | "
              f"{r['peak_rss_mb']} | {r['rss_at_10_50_90pct_mb']} | {r['peak_rss_tokenizer_workers_mb']} |")


if __name__ == "__main__":
    main()
