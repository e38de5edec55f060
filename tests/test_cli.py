import hashlib
import json
import subprocess
import sys

import pytest

from conftest import CONFIGS, without_hashes
from reasonlab.cli import main

TINY = str(CONFIGS / "cpu-tiny.yaml")


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("cli") / "run"
    assert main(["train", "--config", TINY, "--out", str(out), "--max-steps", "6", "--quiet",
                 "--set", "train.eval_every=3"]) == 0
    return out


def _tree_digest(path):
    files = (p for p in sorted(path.rglob("*")) if p.is_file())
    return {str(p.relative_to(path)): hashlib.sha256(p.read_bytes()).hexdigest() for p in files}


def test_eval_json(trained_run, capsys):
    assert main(["eval", str(trained_run / "checkpoints" / "best"), "--json", "--batches", "2"]) == 0
    metrics = json.loads(capsys.readouterr().out)
    assert set(metrics) == {"loss", "perplexity", "accuracy", "tokens"}
    assert metrics["tokens"] == 2 * 8 * 64


def test_generate(trained_run, capsys):
    args = ["generate", str(trained_run / "checkpoints" / "best"), "--prompt", "To be, or not",
            "--max-new-tokens", "8", "--temperature", "0.8", "--top-k", "40", "--seed", "0"]
    assert main(args) == 0
    first = capsys.readouterr().out
    assert main(args) == 0
    assert capsys.readouterr().out == first and first.startswith("To be, or not")


def _bad(args, capsys, fragment):
    code = main(args)
    err = capsys.readouterr().err.strip()
    assert code == 2
    assert err.startswith("error: ") and "\n" not in err and fragment in err, err


def test_bad_inputs_exit_2_with_one_line(trained_run, tmp_path, capsys):
    before = _tree_digest(trained_run)
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "a.txt").write_text("")
    truncated = tmp_path / "truncated"
    truncated.mkdir()
    for f in (trained_run / "checkpoints" / "best").iterdir():
        (truncated / f.name).write_bytes(f.read_bytes())
    weights = truncated / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])

    train = ["train", "--config", TINY]
    _bad([*train, "--data", str(tmp_path / "missing"), "--out", str(tmp_path / "r1")], capsys, "not found")
    _bad([*train, "--data", str(empty), "--out", str(tmp_path / "r2")], capsys, "empty")
    _bad([*train, "--set", "model.n_layerz=3", "--out", str(tmp_path / "r3")], capsys, "model.n_layerz")
    _bad([*train, "--out", str(trained_run)], capsys, "already holds")
    _bad(["train", "--resume", str(trained_run), "--set", "train.lr=1"], capsys, "--set")
    _bad(["train", "--resume", str(trained_run), "--seed", "0"], capsys, "--seed")
    _bad(["eval", str(trained_run / "checkpoints" / "best"), "--batches", "0"], capsys, "--batches")
    _bad(["eval", str(truncated)], capsys, "is damaged: model.safetensors")
    without_hashes(truncated)  # then safetensors itself finds the truncation
    _bad(["eval", str(truncated)], capsys, "unreadable")
    _bad(["eval", str(tmp_path / "nowhere")], capsys, "not found")
    _bad(["generate", str(trained_run / "checkpoints" / "best"), "--prompt", "word " * 200], capsys,
         "longer than the model's context")
    _bad(["train", "--max-steps", "ten"], capsys, "invalid int")
    assert _tree_digest(trained_run) == before
    assert not any((tmp_path / name).exists() for name in ("r1", "r2", "r3"))


def test_resume_refuses_a_changed_corpus(tmp_path, small_corpus, capsys):
    out = tmp_path / "run"
    assert main(["train", "--config", TINY, "--data", str(small_corpus), "--out", str(out), "--max-steps", "2",
                 "--quiet", "--set", "model.vocab_size=300", "--set", "model.seq_len=16",
                 "--set", "train.batch_size=2"]) == 0
    before = _tree_digest(out)
    (small_corpus / "doc0.txt").write_text("entirely new words: zebra quokka axolotl " * 50)
    _bad(["train", "--resume", str(out), "--max-steps", "4"], capsys, "has changed")
    assert _tree_digest(out) == before


@pytest.mark.slow  # a fresh interpreter imports torch: seconds
def test_no_traceback_from_the_console_entry_point(tmp_path):
    command = [sys.executable, "-m", "reasonlab", "train", "--set", "train.lr=-1", "--out", str(tmp_path / "x")]
    proc = subprocess.run(command, capture_output=True, text=True)
    assert proc.returncode == 2
    assert proc.stderr.strip() == "error: train.lr: must be > 0, got -1.0"


def test_a_single_text_file_is_a_corpus(tmp_path, capsys):
    """As nanoGPT's input.txt: one file, cut into chunks by the rule the run's config records."""
    book = tmp_path / "book.txt"
    book.write_text("".join(f"Scene {i}. The fox speaks of rivers and of {i * 7} lanterns.\n\n" for i in range(1500)))
    out = tmp_path / "run"
    assert main(["train", "--config", TINY, "--data", str(book), "--out", str(out), "--max-steps", "2", "--quiet",
                 "--set", "train.eval_every=2", "--set", "train.eval_batches=1"]) == 0
    config = (out / "config.yaml").read_text()
    assert "chunk_chars: 4000" in config and f"source: {book}" in config
    assert main(["train", "--config", TINY, "--data", str(book), "--out", str(tmp_path / "no"),
                 "--set", "data.chunk_chars=0"]) == 2
    assert "set data.chunk_chars to cut one text into chunks" in capsys.readouterr().err


def test_reasonlab_alone_lists_the_commands_and_version_names_the_release(capsys):
    import reasonlab

    assert main([]) == 0
    out = capsys.readouterr().out
    assert out.startswith("usage: reasonlab") and all(f"    {c} " in out for c in ("train", "compare", "bench"))
    with pytest.raises(SystemExit) as done:
        main(["--version"])
    assert done.value.code == 0 and capsys.readouterr().out.strip() == f"reasonlab {reasonlab.__version__}"
