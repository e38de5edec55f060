"""Does adaptive depth save wall time? Each adaptive arm against the same arm at full depth: the
share of time it saves next to the share of FLOPs it saves, in training and in cached decoding.

    python benchmarks/adaptive_depth.py [--config cpu-small] [--rounds 3] [--steps 5] [--new-tokens 64]

Training: `reasonlab bench --json` in a fresh process per measurement, the adaptive arm and its
full-depth twin taking turns; step times are the bench's medians, FLOPs those each step ran.
- mor (expert-choice, 100/75/50/25% of the tokens at its 4 passes) against mor with every token
  at every pass (capacity_last 1: the looped arm plus the router unit);
- mor (token-choice, untrained: the depths its router's initial weights pick) against the same;
- looped+ACT against looped at the same depth without ACT (ACT stops a step early only once every
  token of the batch has halted; its halted tokens are still computed, their state frozen).
Decoding: greedy through the KV cache, 16-token prompts, batch 1 and 8, in this process, the two
twins taking turns each round; FLOPs from the tokens each pass of the first block computed.
Untrained weights: a mor router's initial scores send about half the tokens on at each pass at
inference, looped's ACT unit halts after about two passes; what training would choose differs,
the relation of time to FLOPs is what this measures. `time/FLOPs` is (time saved) / (FLOPs
saved): 1.00 = every FLOP saved is time saved. `passes saved` (decoding): the share of passes no
row's token took, which are skipped whole; a pass that some rows take costs about as much at
batch 8 as at batch 1 (a decoding step is bound by its ops' count, not their size).
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from arms_speed import bench  # benchmarks/ is the script's folder, first on sys.path
from reasonlab.config import resolve_config, with_overrides
from reasonlab.model import build_model
from reasonlab.model.flops import head_forward_flops, stack_forward_flops
from reasonlab.model.generate import greedy

FP32 = {"train.precision": "fp32"}
MOR = {"model.arch": "mor", "mor.recursions": 4, "recursion.max_segments": 1, "recursion.use_act": False}
TWINS = {  # adaptive arm -> (its overrides, its full-depth twin's)
    "mor expert": ({**MOR, "mor.capacity_last": 0.25}, {**MOR, "mor.capacity_last": 1.0}),
    "mor token": ({**MOR, "mor.router": "token"}, {**MOR, "mor.capacity_last": 1.0}),
    "looped+ACT": ({"model.arch": "looped", "looped.depth": 4, "looped.act": True, "recursion.max_segments": 1,
                    "recursion.use_act": False},
                   {"model.arch": "looped", "looped.depth": 4, "recursion.max_segments": 1,
                    "recursion.use_act": False}),
}


def full_depth(model: torch.nn.Module, arch: str) -> None:
    """Routers that send every token through every pass at inference (looped+ACT decodes every pass
    already: a cached forward must make the same attention calls as the prefill)."""
    with torch.no_grad():
        if arch == "mor":
            model.router.weight.zero_()
            if model.mor.router == "expert":
                model.router.bias.fill_(50.0)
            else:
                model.router.bias.copy_(torch.arange(model.mor.recursions, dtype=torch.float32) * 50.0)


def decode(model: torch.nn.Module, prompts: torch.Tensor, new: int) -> tuple[float, int, int]:
    """Seconds to decode `new` tokens for every row, the token-passes of the first block and the
    passes it ran (one a pass that any row's token took)."""
    rows = []
    hook = model.core.blocks[0].moe.register_forward_hook(
        lambda mod, inp, out: rows.append(inp[0].reshape(-1, inp[0].shape[-1]).shape[0]))
    tic = time.perf_counter()
    greedy(model, prompts, new)
    seconds = time.perf_counter() - tic
    hook.remove()
    return seconds, sum(rows), len(rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default="cpu-small")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--new-tokens", type=int, default=64)
    parser.add_argument("--arms", default=",".join(TWINS), help="comma-separated names from: " + ", ".join(TWINS))
    parser.add_argument("--decode-only", action="store_true", help="skip the training measurements")
    args = parser.parse_args()
    arms = args.arms.split(",")
    print(f"{args.config}, fp32, {torch.get_num_threads()} threads; medians over {args.rounds} alternating rounds")
    print(f"{'arm':12} {'where':16} {'adaptive':>12} {'full depth':>12} {'time saved':>10} {'FLOPs saved':>11} "
          f"{'time/FLOPs':>10} {'passes saved':>13}")
    for arm in arms:
        adaptive, full = TWINS[arm]
        if not args.decode_only:
            train(arm, args.config, adaptive, full, args.rounds, args.steps)
        for batch in (1, 8):
            cfg = with_overrides(resolve_config(args.config, adaptive), {"model.dropout": 0.0})
            torch.manual_seed(0)
            model = build_model(cfg).eval()
            twin = build_model(cfg).eval()
            twin.load_state_dict(model.state_dict())
            full_depth(twin, cfg.model.arch)
            prompts = torch.randint(0, cfg.model.vocab_size, (batch, 16), generator=torch.Generator().manual_seed(1))
            for m in (model, twin):  # warm up: the first decode pays for allocations and thread start
                decode(m, prompts, 4)
            times: dict[str, list[float]] = {"adaptive": [], "full": []}
            passes, calls = {}, {}
            for _ in range(args.rounds):
                for name, m in (("adaptive", model), ("full", twin)):
                    seconds, passes[name], calls[name] = decode(m, prompts, args.new_tokens)
                    times[name].append(seconds)
            heads = batch * (16 + args.new_tokens - 1) * head_forward_flops(cfg.model)
            flops = {k: v * stack_forward_flops(cfg.model) + heads for k, v in passes.items()}
            a_s, f_s = statistics.median(times["adaptive"]), statistics.median(times["full"])
            new = batch * args.new_tokens
            report(arm, f"decode batch {batch}", f"{new / a_s:.0f} tok/s", f"{new / f_s:.0f} tok/s", 1 - a_s / f_s,
                   1 - flops["adaptive"] / flops["full"], 1 - calls["adaptive"] / calls["full"])


def train(arm: str, config: str, adaptive: dict, full: dict, rounds: int, steps: int) -> None:
    runs: dict[str, list[dict]] = {"adaptive": [], "full": []}
    for _ in range(rounds):
        runs["adaptive"].append(bench(config, {**adaptive, **FP32}, steps))
        runs["full"].append(bench(config, {**full, **FP32}, steps))
    a_ms = statistics.median(r["step_ms"]["median"] for r in runs["adaptive"])
    f_ms = statistics.median(r["step_ms"]["median"] for r in runs["full"])
    a_flops = statistics.mean(r["flops_per_step"] for r in runs["adaptive"])
    f_flops = statistics.mean(r["flops_per_step"] for r in runs["full"])
    report(arm, "training", f"{a_ms:.1f} ms", f"{f_ms:.1f} ms", 1 - a_ms / f_ms, 1 - a_flops / f_flops)


def report(arm: str, where: str, adaptive: str, full: str, time_saved: float, flops_saved: float,
           passes_saved: float | None = None) -> None:
    ratio = f"{time_saved / flops_saved:10.2f}" if flops_saved > 0.005 else f"{'-':>10}"
    skipped = "" if passes_saved is None else f" {passes_saved:13.1%}"
    print(f"{arm:12} {where:16} {adaptive:>12} {full:>12} {time_saved:10.1%} {flops_saved:11.1%} {ratio}{skipped}",
          flush=True)


if __name__ == "__main__":
    main()
