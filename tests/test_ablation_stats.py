"""The ablation's verdicts against its best: Holm-corrected over the configs, and confirmed on fresh seeds."""

import json

import pytest
from scipy import stats as sps

from conftest import tiny_config
from reasonlab.cli import main
from reasonlab.errors import UserError
from reasonlab.experiments.ablation import (
    CONFIRM_SEED_START,
    RESULTS,
    aggregate,
    best_config,
    confirm_ranking,
    run_ablation,
)
from reasonlab.experiments.stats import holm, welch_diff
from reasonlab.report.ablation import ablation_markdown

BEST = [1.0, 1.1, 0.9]
BORDERLINE = [1.25, 1.35, 1.15]  # raw Welch p about 0.04 against BEST
WORSE = [3.0, 3.1, 2.9]


def test_holm_matches_a_hand_computation():
    # sorted: 0.005 * 4 = 0.02, 0.01 * 3 = 0.03, 0.03 * 2 = 0.06, 0.04 * 1 = 0.04 -> raised to 0.06 (step-down)
    assert holm([0.01, 0.04, 0.03, 0.005]) == pytest.approx([0.03, 0.06, 0.06, 0.02])
    assert holm([0.5, 0.6]) == [1.0, 1.0]  # never above 1
    assert holm([0.2]) == [0.2] and holm([]) == []


def test_holm_scales_the_smallest_by_m_and_never_lowers_a_p_value():
    ps = [0.001, 0.2, 0.0004, 0.03, 0.03, 0.9, 0.012]
    adjusted = holm(ps)
    assert min(adjusted) == pytest.approx(len(ps) * min(ps))
    assert all(a >= p for a, p in zip(adjusted, ps, strict=True))
    in_order = [a for _, a in sorted(zip(ps, adjusted, strict=True))]
    assert in_order == sorted(in_order)
    assert all(a <= min(1.0, len(ps) * p) for a, p in zip(adjusted, ps, strict=True))  # Holm never exceeds Bonferroni


def test_welch_p_is_scipys_welch_test_and_agrees_with_the_interval():
    for a, b in ((BEST, BORDERLINE), (BEST, WORSE), ([1.0, 1.1, 0.9, 1.3], [2.0, 2.1, 1.4]), (BEST, [1.2, 1.3, 1.1])):
        d = welch_diff(a, b)
        assert d["p"] == pytest.approx(sps.ttest_ind(b, a, equal_var=False).pvalue)
        assert (d["p"] < 0.05) == d["significant"]
    assert welch_diff([1.0], [2.0, 2.1])["p"] is None and welch_diff([1.0, 1.0], [2.0, 2.0])["p"] is None


def _trial(loss: float) -> dict:
    """A finished trial's result as the sweep stores it."""
    val = [{"step": 10, "loss": loss + 0.5}, {"step": 20, "loss": loss}]
    return {"status": "complete", "nan_encountered": False, "val_history": val, "train_history": [], "run_dir": "x",
            "summary": {"final_val": {"loss": loss, "perplexity": 2.7**loss, "accuracy": 0.3}, "best_val_loss": loss,
                        "total_time_s": 1.0, "tokens_per_s": 100.0, "flops": 1e9}}


def _ablation(samples: dict[str, list[float]]) -> dict:
    seeds = list(range(len(BEST)))
    trials = {(name, seed): _trial(losses[seed]) for name, losses in samples.items() for seed in seeds}
    results = aggregate({name: tiny_config() for name in samples}, seeds, trials)
    return {**results, "suite": "s", "base": "cpu-tiny", "steps": 20}


@pytest.fixture(scope="module")
def fifteen():
    """12 configs identical to the best, one borderline, one clearly worse: 15 in all."""
    return _ablation({"best": BEST, **{f"same{i:02d}": BEST for i in range(12)}, "borderline": BORDERLINE,
                      "worse": WORSE})


def test_vs_best_keeps_the_clearly_worse_config_and_corrects_the_borderline_one(fifteen):
    vs = fifteen["vs_best"]
    assert fifteen["best"] == "best" and len(vs) == 14
    assert welch_diff(BEST, BORDERLINE)["significant"] and vs["borderline"]["p"] < 0.05  # uncorrected: "worse"
    assert vs["borderline"]["p_holm"] >= 0.05 and not vs["borderline"]["significant"]
    assert vs["worse"]["significant"] and vs["worse"]["p_holm"] < 0.05
    assert [vs[n]["p_holm"] for n in vs] == pytest.approx(holm([vs[n]["p"] for n in vs]))
    assert vs["worse"]["ci_low"] == pytest.approx(welch_diff(BEST, WORSE)["ci_low"])  # raw Welch numbers kept
    assert not any(vs[f"same{i:02d}"]["significant"] for i in range(12))


def test_report_says_the_best_was_picked_on_these_seeds_and_the_tests_are_holm_corrected(fifteen):
    text = ablation_markdown(fifteen)
    assert "on the same 3 seeds it is compared on here" in text
    assert "Holm-corrected over the 14 comparisons," in text and "--confirm K" in text
    assert "| worse |" in text and "worse than best |" in text
    assert "| borderline |" in text and "14 of 14" not in text and "13 of 14 configs are within the noise" in text


def test_results_written_before_the_correction_still_render(fifteen):
    old = json.loads(json.dumps(fifteen))
    for d in old["vs_best"].values():
        del d["p"], d["p_holm"]
        d["significant"] = d["ci_low"] is not None and d["ci_low"] > 0  # the old verdict: the raw interval
    text = ablation_markdown(old)
    assert "not corrected for the several comparisons" in text
    assert "12 of 14 configs are within the noise" in text  # the borderline one was called worse then


def test_confirmation_ranks_on_fresh_seeds_and_best_config_prefers_it(tmp_path, fifteen):
    fresh = [CONFIRM_SEED_START, CONFIRM_SEED_START + 1, CONFIRM_SEED_START + 2]
    top = fifteen["ranking"][:3]
    trials = {(name, seed): _trial(loss) for name, losses in (("same00", [0.5, 0.6, 0.4]), ("best", BEST),
                                                               ("same01", BEST)) for seed, loss in zip(fresh, losses)}
    conf = confirm_ranking({n: tiny_config() for n in top}, top, fresh, trials)
    assert conf["best"] == "same00" and conf["seeds"] == fresh and set(conf["configs"]) == set(top)
    assert conf["vs_best"]["best"]["significant"] and not set(fresh) & set(fifteen["seeds"])
    results = {**fifteen, "confirmation": conf}
    (tmp_path / RESULTS).write_text(json.dumps(results))
    assert best_config(tmp_path)[0] == "same00"
    text = ablation_markdown(results)
    assert "## Confirmation on fresh seeds" in text and "**same00** is the best on fresh seeds" in text
    (tmp_path / RESULTS).write_text(json.dumps(fifteen))
    assert best_config(tmp_path)[0] == "best"


def test_negative_confirm_is_refused_before_anything_runs(tmp_path, capsys):
    with pytest.raises(UserError, match="confirm must be >= 0"):
        run_ablation("baseline", 5, 1, tmp_path / "lib", confirm=-1)
    out = tmp_path / "sweep"
    assert main(["ablate", "--suite", "baseline", "--confirm", "-2", "--out", str(out)]) == 2
    assert capsys.readouterr().err.strip().splitlines() == ["error: --confirm must be >= 0, got -2"]
    assert not out.exists() and not (tmp_path / "lib").exists()


SUITE = """
name: pair
base: cpu-tiny
configs:
  a_base: {}
  b_low_lr: {train.lr: "/10"}
"""


@pytest.mark.slow
def test_ablate_confirm_reruns_the_top_configs_on_fresh_seeds(tmp_path, capsys):
    suite = tmp_path / "pair.yaml"
    suite.write_text(SUITE)
    out = tmp_path / "sweep"
    args = ["ablate", "--suite", str(suite), "--steps", "3", "--seeds", "2", "--confirm", "2", "--set",
            "train.eval_batches=1", "--out", str(out)]
    assert main(args) == 0
    results = json.loads((out / RESULTS).read_text())
    conf = results["confirmation"]
    assert results["seeds"] == [0, 1] and conf["seeds"] == [CONFIRM_SEED_START, CONFIRM_SEED_START + 1]
    assert set(conf["candidates"]) == {"a_base", "b_low_lr"} and conf["best"] in conf["candidates"]
    assert all(conf["configs"][n]["n"] == 2 for n in conf["candidates"])
    assert all("p_holm" in d for d in [*results["vs_best"].values(), *conf["vs_best"].values()])
    assert best_config(out)[0] == conf["best"]
    summary = (out / "ABLATION_SUMMARY.md").read_text()
    assert "## Confirmation on fresh seeds" in summary and "Holm-corrected" in summary
    assert f"({CONFIRM_SEED_START}..{CONFIRM_SEED_START + 1})" in summary
    capsys.readouterr()
    assert main(args) == 0  # resumes: the sweep and the confirmation are both done
    err = capsys.readouterr().err
    assert err.count("4 already done or running, 0 queued") == 2 and "x 2 fresh seeds" in err  # sweep, confirmation
    assert len(list((out / "trials").iterdir())) == 8
