"""ablation.png and ABLATION_SUMMARY.md, built from ablation_results.json alone."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from matplotlib.figure import Figure

from reasonlab.io import atomic_write_text
from reasonlab.report.markdown import fci, fint, fnum, fpct, fsci, table
from reasonlab.report.plots import save_figure


def plot_ablation(results: dict[str, Any], path: Path) -> None:
    configs, ranked = results["configs"], results["ranking"]
    if not ranked:
        return
    fig = Figure(figsize=(14, max(4.5, 0.35 * len(ranked) + 1.5)))
    bars, curves = fig.subplots(1, 2)
    stats = [configs[n]["final_val_loss"] for n in ranked]
    means = [s["mean"] for s in stats]
    errors = [[0.0 if s["ci_low"] is None else s["mean"] - s["ci_low"] for s in stats],
              [0.0 if s["ci_high"] is None else s["ci_high"] - s["mean"] for s in stats]]
    y = list(range(len(ranked)))[::-1]
    bars.barh(y, means, xerr=errors, color=["tab:green"] + ["tab:blue"] * (len(ranked) - 1), capsize=3)
    bars.set_yticks(y, ranked)
    low = min(means) if means else 0.0
    bars.set_xlim(left=low - 0.1 * (max(means) - low + 1e-9) - 0.05)
    bars.set_xlabel(f"final val loss (mean, {results['ci_level']}% CI over seeds)")
    bars.set_title("ranking")
    for name in ranked:
        curve = configs[name]["val_curve"]
        curves.plot([p["step"] for p in curve], [p["loss"] for p in curve], label=name,
                    lw=2.5 if name == ranked[0] else 1)
    curves.set_xlabel("step")
    curves.set_ylabel("val loss")
    curves.set_title("val loss curves (mean over seeds)")
    curves.grid(alpha=0.3)
    curves.legend(fontsize=7, ncol=2)
    fig.suptitle(f"ablation: {results['suite']}, {results['steps']} steps")
    save_figure(fig, path)


def ablation_markdown(results: dict[str, Any]) -> str:
    configs, ranked = results["configs"], results["ranking"]
    level = results["ci_level"]
    n_seeds = len(results["seeds"])
    lines = [f"# Ablation: {results['suite']}", "",
             f"{len(configs)} configs x {n_seeds} seeds, {results['steps']} steps each; "
             f"base preset `{results['base']}`. "
             f"Values are means over seeds with their {level}% t-interval in brackets.", ""]
    if not ranked:
        return "\n".join(lines + ["No config has finished yet."]) + "\n"
    best = results["best"]
    rows = []
    for rank, name in enumerate(ranked, 1):
        e = configs[name]
        rows.append([str(rank), name, fci(e["final_val_loss"]), fnum(e["best_val_loss"]["mean"]),
                     fpct(e["final_val_accuracy"]["mean"]), fnum(e["final_val_perplexity"]["mean"], 2),
                     fint(e["tokens_per_s"]["mean"]), fnum(e["total_time_s"]["mean"], 1),
                     fsci(e["flops"]["mean"]), e["status"] + (" (NaN)" if e["nan_encountered"] else "")])
    header = ["rank", "config", "final val loss", "best val loss", "val accuracy", "perplexity", "tokens/s", "time (s)",
              "FLOPs", "status"]
    lines += ["## Ranking", "", table(header, rows), ""]
    others = [n for n in configs if n not in ranked]
    if others:
        unranked = ", ".join(f"{n} ({configs[n]['status']})" for n in others)
        lines += [f"Not ranked (not every seed completed): {unranked}.", ""]
    rng = results["range"]
    lines += ["## Best config", "", f"**{best}**: final val loss {fci(configs[best]['final_val_loss'])}. "
              f"Across the ranked configs the mean final val loss spans {fnum(rng['min'])} to {fnum(rng['max'])} "
              f"(a spread of {fnum(rng['spread'])}).", "", "## Which differences exceed the noise", ""]
    if n_seeds < 2:
        lines += ["With one seed per config the seed-to-seed noise is not measured, so no difference can be called "
                  "real; rerun with `--seeds 2` or more before trusting the order."]
    else:
        rows = []
        for name, d in results["vs_best"].items():
            verdict = f"worse than {best}" if d["significant"] and d["diff"] > 0 else (
                f"better than {best}" if d["significant"] else "no significant difference")
            interval = "n/a" if d["ci_low"] is None else f"[{fnum(d['ci_low'])}, {fnum(d['ci_high'])}]"
            rows.append([name, fnum(d["diff"]), interval, verdict])
        lines += [f"Difference in final val loss to the best config (each config minus {best}), "
                  f"Welch {level}% interval:", "",
                  table(["config", "difference", f"{level}% CI", "verdict"], rows)]
        tied = [n for n, d in results["vs_best"].items() if not d["significant"]]
        lines += ["", f"{len(tied)} of {len(results['vs_best'])} configs are within the noise of {best}." if tied else
                  f"Every other config is significantly worse than {best}."]
    return "\n".join(lines) + "\n"


def write_ablation_report(results: dict[str, Any], out: Path) -> None:
    """ablation.png (only once some config has finished) and ABLATION_SUMMARY.md."""
    plot_ablation(results, out / "ablation.png")
    atomic_write_text(out / "ABLATION_SUMMARY.md", ablation_markdown(results))
