"""Tokenizers: a byte-level BPE trained locally with HF `tokenizers`, or any HF tokenizer by name/path.

Both end up as a `tokenizers.Tokenizer` plus the id of the end-of-text token that separates
documents, saved as `tokenizer.json` + `tokenizer_meta.json` so a checkpoint loads offline.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path

from tokenizers import Tokenizer as HFTokenizer
from tokenizers import decoders, models, pre_tokenizers, trainers

from reasonlab.errors import UserError
from reasonlab.io import atomic_write, atomic_write_json

EOT = "<|endoftext|>"


class Tokenizer:
    """Text <-> token ids, with a document separator."""

    def __init__(self, backend: HFTokenizer, eot_token: str):
        eot_id = backend.token_to_id(eot_token)
        if eot_id is None:
            raise UserError(f"tokenizer has no end-of-text token {eot_token!r}")
        self.backend = backend
        self.eot_token = eot_token
        self.eot_id = eot_id

    @property
    def vocab_size(self) -> int:
        return self.backend.get_vocab_size()

    def encode(self, text: str) -> list[int]:
        return self.backend.encode(text, add_special_tokens=False).ids

    def encode_batch(self, texts: list[str]) -> list[list[int]]:
        return [e.ids for e in self.backend.encode_batch(texts, add_special_tokens=False)]

    def decode(self, ids: list[int]) -> str:
        return self.backend.decode(ids, skip_special_tokens=False)

    def save(self, directory: str | Path) -> None:
        directory = Path(directory)
        atomic_write(directory / "tokenizer.json", lambda tmp: self.backend.save(str(tmp)))
        atomic_write_json(directory / "tokenizer_meta.json", {"eot_token": self.eot_token})

    @classmethod
    def load(cls, directory: str | Path) -> Tokenizer:
        directory = Path(directory)
        try:
            backend = HFTokenizer.from_file(str(directory / "tokenizer.json"))
            meta = json.loads((directory / "tokenizer_meta.json").read_text())
            return cls(backend, meta["eot_token"])
        except Exception as exc:  # tokenizers raises bare Exception on a bad file
            raise UserError(f"cannot load tokenizer from {directory}: {str(exc).splitlines()[0]}") from None


def train_bpe(texts: Iterable[str], vocab_size: int) -> Tokenizer:
    """Byte-level BPE: every byte is in the alphabet, so any text round-trips."""
    backend = HFTokenizer(models.BPE())
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=[EOT],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    backend.train_from_iterator(texts, trainer)
    return Tokenizer(backend, EOT)


def word_tokenizer(words: list[str], eot_token: str) -> Tokenizer:
    """A fixed vocabulary of whitespace-separated words (a reasoning task's symbols); the
    end-of-text token, id 0, doubles as padding."""
    vocab = {word: i for i, word in enumerate(dict.fromkeys([eot_token, *words]))}
    backend = HFTokenizer(models.WordLevel(vocab, unk_token=None))
    backend.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    return Tokenizer(backend, eot_token)


def load_pretrained(name_or_path: str) -> Tokenizer:
    """A tokenizer.json file or folder, else an HF hub name through `transformers` (the hf extra)."""
    path = Path(name_or_path).expanduser()
    if path.is_file() or (path / "tokenizer.json").is_file():
        file = path if path.is_file() else path / "tokenizer.json"
        try:
            backend = HFTokenizer.from_file(str(file))
        except Exception as exc:
            raise UserError(f"cannot load tokenizer {file}: {str(exc).splitlines()[0]}") from None
        eot = EOT if backend.token_to_id(EOT) is not None else _guess_eot(backend, file)
        return Tokenizer(backend, eot)
    try:
        from transformers import AutoTokenizer
    except ImportError:
        raise UserError(f"tokenizer {name_or_path!r} is not a local file; "
                        "hub names need: pip install -e '.[hf]' in the reasonlab checkout") from None
    try:
        hf = AutoTokenizer.from_pretrained(name_or_path)
    except Exception as exc:
        raise UserError(f"cannot load tokenizer {name_or_path!r}: {str(exc).splitlines()[0]}") from None
    if not getattr(hf, "is_fast", False) or hf.eos_token is None:
        raise UserError(f"tokenizer {name_or_path!r} needs a fast implementation with an eos token")
    return Tokenizer(hf.backend_tokenizer, hf.eos_token)


def _guess_eot(backend: HFTokenizer, file: Path) -> str:
    for token in ("</s>", "<eos>", "<|end_of_text|>", "[SEP]"):
        if backend.token_to_id(token) is not None:
            return token
    raise UserError(f"tokenizer {file} has no end-of-text token")
