"""Ablation suites: a base preset plus named override sets, all resolved and validated up front.

A suite file (YAML):

    base: ../cpu-small.yaml        # a file relative to the suite, or a bundled preset name; `--base` replaces it
    common: {model.arch: recursive} # applied to every config (optional)
    configs:
      R01_baseline: {}
      R10_low_lr: {train.lr: "/3"}  # "*k" / "/k" scale the base value; anything else replaces it

Built-in suites live in configs/suites/ and are named without the extension.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from reasonlab.config import (
    PRESETS_DIR,
    Config,
    closest,
    preset_ref,
    read_preset,
    read_yaml,
    resolve_config,
)
from reasonlab.errors import UserError

SUITES_DIR = PRESETS_DIR / "suites"


@dataclass
class Suite:
    name: str
    base: Path
    configs: dict[str, Config]

    def fingerprint(self) -> str:
        blob = json.dumps({k: c.to_dict() for k, c in self.configs.items()}, sort_keys=True)
        return hashlib.sha256(blob.encode()).hexdigest()[:10]


def suite_path(name_or_path: str) -> Path:
    path = Path(name_or_path)
    if path.suffix in (".yaml", ".yml"):
        if not path.is_file():
            raise UserError(f"suite file not found: {path}")
        return path
    builtin = SUITES_DIR / f"{name_or_path}.yaml"
    if not builtin.is_file():
        known = sorted(p.stem for p in SUITES_DIR.glob("*.yaml"))
        raise UserError(f"unknown suite {name_or_path!r}{closest(name_or_path, known)} "
                        f"(built in: {', '.join(known)}; or give a .yaml file)")
    return builtin


def _scaled(key: str, value: Any, base: Config) -> Any:
    """'*k' / '/k' scale the base value of `key`, keeping its type; other values pass through."""
    if not (isinstance(value, str) and value[:1] in "*/" and len(value) > 1):
        return value
    try:
        factor = float(value[1:])
    except ValueError:
        raise UserError(f"{key}: scale must be '*number' or '/number', got {value!r}") from None
    section, _, name = key.partition(".")
    current = getattr(getattr(base, section, None), name, None)
    if isinstance(current, bool) or not isinstance(current, (int, float)):
        raise UserError(f"{key}: {value!r} scales a number, but the base value is {current!r}")
    scaled = current * factor if value[0] == "*" else current / factor
    return round(scaled) if isinstance(current, int) else scaled


def load_suite(name_or_path: str, base: str | Path | None = None, overrides: dict[str, Any] | None = None,
               only: list[str] | None = None) -> Suite:
    """Resolve every config of a suite, or just the configs named in `only`.

    `overrides` change the base first, so a config's "*k" / "/k" scale the overridden value.
    """
    path = suite_path(name_or_path)
    data = read_yaml(path)
    if not isinstance(data, dict) or not isinstance(data.get("configs"), dict) or not data["configs"]:
        raise UserError(f"suite {path}: needs a non-empty 'configs' mapping")
    unknown = set(data) - {"name", "base", "common", "configs"}
    if unknown:
        raise UserError(f"suite {path}: unknown keys {', '.join(sorted(unknown))}")
    base_path = Path(base) if base else preset_ref(str(data.get("base", "cpu-small")), path)
    base_values = {**read_preset(base_path), **(overrides or {})}
    base_cfg = resolve_config(None, base_values)
    unknown = set(only or []) - set(map(str, data["configs"]))
    if unknown:
        raise UserError(f"suite {path} has no config {', '.join(sorted(unknown))}")
    configs = {}
    for name, own in data["configs"].items():
        if only and str(name) not in only:
            continue
        if own is not None and not isinstance(own, dict):
            raise UserError(f"suite {path}: config {name!r} must be a mapping of section.key: value")
        merged = {**(data.get("common") or {}), **(own or {})}
        values = {**base_values, **{k: _scaled(k, v, base_cfg) for k, v in merged.items()}}
        try:
            configs[str(name)] = resolve_config(None, values)
        except UserError as exc:
            raise UserError(f"suite {path}, config {name}: {exc}") from None
    return Suite(str(data.get("name", path.stem)), base_path, configs)
