import pytest
import yaml

from conftest import CONFIGS
from reasonlab.config import Config, config_from_dict, resolve_config
from reasonlab.errors import UserError
from reasonlab.training.checkpoint import read_config


@pytest.mark.parametrize("preset", sorted(p.name for p in CONFIGS.glob("*.yaml")))
def test_presets_resolve(preset):
    cfg = resolve_config(CONFIGS / preset)
    assert isinstance(cfg, Config)


def test_seed_gpu_preset_is_the_original_best_baseline():
    cfg = resolve_config(CONFIGS / "seed-gpu.yaml")
    m, t = cfg.model, cfg.train
    assert (m.d_model, m.n_layers, m.n_heads, m.d_ff, m.n_experts, m.top_k, m.seq_len) == (512, 8, 8, 2048, 4, 2, 512)
    assert (t.batch_size, t.lr, t.warmup_steps, m.dropout, t.max_steps, t.eval_every) == (16, 6e-4, 0, 0.1, 1000, 100)


def test_the_reasoning_recipes_carry_the_published_hyperparameters():
    """TinyRecursiveModels' README commands and config/arch/trm.yaml; HRM's README and hrm_v1.yaml."""
    trm = resolve_config(CONFIGS / "trm-sudoku-extreme.yaml")
    m, t, k = trm.model, trm.train, trm.task
    assert (m.arch, m.d_model, m.n_heads, m.n_layers, m.causal) == ("trm", 512, 8, 2, False)
    assert (trm.trm.latent_steps, trm.trm.recursions, trm.recursion.max_segments) == (6, 3, 16)
    assert (t.lr, t.weight_decay, t.batch_size, t.warmup_steps, t.ema_decay, t.max_steps) == (1e-4, 1.0, 768, 2000,
                                                                                              0.999, 65104)
    assert trm.recursion.carry_across_steps and (k.source, k.train_examples, k.augment) == (
        "hf:sapientinc/sudoku-extreme", 1000, True)
    maze = resolve_config(CONFIGS / "trm-maze-hard.yaml")
    assert (maze.task.name, maze.task.source, maze.trm.latent_steps, maze.trm.recursions) == (
        "maze", "hf:sapientinc/maze-30x30-hard-1k", 4, 3)
    hrm = resolve_config(CONFIGS / "hrm-sudoku-extreme.yaml")
    assert (hrm.model.arch, hrm.model.n_layers, hrm.hrm.H_cycles, hrm.hrm.L_cycles) == ("hrm", 4, 2, 2)
    assert (hrm.train.max_steps, hrm.train.ema_decay) == (26042, 0.0)
    for recipe in (hrm, trm, maze):  # scored on every segment: "During evaluation, always use max steps"
        assert not recipe.recursion.halt_at_eval
        assert recipe.model.positions == "1d"  # the references count cells one after another
    for name in ("sudoku-hard-cpu", "hrm-sudoku-hard-cpu", "trm-sudoku-hard-cpu", "maze-hard-cpu", "trm-maze-hard-cpu"):
        assert resolve_config(CONFIGS / f"{name}.yaml").model.positions == "2d"  # the CPU scale learns with them


def test_overrides_are_typed():
    cfg = resolve_config(None, ["train.lr=1e-4", "model.n_layers=3", "train.compile=true", "data.source=/tmp/x"])
    assert cfg.train.lr == 1e-4 and cfg.model.n_layers == 3 and cfg.train.compile is True
    assert cfg.data.source == "/tmp/x"


@pytest.mark.parametrize(
    "override, key",
    [
        ("model.nope=1", "model.nope"),
        ("nosection.x=1", "nosection.x"),
        ("model.n_layers=abc", "model.n_layers"),
        ("model.n_layers=2.5", "model.n_layers"),
        ("train.compile=3", "train.compile"),
        ("model.dropout=1.5", "model.dropout"),
        ("model.top_k=9", "model.top_k"),
        ("train.lr=0", "train.lr"),
        ("train.precision=fp8", "train.precision"),
        ("model.d_model=130", "model.d_model"),
        ("train.cuda_graphs=true", "train.cuda_graphs"),  # needs train.compile
        ("model.positions=3d", "model.positions"),
        ("model.positions=2d", "model.positions"),  # a language model has no grid
    ],
)
def test_bad_override_names_the_key(override, key):
    with pytest.raises(UserError, match=key.replace(".", r"\.")):
        resolve_config(None, [override])


def test_bad_yaml_file(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("model:\n  d_modle: 64\n")
    with pytest.raises(UserError, match="model.d_modle"):
        resolve_config(bad)
    with pytest.raises(UserError, match="not found"):
        resolve_config(tmp_path / "missing.yaml")


def test_round_trip_through_dict():
    cfg = resolve_config(CONFIGS / "cpu-small.yaml", ["train.seed=7"])
    assert config_from_dict(cfg.to_dict()) == cfg


def _stored_with_old_key(max_segments: int) -> dict:
    """A resolved config as runs stored it before recursion.halt_max_steps became max_segments."""
    stored = Config().to_dict()
    del stored["recursion"]["max_segments"]
    stored["recursion"]["halt_max_steps"] = max_segments
    return stored


def test_renamed_key_in_a_preset(tmp_path):
    preset = tmp_path / "old.yaml"
    preset.write_text("recursion:\n  halt_max_steps: 3\n")
    assert Config().recursion.max_segments != 3
    assert resolve_config(preset).recursion.max_segments == 3


def test_renamed_key_in_a_stored_config(tmp_path):
    assert config_from_dict(_stored_with_old_key(3)).recursion.max_segments == 3
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.yaml").write_text(yaml.safe_dump(_stored_with_old_key(5)))
    assert read_config(run).recursion.max_segments == 5


def test_every_config_key_is_documented_in_the_generated_reference(capsys):
    """The reference page is generated from config.py's field comments: a key without one fails here."""
    from reasonlab.cli import main
    from reasonlab.config import all_keys
    from reasonlab.config_keys import key_docs, reference_markdown

    docs = key_docs()
    assert [d.key for d in docs] == all_keys()
    assert [d.key for d in docs if not d.meaning] == []
    reference = reference_markdown()
    assert all(f"| `{key}` |" in reference for key in all_keys())
    assert "| `train.curves` | `bool` | `True` | draw curves.png" in reference
    assert main(["config", "keys"]) == 0 and capsys.readouterr().out.strip() == reference.strip()
