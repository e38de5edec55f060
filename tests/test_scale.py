"""reasonlab scale: budgets, the lr grid, branch points, the result from finished units, bad input, and
(slow) a killed study that resumes and reuses what finished."""

import json
import math
import os
import signal
import subprocess
import sys
import time

import pytest

from reasonlab.cli import main
from reasonlab.config import resolve_config
from reasonlab.errors import UserError
from reasonlab.experiments import scale, sweep
from reasonlab.experiments.scale import ScaleArm, budget_points, choose_lr, lr_multipliers, unit_name
from reasonlab.experiments.scaling_result import build_result, write_result
from reasonlab.report import rebuild
from reasonlab.training.checkpoint import read_config
from reasonlab.training.optim import cooldown_start

ARGS = ["--set", "train.batch_size=4", "--set", "train.curves=false", "--set", "train.eval_every=1000"]


def test_budgets_are_log_spaced_or_as_given():
    points = budget_points([5], span=32, max_flops=5e13)
    assert points[-1] == pytest.approx(5e13) and points[0] == pytest.approx(5e13 / 32)
    assert [b / a for a, b in zip(points, points[1:])] == pytest.approx([32 ** 0.25] * 4)
    assert budget_points([4e12, 1e12, 2e12, 1e12]) == [1e12, 2e12, 4e12]


@pytest.mark.parametrize("values, span, max_flops, message", [
    ([1e12, 2e12], None, None, "at least 3 different budgets"),
    ([1e12, 2e12, 3e12], None, None, "span 3x"),
    ([2], 32, 5e13, "at least 3 budgets"),
    ([5], 2, 5e13, "--span must be >= 4"),
    ([5], 32, None, "--budgets K with --span and --max-flops"),
    ([-1.0, 1e12, 1e13], None, None, "must be > 0"),
])
def test_bad_budgets_are_refused(values, span, max_flops, message):
    with pytest.raises(UserError, match=message):
        budget_points(values, span, max_flops)


def test_the_lr_grid_must_hold_the_arms_own_lr():
    assert lr_multipliers([2, 0.5, 1]) == [0.5, 1, 2] and lr_multipliers(None) == [1.0]
    with pytest.raises(UserError, match="must include 1"):
        lr_multipliers([0.5, 2])


def _arm(key="a", steps=(10, 20, 40), seeds=(0, 1, 2), **overrides):
    cfg = resolve_config(None, {"train.schedule": "wsd", "train.cooldown_fraction": 0.2, **overrides})
    return ScaleArm(key, key, key, cfg, 1000, steps, seeds)


def test_each_smaller_budget_branches_at_its_own_cooldown_start():
    assert scale.branch_points(_arm()) == {0: 8, 1: 16}
    assert scale.branch_points(_arm(steps=(2, 20, 40))) == {1: 16}  # 2 steps: a cooldown of 0 steps, from scratch
    assert scale.branch_points(_arm(**{"train.warmup_steps": 10})) == {1: 16}  # budget 0 cools down in warmup


def _unit(losses: dict[int, float], flops: dict[int, float] | None = None, exact: dict[int, float] | None = None):
    runs = {}
    for i, loss in losses.items():
        final = {"loss": loss, **({"exact_match": exact[i]} if exact else {})}
        f = (flops or {}).get(i, 1e12 * 2 ** i)
        runs[str(i)] = {"run_dir": f"{id(losses)}-{i}", "steps": 10 * 2 ** i, "flops": f, "final_val": final,
                        "train_time_s": 1.0, "spent_flops": f / 2, "spent_time_s": 1.0}
    return {"runs": runs}


def test_the_lr_grid_picks_each_end_s_best_and_says_when_it_moved():
    arms = {"a": _arm()}
    finished = {(unit_name("a", 0.5, grid=True), 0): _unit({0: 3.0, 2: 2.0}),
                (unit_name("a", 1, grid=True), 0): _unit({0: 2.9, 2: 2.1}),
                (unit_name("a", 2, grid=True), 0): _unit({0: 3.5, 2: 2.5})}
    chosen, record = choose_lr(arms, [0.5, 1, 2], [1e12, 2e12, 4e12], finished)
    assert chosen["a"] == [1.0, 0.5, 0.5]  # 2e12 is nearer 4e12 than 1e12 in log-compute (at the midpoint)
    assert record["a"]["moved"] and record["a"]["best"] == {"smallest": 1.0, "largest": 0.5}


def _law(e, a, alpha, c):
    return e + a * c ** -alpha


def test_the_result_judges_fits_and_crosses_what_the_units_finished(tmp_path):
    """Three arms on synthetic finished units: B is the reference's curve plus a constant (always
    behind), C starts behind and crosses it inside the range. The verdicts, fits and crossovers
    follow, and the report is rebuilt from the JSON alone."""
    budgets = [1e11 * 4 ** i for i in range(4)]
    arms = {key: _arm(key, steps=(10, 40, 160, 640), seeds=tuple(range(3 * i, 3 * i + 3)))
            for i, key in enumerate("abc")}
    laws = {"a": (2.0, 300.0, 0.25), "b": (2.3, 300.0, 0.25), "c": (1.6, 2000.0, 0.3)}
    finished = {}
    for key, arm in arms.items():
        for seed in arm.seeds:
            noise = [1 + 0.002 * ((seed * 7 + i * 3) % 5 - 2) for i in range(4)]
            finished[(unit_name(key, 1), seed)] = _unit(
                {i: _law(*laws[key], b) * noise[i] for i, b in enumerate(budgets)}, dict(enumerate(budgets)))
    result = build_result(arms, budgets, "wsd", [1.0], {k: [1.0] * 4 for k in arms}, None, finished, resamples=200)
    at_end = {v.arm: v for v in result.verdicts if v.budget_index == 3}
    assert at_end["b"].ahead == "reference" and at_end["b"].diff == pytest.approx(0.3, rel=0.05)
    assert at_end["b"].detectable is not None and at_end["b"].p_holm >= at_end["b"].p
    fit_b = result.arms["b"].fit
    assert fit_b["E"]["estimate"] == pytest.approx(2.3, rel=0.05)
    crossings = {c["arm"]: c for c in result.crossovers}
    true_cross = next(c for c in (10 ** (11 + k / 100) for k in range(300))
                      if _law(*laws["c"], c) < _law(*laws["a"], c))
    cross_c = crossings["c"]["flops"]
    assert cross_c["low"] <= true_cross <= cross_c["high"] and crossings["c"]["no_crossing_share"] < 0.05
    assert crossings["b"]["flops"]["estimate"] is None and crossings["b"]["no_crossing_share"] > 0.95
    assert result.cost.runs == 36 and result.cost.spent_flops == pytest.approx(result.cost.independent_flops / 2)
    write_result(result, tmp_path)
    stored = json.loads((tmp_path / "scaling.json").read_text())
    assert stored["schema_version"] == 1 and stored["kind"] == "scaling" and stored["lr_grid"] == [1.0]
    (tmp_path / "SCALING.md").unlink()
    assert tmp_path / "SCALING.md" in rebuild(tmp_path)
    report = (tmp_path / "SCALING.md").read_text()
    assert f"{cross_c['estimate']:.3e}" in report and "behind" in report


@pytest.mark.parametrize("flags, message", [
    (["--budgets", "1e10,2e10"], "at least 3 different budgets"),
    (["--budgets", "3", "--span", "2", "--max-flops", "1e11"], "--span must be >= 4"),
    (["--budgets", "1e3,1e10,1e11"], "less than one step of arm cpu-tiny"),
    (["--budgets", "1e10,3e10,9e10", "--lr-grid", "0.5,2"], "must include 1"),
    (["--budgets", "1e10,3e10,9e10", "--set", "train.cooldown_fraction=1.5"], "train.cooldown_fraction"),
    (["--budgets", "1e10,3e10,9e10", "--lr-grid", "half"], "--lr-grid takes numbers"),
])
def test_bad_input_is_one_line_exit_2_and_writes_nothing(tmp_path, capsys, flags, message):
    out = tmp_path / "study"
    assert main(["scale", "--arms", "cpu-tiny,cpu-tiny-recursive", *flags, "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1 and not out.exists()
    assert main(["scale", "--arms", "cpu-tiny,control:outer:cpu-tiny", "--budgets", "1e10,3e10,9e10",
                 "--out", str(out)]) == 2
    assert "needs a recursive config" in capsys.readouterr().err and not out.exists()


STUDY = ["--arms", "cpu-tiny,cpu-tiny-recursive", "--budgets", "4e9,8e9,1.6e10", "--seeds", "2", *ARGS]


@pytest.mark.slow
def test_a_killed_study_resumes_and_reuses_what_finished(tmp_path, monkeypatch, capsys):
    """Killed (SIGKILL) once arm A's first unit has finished: the rerun keeps that unit's runs as they
    are, finishes the rest, and matches its budgets: the trunk ran to the largest, the smaller ones
    branched from it at their cooldown starts."""
    out = tmp_path / "study"
    done = out / "runs" / "a" / "lr1" / "s0" / "b0" / "summary.json"
    proc = subprocess.Popen([sys.executable, "-m", "reasonlab", "scale", *STUDY, "--out", str(out)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env={**os.environ})
    deadline = time.time() + 300
    while not done.is_file() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.2)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert done.is_file()
    finished = {p: p.stat().st_mtime_ns for p in (out / "runs" / "a" / "lr1" / "s0").glob("b*/summary.json")}
    monkeypatch.setattr(sweep, "GRACE_S", 2)  # the killed worker's unit goes stale at once
    assert main(["scale", *STUDY, "--out", str(out)]) == 0
    assert {p: p.stat().st_mtime_ns for p in finished} == finished
    result = json.loads((out / "scaling.json").read_text())
    for key, arm in result["arms"].items():
        assert [len(r["loss"]) for r in arm["readings"]] == [2, 2, 2], key
    metrics = [json.loads(line) for line in (out / "runs/a/lr1/s1/b0/metrics.jsonl").read_text().splitlines()]
    trunk = [json.loads(line) for line in (out / "runs/a/lr1/s1/b2/metrics.jsonl").read_text().splitlines()]
    start = cooldown_start(read_config(out / "runs/a/lr1/s1/b0").train)
    shared = [e["loss"] for e in metrics if e["kind"] == "train" and e["step"] <= start]
    assert shared == [e["loss"] for e in trunk if e["kind"] == "train" and e["step"] <= start]
    assert math.isfinite(result["arms"]["b"]["fit"]["E"]["estimate"])
    assert "SCALING.md" in capsys.readouterr().out


@pytest.mark.slow
def test_an_lr_grid_at_the_smallest_budget_feeds_the_study(tmp_path, capsys):
    """The grid's units and the study's share one queue and their folders: each arm's first seed at
    its best multiplier keeps the grid's run of the smallest budget."""
    out = tmp_path / "study"
    assert main(["scale", *STUDY, "--lr-grid", "0.5,1,2", "--lr-grid-at", "smallest", "--out", str(out)]) == 0
    result = json.loads((out / "scaling.json").read_text())
    for key, arm in result["arms"].items():
        search = result["lr_search"][key]
        best = search["best"]["smallest"]
        assert search["losses"]["smallest"][f"{best:g}"] == min(search["losses"]["smallest"].values())
        assert [r["lr_multiplier"] for r in arm["readings"]] == [best] * 3
        first = arm["readings"][0]
        assert first["loss"][0] == search["losses"]["smallest"][f"{best:g}"]  # the grid's run, reused
    assert "not measured" in (out / "SCALING.md").read_text()
