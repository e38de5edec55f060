"""Number formatting for the Markdown reports: one function per kind of number, so a test can
format the JSON the same way and find every number of a report in the JSON beside it."""

from __future__ import annotations

from typing import Any

from reasonlab.experiments.results import Estimate


def fnum(x: float | None, digits: int = 4) -> str:
    return "n/a" if x is None else f"{x:.{digits}f}"


def fpct(x: float | None, digits: int = 2) -> str:
    """A fraction as a percentage: 0.1234 -> 12.34%."""
    return "n/a" if x is None else f"{100 * x:.{digits}f}%"


def fsci(x: float | None) -> str:
    return "n/a" if x is None else f"{x:.3e}"


def fint(x: float | None) -> str:
    return "n/a" if x is None else f"{round(x):,}"


def fci(stat: Estimate | dict[str, Any] | None, digits: int = 4) -> str:
    """mean [low, high], or just the mean where there is no interval; `stat` an Estimate or
    `stats.mean_ci`'s dict."""
    if not stat:
        return "n/a"
    if isinstance(stat, dict):
        stat = Estimate(**stat)
    if stat.ci_low is None:
        return fnum(stat.mean, digits)
    return f"{fnum(stat.mean, digits)} [{fnum(stat.ci_low, digits)}, {fnum(stat.ci_high, digits)}]"


def table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)
