"""`reasonlab export CHECKPOINT --hf DIR`: a folder that transformers loads offline.

`AutoModelForCausalLM.from_pretrained(DIR, trust_remote_code=True)` and
`AutoTokenizer.from_pretrained(DIR)` read: config.json (the run's resolved config under
`reasonlab`, and `auto_map` naming the modelling file), modeling_reasonlab.py (self-contained:
torch and transformers only), model.safetensors (the checkpoint's inference weights, the EMA ones
where the run kept them), the tokenizer files and a README.md model card built from the run's
summary. The folder is written beside DIR and renamed into place, so an interrupted export leaves
no half folder; the checkpoint is only read.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

from safetensors.torch import save_file

from reasonlab import api
from reasonlab.config import Config
from reasonlab.errors import UserError
from reasonlab.io import writing
from reasonlab.model import param_counts

MODELING = Path(__file__).with_name("modeling_reasonlab.py")


def hf_config(cfg: Config, eot_id: int) -> dict[str, Any]:
    return {
        "model_type": "reasonlab",
        "architectures": ["ReasonlabForCausalLM"],
        "auto_map": {"AutoConfig": "modeling_reasonlab.ReasonlabConfig",
                     "AutoModelForCausalLM": "modeling_reasonlab.ReasonlabForCausalLM"},
        "reasonlab": cfg.to_dict(),
        "vocab_size": cfg.model.vocab_size,
        "max_position_embeddings": cfg.model.seq_len,
        "hidden_size": cfg.model.d_model,
        "num_hidden_layers": cfg.model.n_layers,
        "num_attention_heads": cfg.model.n_heads,
        "eos_token_id": eot_id,
        "bos_token_id": eot_id,
        "tie_word_embeddings": False,
        "torch_dtype": "float32",
    }


def model_card(cfg: Config, checkpoint: Path, summary: dict[str, Any] | None) -> str:
    """README.md: what the model is, how it was trained and scored (from summary.json), how to load it."""
    m, arch = cfg.model, cfg.model.arch
    params = param_counts(cfg)
    lines = ["---", "library_name: transformers", f"tags: [reasonlab, mixture-of-experts, {arch}]", "---", "",
             f"# reasonlab {arch} model", "",
             f"A {arch} language model trained with reasonlab: {params['total']:,} parameters ({params['active']:,} "
             f"active per token), d_model {m.d_model}, {m.n_layers} layers, {m.n_heads} heads, {m.n_experts} experts "
             f"(top-{m.top_k}), context {m.seq_len}, vocabulary {m.vocab_size}."]
    if arch != "baseline":
        section = getattr(cfg, arch)
        knobs = ", ".join(f"{k} {v}" for k, v in vars(section).items())
        lines.append(f"Recursion: up to {cfg.recursion.max_segments} segments, halting "
                     f"{'on' if cfg.recursion.use_act else 'off'}; {arch}: {knobs}.")
    lines += ["", "## Training", "", f"Data: `{cfg.task.name or cfg.data.source}`; checkpoint `{checkpoint.name}`."]
    if summary is not None:
        val = summary["final_val"]
        lines.append(f"{summary['steps']} steps ({summary['tokens']:,} tokens, {summary['flops']:.3g} FLOPs) on "
                     f"{summary['device']} ({summary['precision']}); at the end: val loss {val['loss']:.4f}, "
                     f"perplexity {val['perplexity']:.1f}, next-token accuracy {val['accuracy']:.2%}; "
                     f"best val loss {summary['best_val_loss']:.4f}.")
    lines += ["", "## Use", "", "```python", "from transformers import AutoModelForCausalLM, AutoTokenizer", "",
              "tokenizer = AutoTokenizer.from_pretrained(PATH)",
              "model = AutoModelForCausalLM.from_pretrained(PATH, trust_remote_code=True)",
              'ids = tokenizer("To be, or not", return_tensors="pt").input_ids',
              "print(tokenizer.decode(model.generate(ids, max_new_tokens=20, do_sample=False)[0]))", "```", "",
              "The modelling file recomputes the whole text for every generated token (no KV cache; "
              "reasonlab's own `generate` keeps one) and accepts right padding only."]
    if arch != "baseline":
        lines.append("`model(ids, segments=N, depth=D)` sets the recursion's test-time compute.")
    return "\n".join(lines) + "\n"


def export_hf(checkpoint: str | Path, out: str | Path) -> Path:
    """Write the Hugging Face folder of `checkpoint` to `out` (absent or empty)."""
    out = Path(out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise UserError(f"{out} already holds files: export into a new or empty folder")
    loaded = api.load(checkpoint, device="cpu")
    directory = Path(checkpoint)
    summary_path = directory.resolve().parent.parent / "summary.json"
    summary = json.loads(summary_path.read_text()) if summary_path.is_file() else None
    tokenizer = loaded.tokenizer
    tmp = out.parent / f".{out.name}.export.tmp"
    with writing(out):
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        try:
            state = {f"model.{k}": v.detach().contiguous() for k, v in loaded.model.state_dict().items()}
            save_file(state, str(tmp / "model.safetensors"), metadata={"format": "pt"})
            (tmp / "config.json").write_text(json.dumps(hf_config(loaded.config, tokenizer.eot_id), indent=2))
            shutil.copyfile(MODELING, tmp / MODELING.name)
            tokenizer.backend.save(str(tmp / "tokenizer.json"))
            (tmp / "tokenizer_config.json").write_text(json.dumps({
                "tokenizer_class": "PreTrainedTokenizerFast", "eos_token": tokenizer.eot_token,
                "bos_token": tokenizer.eot_token, "model_max_length": loaded.config.model.seq_len,
                "clean_up_tokenization_spaces": False}, indent=2))
            (tmp / "special_tokens_map.json").write_text(json.dumps(
                {"eos_token": tokenizer.eot_token, "bos_token": tokenizer.eot_token}, indent=2))
            (tmp / "README.md").write_text(model_card(loaded.config, directory, summary))
            if out.is_dir():
                out.rmdir()
            tmp.rename(out)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
    return out
