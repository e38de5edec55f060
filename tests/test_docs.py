"""The README and the docs stay true: every `reasonlab` command they show names a real command,
real flags and real presets and suites, and the blocks marked runnable (`<!-- runnable -->` on
the line before the block) run."""

import re
import shlex
from pathlib import Path

import pytest

from reasonlab.cli import EXAMPLES, build_parser, main, subcommands
from reasonlab.config import preset_path
from reasonlab.experiments.suites import suite_path

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
BLOCK = re.compile(r"(<!-- runnable -->\n)?```[a-z]*\n(.*?)```", re.S)
COMMAND = re.compile(r"^(?:\$ )?(?:[A-Z_]+=\S+ )*reasonlab(?=\s|$)(.*)$")
PRESET_FLAGS = ("--config", "--a", "--b", "--preset", "--base")


def commands(page: Path) -> list[tuple[bool, list[str]]]:
    """(runnable, argv after `reasonlab`) of every command line in the page's code blocks."""
    found = []
    for marker, block in BLOCK.findall(page.read_text()):
        for line in block.replace("\\\n", " ").splitlines():  # a continued line is one command
            match = COMMAND.match(line.strip())
            if match:
                found.append((bool(marker), shlex.split(match.group(1).replace("[", "").replace("]", ""),
                                                       comments=True)))
    return found


def _check_preset(value: str) -> None:
    for name in value.split(","):
        if "/" not in name and ":" not in name and not name.endswith((".yaml", ".yml")):
            preset_path(name)  # raises on an unknown preset


def check_command(argv: list[str], where: str) -> None:
    """A command line names a real command, its real flags, and presets and suites that exist."""
    subparsers = subcommands(build_parser())
    if not argv or argv[0].startswith("-"):
        return
    assert argv[0] in subparsers, f"{where}: no command {argv[0]!r}"
    flags = subparsers[argv[0]]._option_string_actions
    for i, token in enumerate(argv[1:], 1):
        flag = token.split("=")[0]
        if not token.startswith("--"):
            continue
        assert flag in flags, f"{where}: reasonlab {argv[0]} has no flag {flag}"
        if flag in PRESET_FLAGS or flag == "--arms":
            _check_preset(argv[i + 1])
        if flag == "--suite" and not argv[i + 1].endswith((".yaml", ".yml")):
            suite_path(argv[i + 1])


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_every_command_shown_has_real_flags_and_presets(page):
    for _, argv in commands(page):
        check_command(argv, page.name)


def test_every_help_page_has_a_description_an_example_and_every_flag_its_help():
    subparsers = subcommands(build_parser())
    assert set(EXAMPLES) == set(subparsers)
    for name, parser in subparsers.items():
        assert parser.description and parser.epilog == f"example: {EXAMPLES[name]}", name
        check_command(shlex.split(EXAMPLES[name])[1:], f"the example of {name}")
        assert all(action.help for action in parser._actions), name


@pytest.mark.slow  # a dry run calibrates its arms
def test_the_runnable_blocks_run(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    runnable = [argv for page in PAGES for marked, argv in commands(page) if marked]
    assert runnable, "no block is marked runnable"
    for argv in runnable:
        assert main(argv) == 0, argv
    capsys.readouterr()
