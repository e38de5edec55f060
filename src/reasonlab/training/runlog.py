"""What a run tells the world: metrics.jsonl (one JSON event per line, flushed), train.log, the console."""

from __future__ import annotations

import contextlib
import json
import sys
import time
from pathlib import Path
from typing import Any, TextIO

from tqdm import tqdm

from reasonlab.errors import WriteFailed
from reasonlab.io import atomic_write_text, writing
from reasonlab.training.trackers import Trackers


def read_metrics(path: str | Path) -> list[dict[str, Any]]:
    """Every event of a metrics.jsonl; a torn last line (a kill mid-write) is ignored."""
    path = Path(path)
    if not path.exists():
        return []
    events = []
    lines = [line for line in path.read_text().splitlines() if line.strip()]
    for i, line in enumerate(lines):
        try:
            events.append(json.loads(line))
        except json.JSONDecodeError:
            if i != len(lines) - 1:
                raise
    return events


def run_result(run_dir: str | Path) -> dict[str, Any]:
    """A finished (or stopped) run as reports need it: its summary, if written, and its curves."""
    run_dir = Path(run_dir)
    events = read_metrics(run_dir / "metrics.jsonl")
    keep = ("step", "loss", "perplexity", "accuracy", "exact_match", "segments", "tokens", "flops", "time_s")
    result: dict[str, Any] = {
        "run_dir": str(run_dir),
        "nan_encountered": any(e["kind"] == "diverged" for e in events),
        "train_history": [{k: e[k] for k in ("step", "loss", "flops", "time_s") if k in e}
                          for e in events if e["kind"] == "train"],
        "val_history": [{k: e[k] for k in keep if k in e} for e in events if e["kind"] == "eval"],
    }
    summary = run_dir / "summary.json"
    if summary.exists():
        result["summary"] = json.loads(summary.read_text())
    return result


def truncate_metrics(path: str | Path, step: int) -> None:
    """Drop events after `step`: a resumed run rewrites them from its checkpoint on."""
    kept = [e for e in read_metrics(path) if e["step"] <= step]
    atomic_write_text(path, "".join(json.dumps(e) + "\n" for e in kept))


def train_line(record: dict[str, Any], max_steps: int) -> str:
    """The console and train.log line of a train record."""
    segments = f" segments {record['segments']:.2f}" if "segments" in record else ""
    return (f"step {record['step']}/{max_steps} loss {record['loss']:.4f} lr {record['lr']:.2e} "
            f"grad_norm {record['grad_norm']:.3f} tok/s {record['tokens_per_s']:,.0f}{segments}")


def eval_line(step: int, val: dict[str, float]) -> str:
    """The console and train.log line of an evaluation."""
    exact = f" exact {val['exact_match']:.2%}" if "exact_match" in val else ""
    return (f"eval step {step}: val loss {val['loss']:.4f} ppl {val['perplexity']:.1f} "
            f"acc {val['accuracy']:.2%}{exact}")


class RunLog:
    """Appends metric events and log lines; a progress bar on a TTY, plain lines otherwise.

    Every write is flushed at once and a failed one (disk full, folder made read-only) raises
    WriteFailed naming the file. A disabled log (every process but the main one under torchrun)
    writes and prints nothing.
    """

    def __init__(self, run_dir: Path, total_steps: int, start_step: int, quiet: bool = False, enabled: bool = True,
                 trackers: Trackers | None = None):
        self.enabled = enabled
        if not enabled:
            return
        self.trackers = trackers
        self.metrics_path, self.log_path = run_dir / "metrics.jsonl", run_dir / "train.log"
        with writing(self.metrics_path):
            self.metrics = self.metrics_path.open("a")
        try:
            with writing(self.log_path):
                self.log_file = self.log_path.open("a")
        except WriteFailed:
            self.metrics.close()
            raise
        interactive = sys.stderr.isatty() and not quiet
        self.quiet = quiet
        self.bar = tqdm(total=total_steps, initial=start_step, dynamic_ncols=True, disable=not interactive, unit="step")

    def event(self, record: dict[str, Any]) -> None:
        """Every train/eval/diverged record of the run passes here, to metrics.jsonl and the trackers."""
        if not self.enabled:
            return
        _append(self.metrics, self.metrics_path, json.dumps(record) + "\n")
        if self.trackers is not None:
            self.trackers.log(record)

    def info(self, message: str) -> None:
        if not self.enabled:
            return
        _append(self.log_file, self.log_path, f"{time.strftime('%Y-%m-%d %H:%M:%S')} {message}\n")
        if self.quiet:
            return
        if self.bar.disable:
            print(message, file=sys.stderr, flush=True)
        else:
            self.bar.write(message, file=sys.stderr)

    def progress(self, steps: int, **postfix: Any) -> None:
        if not self.enabled:
            return
        self.bar.update(steps)
        if postfix:
            self.bar.set_postfix(postfix, refresh=False)

    def close(self, ok: bool = True) -> None:
        """`ok`: whether the run finished (a tracker marks a stopped run as killed or failed)."""
        if not self.enabled:
            return
        try:
            if self.trackers is not None:
                self.trackers.close(ok)
        finally:
            self.bar.close()
            for file in (self.metrics, self.log_file):
                with contextlib.suppress(OSError):  # a failed write already raised; its buffer is lost
                    file.close()


def _append(file: TextIO, path: Path, text: str) -> None:
    with writing(path):
        file.write(text)
        file.flush()
