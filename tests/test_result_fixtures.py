"""Old study folders keep loading: every kind of results JSON an earlier reasonlab wrote
(tests/fixtures/results, kept as written) still rebuilds its report, naming every arm."""

import json
import shutil
from pathlib import Path

import pytest

from reasonlab.cli import main

FIXTURES = Path(__file__).parent / "fixtures" / "results"
REPORTS = {"comparison.json": "FINAL_RESULTS.md", "tasks.json": "TASK_RESULTS.md", "scaling.json": "SCALING.md"}


@pytest.mark.slow  # draws every report's plots again
@pytest.mark.parametrize("kind", sorted(p.name for p in FIXTURES.iterdir() if p.is_dir()))
def test_an_old_results_file_rebuilds_its_report(kind, tmp_path, capsys):
    folder = shutil.copytree(FIXTURES / kind, tmp_path / kind)
    assert main(["report", str(folder)]) == 0
    for source, report in REPORTS.items():
        if not (folder / source).is_file():
            continue
        text = (folder / report).read_text()
        for arm in json.loads((folder / source).read_text())["arms"].values():
            name = arm.get("name") or arm["spec"]
            assert name in text, (report, name)
