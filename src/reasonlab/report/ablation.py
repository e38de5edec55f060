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
    lines += _noise_section(results, n_seeds)
    if "confirmation" in results:
        lines += ["", *_confirmation_section(results)]
    return "\n".join(lines) + "\n"


def _count(comparisons: int) -> str:
    return f"{comparisons} comparison" + ("" if comparisons == 1 else "s")


def _pvalue(p: float | None) -> str:
    return "n/a" if p is None else "< 0.001" if p < 0.001 else f"{p:.3f}"


def _vs_best_table(vs_best: dict[str, dict[str, Any]], best: str, level: int) -> list[str]:
    """One row per config against the best, and how many are within its noise."""
    rows = []
    for name, d in vs_best.items():
        interval = "n/a" if d["ci_low"] is None else f"[{fnum(d['ci_low'])}, {fnum(d['ci_high'])}]"
        verdict = f"worse than {best}" if d["significant"] else "within the noise"
        rows.append([name, fnum(d["diff"]), interval, _pvalue(d.get("p")), _pvalue(d.get("p_holm")), verdict])
    tied = [n for n, d in vs_best.items() if not d["significant"]]
    summary = (f"{len(tied)} of {len(vs_best)} configs are within the noise of {best}." if tied else
               f"Every other config is significantly worse than {best}." if vs_best else "No other config was ranked.")
    header = ["config", "difference", f"{level}% CI", "p", "p (Holm)", "verdict"]
    return [table(header, rows), "", summary]


def _noise_section(results: dict[str, Any], n_seeds: int) -> list[str]:
    """The sweep's differences to its best, and why they are Holm-corrected: that best won on these seeds."""
    if n_seeds < 2:
        return ["With one seed per config the seed-to-seed noise is not measured, so no difference can be called "
                "real; rerun with `--seeds 2` or more before trusting the order."]
    best, vs_best, level = results["best"], results["vs_best"], results["ci_level"]
    if not all("p_holm" in d for d in vs_best.values()):  # written before the Holm correction
        return [f"Difference in final val loss to the best config (each config minus {best}), Welch {level}% "
                "interval, not corrected for the several comparisons (results written before the correction; "
                "rerun the same `reasonlab ablate` command to rebuild them without rerunning any trial):", "",
                *_vs_best_table(vs_best, best, level)]
    tested = sum(d["p"] is not None for d in vs_best.values())
    unbiased = ("The confirmation on fresh seeds below is the unbiased ranking." if "confirmation" in results else
                "Only a confirmation on fresh seeds (`reasonlab ablate ... --confirm K`) gives an unbiased ranking.")
    return [f"{best} was chosen as the lowest of {len(results['ranking'])} means on the same {n_seeds} seeds it is "
            "compared on here, which flatters it: tested one by one, equal configs would often look worse than it "
            "(in about half of all ablations of 15 equal configs x 3 seeds). So each difference (each config minus "
            f"{best}) is tested with Welch's t-test, the p-values are Holm-corrected over the {_count(tested)}, and "
            f"a config is called worse only where p (Holm) < {1 - level / 100:.2f}; the {level}% CI is Welch's "
            "interval of one comparison, uncorrected. " + unbiased, "", *_vs_best_table(vs_best, best, level)]


def _confirmation_section(results: dict[str, Any]) -> list[str]:
    """The sweep's top configs ranked on fresh seeds alone: the ranking to trust."""
    conf, level = results["confirmation"], results["ci_level"]
    seeds, ranked = conf["seeds"], conf["ranking"]
    lines = ["## Confirmation on fresh seeds", "",
             f"The sweep's top {len(conf['candidates'])} configs, rerun on {len(seeds)} fresh seeds "
             f"({seeds[0]}..{seeds[-1]}) the sweep did not use and ranked on those alone: these seeds took no part "
             "in choosing them, so this ranking is unbiased. `DIR:best` (`reasonlab compare`) takes its best.", ""]
    rows = [[str(rank), name, fci(conf["configs"][name]), str(results["ranking"].index(name) + 1)]
            for rank, name in enumerate(ranked, 1)]
    lines += [table(["rank", "config", "final val loss (fresh seeds)", "sweep rank"], rows), ""]
    unranked = [n for n in conf["candidates"] if n not in ranked]
    if unranked:
        lines += [f"Not ranked (not every fresh seed completed): {', '.join(unranked)}.", ""]
    if not ranked:
        return lines + [f"No config finished every fresh seed; `DIR:best` takes the sweep's best, {results['best']}."]
    best = conf["best"]
    lines += [f"**{best}** is the best on fresh seeds: final val loss {fci(conf['configs'][best])}.", ""]
    if len(seeds) < 2:
        return lines + ["With one fresh seed the noise is not measured; confirm with `--confirm 2` or more to test "
                        "the differences."]
    return lines + [f"Difference in final val loss on the fresh seeds (each config minus {best}), Welch's test, "
                    f"Holm-corrected over the {_count(len(conf['vs_best']))}:", "",
                    *_vs_best_table(conf["vs_best"], best, level)]


def write_ablation_report(results: dict[str, Any], out: Path) -> None:
    """ablation.png (only once some config has finished) and ABLATION_SUMMARY.md."""
    plot_ablation(results, out / "ablation.png")
    atomic_write_text(out / "ABLATION_SUMMARY.md", ablation_markdown(results))
