"""A token cache for the benchmark: tokenise once (spaCy, on a CPU machine), reuse everywhere.

Why: fastai's tokeniser is spaCy, which is not installed on the GPU machine (and costs a
minute of two shared CPU cores on every run). The cache maps each text to fastai's tokens
(exactly what :func:`ulmfit_ml.data.tokens.tokenize_texts` returns) and is stored as gzipped JSON
(no pickle). :func:`use_cache` swaps ulmfit_ml's ``tokenize_texts`` for a look-up in the cache
(so ``MultiLabelData.tokens``, ``pretrain_lm`` and ``predict_proba`` all read it) and, where
spaCy is missing, gives fastai's ``Tokenizer`` transform a stub tokenizer: every text the
library needs is already tokenised, so the stub is never called.
"""
from __future__ import annotations

import contextlib
import gzip
import importlib.util
import json
from pathlib import Path
from typing import Iterator, Sequence

__all__ = ["load_cache", "save_cache", "use_cache", "spacy_available"]


def spacy_available() -> bool:
    """True when spaCy can be imported here (the CPU machine), False on the GPU machine."""
    return importlib.util.find_spec("spacy") is not None


def load_cache(path: str | Path) -> dict[str, list[str]]:
    """Read a cache written by :func:`save_cache` (``{}`` when the file does not exist)."""
    p = Path(path)
    if not p.exists():
        return {}
    with gzip.open(p, "rt", encoding="utf-8") as f:
        data = json.load(f)
    if not isinstance(data, dict):
        raise ValueError(f"{p} is not a token cache (expected a JSON object text -> tokens).")
    return data


def save_cache(cache: dict[str, list[str]], path: str | Path) -> Path:
    """Write ``cache`` as gzipped JSON (atomically: temp file, then rename)."""
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    tmp = p.with_name(p.name + ".tmp-write")
    with gzip.open(tmp, "wt", encoding="utf-8", compresslevel=5) as f:
        json.dump(cache, f, ensure_ascii=False, separators=(",", ":"))
    tmp.replace(p)
    return p


class _NoSpacyTokenizer:
    """Stand-in for fastai's spaCy ``WordTokenizer`` where spaCy is not installed."""

    def __call__(self, items):  # pragma: no cover - only reached on a cache miss without spaCy
        raise RuntimeError("spaCy is not installed here and a text is missing from the token cache: "
                           "build the cache on a machine with spaCy (run_bench.py --tokenize-only).")


@contextlib.contextmanager
def use_cache(cache: dict[str, list[str]], *, enabled: bool = True) -> Iterator[dict[str, list[str]]]:
    """Within the block, ulmfit_ml tokenises through ``cache`` (misses are tokenised with
    spaCy when available and added to the cache; without spaCy a miss raises)."""
    import ulmfit_ml.data.corpus as corpus_mod
    import ulmfit_ml.data.core as data_mod
    import ulmfit_ml.inference.explain as explain_mod
    import ulmfit_ml.models.classifier as model_mod
    import ulmfit_ml.data.tokens as tokens_mod

    if not enabled:
        yield cache
        return
    real_tokenize = tokens_mod.tokenize_texts
    real_tokenizer = tokens_mod.word_tokenizer
    have_spacy = spacy_available()

    def cached_tokenize(texts: Sequence[str], *, n_workers: int | None = None) -> list[list[str]]:
        texts = list(texts)
        missing = list(dict.fromkeys(t for t in texts if t not in cache))
        if missing:
            if not have_spacy:
                raise RuntimeError(f"{len(missing)} text(s) are not in the token cache and spaCy is not installed "
                                   f"here (first: {missing[0][:60]!r}). Rebuild the cache with --tokenize-only.")
            cache.update(zip(missing, real_tokenize(missing, n_workers=n_workers)))
        return [list(cache[t]) for t in texts]

    mods = (tokens_mod, data_mod, model_mod, explain_mod, corpus_mod)  # every module that imported tokenize_texts
    for m in mods:
        m.tokenize_texts = cached_tokenize
    if not have_spacy:
        tokens_mod.word_tokenizer = _NoSpacyTokenizer
    try:
        yield cache
    finally:
        for m in mods:
            m.tokenize_texts = real_tokenize
        tokens_mod.word_tokenizer = real_tokenizer
