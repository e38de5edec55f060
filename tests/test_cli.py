import hashlib
import json
import subprocess
import sys

import pytest
import yaml

from conftest import CONFIGS, without_hashes
from reasonlab.cli import build_parser, main, subcommands

TINY = str(CONFIGS / "cpu-tiny.yaml")


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("cli") / "run"
    assert main(["train", "--config", TINY, "--out", str(out), "--max-steps", "6", "--quiet",
                 "--set", "train.eval_every=3"]) == 0
    return out


def _tree_digest(path):
    files = (p for p in sorted(path.rglob("*")) if p.is_file())
    return {str(p.relative_to(path)): hashlib.sha256(p.read_bytes()).hexdigest() for p in files}


def test_eval_json(trained_run, capsys):
    assert main(["eval", str(trained_run / "checkpoints" / "best"), "--json", "--batches", "2"]) == 0
    metrics = json.loads(capsys.readouterr().out)
    assert set(metrics) == {"loss", "perplexity", "accuracy", "tokens"}
    assert metrics["tokens"] == 2 * 8 * 64


def test_generate(trained_run, capsys):
    args = ["generate", str(trained_run / "checkpoints" / "best"), "--prompt", "To be, or not",
            "--max-new-tokens", "8", "--temperature", "0.8", "--top-k", "40", "--seed", "0"]
    assert main(args) == 0
    first = capsys.readouterr().out
    assert main(args) == 0
    assert capsys.readouterr().out == first and first.startswith("To be, or not")


def _bad(args, capsys, fragment):
    code = main(args)
    err = capsys.readouterr().err.strip()
    assert code == 2
    assert err.startswith("error: ") and "\n" not in err and fragment in err, err


def test_bad_inputs_exit_2_with_one_line(trained_run, tmp_path, capsys):
    before = _tree_digest(trained_run)
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "a.txt").write_text("")
    truncated = tmp_path / "truncated"
    truncated.mkdir()
    for f in (trained_run / "checkpoints" / "best").iterdir():
        (truncated / f.name).write_bytes(f.read_bytes())
    weights = truncated / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])

    train = ["train", "--config", TINY]
    _bad([*train, "--data", str(tmp_path / "missing"), "--out", str(tmp_path / "r1")], capsys, "not found")
    _bad([*train, "--data", str(empty), "--out", str(tmp_path / "r2")], capsys, "empty")
    _bad([*train, "--set", "model.n_layerz=3", "--out", str(tmp_path / "r3")], capsys, "model.n_layerz")
    _bad([*train, "--out", str(trained_run)], capsys, "already holds")
    _bad(["train", "--resume", str(trained_run), "--set", "train.lr=1"], capsys, "--set")
    _bad(["train", "--resume", str(trained_run), "--seed", "0"], capsys, "--seed")
    _bad(["eval", str(trained_run / "checkpoints" / "best"), "--batches", "0"], capsys, "--batches")
    _bad(["eval", str(truncated)], capsys, "is damaged: model.safetensors")
    without_hashes(truncated)  # then safetensors itself finds the truncation
    _bad(["eval", str(truncated)], capsys, "unreadable")
    _bad(["eval", str(tmp_path / "nowhere")], capsys, "not found")
    _bad(["generate", str(trained_run / "checkpoints" / "best"), "--prompt", "word " * 200], capsys,
         "longer than the model's context")
    _bad(["train", "--max-steps", "ten"], capsys, "invalid int")
    assert _tree_digest(trained_run) == before
    assert not any((tmp_path / name).exists() for name in ("r1", "r2", "r3"))


def test_resume_refuses_a_changed_corpus(tmp_path, small_corpus, capsys):
    out = tmp_path / "run"
    assert main(["train", "--config", TINY, "--data", str(small_corpus), "--out", str(out), "--max-steps", "2",
                 "--quiet", "--set", "model.vocab_size=300", "--set", "model.seq_len=16",
                 "--set", "train.batch_size=2"]) == 0
    before = _tree_digest(out)
    (small_corpus / "doc0.txt").write_text("entirely new words: zebra quokka axolotl " * 50)
    _bad(["train", "--resume", str(out), "--max-steps", "4"], capsys, "has changed")
    assert _tree_digest(out) == before


@pytest.mark.slow  # a fresh interpreter imports torch: seconds
def test_no_traceback_from_the_console_entry_point(tmp_path):
    command = [sys.executable, "-m", "reasonlab", "train", "--set", "train.lr=-1", "--out", str(tmp_path / "x")]
    proc = subprocess.run(command, capture_output=True, text=True)
    assert proc.returncode == 2
    assert proc.stderr.strip() == "error: train.lr: must be > 0, got -1.0"


def test_a_single_text_file_is_a_corpus(tmp_path, capsys):
    """As nanoGPT's input.txt: one file, cut into chunks by the rule the run's config records."""
    book = tmp_path / "book.txt"
    book.write_text("".join(f"Scene {i}. The fox speaks of rivers and of {i * 7} lanterns.\n\n" for i in range(1500)))
    out = tmp_path / "run"
    assert main(["train", "--config", TINY, "--data", str(book), "--out", str(out), "--max-steps", "2", "--quiet",
                 "--set", "train.eval_every=2", "--set", "train.eval_batches=1"]) == 0
    config = (out / "config.yaml").read_text()
    assert "chunk_chars: 4000" in config and f"source: {book}" in config
    assert main(["train", "--config", TINY, "--data", str(book), "--out", str(tmp_path / "no"),
                 "--set", "data.chunk_chars=0"]) == 2
    assert "set data.chunk_chars to cut one text into chunks" in capsys.readouterr().err


def test_reasonlab_alone_lists_the_commands_and_version_names_the_release(capsys):
    import reasonlab

    assert main([]) == 0
    out = capsys.readouterr().out
    assert out.startswith("usage: reasonlab") and all(f"    {c} " in out for c in ("train", "compare", "bench"))
    with pytest.raises(SystemExit) as done:
        main(["--version"])
    assert done.value.code == 0 and capsys.readouterr().out.strip() == f"reasonlab {reasonlab.__version__}"


def test_presets_lists_every_preset_and_suite_and_config_show_prints_the_resolved_yaml(capsys):
    from reasonlab.config import PRESETS_DIR, resolve_config

    assert main(["presets"]) == 0
    out = capsys.readouterr().out
    for path in [*PRESETS_DIR.glob("*.yaml"), *(PRESETS_DIR / "suites").glob("*.yaml")]:
        assert f"  {path.stem} " in out, path.stem
    assert "cpu-tiny" in out and "Seconds on a laptop CPU" in out
    assert main(["config", "show", "cpu-tiny", "--set", "train.lr=0.001"]) == 0
    shown = yaml.safe_load(capsys.readouterr().out)
    assert shown == resolve_config("cpu-tiny", {"train.lr": 0.001}).to_dict()


def test_mistyped_names_get_the_closest_valid_ones(tmp_path, capsys):
    for command, message in ((["config", "show", "cpu-tny"], "unknown preset 'cpu-tny' (did you mean cpu-tiny"),
                             (["config", "show", "cpu-tiny", "--set", "train.lrr=1"],
                              "unknown config key 'train.lrr' (did you mean train.lr"),
                             (["ablate", "--suite", "baselin", "--out", str(tmp_path / "a")],
                              "unknown suite 'baselin' (did you mean baseline?)")):
        assert main(command) == 2
        err = capsys.readouterr().err.strip()
        assert err.startswith(f"error: {message}") and "\n" not in err, err
    assert not (tmp_path / "a").exists()


def test_one_flag_vocabulary_keeps_the_old_names_as_hidden_aliases():
    parser = build_parser()
    assert parser.parse_args(["train", "--steps", "7"]).max_steps == 7
    assert parser.parse_args(["train", "--max-steps", "7"]).max_steps == 7
    for command, old, default in (("calibrate", "--preset", "cpu-tiny"), ("demo", "--base", "cpu-demo"),
                                  ("ablate", "--base", None)):
        extra = ["--suite", "baseline", "--out", "x"] if command == "ablate" else ["--out", "x"]
        assert parser.parse_args([command, *extra]).config == default
        assert parser.parse_args([command, *extra, "--config", "cpu-small"]).config == "cpu-small"
        assert parser.parse_args([command, *extra, old, "cpu-small"]).config == "cpu-small"
        assert old not in subcommands(parser)[command].format_help()


def test_eval_refuses_harness_flags_without_lm_eval_and_points_a_run_to_its_checkpoint(trained_run, capsys):
    assert main(["eval", str(trained_run / "checkpoints" / "final"), "--segments", "2", "--out", "x.json"]) == 2
    assert capsys.readouterr().err.strip() == ("error: --segments, --out: only with --lm-eval "
                                               "(they set how lm-evaluation-harness scores)")
    assert main(["eval", str(trained_run)]) == 2
    err = capsys.readouterr().err.strip()
    assert "is a run directory, not a checkpoint" in err and str(trained_run / "checkpoints" / "best") in err


def test_extends_finds_a_bundled_preset_when_no_such_file_is_beside_the_yaml(tmp_path):
    from reasonlab.config import resolve_config

    mine = tmp_path / "mine.yaml"
    mine.write_text("extends: cpu-tiny.yaml\ntrain:\n  lr: 0.002\n")
    assert resolve_config(mine) == resolve_config("cpu-tiny", {"train.lr": 0.002})
    (tmp_path / "cpu-tiny.yaml").write_text("train:\n  lr: 0.005\n")  # a file beside it wins
    assert resolve_config(mine).train.lr == 0.002 and resolve_config(mine).model.d_model == 128


def test_dry_runs_print_the_plan_and_write_nothing(tmp_path, capsys):
    from reasonlab.config import resolve_config
    from reasonlab.model import config_step_flops
    from reasonlab.training.data import prepare_data

    out = tmp_path / "study"
    assert main(["compare", "--arms", f"{TINY},cpu-tiny-recursive", "--steps", "20", "--seeds", "2",
                 "--out", str(out), "--dry-run"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == "compare at equal flops, the costliest arm at 20 steps"
    rows = {line.split()[0]: line.split() for line in lines[2:4]}
    assert rows["cpu-tiny"][2] == "0..1" and rows["cpu-tiny-recursive"][1:3] == ["20", "2..3"]
    tiny, recursive = (prepare_data(cfg).adjust_config(cfg)
                       for cfg in (resolve_config(name) for name in ("cpu-tiny", "cpu-tiny-recursive")))
    assert int(rows["cpu-tiny"][1].replace(",", "")) == round(20 * config_step_flops(recursive)
                                                              / config_step_flops(tiny))
    assert lines[-1].startswith("4 runs, about ") and lines[-1].endswith("nothing was written")
    step_ms = {name: int(row[4]) for name, row in rows.items()}
    assert step_ms["cpu-tiny-recursive"] > 2 * step_ms["cpu-tiny"]  # each arm its own step time (6.9x the FLOPs)
    assert not out.exists()


@pytest.mark.slow  # generates a task, calibrates a suite's configs and a calibration's arms
def test_the_dry_runs_of_tasks_ablate_and_calibrate_write_nothing(tmp_path, capsys):
    out = tmp_path / "study"
    for command in (["tasks", "--task", "parity", "--a", TINY, "--b", TINY, "--steps", "5", "--seeds", "1"],
                    ["ablate", "--suite", "baseline", "--only", "1_baseline,3_low_lr", "--config", TINY,
                     "--steps", "5"],
                    ["calibrate", "--config", TINY, "--repeats", "3", "--handicaps", "2", "--steps", "5",
                     "--seeds", "1"]):
        assert main([*command, "--out", str(out), "--dry-run"]) == 0, command
        printed = capsys.readouterr().out
        assert printed.rstrip().endswith("nothing was written"), printed
    assert "every row 6 times: 12 runs" in printed  # calibrate: 3 repeats of 2 conditions, 2 arms x 1 seed
    assert not out.exists()


def test_an_unknown_command_choice_or_flag_names_the_closest(capsys):
    for argv, message in ((["trian"], "invalid choice: 'trian'"), (["compare", "--match", "flop", "--out", "x"],
                                                                    "invalid choice: 'flop'"),
                          (["train", "--stesp", "3"], "unrecognized arguments: --stesp 3")):
        assert main(argv) == 2
        err = capsys.readouterr().err.strip()
        assert message in err and "did you mean" in err and "\n" not in err, err
    assert main(["trian"]) == 2 and "(did you mean train?)" in capsys.readouterr().err
