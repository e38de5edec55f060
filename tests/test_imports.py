"""Importing reasonlab leaves the host program's matplotlib alone."""

import os
import subprocess
import sys

import pytest

MODULES = ("reasonlab", "reasonlab.cli", "reasonlab.report", "reasonlab.report.comparison", "reasonlab.report.tasks",
           "reasonlab.report.ablation", "reasonlab.report.plots", "reasonlab.experiments.compare",
           "reasonlab.experiments.tasks")

CHECK = f"""
import sys
import matplotlib

before = dict.__getitem__(matplotlib.rcParams, "backend")
for name in {MODULES!r}:
    __import__(name)
after = dict.__getitem__(matplotlib.rcParams, "backend")
assert after == before, f"importing reasonlab switched matplotlib's backend from {{before!r}} to {{after!r}}"
assert "matplotlib.pyplot" not in sys.modules, "importing reasonlab imported matplotlib.pyplot"
"""


@pytest.mark.slow  # a fresh interpreter importing torch, matplotlib and every report
def test_import_does_not_touch_the_matplotlib_backend():
    env = {**os.environ, "MPLBACKEND": "svg"}
    done = subprocess.run([sys.executable, "-c", CHECK], env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
