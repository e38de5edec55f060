"""More than two arms: matched controls by name, planning every arm's budget, Holm across the
comparisons with the reference, one table; and bad --arms input."""

import dataclasses
import json
import re

import pytest

from conftest import CONFIGS, judged_arm, tiny_config
from reasonlab.cli import build_parser, main
from reasonlab.errors import UserError
from reasonlab.experiments import aggregate, budgets, judge
from reasonlab.experiments.arms import Arm, arm_config, make_arms, seed_lists
from reasonlab.experiments.budgets import plan_arms, plan_steps, pooled_step_times
from reasonlab.experiments.judge import METRICS, holm_across, verdicts
from reasonlab.experiments.results import HeadToHead, ReadAt, read_comparison, read_tasks
from reasonlab.experiments.stats import welch_diff
from reasonlab.model import config_step_flops, control_config
from reasonlab.report.comparison import comparison_markdown

RECURSIVE = str(CONFIGS / "cpu-tiny-recursive.yaml")


def _fake_calibration(step_s):
    def calibrate(configs, **kwargs):
        return {"rounds": {arm: [step_s[arm]] * 4 for arm in configs}, "step_s": dict(step_s)}
    return calibrate


def test_every_arm_spends_what_the_costliest_spends(tmp_path, monkeypatch):
    # baseline step FLOPs are batch x seq_len x FLOPs per token: batch 2, 4, 8 cost 1 : 2 : 4
    configs = {key: tiny_config(**{"train.batch_size": batch}) for key, batch in (("a", 2), ("b", 4), ("c", 8))}
    assert config_step_flops(configs["c"]) == 2 * config_step_flops(configs["b"]) == 4 * config_step_flops(configs["a"])
    monkeypatch.setattr(budgets, "calibrate_step_times", _fake_calibration({"a": 0.1, "b": 0.3, "c": 0.2}))
    planned, _ = plan_steps(configs, 10, "flops", tmp_path / "flops", lambda line: None)
    assert planned == {"a": 40, "b": 20, "c": 10}
    planned, _ = plan_steps(configs, 10, "time", tmp_path / "time", lambda line: None)
    assert planned == {"a": 30, "b": 10, "c": 15}  # the slowest (B) runs 10 steps: 3 s for every arm
    planned, _ = plan_steps(configs, 10, "steps", tmp_path / "steps", lambda line: None)
    assert planned == {"a": 10, "b": 10, "c": 10}


def test_plan_arms_budgets_and_seeds_every_arm(tmp_path, monkeypatch):
    monkeypatch.setattr(budgets, "calibrate_step_times", _fake_calibration({"a": 0.1, "b": 0.1, "c": 0.1}))
    arms = {key: Arm(key, "cpu-tiny", tiny_config(**{"train.batch_size": batch}))
            for key, batch in (("a", 8), ("b", 2), ("c", 4))}
    lines = []
    planned = plan_arms(arms, 6, 2, "flops", tmp_path, lines.append, seed_offset=1)
    assert [arm.steps for arm in planned.values()] == [6, 24, 12]
    assert [arm.seeds for arm in planned.values()] == [[1, 2], [3, 4], [5, 6]]
    assert [line for line in lines if line.startswith("arm ")] == [
        "arm A a: 6 steps x seeds 1..2", "arm B b: 24 steps x seeds 3..4", "arm C c: 12 steps x seeds 5..6"]


def test_seeds_and_names_of_many_arms():
    arms = make_arms(["cpu-tiny", RECURSIVE, "cpu-tiny"])
    assert [arm.name for arm in arms.values()] == ["cpu-tiny (A)", "cpu-tiny-recursive", "cpu-tiny (C)"]
    assert seed_lists(arms, 2, 0, paired=False) == {"a": [0, 1], "b": [2, 3], "c": [4, 5]}
    assert seed_lists(arms, 2, 7, paired=True) == {"a": [7, 8], "b": [7, 8], "c": [7, 8]}


def test_identical_arms_share_a_step_time_and_others_share_the_reference_s_unless_they_differ():
    base, deep = tiny_config(), tiny_config(**{"model.n_layers": 4})
    rounds = {"a": [0.10, 0.11, 0.10, 0.10], "b": [0.20, 0.21, 0.20, 0.20], "c": [0.20, 0.20, 0.21, 0.20],
              "d": [0.11, 0.11, 0.10, 0.11]}
    step_s = pooled_step_times({"a": base, "b": deep, "c": deep, "d": tiny_config(**{"train.lr": 1e-3})}, rounds)
    assert step_s["b"] == step_s["c"] == pytest.approx(0.2)  # one config: one pooled median
    assert step_s["a"] == step_s["d"] == pytest.approx(0.105)  # D's times do not differ from A's


def _runs(losses, last_step, name="x"):
    """One arm whose seeds' val loss is flat at the given values, evaluated at steps 10 and `last_step`."""
    def history(loss):
        return [{"step": s, "flops": 100 * s, "calibrated_time_s": s / 10, "loss": loss} for s in (10, last_step)]
    summaries = [{"final_val": {"loss": loss, "perplexity": 2.0 * loss, "accuracy": 0.5 - loss / 10},
                  "best_val_loss": loss, "train_time_s": 3.0, "total_time_s": 4.0, "steps_per_s": 10.0,
                  "tokens_per_s": 5000.0, "flops": 1e9} for loss in losses]
    arm = judged_arm([history(loss) for loss in losses], summaries, name=name)
    return dataclasses.replace(arm, aggregate=aggregate.seed_stats(summaries, "loss"))


def _judged(arms):
    pairs = {key: HeadToHead([], {}, verdicts({"a": arms["a"], "b": arm}, "steps", METRICS["loss"]), None)
             for key, arm in arms.items() if key != "a"}
    return holm_across(pairs, "steps", METRICS["loss"])


def test_verdicts_are_holm_corrected_across_the_arms_and_each_pair_read_where_both_reached():
    reference, b, c, d = [1.0, 1.1, 1.2], [1.3, 1.4, 1.5], [1.25, 1.45, 1.5], [1.05, 1.2, 1.25]
    p = {key: welch_diff(reference, losses)["p"] for key, losses in (("b", b), ("c", c), ("d", d))}
    assert p["b"] < p["c"] < 0.05 < p["d"]  # B and C would each win a head to head

    arms = {"a": _runs(reference, 30), "b": _runs(b, 30), "c": _runs(c, 30), "d": _runs(d, 20)}
    pairs = _judged(arms)
    # Holm by hand: the smallest p times 3, the next times 2 (never below the one before), the last times 1
    expected = {"b": 3 * p["b"], "c": max(3 * p["b"], 2 * p["c"]), "d": max(3 * p["b"], 2 * p["c"], p["d"])}
    for key, pair in pairs.items():
        v = pair.verdicts["steps"]
        assert v.p_holm == pytest.approx(expected[key])
        stop = 20 if key == "d" else 30  # D stops early: only its own pair is read there
        assert v.point == stop
        assert v.read_at["a"] == ReadAt(step=stop, of=30)
        assert v.winner is None and pair.winner is None  # corrected p > 0.05 for all three
    assert pairs["b"].verdicts["flops"].role == "descriptive"

    pairs = _judged({"a": _runs(reference, 30), "b": _runs(b, 30), "c": _runs(c, 30)})
    both = max(2 * p["b"], p["c"])
    assert both < 0.05
    for key in ("b", "c"):
        v = pairs[key].verdicts["steps"]
        assert v.p_holm == pytest.approx(both if key == "c" else 2 * p["b"])
        assert v.winner == "a" and pairs[key].winner == "a"  # the reference's loss is lower
        assert pairs[key].verdicts["flops"].ahead == "a" and pairs[key].verdicts["flops"].winner is None


def test_two_arms_are_one_pair_and_more_are_one_table():
    a, b, c = (_runs(losses, 30, name) for name, losses in (("x", [1.0, 1.1, 1.2]), ("y", [1.3, 1.4, 1.5]),
                                                             ("z", [1.05, 1.2, 1.25])))
    two = judge.judge({"a": a, "b": b}, 30, "steps", "loss")
    assert two.reference == "a" and list(two.pairs) == ["b"] and two.head_to_head is two.pairs["b"]
    assert two.head_to_head.verdicts["steps"].p_holm is None and two.head_to_head.winner == "a"  # one test: no Holm

    many = judge.judge({"a": a, "b": b, "c": c}, 30, "steps", "loss")
    assert many.head_to_head is None and list(many.pairs) == ["b", "c"]
    assert many.pairs["b"].metric_table == two.pairs["b"].metric_table and many.pairs["b"].speed == two.pairs["b"].speed
    for result in (two, many):
        assert result.arms["a"].params["total"] > 0 and result.arms["a"].flops_per_token > 0
        assert read_comparison(json.loads(json.dumps(result.to_dict()))) == result
    text = comparison_markdown(many)
    assert len(re.findall(r"^\| arm \|", text, re.MULTILINE)) == 1 and text.count("\n|---") == 1
    assert "| A: x |" in text and "| B: y |" in text and "| C: z |" in text
    assert "# Final Results: x vs y" in comparison_markdown(two) and "## Verdicts" in comparison_markdown(two)


def test_an_arm_that_stops_early_is_read_at_its_own_point_in_the_table():
    a, b = _runs([1.0, 1.1, 1.2], 30, "x"), _runs([1.3, 1.4, 1.5], 30, "y")
    c = _runs([1.0, 1.2, 1.2], 20, "z")
    text = comparison_markdown(judge.judge({"a": a, "b": b, "c": c}, 30, "steps", "loss"))
    row = {line.split(" |")[0]: line for line in text.splitlines() if line.startswith("| ")}
    assert "val loss at equal steps (decision) |" in text  # two points: the header names none
    assert "at 30 |" in row["| B: y"] and "at 20 |" in row["| C: z"] and "at 30 |" in row["| A: x"]


def test_a_control_arm_is_built_from_its_recursive_spec_and_named_for_it():
    recursive = arm_config(RECURSIVE, {"model.d_model": 32})[1]
    for kind in ("params", "flops"):
        name, cfg = arm_config(f"control:{kind}:{RECURSIVE}", {"model.d_model": 32})
        assert name == f"control:{kind}:cpu-tiny-recursive"
        assert cfg == control_config(recursive, kind) and cfg.model.arch == "baseline" and cfg.model.d_model == 32
    assert arm_config(f"control:flops:{RECURSIVE}")[1].model.n_layers > recursive.model.n_layers
    arms = make_arms([f"control:params:{RECURSIVE}", RECURSIVE])
    assert arms["a"].name == "control:params:cpu-tiny-recursive" and arms["a"].source.startswith("control:params:")


def test_a_control_of_an_ablation_best_starts_past_its_seeds(tmp_path):
    sweep = tmp_path / "sweep"
    sweep.mkdir()
    best = tiny_config(**{"model.arch": "hrm"}).to_dict()
    (sweep / "ablation_results.json").write_text(json.dumps({"seeds": [0, 1, 2], "best": "x",
                                                             "configs": {"x": {"config": best}}}))
    arms = make_arms(["cpu-tiny", f"control:flops:{sweep}:best"])
    assert arms["b"].name == "control:flops:x" and arms["b"].cfg.model.arch == "baseline"
    assert seed_lists(arms, 1, 0, paired=False) == {"a": [3], "b": [4]}


@pytest.mark.parametrize(("spec", "fragment"), [
    ("control:params:cpu-tiny", "needs a recursive config"),
    (f"control:bogus:{RECURSIVE}", "unknown control 'bogus'"),
    ("control:params", "control:KIND:SPEC"),
])
def test_a_bad_control_is_one_user_error(spec, fragment):
    with pytest.raises(UserError, match=re.escape(fragment)) as raised:
        arm_config(spec)
    assert "\n" not in str(raised.value) and spec in str(raised.value)


def _bad(args, capsys, fragment):
    assert main(args) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "\n" not in err and fragment in err, err


def test_bad_arms_exit_2_with_one_line(tmp_path, capsys):
    out = tmp_path / "out"
    for command in (["compare"], ["tasks", "--task", "parity"]):
        _bad([*command, "--arms", "cpu-tiny", "--out", str(out)], capsys, "--arms")
        _bad([*command, "--arms", "cpu-tiny,,cpu-tiny", "--out", str(out)], capsys, "--arms")
        _bad([*command, "--arms", "cpu-tiny,cpu-tiny", "--a", "cpu-tiny", "--out", str(out)], capsys, "--arms")
        _bad([*command, "--arms", f"cpu-tiny,control:params:cpu-tiny,{RECURSIVE}", "--out", str(out)], capsys,
             "needs a recursive config")
        _bad([*command, "--arms", f"cpu-tiny,control:nope:{RECURSIVE}", "--out", str(out)], capsys,
             "unknown control")
        _bad([*command, "--arms", f"cpu-tiny,{RECURSIVE}", "--set", "model.n_layerz=3", "--out", str(out)], capsys,
             "model.n_layerz")
    _bad(["compare", "--a", "cpu-tiny", "--out", str(out)], capsys, "--a and --b are required (or --arms)")
    assert not out.exists()


def test_every_arch_and_the_old_name_are_model_choices(capsys):
    for arch in ("baseline", "hrm", "trm", "looped", "mor", "recursive"):
        for command in ("train", "bench"):
            assert build_parser().parse_args([command, "--model", arch]).model == arch
    _bad(["train", "--model", "huginn"], capsys, "invalid choice")


def _numbers(x):
    if isinstance(x, bool):
        return []
    if isinstance(x, (int, float)):
        return [float(x)]
    if isinstance(x, dict):
        return [n for v in x.values() for n in _numbers(v)]
    if isinstance(x, list):
        return [n for v in x for n in _numbers(v)]
    return []


@pytest.mark.slow
def test_three_arms_with_a_control_write_one_table(tmp_path, capsys):
    hrm = tmp_path / "tiny-hrm.yaml"  # one segment of one H cycle: the FLOPs control has 4 layers, not 24
    hrm.write_text("extends: cpu-tiny\nmodel: {arch: hrm}\nhrm: {H_cycles: 1, L_cycles: 1}\n"
                   "recursion: {max_segments: 1}\n")
    out = tmp_path / "three"
    assert main(["compare", "--arms", f"cpu-tiny,{hrm},control:flops:{hrm}", "--steps", "6", "--seeds", "2",
                 "--match", "flops", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "FINAL_RESULTS.md: at equal flops, against cpu-tiny, tiny-hrm: " in printed
    raw = json.loads((out / "comparison.json").read_text())
    result = read_comparison(raw)
    assert raw["schema_version"] == 2 and result.reference == "a" and set(result.pairs) == {"b", "c"}
    arms = result.arms
    assert [arm.name for arm in arms.values()] == ["cpu-tiny", "tiny-hrm", "control:flops:tiny-hrm"]
    assert arms["c"].config["model"]["arch"] == "baseline"
    assert arms["c"].config["model"]["n_layers"] > arms["b"].config["model"]["n_layers"]
    costliest = max(arms.values(), key=lambda arm: arm.flops_per_token)
    assert costliest.max_steps == 6  # and every other arm spends as much, up to a step's rounding
    for arm in arms.values():
        assert abs(arm.max_steps * arm.flops_per_token - 6 * costliest.flops_per_token) <= arm.flops_per_token / 2
    assert [arm.seeds for arm in arms.values()] == [[0, 1], [2, 3], [4, 5]]
    for pair in result.pairs.values():
        assert len(pair.metric_table) == 3 and set(pair.speed) == {"steps_per_s", "tokens_per_s", "train_time_s"}
        assert pair.verdicts["flops"].role == "decision" and pair.verdicts["flops"].p_holm is not None

    text = (out / "FINAL_RESULTS.md").read_text()
    tables = re.findall(r"^\| arm \|.*$", text, re.MULTILINE)
    assert len(tables) == 1 and text.count("\n|---") == 1  # one table
    rows = [line for line in text.split("## Arms")[1].splitlines() if line.startswith("| ")][1:]
    assert [row.split(" | ")[0] for row in rows] == ["| A: cpu-tiny", "| B: tiny-hrm", "| C: control:flops:tiny-hrm"]
    assert rows[0].endswith("| reference |") and "Holm" in text
    numbers = _numbers(raw)
    for token in re.findall(r"(?<![\w.\-:])-?\d[\d,]*(?:\.\d+)?(?:e[-+]\d+)?%?(?![\w])", text.split("## Arms")[1]):
        raw = token.rstrip("%").replace(",", "")
        decimals = len(raw.split(".")[1].split("e")[0]) if "." in raw else 0
        tol = 0.5 * 10 ** (int(raw.split("e")[1]) - decimals) if "e" in raw else 0.5 * 10**-decimals + 1e-9
        assert any(abs(float(raw) - v) <= tol or abs(float(raw) - 100 * v) <= tol for v in numbers), token
    (out / "FINAL_RESULTS.md").unlink()
    assert main(["report", str(out)]) == 0
    assert (out / "FINAL_RESULTS.md").read_text() == text


@pytest.mark.slow
def test_three_arms_on_a_task_write_one_table_and_every_recursive_arm_s_depth_curve(tmp_path, capsys):
    presets = {"hrm": "hrm: {H_cycles: 1, L_cycles: 1}", "looped": "looped: {depth: 2}"}
    for arch, section in presets.items():
        (tmp_path / f"tiny-{arch}.yaml").write_text(f"extends: cpu-tiny\nmodel: {{arch: {arch}}}\n{section}\n"
                                                    "recursion: {max_segments: 1}\n")
    out = tmp_path / "study"
    arms = ",".join(["cpu-tiny", str(tmp_path / "tiny-hrm.yaml"), str(tmp_path / "tiny-looped.yaml")])
    assert main(["tasks", "--task", "sudoku", "--format", "grid", "--arms", arms, "--steps", "4", "--seeds", "2",
                 "--set", "task.train_examples=64", "--set", "task.eval_examples=16", "--set", "train.batch_size=8",
                 "--out", str(out)]) == 0
    assert "TASK_RESULTS.md: at equal flops, against cpu-tiny, tiny-hrm: " in capsys.readouterr().out
    result = read_tasks(json.loads((out / "tasks.json").read_text()))
    assert result.reference == "a" and set(result.pairs) == {"b", "c"}
    a, b, c = (result.arms[key] for key in "abc")
    assert a.aggregate.depth_curve is None and a.trained_depth is None
    assert (b.trained_depth, c.trained_depth) == (1, 2)  # one H cycle; two passes
    for arm in (b, c):
        depths = {1: ["1", "2", "4"], 2: ["1", "2", "4", "8"]}[arm.trained_depth]
        assert sorted(arm.aggregate.depth_curve, key=int) == depths
        assert sorted(arm.aggregate.segments_curve, key=int) == ["1", "2"]
        assert arm.params["total"] > 0 and arm.flops_per_token > 0
    report = (out / "TASK_RESULTS.md").read_text()
    assert len(re.findall(r"^\| arm \|", report, re.MULTILINE)) == 1
    assert "## Test-time depth" in report and "**C: tiny-looped** (trained at depth 2)" in report
    assert "| split | A: cpu-tiny | B: tiny-hrm | C: tiny-looped |" in report
    (out / "TASK_RESULTS.md").unlink()
    assert main(["report", str(out)]) == 0
    assert (out / "TASK_RESULTS.md").read_text() == report
