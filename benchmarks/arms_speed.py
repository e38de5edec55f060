"""Each recursive arm's step time against the baseline's, next to its FLOP ratio: `reasonlab bench`
in a fresh process per measurement, baseline and arms taking turns.

    python benchmarks/arms_speed.py [--config cpu-bench] [--rounds 2] [--steps 3] [--arms hrm,trm]

An arm is as fast as its FLOPs allow when (arm step time / baseline step time) is no more than
its (arm FLOPs / baseline FLOPs); the last column is the first over the second, 1.00 = the
recursion's bookkeeping costs nothing beyond its FLOPs. Every round runs the baseline, then each
arm, each in its own `reasonlab bench` process (so no arm inherits another's allocator or
thread-pool state), and an arm's time ratio is the median over rounds of its step time over the
same round's baseline step time: machine drift touches both alike. Step times are the bench's
medians, FLOP ratios those of its FLOPs per step (their median over the timed steps).
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys

import torch

from reasonlab.runtime import cpu_has_native_bf16

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
    # diagnostics: the same arms with and without passes that run without gradient
    "trm T1 (all grad)": {"model.arch": "trm", "trm.latent_steps": 2, "trm.recursions": 1},
    "looped 4 (2 free)": {"model.arch": "looped", "looped.depth": 4, "looped.backprop_depth": 2,
                          "recursion.max_segments": 1, "recursion.use_act": False},
}


def bench(config: str, overrides: dict, steps: int) -> dict:
    """One `reasonlab bench --json` in a fresh process."""
    sets = [arg for key, value in overrides.items() for arg in ("--set", f"{key}={json.dumps(value)}")]
    command = [sys.executable, "-m", "reasonlab", "bench", "--json", "--config", config, "--steps", str(steps), *sets]
    return json.loads(subprocess.run(command, check=True, capture_output=True, text=True).stdout)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default="cpu-bench")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--steps", type=int, default=3)
    native_bf16 = torch.cuda.is_available() or cpu_has_native_bf16()
    parser.add_argument("--precisions", default="fp32,bf16" if native_bf16 else "fp32",
                        help="default: fp32, and bf16 where the CPU has bf16 instructions (or on a GPU)")
    parser.add_argument("--arms", default=",".join(ARMS), help="comma-separated names from: " + ", ".join(ARMS))
    args = parser.parse_args()
    arms = args.arms.split(",")
    print(f"{args.config}; one process per measurement, {args.rounds} rounds of baseline then each arm, "
          f"{args.steps} timed steps each")
    print(f"{'arm':22} {'precision':9} {'step ms':>9} {'base ms':>9} {'time ratio':>10} {'FLOP ratio':>10} "
          f"{'time/FLOP ratio':>15}")
    for precision in args.precisions.split(","):
        runs: dict[str, list[dict]] = {name: [] for name in ("baseline", *arms)}
        for _ in range(args.rounds):
            runs["baseline"].append(bench(args.config, {"train.precision": precision}, args.steps))
            for arm in arms:
                runs[arm].append(bench(args.config, {"train.precision": precision, **ARMS[arm]}, args.steps))
        base_ms = [r["step_ms"]["median"] for r in runs["baseline"]]
        for arm in arms:
            arm_ms = [r["step_ms"]["median"] for r in runs[arm]]
            time_ratio = statistics.median(a / b for a, b in zip(arm_ms, base_ms))
            flop_ratio = (statistics.mean(r["flops_per_step"] for r in runs[arm])
                          / statistics.mean(r["flops_per_step"] for r in runs["baseline"]))
            print(f"{arm:22} {precision:9} {statistics.median(arm_ms):9.1f} {statistics.median(base_ms):9.1f} "
                  f"{time_ratio:10.2f} {flop_ratio:10.2f} {time_ratio / flop_ratio:15.2f}", flush=True)


if __name__ == "__main__":
    main()
