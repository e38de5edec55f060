"""How often an ablation of identical configs calls one of them worse than the best: the winner's curse.

    python benchmarks/ablation_multiplicity.py [--ablations 2000] [--configs 15] [--seeds 3]

Simulates ablations whose configs are all the same (final val losses drawn from one normal
distribution), ranks them and tests each against the best with the code real ablations use
(`rank` and `against_best`), and prints the family-wise rate of "some config significantly
worse than the best": before (each Welch test on its own, the old verdict) and after (Holm).
Every such verdict is false here; the intervals are 95% Clopper-Pearson intervals of the rate.
"""

from __future__ import annotations

import argparse
import random
import time

from scipy.stats import binomtest

from reasonlab.experiments.ablation import against_best, rank
from reasonlab.experiments.stats import CI_LEVEL


def identical_configs(rng: random.Random, configs: int, seeds: int) -> dict[str, list[float]]:
    """Final val losses of configs that differ only by seed noise."""
    return {f"c{i:02d}": [rng.gauss(4.0, 0.05) for _ in range(seeds)] for i in range(configs)}


def false_alarms(losses: dict[str, list[float]]) -> tuple[bool, bool]:
    """Whether some config is called worse than the best: by its raw Welch test, and after Holm."""
    vs_best = against_best(losses, rank(losses)).values()
    raw = any(d["p"] is not None and d["p"] < 1 - CI_LEVEL for d in vs_best)
    return raw, any(d["significant"] for d in vs_best)


def rate(hits: int, n: int) -> str:
    ci = binomtest(hits, n).proportion_ci(CI_LEVEL)
    return f"{hits / n:6.1%}  [{ci.low:.1%}, {ci.high:.1%}]  ({hits} of {n})"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ablations", type=int, default=2000)
    parser.add_argument("--configs", type=int, default=15)
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--rng-seed", type=int, default=0)
    args = parser.parse_args()
    rng = random.Random(args.rng_seed)
    tic = time.perf_counter()
    outcomes = [false_alarms(identical_configs(rng, args.configs, args.seeds)) for _ in range(args.ablations)]
    print(f"{args.ablations} simulated ablations of {args.configs} identical configs x {args.seeds} seeds "
          f"({time.perf_counter() - tic:.1f} s); share calling some config worse than the best, "
          f"{CI_LEVEL:.0%} interval:")
    print(f"  before (uncorrected Welch): {rate(sum(raw for raw, _ in outcomes), args.ablations)}")
    print(f"  after (Holm):               {rate(sum(holm for _, holm in outcomes), args.ablations)}")


if __name__ == "__main__":
    main()
