"""The study queue every study shares (experiments/sweep.py): a stage claims only its own runs, a run
that failed is retried by the next command, and Ctrl-C stops a worker and leaves its run to be run again."""

import pytest
from optuna.trial import TrialState

from reasonlab.errors import Interrupted
from reasonlab.experiments import scale, sweep
from reasonlab.experiments.scale import budget_points
from reasonlab.experiments.sweep import SweepSpec, open_study, queue, trial_key, work

CALLS: list[tuple[str, int]] = []


def _job(spec: SweepSpec, name: str, seed: int) -> dict:
    CALLS.append((name, seed))
    if name == "fails":
        raise ValueError("a fault of its own")
    if name == "interrupted":
        raise Interrupted("SIGINT: stopped", 2)
    return {"done": name}


def _spec(tmp_path, keys=None):
    names = {"a": {}, "b": {}, "fails": {}, "interrupted": {}}
    return SweepSpec(f"sqlite:///{tmp_path / 'study.db'}", "q", tmp_path, names, job=_job, keys=keys)


def _states(study):
    return {trial_key(t): t.state for t in study.get_trials(deepcopy=False)}


def test_a_stage_claims_only_its_own_runs(tmp_path):
    CALLS.clear()
    spec = _spec(tmp_path, keys=[("a", 0)])
    study = open_study(spec)
    assert queue(spec, study, [("a", 0), ("b", 0)]) == 2
    assert work(spec) == 1 and CALLS == [("a", 0)]
    assert _states(study) == {("a", 0): TrialState.COMPLETE, ("b", 0): TrialState.WAITING}


def test_a_failed_run_is_retried_by_the_next_command(tmp_path):
    CALLS.clear()
    spec = _spec(tmp_path)
    study = open_study(spec)
    queue(spec, study, [("fails", 0)])
    work(spec)
    assert _states(study)[("fails", 0)] == TrialState.FAIL
    assert sweep.enqueue_keys(study, [("fails", 0)], retry_errors=False) == 0  # within a command: not again
    assert queue(spec, study, [("fails", 0)]) == 1  # the next command: again
    work(spec)
    assert CALLS == [("fails", 0), ("fails", 0)]


def test_an_interrupt_stops_the_worker_and_its_run_is_run_again(tmp_path):
    CALLS.clear()
    spec = _spec(tmp_path)
    study = open_study(spec)
    queue(spec, study, [("interrupted", 0), ("a", 0)])
    with pytest.raises(Interrupted):
        work(spec)
    assert CALLS == [("interrupted", 0)]  # the worker stopped; "a" was not started
    failed = next(t for t in study.get_trials(deepcopy=False) if trial_key(t) == ("interrupted", 0))
    assert failed.state == TrialState.FAIL and "error" not in failed.user_attrs
    assert sweep.enqueue_keys(study, [("interrupted", 0)], retry_errors=False) == 1  # not its own fault


def test_the_middle_of_an_odd_number_of_budgets_takes_the_largest_budgets_lr():
    for count, span in ((3, 4), (5, 16), (5, 32), (7, 64)):
        budgets = budget_points([count], span=span, max_flops=5e13)
        nearer = [scale._nearer_the_smallest(b, budgets) for b in budgets]
        assert nearer == [True] * (count // 2) + [False] * (count - count // 2), (count, span)
