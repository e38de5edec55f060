"""Where a training step's time goes: torch.profiler over a few steps, top ops by self time.

    python benchmarks/profile_step.py --config cpu-bench [--set train.precision=bf16] [--steps 5]
"""

from __future__ import annotations

import argparse

from torch.profiler import ProfilerActivity, profile

from reasonlab.config import parse_override, resolve_config
from reasonlab.runtime import keep_freed_memory
from reasonlab.training.data import prepare_data
from reasonlab.training.engine import Engine


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="cpu-bench")
    parser.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE")
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--rows", type=int, default=25)
    args = parser.parse_args()
    keep_freed_memory()  # as the reasonlab command does
    cfg = resolve_config(args.config, dict(parse_override(s) for s in args.set))
    data = prepare_data(cfg)
    engine = Engine(data.adjust_config(cfg), data)
    for step in range(3):
        engine.train_step(step)
    cuda = engine.device.type == "cuda"
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if cuda else [])
    with profile(activities=activities) as prof:
        for step in range(3, 3 + args.steps):
            out, _ = engine.train_step(step)
            out.loss.item()
    sort = "self_cuda_time_total" if cuda else "self_cpu_time_total"
    print(prof.key_averages().table(sort_by=sort, row_limit=args.rows, max_name_column_width=60))


if __name__ == "__main__":
    main()
