"""lm-evaluation-harness on a reasonlab checkpoint: `reasonlab eval CHECKPOINT --lm-eval TASKS`.

`ReasonlabLM` is lm-eval's `LM` interface over a loaded checkpoint, so every task the harness
knows (the hub's, online, or local ones from task YAMLs under `include`) scores reasonlab's own
model, recursive arms included, at the test-time compute asked for (`segments`, `depth`):

- loglikelihood: the continuation's summed log-probability after the context, and whether greedy
  decoding would produce it; the text is cut from the left to the model's context;
- loglikelihood_rolling: a whole text's log-probability in disjoint windows of the context
  (lm-eval's own windowing, each window predicted from the end-of-text token);
- generate_until: greedy decoding through reasonlab's cached `generate`, stopped at the task's
  `until` strings or `max_gen_toks` tokens.

An empty context starts from the end-of-text token, as lm-eval's HF model does.
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path
from typing import Any

import torch

from reasonlab.api import LoadedModel
from reasonlab.errors import UserError
from reasonlab.io import atomic_write_text
from reasonlab.model.generate import sample


def require_lm_eval() -> None:
    if importlib.util.find_spec("lm_eval") is None:
        raise UserError("--lm-eval needs lm-evaluation-harness: pip install -e '.[eval]' in the reasonlab checkout")


def harness_lm(loaded: LoadedModel, segments: int | None = None, depth: int | None = None) -> Any:
    """A `lm_eval.api.model.LM` over `loaded` (the class is built here: lm-eval is an optional extra)."""
    from lm_eval.api.model import LM
    from lm_eval.utils import get_rolling_token_windows, make_disjoint_window

    model, tokenizer, context = loaded.model, loaded.tokenizer, loaded.config.model.seq_len
    eot = tokenizer.eot_id

    @torch.no_grad()
    def token_logprobs(prefix: list[int], targets: list[int]) -> tuple[float, bool]:
        """Log-probability of `targets` after `prefix`, and whether each is the greedy choice."""
        ids = (prefix + targets)[-(context + 1):]
        inputs = torch.tensor([ids[:-1]], device=loaded.device)
        out = model.run(inputs, segments=segments, depth=depth)
        logp = out.logits[0, -len(targets):].float().log_softmax(dim=-1)
        wanted = torch.tensor(targets, device=loaded.device)
        return logp.gather(1, wanted[:, None]).sum().item(), bool((logp.argmax(dim=-1) == wanted).all())

    class ReasonlabLM(LM):
        def loglikelihood(self, requests: list) -> list[tuple[float, bool]]:
            results = []
            for request in requests:
                text, continuation = request.args
                prefix = tokenizer.encode(text) or [eot]
                results.append(token_logprobs(prefix, tokenizer.encode(continuation)))
            return results

        def loglikelihood_rolling(self, requests: list) -> list[float]:
            results = []
            for request in requests:
                windows = get_rolling_token_windows(tokenizer.encode(request.args[0]), eot, context, 1)
                results.append(sum(token_logprobs(*make_disjoint_window(w))[0] for w in windows))
            return results

        def generate_until(self, requests: list) -> list[str]:
            results = []
            for request in requests:
                text, options = request.args
                until = options.get("until") or [tokenizer.eot_token]
                until = [until] if isinstance(until, str) else list(until)
                prompt = (tokenizer.encode(text) or [eot])[-context:]
                new_tokens = int(options.get("max_gen_toks", 256))
                ids, _ = sample(model, torch.tensor([prompt], device=loaded.device), new_tokens, context,
                                temperature=0, stop_id=eot, segments=segments, depth=depth)
                generated = tokenizer.decode(ids[0, len(prompt):].tolist())
                for stop in until:
                    generated = generated.split(stop)[0]
                results.append(generated)
            return results

    return ReasonlabLM()


def run_lm_eval(loaded: LoadedModel, tasks: list[str], out: Path, include: str | None = None,
                limit: int | None = None, segments: int | None = None, depth: int | None = None) -> dict[str, Any]:
    """Score `loaded` on lm-eval `tasks`; the harness's results (without per-sample logs) go to `out`."""
    require_lm_eval()
    from lm_eval import simple_evaluate
    from lm_eval.tasks import TaskManager

    manager = TaskManager(include_path=include) if include else TaskManager()
    unknown = [t for t in tasks if t not in manager.all_tasks]
    if unknown:
        raise UserError(f"--lm-eval: unknown task {unknown[0]!r} (lm-eval knows {len(manager.all_tasks)} tasks; "
                        "a local task needs --include DIR with its YAML)")
    results = simple_evaluate(model=harness_lm(loaded, segments, depth), tasks=tasks, task_manager=manager,
                              limit=limit, log_samples=False, bootstrap_iters=1000)
    kept = {key: results[key] for key in ("results", "versions", "n-shot", "higher_is_better", "n-samples")
            if key in results}
    kept["reasonlab"] = {"arch": loaded.config.model.arch, "segments": segments, "depth": depth, "limit": limit}
    atomic_write_text(out, json.dumps(kept, indent=2, default=str))
    return kept
