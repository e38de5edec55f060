"""Importing reasonlab installs no warnings filter: a library that does hides warnings from every
program that imports it, tests included. Warnings it means to silence are silenced where raised."""

import subprocess
import sys
import warnings

import optuna
import pytest

from reasonlab.experiments.sweep import SweepSpec, enqueue_missing, open_study

# Spies on the warnings module record which module installs each filter while every reasonlab module
# is imported (found by file: experiments/ is a namespace package, which pkgutil's walk skips);
# the filters third-party libraries install at their import are theirs, not reasonlab's.
IMPORT_ALL = """
import pathlib
import sys
import warnings

callers = []

def spy(real):
    def record(*args, **kwargs):
        callers.append(sys._getframe(1).f_globals.get("__name__", "?"))
        return real(*args, **kwargs)
    return record

warnings.filterwarnings, warnings.simplefilter = spy(warnings.filterwarnings), spy(warnings.simplefilter)
import reasonlab
root = pathlib.Path(reasonlab.__file__).parent
for path in sorted(root.rglob("*.py")):
    parts = ("reasonlab", *path.relative_to(root).with_suffix("").parts)
    if parts[-1] != "__main__":
        __import__(".".join(parts[:-1] if parts[-1] == "__init__" else parts))
print(" ".join(c for c in callers if c.split(".")[0] == "reasonlab"))
"""


@pytest.mark.slow
def test_importing_reasonlab_installs_no_warnings_filter():
    proc = subprocess.run([sys.executable, "-c", IMPORT_ALL], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.split() == []


def test_the_sweep_raises_no_heartbeat_warning(tmp_path):
    """Optuna's ExperimentalWarning about heartbeats is silenced by the sweep's calls, not by pytest's config."""
    spec = SweepSpec(f"sqlite:///{tmp_path / 'study.db'}", "quiet", tmp_path, {"tiny": {}})
    with warnings.catch_warnings():
        warnings.simplefilter("error", optuna.exceptions.ExperimentalWarning)
        study = open_study(spec)
        assert enqueue_missing(study, ["tiny"], [0, 1]) == 2
