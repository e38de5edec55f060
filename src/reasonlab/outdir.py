"""One study per output folder: `compare`, `tasks` and `ablate` claim their --out before any work.

A claimed folder holds `.reasonlab.json`: what it holds (a comparison, an ablation) and a
fingerprint of what decides its results (arms, budgets, suite). A rerun of the same study
continues in it; a folder that holds anything else, or the same kind of study of other arms or
budgets, is refused rather than overwritten. Claiming also writes to the folder, so a folder
that cannot be written is refused before hours of training.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from reasonlab.errors import UserError, WriteFailed
from reasonlab.io import atomic_write_json

MARKER = ".reasonlab.json"
# what each kind of study left in its folder before folders were claimed: such a folder is its own
EARLIER_FILES = {"comparison": "plan.json", "ablation": "study.db", "scaling": "scale_plan.json"}


def fingerprint(key: Any) -> str:
    return hashlib.sha256(json.dumps(key, sort_keys=True, default=str).encode()).hexdigest()[:16]


def claim_out(out: Path, kind: str, key: Any, same_study: bool = False) -> None:
    """Make `out` this study's folder, or refuse (UserError) where it holds something else.
    `same_study`: the caller has found from the folder's own files that it holds this study,
    written when configs had fewer keys, so its fingerprint is renewed rather than refused."""
    wanted = {"kind": kind, "fingerprint": fingerprint(key)}
    marker = out / MARKER
    if marker.is_file():
        held = json.loads(marker.read_text())
        if held.get("kind") != kind:
            raise UserError(f"{out} holds {_a(held.get('kind', 'another study'))}, not {_a(kind)}: choose a new --out")
        if held.get("fingerprint") == wanted["fingerprint"]:
            return
        if not same_study:
            raise other_study(out, kind)
    elif out.is_dir() and any(out.iterdir()) and not (out / EARLIER_FILES[kind]).is_file():
        raise UserError(f"{out} already holds files that are not {_a(kind)}: choose a new or empty --out")
    try:
        atomic_write_json(marker, wanted)
    except WriteFailed as exc:
        raise UserError(str(exc)) from None


def other_study(out: Path, kind: str) -> UserError:
    """The refusal of a folder that holds this kind of study, of other arms, configs or budgets."""
    return UserError(f"{out} holds {_a(kind)} of other arms, configs or budgets: choose a new --out, "
                     "or remove it to start over")


def _a(kind: str) -> str:
    return f"an {kind}" if kind[0] in "aeiou" else f"a {kind}"
