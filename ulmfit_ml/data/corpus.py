"""Stage 1 input: a raw text corpus as cached, memory-mapped token ids (for LM pretraining).

A corpus of tens of millions of words cannot live in RAM as Python token strings. The files are
read a chunk of lines at a time, tokenised with the same fastai pipeline as everything else
(:func:`~ulmfit_ml.data.tokens.tokenize_texts`, spaCy + fastai's rules, in worker processes), and
written as integer ids; the vocabulary is fastai's ``make_vocab`` over the counts. The result
is cached on disk under a key of the files (path, size, mtime) and the tokenizer settings, so a
second run (or a resumed one) starts in a second.

Layout of a cache directory: ``train.ids`` / ``valid.ids`` (raw little-endian ``uint16`` or
``uint32``), ``vocab.json``, ``meta.json`` (counts, sizes, sources).
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
import uuid
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Iterator, Sequence

import numpy as np

from ..utils.persist import write_text_atomic
from .tokens import TextTokenizer

__all__ = ["TokenCorpus", "tokenize_corpus", "corpus_files", "corpus_texts", "default_cache_dir", "texts_to_corpus_file"]

_FORMAT = 1
_BLOCK_LINES = 500  #: held-out lines are whole blocks of up to this many lines (mixes every source)


def default_cache_dir() -> Path:
    """``$ULMFIT_ML_CACHE`` or ``$XDG_CACHE_HOME/ulmfit_ml`` (``~/.cache/ulmfit_ml``)."""
    env = os.environ.get("ULMFIT_ML_CACHE")
    if env:
        return Path(env)
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "ulmfit_ml"


def texts_to_corpus_file(texts: Sequence[str]) -> Path:
    """Write in-memory texts (one per line) to a corpus file in the cache, named by their hash,
    so a list of strings goes through the same cached, streamed path as files on disk."""
    h = hashlib.sha256()
    for t in texts:
        h.update(t.encode("utf-8", errors="replace") + b"\0")
    d = default_cache_dir() / "texts"
    d.mkdir(parents=True, exist_ok=True)
    p = d / f"{h.hexdigest()[:16]}.txt"
    if not p.exists():  # our own file, in our own cache folder, through the one atomic writer
        write_text_atomic(p, "\n".join(" ".join(t.split()) for t in texts) + "\n")
    return p


def _looks_like_texts(items: list[Any]) -> bool:
    """A list of strings none of which names an existing file or folder: texts, not paths."""
    return bool(items) and all(isinstance(t, str) for t in items) and not any(
        t.strip() and len(t) < 4096 and "\n" not in t and Path(t).exists() for t in items)


def corpus_files(corpus: str | Path | Sequence[str | Path]) -> list[Path]:
    """The ``.txt`` files of ``corpus``: one file, a folder of ``.txt`` files, a list of either, or
    a list of texts (written once to a cached corpus file)."""
    items = [corpus] if isinstance(corpus, (str, Path)) else list(corpus)
    if not isinstance(corpus, (str, Path)) and _looks_like_texts(items):
        return [texts_to_corpus_file(items)]
    files: list[Path] = []
    for it in items:
        p = Path(it)
        if p.is_dir():
            found = sorted(p.glob("*.txt"))
            if not found:
                raise FileNotFoundError(f"No .txt files in corpus folder {p}.")
            files += found
        elif p.is_file():
            files.append(p)
        else:
            raise FileNotFoundError(f"No corpus text found at {p} (expected a .txt file or a folder of .txt files).")
    return files


@dataclass
class TokenCorpus:
    """Token ids of a corpus, memory-mapped from its cache directory.

    Attributes:
        path: the cache directory.
        vocab: token strings (index = id), fastai's special tokens first.
        train: 1-d memory-mapped id array of the training part (texts in file order).
        valid: 1-d id array of the held-out part.
        counts: training count per vocab id (for samplers and the decoder bias).
        meta: sizes and sources.
        tokenizer: what the ids' tokens come from (spaCy words or a SentencePiece model kept in the cache).
    """

    path: Path
    vocab: list[str]
    train: np.ndarray
    valid: np.ndarray
    counts: np.ndarray
    meta: dict[str, Any]
    tokenizer: TextTokenizer

    @classmethod
    def load(cls, path: str | Path) -> "TokenCorpus":
        path = Path(path)
        meta = json.loads((path / "meta.json").read_text(encoding="utf-8"))
        vocab = json.loads((path / "vocab.json").read_text(encoding="utf-8"))
        dtype = np.dtype(meta["dtype"])
        arrays = {}
        for part in ("train", "valid"):
            n = int(meta[f"n_{part}_tokens"])
            arrays[part] = (np.memmap(path / f"{part}.ids", dtype=dtype, mode="r", shape=(n,)) if n
                            else np.zeros(0, dtype=dtype))
        counts = np.asarray(meta["counts"], dtype=np.int64)
        return cls(path, vocab, arrays["train"], arrays["valid"], counts, meta, TextTokenizer.load(meta.get("tokenizer"), path))

    def __repr__(self) -> str:
        return (f"TokenCorpus({len(self.vocab):,} tokens in vocab, {len(self.train):,} train / "
                f"{len(self.valid):,} held-out token ids, at {self.path})")


def _iter_texts(files: Sequence[Path]) -> Iterator[tuple[int, str]]:
    """(line number across all files, text) for every non-empty line; WikiText ``= Title =`` lines skipped."""
    i = 0
    for f in files:
        with open(f, encoding="utf-8", errors="replace") as fh:
            for line in fh:
                s = line.strip()
                if s and not s.startswith("= "):
                    yield i, s
                    i += 1


def corpus_texts(corpus: str | Path | Sequence[str | Path], *, limit: int | None = None) -> Iterator[str]:
    """The corpus's texts (non-empty lines, WikiText headings skipped), in file order; at most ``limit``."""
    for i, t in _iter_texts(corpus_files(corpus)):
        if limit is not None and i >= limit:
            return
        yield t


def _cache_key(files: Sequence[Path], *, max_vocab: int, min_freq: int, valid_pct: float, tokenizer: str,
               vocab: list[str] | None = None) -> str:
    from fastai import __version__ as fastai_version
    from fastai.text.core import defaults

    h = hashlib.sha256()
    for f in files:
        st = f.stat()
        h.update(f"{f.resolve()}|{st.st_size}|{st.st_mtime_ns}\n".encode())
    rules = ",".join(getattr(r, "__name__", str(r)) for r in defaults.text_proc_rules)
    h.update(f"{_FORMAT}|{fastai_version}|{rules}|{max_vocab}|{min_freq}|{valid_pct}|{tokenizer}".encode())
    if vocab is not None:  # a fixed vocabulary gives other ids: its own cache
        h.update(("|vocab|" + json.dumps(vocab, ensure_ascii=False)).encode())
    return h.hexdigest()[:16]


def _chunks(it: Iterable[tuple[int, str]], size: int) -> Iterator[list[tuple[int, str]]]:
    buf: list[tuple[int, str]] = []
    for x in it:
        buf.append(x)
        if len(buf) >= size:
            yield buf
            buf = []
    if buf:
        yield buf


def tokenize_corpus(corpus: str | Path | Sequence[str | Path], *, max_vocab: int = 12000, min_freq: int = 3,
                    valid_pct: float = 0.01, cache_dir: str | Path | None = None, n_workers: int | None = None,
                    chunk_lines: int = 20000, quiet: bool = False, tokenizer: TextTokenizer | None = None,
                    vocab: Sequence[str] | None = None) -> TokenCorpus:
    """Tokenise ``corpus`` once into memory-mapped ids, or reuse its cache.

    Args:
        corpus: a ``.txt`` file (one paragraph per line), a folder of them, or a list of either.
        max_vocab, min_freq: fastai ``make_vocab`` limits; other tokens become ``xxunk``.
        valid_pct: share of lines held out for perplexity, taken as whole blocks of lines
            (500, fewer on a small corpus) spread over the corpus, so every source is represented.
        cache_dir: where caches live (default :func:`default_cache_dir` ``/corpus``).
        n_workers: tokenizer processes (default: fastai's ``defaults.cpus``).
        chunk_lines: lines tokenised per chunk (memory stays bounded by one chunk).
        tokenizer: a :class:`~ulmfit_ml.data.tokens.TextTokenizer` (default spaCy words); a
            SentencePiece model is kept in the cache directory.
        vocab: a fixed vocabulary (e.g. the one of a language model whose pretraining goes on);
            ``max_vocab`` / ``min_freq`` are then unused and tokens outside it become ``xxunk``.

    Returns:
        A :class:`TokenCorpus`.
    """
    files = corpus_files(corpus)
    if not 0 <= valid_pct < 1:
        raise ValueError(f"valid_pct must be in [0, 1), got {valid_pct!r}.")
    root = Path(cache_dir) if cache_dir is not None else default_cache_dir() / "corpus"
    tokenizer = tokenizer if tokenizer is not None else TextTokenizer()
    # a spaCy cache keeps the key it always had
    key = _cache_key(files, max_vocab=max_vocab, min_freq=min_freq, valid_pct=valid_pct,
                     tokenizer="" if tokenizer.name == "spacy" else tokenizer.sha256,
                     vocab=None if vocab is None else list(vocab))
    final = root / key
    if (final / "meta.json").exists():
        return TokenCorpus.load(final)
    root.mkdir(parents=True, exist_ok=True)
    tmp = root / f".{key}.tmp-{uuid.uuid4().hex[:8]}"
    tmp.mkdir()
    every, block = _held_out_blocks(files, valid_pct)
    t0 = time.perf_counter()
    try:
        prov, counts, n_lines = _tokenize_to_raw(files, tmp, tokenizer, n_workers=n_workers, chunk_lines=chunk_lines,
                                                 every=every, block=block, quiet=quiet, t0=t0)
        # pass 2: fastai's vocabulary, then provisional -> final ids (unknown -> xxunk = 0)
        words = list(prov)
        vocab = _final_vocab(words, counts, vocab, min_freq=min_freq, max_vocab=max_vocab)
        remap, dtype = _id_map(words, vocab)
        sizes = {part: _remap_part(tmp, part, remap, dtype) for part in ("train", "valid")}
        final_counts = np.bincount(remap, weights=counts.astype(np.float64), minlength=len(vocab)).astype(np.int64)
        meta = {"format": _FORMAT, "dtype": np.dtype(dtype).name, "n_train_tokens": sizes["train"],
                "n_valid_tokens": sizes["valid"], "n_lines": n_lines, "n_types": len(words),
                "sources": [str(f.resolve()) for f in files], "max_vocab": max_vocab, "min_freq": min_freq,
                "valid_pct": valid_pct, "valid_block_lines": block, "seconds": round(time.perf_counter() - t0, 1),
                "counts": final_counts.tolist(), "tokenizer": tokenizer.save(tmp)}
        (tmp / "vocab.json").write_text(json.dumps(vocab, ensure_ascii=False), encoding="utf-8")
        (tmp / "meta.json").write_text(json.dumps(meta), encoding="utf-8")
        _publish(tmp, final)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)  # only our own temporary directory
    return TokenCorpus.load(final)


def _held_out_blocks(files: Sequence[Path], valid_pct: float) -> tuple[int, int]:
    """``(every, block)``: every ``every``-th block of ``block`` lines is held out (``every`` 0: none).
    Blocks of 500 lines on a large corpus; smaller blocks when the corpus has under 4 x 500
    blocks per held-out block, so a small corpus still gets a held-out part."""
    every = int(round(1 / valid_pct)) if valid_pct > 0 else 0
    n_est = sum(1 for _ in _iter_texts(files)) if every else 0
    block = min(_BLOCK_LINES, max(1, n_est // (every * 4))) if every else _BLOCK_LINES
    return every, block


def _tokenize_to_raw(files: Sequence[Path], tmp: Path, tokenizer: TextTokenizer, *, n_workers: int | None,
                     chunk_lines: int, every: int, block: int, quiet: bool,
                     t0: float) -> tuple[dict[str, int], np.ndarray, int]:
    """Pass 1: every line's tokens as provisional ids (in order of first appearance: the vocabulary
    is not known yet) into ``tmp``'s ``train.raw`` / ``valid.raw``; ``(provisional ids, training
    counts per provisional id, lines)``."""
    prov: dict[str, int] = {}
    counts = np.zeros(0, dtype=np.int64)
    n_lines = n_tok = 0
    with open(tmp / "train.raw", "wb") as ftr, open(tmp / "valid.raw", "wb") as fva:
        for chunk in _chunks(_iter_texts(files), chunk_lines):
            toks = tokenizer([t for _, t in chunk], n_workers=n_workers)
            parts: dict[bool, list[int]] = {False: [], True: []}
            for (line_no, _), tl in zip(chunk, toks):
                held = bool(every) and (line_no // block) % every == every - 1
                parts[held] += [prov.setdefault(t, len(prov)) for t in tl]
            tr = np.asarray(parts[False], dtype=np.uint32)
            counts = np.concatenate([counts, np.zeros(len(prov) - len(counts), dtype=np.int64)])
            counts += np.bincount(tr, minlength=len(prov))
            ftr.write(tr.tobytes())
            fva.write(np.asarray(parts[True], dtype=np.uint32).tobytes())
            n_tok += len(parts[False]) + len(parts[True])
            n_lines += len(chunk)
            if not quiet:
                dt = time.perf_counter() - t0
                print(f"tokenised {n_lines:,} lines, {n_tok:,} tokens ({n_tok / dt:,.0f} tokens/s)", flush=True)
    if not n_tok:
        raise ValueError(f"The corpus at {', '.join(map(str, files))} has no non-empty text.")
    return prov, counts, n_lines


def _final_vocab(words: list[str], counts: np.ndarray, vocab: Sequence[str] | None, *, min_freq: int,
                 max_vocab: int) -> list[str]:
    """The fixed ``vocab``, or fastai's ``make_vocab`` over the training counts."""
    from fastai.text.data import make_vocab

    return (list(vocab) if vocab is not None else
            make_vocab(Counter(dict(zip(words, counts.tolist()))), min_freq=min_freq, max_vocab=max_vocab))


def _id_map(words: list[str], vocab: list[str]) -> tuple[np.ndarray, Any]:
    """``(provisional id -> final id, the id dtype)``: tokens outside ``vocab`` become ``xxunk``."""
    index = {t: i for i, t in enumerate(vocab)}
    unk = index.get("xxunk", 0)
    remap = np.array([index.get(w, unk) for w in words], dtype=np.int64)
    return remap, (np.uint16 if len(vocab) <= np.iinfo(np.uint16).max else np.uint32)


def _remap_part(tmp: Path, part: str, remap: np.ndarray, dtype: Any) -> int:
    """``<part>.raw`` (provisional ids) -> ``<part>.ids`` (final ids, ``dtype``), in slices; its
    token count. The raw file (our own, in our own temporary directory) is removed."""
    raw_path = tmp / f"{part}.raw"
    raw = np.memmap(raw_path, dtype=np.uint32, mode="r") if raw_path.stat().st_size else np.zeros(0, np.uint32)
    with open(tmp / f"{part}.ids", "wb") as out:
        for s in range(0, len(raw), 1 << 22):
            out.write(remap[raw[s:s + (1 << 22)]].astype(dtype).tobytes())
    size = len(raw)
    del raw
    raw_path.unlink()  # our own temporary file, inside our own temporary cache directory
    return size


def _publish(tmp: Path, final: Path) -> None:
    """Rename the finished cache into place; another process that cached the same corpus first wins.

    Not :func:`~ulmfit_ml.utils.persist.atomic_dir`: that one replaces what is there (an owned
    directory, with ``overwrite``), while two processes caching the same corpus must keep the first
    copy and drop the second, so the rename is its own here."""
    try:
        os.rename(tmp, final)
    except OSError:  # another process cached the same corpus first: use theirs
        if not (final / "meta.json").exists():
            raise
