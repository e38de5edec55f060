"""A task's three splits, drawn from the dataset seed: each instance from its own seed, in worker
processes where drawing is slow, and cached on disk by what decides them.

- test first, then val, then train, each excluding the instances drawn before it (by key, a hash
  of the prompt), so no instance is in two splits;
- instance i of a split is drawn from a generator seeded by (seed, split, i) (`task.generator` 2),
  so the splits are the same at any number of workers; generator 1 is the single stream per
  split that reasonlab drew from before, kept so that runs made then see the same instances;
- the cache is keyed by every task setting that decides the instances (`cache_key`): a second run
  of the same task reads its splits back; a file lock lets one process generate while the others
  (DDP ranks, parallel trials) wait for it.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import os
import random
import time
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ProcessPoolExecutor
from multiprocessing import get_context
from pathlib import Path

from filelock import FileLock

from reasonlab.config import TaskConfig
from reasonlab.errors import UserError, WriteFailed
from reasonlab.io import atomic_write_text
from reasonlab.tasks.base import Example, Task
from reasonlab.tasks.published import published_splits
from reasonlab.tasks.registry import get_task

SPLITS = ("train", "val", "test")
SERIAL_SECONDS = 2.0  # drawing that takes longer than this moves to worker processes
CHUNK = 8  # instances per worker job
GENERATION_FIELDS = ("name", "size", "reverse", "min_search", "train_min_level", "train_max_level", "test_min_level",
                     "test_max_level", "train_examples", "eval_examples", "test_examples", "seed", "generator")


def task_from_config(cfg: TaskConfig) -> Task:
    task = get_task(cfg.name, cfg.size, cfg.reverse, cfg.min_search, cfg.generator)
    if cfg.format == "grid" and not task.aligned:
        raise UserError("task.format: grid needs one answer token per prompt token, "
                        f"which {cfg.name} does not have; use seq")
    return task


def levels(task: Task, cfg: TaskConfig) -> dict[str, tuple[int, int]]:
    """The inclusive level ranges of train/val and test, the task's defaults where unset."""
    (train_lo, train_hi), (test_lo, test_hi) = task.default_levels()
    ranges = {
        "train": (cfg.train_min_level or train_lo, cfg.train_max_level or train_hi),
        "test": (cfg.test_min_level or test_lo, cfg.test_max_level or test_hi),
    }
    low, high = task.level_bounds()
    for split, (lo, hi) in ranges.items():
        if not low <= lo <= hi <= high:
            raise UserError(f"task.{split}_min_level/{split}_max_level: {task.name} needs "
                            f"{low} <= min <= max <= {high}, got {lo}-{hi}")
    return {"train": ranges["train"], "val": ranges["train"], "test": ranges["test"]}


def _tries(count: int) -> int:
    """Draws allowed per split: small instance spaces (2-bit parity) run out, and then the split
    keeps what it has after 20 draws per wanted instance."""
    return 20 * count + 100


def _distinct(examples: Iterable[Example], count: int, exclude: set[str]) -> list[Example]:
    """The first `count` distinct instances of `examples` with no key in `exclude` (fewer where
    `examples` runs out first); no instance is drawn past the last one kept."""
    kept: dict[str, Example] = {}
    for example in examples:
        if example.key not in exclude:
            kept.setdefault(example.key, example)
            if len(kept) == count:
                break
    return list(kept.values())


def draw_stream(task: Task, rng: random.Random, level_range: tuple[int, int], count: int,
                exclude: set[str]) -> list[Example]:
    """Generator 1: up to `count` distinct instances from one stream, none with a key in `exclude`."""
    stream = (task.sample(rng, rng.randint(*level_range)) for _ in range(_tries(count)))
    return _distinct(stream, count, exclude)


def sample_one(task: Task, seed: str, level_range: tuple[int, int], index: int) -> Example:
    """Instance `index` of a split, from its own generator: its level, then the instance."""
    rng = random.Random(f"{seed}:{index}")
    return task.sample(rng, rng.randint(*level_range))


def _sample_chunk(task: Task, seed: str, level_range: tuple[int, int], start: int, stop: int) -> list[Example]:
    return [sample_one(task, seed, level_range, i) for i in range(start, stop)]


class Workers:
    """A pool of `count` processes, started on first use and shared by the splits of one build."""

    def __init__(self, count: int):
        self.count, self._pool = count, None

    def pool(self) -> ProcessPoolExecutor:
        if self._pool is None:
            self._pool = ProcessPoolExecutor(self.count, mp_context=get_context("spawn"))
        return self._pool

    def __enter__(self) -> Workers:
        return self

    def __exit__(self, *exc: object) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)


def draw_instances(task: Task, seed: str, level_range: tuple[int, int], count: int, exclude: set[str],
                   workers: Workers) -> list[Example]:
    """Generator 2: instances 0, 1, 2, ... of the split, each from (seed, index), until `count` are
    distinct and not in `exclude`."""
    return _distinct(_instances(task, seed, level_range, _tries(count), workers), count, exclude)


def _instances(task: Task, seed: str, level_range: tuple[int, int], limit: int,
               workers: Workers) -> Iterator[Example]:
    """Instances 0 .. limit-1 in index order. Drawing starts in this process; once it has taken
    SERIAL_SECONDS, the rest is drawn by the worker processes in chunks, so the instances are
    the ones a single process draws."""
    index, tic = 0, time.perf_counter()
    while index < limit and (workers.count <= 1 or time.perf_counter() - tic < SERIAL_SECONDS):
        yield sample_one(task, seed, level_range, index)
        index += 1
    for chunk in _in_workers(task, seed, level_range, index, limit, workers):
        yield from chunk


def _in_workers(task: Task, seed: str, level_range: tuple[int, int], start: int, limit: int,
                workers: Workers) -> Iterator[list[Example]]:
    """Chunks of instances from `start` on, in index order, with two chunks a worker in flight;
    the chunks not yet started are cancelled when the caller stops."""
    starts = iter(range(start, limit, CHUNK))
    pending: list[Future[list[Example]]] = []

    def submit() -> None:
        first = next(starts, None)
        if first is not None:
            job = workers.pool().submit(_sample_chunk, task, seed, level_range, first, min(first + CHUNK, limit))
            pending.append(job)

    for _ in range(2 * workers.count):
        submit()
    try:
        while pending:
            chunk = pending.pop(0).result()
            submit()
            yield chunk
    finally:
        for job in pending:
            job.cancel()


def default_workers() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def build_splits(task: Task, cfg: TaskConfig, workers: int = 1) -> dict[str, list[Example]]:
    """Test first, then val, then train, each excluding the instances drawn before it."""
    ranges = levels(task, cfg)
    counts = {"test": cfg.test_examples or cfg.eval_examples, "val": cfg.eval_examples, "train": cfg.train_examples}
    splits: dict[str, list[Example]] = {}
    taken: set[str] = set()
    with Workers(workers) as pool:
        for i, split in enumerate(("test", "val", "train")):
            if cfg.generator == 1:
                examples = draw_stream(task, random.Random(cfg.seed * 3 + i), ranges[split], counts[split], taken)
            else:
                examples = draw_instances(task, f"{cfg.seed}:{split}", ranges[split], counts[split], taken, pool)
            if not examples:
                lo, hi = ranges[split]
                raise UserError(f"{task.name} has no {split} instances left at levels {lo}-{hi}; "
                                "widen the level range")
            taken |= {e.key for e in examples}
            splits[split] = examples
    return {split: splits[split] for split in SPLITS}


def cache_key(cfg: TaskConfig) -> str:
    """What decides a generated task's instances (not its format, augmentation or workers)."""
    settings = {name: getattr(cfg, name) for name in GENERATION_FIELDS}
    return hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:16]


def _to_json(splits: dict[str, list[Example]]) -> dict[str, list[list]]:
    return {split: [[list(e.prompt), list(e.answer), e.level, e.difficulty] for e in examples]
            for split, examples in splits.items()}


def _from_json(data: dict[str, list[list]]) -> dict[str, list[Example]]:
    return {split: [Example(tuple(p), tuple(a), level, difficulty) for p, a, level, difficulty in rows]
            for split, rows in data.items()}


def cached(path: Path, build: Callable[[], dict[str, list[Example]]]) -> dict[str, list[Example]]:
    """The splits stored at `path`, or `build()` stored there (under a lock, so one process builds)."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        lock = FileLock(path.with_suffix(".lock"))
    except OSError as exc:
        raise WriteFailed(f"cannot write the task cache {path.parent}: {exc.strerror or exc}") from exc
    with lock:
        if path.is_file():
            return _from_json(json.loads(path.read_text()))
        splits = build()
        atomic_write_text(path, json.dumps(_to_json(splits), separators=(",", ":")))
        return splits


@functools.lru_cache(maxsize=4)
def _splits(settings: tuple[tuple[str, object], ...], cache_dir: str) -> dict[str, list[Example]]:
    cfg = TaskConfig(**dict(settings))
    if cfg.source:
        return published_splits(cfg.name, cfg.source, cfg.train_examples, cfg.eval_examples, cfg.seed,
                                cfg.test_examples)
    task = task_from_config(cfg)
    levels(task, cfg)  # a level range out of bounds is refused before the cache is touched
    path = Path(cache_dir) / "tasks" / f"{cfg.name}-{cache_key(cfg)}.json"
    return cached(path, lambda: build_splits(task, cfg, default_workers()))


def draw_splits(cfg: TaskConfig, cache_dir: Path) -> dict[str, list[Example]]:
    """The task's splits, drawn once per process and once per cache: every run of a study trains
    on the same splits, and hard sudokus take a while to generate."""
    return _splits(tuple(vars(dataclasses.replace(cfg, format="seq", augment=False)).items()), str(cache_dir))
