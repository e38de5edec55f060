"""The `reasonlab` command: a thin layer over the Python API.

Bad input prints one line, `error: ...`, and exits with code 2; nothing on disk is changed.
"""

from __future__ import annotations

import argparse
import functools
import json
import math
import os
import re
import sys
import threading
import time
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from pathlib import Path
from typing import TYPE_CHECKING

from reasonlab import __version__
from reasonlab.config import closest, parse_override, resolve_config
from reasonlab.errors import Incomplete, Interrupted, TrainingDiverged, UserError, WriteFailed
from reasonlab.io import write_cause
from reasonlab.registry import ALIASES, ARCHS

if TYPE_CHECKING:
    from reasonlab.api import LoadedModel
    from reasonlab.experiments.results import Judged

TASK_ARMS = ("task-small", "task-small-recursive")  # tasks' --a and --b when neither they nor --arms are given
MODELS = [*ARCHS, *ALIASES]  # --model: every arm, and the old names that still load
MAX_NEW_TOKENS = 100_000  # generate: beyond this a sampling loop over reasonlab.load belongs in a script
EXAMPLES = {  # one per command, shown under its --help
    "demo": "reasonlab demo --out runs/demo",
    "train": "reasonlab train --config cpu-small --set train.lr=1e-3 --out runs/s1",
    "eval": "reasonlab eval runs/s1/checkpoints/best",
    "generate": "reasonlab generate runs/s1/checkpoints/best --prompt 'To be, or not' --temperature 0",
    "export": "reasonlab export runs/s1/checkpoints/best --hf runs/s1-hf",
    "ablate": "reasonlab ablate --suite baseline --config cpu-tiny --steps 50 --seeds 2 --out runs/abl",
    "compare": "reasonlab compare --arms cpu-small,cpu-small-trm --steps 300 --seeds 3 --out runs/cmp",
    "tasks": "reasonlab tasks --task addition --a task-small --b task-small-trm --steps 500 --out runs/add",
    "bench": "reasonlab bench --config cpu-bench --steps 5",
    "scale": "reasonlab scale --arms cpu-tiny,cpu-tiny-recursive --budgets 4 --span 8 --max-flops 2e12 --out runs/sc",
    "calibrate": "reasonlab calibrate --config cpu-tiny --repeats 20 --steps 50 --out runs/calibration",
    "presets": "reasonlab presets",
    "config": "reasonlab config show cpu-small --set train.lr=1e-3",
    "report": "reasonlab report runs/cmp",
}
SEEDS_HELP = ("runs per arm, each on its own seed. At 80%% power, two arms' difference is detectable only from "
              "at least 5.7 run-to-run standard deviations with 2 seeds, 3.1 with 3, 2.0 with 5: 'within noise' from "
              "2 or 3 seeds rules out only large differences (each verdict states its own)")
WORKERS_HELP = "local processes sharing the study's queue of runs, each given its share of the cores and GPUs"
STORAGE_HELP = ("the queue's database (default: SQLite in --out); a postgresql:// URL lets machines running the same "
                "command share it")
DRY_RUN_HELP = "print the plan (arms, steps, seeds, FLOPs, time from a short calibration, disk); write nothing"
ARM_HELP = ("YAML config, preset name, DIR:best of an ablation, or control:KIND:SPEC, KIND params, flops, "
            "depth or outer (a matched control of a recursive SPEC)")

class _Parser(argparse.ArgumentParser):
    def __init__(self, *args, **kwargs) -> None:  # every help page shows the defaults
        super().__init__(*args, **{"formatter_class": argparse.ArgumentDefaultsHelpFormatter, **kwargs})

    def error(self, message: str) -> None:  # one line and exit 2, like every other bad input
        invalid = re.search(r"invalid choice: '([^']*)' \(choose from (.*)\)", message)
        if invalid:  # an unknown command or choice: the closest valid ones
            message += closest(invalid.group(1), re.findall(r"'([^']*)'", invalid.group(2)))
        raise UserError(f"{self.prog}: {message}")


def _overrides(args: argparse.Namespace) -> dict:
    """The repeatable --set section.key=value options as dotted-key overrides."""
    return dict(parse_override(item) for item in args.set or [])


def _at_least(minimum: int, args: argparse.Namespace, *names: str) -> None:
    """Counting flags (--steps, --seeds, ...) must be >= `minimum` (1, or 0 for offsets)."""
    for name in names:
        value = getattr(args, name)
        if value is not None and value < minimum:
            raise UserError(f"--{name.replace('_', '-')} must be >= {minimum}, got {value}")


def _train(args: argparse.Namespace) -> None:
    from reasonlab import api

    if args.resume:
        stored = {"--config": args.config, "--set": args.set, "--model": args.model, "--seed": args.seed,
                  "--out": args.out, "--data": args.data, "--tokenizer": args.tokenizer}
        given = [flag for flag, value in stored.items() if value is not None]
        if given:
            raise UserError(f"--resume continues a run with its stored config; drop {', '.join(given)}")
        _at_least(1, args, "max_steps")
        run_dir = api.resume(args.resume, args.max_steps, args.quiet)
    else:
        overrides = _overrides(args)
        for key, value in (("model.arch", args.model), ("train.seed", args.seed), ("train.max_steps", args.max_steps),
                           ("data.source", args.data), ("data.tokenizer", args.tokenizer)):
            if value is not None:
                overrides[key] = value
        run_dir = api.train(resolve_config(args.config, overrides), args.out, quiet=args.quiet)
    if os.environ.get("RANK", "0") != "0":  # under torchrun only the main process reports
        return
    summary = json.loads((run_dir / "summary.json").read_text())
    final = summary["final_val"]
    print(f"{run_dir}: {summary['steps']} steps, val loss {final['loss']:.4f}, perplexity {final['perplexity']:.1f}, "
          f"accuracy {final['accuracy']:.2%}, {summary['tokens_per_s']:,.0f} tokens/s")


def _eval(args: argparse.Namespace) -> None:
    from reasonlab import api
    from reasonlab.data.corpus import val_stream
    from reasonlab.runtime import autocast_factory, resolve_precision
    from reasonlab.training.evaluate import evaluate

    _at_least(1, args, "batches", "vote")
    if args.lm_eval:
        _lm_eval(args)
        return
    harness_only = {"--segments": args.segments, "--depth": args.depth, "--limit": args.limit,
                    "--include": args.include, "--out": args.out}
    given = [flag for flag, value in harness_only.items() if value is not None]
    if given:
        raise UserError(f"{', '.join(given)}: only with --lm-eval (they set how lm-evaluation-harness scores)")
    loaded = api.load(args.checkpoint)
    cfg = loaded.config
    batches = cfg.train.eval_batches if args.batches is None else args.batches
    autocast = autocast_factory(resolve_precision(cfg.train.precision, loaded.device), loaded.device)
    if cfg.task.name:
        _eval_task(loaded, autocast, args.json, args.vote)
        return
    if args.vote:
        raise UserError("--vote scores a reasoning-task checkpoint; this one is a language model")
    tokens = val_stream(cfg.data, loaded.tokenizer)
    held = math.ceil((len(tokens) - 1) // cfg.model.seq_len / cfg.train.batch_size)
    if args.batches is not None and args.batches > held:
        raise UserError(f"--batches {args.batches} is more than the val split holds: {held} batches of "
                        f"{cfg.train.batch_size} windows of {cfg.model.seq_len} tokens")
    metrics = evaluate(loaded.model, tokens, cfg.model.seq_len, cfg.train.batch_size, batches, loaded.device, autocast)
    if args.json:
        print(json.dumps(metrics))
    else:
        print(f"val loss {metrics['loss']:.4f}  perplexity {metrics['perplexity']:.2f}  "
              f"accuracy {metrics['accuracy']:.2%}  over {metrics['tokens']:,} tokens")


def _lm_eval(args: argparse.Namespace) -> None:
    """lm-evaluation-harness tasks; the results JSON goes to the run folder, beside its checkpoints."""
    from reasonlab import api
    from reasonlab.harness import require_lm_eval, run_lm_eval

    for name in ("limit", "segments", "depth"):
        _at_least(1, args, name)
    require_lm_eval()
    tasks = [t.strip() for t in args.lm_eval.split(",") if t.strip()]
    if not tasks:
        raise UserError("--lm-eval: name at least one task")
    loaded = api.load(args.checkpoint)
    if (args.segments or args.depth) and loaded.config.model.arch == "baseline":
        raise UserError("--segments and --depth set a recursive arm's test-time compute; this checkpoint is a baseline")
    checkpoint = Path(args.checkpoint).resolve()
    out = Path(args.out) if args.out else checkpoint.parent.parent / f"lm_eval-{checkpoint.name}.json"
    results = run_lm_eval(loaded, tasks, out, args.include, args.limit, args.segments, args.depth)
    for task, metrics in results["results"].items():
        shown = ", ".join(f"{k.split(',')[0]} {v:.4f}" for k, v in metrics.items()
                          if isinstance(v, float) and "stderr" not in k)
        print(f"{task}: {shown}")
    print(f"wrote {os.path.relpath(out)}")


def _eval_task(loaded: LoadedModel, autocast: Callable[[], AbstractContextManager], as_json: bool,
               votes: int | None) -> None:
    """A task checkpoint on its val split (the train levels) and its test split (the harder ones),
    over the whole of each; with --vote K, also exact match voted over K symmetric variants."""
    from reasonlab.data.corpus import cache_root
    from reasonlab.tasks.dataset import TaskData

    data = TaskData(loaded.config.task, cache_root(loaded.config.data))
    batch = loaded.config.train.batch_size
    scores = {split: data.score(loaded.model, split, batch, loaded.device, autocast).metrics
              for split in ("val", "test")}
    if votes:
        for split in ("val", "test"):
            scores[split]["exact_match_vote"] = data.vote(loaded.model, split, votes, batch, loaded.device, autocast)
    if as_json:
        print(json.dumps(scores))
        return
    for split, (lo, hi) in (("val", data.levels["val"]), ("test", data.levels["test"])):
        m = scores[split]
        voted = f" (voted over {votes}: {m['exact_match_vote']:.2%})" if votes else ""
        print(f"{split} ({data.task.level_name} {lo}-{hi}): exact match {m['exact_match']:.2%}{voted}  "
              f"token accuracy {m['accuracy']:.2%}  answer loss {m['loss']:.4f}")


def _generate(args: argparse.Namespace) -> None:
    from reasonlab import api

    if not 0 <= args.temperature < math.inf:
        raise UserError(f"--temperature must be a number >= 0, got {args.temperature}")
    if not 1 <= args.max_new_tokens <= MAX_NEW_TOKENS:
        raise UserError(f"--max-new-tokens must be in [1, {MAX_NEW_TOKENS}], got {args.max_new_tokens}")
    try:
        args.prompt.encode("utf-8")
    except UnicodeEncodeError:
        raise UserError("--prompt is not valid UTF-8 text") from None
    if args.top_k < 0:
        raise UserError(f"--top-k must be >= 0, got {args.top_k}")
    loaded = api.load(args.checkpoint)
    text, segments = loaded.generate_with_segments(args.prompt, args.max_new_tokens, args.temperature, args.top_k,
                                                   args.seed, not args.no_cache)
    print(text)
    if segments:
        print(f"mean recursion segments per generated token: {sum(segments) / len(segments):.2f}", file=sys.stderr)


def _export(args: argparse.Namespace) -> None:
    from reasonlab.export.hf import export_hf

    out = export_hf(args.checkpoint, args.hf)
    print(f"wrote {out}: AutoModelForCausalLM.from_pretrained({str(out)!r}, trust_remote_code=True) loads it")


def _ablate(args: argparse.Namespace) -> None:
    from reasonlab.experiments.ablation import run_ablation

    _at_least(1, args, "steps", "seeds", "workers")
    _at_least(0, args, "seed_offset", "confirm")
    overrides = _overrides(args)
    only = [name.strip() for name in args.only.split(",")] if args.only else None
    if args.dry_run:
        from reasonlab.experiments.plan import format_plan, plan_ablation

        plans = plan_ablation(args.suite, args.steps, args.seeds, args.config, overrides, only, args.seed_offset)
        print(format_plan(f"ablate --suite {args.suite}: {len(plans)} configs", plans))
        return
    results = run_ablation(args.suite, args.steps, args.seeds, args.out, args.workers, args.storage, args.prune,
                           args.config, overrides, only, progress=lambda line: print(line, file=sys.stderr, flush=True),
                           confirm=args.confirm, seed_offset=args.seed_offset)
    confirmed = results.get("confirmation", {}).get("best")
    best = f"best on fresh seeds {confirmed}" if confirmed else f"best {results.get('best', 'none')}"
    print(f"{args.out}/ABLATION_SUMMARY.md: {best} of {len(results['configs'])} configs")


def _verdict_line(result: Judged, report: Path, match: str) -> str:
    """Where the report is and who won at the matched budget (against the reference, each arm, where
    more than two arms were judged)."""
    reference = result.arms[result.reference].name
    if result.head_to_head is None:
        verdicts = [f"{result.arms[key].name}: " + ("no significant difference" if pair.winner is None
                                                     else "wins" if pair.winner == "b" else f"{reference} wins")
                    for key, pair in result.pairs.items()]
        return f"{report}: at equal {match}, against {reference}, " + "; ".join(verdicts)
    winner = result.head_to_head.winner
    return f"{report}: at equal {match}, " + (f"{result.side(winner).name} wins" if winner else
                                              "no significant difference")


def _arm_specs(args: argparse.Namespace, defaults: tuple[str | None, str | None] = (None, None)) -> list[str]:
    """--arms A,B,C,... (two or more, the first the reference), or --a and --b."""
    if args.arms is not None:
        if args.a is not None or args.b is not None:
            raise UserError("--arms replaces --a and --b; give one or the other")
        return _arm_list(args.arms)
    a, b = (given if given is not None else default for given, default in zip((args.a, args.b), defaults))
    if a is None or b is None:
        raise UserError(f"{args.command}: --a and --b are required (or --arms)")
    return [a, b]


def _queue_flags(p: argparse.ArgumentParser) -> None:
    """--workers and --storage of a command whose runs go through the study queue."""
    p.add_argument("--workers", type=int, default=1, help=WORKERS_HELP)
    p.add_argument("--storage", metavar="URL", help=STORAGE_HELP)


def _arm_list(text: str) -> list[str]:
    specs = [spec.strip() for spec in text.split(",")]
    if len(specs) < 2 or not all(specs):
        raise UserError(f"--arms takes two or more arms separated by commas, the first the reference; got {text!r}")
    return specs


def _compare(args: argparse.Namespace) -> None:
    from reasonlab.experiments.compare import compare_arms

    specs = _arm_specs(args)
    _at_least(1, args, "steps", "seeds", "workers")
    _at_least(0, args, "seed_offset")
    if args.dry_run:
        _print_plan(f"compare at equal {args.match}, the costliest arm at {args.steps} steps", specs, args,
                    _overrides(args))
        return
    result = compare_arms(specs, args.steps, args.seeds, args.match, args.out,
                          progress=lambda line: print(line, file=sys.stderr, flush=True), overrides=_overrides(args),
                          seed_offset=args.seed_offset, paired=args.paired, workers=args.workers,
                          storage=args.storage)
    print(_verdict_line(result, Path(args.out) / "FINAL_RESULTS.md", args.match))


def _floats(flag: str, text: str | None) -> list[float] | None:
    """A comma-separated list of numbers, or one line naming the flag."""
    if text is None:
        return None
    try:
        return [float(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise UserError(f"{flag} takes numbers separated by commas, got {text!r}") from None


def _scale(args: argparse.Namespace) -> None:
    from reasonlab.experiments.scale import budget_points

    specs = _arm_list(args.arms)
    _at_least(1, args, "seeds", "workers", "resamples")
    _at_least(0, args, "seed_offset")
    budgets = budget_points(_floats("--budgets", args.budgets), args.span, args.max_flops)
    grid = _floats("--lr-grid", args.lr_grid)
    if args.dry_run:
        from reasonlab.experiments.plan import format_plan, plan_scale

        plans = plan_scale(specs, budgets, args.seeds, args.schedule, grid, _overrides(args), args.seed_offset,
                           args.lr_grid_at)
        print(format_plan(f"scale: {len(specs)} arms x {len(budgets)} budgets "
                          f"({', '.join(f'{b:.3g}' for b in budgets)} FLOPs), {args.schedule}", plans))
        return
    from reasonlab.experiments.scale import run_scale

    result = run_scale(specs, budgets, args.seeds, args.out, args.schedule, grid, _overrides(args), args.workers,
                       args.storage, args.seed_offset, args.resamples, args.lr_grid_at,
                       progress=lambda line: print(line, file=sys.stderr, flush=True))
    crossings = [f"{c['arm'].upper()} " + ("no crossing" if c["flops"]["estimate"] is None
                                             else f"crosses at {c['flops']['estimate']:.3g} FLOPs")
                 for c in result.crossovers]
    print(f"{Path(args.out) / 'SCALING.md'}: against {result.reference.upper()}, " + "; ".join(crossings))


def _print_plan(title: str, specs: list[str], args: argparse.Namespace, overrides: dict) -> None:
    """compare's and tasks' --dry-run: the plan, from a short calibration, with nothing written."""
    from reasonlab.experiments.plan import format_plan, plan_comparison

    print(format_plan(title, plan_comparison(specs, args.steps, args.seeds, args.match, overrides, args.seed_offset,
                                             args.paired)))


def _tasks(args: argparse.Namespace) -> None:
    if args.list:
        from reasonlab.tasks.registry import describe_tasks

        print(describe_tasks())
        return
    from reasonlab.experiments.tasks import run_task_study

    if not args.task or not args.out:
        raise UserError("tasks: --task and --out are required (or --list)")
    specs = _arm_specs(args, TASK_ARMS)
    _at_least(1, args, "steps", "seeds", "workers")
    _at_least(0, args, "seed_offset")
    overrides = _overrides(args)
    if args.size is not None:
        overrides["task.size"] = args.size
    if args.format is not None:
        overrides["task.format"] = args.format
        overrides.setdefault("model.causal", args.format == "seq")
    if args.dry_run:
        _print_plan(f"tasks {args.task} at equal {args.match}, the costliest arm at {args.steps} steps", specs, args,
                    {**overrides, "task.name": args.task})
        return
    result = run_task_study(args.task, specs, args.steps, args.seeds, args.match, args.out, overrides,
                            progress=lambda line: print(line, file=sys.stderr, flush=True),
                            seed_offset=args.seed_offset, paired=args.paired, workers=args.workers)
    for key, arm in result.arms.items():
        print(f"{key.upper()} {arm.name}: val exact match {arm.aggregate.val['exact_match'].mean:.2%}, "
              f"test exact match {arm.aggregate.test['exact_match'].mean:.2%}")
    print(_verdict_line(result, Path(args.out) / "TASK_RESULTS.md", args.match))


def _demo(args: argparse.Namespace) -> None:
    from reasonlab.experiments.demo import run_demo
    from reasonlab.report.comparison import headline

    tic = time.perf_counter()
    result = run_demo(args.out, args.config, progress=lambda line: print(line, file=sys.stderr, flush=True))
    print(f"\nreport: {Path(args.out) / 'comparison' / 'FINAL_RESULTS.md'} ({time.perf_counter() - tic:.0f} s)\n")
    print(headline(result))


def _bench(args: argparse.Namespace) -> None:
    from reasonlab.bench import bench, format_bench

    overrides = _overrides(args)
    if args.model:
        overrides["model.arch"] = args.model
    _at_least(1, args, "steps")
    result = bench(resolve_config(args.config, overrides), args.steps)
    print(json.dumps(result) if args.json else format_bench(result))


def _calibrate(args: argparse.Namespace) -> None:
    from reasonlab.experiments.calibration import format_calibration, run_calibration

    _at_least(1, args, "repeats", "steps", "seeds")
    try:
        handicaps = [float(f) for f in args.handicaps.split(",")] if args.handicaps.strip() else []
    except ValueError:
        raise UserError(f"--handicaps expects numbers separated by commas, got {args.handicaps!r}") from None
    if args.dry_run:
        from reasonlab.experiments.plan import format_plan, plan_comparison

        overrides = _overrides(args)
        steps = args.steps or resolve_config(args.config, overrides).train.max_steps
        conditions = 1 + len(handicaps)
        plans = plan_comparison([args.config, args.config], steps, args.seeds, args.match, overrides)
        print(format_plan(f"calibrate {args.config}: {args.repeats} comparisons in each of {conditions} conditions "
                          "(B's lr differs in the handicapped ones)", plans, repeats=args.repeats * conditions))
        return
    result = run_calibration(args.config, args.repeats, handicaps, args.steps, args.seeds, args.match, args.out,
                             progress=lambda line: print(line, file=sys.stderr, flush=True),
                             overrides=_overrides(args))
    print(format_calibration(result))


def _presets(args: argparse.Namespace) -> None:
    from reasonlab.config import PRESETS_DIR, describe_preset

    for title, folder, flag in (("presets", PRESETS_DIR, "--config NAME"), ("suites", PRESETS_DIR / "suites",
                                                                            "ablate --suite NAME")):
        paths = sorted(folder.glob("*.yaml"))
        width = max(len(p.stem) for p in paths)
        print(f"{title} ({flag}):")
        for path in paths:
            print(f"  {path.stem.ljust(width)}  {describe_preset(path)}")


def _config(args: argparse.Namespace) -> None:
    if args.action == "keys":
        from reasonlab.config_keys import reference_markdown

        if args.config or args.set:
            raise UserError("config keys takes no preset and no --set: it lists every key")
        print(reference_markdown())
        return
    if not args.config:
        raise UserError("config show: name a preset or YAML file")
    print(resolve_config(args.config, _overrides(args)).to_yaml(), end="")


def _report(args: argparse.Namespace) -> None:
    from reasonlab.report import rebuild

    for path in rebuild(args.dir):
        print(path)


def subcommands(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    """Each command's own parser, by name (argparse keeps them on a private attribute)."""
    return parser._subparsers._group_actions[0].choices


def _hidden_alias(parser: argparse.ArgumentParser, flag: str, dest: str) -> None:
    """An earlier name of a flag, still accepted but no longer shown."""
    parser.add_argument(flag, dest=dest, default=argparse.SUPPRESS, help=argparse.SUPPRESS)


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="reasonlab", epilog="`reasonlab COMMAND --help` shows a command's flags.",
                     description="Small language models with and without recursion, trained, compared and "
                                 "reported fairly: equal steps, FLOPs and time, over seeds, with intervals.")
    parser.add_argument("--version", action="version", version=f"reasonlab {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser, metavar="COMMAND")

    p = sub.add_parser("demo", help="the whole study at CPU scale: two sweeps, a head-to-head, the report")
    p.add_argument("--out", default="runs/demo", help="the study's folder; run again, the demo continues in it")
    p.add_argument("--config", default="cpu-demo", help="YAML config or preset name the sweeps start from")
    _hidden_alias(p, "--base", "config")
    p.set_defaults(func=_demo)

    p = sub.add_parser("train", help="train a model, or resume/extend a run")
    p.add_argument("--config", help="YAML preset, e.g. configs/cpu-small.yaml")
    p.add_argument("--set", action="append", metavar="SECTION.KEY=VALUE", help="override one config value (repeatable)")
    p.add_argument("--model", choices=MODELS, help="the arm to train (sets model.arch)")
    p.add_argument("--seed", type=int, help="sets train.seed: init, data order, dropout, router noise")
    p.add_argument("--out", help="run directory (default runs/<arch>-<time>)")
    p.add_argument("--max-steps", "--steps", type=int, dest="max_steps", help="steps to train (default: the config's)")
    p.add_argument("--data", help="shakespeare | PATH (.txt/.jsonl/folder) | hf:NAME[:SUBSET]")
    p.add_argument("--tokenizer", help="bpe (train locally) | tokenizer.json path | HF tokenizer name")
    p.add_argument("--resume", metavar="RUN_DIR", help="continue a killed run or extend a finished one")
    p.add_argument("--quiet", action="store_true", help="no progress output")
    p.set_defaults(func=_train)

    p = sub.add_parser("eval", help="validation metrics of a checkpoint")
    p.add_argument("checkpoint", help="a checkpoint folder: RUN/checkpoints/best, final or step_N")
    p.add_argument("--batches", type=int, help="val batches (default: the run's train.eval_batches)")
    p.add_argument("--json", action="store_true", help="print the metrics as JSON")
    p.add_argument("--vote", type=int, metavar="K",
                   help="task checkpoints: also exact match voted over K symmetric variants (sudoku, maze)")
    p.add_argument("--lm-eval", metavar="TASK,TASK", help="score with lm-evaluation-harness tasks instead")
    p.add_argument("--include", metavar="DIR", help="with --lm-eval: a folder of local task YAMLs")
    p.add_argument("--limit", type=int, help="with --lm-eval: at most this many examples per task")
    p.add_argument("--segments", type=int, help="with --lm-eval: recursion segments at test time")
    p.add_argument("--depth", type=int, help="with --lm-eval: the arm's inner depth at test time")
    p.add_argument("--out", help="with --lm-eval: results JSON (default: RUN/lm_eval-<checkpoint>.json)")
    p.set_defaults(func=_eval)

    p = sub.add_parser("generate", help="sample text from a checkpoint")
    p.add_argument("checkpoint", help="a checkpoint folder: RUN/checkpoints/best, final or step_N")
    p.add_argument("--prompt", required=True, help="the text to continue")
    p.add_argument("--max-new-tokens", type=int, default=50, help="tokens to generate")
    p.add_argument("--temperature", type=float, default=0.8, help="sampling temperature; 0 = greedy")
    p.add_argument("--top-k", type=int, default=40, help="sample among the k likeliest tokens; 0 = all")
    p.add_argument("--seed", type=int, default=0, help="the sampling seed")
    p.add_argument("--no-cache", action="store_true", help="recompute the whole text for every token (no KV cache)")
    p.set_defaults(func=_generate)

    p = sub.add_parser("export", help="a checkpoint as a Hugging Face folder (transformers loads it offline)")
    p.add_argument("checkpoint", help="a checkpoint folder: RUN/checkpoints/best, final or step_N")
    p.add_argument("--hf", required=True, metavar="DIR", help="the folder to write (new or empty)")
    p.set_defaults(func=_export)

    p = sub.add_parser("ablate", help="run an ablation suite through the Optuna sweep engine")
    p.add_argument("--suite", required=True,
                   help="a bundled suite (baseline, reasoning, recursion: see reasonlab presets) or a YAML file")
    p.add_argument("--steps", type=int, default=100, help="steps of every trial")
    p.add_argument("--seeds", type=int, default=1, help="runs per config, each on its own seed")
    _queue_flags(p)
    p.add_argument("--prune", action="store_true", help="stop hopeless trials early (median pruner)")
    p.add_argument("--config", help="YAML config or preset name the suite starts from instead of its own base")
    _hidden_alias(p, "--base", "config")
    p.add_argument("--only", metavar="NAME,NAME", help="run just these configs of the suite")
    p.add_argument("--seed-offset", type=int, default=0, metavar="N", help="run seeds N..N+seeds-1 (fresh seeds)")
    p.add_argument("--confirm", type=int, default=0, metavar="K",
                   help="then rerun the top 3 configs (all, if fewer) on K fresh seeds (1000000..1000000+K-1, "
                        "never a sweep's) and rank them on those alone; DIR:best takes that best")
    p.add_argument("--set", action="append", metavar="SECTION.KEY=VALUE", help="override every config (repeatable)")
    p.add_argument("--out", required=True, help="the study's folder; run again, the study continues in it")
    p.add_argument("--dry-run", action="store_true", help=DRY_RUN_HELP)
    p.set_defaults(func=_ablate)

    p = sub.add_parser("compare", help="two or more arms over seeds, at equal steps, FLOPs and time")
    p.add_argument("--a", help=f"arm A: {ARM_HELP}")
    p.add_argument("--b", help="arm B, like --a")
    p.add_argument("--arms", metavar="A,B,C,...",
                   help="instead of --a/--b: two or more arms (each like --a), every one judged against the first")
    p.add_argument("--steps", type=int, default=1000, help="steps of the costliest (or slowest) arm")
    p.add_argument("--seeds", type=int, default=3, help=SEEDS_HELP)
    p.add_argument("--seed-offset", type=int, default=0, metavar="N",
                   help="shift every seed by N: repeat a comparison on fresh seeds (A: N.., B: after A's, ...)")
    p.add_argument("--paired", action="store_true",
                   help="every arm runs A's seeds; interval of the per-seed differences (arms of the same shape)")
    p.add_argument("--match", choices=["steps", "flops", "time"], default="flops", help="what the budgets equalise")
    _queue_flags(p)
    p.add_argument("--set", action="append", metavar="SECTION.KEY=VALUE", help="override every arm (repeatable)")
    p.add_argument("--out", required=True, help="the study's folder; run again, the study continues in it")
    p.add_argument("--dry-run", action="store_true", help=DRY_RUN_HELP)
    p.set_defaults(func=_compare)

    p = sub.add_parser("tasks", help="two or more arms on a generated reasoning task, judged on exact match")
    p.add_argument("--list", action="store_true", help="show the tasks and their knobs")
    p.add_argument("--task", help="addition | parity | prefix-sum | sudoku | maze")
    p.add_argument("--size", type=int, help="grid side of sudoku (4, 6, 9) or maze")
    p.add_argument("--format", choices=["seq", "grid"],
                   help="seq: answer decoded token by token (causal); grid: all cells at once (bidirectional)")
    p.add_argument("--a", help=f"arm A (default {TASK_ARMS[0]}): {ARM_HELP}")
    p.add_argument("--b", help=f"arm B (default {TASK_ARMS[1]}), like --a")
    p.add_argument("--arms", metavar="A,B,C,...",
                   help="instead of --a/--b: two or more arms (each like --a), every one judged against the first")
    p.add_argument("--steps", type=int, default=2000, help="steps of the costliest arm")
    p.add_argument("--seeds", type=int, default=3, help=SEEDS_HELP)
    p.add_argument("--seed-offset", type=int, default=0, metavar="N",
                   help="shift every seed by N: repeat a comparison on fresh seeds (A: N.., B: after A's, ...)")
    p.add_argument("--paired", action="store_true",
                   help="every arm runs A's seeds; interval of the per-seed differences (arms of the same shape)")
    p.add_argument("--match", choices=["steps", "flops", "time"], default="flops", help="what the budgets equalise")
    p.add_argument("--workers", type=int, default=1, help=WORKERS_HELP + " (on this machine: their checkpoints are "
                                                                          "scored here)")
    p.add_argument("--set", action="append", metavar="SECTION.KEY=VALUE", help="override every arm (repeatable)")
    p.add_argument("--out", help="the study's folder (required unless --list); run again, the study continues in it")
    p.add_argument("--dry-run", action="store_true", help=DRY_RUN_HELP)
    p.set_defaults(func=_tasks)

    p = sub.add_parser("scale", help="arms x compute budgets x seeds: loss against FLOPs fitted per arm, crossovers",
                       description="Train every arm to every training-FLOP budget on every seed (one warmup-stable-"
                                   "decay run per arm and seed, each smaller budget a cooldown branched from it), fit "
                                   "L(C) = E + A C^-alpha per arm with seed-bootstrap intervals, judge each arm "
                                   "against the first at every budget, and estimate where the fits cross. Writes "
                                   "scaling.json, SCALING.md and scaling.png; run again, the study continues.")
    p.add_argument("--arms", required=True, metavar="A,B,C,...",
                   help=f"two or more arms, every one judged against the first; each a {ARM_HELP}")
    p.add_argument("--budgets", required=True, metavar="F,F,F | K",
                   help="training FLOPs of each budget (at least 3, spanning at least 4x); or a count K with --span "
                        "and --max-flops")
    p.add_argument("--span", type=float, help="with --budgets K: the largest budget over the smallest (>= 4)")
    p.add_argument("--max-flops", type=float, help="with --budgets K: the largest budget in FLOPs")
    p.add_argument("--seeds", type=int, default=3, help=SEEDS_HELP)
    p.add_argument("--seed-offset", type=int, default=0, metavar="N", help="shift every seed by N (fresh seeds)")
    p.add_argument("--schedule", choices=["wsd", "independent"], default="wsd",
                   help="wsd: one run to the largest budget per arm and seed, cooldowns branched from it; "
                        "independent: every budget from scratch with the arm's own schedule")
    p.add_argument("--lr-grid", metavar="M,M,M",
                   help="multipliers of each arm's train.lr (1 among them), tried at the smallest and the largest "
                        "budget on the first seed; each budget uses the nearer one's best")
    p.add_argument("--lr-grid-at", choices=["smallest", "both"], default="both",
                   help="where the lr grid is tried: the smallest budget (a short run and a cooldown per multiplier "
                        "under wsd), or it and the largest (a whole run per multiplier)")
    p.add_argument("--resamples", type=int, default=1000, help="bootstrap resamples of the seeds for the fits")
    _queue_flags(p)
    p.add_argument("--set", action="append", metavar="SECTION.KEY=VALUE", help="override every arm (repeatable)")
    p.add_argument("--out", required=True, help="the study's folder; run again, the study continues in it")
    p.add_argument("--dry-run", action="store_true", help=DRY_RUN_HELP)
    p.set_defaults(func=_scale)

    p = sub.add_parser("bench", help="the matmul peak in the run's precision, then training tokens/s and MFU")
    p.add_argument("--config", default="cpu-bench", help="YAML config or preset name")
    p.add_argument("--model", choices=MODELS, help="sets model.arch")
    p.add_argument("--set", action="append", metavar="SECTION.KEY=VALUE", help="override one config value (repeatable)")
    p.add_argument("--steps", type=int, default=10, help="timed steps, after 3 untimed warm-up steps")
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    p.set_defaults(func=_bench)

    p = sub.add_parser("calibrate", help="A/A and handicapped comparisons: the decision's false-winner rate and power")
    p.add_argument("--config", default="cpu-tiny", help="YAML config or preset name: arm A, and B but for its lr")
    _hidden_alias(p, "--preset", "config")
    p.add_argument("--repeats", type=int, default=20, help="comparisons per condition, each on fresh seeds")
    p.add_argument("--handicaps", default="100,3,1.5", metavar="F,F",
                   help="conditions where arm B trains with train.lr divided by F (each F > 1)")
    p.add_argument("--steps", type=int, help="steps per comparison (default: the preset's train.max_steps)")
    p.add_argument("--seeds", type=int, default=3, help=SEEDS_HELP)
    p.add_argument("--match", choices=["steps", "flops", "time"], default="steps", help="what the budgets equalise")
    p.add_argument("--set", action="append", metavar="SECTION.KEY=VALUE", help="override both arms (repeatable)")
    p.add_argument("--out", required=True, help="the study's folder; run again, the study continues in it")
    p.add_argument("--dry-run", action="store_true", help=DRY_RUN_HELP)
    p.set_defaults(func=_calibrate)

    p = sub.add_parser("presets", help="the bundled presets and suites, each with what it is for")
    p.set_defaults(func=_presets)

    p = sub.add_parser("config", help="show: a preset resolved with --set overrides, as YAML; keys: every config key",
                       description="show: the config a command would run, the preset (and what it extends) then the "
                                   "--set overrides, every key resolved (reasonlab config show cpu-small --set "
                                   "train.lr=1e-3); keys: every key with its type, default and meaning")
    p.add_argument("action", choices=["show", "keys"], help="show a resolved config, or list every key")
    p.add_argument("config", nargs="?", help="show: YAML config or preset name")
    p.add_argument("--set", action="append", metavar="SECTION.KEY=VALUE", help="override one config value (repeatable)")
    p.set_defaults(func=_config)

    p = sub.add_parser("report", help="rebuild plots and Markdown from the JSON in an ablation or comparison folder")
    p.add_argument("dir", help="an ablation, comparison or task study folder")
    p.set_defaults(func=_report)
    for name, command in sub.choices.items():
        command.description = command.description or next(a.help for a in sub._choices_actions if a.dest == name)
        command.epilog = f"example: {EXAMPLES[name]}"
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    hook = threading.excepthook
    threading.excepthook = functools.partial(_quiet_writer_threads, hook)
    try:
        return _run(argv)
    finally:
        threading.excepthook = hook


def _quiet_writer_threads(hook: Callable, args: threading.ExceptHookArgs) -> None:
    """Keep a background writer's failed write (TensorBoard's event writer) off the terminal: the
    writer raises it again in the command's own thread, which reports it in one line."""
    if not isinstance(args.exc_value, OSError):
        hook(args)


def _run(argv: Sequence[str] | None) -> int:
    parser = build_parser()
    if not (sys.argv[1:] if argv is None else argv):  # `reasonlab` alone: what it can do
        parser.print_help()
        return 0
    try:
        args, unknown = parser.parse_known_args(argv)
        if unknown:  # an unknown flag: the closest of the command's own
            flags = list(subcommands(parser)[args.command]._option_string_actions)
            hints = "".join(closest(u.split("=")[0], flags) for u in unknown if u.startswith("--"))
            raise UserError(f"reasonlab {args.command}: unrecognized arguments: {' '.join(unknown)}{hints}")
        from reasonlab.runtime import keep_freed_memory

        keep_freed_memory()
        args.func(args)
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except (WriteFailed, Incomplete) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except OSError as exc:  # a folder or file the command needs cannot be made, read or written
        where = f"{exc.filename}: " if exc.filename else ""
        print(f"error: {where}{write_cause(exc)}", file=sys.stderr)
        return 2
    except TrainingDiverged as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except Interrupted as exc:
        print(f"interrupted: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    return 0
