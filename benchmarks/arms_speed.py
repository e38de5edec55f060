"""Each recursive arm's step time against the baseline's, next to its FLOP ratio, in one process.

    python benchmarks/arms_speed.py [--config cpu-bench] [--rounds 3] [--steps 3]

An arm is as fast as its FLOPs allow when (arm step time / baseline step time) is no more than
its (arm FLOPs / baseline FLOPs). The last column is the arm's median seconds per FLOP over the
baseline's (per step, so a drawn depth's steps compare fairly): 1.00 = the recursion's bookkeeping
costs nothing beyond its FLOPs. Baseline and arm alternate round by round (`--rounds` rounds of
`--steps` timed steps each, after one untimed warm-up step per round), so machine drift touches
both alike; step times are medians, FLOP ratios means.
"""

from __future__ import annotations

import argparse
import statistics

import torch

from reasonlab.config import resolve_config
from reasonlab.runtime import keep_freed_memory
from reasonlab.training.data import prepare_data
from reasonlab.training.engine import Engine

ARMS = {
    "hrm": {"model.arch": "hrm", "hrm.H_cycles": 1, "hrm.L_cycles": 1},
    "trm": {"model.arch": "trm", "trm.latent_steps": 2, "trm.recursions": 2},
    "trm carry": {"model.arch": "trm", "trm.latent_steps": 2, "trm.recursions": 2,
                  "recursion.carry_across_steps": True},
    "looped": {"model.arch": "looped", "looped.depth": 4, "recursion.max_segments": 1, "recursion.use_act": False},
    "looped ACT": {"model.arch": "looped", "looped.depth": 4, "looped.act": True, "recursion.max_segments": 1,
                   "recursion.use_act": False},
    "looped random depth": {"model.arch": "looped", "looped.mean_depth": 4, "looped.backprop_depth": 2,
                            "recursion.max_segments": 1, "recursion.use_act": False},
}


def engine(config: str, overrides: dict) -> Engine:
    cfg = resolve_config(config, overrides)
    data = prepare_data(cfg)
    return Engine(data.adjust_config(cfg), data)


def measure(engines: dict[str, Engine], rounds: int, steps: int) -> dict[str, list[tuple[float, int]]]:
    """(seconds, FLOPs) of every timed step, the engines taking turns round by round."""
    out: dict[str, list[tuple[float, int]]] = {name: [] for name in engines}
    for _ in range(rounds):
        for name, e in engines.items():
            out[name] += list(zip(*e.timed_steps(steps, 1)))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default="cpu-bench")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--arms", default=",".join(ARMS), help="comma-separated names from: " + ", ".join(ARMS))
    args = parser.parse_args()
    keep_freed_memory()  # as the reasonlab command does
    print(f"{args.config}, {torch.get_num_threads()} threads; medians over {args.rounds} x {args.steps} steps")
    print(f"{'arm':22} {'precision':9} {'step ms':>9} {'base ms':>9} {'time ratio':>10} {'FLOP ratio':>10} "
          f"{'time/FLOP ratio':>15}")
    for precision in ("fp32", "bf16"):
        for arm in args.arms.split(","):
            torch.manual_seed(0)
            common = {"train.precision": precision}
            engines = {"baseline": engine(args.config, common), arm: engine(args.config, {**common, **ARMS[arm]})}
            runs = measure(engines, args.rounds, args.steps)
            base, other = runs["baseline"], runs[arm]
            time_ratio = statistics.median(t for t, _ in other) / statistics.median(t for t, _ in base)
            flop_ratio = statistics.mean(f for _, f in other) / statistics.mean(f for _, f in base)
            per_flop = statistics.median(t / f for t, f in other) / statistics.median(t / f for t, f in base)
            print(f"{arm:22} {precision:9} {1000 * statistics.median(t for t, _ in other):9.1f} "
                  f"{1000 * statistics.median(t for t, _ in base):9.1f} {time_ratio:10.2f} {flop_ratio:10.2f} "
                  f"{per_flop:15.2f}", flush=True)


if __name__ == "__main__":
    main()
