"""Generation speed with and without the KV cache, per arm: tokens/s for N new tokens, greedy.

    python benchmarks/generate.py [--config cpu-small] [--context N] [--new-tokens 256] [--rounds 3] [--arms A,B]

Untrained weights of the preset's size (speed does not depend on what was learned); a 16-token
prompt. Each round times every arm without, then with, the cache, so machine drift touches both
alike; the table gives the median over rounds. Without the cache, every new token recomputes the
whole text (up to the context); with it, one token runs against the kept keys and values of every
attention call (per pass and segment in the recursive arms); past the context the cache starts
again from the last half context (model/generate.py). The last column checks the cached tokens
against the uncached ones over the first context's worth of text, where the two must agree.
`--context` sets model.seq_len: the longer the context, the more text the uncached path recomputes
for every token, while a cached step's cost barely grows.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from reasonlab.config import resolve_config
from reasonlab.model import build_model
from reasonlab.model.generate import sample

ARMS = {
    "baseline": {},
    "hrm": {"model.arch": "hrm", "hrm.H_cycles": 1, "hrm.L_cycles": 1},
    "trm": {"model.arch": "trm", "trm.latent_steps": 2, "trm.recursions": 2},
    "looped": {"model.arch": "looped", "looped.depth": 4, "recursion.max_segments": 1, "recursion.use_act": False},
}


def timed(model: torch.nn.Module, prompt: torch.Tensor, new: int, context: int,
          cache: bool) -> tuple[float, torch.Tensor]:
    tic = time.perf_counter()
    out, _ = sample(model, prompt, new, context, temperature=0, use_cache=cache)
    return time.perf_counter() - tic, out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="cpu-small")
    parser.add_argument("--context", type=int, default=0, help="model.seq_len (0: the preset's)")
    parser.add_argument("--new-tokens", type=int, default=256)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--arms", default=",".join(ARMS))
    args = parser.parse_args()
    arms = args.arms.split(",")
    models = {}
    for arm in arms:
        torch.manual_seed(0)
        cfg = resolve_config(args.config, {**ARMS[arm], **({"model.seq_len": args.context} if args.context else {})})
        models[arm] = (build_model(cfg).eval(), cfg.model.seq_len)
    prompt = torch.randint(0, 256, (1, 16), generator=torch.Generator().manual_seed(0))
    times: dict[str, dict[bool, list[float]]] = {arm: {False: [], True: []} for arm in arms}
    agree = {}
    for _ in range(args.rounds):
        for arm, (model, context) in models.items():
            outs = {}
            for cache in (False, True):
                seconds, outs[cache] = timed(model, prompt, args.new_tokens, context, cache)
                times[arm][cache].append(seconds)
            agree[arm] = torch.equal(outs[False][:, :context], outs[True][:, :context])
    context = next(iter(models.values()))[1]
    print(f"{args.config}, context {context}, {args.new_tokens} new tokens after a 16-token prompt, greedy, "
          f"median of {args.rounds} rounds, {torch.get_num_threads()} threads")
    print("| arm | uncached tok/s | cached tok/s | speed-up | same tokens within the context |")
    print("|---|---|---|---|---|")
    for arm in arms:
        plain, cached = (statistics.median(times[arm][c]) for c in (False, True))
        print(f"| {arm} | {args.new_tokens / plain:,.0f} | {args.new_tokens / cached:,.0f} | {plain / cached:.1f}x "
              f"| {'yes' if agree[arm] else 'no'} |")


if __name__ == "__main__":
    main()
