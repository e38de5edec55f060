import math
import re

import pytest
from scipy import stats as sps

from conftest import judged_arm
from reasonlab.experiments.judge import speed_table, verdicts
from reasonlab.experiments.results import ReadAt
from reasonlab.experiments.stats import mean_ci, paired_diff, welch_diff
from reasonlab.report.ablation import ablation_markdown, write_ablation_report
from reasonlab.training.runlog import read_metrics


def test_mean_ci_matches_the_t_interval():
    stat = mean_ci([1.0, 2.0, 3.0])
    half = 4.302652729911275 * 1.0 / math.sqrt(3)  # t(0.975, df=2) * s / sqrt(n)
    assert stat["mean"] == 2.0
    assert (stat["ci_low"], stat["ci_high"]) == pytest.approx((2 - half, 2 + half))
    assert mean_ci([5.0])["ci_low"] is None
    shares = mean_ci([0.0, 0.1, 0.95], bounds=(0.0, 1.0))
    assert shares["ci_low"] == 0.0 and shares["ci_high"] == 1.0 and shares["mean"] == pytest.approx(0.35)


def test_welch_interval_matches_scipys_welch_test():
    a, b = [1.0, 1.1, 0.9, 1.3], [2.0, 2.1, 1.4]  # unequal sizes and spreads: a fractional Welch df
    d = welch_diff(a, b)
    ci = sps.ttest_ind(b, a, equal_var=False).confidence_interval(0.95)
    assert d["diff"] == pytest.approx(sum(b) / 3 - sum(a) / 4)
    assert (d["ci_low"], d["ci_high"]) == pytest.approx((ci.low, ci.high))
    assert not d["significant"] and ci.low < 0 < ci.high


def test_welch_difference():
    d = welch_diff([1.0, 1.1, 0.9], [2.0, 2.1, 1.9])
    assert d["diff"] == pytest.approx(1.0) and d["significant"] and d["ci_low"] > 0
    assert not welch_diff([1.0, 1.5, 0.5], [1.1, 0.6, 1.6])["significant"]
    assert not welch_diff([1.0, 1.0], [1.0000001, 1.0000001])["significant"]  # no spread: noise unmeasured
    assert not welch_diff([1.0], [2.0])["significant"]




def test_verdicts_never_extrapolate_before_a_first_evaluation():
    cheap = [{"step": s, "flops": 10 * s, "time_s": 9 * s, "calibrated_time_s": s, "loss": 5 - s / 100}
             for s in (10, 20, 30)]
    costly = [{"step": s, "flops": 1000 * s, "time_s": s, "calibrated_time_s": 2 * s, "loss": 4 - s / 100}
              for s in (10, 20, 30)]
    out = verdicts({"a": judged_arm([cheap, cheap]), "b": judged_arm([costly, costly])}, "steps")
    assert out["steps"].available and out["steps"].point == 30 and out["steps"].role == "decision"
    assert not out["flops"].available and out["flops"].winner is None
    # time is read on the calibrated scale, never the runs' wall clocks: B is read mid-schedule, and only described
    assert out["time"].available and out["time"].point == 30 and out["time"].role == "descriptive"
    assert out["time"].read_at == {"a": ReadAt(step=30, of=30), "b": ReadAt(step=15, of=30)}
    assert out["time"].winner is None


def test_torn_last_metrics_line_is_ignored(tmp_path):
    path = tmp_path / "metrics.jsonl"
    path.write_text('{"kind": "train", "step": 1, "loss": 2.0}\n{"kind": "tra')
    assert read_metrics(path) == [{"kind": "train", "step": 1, "loss": 2.0}]


def test_ablation_report_with_nothing_finished(tmp_path):
    results = {"suite": "s", "steps": 10, "base": "cpu-tiny", "ci_level": 95, "seeds": [0], "ranking": [],
               "configs": {"x": {"status": "diverged"}, "y": {"status": "pruned"}}}
    write_ablation_report(results, tmp_path)
    assert "No config has finished yet" in ablation_markdown(results)
    assert not (tmp_path / "ablation.png").exists()


def test_paired_difference_matches_scipys_paired_test():
    a, b = [1.0, 2.0, 3.0, 4.0], [1.5, 2.2, 3.9, 4.3]
    d = paired_diff(a, b)
    ci = sps.ttest_rel(b, a).confidence_interval(0.95)
    assert d["diff"] == pytest.approx(0.475) and (d["ci_low"], d["ci_high"]) == pytest.approx((ci.low, ci.high))
    assert d["significant"] == (ci.low > 0) and d["p"] == pytest.approx(sps.ttest_rel(b, a).pvalue)
    assert not paired_diff([1.0, 2.0], [1.0, 2.0])["significant"]  # identical runs: no spread, no claim


def test_speed_claims_come_from_the_interleaved_calibration():
    def arm(step_s, rounds, steps=10):
        return judged_arm([], step_s=step_s, calibration_s=rounds, max_steps=steps,
                          config={"train": {"batch_size": 2}, "model": {"seq_len": 8}})

    level = speed_table(arm(0.1, [0.1, 0.12, 0.09]), arm(0.1, [0.11, 0.1, 0.1]))
    assert all(row.better is None for row in level.values())  # one pooled step time: no "faster"
    slower = speed_table(arm(0.1, [0.1, 0.11, 0.1, 0.1]), arm(0.2, [0.2, 0.21, 0.2, 0.2]))
    assert slower["tokens_per_s"].better == "a" and slower["tokens_per_s"].advantage_pct == pytest.approx(100)
    assert slower["train_time_s"].better == "a"
    noisy = speed_table(arm(0.1, [0.1, 0.2, 0.1, 0.2]), arm(0.12, [0.2, 0.1, 0.2, 0.1]))
    assert noisy["tokens_per_s"].better is None  # the rounds disagree on which is faster
    more_steps = speed_table(arm(0.1, [0.1, 0.1]), arm(0.1, [0.1, 0.1], steps=20))
    assert more_steps["train_time_s"].better == "a" and more_steps["tokens_per_s"].better is None


def test_the_detectable_difference_has_the_power_it_claims():
    """Simulated paired t-tests (4 seeds, fixed df, where the noncentral t is exact): a true gap of the
    stated detectable size is found in 80% of draws, and no gap in 5%."""
    import numpy as np

    from reasonlab.experiments.stats import detectable

    gap = detectable(0.5, 3)  # se of the mean of 4 differences of spread 1
    draws = np.random.default_rng(0).normal(size=(2, 20000, 4)) + np.array([gap, 0.0])[:, None, None]
    t = draws.mean(-1) / (draws.std(-1, ddof=1) / 2)
    found = (np.abs(t) > sps.t.ppf(0.975, 3)).mean(-1)
    assert abs(found[0] - 0.8) < 0.015 and abs(found[1] - 0.05) < 0.008
    d = paired_diff([1.0, 1.2, 0.9, 1.1], [1.1, 1.4, 1.0, 1.1])
    assert d["detectable"] == pytest.approx(detectable(d["se"], d["df"]))
    assert detectable(d["se"], d["df"], tests=3) > d["detectable"]  # Holm's strictest step asks for more
    assert welch_diff([1.0], [2.0])["detectable"] is None


def test_the_seeds_help_states_what_seeds_can_detect():
    from reasonlab.cli import SEEDS_HELP
    from reasonlab.experiments.stats import detectable_in_spreads

    stated = re.findall(r"(\d+\.\d) (?:run-to-run standard deviations )?with (\d)", SEEDS_HELP)
    assert stated == [(f"{detectable_in_spreads(n):.1f}", str(n)) for n in (2, 3, 5)]
