"""Planning a comparison: seeds, the interleaved step-time calibration, bad flags."""

import dataclasses
import json

import pytest
import yaml

from conftest import CONFIGS, tiny_config
from reasonlab.cli import main
from reasonlab.errors import UserError
from reasonlab.experiments import budgets, runs
from reasonlab.experiments.arms import Arm, seed_lists
from reasonlab.experiments.budgets import plan_steps
from reasonlab.outdir import MARKER, fingerprint


def _arms(a_source: str = "cpu-tiny", b_source: str = "cpu-tiny") -> dict[str, Arm]:
    return {"a": Arm("a", a_source, tiny_config()), "b": Arm("b", b_source, tiny_config())}


def test_seeds_shift_with_the_offset_and_pair_on_request():
    assert seed_lists(_arms(), 3, 0, paired=False) == {"a": [0, 1, 2], "b": [3, 4, 5]}
    assert seed_lists(_arms(), 3, 5, paired=False) == {"a": [5, 6, 7], "b": [8, 9, 10]}
    assert seed_lists(_arms(), 2, 4, paired=True) == {"a": [4, 5], "b": [4, 5]}


def test_an_ablation_best_is_judged_on_seeds_its_ablation_did_not_run(tmp_path):
    sweep = tmp_path / "sweep"
    sweep.mkdir()
    results = {"seeds": [0, 1, 2], "best": "x", "configs": {"x": {"config": tiny_config().to_dict()}}}
    (sweep / "ablation_results.json").write_text(json.dumps(results))
    spec = f"{sweep}:best"
    assert seed_lists(_arms(spec), 2, 0, paired=False) == {"a": [3, 4], "b": [5, 6]}
    assert seed_lists(_arms("cpu-tiny", spec), 2, 1, paired=False) == {"a": [4, 5], "b": [6, 7]}
    results["confirmation"] = {"seeds": [1_000_000, 1_000_001]}
    (sweep / "ablation_results.json").write_text(json.dumps(results))
    assert seed_lists(_arms(spec), 1, 0, paired=False) == {"a": [1_000_002], "b": [1_000_003]}


def test_identical_arms_get_identical_time_budgets_and_the_plan_is_kept(tmp_path, monkeypatch):
    cfg = tiny_config(**{"train.batch_size": 2})
    planned, calibration = plan_steps({"a": cfg, "b": cfg}, 10, "time", tmp_path, lambda line: None)
    assert planned == {"a": 10, "b": 10}
    assert calibration["step_s"]["a"] == calibration["step_s"]["b"] > 0
    assert len(calibration["rounds"]["a"]) == len(calibration["rounds"]["b"]) >= 2

    def no_second_calibration(*args, **kwargs):
        raise AssertionError("a rerun must read plan.json")

    monkeypatch.setattr(budgets, "calibrate_step_times", no_second_calibration)
    assert plan_steps({"a": cfg, "b": cfg}, 10, "time", tmp_path, lambda line: None) == (planned, calibration)


def test_a_costlier_arm_gets_fewer_steps_at_equal_time(tmp_path):
    cheap = tiny_config(**{"train.batch_size": 2})
    costly = tiny_config(**{"train.batch_size": 16, "model.n_layers": 4})
    planned, calibration = plan_steps({"a": cheap, "b": costly}, 10, "time", tmp_path, lambda line: None)
    assert calibration["step_s"]["b"] > calibration["step_s"]["a"]
    assert planned["b"] == 10 and planned["a"] > 10


@pytest.mark.parametrize("command", ["compare --a cpu-tiny --b cpu-tiny --out {out}",
                                     "tasks --task parity --out {out}",
                                     f"ablate --suite {CONFIGS}/suites/baseline.yaml --out {{out}}"])
def test_a_negative_seed_offset_is_one_line(command, tmp_path, capsys):
    out = tmp_path / "out"
    assert main([*command.format(out=out).split(), "--seed-offset", "-1"]) == 2
    err = capsys.readouterr().err
    assert err.strip() == "error: --seed-offset must be >= 0, got -1" and not out.exists()


def test_a_plan_written_before_a_config_key_existed_is_continued(tmp_path, monkeypatch):
    """A folder from an earlier reasonlab, whose configs lacked a key added since (at its
    default), holds the same study: the rerun reads its plan rather than refusing the folder."""
    cfg = tiny_config(**{"train.batch_size": 2})
    planned, calibration = plan_steps({"a": cfg, "b": cfg}, 10, "flops", tmp_path, lambda line: None)
    plan = json.loads((tmp_path / "plan.json").read_text())
    for stored in plan["key"]["configs"].values():
        del stored["train"]["micro_batch_size"]
    (tmp_path / "plan.json").write_text(json.dumps(plan))
    (tmp_path / MARKER).write_text(json.dumps({"kind": "comparison", "fingerprint": fingerprint(plan["key"])}))
    monkeypatch.setattr(budgets, "calibrate_step_times", lambda *a, **k: pytest.fail("a rerun must read plan.json"))
    assert plan_steps({"a": cfg, "b": cfg}, 10, "flops", tmp_path, lambda line: None) == (planned, calibration)
    assert plan_steps({"a": cfg, "b": cfg}, 10, "flops", tmp_path, lambda line: None) == (planned, calibration)
    other = tiny_config(**{"train.batch_size": 4})
    with pytest.raises(UserError, match="other arms, configs or budgets"):
        plan_steps({"a": cfg, "b": other}, 10, "flops", tmp_path, lambda line: None)


def test_a_finished_task_run_from_before_generator_2_is_trained_again(tmp_path, monkeypatch):
    """Its config.yaml has no task.generator: it was trained on generator 1's instances, so a
    study that now draws generator 2's retrains it rather than mixing the two in one table."""
    cfg = tiny_config(**{"task.name": "parity", "model.vocab_size": 8})
    run_dir = tmp_path / "a-s0"
    run_dir.mkdir()
    stored = cfg.to_dict()
    del stored["task"]["generator"]
    (run_dir / "config.yaml").write_text(yaml.safe_dump(stored))
    (run_dir / "summary.json").write_text("{}")
    trained = []
    monkeypatch.setattr(runs.trainer, "train", lambda c, d, quiet: trained.append(c.task.generator) or d.mkdir())
    monkeypatch.setattr(runs, "run_result", lambda d: {"summary": {"final_val": {"loss": 1.0, "accuracy": 0.5}}})
    runs._run(cfg, run_dir)
    assert trained == [2]
    (run_dir / "config.yaml").write_text(yaml.safe_dump(stored))
    (run_dir / "summary.json").write_text("{}")
    runs._run(dataclasses.replace(cfg, task=dataclasses.replace(cfg.task, generator=1)), run_dir)
    assert trained == [2]  # the same instances: reused
