"""Shared fixtures: one token cache for the whole session, tiny configs, a small local corpus."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from reasonlab.config import Config, resolve_config
from reasonlab.experiments.results import ComparisonArm, SeedRun

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
    """cpu-tiny with dotted-key overrides, and without curves.png unless asked: drawing it is half of
    a tiny run's time (tests of the run directory ask for it)."""
    return resolve_config(CONFIGS / "cpu-tiny.yaml", {"train.curves": False, **overrides})


def judged_arm(histories: list[list[dict[str, float]]], summaries: list[dict] | None = None, name: str = "x",
               step_s: float = 0.1, calibration_s: list[float] | None = None, config: dict | None = None,
               **fields) -> ComparisonArm:
    """An arm as `aggregate.aggregate_arms` hands it to the judge, from made-up eval histories (and
    summaries): one seed per history, trained to its last evaluation."""
    summaries = summaries or [{}] * len(histories)
    per_seed = {str(i): SeedRun(run_dir="", train_history=[], val_history=h, summary=summaries[i])
                for i, h in enumerate(histories)}
    fields = {"max_steps": histories[0][-1]["step"] if histories else 10, "seeds": list(range(len(histories))),
              **fields}
    return ComparisonArm(name=name, source=name, config=config or tiny_config().to_dict(), step_s=step_s,
                         calibration_s=calibration_s or [step_s] * 4, aggregate={}, train_history=[], val_history=[],
                         per_seed=per_seed, **fields)


@pytest.fixture
def small_corpus(tmp_path: Path) -> Path:
    """A folder of ten short .txt documents: enough for a split and a tiny BPE."""
    folder = tmp_path / "corpus"
    folder.mkdir()
    for i in range(10):
        lines = [f"Line {j} of document {i}: the quick brown fox jumps over the lazy dog {i * j}." for j in range(40)]
        (folder / f"doc{i}.txt").write_text("\n".join(lines))
    return folder


class Mounts:
    """Real faults for the fault tests: a small tmpfs that fills, a folder or file remounted
    read-only. Mounting needs root (CI runs as root); where it is refused the test is skipped and
    says why. Everything mounted is unmounted when the test ends."""

    def __init__(self) -> None:
        self.points: list[Path] = []

    def _mount(self, *args: str) -> None:
        done = subprocess.run(["mount", *args], capture_output=True, text=True)
        if done.returncode:
            pytest.skip(f"a real fault needs `mount` (root): mount {' '.join(args)} failed: {done.stderr.strip()}")

    def small_disk(self, path: Path, size: str = "16m") -> Path:
        """A real tmpfs of `size` at `path`."""
        path.mkdir(parents=True, exist_ok=True)
        self._mount("-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path))
        self.points.append(path)
        return path

    def read_only(self, path: Path) -> Path:
        """`path` (a folder or a file) remounted read-only onto itself: writes fail with EROFS, for root too."""
        self._mount("--bind", str(path), str(path))
        self.points.append(path)
        self._mount("-o", "remount,bind,ro", str(path))
        return path

    def unmount_all(self) -> None:
        for point in reversed(self.points):
            subprocess.run(["umount", "-l", str(point)], capture_output=True)
        self.points.clear()


@pytest.fixture
def mounts():
    made = Mounts()
    yield made
    made.unmount_all()


def fill_disk(disk: Path, leave: int = 0) -> None:
    """Write one file on `disk` until at most `leave` bytes stay free (a full disk for leave=0)."""
    chunk = b"\0" * (1 << 16)
    with (disk / "filler").open("ab", buffering=0) as fh:
        while (free := shutil.disk_usage(disk).free - leave) > 0:
            try:
                fh.write(chunk[:free])
            except OSError:  # full before the estimate: as full as it gets
                return
