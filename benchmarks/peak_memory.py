"""Peak RSS of training steps at a given model size, on random tokens (no corpus or tokenizer needed).

    python benchmarks/peak_memory.py --config seed-gpu --set model.vocab_size=49152 --steps 1
    python benchmarks/peak_memory.py --config seed-gpu-recursive --set hrm.H_cycles=2 \\
        --set hrm.L_cycles=2 --set train.activation_checkpointing=true --set train.loss_chunk_tokens=2048

Each step is the trainer's: forward + loss under the configured precision, backward, gradient
clipping, AdamW, with glibc keeping freed memory as in training. Peak RSS includes the
optimizer state, which AdamW allocates at the first step. Run one configuration per process:
RSS peaks never go down.
"""

from __future__ import annotations

import argparse
import math
import resource
import time

import torch

from reasonlab.config import parse_override, resolve_config
from reasonlab.model import build_model, param_counts
from reasonlab.runtime import keep_freed_memory, runtime
from reasonlab.training.optim import build_optimizer


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="seed-gpu")
    parser.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE")
    parser.add_argument("--steps", type=int, default=1)
    args = parser.parse_args()
    cfg = resolve_config(args.config, dict(parse_override(o) for o in args.set))
    m, t = cfg.model, cfg.train
    device, precision, autocast = runtime(t)
    if device.type == "cpu":
        keep_freed_memory()  # as the trainer does
    torch.manual_seed(0)
    model = build_model(cfg).to(device)
    model.configure_memory(t.activation_checkpointing, t.loss_chunk_tokens)
    optimizer = build_optimizer(model, t, device)
    times = []
    for _ in range(args.steps):
        x = torch.randint(0, m.vocab_size, (t.batch_size, m.seq_len + 1), device=device)
        tic = time.perf_counter()
        with autocast():
            out = model(x[:, :-1], x[:, 1:])
        out.loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), t.grad_clip if t.grad_clip > 0 else math.inf)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        times.append(time.perf_counter() - tic)
    rss_gb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2
    print(f"{m.arch} d_model {m.d_model}, {m.n_layers} layers, vocab {m.vocab_size}, seq {m.seq_len}, "
          f"batch {t.batch_size}, {param_counts(cfg)['total'] / 1e6:.1f}M params, {precision}, "
          f"checkpointing {t.activation_checkpointing}, loss chunks {t.loss_chunk_tokens or 'off'}")
    if m.arch != "baseline":
        r = cfg.recursion
        print(f"{m.arch}: {vars(getattr(cfg, m.arch))}, {r.max_segments} segments, ACT {r.use_act}")
    steps = ", ".join(f"{s:.1f}" for s in times)
    print(f"step times (s): {steps}; loss {out.lm_loss.item():.4f}; peak RSS {rss_gb:.2f} GB")


if __name__ == "__main__":
    main()
