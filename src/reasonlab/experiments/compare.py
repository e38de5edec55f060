"""`reasonlab compare`: two or more arms, several seeds each, judged at equal steps, FLOPs and wall time.

`--match` sets the budgets every arm trains to, each with its own full LR schedule:
- steps: every arm runs `steps` steps;
- flops: every arm spends what the costliest arm spends in `steps` steps (cheaper arms run more);
- time: every arm gets the time the slowest arm needs for `steps` steps, in step times measured
  by one interleaved calibration (the arms alternating in one process), never by the runs' wall clocks.
The verdict at the matched budget is the comparison's one decision. The other two budgets are
read off the validation curves where every run reached them, usually mid-schedule for one arm
(which favours it: its learning rate has not decayed yet), so they are descriptive and the
report says at which step of how many each arm was read.

Arms are judged on val loss, or on exact match for reasoning tasks. The first arm is the reference
and every other arm is judged against it in a head to head (two arms: one head to head, A against
B), each pair read where both of its arms reached; with more than two arms the p-values are
Holm-corrected across the comparisons on each axis (`judge.judge`).

Seeds: A runs k seeds from `seed_offset` on, B the next k, C the next, and so on: independent
samples, as Welch's interval assumes; with `paired` every arm runs A's seeds and the interval is
of the per-seed differences. A `DIR:best` arm's seeds start past every seed its ablation ran, so
the best is not judged on the seeds it was selected on.

An arm is a YAML config, a preset name, `DIR:best`, or `control:params:SPEC` /
`control:flops:SPEC` / `control:depth:SPEC`: the baseline control of the recursive arm SPEC with
its parameters, its forward FLOPs per token, or its training FLOPs per step; or
`control:outer:SPEC`: SPEC's outer loop around the stack run once per segment
(`reasonlab.model.control_config`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from reasonlab.experiments.aggregate import aggregate_arms
from reasonlab.experiments.arms import make_arms
from reasonlab.experiments.budgets import check_budget, plan_arms
from reasonlab.experiments.judge import judge
from reasonlab.experiments.results import Comparison
from reasonlab.experiments.runs import Progress, train_arms
from reasonlab.io import atomic_write_json
from reasonlab.report.comparison import write_comparison_report

RESULTS = "comparison.json"


def write_results(result: Comparison, out: Path) -> None:
    """comparison.json, then the plots and FINAL_RESULTS.md, which are built from it alone."""
    atomic_write_json(out / RESULTS, result.to_dict())
    write_comparison_report(result, out)


def run_comparison(a: str, b: str, steps: int, seeds: int, match: str, out: str | Path,
                   progress: Progress = print, overrides: dict[str, Any] | None = None,
                   metric: str = "loss", seed_offset: int = 0, paired: bool = False) -> Comparison:
    """A against B: `compare_arms` of two arms."""
    return compare_arms([a, b], steps, seeds, match, out, progress, overrides, metric, seed_offset, paired)


def compare_arms(specs: list[str], steps: int, seeds: int, match: str, out: str | Path,
                 progress: Progress = print, overrides: dict[str, Any] | None = None,
                 metric: str = "loss", seed_offset: int = 0, paired: bool = False, workers: int = 1,
                 storage: str | None = None) -> Comparison:
    """Train every arm over seeds and write comparison.json, comparison.png, comparison_compute.png and
    FINAL_RESULTS.md; the first arm is the reference (`judge.judge`).

    `overrides` (dotted keys) apply to every arm; `metric` is what the verdicts judge; `seed_offset`
    shifts every seed (a repeat with fresh seeds); `paired` runs every arm on A's seeds; `workers`
    local processes and the machines sharing `storage` train the runs (`runs.train_arms`).
    """
    check_budget(steps, seeds, match, seed_offset)
    out = Path(out)
    arms = plan_arms(make_arms(specs, overrides), steps, seeds, match, out, progress, seed_offset, paired)
    runs = train_arms(arms, out, progress, workers, storage)
    result = judge(aggregate_arms(arms, runs, metric), steps, match, metric, paired)
    write_results(result, out)
    return result
