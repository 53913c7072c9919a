"""Package two pretrained language models (forward, backward) as a shipped model of ulmfit_ml.

    python bench/ship_pretrained.py FORWARD_DIR BACKWARD_DIR --name en-small [--session 2026-12-07]

writes ``ulmfit_ml/pretrained/NAME/{forward,backward}/`` (float16 safetensors + JSON vocab, the
tied embedding copies left out) and ``MODEL_CARD.md``. The pretraining campaign runs over several
sessions (continued from the last shipped weights with ``ulmfit-ml pretrain --init-from en-small``);
each direction's runs are logged in ``bench/pretrain_campaign.json``: a direction passed as the
shipped directory itself is left as it is and adds no run.
"""
from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path
from typing import Any

import ulmfit_ml as um

REPO = Path(__file__).resolve().parent.parent
CAMPAIGN = REPO / "bench" / "pretrain_campaign.json"

CARD = """# `{name}`: a general-domain English AWD-LSTM language model shipped with ulmfit_ml

`finetune_lm(data)` starts from this model by default (`pretrained="{name}"`, offline; the backward
direction with `backwards=True`). It plays the role of fastai's WikiText-103 model in ULMFiT on
machines that cannot download it, at CPU size.

| | forward | backward |
| --- | --- | --- |
| architecture | AWD-LSTM, emb {emb_sz}, hidden {n_hid}, {n_layers} layers (`arch="cpu"`) | same |
| vocabulary | {vocab:,} tokens (fastai spaCy tokenizer + rules, `min_freq` 3 on the first corpus) | same vocabulary |
| training tokens seen (all runs) | {f_tokens:,} | {b_tokens:,} |
| held-out perplexity (full softmax, {f_valid:,} held-out tokens) | **{f_ppl:.1f}** (next-token accuracy {f_acc:.3f}) | **{b_ppl:.1f}** (accuracy {b_acc:.3f}) |
| CPU time (all runs, 1 thread each) | {f_time} | {b_time} |
| weights | float16 safetensors, {f_mb:.1f} MB | {b_mb:.1f} MB |

The held-out tokens are the same in every row of the history below: the first 200,000 held-out
tokens of the corpus (1% of its lines, blocks of 500 lines, never trained on), which lie in the
first two files; files added later come after them, so the held-out lines do not move
(`tests/test_pretrain.py::test_appending_a_corpus_file_keeps_the_held_out_lines`).

## How it was made: the pretraining campaign
Each run is ulmfit_ml's own `pretrain` command on a 2-core CPU machine, one torch thread per
direction. The first run started from random weights; every later run continues the last shipped
weights (`--init-from {name}`: same vocabulary, a new one-cycle over the run's tokens, AdamW,
sampled softmax with {n_samples} shared negatives on the tied output embedding; perplexity is
measured with the full softmax).

| session | direction | run | tokens this run | tokens in all | held-out perplexity after | time | tokens/s |
| --- | --- | --- | --- | --- | --- | --- | --- |
{history}

Commands (the settings files are in `bench/`):

```bash
{commands}
python bench/ship_pretrained.py FORWARD/model BACKWARD/model --name {name}
```

## Corpus (`english-web`, ~23.4M words; {corpus_tokens:,} training tokens after tokenisation)
- **English Wikipedia** articles (WikiExtractor output; titles and lines under 8 words removed),
  8.9M words. Licence: CC BY-SA; attribution: Wikipedia contributors.
- **Unlabelled movie reviews** of the Large Movie Review Dataset (Maas et al., 2011, "Learning
  Word Vectors for Sentiment Analysis", ACL), 50,000 reviews, 11.5M words, `<br />` tags turned
  into spaces. Distributed by its authors for research.
- **20 Newsgroups** (Lang, 1995, "NewsWeeder: Learning to Filter Netnews", ICML), 15,933 usenet
  posts, 3.0M words, cleaned (headers, quotes, signatures, e-mail addresses removed); from the
  second session on. No licence stated by its distributors; widely redistributed for research.
  Do not evaluate on 20 Newsgroups with this model.

No GoEmotions, SemEval or Reuters text is in the corpus. The weights are a derivative of this text:
use them under the terms above (share-alike for the Wikipedia part, research use for the rest).

## Limits
A small model trained for a few CPU hours: its perplexity is far above fastai's WikiText-103
model (about 30 at 400/1152/3 sizes, trained for days on GPUs). With internet access and a GPU,
`pretrained=True, arch="paper"` gives the paper's starting point.
"""


def _fmt_time(s: float) -> str:
    return f"{int(s // 3600)} h {int(s % 3600 // 60)} min" if s >= 3600 else f"{int(s // 60)} min {int(s % 60)} s"


def _write_json(path: Path, value: Any) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(value, indent=1) + "\n", encoding="utf-8")
    os.replace(tmp, path)  # our own results file


def _run_entry(lm: um.LanguageModel, session: str, command: str) -> dict[str, Any]:
    m, c = lm.metrics, lm.config
    return {"session": session, "direction": "backward" if lm.backwards else "forward",
            "init_from": c.get("init_from"), "tokens": m["tokens_seen"],
            "tokens_total": m.get("tokens_seen_total", m["tokens_seen"]), "perplexity": round(m["perplexity"], 2),
            "accuracy": round(m["accuracy"], 4), "valid_tokens": m["valid_tokens"], "seconds": m["train_seconds"],
            "tokens_per_s": m["tokens_per_s"], "lr": c.get("lr"), "pct_start": c.get("pct_start"),
            "corpus_tokens": c.get("corpus_tokens"), "command": command}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("forward")
    ap.add_argument("backward")
    ap.add_argument("--name", default="en-small")
    ap.add_argument("--session", default=time.strftime("%Y-%m-%d"))
    ap.add_argument("--forward-command", default="", help="the command that made FORWARD (logged in the card)")
    ap.add_argument("--backward-command", default="", help="the command that made BACKWARD")
    args = ap.parse_args()
    root = REPO / "ulmfit_ml" / "pretrained" / args.name
    f, b = um.load_lm(args.forward), um.load_lm(args.backward)
    if b.vocab != f.vocab or f.backwards or not b.backwards:
        raise SystemExit("expected a forward and a backward model over the same vocabulary")
    campaign = json.loads(CAMPAIGN.read_text()) if CAMPAIGN.exists() else {"runs": []}
    for sub, lm, src, cmd in (("forward", f, args.forward, args.forward_command),
                              ("backward", b, args.backward, args.backward_command)):
        if Path(src).resolve() == (root / sub).resolve():
            continue  # this direction was not trained again: the shipped weights stay
        campaign["runs"].append(_run_entry(lm, args.session, cmd))
        lm.history = None
        lm.save(root / sub, half=True, overwrite=True)  # replaces only a copy ulmfit_ml wrote (its marker)
    _write_json(CAMPAIGN, campaign)
    f, b = um.load_lm(root / "forward"), um.load_lm(root / "backward")
    mb = {s: (root / s / "lm.safetensors").stat().st_size / 1e6 for s in ("forward", "backward")}
    runs = campaign["runs"]
    secs = {d: sum(r["seconds"] for r in runs if r["direction"] == d) for d in ("forward", "backward")}
    history = "\n".join(
        f"| {r['session']} | {r['direction']} | {'from ' + r['init_from'] if r.get('init_from') else 'from random weights'}"
        f" | {r['tokens']:,} | {r['tokens_total']:,} | {r['perplexity']:.1f} | {_fmt_time(r['seconds'])} | "
        f"{r['tokens_per_s']:,.0f} |" for r in runs)
    commands = "\n".join(dict.fromkeys(r["command"] for r in runs if r["command"]))
    card = CARD.format(
        name=args.name, vocab=len(f.vocab), n_samples=f.config.get("n_samples", 1024),
        corpus_tokens=max(r.get("corpus_tokens") or 0 for r in runs),
        **{k: f.arch[k] for k in ("emb_sz", "n_hid", "n_layers")},
        f_tokens=f.metrics.get("tokens_seen_total", f.metrics["tokens_seen"]),
        b_tokens=b.metrics.get("tokens_seen_total", b.metrics["tokens_seen"]), f_valid=f.metrics["valid_tokens"],
        f_ppl=f.metrics["perplexity"], b_ppl=b.metrics["perplexity"], f_acc=f.metrics["accuracy"],
        b_acc=b.metrics["accuracy"], f_time=_fmt_time(secs["forward"]), b_time=_fmt_time(secs["backward"]),
        f_mb=mb["forward"], b_mb=mb["backward"], history=history, commands=commands)
    (root / "MODEL_CARD.md").write_text(card, encoding="utf-8")
    total = sum(p.stat().st_size for p in root.rglob("*") if p.is_file()) / 1e6
    print(f"shipped {args.name} to {root} ({total:.1f} MB in all)")


if __name__ == "__main__":
    main()
