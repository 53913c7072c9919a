"""Which classifier defaults work with little labelled data? One-change-at-a-time sweep around
``ClassifierConfig()`` at 2,000 labelled GoEmotions comments (the transfer bench's protocol:
the en-small LM fine-tuned on all train texts, thresholds tuned on the held-out 10% of train).

Selection uses the **held-out** macro-F1 only (thresholds tuned there too, so it is optimistic
but equally so for every option); dev figures are reported for the record, never used to pick.

    python bench/classifier_sweep.py --n 2000 --seed 0 --name base
    python bench/classifier_sweep.py --n 2000 --seed 0 --name pos_weight_auto --set pos_weight='"auto"'
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import time
import tomllib
from pathlib import Path

import numpy as np

from transfer import evaluate, labelled, lm_dir, load

import ulmfit_ml as um

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "classifier_sweep.json"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=2000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--name", required=True)
    ap.add_argument("--set", action="append", default=[], metavar="KEY=TOML", help="a ClassifierConfig override")
    a = ap.parse_args()
    opts = {k: tomllib.loads(f"v = {v}")["v"] for k, v in (s.split("=", 1) for s in a.set)}
    opts = {k: tuple(v) if isinstance(v, list) else v for k, v in opts.items()}
    train, dev, names, is_heldout = load()
    heldout = train[is_heldout]
    data = labelled(train, is_heldout, names, a.n, a.seed)
    t0 = time.perf_counter()
    clf = um.train_classifier(data, encoder=um.load_lm(lm_dir(False, False)), quiet=True, seed=a.seed, **opts)
    seconds = time.perf_counter() - t0
    ev = evaluate(clf, dev, heldout)  # tunes thresholds on the held-out part
    sel = clf.evaluate(heldout)["f1_macro"]  # selection figure: held-out, never dev
    res = json.loads(RESULTS.read_text()) if RESULTS.exists() else {}
    res[f"n={a.n}/seed={a.seed}/{a.name}"] = {"options": {k: str(v) for k, v in opts.items()},
                                              "heldout_f1_macro_tuned": round(float(sel), 4), **ev,
                                              "seconds": round(seconds, 1), "date": time.strftime("%Y-%m-%d %H:%M"),
                                              "machine": f"{platform.machine()}, {os.cpu_count()} CPU cores"}
    tmp = RESULTS.with_suffix(".tmp")
    tmp.write_text(json.dumps(res, indent=1, sort_keys=True))
    os.replace(tmp, RESULTS)
    print(a.name, json.dumps(res[f"n={a.n}/seed={a.seed}/{a.name}"]), flush=True)


if __name__ == "__main__":
    main()
