import json

import numpy as np
import pytest

from reasonlab.config import DataConfig
from reasonlab.data import BatchSampler, prepare_corpus
from reasonlab.data.sources import Document, chunk_document, load_documents, split_documents, strip_markdown
from reasonlab.data.tokenizer import train_bpe
from reasonlab.errors import UserError


def test_strip_markdown():
    md = "# Othello\n\n## ACT I\n\n_Enter RODERIGO and IAGO_\n\n**RODERIGO**  \nTush! never tell me;  \n"
    assert strip_markdown(md) == "Othello\n\nACT I\n\nEnter RODERIGO and IAGO\n\nRODERIGO\nTush! never tell me;\n"


def test_bundled_corpus_is_one_document_per_play():
    docs = load_documents("shakespeare")
    assert len(docs) >= 36
    hamlet = next(d for d in docs if d.name == "hamlet")
    assert "To be, or not to be" in hamlet.text and "**" not in hamlet.text


def test_train_and_val_documents_are_disjoint_and_deterministic():
    docs = load_documents("shakespeare")
    train, val = split_documents(docs, 0.1)
    assert {d.name for d in train}.isdisjoint({d.name for d in val})
    assert len(train) + len(val) == len(docs) and len(val) == round(0.1 * len(docs))
    train2, val2 = split_documents(list(reversed(docs)), 0.1)
    assert {d.name for d in val2} == {d.name for d in val}


def test_tokenizer_round_trip():
    docs = load_documents("shakespeare", max_documents=3)
    tok = train_bpe((d.text for d in docs), 400)
    for text in ["To be, or not to be: that is the question.", "naïve café — 東京 \t\n  spaces", ""]:
        assert tok.decode(tok.encode(text)) == text


def test_local_sources(tmp_path, small_corpus):
    jsonl = tmp_path / "docs.jsonl"
    jsonl.write_text("\n".join(json.dumps({"text": f"doc {i}"}) for i in range(5)) + "\n")
    assert [d.text for d in load_documents(str(jsonl))] == [f"doc {i}" for i in range(5)]
    assert len(load_documents(str(small_corpus))) == 10
    assert len(load_documents(str(small_corpus / "doc0.txt"))) == 1


@pytest.mark.parametrize(
    "content, message",
    [(None, "not found"), ("", "empty"), ("{not json", "not valid JSON"), ('{"body": "x"}', "field 'text'")],
)
def test_bad_sources(tmp_path, content, message):
    path = tmp_path / "data.jsonl"
    if content is not None:
        path.write_text(content)
    with pytest.raises(UserError, match=message):
        load_documents(str(path))


def test_corpus_cache_is_reused(small_corpus):
    data = DataConfig(source=str(small_corpus))
    first = prepare_corpus(data, 300)
    mtime = (first.directory / "train.bin").stat().st_mtime_ns
    second = prepare_corpus(data, 300)
    assert second.directory == first.directory
    assert (second.directory / "train.bin").stat().st_mtime_ns == mtime
    assert first.train.dtype == np.uint16 and np.array_equal(first.train, second.train)
    assert first.tokenizer.eot_id in set(first.val.tolist())


def test_sampler_state_restores_the_same_batches():
    tokens = np.arange(5000, dtype=np.uint16)
    a = BatchSampler(tokens, seq_len=16, batch_size=8, seed=3)
    for _ in range(50):  # crosses several epochs
        a.next_batch()
    b = BatchSampler(tokens, seq_len=16, batch_size=8, seed=3)
    b.load_state_dict(a.state_dict())
    for _ in range(30):
        xa, ya = a.next_batch()
        xb, yb = b.next_batch()
        assert np.array_equal(xa, xb) and np.array_equal(ya, yb)
    x, y = a.next_batch()
    assert x.shape == (8, 16) and np.array_equal(x[:, 1:], y[:, :-1])


def _book(paragraphs: int = 60) -> str:
    return "".join(f"Paragraph {i}.\nIt has two lines, {'and words ' * (i % 7)}here.\n\n" for i in range(paragraphs))


def test_one_text_is_cut_into_whole_paragraph_chunks_that_join_back():
    book = Document("book.txt", _book())
    chunks = chunk_document(book, 200)
    assert "".join(c.text for c in chunks) == book.text
    assert all(len(c.text) >= 200 and c.text.endswith("\n\n") for c in chunks[:-1])
    assert all(c.text.startswith("Paragraph") for c in chunks)  # never cut inside a paragraph
    assert [c.text for c in chunk_document(book, 200)] == [c.text for c in chunks]
    lines = chunk_document(Document("x", "".join(f"line {i}\n" for i in range(100))), 50)  # no blank lines
    assert len(lines) > 5 and all(c.text.startswith("line") for c in lines)


def test_a_single_text_file_splits_into_train_and_val_chunks(tmp_path):
    path = tmp_path / "book.txt"
    path.write_text(_book())
    docs = load_documents(str(path))
    train, val = split_documents(docs, 0.1, chunk_chars=200)
    assert len(val) == round(0.1 * (len(train) + len(val))) and not {d.text for d in train} & {d.text for d in val}
    with pytest.raises(UserError, match=r"corpus has 1 document; .* set data.chunk_chars"):
        split_documents(docs, 0.1, chunk_chars=0)
    with pytest.raises(UserError, match=r"fewer than 2 chunks of data.chunk_chars \(100000\)"):
        split_documents(docs, 0.1, chunk_chars=100_000)
