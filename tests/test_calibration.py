import pytest

from conftest import judged_arm
from reasonlab.cli import main
from reasonlab.experiments.calibration import format_calibration, old_rule, rate, run_calibration, summarize


def _seed(losses, s_per_step, flops_per_step=10, steps=(10, 20)):
    """One run's val history: `losses` at `steps`, its wall clock `s_per_step` seconds a step."""
    return [{"step": s, "flops": flops_per_step * s, "time_s": s_per_step * s, "loss": loss}
            for s, loss in zip(steps, losses)]


def _arms(a, b):
    return {"a": judged_arm(a), "b": judged_arm(b)}


CURVES = [(5.0, 4.0), (5.01, 4.01), (4.99, 3.99)]  # three seeds: loss at steps 10 and 20


def test_old_rule_reads_time_off_the_wall_clock_and_names_the_arm_that_ran_unloaded():
    # identical curves, but B's runs ran 1.5x slower on the clock (a loaded machine)
    out = old_rule(_arms([_seed(c, 1.0) for c in CURVES], [_seed(c, 1.5) for c in CURVES]))
    # by hand: the largest time every run reached is A's 20 s; there B is at step 20 / 1.5 = 13.33, loss
    # 5 - (3.33 / 10) x 1 = 4.667 (+ the seed's offset), A at 4.0: diff 2/3 with each arm's sd 0.01, so
    # Welch's t = 0.667 / sqrt(2 x 0.0001 / 3) = 82 > t(0.975, df 4) = 2.78: A named at equal time.
    # At equal steps and FLOPs the values are identical: diff 0, nobody.
    assert out == {"steps": None, "flops": None, "time": "a"}


def test_old_rule_names_no_one_where_the_ranges_do_not_overlap():
    worse = [(x + 1, y + 1) for x, y in CURVES]
    # B costs 10x the FLOPs a step: its first evaluation (10,000) is past A's last (200), so no FLOPs verdict
    out = old_rule(_arms([_seed(c, 1.0) for c in CURVES], [_seed(c, 1.0, flops_per_step=1000) for c in worse]))
    assert out == {"steps": "a", "flops": None, "time": "a"}


def test_rate_is_clopper_pearson():
    r = rate(0, 20)
    assert r["rate"] == 0 and r["ci_low"] == 0
    assert r["ci_high"] == pytest.approx(1 - 0.025 ** (1 / 20))  # the exact upper bound when k = 0


def _record(winner, old, wall_s=5.0):
    return {"key": {}, "seed_offset": 0, "winner": winner, "old_rule": dict(zip(("steps", "flops", "time"), old)),
            "wall_s": wall_s}


def test_format_calibration():
    none = (None, None, None)
    aa = [_record("b", ("b", None, None))] + [_record(None, (None, None, "a"))] * 5 + [_record(None, none)] * 14
    # a handicap: the old rule counts A named at any budget, even where it names B at another
    handicap = [_record("a", ("a", "a", "b"))] * 19 + [_record(None, (None, "a", None), wall_s=7.0)]
    result = {"preset": "cpu-tiny", "steps": 4, "seeds": 3, "match": "steps", "ci_level": 95, "median_wall_s": 5.0,
              "conditions": {"aa": summarize(None, "cpu-tiny", aa), "lr-div-100": summarize(100.0, "b.yaml", handicap)}}
    assert result["conditions"]["aa"]["runs"][0] == {"seed_offset": 0, "winner": "b", "old_rule": aa[0]["old_rule"],
                                                      "wall_s": 5.0}
    assert format_calibration(result).splitlines() == [
        "| condition | repetitions | new rule: winner rate [95% CI] | old rule (any budget): winner rate [95% CI] |",
        "|---|---|---|---|",
        "| A/A | 20 | false winners 1/20 = 5% [0%, 25%] | false winners 6/20 = 30% [12%, 54%] |",
        "| B: lr / 100 | 20 | power (A named) 19/20 = 95% [75%, 100%] | power (A named) 20/20 = 100% [83%, 100%] |",
        "",
        "cpu-tiny, 4 steps x 3 seeds per arm, match steps; median 5.0 s per comparison",
    ]


@pytest.mark.parametrize(("flags", "message"), [
    (["--repeats", "0"], "error: --repeats must be >= 1, got 0"),
    (["--seeds", "0"], "error: --seeds must be >= 1, got 0"),
    (["--handicaps", "3,x"], "error: --handicaps expects numbers separated by commas, got '3,x'"),
    (["--handicaps", "100,0.5"], "error: a handicap divides the learning rate by a factor > 1, got 0.5"),
    (["--handicaps", "3,3.0"], "error: handicaps must differ, got 3, 3"),
    (["--set", "train.lr=1e-3"], "error: train.lr is what a handicap divides: set it in the preset, not as an "
                                 "override"),
])
def test_bad_calibrate_input_is_one_line_and_exit_2(tmp_path, capsys, flags, message):
    out = tmp_path / "cal"
    assert main(["calibrate", *flags, "--out", str(out)]) == 2
    assert capsys.readouterr().err.splitlines() == [message]
    assert not out.exists()


@pytest.mark.slow
def test_decision_rarely_names_a_false_winner_and_finds_a_planted_one(tmp_path):
    # 40 comparisons at 4 steps, one val batch an evaluation, no curves.png a run: seconds each on 2 cores
    result = run_calibration("cpu-tiny", repeats=20, handicaps=(100.0,), steps=4, out=tmp_path,
                             progress=lambda line: None, overrides={"train.eval_batches": 1, "train.curves": False})
    aa, handicap = result["conditions"]["aa"], result["conditions"]["lr-div-100"]
    assert aa["repetitions"] == handicap["repetitions"] == 20
    assert aa["new_rule"]["rate"] < 0.15
    assert handicap["new_rule"]["rate"] >= 0.9
    offsets = [run["seed_offset"] for c in (aa, handicap) for run in c["runs"]]
    assert len(set(offsets)) == 40  # every comparison on seeds of its own
