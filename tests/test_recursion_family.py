"""Every recursive arm (hrm, trm, looped, mor) against the contract of the recursion core: causal at every
depth, bidirectional in the grid format, no state across rows or batches, one exit rule for
training and inference, FLOPs by hand count, controls that match what they claim."""

import math

import pytest
import torch
import torch.nn.functional as F

from reasonlab.config import resolve_config, with_overrides
from reasonlab.errors import UserError
from reasonlab.experiments.tasks import curve_points
from reasonlab.model import build_model, control_config, inference_layers, param_counts
from reasonlab.model.arms import config_step_flops
from reasonlab.model.looped import draw_depth, expected_passes
from reasonlab.model.loss import IGNORE_INDEX
from reasonlab.model.protocol import LanguageModel
from reasonlab.registry import ARCHS
from test_recursive import live_halting

TINY = {"model.vocab_size": 300, "model.seq_len": 32, "model.d_model": 32, "model.n_layers": 2, "model.n_heads": 4,
        "model.d_ff": 64, "model.dropout": 0.1, "task.name": "addition", "train.batch_size": 2}
NO_DRAWS = {"model.dropout": 0.0, "model.router_noise_std": 0.0}
ARMS = {
    "hrm": {"model.arch": "hrm", "hrm.H_cycles": 2, "hrm.L_cycles": 1},
    "trm": {"model.arch": "trm", "trm.latent_steps": 2, "trm.recursions": 2},
    "looped": {"model.arch": "looped", "looped.depth": 3},
    "looped-act": {"model.arch": "looped", "looped.depth": 4, "looped.act": True, "looped.act_threshold": 0.9},
    "looped-random": {"model.arch": "looped", "looped.mean_depth": 3.0, "looped.backprop_depth": 2},
    # mor's training-mode random draws (dropout, router noise) follow the shape of the tokens each pass
    # gathers, which the other rows and later tokens' routing set (model/mor.py): drawn from nothing here
    "mor": {"model.arch": "mor", "mor.recursions": 5, "mor.capacity_last": 0.5, **NO_DRAWS},
    "mor-token": {"model.arch": "mor", "mor.recursions": 5, "mor.router": "token", "mor.kv": "share", **NO_DRAWS},
}


def config(arm: str, **extra):
    return resolve_config(None, {**TINY, **ARMS[arm], **extra})


def make(arm: str, n: int = 2, act: bool = True, **extra):
    return built(arm, n, act, **extra)[1]


def built(arm: str, n: int = 2, act: bool = True, **extra):
    """The config and its model, its halting live."""
    torch.manual_seed(0)
    cfg = config(arm, **{"recursion.max_segments": n, "recursion.use_act": act, **extra})
    model = build_model(cfg)
    if model.rec.use_act:
        live_halting(model)
    if getattr(model, "act_head", None) is not None:  # ACT that halts tokens at different passes
        torch.nn.init.normal_(model.act_head.weight, std=1.0)
        torch.nn.init.constant_(model.act_head.bias, -0.5)
    return cfg, model


def tokens(B=2, T=32, seed=1):
    return torch.randint(0, 300, (B, T), generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("arm", ["hrm", "trm"])
def test_without_halting_at_eval_an_evaluation_runs_every_segment(arm):
    model = make(arm, 3, True).eval()
    x = tokens()
    with torch.no_grad():
        halting = model.run(x)
        model.rec.halt_at_eval = False
        every = model.run(x)
        assert torch.equal(every.logits, model.run(x, segments=3).logits) and bool((every.segments == 3).all())
        assert not bool((halting.segments == 3).all())  # the live halting head exits some tokens earlier
        assert torch.equal(model.run(x, segments=1).logits, make(arm, 3, True).eval().run(x, segments=1).logits)


@pytest.mark.parametrize("arm", list(ARMS))
@pytest.mark.parametrize("n, act", [(1, False), (3, True)])
@pytest.mark.parametrize("depth", [None, 1, 5])
def test_causality_at_every_depth(arm, n, act, depth):
    """In training mode, where dropout and routing noise run; but for mor's expert-choice routers,
    whose top-k sees the sequence in training by design and not at inference (test_mor.py)."""
    model = make(arm, n, act).train(arm != "mor")
    x = tokens()
    for t in (0, 13, 30):
        y = x.clone()
        y[:, t + 1:] = torch.randint(0, 300, (2, 31 - t))
        torch.manual_seed(2)
        a = model.run(x, depth=depth)
        torch.manual_seed(2)
        b = model.run(y, depth=depth)
        torch.testing.assert_close(a.logits[:, : t + 1], b.logits[:, : t + 1], rtol=0, atol=1e-5)
        assert torch.equal(a.segments[:, : t + 1], b.segments[:, : t + 1])


@pytest.mark.parametrize("arm", list(ARMS))
def test_the_grid_format_is_bidirectional(arm):
    """With model.causal false, the first position's output depends on the last token."""
    model = make(arm, 2, False, **{"model.causal": False, "task.format": "grid"}).eval()
    x = tokens()
    y = x.clone()
    y[:, -1] = (y[:, -1] + 1) % 300
    assert not torch.allclose(model.run(x).logits[:, 0], model.run(y).logits[:, 0])


@pytest.mark.parametrize("arm", list(ARMS))
def test_training_and_inference_choose_the_same_exit_and_logits_per_token(arm):
    model = make(arm, 3, True).eval()
    x, y = tokens(B=1), tokens(B=1, seed=5)
    out = model.run(x)
    assert len(out.segments.unique()) > 1  # tokens exit at different segments
    per_token = F.cross_entropy(out.logits[0], y[0], reduction="none")
    whole = model(x, y)
    torch.testing.assert_close(whole.lm_loss, per_token.mean(), rtol=0, atol=1e-5)
    for t in (0, 7, 19, 31):  # only token t is scored: its exit and loss alone
        target = torch.full_like(y, IGNORE_INDEX)
        target[0, t] = y[0, t]
        one = model(x, target)
        assert one.metrics["segments"].item() == out.segments[0, t].item()
        torch.testing.assert_close(one.lm_loss, per_token[t], rtol=0, atol=1e-5)


@pytest.mark.parametrize("arm", list(ARMS))
def test_rows_and_batches_do_not_share_state(arm):
    model = make(arm, 3, True).eval()
    x = tokens(B=5)
    perm = torch.tensor([3, 0, 4, 1, 2])
    out, out_perm = model.run(x), model.run(x[perm])
    torch.testing.assert_close(out_perm.logits, out.logits[perm], rtol=1e-5, atol=1e-5)
    model.train()
    results = []
    for before in (tokens(seed=2), tokens(seed=3)):
        model(before, before.roll(1, 1))
        if hasattr(model, "depth_draws"):
            model.depth_draws.zero_()  # the step count a drawn depth follows, not state of the batch
        torch.manual_seed(7)
        results.append(model(x, x.roll(1, 1)).loss.item())
    assert results[0] == results[1]


@pytest.mark.parametrize("arm", list(ARMS))
def test_every_parameter_learns_and_counts_match_the_module(arm):
    cfg, model = built(arm, 2, True, **{"model.dropout": 0.0})
    model.train()(tokens(), tokens(seed=4)).loss.backward()
    assert param_counts(cfg)["total"] == sum(p.numel() for p in model.parameters())
    silent = {name for name, p in model.named_parameters()
              if (p.grad is None or not p.grad.abs().sum() > 0) and "experts" not in name}  # an idle expert may
    assert silent <= ({"s_init"} if arm == "looped-random" else set()), silent  # truncated backprop may stop short


@pytest.mark.parametrize("arch", ARCHS)
def test_every_registered_arm_is_a_language_model(arch):
    """The engine, generation and the harness call every model through the one protocol."""
    model = build_model(resolve_config(None, {**TINY, "model.arch": arch}))
    assert isinstance(model, LanguageModel)
    out = model.run(tokens())
    assert out.logits.shape == (2, 32, 300)
    step = model.train()(tokens(), tokens(seed=4), carry=None)
    assert step.carry is None and step.loss.isfinite()


@pytest.mark.parametrize("arm", ["hrm", "trm", "looped", "looped-act"])
def test_the_passes_an_arm_runs_are_the_passes_it_declares(arm):
    """The stack counts each pass as it runs; with every token run to its last segment and pass,
    that count, pass by pass with and without gradient, is what `passes()` declares for planning."""
    cfg, model = built(arm, 2, False, **{"model.dropout": 0.0})
    if getattr(model, "act_head", None) is not None:
        torch.nn.init.constant_(model.act_head.bias, -50.0)  # no token halts before the last pass
    enabled = []
    model.core.blocks[0].register_forward_hook(lambda *_: enabled.append(torch.is_grad_enabled()))
    step = model.train()(tokens(), tokens(seed=4))
    grad, free = type(model).passes(getattr(cfg, cfg.model.arch))
    assert (enabled.count(True), enabled.count(False)) == (2 * grad, 2 * free)  # two segments
    assert step.flops == config_step_flops(cfg)


# Hand counts for TINY (d 32, 2 layers, d_ff 64, 4 experts top-2, V 300, T 32), from test_recursive.py:
# one stack pass forward 2 * 24,832 + 4*2*32*32 = 57,856 (3x with gradient = 173,568); head with
# gradient 57,600; halting head with gradient 192. Looped ACT adds its d-weight unit to each pass
# (2 * 32 = 64 forward).
PASS, GRAD_PASS, HEAD, HALT = 57_856, 173_568, 57_600, 192


def test_trm_flops_hand_count():
    """A segment: T=2 recursions of (n=2 latent + 1 answer) passes, the first without gradient."""
    per_segment = 3 * GRAD_PASS + 3 * PASS + HEAD + HALT
    cfg = config("trm", **{"recursion.max_segments": 2})
    assert config_step_flops(cfg) == 2 * 32 * 2 * per_segment
    model = make("trm", 2, True)
    torch.nn.init.constant_(model.halt_head.bias, -50.0)  # no token exits early
    assert model.train()(tokens(), tokens(seed=4)).flops == 2 * 32 * 2 * per_segment


def test_looped_flops_hand_count():
    cfg = config("looped", **{"recursion.max_segments": 1, "recursion.use_act": False})
    assert config_step_flops(cfg) == 2 * 32 * (3 * GRAD_PASS + HEAD)
    truncated = with_overrides(cfg, {"looped.backprop_depth": 1})
    assert config_step_flops(truncated) == 2 * 32 * (GRAD_PASS + 2 * PASS + HEAD)
    act = with_overrides(cfg, {"looped.act": True, "looped.depth": 4})
    assert config_step_flops(act) == 2 * 32 * (4 * (GRAD_PASS + 3 * 64) + HEAD)


def test_looped_act_stops_when_every_token_halts_and_counts_what_ran():
    model = make("looped-act", 1, False)
    torch.nn.init.zeros_(model.act_head.weight)
    torch.nn.init.constant_(model.act_head.bias, 10.0)  # p ~ 1: every token halts after the first pass
    out = model.train()(tokens(), tokens(seed=4))
    assert out.flops == 2 * 32 * (GRAD_PASS + 3 * 64 + HEAD)
    assert out.metrics["ponder"].item() == pytest.approx(2.0)  # one pass plus a remainder of 1


def test_looped_act_against_a_per_token_reference():
    """Graves' ACT written out token by token: halting pass, p-weighted output, frozen state, ponder N + R.

    Single-token rows, so each token's passes depend on itself alone and the reference needs no batch.
    """
    model = make("looped-act", 1, False).eval()
    x = tokens(B=48, T=1)
    x_BTD, cos, sin = model.core.embed_tokens(x)
    with torch.no_grad():
        seg = model.segment(model.initial_state(x_BTD), x_BTD, model.passes_over(x_BTD, cos, sin), None)
        halting = []
        for b in range(x.shape[0]):
            s, summed, out = model.s_init[None, None], 0.0, 0.0
            for n in range(1, 5):
                s = model.core.stack(s + x_BTD[b: b + 1], cos, sin)[0]
                p = torch.sigmoid(model.act_head(s)).item()
                if summed + p >= 0.9 or n == 4:
                    out, remainder = out + (1 - summed) * s, 1 - summed
                    break
                out, summed = out + p * s, summed + p
            halting.append(n)
            torch.testing.assert_close(seg.state[1][b: b + 1], out, rtol=1e-5, atol=1e-5)
            torch.testing.assert_close(seg.state[0][b: b + 1], s, rtol=1e-5, atol=1e-5)
            assert seg.penalty_BT[b, 0].item() == pytest.approx(n + remainder, abs=1e-5)
    assert len(set(halting)) > 1  # tokens halt at different passes


def test_random_depth_is_drawn_per_step_with_the_configured_mean():
    cfg = config("looped-random")
    generator = torch.Generator().manual_seed(0)
    draws = torch.tensor([draw_depth(cfg.looped, generator) for _ in range(4000)], dtype=torch.float)
    assert draws.min() >= 1 and len(draws.unique()) > 3
    assert draws.mean().item() == pytest.approx(3.0, rel=0.05)
    grad, free = expected_passes(cfg.looped)
    assert grad + free == pytest.approx(3.0)
    assert grad == pytest.approx(draws.clamp(max=2).mean().item(), rel=0.05)  # E[min(k, D)], by sampling


def test_random_depth_trains_at_the_drawn_depth_and_counts_it():
    cfg, model = built("looped-random", 1, False)
    model.train()
    seed = cfg.train.seed * 1_000_003
    depths = []
    for step in range(6):
        depth = draw_depth(model.looped, torch.Generator().manual_seed(seed + step))
        out = model(tokens(), tokens(seed=4))
        grad = min(2, depth)
        assert out.flops == 2 * 32 * (grad * GRAD_PASS + (depth - grad) * PASS + HEAD)
        depths.append(depth)
    assert len(set(depths)) > 1 and model.depth_draws.item() == 6  # the count travels with the weights
    model.eval().run(tokens())
    assert model.depth_draws.item() == 6  # inference draws nothing


@pytest.mark.parametrize("arm", ["hrm", "trm", "looped"])
def test_test_time_depth_runs_beyond_training(arm):
    model = make(arm, 1, False).eval()
    x = tokens()
    default, trained = model.run(x), model.run(x, depth=model.trained_depth)
    torch.testing.assert_close(default.logits, trained.logits, rtol=0, atol=0)
    deeper = model.run(x, depth=4 * model.trained_depth)
    assert deeper.logits.isfinite().all() and not torch.allclose(deeper.logits, default.logits)


@pytest.mark.parametrize("arm", list(ARMS))
def test_every_depth_the_tasks_curve_asks_for_runs(arm):
    """`tasks` scores each recursive model at forced depths up to 4x its trained one, or to the most it
    can run (mor: one pass per router); a depth past that is refused, not run."""
    model = make(arm, 1, False).eval()
    points = curve_points(model.trained_depth, 4, model.max_depth)
    assert points[-1] == (4 * model.trained_depth if model.max_depth is None else model.max_depth)
    for depth in points:
        assert model.run(tokens(B=1), depth=depth).logits.isfinite().all()
    if model.max_depth is not None:
        with pytest.raises(ValueError, match="passes"):
            model.run(tokens(B=1), depth=model.max_depth + 1)


@pytest.mark.parametrize("arm", ["hrm", "trm", "looped", "looped-random"])
def test_controls_match_parameters_or_flops(arm):
    cfg = config(arm, **{"recursion.use_act": False})
    same_params = control_config(cfg, "params")
    assert same_params.model.arch == "baseline" and same_params.model.n_layers == cfg.model.n_layers
    own = param_counts(cfg)["total"] - param_counts(same_params)["total"]
    assert 0 < own < 0.05 * param_counts(cfg)["total"]
    same_flops = control_config(cfg, "flops")
    passes = {"hrm": 2 * 2 * 2, "trm": 2 * 6, "looped": 2 * 3, "looped-random": 2 * 3}[arm]
    assert same_flops.model.n_layers == passes * cfg.model.n_layers
    same_depth = control_config(cfg, "depth")  # the untied stack of the arm's training FLOPs per step
    target = config_step_flops(cfg)
    miss = {n: abs(config_step_flops(with_overrides(same_depth, {"model.n_layers": n})) - target)
            for n in (same_depth.model.n_layers - 1, same_depth.model.n_layers, same_depth.model.n_layers + 1) if n}
    assert same_depth.model.arch == "baseline" and min(miss, key=miss.get) == same_depth.model.n_layers
    if arm == "trm":  # T-1 of T recursions run without gradient: fewer layers than its passes
        assert same_depth.model.n_layers < same_flops.model.n_layers


def test_every_recursive_arm_of_the_registry_is_tested_here_and_an_unknown_arm_is_refused(capsys):
    from reasonlab.cli import main
    from reasonlab.registry import RECURSIVE, model_class

    assert {arm["model.arch"] for arm in ARMS.values()} == set(RECURSIVE)
    with pytest.raises(UserError, match="registered arms are baseline, hrm, trm, looped, mor"):
        model_class("huginn")
    assert main(["train", "--config", "cpu-tiny", "--set", "model.arch=huginn", "--out", "never"]) == 2
    err = capsys.readouterr().err.strip()
    assert "unknown arm 'huginn'" in err and "baseline, hrm, trm, looped, mor" in err and len(err.splitlines()) == 1


def test_a_control_of_a_baseline_or_an_unknown_kind_is_refused():
    with pytest.raises(UserError, match="needs a recursive config"):
        control_config(resolve_config(None, TINY), "params")
    with pytest.raises(UserError, match="unknown control 'deep'"):
        control_config(config("trm"), "deep")


@pytest.mark.parametrize("key, value", [("looped.depth", 0), ("looped.mean_depth", 0.5), ("train.ema_decay", 1.0),
                                        ("trm.recursions", 0), ("hrm.H_cycles", 0), ("model.arch", "ut")])
def test_an_arm_config_that_cannot_run_names_its_key(key, value):
    with pytest.raises(UserError, match=key.replace(".", r"\.")):
        resolve_config(None, {key: value})


def test_old_configs_keep_loading():
    cfg = resolve_config(None, {"model.arch": "recursive", "recursion.H_cycles": 3, "recursion.grad_cycles": 2})
    assert cfg.model.arch == "hrm" and cfg.hrm.H_cycles == 3 and cfg.hrm.grad_cycles == 2
    assert math.isclose(sum(expected_passes(config("looped").looped)), 3)


def test_the_recursion_suite_builds_every_arm():
    from reasonlab.experiments.suites import load_suite

    suite = load_suite("recursion")
    archs = {name: cfg.model.arch for name, cfg in suite.configs.items()}
    assert set(archs.values()) == {"baseline", "hrm", "trm", "looped", "mor"}
    for name, cfg in suite.configs.items():
        assert config_step_flops(cfg) > 0, name
    for kind in ("depth", "outer"):  # the suite's controls are what control:KIND:trm builds
        built, listed = control_config(suite.configs["trm"], kind), suite.configs[f"control_{kind}_trm"]
        assert (listed.model.arch, listed.model.n_layers, config_step_flops(listed)) == \
            (built.model.arch, built.model.n_layers, config_step_flops(built))
    assert suite.configs["trm_one_step"].trm.grad == "one_step"


def test_a_control_of_a_carry_recipe_drops_the_carry_and_depth_matches_its_step():
    """trm-sudoku-hard-cpu carries its state across optimizer steps, one 24-pass segment a step; a
    plain stack has no state to carry, and the stack of trm's training FLOPs per step is 8 layers."""
    cfg = resolve_config("trm-sudoku-hard-cpu")
    controls = {kind: control_config(cfg, kind) for kind in ("params", "flops", "depth")}
    assert not any(c.recursion.carry_across_steps for c in controls.values())
    assert [controls[k].model.n_layers for k in ("params", "flops", "depth")] == [2, 48, 8]


@pytest.mark.parametrize("grad, pattern", [("full", [False] * 3 + [True] * 3), ("one_step", [False] * 4 + [True] * 2)])
def test_trm_gradient_runs_through_the_passes_it_names(grad, pattern):
    """A segment of 2 recursions of 2 latent updates and an answer update is 6 stack passes: the full
    gradient takes the last recursion's 3, the 1-step gradient its last latent update and the answer's."""
    cfg, model = built("trm", 2, False, **{"trm.grad": grad})
    model.train()
    enabled = []
    model.core.blocks[0].register_forward_hook(lambda *_: enabled.append(torch.is_grad_enabled()))
    step = model(tokens(), tokens(seed=2))
    assert enabled == pattern * 2  # two segments
    grad_passes, free_passes = type(model).passes(cfg.trm)
    assert (grad_passes, free_passes) == (pattern.count(True), pattern.count(False))
    assert step.flops == config_step_flops(cfg)
    step.loss.backward()
    assert model.core.embed.weight.grad.abs().sum() > 0


def test_the_outer_control_keeps_the_outer_loop_and_runs_the_stack_once_a_segment():
    cfg = resolve_config("trm-sudoku-hard-cpu")
    outer = control_config(cfg, "outer")
    assert (outer.model.arch, outer.looped.depth, outer.looped.act) == ("looped", 1, False)
    assert (outer.recursion, outer.train.ema_decay, outer.model.n_layers) == (cfg.recursion, cfg.train.ema_decay, 2)
    assert inference_layers(outer) == cfg.recursion.max_segments * cfg.model.n_layers
    assert inference_layers(cfg) == cfg.recursion.max_segments * 6 * cfg.model.n_layers  # 2 recursions of 3 passes
    control = build_model(control_config(built("trm", 3, False)[0], "outer"))
    passes = []
    control.core.blocks[0].register_forward_hook(lambda *_: passes.append(1))
    control(tokens(), tokens(seed=2))
    assert len(passes) == 3  # one a segment
