"""Checkpoints as a folder: safetensors for tensors, JSON/YAML for the rest, written atomically.

    model.safetensors      inference weights (fp32): the EMA weights when train.ema_decay > 0, else the
                           trained weights; what `load_weights` (and so `reasonlab.load`) reads
    raw_model.safetensors  only with EMA: the trained weights (fp32 master copy), for resuming
    optimizer.safetensors  AdamW moments and the RNG states
    carry.safetensors      only with recursion.carry_across_steps: the rows and state the next step
                           continues, every process's (under torchrun, each one's names prefixed rank<r>/)
    state.json             step, schedule length, sampler state, best val loss, counters, param groups,
                           and every other file's sha256 (`files`), checked on every load
    config.yaml            the resolved config
    tokenizer.json, tokenizer_meta.json

With EMA, model.safetensors is also the EMA's own state on resume (its parameter entries are the
shadows, exactly); a checkpoint without raw_model.safetensors holds no average.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import yaml
from safetensors.torch import load_file, save_file
from torch import nn

from reasonlab.config import Config, config_from_dict
from reasonlab.data.tokenizer import Tokenizer
from reasonlab.errors import UserError
from reasonlab.io import atomic_replace_dir, resolve_dir

WEIGHTS = "model.safetensors"
RAW_WEIGHTS = "raw_model.safetensors"
CARRY = "carry.safetensors"


@dataclass
class TrainingState:
    step: int
    max_steps: int
    sampler: dict[str, int]
    best_val_loss: float
    tokens: int
    flops: int
    train_time_s: float
    wall_time_s: float
    log_window: dict[str, float]  # sums since the last train log line, so a resumed run logs the same averages
    best_val_exact: float = -1.0  # tasks: the best checkpoint's val exact match, and its val loss (the tie-break)
    best_val_exact_loss: float = math.inf
    evals_since_best: int = 0  # evaluations without a better checkpoint (train.early_stop_patience)


def _optimizer_tensors(optimizer: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], list[dict[str, Any]]]:
    sd = optimizer.state_dict()
    tensors = {f"state.{pid}.{name}": t.detach().cpu().contiguous()
               for pid, st in sd["state"].items() for name, t in st.items()}
    return tensors, sd["param_groups"]


def _cpu(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {k: v.detach().cpu().contiguous() for k, v in state.items()}


def _rng_tensors() -> dict[str, torch.Tensor]:
    tensors = {"rng.cpu": torch.get_rng_state()}
    if torch.cuda.is_available():
        for i, state in enumerate(torch.cuda.get_rng_state_all()):
            tensors[f"rng.cuda.{i}"] = state
    return tensors


def save_checkpoint(
    directory: str | Path,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    state: TrainingState,
    config: Config,
    tokenizer: Tokenizer,
    averaged: dict[str, torch.Tensor] | None = None,
    carries: list[dict[str, torch.Tensor]] | None = None,
) -> None:
    """`averaged`: the EMA weights as a state dict of `model`; saved as the inference weights, and
    the model's own as raw_model.safetensors. `carries`: each process's carried rows and state, by
    name, in rank order (one file; a process's names prefixed rank<r>/ where there are several)."""
    opt_tensors, param_groups = _optimizer_tensors(optimizer)
    weights = _cpu(model.state_dict())

    def fill(tmp: Path) -> None:
        if averaged is None:
            save_file(weights, str(tmp / WEIGHTS))
        else:
            save_file(_cpu(averaged), str(tmp / WEIGHTS))
            save_file(weights, str(tmp / RAW_WEIGHTS))
        save_file({**opt_tensors, **_rng_tensors()}, str(tmp / "optimizer.safetensors"))
        if carries is not None:
            save_file(_cpu(_by_rank(carries)), str(tmp / CARRY))
        (tmp / "config.yaml").write_text(config.to_yaml())
        tokenizer.save(tmp)
        files = {path.name: file_hash(path) for path in sorted(tmp.iterdir())}
        (tmp / "state.json").write_text(json.dumps({**state.__dict__, "param_groups": param_groups, "files": files},
                                                   indent=2))

    atomic_replace_dir(directory, fill)


def file_hash(path: Path) -> str:
    """sha256 of a file's bytes, read in chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def verify_checkpoint(directory: Path) -> None:
    """Every file against the hash state.json recorded when the checkpoint was written (safetensors
    has no checksum, so flipped bytes would otherwise load). Checkpoints from before hashes were
    recorded have none to check."""
    try:
        recorded = json.loads((directory / "state.json").read_text()).get("files", {})
    except Exception as exc:
        raise _fail(directory, exc) from None
    for name, expected in recorded.items():
        if not (directory / name).is_file():
            raise UserError(f"checkpoint {directory} is incomplete: {name} is missing")
        if file_hash(directory / name) != expected:
            raise UserError(f"checkpoint {directory} is damaged: {name} is not what was written (its sha256 differs)")


def _fail(directory: Path, exc: Exception) -> UserError:
    reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    return UserError(f"checkpoint {directory} is unreadable or incomplete: {reason}")


def read_config(directory: str | Path) -> Config:
    """The resolved config stored in a checkpoint or run directory."""
    directory = resolve_dir(directory)
    if not (directory / "config.yaml").is_file():
        raise UserError(f"not a checkpoint (no config.yaml): {directory}")
    try:
        data = yaml.safe_load((directory / "config.yaml").read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise _fail(directory, exc) from None
    return config_from_dict(data)


def _load(directory: Path, name: str) -> dict[str, torch.Tensor]:
    try:
        return load_file(str(directory / name))
    except Exception as exc:  # safetensors raises its own error types for truncated files
        raise _fail(directory, exc) from None


def _load_into(directory: Path, model: nn.Module, name: str) -> None:
    state = _load(directory, name)
    try:
        model.load_state_dict(state)
    except Exception as exc:
        raise _fail(directory, exc) from None


def load_weights(directory: str | Path, model: nn.Module) -> None:
    """The inference weights: the EMA weights of a run with train.ema_decay > 0."""
    directory = resolve_dir(directory)
    verify_checkpoint(directory)
    _load_into(directory, model, WEIGHTS)


def read_averaged_weights(directory: str | Path) -> dict[str, torch.Tensor] | None:
    """The EMA weights of a checkpoint saved with them (a state dict of the model), else None."""
    directory = resolve_dir(directory)
    return _load(directory, WEIGHTS) if (directory / RAW_WEIGHTS).is_file() else None


def _by_rank(carries: list[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    if len(carries) == 1:
        return carries[0]
    return {f"rank{rank}/{name}": t for rank, carry in enumerate(carries) for name, t in carry.items()}


def read_carry(directory: str | Path, rank: int = 0, world_size: int = 1) -> dict[str, torch.Tensor] | None:
    """Process `rank`'s carried rows and state in a checkpoint saved with them by `world_size`
    processes; None without a carry or where a different number of processes saved it (the rows
    were drawn for another split of the batch, so the run starts them afresh)."""
    directory = resolve_dir(directory)
    if not (directory / CARRY).is_file():
        return None
    tensors = _load(directory, CARRY)
    saved_by = len({name.split("/")[0] for name in tensors}) if "/" in next(iter(tensors), "") else 1
    if saved_by != world_size:
        return None
    if world_size == 1:
        return tensors
    prefix = f"rank{rank}/"
    return {name.removeprefix(prefix): t for name, t in tensors.items() if name.startswith(prefix)}


def read_state(directory: str | Path) -> TrainingState:
    directory = resolve_dir(directory)
    try:
        data = json.loads((directory / "state.json").read_text())
        data.pop("param_groups")
        data.pop("files", None)
        return TrainingState(**data)
    except Exception as exc:
        raise _fail(directory, exc) from None


def load_training_state(directory: str | Path, model: nn.Module, optimizer: torch.optim.Optimizer) -> TrainingState:
    """Restore the trained weights, optimizer moments and RNG states; return the counters to continue
    from. The EMA weights, where the checkpoint has them, are `read_averaged_weights`'s to read."""
    directory = resolve_dir(directory)
    verify_checkpoint(directory)
    _load_into(directory, model, RAW_WEIGHTS if (directory / RAW_WEIGHTS).is_file() else WEIGHTS)
    try:
        data = json.loads((directory / "state.json").read_text())
        tensors = load_file(str(directory / "optimizer.safetensors"))
    except Exception as exc:
        raise _fail(directory, exc) from None
    param_groups = data.pop("param_groups")
    data.pop("files", None)
    if "rng.cpu" not in tensors:
        raise UserError(f"checkpoint {directory} is incomplete: optimizer.safetensors has no rng.cpu entry")
    opt_state: dict[int, dict[str, torch.Tensor]] = {}
    for key, tensor in tensors.items():
        if key.startswith("state."):
            _, pid, name = key.split(".", 2)
            opt_state.setdefault(int(pid), {})[name] = tensor
    try:
        optimizer.load_state_dict({"state": opt_state, "param_groups": param_groups})
    except (ValueError, KeyError) as exc:
        raise _fail(directory, exc) from None
    torch.set_rng_state(tensors["rng.cpu"])
    cuda_states = [tensors[k] for k in sorted(k for k in tensors if k.startswith("rng.cuda."))]
    if cuda_states and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(cuda_states)
    return TrainingState(**data)


def remove_checkpoint_litter(run_dir: str | Path) -> None:
    """What killed writes left in a run: temporary files and folders (`.NAME.*.tmp`) are removed, and
    a checkpoint left aside mid-swap (`.NAME.old`) goes back in place, or is removed where a complete
    new one took it (see `atomic_replace_dir`)."""
    run_dir = Path(run_dir)
    for folder in (run_dir, run_dir / "checkpoints"):
        if not folder.is_dir():
            continue
        for path in folder.iterdir():
            if path.name.startswith(".") and path.name.endswith(".tmp"):
                shutil.rmtree(path) if path.is_dir() else path.unlink()
            elif path.name.startswith(".") and path.name.endswith(".old"):
                target = folder / path.name.removeprefix(".").removesuffix(".old")
                if target.exists():
                    shutil.rmtree(path)
                else:
                    os.replace(path, target)


def latest_checkpoint(run_dir: str | Path) -> Path | None:
    """The checkpoint with the highest step among final, best and step_N (of equal steps: final,
    then step_N, then best)."""
    root = Path(run_dir) / "checkpoints"
    if not root.is_dir():
        return None
    candidates = {resolve_dir(root / p.name.removeprefix(".").removesuffix(".old"))
                  for p in root.iterdir() if not p.name.endswith(".tmp")}
    best: tuple[int, Path] | None = None
    for path in sorted(candidates, key=lambda p: (p.name != "final", p.name == "best", p.name)):
        if (path / "state.json").is_file():
            step = read_state(path).step
            if best is None or step > best[0]:
                best = (step, path)
    return best[1] if best else None
