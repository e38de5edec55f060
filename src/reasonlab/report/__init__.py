"""Plots and reports built from the JSON a run writes."""

from reasonlab.report.plots import plot_run_curves

__all__ = ["plot_run_curves"]
