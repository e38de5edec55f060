"""reasonlab export --hf: transformers loads the folder offline and computes reasonlab's logits."""

import hashlib
import importlib.util

import pytest
import torch

from conftest import CONFIGS
from reasonlab import api
from reasonlab.cli import main
from reasonlab.export.hf import MODELING
from reasonlab.model.layers import apply_rope, rope_tables

transformers = pytest.importorskip("transformers")

ARMS = {
    "baseline": [],
    "hrm": ["--model", "hrm", "--set", "hrm.H_cycles=2", "--set", "recursion.max_segments=2"],
    "trm": ["--model", "trm", "--set", "trm.latent_steps=2", "--set", "trm.recursions=2",
            "--set", "recursion.halt_at_eval=false"],
    "looped": ["--model", "looped", "--set", "looped.depth=3", "--set", "recursion.max_segments=1"],
    "looped-act": ["--model", "looped", "--set", "looped.depth=3", "--set", "looped.act=true",
                   "--set", "recursion.max_segments=2", "--set", "train.ema_decay=0.9"],
    "mor": ["--model", "mor", "--set", "mor.recursions=3", "--set", "recursion.max_segments=1"],
    "mor-token-share": ["--model", "mor", "--set", "mor.recursions=3", "--set", "mor.router=token",
                        "--set", "mor.kv=share", "--set", "recursion.max_segments=2"],
}


def _digest(folder):
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir())}


@pytest.mark.slow  # trains each arm for a few steps, then loads it through transformers
@pytest.mark.parametrize("arm", list(ARMS))
def test_transformers_loads_the_export_and_gives_reasonlabs_logits(tmp_path, arm, capsys, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    run = tmp_path / "run"
    assert main(["train", "--config", str(CONFIGS / "cpu-tiny.yaml"), "--out", str(run), "--max-steps", "4",
                 "--quiet", "--set", "train.eval_every=4", *ARMS[arm]]) == 0
    checkpoint = run / "checkpoints" / "final"
    before = _digest(checkpoint)
    out = tmp_path / "hf"
    assert main(["export", str(checkpoint), "--hf", str(out)]) == 0
    assert _digest(checkpoint) == before
    assert {p.name for p in out.iterdir()} >= {"config.json", "modeling_reasonlab.py", "model.safetensors",
                                               "tokenizer.json", "tokenizer_config.json", "README.md"}
    assert "import reasonlab" not in (out / "modeling_reasonlab.py").read_text()
    assert "4 steps" in (out / "README.md").read_text()

    model = transformers.AutoModelForCausalLM.from_pretrained(str(out), trust_remote_code=True).eval()
    tokenizer = transformers.AutoTokenizer.from_pretrained(str(out))
    ours = api.load(checkpoint, device="cpu")
    text = "To be, or not to be, that is the question"
    ids = tokenizer(text, return_tensors="pt").input_ids
    assert ids[0].tolist() == ours.tokenizer.encode(text)
    with torch.no_grad():
        theirs, mine = model(ids).logits, ours.model.run(ids).logits
    difference = (theirs - mine).abs().max().item()
    print(f"{arm}: max |logit difference| {difference:.2e}")
    assert difference < 1e-5
    generated = model.generate(ids, max_new_tokens=8, do_sample=False)
    expected = ours.generate(text, max_new_tokens=8, temperature=0)
    assert tokenizer.decode(generated[0]) == expected


def test_an_export_into_a_folder_with_files_is_refused(tmp_path, capsys):
    out = tmp_path / "hf"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    assert main(["export", str(tmp_path / "no-checkpoint"), "--hf", str(out)]) == 2
    assert capsys.readouterr().err.strip() == f"error: {out} already holds files: export into a new or empty folder"
    assert [p.name for p in out.iterdir()] == ["keep.txt"]


@pytest.mark.parametrize("grid", [False, True])
def test_the_exported_model_rotates_positions_as_reasonlab_does(grid):
    spec = importlib.util.spec_from_file_location("exported_modeling", MODELING)
    exported = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(exported)
    x = torch.randn(2, 3, 16, 8)
    torch.testing.assert_close(exported.apply_rope(x, *exported.rope_tables(16, 8, grid)),
                               apply_rope(x, *rope_tables(16, 8, grid=grid)))


def test_every_registered_arm_is_exported_and_tested_here():
    """The export's model file (standalone: it cannot import reasonlab) knows every recursive arm of
    the registry, and refuses an arm it does not know instead of loading it as the baseline."""
    from reasonlab.registry import ARCHS, RECURSIVE

    assert {case.split("-")[0] for case in ARMS} == set(ARCHS)
    spec = importlib.util.spec_from_file_location("modeling_reasonlab", MODELING)
    modeling = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(modeling)
    assert set(modeling.ARMS) == set(RECURSIVE)
    config = modeling.ReasonlabConfig(reasonlab={"model": {"arch": "mystery"}})
    with pytest.raises(ValueError, match="'mystery'"):
        modeling.ReasonlabForCausalLM(config)
