"""MkDocs hooks: the pages that describe the code are generated from it at every build, so they
cannot drift: the configuration keys (from config.py) and one page per command (from the CLI's
own parser: every flag, its default and its help)."""

import argparse

from mkdocs.structure.files import File

from reasonlab.cli import build_parser, subcommands
from reasonlab.config_keys import reference_markdown


def command_pages() -> dict[str, str]:
    """commands/<name>.md for every `reasonlab` command."""
    pages = {}
    for name, command in subcommands(build_parser()).items():
        rows = []
        for action in command._actions:
            if isinstance(action, argparse._HelpAction) or action.help == argparse.SUPPRESS:
                continue
            flag = ", ".join(action.option_strings) or action.dest.upper()
            unset = any(action.default is x for x in (None, argparse.SUPPRESS, False))
            default = "" if unset else f"`{action.default}`"
            rows.append(f"| `{flag}` | {default} | {(action.help or '').replace('|', '/')} |")
        pages[f"commands/{name}.md"] = "\n".join([
            f"# reasonlab {name}", "", command.description or "", "",
            "```", command.format_usage().strip(), "```", "",
            "| flag | default | meaning |", "|---|---|---|", *rows, "",
            "Example:", "", "```bash", (command.epilog or "").removeprefix("example: "), "```", "",
            f"More examples and what it writes: [the CLI guide](../cli.md). Generated from the parser, so "
            f"`reasonlab {name} --help` says the same."])
    return pages


def on_files(files, config):
    files.append(File.generated(config, "configuration-keys.md", content=reference_markdown()))
    for path, content in command_pages().items():
        files.append(File.generated(config, path, content=content))
    return files
