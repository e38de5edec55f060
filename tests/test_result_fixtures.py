"""Old study folders keep loading: every kind of results JSON an earlier reasonlab wrote
(tests/fixtures/results, kept as written) is read into the typed results of today and still
rebuilds its report, naming every arm."""

import json
import shutil
from pathlib import Path

import pytest

from reasonlab.cli import main
from reasonlab.experiments.results import SCHEMA_VERSION, read_comparison, read_tasks
from reasonlab.experiments.scaling_result import read_scaling

FIXTURES = Path(__file__).parent / "fixtures" / "results"
REPORTS = {"comparison.json": "FINAL_RESULTS.md", "tasks.json": "TASK_RESULTS.md", "scaling.json": "SCALING.md"}
READERS = {"comparison.json": read_comparison, "tasks.json": read_tasks}
TYPED = sorted(path.relative_to(FIXTURES).as_posix() for name in READERS for path in FIXTURES.glob(f"*/{name}"))


@pytest.mark.parametrize("fixture", TYPED)
def test_every_schema_reads_into_one_shape(fixture):
    """Schema 1's two-arm files held their head to head at the top level; read, they are a reference
    and one pair like any other, and writing them out and reading them back changes nothing."""
    data = json.loads((FIXTURES / fixture).read_text())
    result = READERS[Path(fixture).name](data)
    many = fixture.startswith(("comparison-many", "tasks-many"))
    assert result.schema_version == SCHEMA_VERSION and result.reference == "a"
    assert list(result.pairs) == (["b", "c"] if many else ["b"]) and (result.head_to_head is None) == many
    assert list(result.arms) == ["a", *result.pairs]
    for pair in result.pairs.values():
        assert set(pair.verdicts) == {"steps", "flops", "time"} and pair.verdicts[result.match].matched
    assert READERS[Path(fixture).name](json.loads(json.dumps(result.to_dict()))) == result
    if data.get("schema_version") == SCHEMA_VERSION:
        assert json.loads(json.dumps(result.to_dict())) == data  # today's files are read and written without loss


def test_a_scaling_result_reads_into_its_types_and_writes_without_loss():
    data = json.loads((FIXTURES / "scaling" / "scaling.json").read_text())
    result = read_scaling(data)
    assert result.arms["b"].readings[-1].loss_ci.ci_low < result.arms["b"].readings[-1].loss_ci.mean
    assert result.cost.runs == 12 and [v.budget_index for v in result.verdicts] == [0, 1, 2]
    assert json.loads(json.dumps(result.to_dict())) == data


def test_a_results_file_from_a_newer_reasonlab_is_refused_in_one_line(tmp_path, capsys):
    data = json.loads((FIXTURES / "comparison-two-v2" / "comparison.json").read_text())
    (tmp_path / "comparison.json").write_text(json.dumps({**data, "schema_version": SCHEMA_VERSION + 1}))
    assert main(["report", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "schema version 3" in err and "upgrade reasonlab" in err
    assert not (tmp_path / "FINAL_RESULTS.md").exists()


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
