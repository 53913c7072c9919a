"""Package two pretrained language models (forward, backward) as a shipped model of ulmfit_ml.

    python bench/ship_pretrained.py runs/en-small-fwd/model runs/en-small-bwd/model --name en-small

writes ``ulmfit_ml/pretrained/NAME/{forward,backward}/`` (float16 safetensors + JSON vocab,
the tied embedding copies left out) and ``MODEL_CARD.md`` from the models' own metrics.
"""
from __future__ import annotations

import argparse
from pathlib import Path

import ulmfit_ml as um

REPO = Path(__file__).resolve().parent.parent

CARD = """# `{name}`: a general-domain English AWD-LSTM language model shipped with ulmfit_ml

`finetune_lm(data)` starts from this model by default (`pretrained="{name}"`, offline; the backward
direction with `backwards=True`). It plays the role of fastai's WikiText-103 model in ULMFiT on
machines that cannot download it, at CPU size.

| | forward | backward |
| --- | --- | --- |
| architecture | AWD-LSTM, emb {emb_sz}, hidden {n_hid}, {n_layers} layers (`arch="cpu"`) | same |
| vocabulary | {vocab:,} tokens (fastai spaCy tokenizer + rules, `min_freq` {min_freq}) | same vocabulary |
| training tokens seen | {f_tokens:,} | {b_tokens:,} |
| held-out perplexity (full softmax, {f_valid:,} held-out tokens) | **{f_ppl:.1f}** (next-token accuracy {f_acc:.3f}) | **{b_ppl:.1f}** (accuracy {b_acc:.3f}) |
| training time | {f_time} on 1 CPU thread ({f_tps:,.0f} tokens/s) | {b_time} ({b_tps:,.0f} tokens/s) |
| weights | float16 safetensors, {f_mb:.1f} MB | {b_mb:.1f} MB |

Both directions were trained side by side on a 2-core CPU machine (one torch thread each), with
ulmfit_ml's own command line and the settings in `bench/pretrain_en_small.toml`:

```bash
ULMFIT_ML_CACHE=cache ulmfit-ml pretrain ../shared/corpora/english-web --config bench/pretrain_en_small.toml --out runs/en-small-fwd
ULMFIT_ML_CACHE=cache ulmfit-ml pretrain ../shared/corpora/english-web --config bench/pretrain_en_small.toml --backwards --out runs/en-small-bwd
python bench/ship_pretrained.py runs/en-small-fwd/model runs/en-small-bwd/model --name {name}
```

Training: one-cycle AdamW (peak lr {lr}, weight decay {wd}, dropout multiplier {drop_mult}),
batch {bs} x {seq_len} tokens, sampled softmax with {n_samples} shared negatives on the tied
output embedding (perplexity above is measured with the full softmax); about
{epochs_seen:.2f} passes over the corpus. The held-out part is 1% of the corpus lines (blocks
of 500 lines spread over both files), never trained on.

## Corpus (`english-web`, ~20.4M words; {corpus_tokens:,} training tokens after tokenisation)
- **English Wikipedia** articles (WikiExtractor output; titles and lines under 8 words removed),
  8.9M words. Licence: CC BY-SA; attribution: Wikipedia contributors.
- **Unlabelled movie reviews** of the Large Movie Review Dataset (Maas et al., 2011, "Learning
  Word Vectors for Sentiment Analysis", ACL), 50,000 reviews, 11.5M words, `<br />` tags turned
  into spaces. Distributed by its authors for research.

No GoEmotions text is in the corpus. The weights are a derivative of this text: use them under
the terms above (share-alike for the Wikipedia part, research use for the reviews).

## Limits
A small model trained for under an hour on a CPU: its perplexity is far above fastai's
WikiText-103 model (about 30 at 400/1152/3 sizes, trained for days on GPUs). With internet
access and a GPU, `pretrained=True, arch="paper"` gives the paper's starting point.
"""


def _fmt_time(s: float) -> str:
    return f"{int(s // 60)} min {int(s % 60)} s"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("forward")
    ap.add_argument("backward")
    ap.add_argument("--name", default="en-small")
    args = ap.parse_args()
    f, b = um.load_lm(args.forward), um.load_lm(args.backward)
    if b.vocab != f.vocab or f.backwards or not b.backwards:
        raise SystemExit("expected a forward and a backward model over the same vocabulary")
    root = REPO / "ulmfit_ml" / "pretrained" / args.name
    for sub, lm in (("forward", f), ("backward", b)):
        lm.history = None
        lm.save(root / sub, half=True, overwrite=True)  # replaces only a copy ulmfit_ml wrote (its marker)
    mb = {s: (root / s / "lm.safetensors").stat().st_size / 1e6 for s in ("forward", "backward")}
    c = f.config
    card = CARD.format(
        name=args.name, vocab=len(f.vocab), min_freq=c["min_freq"], lr=c["lr"], wd=c["wd"], drop_mult=c["drop_mult"],
        bs=c["bs"], seq_len=c["seq_len"], n_samples=c["n_samples"], corpus_tokens=c["corpus_tokens"],
        epochs_seen=f.metrics["tokens_seen"] / c["corpus_tokens"], **{k: f.arch[k] for k in ("emb_sz", "n_hid", "n_layers")},
        f_tokens=f.metrics["tokens_seen"], b_tokens=b.metrics["tokens_seen"], f_valid=f.metrics["valid_tokens"],
        f_ppl=f.metrics["perplexity"], b_ppl=b.metrics["perplexity"], f_acc=f.metrics["accuracy"],
        b_acc=b.metrics["accuracy"], f_time=_fmt_time(f.metrics["train_seconds"]),
        b_time=_fmt_time(b.metrics["train_seconds"]), f_tps=f.metrics["tokens_per_s"], b_tps=b.metrics["tokens_per_s"],
        f_mb=mb["forward"], b_mb=mb["backward"])
    (root / "MODEL_CARD.md").write_text(card, encoding="utf-8")
    total = sum(p.stat().st_size for p in root.rglob("*") if p.is_file()) / 1e6
    print(f"shipped {args.name} to {root} ({total:.1f} MB in all)")


if __name__ == "__main__":
    main()
