"""Make data/goemotions_sample.csv: 4,000 GoEmotions comments from train.tsv (seeded sample).

    python data/make_goemotions_sample.py [--shared ../shared/datasets/goemotions]

Columns: id (the comment id), text, emotions (the 28-label scheme, ";"-delimited names) and ekman
(the same comments under Ekman's 6 emotions + neutral, ";"-delimited). See data/README.md.
"""
from __future__ import annotations

import argparse
import csv
from pathlib import Path

import pandas as pd

HERE = Path(__file__).resolve().parent


def read_scheme(d: Path) -> pd.DataFrame:
    names = [ln.strip() for ln in (d / "labels.txt").read_text().splitlines() if ln.strip()]
    df = pd.read_csv(d / "train.tsv", sep="\t", header=None, names=["text", "ids", "id"], quoting=csv.QUOTE_NONE,
                     dtype=str, keep_default_na=False)
    df["names"] = [";".join(names[int(i)] for i in s.split(",")) for s in df["ids"]]
    return df


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--shared", default=str(HERE.parent.parent / "shared" / "datasets" / "goemotions"))
    ap.add_argument("--rows", type=int, default=4000)
    args = ap.parse_args()
    root = Path(args.shared)
    full, ekman = read_scheme(root), read_scheme(root / "ekman")
    if not (full["id"] == ekman["id"]).all():
        raise SystemExit("ekman/train.tsv is not row-aligned with train.tsv")
    df = pd.DataFrame({"id": full["id"], "text": full["text"], "emotions": full["names"], "ekman": ekman["names"]})
    df = df.drop_duplicates("text").sample(n=args.rows, random_state=0).reset_index(drop=True)
    df.to_csv(HERE / "goemotions_sample.csv", index=False)
    print(f"wrote {len(df)} rows to {HERE / 'goemotions_sample.csv'}")


if __name__ == "__main__":
    main()
