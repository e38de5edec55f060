"""`reasonlab demo`: the whole study at CPU scale in about ten minutes.

A baseline sweep and a reasoning sweep over subsets of the two suites, then the best config of
each head to head over three seeds at equal FLOPs (the equal-steps and equal-time verdicts come
from the same runs' curves), and the report.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from reasonlab.errors import UserError
from reasonlab.experiments.ablation import run_ablation
from reasonlab.experiments.compare import run_comparison

# The baseline knobs that moved the original's ranking most (learning rate and warmup), and the
# three cheapest recursion shapes (one or two cycles), so the sweeps fit the time budget.
BASELINE_SUBSET = ["1_baseline", "3_low_lr", "4_high_lr", "6_no_warmup"]
REASONING_SUBSET = ["R02_minimal", "R14_asym_H", "R15_asym_L"]
SWEEP_STEPS = 80
COMPARE_STEPS = 150
SEEDS = 3


def run_demo(
    out: str | Path = "runs/demo",
    base: str = "cpu-demo",
    progress: Callable[[str], None] = print,
) -> dict[str, Any]:
    out = Path(out)
    sweeps = {}
    for suite, subset in (("baseline", BASELINE_SUBSET), ("reasoning", REASONING_SUBSET)):
        progress(f"== {suite} sweep: {', '.join(subset)} at {SWEEP_STEPS} steps ==")
        sweeps[suite] = run_ablation(suite, SWEEP_STEPS, 1, out / f"{suite}_sweep", base=base, only=subset,
                                     progress=progress)
    for suite, results in sweeps.items():
        if "best" not in results:
            raise UserError(f"no config of the {suite} sweep finished all its seeds; see {out / f'{suite}_sweep'}")
    progress(f"== head to head: {sweeps['baseline']['best']} vs {sweeps['reasoning']['best']}, "
             f"{SEEDS} seeds, equal FLOPs ==")
    return run_comparison(f"{out / 'baseline_sweep'}:best", f"{out / 'reasoning_sweep'}:best", COMPARE_STEPS, SEEDS,
                          "flops", out / "comparison", progress)
