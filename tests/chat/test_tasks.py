"""Task evals: exact and normalised match of greedy replies, multiple choice by log-likelihood, the table and
--json of `lucidlm eval --tasks`, and bad records named by line."""

import json

import pytest
import torch
import torch.nn.functional as F

from lucidlm.chat.template import chat_prompt
from lucidlm.decode import SamplingConfig
from lucidlm.errors import DataError
from lucidlm.evaluate import TaskRecord, normalise_answer, read_task_records, score_tasks
from lucidlm.generate import generate_text
from lucidlm.model import GPT, GPTConfig
from tests.chat.conftest import write_jsonl
from tests.chat.test_repl import write_run
from tests.conftest import run_lucidlm


@pytest.fixture
def model(chat_tokenizer) -> GPT:
    torch.manual_seed(6)  # a random model whose greedy reply to "Hi" is text, not another turn
    return GPT(GPTConfig(vocab_size=chat_tokenizer.vocab_size, block_size=64, n_layer=2, n_head=2, n_embd=32)).eval()


def greedy(model, tokenizer, question: str) -> str:
    ids, stop = chat_prompt(tokenizer, [{"role": "user", "content": question}])
    return "".join(generate_text(model, tokenizer, ids, 6, SamplingConfig(temperature=0.0), stop)).strip()


def test_normalisation_is_squads():
    assert normalise_answer("  The Answer, is: 42!  ") == "answer is 42"
    assert normalise_answer("an Apple") == "apple"


def test_exact_normalised_and_multiple_choice_scores(model, chat_tokenizer):
    said = greedy(model, chat_tokenizer, "Hi")
    assert said  # the random model says something
    messages = [{"role": "user", "content": "Hi"}]
    records = [
        TaskRecord("free", messages, said),  # exact
        TaskRecord("free", messages, f"The {said.upper()}!" if said.strip(".,!?") else said),  # normalised only
        TaskRecord("free", messages, said + "zzz"),  # wrong
    ]
    # multiple choice: the choice the model finds likeliest, by its summed log-probabilities
    prompt, _ = chat_prompt(chat_tokenizer, messages)
    choices = ["yes", "no", "maybe"]
    end = chat_tokenizer.eos_ids[0]

    def log_likelihood(choice: str) -> float:
        ids = prompt + chat_tokenizer.encode(choice) + [end]
        logits, _ = model(torch.tensor([ids[:-1]]))
        logprobs = F.log_softmax(logits[0], -1)
        n = len(chat_tokenizer.encode(choice)) + 1
        return float(sum(logprobs[len(ids) - 1 - n + i, ids[len(ids) - n + i]] for i in range(n)))

    with torch.no_grad():
        best = max(choices, key=log_likelihood)
        worst = min(choices, key=log_likelihood)
    records += [TaskRecord("choice", messages, best, choices), TaskRecord("choice", messages, worst, choices)]
    result = score_tasks(model, chat_tokenizer, records, max_new_tokens=6, progress=False)
    free, choice = result["tasks"]["free"], result["tasks"]["choice"]
    assert free["records"] == 3 and free["exact_match"] == pytest.approx(1 / 3)
    assert free["normalised_match"] == pytest.approx(2 / 3)
    assert choice["exact_match"] == 0.5
    assert result["all"]["records"] == 5 and result["all"]["exact_match"] == pytest.approx(2 / 5)
    assert [r["reply"] for r in result["replies"]][:3] == [said] * 3


def test_lucidlm_eval_tasks_prints_a_table_and_json(tmp_path, model, chat_tokenizer):
    write_run(tmp_path / "run", chat_tokenizer, model)
    said = greedy(model, chat_tokenizer, "Hi")
    write_jsonl(
        tmp_path / "tasks.jsonl",
        [
            {"task": "greet", "messages": [{"role": "user", "content": "Hi"}], "answer": said},
            {"task": "greet", "messages": [{"role": "user", "content": "Hi"}], "answer": "nope"},
            {"messages": [{"role": "user", "content": "Hi"}], "answer": "a", "choices": ["a", "b"]},
        ],
    )
    table = run_lucidlm(
        "eval", "--checkpoint", tmp_path / "run", "--tasks", tmp_path / "tasks.jsonl", "--max-new-tokens", "6"
    )
    assert table.returncode == 0, table.stderr
    lines = table.stdout.splitlines()
    assert lines[0].split() == ["task", "records", "exact", "match", "normalised", "match"]
    assert lines[1].split()[:3] == ["greet", "2", "50.0%"]
    assert lines[2].split()[:2] == ["tasks", "1"]  # a record without "task" is named by the file
    as_json = run_lucidlm(
        "eval", "--checkpoint", tmp_path / "run", "--tasks", tmp_path / "tasks.jsonl", "--json", "--max-new-tokens", "6"
    )
    scores = json.loads(as_json.stdout)
    assert scores["tasks"]["greet"]["exact_match"] == 0.5 and scores["all"]["records"] == 3


@pytest.mark.parametrize(
    ("record", "problem"),
    [
        ({"messages": [{"role": "user", "content": "q"}]}, '"answer" must be'),
        (
            {"messages": [{"role": "user", "content": "q"}], "answer": "c", "choices": ["a", "b"]},
            "not one of the choices",
        ),
        ({"messages": [{"role": "user", "content": "q"}], "answer": "a", "choices": ["a"]}, "at least two strings"),
        (
            {"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}], "answer": "a"},
            "ends with the assistant's turn",
        ),
    ],
)
def test_a_bad_task_record_is_named_by_its_line(tmp_path, record, problem):
    write_jsonl(tmp_path / "t.jsonl", [{"messages": [{"role": "user", "content": "q"}], "answer": "a"}, record])
    with pytest.raises(DataError, match=f"t.jsonl line 2: .*{problem}"):
        read_task_records(tmp_path / "t.jsonl")


def test_sampled_replies_repeat_with_the_seed(tmp_path, model, chat_tokenizer):
    write_run(tmp_path / "run", chat_tokenizer, model)
    write_jsonl(tmp_path / "t.jsonl", [{"messages": [{"role": "user", "content": f"Hi {c}"}], "answer": "x"}
                                        for c in "abcdef"])  # fmt: skip
    args = ["eval", "--checkpoint", tmp_path / "run", "--tasks", tmp_path / "t.jsonl", "--json", "--max-new-tokens", 5]
    from lucidlm.decode import seed_generator
    from lucidlm.evaluate import read_task_records

    records = read_task_records(tmp_path / "t.jsonl")
    hot = SamplingConfig(temperature=1.5)

    def replies(seed):
        generator = seed_generator(torch.Generator(), seed)
        return [r["reply"] for r in score_tasks(model, chat_tokenizer, records, 5, False, hot, generator)["replies"]]

    assert replies(1) == replies(1) != replies(2)
    assert run_lucidlm(*args, "--temperature", 1.5, "--seed", 7).returncode == 0
