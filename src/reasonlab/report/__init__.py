"""Plots and reports, built only from the JSON that runs, ablations and comparisons write."""

from __future__ import annotations

import json
from pathlib import Path

from reasonlab.errors import UserError
from reasonlab.report.plots import plot_run_curves

__all__ = ["plot_run_curves", "rebuild"]


def rebuild(directory: str | Path) -> list[Path]:
    """Re-create the plots and Markdown of an ablation, comparison, task or scaling folder from its JSON."""
    from reasonlab.experiments.results import read_comparison, read_tasks
    from reasonlab.experiments.scaling_result import read_scaling
    from reasonlab.report.ablation import write_ablation_report
    from reasonlab.report.comparison import write_comparison_report
    from reasonlab.report.scaling import write_scaling_report
    from reasonlab.report.tasks import write_task_report

    directory = Path(directory)
    written: list[Path] = []
    sources = {  # file: its reader, its report, what the report writes
        "ablation_results.json": (None, write_ablation_report, ["ablation.png", "ABLATION_SUMMARY.md"]),
        "comparison.json": (read_comparison, write_comparison_report,
                            ["comparison.png", "comparison_compute.png", "FINAL_RESULTS.md"]),
        "tasks.json": (read_tasks, write_task_report,
                       ["accuracy_by_level.png", "test_time_segments.png", "TASK_RESULTS.md"]),
        "scaling.json": (read_scaling, write_scaling_report, ["scaling.png", "SCALING.md"]),
    }
    for name, (read, write, outputs) in sources.items():
        path = directory / name
        if path.is_file():
            try:
                data = json.loads(path.read_text())
            except json.JSONDecodeError as exc:
                raise UserError(f"{path} is not valid JSON: {exc}") from None
            write(read(data) if read else data, directory)
            written += [directory / o for o in outputs if (directory / o).is_file()]
    if not written:
        raise UserError(f"nothing to report in {directory}: no ablation_results.json, comparison.json, "
                        "tasks.json or scaling.json")
    return written
