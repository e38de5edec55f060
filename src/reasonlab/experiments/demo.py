"""`reasonlab demo`: the whole study at CPU scale in under eight minutes on 2 cores.

A baseline sweep and a reasoning sweep over subsets of the two suites, then the best config of
each head to head over three seeds at equal FLOPs, and the report. The head to head spends a
fixed number of training FLOPs per run, whichever configs win the sweeps, so the demo's time
does not depend on them. Re-run into the same folder, a killed demo resumes: finished trials
and runs are reused.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from reasonlab.errors import UserError
from reasonlab.experiments.ablation import run_ablation
from reasonlab.experiments.arms import pair_arms
from reasonlab.experiments.budgets import arm_step_flops
from reasonlab.experiments.compare import run_comparison
from reasonlab.experiments.suites import load_suite
from reasonlab.model import config_step_flops
from reasonlab.training.data import prepare_data

# The baseline knobs that moved the original's ranking most (learning rate and warmup), and the
# three cheapest recursion shapes (one or two cycles), so the sweeps fit the time budget.
BASELINE_SUBSET = ["1_baseline", "3_low_lr", "4_high_lr", "6_no_warmup"]
REASONING_SUBSET = ["R02_minimal", "R14_asym_H", "R15_asym_L"]
SWEEP_STEPS = 80
COMPARE_FLOPS = 2.0e12  # training FLOPs of each head-to-head run: about 100 steps of R02_minimal at cpu-demo
SEEDS = 3


class Countdown:
    """Prefixes progress lines with the time spent and an estimate of the time left: the training
    FLOPs still planned, at the rate this session's finished runs went (each run's summary.json
    holds its FLOPs)."""

    def __init__(self, out: Path, total_flops: float, progress: Callable[[str], None]):
        self.out, self.total, self.progress = out, total_flops, progress
        self.start = time.perf_counter()
        self.done_before = self._done()

    def _done(self) -> float:
        return sum(json.loads(path.read_text())["flops"] for path in self.out.glob("*/*/*/summary.json"))

    def __call__(self, line: str) -> None:
        elapsed = time.perf_counter() - self.start
        done = self._done()
        rate = (done - self.done_before) / elapsed if elapsed > 0 else 0.0
        left = f", ~{_clock((self.total - done) / rate)} left" if rate > 0 and done < self.total else ""
        self.progress(f"[{_clock(elapsed)}{left}] {line}")


def _clock(seconds: float) -> str:
    return f"{int(seconds // 60)}:{int(seconds % 60):02d}"


def sweep_flops(suite: str, subset: list[str], base: str) -> float:
    """Training FLOPs of one seed of every config of a sweep."""
    configs = load_suite(suite, base, {"train.max_steps": SWEEP_STEPS}, subset).configs.values()
    return sum(SWEEP_STEPS * config_step_flops(prepare_data(cfg).adjust_config(cfg)) for cfg in configs)


def run_demo(
    out: str | Path = "runs/demo",
    base: str = "cpu-demo",
    progress: Callable[[str], None] = print,
) -> dict[str, Any]:
    out = Path(out)
    subsets = {"baseline": BASELINE_SUBSET, "reasoning": REASONING_SUBSET}
    total = sum(sweep_flops(suite, subset, base) for suite, subset in subsets.items()) + 2 * SEEDS * COMPARE_FLOPS
    countdown = Countdown(out, total, progress)
    sweeps = {}
    for suite, subset in subsets.items():
        countdown(f"== {suite} sweep: {', '.join(subset)} at {SWEEP_STEPS} steps ==")
        sweeps[suite] = run_ablation(suite, SWEEP_STEPS, 1, out / f"{suite}_sweep", base=base, only=subset,
                                     progress=countdown)
    for suite, results in sweeps.items():
        if "best" not in results:
            raise UserError(f"no config of the {suite} sweep finished all its seeds; see {out / f'{suite}_sweep'}")
    specs = [f"{out / f'{suite}_sweep'}:best" for suite in subsets]
    steps = max(1, round(COMPARE_FLOPS / max(arm_step_flops(arm) for arm in pair_arms(*specs).values())))
    countdown(f"== head to head: {sweeps['baseline']['best']} vs {sweeps['reasoning']['best']}, {SEEDS} seeds, "
              f"equal FLOPs ({COMPARE_FLOPS:.1e} a run) ==")
    return run_comparison(*specs, steps, SEEDS, "flops", out / "comparison", countdown)
