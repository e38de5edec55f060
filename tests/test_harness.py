"""reasonlab eval --lm-eval: lm-evaluation-harness scores a checkpoint on a local task, offline, with
the numbers reasonlab's own model gives."""

import json

import pytest
import torch

from conftest import CONFIGS
from reasonlab import api
from reasonlab.cli import main

pytest.importorskip("lm_eval")

QUESTIONS = [("The king said", ["to be", "zebra quokka", "of the"], 0), ("My lord,", ["I will", "xylophone"], 0),
             ("What is", ["the matter", "qqq zzz"], 1), ("Good night,", ["sweet prince", "vvv"], 0)]
TASK = """task: reasonlab_tiny_mc
dataset_path: json
dataset_kwargs:
  data_files:
    test: {data}
test_split: test
output_type: multiple_choice
doc_to_text: "{{{{question}}}}"
doc_to_choice: "{{{{choices}}}}"
doc_to_target: answer
metric_list:
  - metric: acc
"""


@pytest.fixture
def local_task(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf-home"))
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    data = tmp_path / "mc.jsonl"
    data.write_text("".join(json.dumps({"question": q, "choices": c, "answer": a}) + "\n" for q, c, a in QUESTIONS))
    tasks = tmp_path / "tasks"
    tasks.mkdir()
    (tasks / "tiny_mc.yaml").write_text(TASK.format(data=data))
    return tasks


def reference_accuracy(checkpoint, depth=None):
    """Multiple choice scored by hand: the choice (after lm-eval's " " delimiter) of highest log-probability."""
    loaded = api.load(checkpoint, device="cpu")
    tok, right = loaded.tokenizer, 0
    for question, choices, answer in QUESTIONS:
        scores = []
        for choice in choices:
            prefix, target = tok.encode(question), tok.encode(" " + choice)
            ids = torch.tensor([prefix + target])
            with torch.no_grad():
                forced = {"depth": depth} if depth else {}
                logits = loaded.model.run(ids[:, :-1], **forced).logits
            logp = logits[0, -len(target):].log_softmax(-1).gather(1, torch.tensor(target)[:, None]).sum()
            scores.append(logp.item())
        right += max(range(len(choices)), key=scores.__getitem__) == answer
    return right / len(QUESTIONS)


@pytest.mark.slow  # imports lm-eval and datasets: seconds
@pytest.mark.parametrize("arm", ["baseline", "looped"])
def test_lm_eval_scores_a_checkpoint_on_a_local_task(tmp_path, local_task, capsys, arm):
    run = tmp_path / "run"
    looped = ["--model", "looped", "--set", "looped.depth=2", "--set", "recursion.max_segments=1"]
    extra = looped if arm == "looped" else []
    assert main(["train", "--config", str(CONFIGS / "cpu-tiny.yaml"), "--out", str(run), "--max-steps", "30",
                 "--quiet", "--set", "train.eval_every=30", *extra]) == 0
    checkpoint = run / "checkpoints" / "final"
    depth = ["--depth", "4"] if arm == "looped" else []
    assert main(["eval", str(checkpoint), "--lm-eval", "reasonlab_tiny_mc", "--include", str(local_task), *depth]) == 0
    results = json.loads((run / "lm_eval-final.json").read_text())
    acc = results["results"]["reasonlab_tiny_mc"]["acc,none"]
    assert acc == pytest.approx(reference_accuracy(checkpoint, 4 if depth else None))
    assert results["reasonlab"]["depth"] == (4 if depth else None)
    assert f"reasonlab_tiny_mc: acc {acc:.4f}" in capsys.readouterr().out


@pytest.mark.slow  # imports lm-eval
def test_the_harness_adapter_scores_as_the_model_does(tmp_path):
    from lm_eval.api.instance import Instance

    from reasonlab.harness import harness_lm

    run = tmp_path / "run"
    assert main(["train", "--config", str(CONFIGS / "cpu-tiny.yaml"), "--out", str(run), "--max-steps", "4",
                 "--quiet", "--model", "hrm", "--set", "train.eval_every=4"]) == 0
    loaded = api.load(run / "checkpoints" / "final", device="cpu")
    lm = harness_lm(loaded, segments=3)
    pairs = [("To be, or not", " to be"), ("", "My lord"), ("word " * 80, " the end")]  # empty; longer than the context
    got = lm.loglikelihood([Instance("loglikelihood", {}, pair, i) for i, pair in enumerate(pairs)])
    tok, context = loaded.tokenizer, loaded.config.model.seq_len
    for (text, continuation), (logp, greedy) in zip(pairs, got):
        target = tok.encode(continuation)
        ids = torch.tensor([((tok.encode(text) or [tok.eot_id]) + target)[-(context + 1):]])
        with torch.no_grad():
            logits = loaded.model.run(ids[:, :-1], segments=3).logits[0, -len(target):]
        want = logits.log_softmax(-1).gather(1, torch.tensor(target)[:, None]).sum().item()
        assert logp == pytest.approx(want, abs=1e-5)
        assert greedy == bool((logits.argmax(-1) == torch.tensor(target)).all())
    rolling = lm.loglikelihood_rolling([Instance("loglikelihood_rolling", {}, ("word " * 80,), 0)])[0]
    assert rolling < 0
    text = lm.generate_until([Instance("generate_until", {}, ("To be", {"until": ["\n"], "max_gen_toks": 5}), 0)])[0]
    expected = loaded.generate("To be", max_new_tokens=5, temperature=0)[len("To be"):]
    assert text == expected.split("\n")[0]


def test_lm_eval_bad_input(tmp_path, local_task, capsys):
    assert main(["eval", str(tmp_path / "none"), "--lm-eval", "reasonlab_tiny_mc", "--limit", "0"]) == 2
    assert capsys.readouterr().err.strip() == "error: --limit must be >= 1, got 0"


def test_lm_eval_not_installed_is_one_line(tmp_path, capsys, monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "lm_eval" else real(name, *a))
    assert main(["eval", str(tmp_path / "none"), "--lm-eval", "hellaswag"]) == 2
    assert capsys.readouterr().err.strip() == \
        "error: --lm-eval needs lm-evaluation-harness: pip install -e '.[eval]' in the reasonlab checkout"
