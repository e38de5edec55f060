"""Shared fixtures: one token cache for the whole session, tiny configs, a small local corpus."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from reasonlab.config import Config, resolve_config

CONFIGS = Path(__file__).resolve().parents[1] / "configs"


@pytest.fixture(scope="session", autouse=True)
def token_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Tokenizers and token streams are built once per session, never in the user's cache."""
    path = tmp_path_factory.mktemp("cache")
    os.environ["REASONLAB_CACHE"] = str(path)
    return path


def without_hashes(checkpoint: Path) -> None:
    """Make a checkpoint as one written before file hashes were recorded in its state.json."""
    state = json.loads((checkpoint / "state.json").read_text())
    del state["files"]
    (checkpoint / "state.json").write_text(json.dumps(state))


def tiny_config(**overrides) -> Config:
    """cpu-tiny with dotted-key overrides (`train__max_steps=10` style keys are spelled with dots here)."""
    return resolve_config(CONFIGS / "cpu-tiny.yaml", overrides)


@pytest.fixture
def small_corpus(tmp_path: Path) -> Path:
    """A folder of ten short .txt documents: enough for a split and a tiny BPE."""
    folder = tmp_path / "corpus"
    folder.mkdir()
    for i in range(10):
        lines = [f"Line {j} of document {i}: the quick brown fox jumps over the lazy dog {i * j}." for j in range(40)]
        (folder / f"doc{i}.txt").write_text("\n".join(lines))
    return folder
