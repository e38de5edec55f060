"""Source -> documents -> split -> tokenizer -> token cache, built once and reused.

The cache key covers the documents' content, the split, and the tokenizer spec, so a changed
corpus or vocab size gets its own entry. Each split is one flat token stream (documents joined
by the end-of-text token) in a memmap `.bin` (uint16 when the vocab fits) with a JSON sidecar.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from reasonlab.config import DataConfig
from reasonlab.data.sources import (
    Document,
    corpus_fingerprint,
    load_documents,
    split_documents,
)
from reasonlab.data.tokenizer import Tokenizer, load_pretrained, train_bpe
from reasonlab.errors import UserError
from reasonlab.io import atomic_write, atomic_write_json


@dataclass
class Corpus:
    tokenizer: Tokenizer
    train: np.ndarray
    val: np.ndarray
    directory: Path


def cache_root(data: DataConfig) -> Path:
    if data.cache_dir:
        return Path(data.cache_dir).expanduser()
    return Path(os.environ.get("REASONLAB_CACHE", "~/.cache/reasonlab")).expanduser()


def _encode_stream(tokenizer: Tokenizer, docs: list[Document]) -> np.ndarray:
    dtype = np.uint16 if tokenizer.vocab_size <= 2**16 else np.uint32
    parts = []
    for ids in tokenizer.encode_batch([d.text for d in docs]):
        parts.append(np.asarray(ids, dtype=dtype))
        parts.append(np.asarray([tokenizer.eot_id], dtype=dtype))
    return np.concatenate(parts)


def _write_split(directory: Path, name: str, tokens: np.ndarray, n_docs: int) -> None:
    atomic_write(directory / f"{name}.bin", lambda tmp: tokens.tofile(tmp))
    meta = {"dtype": tokens.dtype.name, "tokens": int(tokens.size), "documents": n_docs}
    atomic_write_json(directory / f"{name}.json", meta)


def _read_split(directory: Path, name: str) -> np.ndarray:
    meta = json.loads((directory / f"{name}.json").read_text())
    return np.memmap(directory / f"{name}.bin", dtype=np.dtype(meta["dtype"]), mode="r", shape=(meta["tokens"],))


def prepare_corpus(data: DataConfig, vocab_size: int) -> Corpus:
    """Load or build the tokenized train/val streams for this data config."""
    docs = load_documents(data.source, data.max_documents, data.max_chars)
    train_docs, val_docs = split_documents(docs, data.val_fraction, data.chunk_chars)
    tokenizer_spec = f"bpe:{vocab_size}" if data.tokenizer == "bpe" else f"hf:{data.tokenizer}"
    key = hashlib.sha256(
        f"{corpus_fingerprint(train_docs)}|{corpus_fingerprint(val_docs)}|{tokenizer_spec}".encode()
    ).hexdigest()[:16]
    directory = cache_root(data) / "corpora" / key
    if not (directory / "source.json").exists():  # written last: the entry is complete
        if data.tokenizer == "bpe":
            tokenizer = train_bpe((d.text for d in train_docs), vocab_size)
        else:
            tokenizer = load_pretrained(data.tokenizer)
        try:
            directory.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise UserError(f"cannot create cache folder {directory}: {exc.strerror}") from None
        tokenizer.save(directory)
        _write_split(directory, "train", _encode_stream(tokenizer, train_docs), len(train_docs))
        _write_split(directory, "val", _encode_stream(tokenizer, val_docs), len(val_docs))
        atomic_write_json(directory / "source.json", {"source": data.source, "tokenizer": tokenizer_spec})
    return Corpus(Tokenizer.load(directory), _read_split(directory, "train"), _read_split(directory, "val"), directory)


def val_stream(data: DataConfig, tokenizer: Tokenizer) -> np.ndarray:
    """The val split encoded with a given tokenizer (a checkpoint's own), for evaluation."""
    docs = load_documents(data.source, data.max_documents, data.max_chars)
    _, val_docs = split_documents(docs, data.val_fraction, data.chunk_chars)
    return _encode_stream(tokenizer, val_docs)
