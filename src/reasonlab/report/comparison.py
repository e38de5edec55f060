"""comparison.png, comparison_compute.png and FINAL_RESULTS.md, built from comparison.json alone."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from reasonlab.config import config_from_dict  # noqa: E402
from reasonlab.io import atomic_write_text  # noqa: E402
from reasonlab.report.markdown import fci, fint, fnum, fpct, fsci, table  # noqa: E402
from reasonlab.report.plots import save_figure  # noqa: E402

COLORS = {"a": "tab:blue", "b": "tab:orange"}
MATCH_LABELS = {"steps": "steps", "flops": "FLOPs", "time": "wall time"}


def _curves(ax: Any, result: dict[str, Any], field: str, x: str, y: str) -> None:
    for arm, data in result["arms"].items():
        for run in data["per_seed"].values():
            ax.plot([e[x] for e in run[field]], [e[y] for e in run[field]], color=COLORS[arm], alpha=0.25, lw=0.8)
        mean = data[field]
        ax.plot([e[x] for e in mean], [e[y] for e in mean], color=COLORS[arm], lw=2,
                label=f"{arm.upper()}: {data['name']}", marker="o" if field == "val_history" else None, ms=3)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)


def plot_comparison(result: dict[str, Any], out: Path) -> None:
    metric = result["metric"]
    judged_loss = metric["key"] == "loss"
    last = ("perplexity", "val perplexity") if judged_loss else (metric["key"], metric["label"])
    fig, axes = plt.subplots(2, 2, figsize=(12, 8))
    for ax, field, key, title in ((axes[0, 0], "train_history", "loss", "train loss"),
                                  (axes[0, 1], "val_history", "loss", "val loss"),
                                  (axes[1, 0], "val_history", "accuracy", "val next-token accuracy"),
                                  (axes[1, 1], "val_history", *last)):
        _curves(ax, result, field, "step", key)
        ax.set_title(title)
        ax.set_xlabel("step")
    if judged_loss:
        axes[1, 1].set_yscale("log")
    fig.suptitle(f"A vs B, {result['n_seeds']} seeds per arm (thin: seeds, thick: mean)")
    save_figure(fig, out / "comparison.png")

    fig, axes = plt.subplots(1, 2, figsize=(12, 4.5))
    for ax, x, label in ((axes[0], "flops", "training FLOPs"), (axes[1], "time_s", "training wall time (s)")):
        _curves(ax, result, "val_history", x, metric["key"])
        ax.set_xlabel(label)
        ax.set_ylabel(metric["label"])
    axes[0].set_xscale("log")
    fig.suptitle(f"{metric['label']} against compute")
    save_figure(fig, out / "comparison_compute.png")


def _arm_config_lines(stored: dict[str, Any]) -> list[str]:
    cfg = config_from_dict(stored)  # maps the keys of comparisons written before a rename
    m, t, r = vars(cfg.model), vars(cfg.train), vars(cfg.recursion)
    lines = [f"- Architecture: {m['arch']}, d_model {m['d_model']}, {m['n_layers']} layers, {m['n_heads']} heads, "
             f"{m['n_experts']} experts top-{m['top_k']}, d_ff {m['d_ff']}, context {m['seq_len']}",
             f"- Learning rate {t['lr']}, warmup {t['warmup_steps']} steps, dropout {m['dropout']}, "
             f"batch {t['batch_size']}, grad clip {t['grad_clip']}"]
    if m["arch"] == "recursive":
        act = f"ACT on, exploration {r['halt_exploration_prob']}" if r["use_act"] else "ACT off"
        lines.append(f"- Recursion: H_cycles {r['H_cycles']}, L_cycles {r['L_cycles']}, up to {r['max_segments']} "
                     f"segments, {act}, gradient through the last {r['grad_cycles']} H cycle(s)")
    return lines


def margin_text(result: dict[str, Any], v: dict[str, Any]) -> str:
    """A verdict's margin: % of the worse loss, or points of exact match."""
    return f"{fnum(v['margin'], 2)}%" if result["metric"]["lower_is_better"] else f"{fnum(v['margin'], 2)} points"


def _verdict_text(result: dict[str, Any], dim: str) -> str:
    v = result["verdicts"][dim]
    if not v["available"]:
        return f"not available: {v['reason']}"
    if v["winner"] is None:
        return "no significant difference"
    return f"{result['arms'][v['winner']]['name']} wins by {margin_text(result, v)}"


def _metric_rows(result: dict[str, Any]) -> list[list[str]]:
    rows = []
    for row in result["metric_table"]:
        fmt = fpct if row["metric"] in ("accuracy", "exact match") else (lambda x: fnum(x, 2)) if row["metric"] == "perplexity" else fnum
        adv = "tie" if row["better"] is None else f"{row['better'].upper()} better" + (
            "" if row["advantage_pct"] is None else f" by {fnum(row['advantage_pct'], 1)}%")
        rows.append([row["metric"], fmt(row["a"]), fmt(row["b"]), adv])
    for key, label, fmt in (("steps_per_s", "speed (steps/s)", lambda x: fnum(x, 2)), ("tokens_per_s", "speed (tokens/s)", fint),
                            ("train_time_s", "training time (s)", lambda x: fnum(x, 1))):
        s = result["speed"][key]
        faster = "tie" if s["better"] is None else f"{s['better'].upper()} faster" + (
            "" if s["advantage_pct"] is None else f" by {fnum(s['advantage_pct'], 1)}%")
        rows.append([label, fmt(s["a"]), fmt(s["b"]), faster])
    return rows


def _verdict_rows(result: dict[str, Any]) -> list[list[str]]:
    rows = []
    for dim, label, fmt in (("steps", "equal steps", lambda x: fint(x)), ("flops", "equal FLOPs", fsci),
                            ("time", "equal time (s)", lambda x: fnum(x, 1))):
        d = result["verdicts"][dim]
        label += " (matched)" if d["matched"] else ""
        if not d["available"]:
            rows.append([label, "n/a", "n/a", "n/a", "n/a", "n/a", _verdict_text(result, dim)])
            continue
        ci = d["diff_b_minus_a"]
        interval = "n/a" if ci["ci_low"] is None else f"[{fnum(ci['ci_low'])}, {fnum(ci['ci_high'])}]"
        rows.append([label, fmt(d["point"]), fci(d["a"]), fci(d["b"]), fnum(ci["diff"]), interval, _verdict_text(result, dim)])
    return rows


def _headers(result: dict[str, Any]) -> tuple[list[str], list[str]]:
    a, b, level = result["arms"]["a"]["name"], result["arms"]["b"]["name"], result["ci_level"]
    label = result["metric"]["label"]
    return (["metric", f"A: {a}", f"B: {b}", "advantage"],
            ["budget", "at", f"A {label}", f"B {label}", "B - A", f"{level}% CI", "verdict"])


def verdict_table(result: dict[str, Any]) -> str:
    """The judged metric of both arms at equal steps, FLOPs and time, with the verdicts."""
    return table(_headers(result)[1], _verdict_rows(result))


def headline(result: dict[str, Any]) -> str:
    """The metric table and the three verdicts, for a terminal."""
    return table(_headers(result)[0], _metric_rows(result)) + "\n\n" + verdict_table(result)


def comparison_markdown(result: dict[str, Any]) -> str:
    arms, level, match = result["arms"], result["ci_level"], result["match"]
    label = MATCH_LABELS[match]
    a, b = arms["a"], arms["b"]
    v, metric = result["verdicts"][match], result["metric"]
    lines = [f"# Final Results: {a['name']} vs {b['name']}", "", "## Executive summary", ""]
    if v["winner"]:
        win = arms[v["winner"]]["name"]
        ahead = "lower" if metric["lower_is_better"] else "higher"
        lines.append(f"**Winner at equal {label}: {win}**, with a {margin_text(result, v)} {ahead} {metric['label']} "
                     f"({fnum(v['a']['mean'])} vs {fnum(v['b']['mean'])}; {level}% CI of B minus A: "
                     f"[{fnum(v['diff_b_minus_a']['ci_low'])}, {fnum(v['diff_b_minus_a']['ci_high'])}]).")
    else:
        ci = v["diff_b_minus_a"]
        interval = "not measured with one seed" if ci["ci_low"] is None else f"[{fnum(ci['ci_low'])}, {fnum(ci['ci_high'])}]"
        lines.append(f"**No significant difference at equal {label}**: {metric['label']} {fnum(v['a']['mean'])} (A) vs "
                     f"{fnum(v['b']['mean'])} (B); the {level}% CI of B minus A is {interval}.")
    lines += ["", f"Budgets matched on {label}: A ran {a['max_steps']} steps, B ran {b['max_steps']} steps, "
              f"{result['n_seeds']} seeds per arm. Means over seeds; {level}% t-intervals in brackets.", ""]
    for arm in (a, b):
        agg = arm["aggregate"]
        lines += [f"## {arm['name']}", "", "**Configuration**", "", *_arm_config_lines(arm["config"]), "",
                  f"**Final metrics ({arm['max_steps']} steps)**", "",
                  f"- Val loss: {fci(agg['final_val_loss'])}",
                  f"- Perplexity: {fci(agg['final_val_perplexity'], 2)}",
                  f"- Accuracy: {fpct(agg['final_val_accuracy']['mean'])}",
                  *([f"- Exact match: {fpct(agg['final_val_exact_match']['mean'])}"] if "final_val_exact_match" in agg else []),
                  f"- Best val loss: {fci(agg['best_val_loss'])}",
                  f"- Training time: {fnum(agg['train_time_s']['mean'], 1)} s of {fnum(agg['total_time_s']['mean'], 1)} s wall",
                  f"- Training FLOPs: {fsci(agg['flops']['mean'])}", ""]
    lines += ["## Comparison", "", table(_headers(result)[0], _metric_rows(result)), "",
              "## Verdicts", "",
              f"{metric['label'].capitalize()} of each arm at the same budget (interpolated along its eval curve where that budget falls mid-run); "
              f"difference B minus A with Welch's {level}% interval.", ""]
    lines += [verdict_table(result), "",
              "## Recommendations", "", *[f"- {note}" for note in result["recommendations"]], "",
              "Plots: `comparison.png` (against step), `comparison_compute.png` (against FLOPs and wall time)."]
    return "\n".join(lines) + "\n"


def write_comparison_report(result: dict[str, Any], out: Path) -> None:
    plot_comparison(result, out)
    atomic_write_text(out / "FINAL_RESULTS.md", comparison_markdown(result))
