"""A run continued from another run's checkpoint: the cooldown branches of a warmup-stable-decay study.

Under `train.schedule: wsd` a run's learning rate up to its cooldown does not depend on its
length, so a run to S steps passes, at step k, exactly where a run of n steps whose cooldown
starts at k would be (same weights, optimizer state, data position and random state; the
checkpoint holds them all). A branch copies that checkpoint into a run of its own with
max_steps n and resumes it: the n-step run, without training its first k steps again.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
from pathlib import Path

from reasonlab.errors import UserError
from reasonlab.io import atomic_write_text
from reasonlab.training.checkpoint import read_config
from reasonlab.training.runlog import truncate_metrics
from reasonlab.training.trainer import resume


def _link_or_copy(src: str, dst: str) -> None:
    """Checkpoint files are never rewritten in place (a new checkpoint replaces the folder), so a
    branch may share them with its trunk; a copy where links cannot cross file systems."""
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)


def branch(trunk: str | Path, step: int, out: str | Path, max_steps: int, quiet: bool = True) -> Path:
    """Train `out` as `trunk` continued from its checkpoint `step_<step>` to `max_steps`; a branch
    made earlier (killed or finished) is resumed where it stands."""
    trunk, out = Path(trunk), Path(out)
    if not (out / "config.yaml").is_file():
        source = trunk / "checkpoints" / f"step_{step}"
        if not (source / "state.json").is_file():
            raise UserError(f"{trunk} has no checkpoint at step {step} to branch from")
        if max_steps <= step:
            raise UserError(f"a branch from step {step} must run past it, got max_steps {max_steps}")
        cfg = read_config(trunk)
        cfg = dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, max_steps=max_steps))
        tmp = out.parent / f".{out.name}.tmp"
        if tmp.exists():
            shutil.rmtree(tmp)
        (tmp / "checkpoints").mkdir(parents=True)
        shutil.copytree(source, tmp / "checkpoints" / source.name, copy_function=_link_or_copy)
        if (trunk / "metrics.jsonl").is_file():
            shutil.copyfile(trunk / "metrics.jsonl", tmp / "metrics.jsonl")
            truncate_metrics(tmp / "metrics.jsonl", step)
        atomic_write_text(tmp / "config.yaml", cfg.to_yaml())
        if out.exists():  # an empty folder left by a kill before the rename
            out.rmdir()
        os.replace(tmp, out)
    return resume(out, quiet=quiet)
