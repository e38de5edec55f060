"""Every config key with its type, default and meaning, read from config.py itself (the comment on
each field's line), so the reference in the documentation and `reasonlab config keys` cannot
drift from the code."""

from __future__ import annotations

import ast
import dataclasses
import inspect
import io
import tokenize

from reasonlab import config
from reasonlab.registry import ARMS


@dataclasses.dataclass(frozen=True)
class KeyDoc:
    key: str  # section.name
    type: str
    default: str
    meaning: str  # "" where the field has no comment


def key_docs() -> list[KeyDoc]:
    """One entry per config key, in section order."""
    source = inspect.getsource(config)
    comments = {tok.start[0]: tok.string.lstrip("#").strip()
                for tok in tokenize.generate_tokens(io.StringIO(source).readline) if tok.type == tokenize.COMMENT}
    classes = {node.name: node for node in ast.parse(source).body if isinstance(node, ast.ClassDef)}
    docs = []
    for section, kind in config.SECTIONS.items():
        line_of = {st.target.id: st.lineno for st in classes[kind.__name__].body
                   if isinstance(st, ast.AnnAssign) and isinstance(st.target, ast.Name)}
        for field in dataclasses.fields(kind):
            default = field.default_factory() if field.default is dataclasses.MISSING else field.default
            meaning = comments.get(line_of[field.name], "")
            if (section, field.name) == ("model", "arch"):
                meaning += "; one of " + ", ".join(f"{a.arch} ({a.summary})" for a in ARMS.values())
            docs.append(KeyDoc(f"{section}.{field.name}", str(field.type), repr(default), meaning))
    return docs


def reference_markdown() -> str:
    """The documentation's configuration reference: a table per section."""
    docs = key_docs()
    lines = ["# Configuration keys", "",
             "Every key a config (a YAML preset or `--set section.key=value`) can set, generated from "
             "`src/reasonlab/config.py`. `reasonlab config show NAME` prints a preset with every key resolved.", ""]
    for section, kind in config.SECTIONS.items():
        lines += [f"## `{section}`", "", inspect.getdoc(kind) or "", "", "| key | type | default | meaning |",
                  "|---|---|---|---|"]
        lines += [f"| `{d.key}` | `{d.type}` | `{d.default}` | {d.meaning.replace('|', '/')} |"
                  for d in docs if d.key.startswith(f"{section}.")]
        lines.append("")
    return "\n".join(lines)
