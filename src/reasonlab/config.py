"""Typed run configuration: dataclasses, YAML presets, `section.key=value` overrides, validation.

This is the one place where user-supplied settings are parsed and checked. Everything downstream
receives a validated `Config` and can trust its types and ranges.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, get_origin, get_type_hints

import yaml

from reasonlab.errors import UserError
from reasonlab.registry import ALIASES, ARMS
from reasonlab.registry import arm as registered_arm

PRESETS_DIR = Path(__file__).resolve().parent / "configs"  # also at configs/ in a source checkout
PRECISIONS = ("auto", "fp32", "bf16")
DEVICES = ("auto", "cpu", "cuda")
POSITIONS = ("1d", "2d")
TRM_GRADS = ("full", "one_step")
MOR_ROUTERS = ("expert", "token")
MOR_KV = ("cache", "share")
SCHEDULES = ("linear", "wsd")


@dataclass
class ModelConfig:
    """The MoE transformer LM (docs: "The models")."""

    arch: str = "baseline"  # the arm: the baseline or a recursive arm over the same block stack (registry.py)
    vocab_size: int = 4096  # BPE size to train; replaced by the tokenizer's size for a named tokenizer
    seq_len: int = 128  # context length and training window
    d_model: int = 128  # width of the residual stream
    n_layers: int = 4  # blocks in the stack (a recursive arm runs the stack several times)
    n_heads: int = 4  # attention heads; d_model must divide by it
    d_ff: int = 512  # hidden width of each expert's feed-forward
    n_experts: int = 4  # experts of each MoE layer
    top_k: int = 2  # experts each token is routed to
    dropout: float = 0.1  # dropout on attention, residual branches and expert hidden units
    router_noise_std: float = 0.1  # Gaussian noise on the router's logits in training
    balance_loss_weight: float = 0.01  # weight of the Switch-style load-balancing loss
    causal: bool = True  # false = bidirectional attention (the grid format of reasoning tasks)
    positions: str = "1d"  # rotary positions: 1d (token index) or 2d (row and column of a square grid task)


@dataclass
class RecursionConfig:
    """What every recursive arm shares: segments of deep supervision and per-token halting."""

    max_segments: int = 2  # most segments a token is refined for (deep supervision steps)
    halt_exploration_prob: float = 0.1  # chance a token is made to run 2..max_segments segments in training
    use_act: bool = True  # learned per-token halting; false = every token runs max_segments segments
    halt_loss_weight: float = 0.5  # weight of the halting loss (BCE of the halt logit) beside the LM loss
    carry_across_steps: bool = False  # one segment per optimizer step, the state carried to the same rows
    halt_at_eval: bool = True  # false: evaluation runs every segment, halting off, as HRM and TRM score


@dataclass
class HRMConfig:
    """model.arch hrm: HRM-style high/low-level cycles (model/hrm.py)."""

    H_cycles: int = 2  # high-level cycles per segment
    L_cycles: int = 2  # low-level updates per high-level cycle
    grad_cycles: int = 1  # trailing H cycles per segment that carry gradient

    def check(self) -> None:
        for key in ("H_cycles", "L_cycles", "grad_cycles"):
            _check(getattr(self, key) >= 1, f"hrm.{key}", "must be >= 1", getattr(self, key))
        _check(self.grad_cycles <= self.H_cycles, "hrm.grad_cycles", f"must be <= hrm.H_cycles ({self.H_cycles})",
               self.grad_cycles)

    def describe(self) -> str:
        return (f"H_cycles {self.H_cycles}, L_cycles {self.L_cycles} per segment, gradient through the last "
                f"{self.grad_cycles} H cycle(s)")


@dataclass
class TRMConfig:
    """model.arch trm: TRM's one network over a latent z and an answer y (model/trm.py)."""

    latent_steps: int = 2  # n: latent updates z <- f(x + y + z) per recursion
    recursions: int = 2  # T: recursions per segment; the first T-1 run without gradient
    grad: str = "full"  # full: gradient through every pass of the last recursion; one_step: its last two passes only

    def check(self) -> None:
        for key in ("latent_steps", "recursions"):
            _check(getattr(self, key) >= 1, f"trm.{key}", "must be >= 1", getattr(self, key))
        _check(self.grad in TRM_GRADS, "trm.grad", f"must be one of {', '.join(TRM_GRADS)}", self.grad)

    def describe(self) -> str:
        grad = ("the 1-step gradient (the last latent and the answer update)" if self.grad == "one_step"
                else "the last with full backpropagation")
        return (f"{self.recursions} recursions of {self.latent_steps} latent steps per segment, the first "
                f"{self.recursions - 1} without gradient, {grad}")


@dataclass
class LoopedConfig:
    """model.arch looped: one block stack applied `depth` times (model/looped.py)."""

    depth: int = 4  # passes per segment (the trained depth when mean_depth is 0)
    act: bool = False  # per-token adaptive computation time over passes (Graves; Universal Transformers)
    act_threshold: float = 0.99  # a token halts once its summed halting probability reaches this
    ponder_cost: float = 0.01  # weight of the ponder cost (passes + remainder) in the loss
    mean_depth: float = 0.0  # > 0: recurrent-depth training, each step's depth drawn with this mean
    depth_sigma: float = 0.5  # spread of the log-normal Poisson depth draw
    backprop_depth: int = 0  # gradient through only the last k passes of a segment; 0 = all

    def check(self) -> None:
        _check(self.depth >= 1, "looped.depth", "must be >= 1", self.depth)
        _check(0.0 < self.act_threshold <= 1.0, "looped.act_threshold", "must be in (0, 1]", self.act_threshold)
        _check(self.ponder_cost >= 0.0, "looped.ponder_cost", "must be >= 0", self.ponder_cost)
        _check(self.mean_depth == 0.0 or self.mean_depth >= 1.0, "looped.mean_depth",
               "must be >= 1 (or 0 for a fixed depth)", self.mean_depth)
        _check(self.depth_sigma >= 0.0, "looped.depth_sigma", "must be >= 0", self.depth_sigma)
        _check(self.backprop_depth >= 0, "looped.backprop_depth", "must be >= 0 (0 = every pass)",
               self.backprop_depth)

    def describe(self) -> str:
        depth = (f"depth drawn around {self.mean_depth} (sigma {self.depth_sigma}) in training, {self.depth} passes"
                 if self.mean_depth else f"{self.depth} passes")
        backprop = f", gradient through the last {self.backprop_depth} passes" if self.backprop_depth else ""
        halting = (f", per-token ACT over passes (threshold {self.act_threshold}, ponder cost {self.ponder_cost})"
                   if self.act else "")
        return f"{depth} per segment{backprop}{halting}"


@dataclass
class MoRConfig:
    """model.arch mor: Mixture-of-Recursions, routers choosing which tokens recur (model/mor.py)."""

    recursions: int = 4  # N_r: most passes of the stack a token gets per segment
    router: str = "expert"  # expert: each recursion keeps its top-k tokens; token: each token picks its depth
    capacity_last: float = 0.25  # expert: share of tokens at the last recursion, linear from all at the first
    kv: str = "cache"  # cache: a recursion attends to its own tokens' keys and values; share: to the first's
    router_loss_weight: float = 0.1  # expert: BCE teaching the router the top-k choice; token: load balance

    def check(self) -> None:
        _check(self.recursions >= 1, "mor.recursions", "must be >= 1", self.recursions)
        _check(self.router in MOR_ROUTERS, "mor.router", f"must be one of {', '.join(MOR_ROUTERS)}", self.router)
        _check(0.0 < self.capacity_last <= 1.0, "mor.capacity_last", "must be in (0, 1]", self.capacity_last)
        _check(self.kv in MOR_KV, "mor.kv", f"must be one of {', '.join(MOR_KV)}", self.kv)
        _check(self.router_loss_weight >= 0.0, "mor.router_loss_weight", "must be >= 0", self.router_loss_weight)

    def capacities(self) -> list[float]:
        """The share of tokens at each recursion under expert-choice routing."""
        n = self.recursions
        return [1.0 - (1.0 - self.capacity_last) * r / max(1, n - 1) for r in range(n)]

    def describe(self) -> str:
        routing = (f"expert-choice routers keep {', '.join(f'{c:.0%}' for c in self.capacities())} of the tokens"
                   if self.router == "expert" else "a token-choice router picks each token's depth")
        kv = "the first recursion's keys and values shared" if self.kv == "share" else "keys and values per recursion"
        return f"up to {self.recursions} passes of the stack per segment, {routing}, {kv}"


@dataclass
class DataConfig:
    """Where text comes from and how it becomes tokens."""

    source: str = "shakespeare"  # "shakespeare", a .txt/.jsonl file or folder, or "hf:NAME[:SUBSET]"
    tokenizer: str = "bpe"  # "bpe" trains a byte-level BPE on the train split; else an HF name or path
    val_fraction: float = 0.1  # share of documents held out for validation
    chunk_chars: int = 4000  # a one-document corpus is cut into chunks of whole paragraphs of >= this many characters
    max_documents: int = 0  # 0 = all documents
    max_chars: int = 0  # cut each document to this many characters; 0 = no cut
    cache_dir: str = ""  # "" = $REASONLAB_CACHE or ~/.cache/reasonlab


@dataclass
class TaskConfig:
    """A generated reasoning task to train on instead of text (`reasonlab tasks --list`)."""

    name: str = ""  # "" = language modelling on data.source
    size: int = 0  # grid side of sudoku (4, 6, 9) and maze; 0 = the task's default
    reverse: bool = True  # addition: every number written least-significant digit first
    min_search: int = 0  # sudoku: only puzzles whose solver needs at least this many guesses
    format: str = "seq"  # seq: prompt, "=", answer decoded token by token (causal); grid: every cell in one pass
    train_min_level: int = 0  # levels (digits, bits, blanks, path length) trained on; 0 = the task's default
    train_max_level: int = 0  # highest level trained on; 0 = the task's default
    test_min_level: int = 0  # the harder range tested after training; 0 = the task's default
    test_max_level: int = 0  # highest level tested; 0 = the task's default
    train_examples: int = 20000  # instances in the train split
    eval_examples: int = 256  # held-out instances per split (val at the train levels, test at the harder ones)
    test_examples: int = 0  # test instances where not eval_examples; past a published test split's size, all of it
    seed: int = 1234  # the dataset's seed: every arm and training seed sees the same instances
    augment: bool = False  # train on a fresh symmetric variant of each instance every time (sudoku, maze)
    source: str = ""  # "" = generated; else a published set: hf:NAME, a folder or a CSV (tasks/published.py)
    generator: int = 2  # how instances are drawn: 2 = each from its own seed; 1 = one stream a split (older runs)


@dataclass
class TrainConfig:
    """Optimisation, schedule, precision and bookkeeping."""

    seed: int = 0  # fixes init, data order, dropout and router noise
    max_steps: int = 300  # optimizer steps of the run
    batch_size: int = 16  # the global batch: rows per optimizer step over every process
    micro_batch_size: int = 0  # rows per forward/backward of one process (gradient accumulation); 0 = its whole share
    lr: float = 6e-4  # peak learning rate of AdamW
    warmup_steps: int = 0  # linear warmup from 0 to lr
    min_lr_ratio: float = 0.1  # linear decay ends at this fraction of the peak lr
    schedule: str = "linear"  # linear: decay over every step after warmup; wsd: stable at lr, then the cooldown
    cooldown_fraction: float = 0.2  # wsd: the last fraction of the steps, decaying linearly to min_lr_ratio * lr
    weight_decay: float = 0.1  # AdamW's decoupled weight decay
    beta1: float = 0.9  # AdamW's first-moment decay
    beta2: float = 0.95  # AdamW's second-moment decay
    eps: float = 1e-8  # AdamW's epsilon
    grad_clip: float = 1.0  # 0 disables clipping
    precision: str = "auto"  # auto = bf16 autocast on CUDA with bf16 support, else fp32
    compile: bool = False  # run the model through torch.compile (compiled before the first, timed, step)
    cuda_graphs: bool = False  # with compile on CUDA: replay each step as CUDA graphs (small batches are launch-bound)
    activation_checkpointing: bool = False  # recompute each block's activations in backward
    loss_chunk_tokens: int = 0  # LM head + loss in checkpointed chunks of this many tokens; 0 = all at once
    device: str = "auto"  # auto (CUDA when there is one), cpu or cuda
    log_every: int = 10  # steps between train records in metrics.jsonl
    eval_every: int = 100  # steps between evaluations on the val split
    eval_batches: int = 20  # val batches per evaluation, always the same slice of the val split
    save_every: int = 0  # periodic checkpoints every N steps; 0 = only best and final
    curves: bool = True  # draw curves.png when the run ends (about 0.2 s: half of a run of seconds)
    ema_decay: float = 0.0  # > 0: keep an exponential moving average of the weights to evaluate and save; 0 = off
    early_stop_patience: int = 0  # > 0: stop after this many evaluations without a better checkpoint; 0 = never
    loggers: list[str] = field(default_factory=list)  # trackers besides metrics.jsonl: csv, tensorboard, wandb, mlflow
    tracker_project: str = "reasonlab"  # W&B project; MLflow experiment of runs without a group
    tracker_group: str = ""  # the study a run belongs to (W&B group, MLflow experiment); set by compare and ablate


@dataclass
class Config:
    model: ModelConfig = field(default_factory=ModelConfig)
    recursion: RecursionConfig = field(default_factory=RecursionConfig)
    hrm: HRMConfig = field(default_factory=HRMConfig)
    trm: TRMConfig = field(default_factory=TRMConfig)
    looped: LoopedConfig = field(default_factory=LoopedConfig)
    mor: MoRConfig = field(default_factory=MoRConfig)
    data: DataConfig = field(default_factory=DataConfig)
    task: TaskConfig = field(default_factory=TaskConfig)
    train: TrainConfig = field(default_factory=TrainConfig)

    def to_dict(self) -> dict[str, dict[str, Any]]:
        return dataclasses.asdict(self)

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False)


SECTIONS: dict[str, type] = {
    "model": ModelConfig, "recursion": RecursionConfig, "hrm": HRMConfig, "trm": TRMConfig, "looped": LoopedConfig,
    "mor": MoRConfig, "data": DataConfig, "task": TaskConfig, "train": TrainConfig,
}
TASK_FORMATS = ("seq", "grid")
LOGGERS = ("csv", "tensorboard", "wandb", "mlflow")  # train.loggers; each but csv is an optional extra
BOOKKEEPING_KEYS = ("loggers", "tracker_project", "tracker_group", "curves")  # train keys that leave results unchanged
RENAMED_KEYS = {  # old name -> new: old configs keep loading
    "recursion.halt_max_steps": "recursion.max_segments",
    "recursion.H_cycles": "hrm.H_cycles",
    "recursion.L_cycles": "hrm.L_cycles",
    "recursion.grad_cycles": "hrm.grad_cycles",
}


def _coerce(key: str, value: Any, kind: type) -> Any:
    """Convert a YAML/CLI value to the field's type, or fail naming the key."""
    if kind is bool:
        if isinstance(value, bool):
            return value
    elif kind is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
    elif kind is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):  # YAML 1.1 reads "1e-4" as a string
            try:
                return float(value)
            except ValueError:
                pass
    elif kind is str:
        if isinstance(value, (str, int, float)) and not isinstance(value, bool):
            return str(value)
    elif get_origin(kind) is list:  # of str: a YAML list, or "a,b" from --set
        if isinstance(value, str):
            value = [part.strip() for part in value.split(",") if part.strip()]
        if isinstance(value, list) and all(isinstance(v, str) for v in value):
            return list(value)
        raise UserError(f"{key}: expected a list of names (or NAME,NAME), got {value!r}")
    raise UserError(f"{key}: expected {kind.__name__}, got {value!r}")


def _apply(cfg: Config, key: str, value: Any) -> None:
    key = RENAMED_KEYS.get(key, key)
    section, _, name = key.partition(".")
    if section not in SECTIONS or not name:
        raise UserError(f"unknown config key {key!r}{closest(key, all_keys())} (sections: {', '.join(SECTIONS)})")
    sub = getattr(cfg, section)
    hints = get_type_hints(type(sub))
    if name not in hints:
        raise UserError(f"unknown config key {key!r}{closest(key, all_keys())}")
    value = _coerce(key, value, hints[name])
    if key == "model.arch":
        value = ALIASES.get(value, value)
    setattr(sub, name, value)


def all_keys() -> list[str]:
    """Every `section.key` a config has."""
    return [f"{section}.{f.name}" for section, kind in SECTIONS.items() for f in dataclasses.fields(kind)]


def closest(name: str, names: list[str]) -> str:
    """`: did you mean X or Y?` for the valid names nearest a mistyped one, or nothing."""
    found = difflib.get_close_matches(name, names, n=2, cutoff=0.6)
    return f" (did you mean {' or '.join(found)}?)" if found else ""


def _flatten(data: Any, origin: str) -> dict[str, Any]:
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise UserError(f"{origin}: expected a mapping of sections, got {type(data).__name__}")
    flat: dict[str, Any] = {}
    for section, values in data.items():
        if not isinstance(values, dict):
            raise UserError(f"{origin}: section {section!r} must be a mapping")
        for name, value in values.items():
            flat[f"{section}.{name}"] = value
    return flat


def preset_path(name_or_path: str | Path) -> Path:
    """A YAML file by path, or a bundled preset by name (`cpu-small` = configs/cpu-small.yaml)."""
    path = Path(name_or_path)
    if path.is_file() or path.suffix in (".yaml", ".yml"):
        return path
    bundled = PRESETS_DIR / f"{name_or_path}.yaml"
    if bundled.is_file():
        return bundled
    names = sorted(p.stem for p in PRESETS_DIR.glob("*.yaml"))
    raise UserError(f"unknown preset {str(name_or_path)!r}{closest(str(name_or_path), names)} "
                    f"(bundled: {', '.join(names)}; or give a .yaml file)")


def describe_preset(path: Path) -> str:
    """The first sentence of a preset's leading comment: what it is for."""
    comment = []
    for line in path.read_text().splitlines():
        if not line.startswith("#"):
            break
        comment.append(line.lstrip("# ").strip())
    text = " ".join(comment)
    return text.split(". ")[0].rstrip(".") if text else ""


def preset_ref(ref: str, origin: Path) -> Path:
    """A preset named inside another file: a .yaml path relative to that file, else a bundled preset
    of that name (`extends: sudoku-hard-cpu.yaml` in a user's own folder finds the bundled one)."""
    if not ref.endswith((".yaml", ".yml")):
        return Path(ref)
    beside = origin.parent / ref
    bundled = PRESETS_DIR / ref
    return bundled if not beside.exists() and bundled.is_file() else beside


def read_preset(path: str | Path, _seen: tuple[Path, ...] = ()) -> dict[str, Any]:
    """A YAML preset as dotted keys; `extends: other.yaml` (or a bundled preset name) is read first."""
    path = preset_path(path)
    if path.resolve() in _seen:
        raise UserError(f"config file {path} extends itself")
    data = read_yaml(path)
    parent = data.pop("extends", None) if isinstance(data, dict) else None
    flat: dict[str, Any] = {}
    if parent is not None:
        if not isinstance(parent, str):
            raise UserError(f"{path}: extends must be a file name, got {parent!r}")
        flat.update(read_preset(preset_ref(parent, path), (*_seen, path.resolve())))
    flat.update(_flatten(data, str(path)))
    return flat


def read_yaml(path: str | Path) -> Any:
    path = Path(path)
    try:
        return yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise UserError(f"config file not found: {path}") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise UserError(f"cannot read config file {path}: {exc}") from None
    except yaml.YAMLError as exc:
        raise UserError(f"config file {path} is not valid YAML: {str(exc).splitlines()[0]}") from None


def parse_override(text: str) -> tuple[str, Any]:
    """`section.key=value` -> (key, YAML-parsed value)."""
    key, sep, raw = text.partition("=")
    if not sep or not key.strip():
        raise UserError(f"--set expects section.key=value, got {text!r}")
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError:
        value = raw
    return key.strip(), value


def resolve_config(
    path: str | Path | None = None,
    overrides: dict[str, Any] | list[str] | None = None,
) -> Config:
    """Defaults <- YAML file <- overrides (a dict of dotted keys, or `key=value` strings), validated."""
    cfg = Config()
    if path is not None:
        for key, value in read_preset(path).items():
            _apply(cfg, key, value)
    if isinstance(overrides, list):
        overrides = dict(parse_override(o) for o in overrides)
    for key, value in (overrides or {}).items():
        _apply(cfg, key, value)
    validate(cfg, new=True)
    return cfg


def with_overrides(cfg: Config, overrides: dict[str, Any]) -> Config:
    """A validated copy of `cfg` with dotted-key overrides applied."""
    out = config_from_dict(cfg.to_dict())
    for key, value in overrides.items():
        _apply(out, key, value)
    validate(out, new=True)
    return out


def config_from_dict(data: dict[str, Any]) -> Config:
    """Rebuild a stored, resolved config (run directory or checkpoint)."""
    cfg = Config()
    flat = _flatten(data, "stored config")
    if flat.get("task.name") and "task.generator" not in flat:  # a task run from before generator 2
        flat["task.generator"] = 1
    for key, value in flat.items():
        _apply(cfg, key, value)
    validate(cfg)
    return cfg


def reread(configs: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]] | None:
    """Stored config dicts as this reasonlab reads them: keys added since they were written take
    their defaults (which keep the earlier behaviour) and renamed keys map; None where one no longer
    reads. How a study folder from an earlier reasonlab is known to hold the same study."""
    try:
        return {name: config_from_dict(cfg).to_dict() for name, cfg in configs.items()}
    except UserError:
        return None


def _check(ok: bool, key: str, message: str, value: Any) -> None:
    if not ok:
        raise UserError(f"{key}: {message}, got {value!r}")


def validate(cfg: Config, new: bool = False) -> None:
    """Range and consistency checks; each failure names the offending key. `new`: also the checks
    added after runs may have been stored without them, which a stored config is spared so that
    old runs keep loading."""
    m, d, t = cfg.model, cfg.data, cfg.train
    if new:
        _check(not cfg.task.name or cfg.task.format != "seq" or m.causal, "model.causal",
               "must be true for task.format seq (a bidirectional model sees the answer it is to predict)",
               m.causal)
    registered_arm(m.arch)
    for key in ("vocab_size", "seq_len", "d_model", "n_layers", "n_heads", "d_ff", "n_experts", "top_k"):
        _check(getattr(m, key) >= 1, f"model.{key}", "must be >= 1", getattr(m, key))
    if not cfg.task.name and d.tokenizer == "bpe":
        _check(m.vocab_size >= 260, "model.vocab_size", "must be >= 260 (256 bytes + specials)", m.vocab_size)
    _check(m.d_model % m.n_heads == 0, "model.d_model", f"must be divisible by model.n_heads ({m.n_heads})", m.d_model)
    _check((m.d_model // m.n_heads) % 2 == 0, "model.n_heads", "must leave an even head size for rotary embeddings",
           m.n_heads)
    _check(m.positions in POSITIONS, "model.positions", f"must be one of {', '.join(POSITIONS)}", m.positions)
    if m.positions == "2d":
        _check(bool(cfg.task.name) and cfg.task.format == "grid", "model.positions",
               "2d needs a grid task (task.name set, task.format grid)", m.positions)
        _check((m.d_model // m.n_heads) % 4 == 0, "model.n_heads",
               "must leave a head size divisible by 4 for 2D rotary positions", m.n_heads)
    _check(m.top_k <= m.n_experts, "model.top_k", f"must be <= model.n_experts ({m.n_experts})", m.top_k)
    _check(0.0 <= m.dropout < 1.0, "model.dropout", "must be in [0, 1)", m.dropout)
    _check(m.router_noise_std >= 0.0, "model.router_noise_std", "must be >= 0", m.router_noise_std)
    _check(m.balance_loss_weight >= 0.0, "model.balance_loss_weight", "must be >= 0", m.balance_loss_weight)

    r = cfg.recursion
    _check(r.max_segments >= 1, "recursion.max_segments", "must be >= 1", r.max_segments)
    _check(0.0 <= r.halt_exploration_prob <= 1.0, "recursion.halt_exploration_prob", "must be in [0, 1]",
           r.halt_exploration_prob)
    _check(r.halt_loss_weight >= 0.0, "recursion.halt_loss_weight", "must be >= 0", r.halt_loss_weight)
    _check(m.arch != "baseline" or not r.carry_across_steps, "recursion.carry_across_steps",
           "needs a recursive model.arch", r.carry_across_steps)
    for section in (a.section for a in ARMS.values() if a.section is not None):
        getattr(cfg, section).check()

    _check(bool(d.source.strip()), "data.source", "must not be empty", d.source)
    _check(bool(d.tokenizer.strip()), "data.tokenizer", "must not be empty", d.tokenizer)
    _check(0.0 < d.val_fraction < 1.0, "data.val_fraction", "must be in (0, 1)", d.val_fraction)
    _check(d.max_documents >= 0, "data.max_documents", "must be >= 0", d.max_documents)
    _check(d.max_chars >= 0, "data.max_chars", "must be >= 0", d.max_chars)
    _check(d.chunk_chars >= 0, "data.chunk_chars", "must be >= 0 (0 = never cut)", d.chunk_chars)

    k = cfg.task
    _check(k.format in TASK_FORMATS, "task.format", f"must be one of {', '.join(TASK_FORMATS)}", k.format)
    _check(k.generator in (1, 2), "task.generator", "must be 1 or 2", k.generator)
    for key in ("size", "min_search", "train_min_level", "train_max_level", "test_min_level", "test_max_level",
                "test_examples"):
        _check(getattr(k, key) >= 0, f"task.{key}", "must be >= 0", getattr(k, key))
    for key in ("train_examples", "eval_examples"):
        _check(getattr(k, key) >= 1, f"task.{key}", "must be >= 1", getattr(k, key))

    for key in ("max_steps", "batch_size", "log_every", "eval_every", "eval_batches"):
        _check(getattr(t, key) >= 1, f"train.{key}", "must be >= 1", getattr(t, key))
    for key in ("warmup_steps", "save_every", "loss_chunk_tokens", "micro_batch_size", "early_stop_patience"):
        _check(getattr(t, key) >= 0, f"train.{key}", "must be >= 0", getattr(t, key))
    for key in ("lr", "eps"):
        value = getattr(t, key)
        _check(math.isfinite(value) and value > 0, f"train.{key}", "must be > 0", value)
    _check(0.0 <= t.min_lr_ratio <= 1.0, "train.min_lr_ratio", "must be in [0, 1]", t.min_lr_ratio)
    _check(t.weight_decay >= 0.0, "train.weight_decay", "must be >= 0", t.weight_decay)
    _check(t.schedule in SCHEDULES, "train.schedule", f"must be one of {', '.join(SCHEDULES)}", t.schedule)
    _check(0.0 < t.cooldown_fraction < 1.0, "train.cooldown_fraction", "must be in (0, 1)", t.cooldown_fraction)
    _check(0.0 <= t.beta1 < 1.0, "train.beta1", "must be in [0, 1)", t.beta1)
    _check(0.0 <= t.beta2 < 1.0, "train.beta2", "must be in [0, 1)", t.beta2)
    _check(t.grad_clip >= 0.0, "train.grad_clip", "must be >= 0 (0 disables clipping)", t.grad_clip)
    _check(t.precision in PRECISIONS, "train.precision", f"must be one of {', '.join(PRECISIONS)}", t.precision)
    _check(t.device in DEVICES, "train.device", f"must be one of {', '.join(DEVICES)}", t.device)
    _check(0.0 <= t.ema_decay < 1.0, "train.ema_decay", "must be in [0, 1) (0 = off)", t.ema_decay)
    _check(t.micro_batch_size <= t.batch_size, "train.micro_batch_size",
           f"must be <= train.batch_size ({t.batch_size})", t.micro_batch_size)
    _check(t.micro_batch_size == 0 or t.batch_size % t.micro_batch_size == 0, "train.micro_batch_size",
           f"must divide train.batch_size ({t.batch_size})", t.micro_batch_size)
    for name in t.loggers:
        _check(name in LOGGERS, "train.loggers", f"each must be one of {', '.join(LOGGERS)}", name)
    _check(len(set(t.loggers)) == len(t.loggers), "train.loggers", "names a logger twice", t.loggers)
    _check(t.compile or not t.cuda_graphs, "train.cuda_graphs", "needs train.compile: true", t.cuda_graphs)
