"""Reasoning tasks end to end: splits, answer-only loss, scoring, learning, the `tasks` command."""

import contextlib
import json
import shutil
from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file
from torch import nn

import reasonlab
from conftest import CONFIGS, tiny_config
from reasonlab import api
from reasonlab.cli import main
from reasonlab.config import config_from_dict
from reasonlab.experiments.results import read_comparison, read_tasks
from reasonlab.experiments.tasks import curve_points
from reasonlab.model import build_model
from reasonlab.model.layers import KVCache, rope_tables
from reasonlab.model.loss import IGNORE_INDEX
from reasonlab.model.outputs import ModelOutput
from reasonlab.tasks.dataset import TaskData
from reasonlab.training.runlog import read_metrics

ADDITION = {"task.name": "addition", "task.train_min_level": 2, "task.train_max_level": 2, "task.test_min_level": 3,
            "task.test_max_level": 3, "task.train_examples": 4000, "task.eval_examples": 128}


def task_config(**overrides):
    return tiny_config(**{**ADDITION, "task.train_examples": 300, "task.eval_examples": 32, **overrides})


def test_splits_are_deterministic_disjoint_and_at_their_levels():
    cfg = task_config()
    first, second = TaskData(cfg.task), TaskData(cfg.task)
    keys = {name: {e.key for e in split.examples} for name, split in first.splits.items()}
    assert keys == {name: {e.key for e in split.examples} for name, split in second.splits.items()}
    assert not keys["train"] & keys["val"] and not keys["train"] & keys["test"] and not keys["val"] & keys["test"]
    assert {e.level for e in first.splits["val"].examples} == {2}
    assert {e.level for e in first.splits["test"].examples} == {3}
    other = TaskData(task_config(**{"task.seed": 7}).task)
    assert {e.key for e in other.splits["test"].examples} != keys["test"]


def test_loss_counts_answer_tokens_only():
    cfg = task_config()
    data = TaskData(cfg.task)
    cfg = data.adjust_config(cfg)
    split = data.splits["train"]
    x, y = split.inputs[:16], split.targets[:16]
    answer_lengths = [len(e.answer) for e in split.examples[:16]]
    assert (y != IGNORE_INDEX).sum(dim=1).tolist() == answer_lengths
    torch.manual_seed(0)
    model = build_model(cfg).eval()
    logits = model.run(x).logits
    valid = y != IGNORE_INDEX
    expected = F.cross_entropy(logits[valid], y[valid])
    torch.testing.assert_close(model(x, y).lm_loss, expected)
    # what stands at prompt positions of the targets changes nothing: those positions carry no loss
    y_other = y.clone()
    y_other[~valid] = IGNORE_INDEX
    torch.testing.assert_close(model(x, y_other).lm_loss, expected)


class Oracle(nn.Module):
    """Answers from a lookup of every reference sequence; rows in `wrong` get a wrong first token,
    after which greedy decoding leaves the table and predicts padding. Decoding goes through a KV
    cache (model/generate.py), so the oracle keeps the text it was given, as a cache would."""

    def __init__(self, data: TaskData, split: str, wrong: set[int], fmt: str):
        super().__init__()
        self.vocab, self.fmt = data.tokenizer.vocab_size, fmt
        self.cfg = SimpleNamespace(causal=True, seq_len=data.splits[split].inputs.shape[1])
        self.kv_cache: KVCache | None = None
        self.seen = torch.zeros(0, 0, dtype=torch.long)
        self.table: dict[tuple[int, ...], int] = {}
        self.rows: dict[tuple[int, ...], list[int]] = {}
        enc = data.splits[split]
        for i, (x, y) in enumerate(zip(enc.inputs, enc.targets)):
            valid = y != IGNORE_INDEX
            answer = y[valid].tolist()
            if i in wrong:  # ids 0 and 1 are padding and "="; the task's symbols follow
                answer[0] = (answer[0] - 1) % (self.vocab - 2) + 2
            if fmt == "grid":
                self.rows[tuple(x.tolist())] = answer
            else:
                start = int(valid.int().argmax())
                sequence = x[: start + 1].tolist() + answer
                for t in range(start, start + (1 if i in wrong else len(answer))):
                    self.table[tuple(sequence[: t + 1])] = sequence[t + 1]

    every_pass = False  # a LanguageModel (model/protocol.py), as decoding calls it

    @property
    def core(self) -> "Oracle":
        return self

    def run(self, x: torch.Tensor) -> ModelOutput:
        if self.kv_cache is not None:  # x holds only the new tokens once the prompt is in
            x = self.seen = torch.cat([self.seen, x], dim=1) if self.kv_cache.length else x
        logits = torch.zeros(*x.shape, self.vocab)
        for b, row in enumerate(x.tolist()):
            if self.fmt == "grid":
                answer = self.rows[tuple(row)]
                logits[b, torch.arange(len(answer)), torch.tensor(answer)] = 1.0
            else:
                for t in range(len(row)):
                    logits[b, t, self.table.get(tuple(row[: t + 1]), 0)] = 1.0
        return ModelOutput(logits, torch.zeros(()))


@pytest.mark.parametrize("name,fmt", [("addition", "seq"), ("parity", "seq"), ("sudoku", "grid")])
def test_exact_match_and_token_accuracy_of_hand_made_predictions(name, fmt):
    cfg = task_config(**{"task.name": name, "task.format": fmt, "task.train_min_level": 0, "task.train_max_level": 0,
                         "task.test_min_level": 0, "task.test_max_level": 0})
    data = TaskData(cfg.task)
    n = len(data.splits["val"].examples)
    wrong = {0, 3, 5}
    result = data.score(Oracle(data, "val", wrong, fmt), "val", 8, torch.device("cpu"), contextlib.nullcontext)
    assert result.correct == [i not in wrong for i in range(n)]
    assert result.metrics["exact_match"] == pytest.approx(1 - len(wrong) / n)
    examples = data.splits["val"].examples
    # greedy decoding: a wrong first token derails the rest; in one pass only that cell is wrong
    expected = [1.0 if i not in wrong else (1 - 1 / len(e.answer) if fmt == "grid" else 0.0)
                for i, e in enumerate(examples)]
    assert result.token_accuracy == pytest.approx(expected)
    assert result.predictions[1] == examples[1].answer


def test_grid_format_needs_an_aligned_task(capsys):
    code = main(["train", "--config", str(CONFIGS / "cpu-tiny.yaml"), "--set", "task.name=addition",
                 "--set", "task.format=grid", "--out", "unused"])
    assert code == 2 and "task.format" in capsys.readouterr().err


def test_seq_format_needs_a_causal_model(capsys, tmp_path):
    code = main(["train", "--config", str(CONFIGS / "cpu-tiny.yaml"), "--set", "task.name=addition",
                 "--set", "model.causal=false", "--out", str(tmp_path / "run")])
    err = capsys.readouterr().err
    assert code == 2 and "model.causal" in err and "task.format seq" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "run").exists()
    stored = tiny_config(**{"task.name": "addition"}).to_dict()
    stored["model"]["causal"] = False  # a run trained so before the check existed still loads
    assert config_from_dict(stored).model.causal is False


def test_2d_positions_are_for_square_grid_tasks(capsys, tmp_path):
    grid = ["--config", str(CONFIGS / "cpu-tiny.yaml"), "--set", "task.format=grid", "--set", "model.causal=false",
            "--set", "model.positions=2d", "--set", "task.train_examples=32", "--set", "task.eval_examples=8"]
    code = main(["train", *grid, "--set", "task.name=parity", "--out", str(tmp_path / "parity")])
    err = capsys.readouterr().err
    assert code == 2 and "model.positions 2d: parity" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "parity").exists()

    run = tmp_path / "sudoku"
    assert main(["train", *grid, "--set", "task.name=sudoku", "--set", "task.size=4", "--max-steps", "2",
                 "--set", "train.eval_every=2", "--quiet", "--out", str(run)]) == 0
    model = api.load(run / "checkpoints" / "final", device="cpu").model
    assert torch.equal(model.rope_cos, rope_tables(16, model.cfg.d_model // model.cfg.n_heads, grid=True)[0])


def test_bidirectional_model_sees_later_tokens():
    for arch in ("baseline", "recursive"):
        cfg = tiny_config(**{"model.arch": arch, "model.causal": False})
        torch.manual_seed(0)
        model = build_model(cfg).eval()
        x = torch.randint(0, cfg.model.vocab_size, (1, 12))
        changed = x.clone()
        changed[0, -1] = (x[0, -1] + 1) % cfg.model.vocab_size
        assert not torch.allclose(model.run(x).logits[0, 0], model.run(changed).logits[0, 0])


def test_recursive_model_runs_the_segments_asked_for_at_test_time():
    cfg = tiny_config(**{"model.arch": "recursive", "recursion.max_segments": 2, "recursion.use_act": False})
    torch.manual_seed(0)
    model = build_model(cfg).eval()
    x = torch.randint(0, cfg.model.vocab_size, (2, 10))
    assert (model.run(x, segments=5).segments == 5).all()
    torch.testing.assert_close(model.run(x, segments=2).logits, model.run(x).logits)
    assert not torch.allclose(model.run(x, segments=1).logits, model.run(x, segments=3).logits)


@pytest.mark.slow
def test_tiny_model_learns_two_digit_addition(tmp_path):
    cfg = tiny_config(**{**ADDITION, "train.max_steps": 1000, "train.batch_size": 64, "train.eval_every": 1000,
                         "train.log_every": 100, "train.warmup_steps": 20})
    run = reasonlab.train(cfg, tmp_path / "run", quiet=True)
    final = json.loads((run / "summary.json").read_text())["final_val"]
    assert final["exact_match"] >= 0.8, final


@pytest.mark.slow
def test_task_run_resumes_exactly(tmp_path):
    cfg = task_config(**{"train.max_steps": 12, "train.save_every": 6, "train.eval_every": 6, "train.log_every": 2,
                         "model.arch": "recursive", "model.dropout": 0.1})
    full = reasonlab.train(cfg, tmp_path / "full", quiet=True)
    killed = reasonlab.train(cfg, tmp_path / "killed", quiet=True)
    for ckpt in (killed / "checkpoints").iterdir():
        if ckpt.name != "step_6":
            shutil.rmtree(ckpt)
    reasonlab.resume(killed, quiet=True)
    a, b = (read_metrics(r / "metrics.jsonl") for r in (full, killed))
    assert [(e["kind"], e["step"]) for e in a] == [(e["kind"], e["step"]) for e in b]
    for ea, eb in zip(a, b):
        assert ea["loss"] == pytest.approx(eb["loss"], abs=1e-6)
    wa, wb = (load_file(str(r / "checkpoints/final/model.safetensors")) for r in (full, killed))
    for key in wa:
        torch.testing.assert_close(wa[key], wb[key], rtol=0, atol=1e-6)


@pytest.mark.slow
def test_tasks_command_writes_the_study(tmp_path, capsys):
    out = tmp_path / "study"
    args = ["tasks", "--task", "sudoku", "--format", "grid", "--a", str(CONFIGS / "cpu-tiny.yaml"),
            "--b", str(CONFIGS / "cpu-tiny-recursive.yaml"), "--steps", "6", "--seeds", "2", "--match", "flops",
            "--set", "task.train_examples=64", "--set", "task.eval_examples=16", "--set", "train.batch_size=8",
            "--out", str(out)]
    assert main(args) == 0
    assert "TASK_RESULTS.md" in capsys.readouterr().out
    for name in ("tasks.json", "TASK_RESULTS.md", "accuracy_by_level.png", "test_time_segments.png",
                 "comparison.json", "comparison.png", "comparison_compute.png", "FINAL_RESULTS.md"):
        assert (out / name).is_file(), name
    result = read_tasks(json.loads((out / "tasks.json").read_text()))
    assert result.task.format == "grid" and result.task.levels["test"] == [9, 12]
    a, b = result.arms["a"], result.arms["b"]
    assert a.arch == "baseline" and a.aggregate.segments_curve is None
    assert sorted(b.aggregate.segments_curve, key=int) == ["1", "2", "4"]
    assert set(a.aggregate.by_level) == {str(level) for level in range(4, 13)}
    report = (out / "TASK_RESULTS.md").read_text()
    assert f"A ran {a.max_steps} steps" in report and f"B ran {b.max_steps} steps" in report
    assert a.max_steps > b.max_steps  # equal FLOPs: the cheaper baseline runs longer
    config = read_comparison(json.loads((out / "comparison.json").read_text())).arms["a"].config
    assert config["model"]["causal"] is False and config["task"]["name"] == "sudoku"
    (out / "TASK_RESULTS.md").unlink()
    assert main(["report", str(out)]) == 0
    assert str(out / "TASK_RESULTS.md") in capsys.readouterr().out and (out / "TASK_RESULTS.md").read_text() == report
    assert main(["eval", str(out / "runs" / "b-s2" / "checkpoints" / "final"), "--json"]) == 0
    scores = json.loads(capsys.readouterr().out)
    assert scores["test"]["exact_match"] == pytest.approx(b.per_seed["2"].test["exact_match"])


def test_tasks_command_bad_input(tmp_path, capsys):
    assert main(["tasks", "--list"]) == 0
    listed = capsys.readouterr().out
    assert all(name in listed for name in ("addition", "parity", "prefix-sum", "sudoku", "maze"))
    for args, fragment in ((["--task", "chess"], "unknown task"),
                           (["--task", "sudoku", "--size", "5"], "size"),
                           (["--task", "addition", "--set", "task.train_max_level=99"], "task.train_min_level"),
                           (["--task", "addition"], "--out")):
        out = [] if fragment == "--out" else ["--out", str(tmp_path / "x")]
        assert main(["tasks", *args, *out]) == 2
        err = capsys.readouterr().err.strip()
        assert err.startswith("error: ") and "\n" not in err and fragment in err, err
    assert not (tmp_path / "x").exists()


@pytest.mark.parametrize(("trained", "factor", "cap", "points"), [
    (1, 2, None, [1, 2]), (2, 4, None, [1, 2, 4, 8]), (4, 2, None, [1, 2, 4, 8]), (3, 2, None, [1, 2, 3, 4, 6]),
    (3, 4, None, [1, 2, 3, 4, 8, 12]), (8, 4, 8, [1, 2, 4, 8]), (3, 4, 5, [1, 2, 3, 4, 5]),
])
def test_test_time_curves_double_and_keep_the_trained_value_and_the_maximum(trained, factor, cap, points):
    assert curve_points(trained, factor, cap) == points
