import json
import math
import os
import re
import subprocess
import sys
import time

import optuna
import pytest
from optuna.trial import TrialState

from reasonlab.cli import main
from reasonlab.experiments import sweep
from reasonlab.experiments.results import read_comparison
from reasonlab.experiments.sweep import enqueue_missing, make_storage, shown_url, trial_key
from reasonlab.outdir import MARKER
from reasonlab.training import trainer
from reasonlab.training.checkpoint import read_config

SUITE = """
name: tiny
base: cpu-tiny
configs:
  a_base: {}
  b_small: {model.d_model: "/2"}
  c_deep: {model.n_layers: "*2"}
  d_hopeless: {train.lr: "/1000"}
"""


@pytest.fixture
def suite_file(tmp_path):
    path = tmp_path / "tiny.yaml"
    path.write_text(SUITE)
    return path


def _trials(out):
    study = optuna.load_study(study_name=None, storage=make_storage(f"sqlite:///{out / 'study.db'}"))
    return study.get_trials(deepcopy=False)


def _ablate(suite_file, out, *extra):
    return main(["ablate", "--suite", str(suite_file), "--steps", "12", "--out", str(out), *extra])


@pytest.mark.slow
def test_suite_runs_end_to_end_and_resumes(tmp_path, suite_file, capsys):
    out = tmp_path / "sweep"
    assert _ablate(suite_file, out) == 0
    for name in ("ablation_results.json", "ablation.png", "ABLATION_SUMMARY.md", "study.db"):
        assert (out / name).is_file(), name
    results = json.loads((out / "ablation_results.json").read_text())
    assert set(results["configs"]) == {"a_base", "b_small", "c_deep", "d_hopeless"}
    assert results["ranking"][-1] == "d_hopeless" and results["best"] != "d_hopeless"
    entry = results["configs"]["a_base"]
    assert entry["status"] == "complete" and not entry["nan_encountered"]
    for key in ("final_val_loss", "best_val_loss", "final_val_accuracy", "final_val_perplexity", "total_time_s",
                "tokens_per_s", "flops"):
        assert entry[key]["mean"] > 0, key
    assert results["configs"]["b_small"]["config"]["model"]["d_model"] == 32
    summary = (out / "ABLATION_SUMMARY.md").read_text()
    assert results["best"] in summary and "noise is not measured" in summary
    capsys.readouterr()

    stamps = {p: p.stat().st_mtime_ns for p in (out / "trials").rglob("summary.json")}
    assert _ablate(suite_file, out) == 0
    assert "4 already done or running, 0 queued" in capsys.readouterr().err
    assert len(_trials(out)) == 4
    assert {p: p.stat().st_mtime_ns for p in (out / "trials").rglob("summary.json")} == stamps


@pytest.mark.slow
def test_two_workers_run_each_trial_exactly_once(tmp_path, suite_file):
    out = tmp_path / "sweep"
    assert _ablate(suite_file, out, "--workers", "2", "--seeds", "2") == 0
    trials = _trials(out)
    described = [(t.number, t.state.name, t.params, t.user_attrs.get("error"), t.user_attrs.get("duplicate"))
                 for t in trials]
    keys = sorted((t.params["config"], t.params["seed"]) for t in trials)
    assert len(trials) == 8 and keys == sorted({*keys}), described
    assert all(t.state == optuna.trial.TrialState.COMPLETE for t in trials), described
    results = json.loads((out / "ablation_results.json").read_text())
    losses = [e["final_val_loss"] for e in results["configs"].values()]
    assert all(loss["n"] == 2 and loss["ci_low"] is not None for loss in losses)


@pytest.mark.slow
def test_hopeless_trials_are_pruned_not_failed(tmp_path, suite_file):
    out = tmp_path / "sweep"
    assert _ablate(suite_file, out, "--prune") == 0
    states = {t.params["config"]: t.state for t in _trials(out)}
    assert states["d_hopeless"] == optuna.trial.TrialState.PRUNED
    assert json.loads((out / "ablation_results.json").read_text())["configs"]["d_hopeless"]["status"] == "pruned"


def test_a_sweep_folder_from_before_a_config_key_existed_is_continued(tmp_path, capsys):
    """Its suite.json lacks a key added since (at its default) and its marker holds the fingerprint
    of those configs: the rerun knows the sweep as its own and queues nothing. The study lives in
    a storage outside the folder, as a shared database's does, so the folder has no study.db."""
    suite = tmp_path / "one.yaml"
    suite.write_text("name: one\nbase: cpu-tiny\nconfigs:\n  a_base: {}\n")
    out, storage = tmp_path / "sweep", f"sqlite:///{tmp_path / 'shared.db'}"
    args = ["ablate", "--suite", str(suite), "--steps", "2", "--seeds", "1", "--storage", storage, "--out", str(out)]
    assert main(args) == 0 and not (out / "study.db").exists()
    plan = json.loads((out / "suite.json").read_text())
    del plan["configs"]["a_base"]["train"]["micro_batch_size"]
    (out / "suite.json").write_text(json.dumps(plan))
    (out / MARKER).write_text(json.dumps({"kind": "ablation", "fingerprint": "written-by-an-earlier-reasonlab"}))
    capsys.readouterr()
    assert main(args) == 0
    assert "1 already done or running, 0 queued" in capsys.readouterr().err
    assert len(optuna.load_study(study_name=None, storage=make_storage(storage)).get_trials()) == 1
    assert json.loads((out / MARKER).read_text())["fingerprint"] != "written-by-an-earlier-reasonlab"
    suite.write_text("name: one\nbase: cpu-tiny\nconfigs:\n  a_base: {train.lr: 0.01}\n")
    assert main(args) == 2
    assert "other arms, configs or budgets" in capsys.readouterr().err


def test_a_folder_whose_suite_json_is_not_a_sweep_s_is_refused_in_one_line(tmp_path, capsys):
    out = tmp_path / "other"
    out.mkdir()
    (out / "suite.json").write_text("[1, 2")
    assert main(["ablate", "--suite", "baseline", "--steps", "2", "--seeds", "1", "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "already holds files that are not an ablation" in err and len(err.strip().splitlines()) == 1
    assert sorted(p.name for p in out.iterdir()) == ["suite.json"]


def test_unknown_suite_key_fails_before_anything_runs(tmp_path, capsys):
    bad = tmp_path / "bad.yaml"
    bad.write_text("base: cpu-tiny\nconfigs:\n  x: {model.d_modle: 3}\n")
    out = tmp_path / "sweep"
    assert main(["ablate", "--suite", str(bad), "--out", str(out)]) == 2
    assert "model.d_modle" in capsys.readouterr().err
    assert not out.exists()


def _compare(tmp_path, name, b_overrides=""):
    b = tmp_path / f"{name}-b.yaml"
    b.write_text("extends: cpu-tiny\n" + b_overrides)
    out = tmp_path / name
    assert main(["compare", "--a", "cpu-tiny", "--b", str(b), "--steps", "20", "--seeds", "3", "--match", "steps",
                 "--out", str(out)]) == 0
    return out, json.loads((out / "comparison.json").read_text())


@pytest.mark.slow
def test_a_a_comparison_finds_no_difference(tmp_path):
    out, raw = _compare(tmp_path, "aa")
    result = read_comparison(raw)
    assert result.arms["a"].seeds != result.arms["b"].seeds
    # equal steps and FLOPs; the equal-time verdict also measures this machine's speed drift
    verdicts = result.head_to_head.verdicts
    assert verdicts["steps"].winner is None and verdicts["flops"].winner is None
    assert "No significant difference at equal steps" in (out / "FINAL_RESULTS.md").read_text()


@pytest.mark.slow
def test_a_comparison_spreads_over_workers_and_a_folder_from_before_the_queue_continues(tmp_path, capsys):
    """Two workers train the 6 runs, each exactly once, and the judged result is a whole one; without
    its queue (a folder from before compare had one) the rerun reuses every run's folder as it is."""
    out = tmp_path / "two"
    args = ["compare", "--arms", "cpu-tiny,cpu-tiny-recursive", "--steps", "8", "--seeds", "3", "--set",
            "train.curves=false", "--out", str(out)]
    assert main([*args, "--workers", "2"]) == 0
    runs = sorted(p.name for p in (out / "runs").iterdir())
    assert runs == ["a-s0", "a-s1", "a-s2", "b-s3", "b-s4", "b-s5"]
    result = read_comparison(json.loads((out / "comparison.json").read_text()))
    assert [sorted(arm.per_seed) for arm in result.arms.values()] == [["0", "1", "2"], ["3", "4", "5"]]
    finished = {p: p.stat().st_mtime_ns for p in (out / "runs").glob("*/summary.json")}
    (out / "study.db").unlink()
    capsys.readouterr()
    assert main(args) == 0
    assert "6 runs: 0 done or in the queue, 6 queued now" in capsys.readouterr().err
    assert {p: p.stat().st_mtime_ns for p in finished} == finished  # found finished in their folders
    assert read_comparison(json.loads((out / "comparison.json").read_text())).pairs == result.pairs


@pytest.mark.slow
def test_a_comparison_killed_midway_continues_its_runs_from_their_checkpoints(tmp_path, monkeypatch):
    """A real kill: the compare process dies after a run's first checkpoint; run again, that run goes
    on from the checkpoint (its files from before the kill are kept) and ends where an uninterrupted
    run of its config ends."""
    out = tmp_path / "killed"
    args = ["compare", "--arms", "cpu-tiny,cpu-tiny", "--steps", "200", "--seeds", "1", "--match", "steps",
            "--set", "train.curves=false", "--out", str(out)]
    proc = subprocess.Popen([sys.executable, "-m", "reasonlab", *args], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    run = out / "runs" / "a-s0"
    deadline = time.monotonic() + 120
    while not (run / "checkpoints" / "best").is_dir() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.01)  # a study's runs keep the best checkpoint, written at each improving eval
    proc.kill()
    proc.wait()
    assert (run / "checkpoints" / "best").is_dir() and not (run / "summary.json").exists()  # killed midway
    (run / "marker").touch()  # gone if the run's folder were cleared and the run trained again

    monkeypatch.setattr(sweep, "HEARTBEAT_S", 1)
    monkeypatch.setattr(sweep, "GRACE_S", 2)  # the killed worker's claim goes stale at once
    assert main(args) == 0
    assert (run / "marker").exists() and (run / "summary.json").exists()
    resumed = json.loads((run / "summary.json").read_text())
    trainer.train(read_config(run), tmp_path / "uninterrupted", quiet=True)
    whole = json.loads((tmp_path / "uninterrupted" / "summary.json").read_text())
    assert resumed["final_val"]["loss"] == pytest.approx(whole["final_val"]["loss"], rel=1e-6)


@pytest.mark.slow
def test_identical_arms_never_read_better_or_faster(tmp_path):
    out = tmp_path / "paired"
    assert main(["compare", "--a", "cpu-tiny", "--b", "cpu-tiny", "--steps", "12", "--seeds", "2", "--match", "time",
                 "--paired", "--seed-offset", "3", "--out", str(out)]) == 0
    raw = json.loads((out / "comparison.json").read_text())
    result = read_comparison(raw)
    pair = result.head_to_head
    assert result.arms["a"].seeds == result.arms["b"].seeds == [3, 4] and result.paired
    assert result.arms["a"].max_steps == result.arms["b"].max_steps  # one calibrated step time
    assert all(row.better is None for row in [*pair.metric_table, *pair.speed.values()])
    assert pair.winner is None and all(v.ahead is None for v in pair.verdicts.values())
    text = (out / "FINAL_RESULTS.md").read_text()
    claims = [line for line in text.split("## Comparison")[1].splitlines() if line.startswith(("|", "- "))]
    assert len(claims) > 10 and not re.search(r"\b(better|faster|wins|ahead by|cheaper)\b", "\n".join(claims))
    assert "Seeds: A ran seeds 3..4, B ran seeds 3..4; paired" in text

    old = {**{k: v for k, v in raw.items() if k not in ("schema_version", "reference", "pairs")},
           **raw["pairs"]["b"]}  # as a comparison of schema 1 written before this report's form
    for v in old["verdicts"].values():
        for key in ("role", "ahead", "read_at"):
            v.pop(key, None)
    for row in [*old["metric_table"], *old["speed"].values()]:
        row.pop("diff_b_minus_a", None)
        row.pop("time_ratio_b_over_a", None)
    for arm in old["arms"].values():
        arm.pop("seeds")
    (out / "comparison.json").write_text(json.dumps(old))
    assert main(["report", str(out)]) == 0
    old = (out / "FINAL_RESULTS.md").read_text()
    rows = [line for line in old.splitlines() if line.startswith("| equal")]
    assert len(rows) == 3 and "descriptive" not in "".join(rows) and rows[2].startswith("| equal time (s) (matched)")
    assert "Seeds: not recorded." in old


@pytest.mark.slow
def test_planted_handicap_loses_and_every_report_number_is_in_the_json(tmp_path):
    out, raw = _compare(tmp_path, "handicap", "train:\n  lr: 3.0e-5\n")
    pair = read_comparison(raw).head_to_head
    assert pair.winner == "a"
    assert pair.verdicts["steps"].diff_b_minus_a.ci_low > 0
    for name in ("comparison.png", "comparison_compute.png", "FINAL_RESULTS.md"):
        assert (out / name).is_file()

    numbers = []

    def walk(x):
        if isinstance(x, bool):
            return
        if isinstance(x, (int, float)):
            numbers.append(float(x))
        elif isinstance(x, dict):
            for v in x.values():
                walk(v)
        elif isinstance(x, list):
            for v in x:
                walk(v)

    walk(raw)
    text = (out / "FINAL_RESULTS.md").read_text()
    found = re.findall(r"(?<![\w.\-])-?\d[\d,]*(?:\.\d+)?(?:e[-+]\d+)?%?(?![\w])", text)
    assert len(found) > 40
    for token in found:
        raw = token.rstrip("%").replace(",", "")
        value = float(raw)
        decimals = len(raw.split(".")[1].split("e")[0]) if "." in raw else 0
        if "e" in raw:
            tol = 0.5 * 10 ** (int(raw.split("e")[1]) - decimals)
        else:
            tol = 0.5 * 10**-decimals + 1e-9
        ok = any(abs(value - v) <= tol or abs(value - 100 * v) <= tol for v in numbers if math.isfinite(v))
        assert ok, f"{token} in FINAL_RESULTS.md is not in comparison.json"


@pytest.mark.slow
def test_demo_runs_the_whole_study(tmp_path, monkeypatch, capsys):
    from reasonlab.experiments import demo

    monkeypatch.setattr(demo, "SWEEP_STEPS", 10)
    monkeypatch.setattr(demo, "COMPARE_FLOPS", 2.0e10)  # 12 steps of R02_minimal at cpu-tiny
    monkeypatch.setattr(demo, "BASELINE_SUBSET", ["1_baseline", "4_high_lr"])
    monkeypatch.setattr(demo, "REASONING_SUBSET", ["R02_minimal"])
    monkeypatch.setattr(demo, "SEEDS", 2)
    out = tmp_path / "demo"
    assert main(["demo", "--out", str(out), "--base", "cpu-tiny"]) == 0
    captured = capsys.readouterr()
    printed = captured.out
    assert "FINAL_RESULTS.md" in printed and "equal FLOPs (decision)" in printed
    assert re.search(r"^\[\d+:\d\d, ~\d+:\d\d left\] == head to head", captured.err, re.MULTILINE)
    for path in ("baseline_sweep/ABLATION_SUMMARY.md", "reasoning_sweep/ABLATION_SUMMARY.md",
                 "comparison/FINAL_RESULTS.md", "comparison/comparison.png", "comparison/comparison_compute.png"):
        assert (out / path).is_file(), path
    result = json.loads((out / "comparison" / "comparison.json").read_text())
    assert result["arms"]["b"]["config"]["model"]["arch"] == "hrm" and result["n_seeds"] == 2
    assert result["arms"]["b"]["max_steps"] == 12
    assert main(["demo", "--out", str(out), "--base", "cpu-tiny"]) == 0  # a rerun resumes: nothing trains again
    err = capsys.readouterr().err
    assert "0 queued" in err and "4 runs: 4 done or in the queue, 0 queued now" in err


def test_a_trial_halfway_through_its_suggests_keeps_its_key():
    """Another worker may read a running trial after its config is suggested and before its seed is."""
    halfway = optuna.trial.create_trial(
        state=optuna.trial.TrialState.RUNNING,
        params={"config": "a_base"},
        distributions={"config": optuna.distributions.CategoricalDistribution(["a_base", "b_small"])},
        system_attrs={"fixed_params": {"config": "a_base", "seed": 1}},
    )
    assert trial_key(halfway) == ("a_base", 1)


def test_a_storage_password_is_never_shown(tmp_path, suite_file, capsys):
    url = "postgresql+psycopg2://bob:hunter2@127.0.0.1:9/sweeps"  # port 9: nothing listens
    assert shown_url(url) == "postgresql+psycopg2://bob:***@127.0.0.1:9/sweeps"
    assert shown_url("sqlite:////tmp/study.db") == "sqlite:////tmp/study.db"
    assert _ablate(suite_file, tmp_path / "out", "--storage", url) == 2
    captured = capsys.readouterr()
    err = captured.err.strip().splitlines()[-1]
    assert err.startswith("error: cannot open sweep storage postgresql+psycopg2://bob:***@127.0.0.1:9/sweeps")
    assert "hunter2" not in captured.out + captured.err


ONE = "name: one\nbase: cpu-tiny\nconfigs:\n  a_base: {}\n"


@pytest.mark.slow  # waits out a dead worker's heartbeat
def test_a_trial_whose_worker_died_after_claiming_it_is_run_again_exactly_once(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(sweep, "HEARTBEAT_S", 1)
    monkeypatch.setattr(sweep, "GRACE_S", 2)
    suite = tmp_path / "one.yaml"
    suite.write_text(ONE)
    out = tmp_path / "sweep"
    ablate = ["ablate", "--suite", str(suite), "--steps", "4", "--out", str(out)]
    assert main([*ablate, "--seeds", "1"]) == 0
    study = optuna.load_study(study_name=None, storage=make_storage(f"sqlite:///{out / 'study.db'}"))
    enqueue_missing(study, ["a_base"], [0, 1])
    assert sweep._claim(study) is not None  # seed 1 claimed by a worker killed before its first step
    capsys.readouterr()
    assert main([*ablate, "--seeds", "2"]) == 0
    assert "waiting for 1 trials running elsewhere" in capsys.readouterr().err
    finished = [trial_key(t) for t in _trials(out) if t.state == TrialState.COMPLETE]
    assert sorted(finished) == [("a_base", 0), ("a_base", 1)]  # each exactly once
    assert json.loads((out / "ablation_results.json").read_text())["configs"]["a_base"]["status"] == "complete"


def test_a_sweep_whose_trials_fail_writes_its_report_and_exits_1(tmp_path, monkeypatch, capsys):
    def broken(*args, **kwargs):
        raise RuntimeError("out of luck")

    monkeypatch.setattr(sweep, "run_trial", broken)
    suite = tmp_path / "one.yaml"
    suite.write_text(ONE)
    out = tmp_path / "sweep"
    assert main(["ablate", "--suite", str(suite), "--steps", "4", "--seeds", "2", "--out", str(out)]) == 1
    last = capsys.readouterr().err.strip().splitlines()[-1]
    assert last.startswith("error: 2 of 2 trials did not finish (a_base seed 0, a_base seed 1)")
    assert json.loads((out / "ablation_results.json").read_text())["configs"]["a_base"]["status"] == "missing"


def test_local_workers_are_dealt_the_gpus_round_robin(monkeypatch):
    """The GPUs are counted, not used (this machine may have none): each worker process is given its
    own CUDA_VISIBLE_DEVICES before it touches CUDA."""
    assert sweep.worker_gpus(3, None, 2) == ["0", "1", "0"]
    assert sweep.worker_gpus(2, "5,7", 2) == ["5", "7"]
    assert sweep.worker_gpus(2, None, 0) == [None, None]
    seen = []
    monkeypatch.setattr(sweep, "work",
                        lambda spec, threads, progress: seen.append(os.environ.get("CUDA_VISIBLE_DEVICES")))
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    sweep._worker_main(None, 1, "1")
    sweep._worker_main(None, 1, None)
    assert seen == ["1", "1"]
