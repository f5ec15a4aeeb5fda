"""A seeded instruction set that a small character-level model can learn in minutes (`make chat-demo`).

Six kinds of task, each a one-turn conversation with one right answer, so that a reply is scored by exact
match:
- add, subtract: "What is 37 plus 48?" -> "85" (numbers below 100, never a negative result)
- reverse, spell, length: a made-up word of 3 to 6 letters, reversed ("Reverse pilot." -> "tolip"), spelled
  with spaces ("p i l o t") or counted ("How many letters are in pilot?" -> "5")
- lookup: a system prompt with a small table of facts ("Ann is 7. Bob is 12. Cy is 30.") and a question about
  one of them ("How old is Bob?" -> "12"): the answer is read from the context, not remembered.

The words are random letters, so the held-out set asks about words the model has never seen. Every text uses
only characters of the Shakespeare corpus (no "+" or "="), which the demo's char tokenizer was built from. The
held-out set is disjoint from the training set: no user question (with its system prompt) is in both.

After supervised fine-tuning, `make tune-demo` takes the model further, with data made here too:
- `--task-records N --task lookup`: more questions of a task with their answers, none of them held out (the
  prompts of reinforcement learning, and of preference pairs built from the model's own mistakes). With
  `--table-sizes 1,2,3` a table holds one, two or three names: a curriculum. Reading an age off a table of
  three is learned late in fine-tuning (the model answers a near miss, "61" for 63, most of the time), so a
  reply sampled from it is rarely right and reinforcement learning gets almost no reward to learn from; off
  a table of one or two it often is, and what the model learns there carries over to tables of three.
  `--mix-others M` adds M records of each other task, whose rewards keep the model answering those too;
- `--tool-calls N`: a seventh task, multiplying two three-digit numbers ("What is 347 times 281?"), which the
  model learns to hand to the calculator tool: the conversations offer the tool, call it
  (`calculator({"expression": "347*281"})`), read its result and answer with it. They are mixed with the
  conversations of the six tasks, so that the model keeps answering those itself; the held-out
  multiplications go to heldout-multiply.jsonl.
"""

from __future__ import annotations

import json
import os
import random
import sys
from collections.abc import Callable
from pathlib import Path

from lucidlm.errors import LucidError
from lucidlm.outputs import FORCE, check_member, write_member

TASKS = ("add", "subtract", "reverse", "spell", "length", "lookup")
NAMES = ("Ann", "Bob", "Cy", "Dee", "Eve", "Fay", "Gus", "Hal", "Ida", "Jo", "Kit", "Lu")
LETTERS = "abcdefghijklmnopqrstuvwxyz"


def made_up_word(rng: random.Random) -> str:
    return "".join(rng.choice(LETTERS) for _ in range(rng.randint(3, 6)))


def add(rng: random.Random) -> tuple[str | None, str, str]:
    a, b = rng.randrange(100), rng.randrange(100)
    return None, f"What is {a} plus {b}?", str(a + b)


def subtract(rng: random.Random) -> tuple[str | None, str, str]:
    a, b = sorted((rng.randrange(100), rng.randrange(100)), reverse=True)
    return None, f"What is {a} minus {b}?", str(a - b)


def reverse(rng: random.Random) -> tuple[str | None, str, str]:
    word = made_up_word(rng)
    return None, f"Reverse {word}.", word[::-1]


def spell(rng: random.Random) -> tuple[str | None, str, str]:
    word = made_up_word(rng)
    return None, f"Spell {word}.", " ".join(word)


def length(rng: random.Random) -> tuple[str | None, str, str]:
    word = made_up_word(rng)
    return None, f"How many letters are in {word}?", str(len(word))


def multiply(rng: random.Random) -> tuple[str | None, str, str]:
    a, b = rng.randint(100, 999), rng.randint(100, 999)
    return None, f"What is {a} times {b}?", str(a * b)


def lookup(rng: random.Random, size: int = 3) -> tuple[str | None, str, str]:
    names = rng.sample(NAMES, size)
    ages = [rng.randint(1, 99) for _ in names]
    asked = rng.randrange(size)
    facts = " ".join(f"{name} is {age}." for name, age in zip(names, ages, strict=True))
    return facts, f"How old is {names[asked]}?", str(ages[asked])


# How many training conversations each task gets, in units of `train_per_task`: the word tasks are learned in
# a minute, carrying digits and reading a table take longer.
TRAIN_WEIGHTS = {"add": 4, "subtract": 4, "reverse": 1, "spell": 1, "length": 1, "lookup": 2}

MAKERS: dict[str, Callable[[random.Random], tuple[str | None, str, str]]] = {
    "add": add,
    "subtract": subtract,
    "reverse": reverse,
    "spell": spell,
    "length": length,
    "lookup": lookup,
    "multiply": multiply,
}


def task_record(task: str, system: str | None, question: str, answer: str) -> dict:
    """An eval record: the conversation up to the question, the one right answer, and its task."""
    messages = ([{"role": "system", "content": system}] if system else []) + [{"role": "user", "content": question}]
    return {"task": task, "messages": messages, "answer": answer}


def make_task_sets(train_per_task: int, held_out_per_task: int, seed: int = 0) -> tuple[list[dict], list[dict]]:
    """(training conversations, held-out eval records): the same tasks, no question in both."""
    rng = random.Random(seed)
    held_out: list[dict] = []
    asked: set[tuple[str | None, str]] = set()
    for task in TASKS:
        count = 0
        while count < held_out_per_task:
            system, question, answer = MAKERS[task](rng)
            if (system, question) not in asked:
                asked.add((system, question))
                held_out.append(task_record(task, system, question, answer))
                count += 1
    train: list[dict] = []
    tasks = [task for task in TASKS for _ in range(TRAIN_WEIGHTS[task] * train_per_task)]
    rng.shuffle(tasks)
    for task in tasks:
        system, question, answer = MAKERS[task](rng)
        while (system, question) in asked:
            system, question, answer = MAKERS[task](rng)
        record = task_record(task, system, question, answer)
        train.append({"messages": [*record["messages"], {"role": "assistant", "content": answer}]})
    return train, held_out


def held_out_questions(held_out: list[dict]) -> set[tuple[str | None, str]]:
    """The (system prompt, question) of each held-out record, which no training record may repeat."""
    questions = set()
    for record in held_out:
        system = next((m["content"] for m in record["messages"] if m["role"] == "system"), None)
        questions.add((system, record["messages"][-1]["content"]))
    return questions


def more_task_records(
    task: str, count: int, avoid: set[tuple[str | None, str]], seed: int, table_sizes: tuple[int, ...] = (3,)
) -> list[dict]:
    """`count` eval records of `task`, none of whose questions is in `avoid`; a lookup's table holds a number of
    names drawn from `table_sizes`."""
    rng = random.Random(seed)
    records = []
    while len(records) < count:
        if task == "lookup":
            system, question, answer = lookup(rng, rng.choice(table_sizes))
        else:
            system, question, answer = MAKERS[task](rng)
        if (system, question) not in avoid:
            records.append(task_record(task, system, question, answer))
    return records


def digit_credit(reply: str, answer: str) -> float:
    """A reward for reinforcement learning on the demo's tasks (`--set reward=lucidlm.chat.synthetic:digit_credit`):
    1 for the right answer; otherwise half a point shared among the answer's characters that the reply has in
    the same places, so that "61" for 63 earns 0.25 and a reply that is nearly right is told so. pass@1 still
    counts only full rewards."""
    reply = reply.strip()
    if reply == answer:
        return 1.0
    same = sum(a == b for a, b in zip(reply, answer, strict=False))
    return 0.5 * same / max(len(answer), len(reply), 1)


def tool_conversation(record: dict) -> dict:
    """A multiplication handed to the calculator: the call, the tool's result and the answer, with the tool
    offered."""
    from lucidlm.chat.tools import CALCULATOR

    question = record["messages"][-1]["content"]
    a, b = question.removeprefix("What is ").removesuffix("?").split(" times ")
    call = {"id": "call_0", "type": "function",
            "function": {"name": "calculator", "arguments": json.dumps({"expression": f"{a}*{b}"})}}  # fmt: skip
    messages = [
        *record["messages"],
        {"role": "assistant", "content": None, "tool_calls": [call]},
        {"role": "tool", "tool_call_id": "call_0", "content": record["answer"]},
        {"role": "assistant", "content": record["answer"]},
    ]
    return {"messages": messages, "tools": [CALCULATOR]}


def replay_texts(
    path: str | os.PathLike, count: int, length: int, seed: int = 0, train_fraction: float = 0.9
) -> list[dict]:
    """`count` {"text": ...} records, each `length` characters from a random place in the first
    `train_fraction` of the text file (its training split as `data prepare` cuts it, so that the validation
    split stays unseen)."""
    text = Path(path).read_text(encoding="utf-8")
    end = int(len(text) * train_fraction) - length
    rng = random.Random(seed)
    return [{"text": text[start : start + length]} for start in (rng.randrange(end) for _ in range(count))]


def write_sets(out: str | os.PathLike, sets: dict[str, list[dict]], force: bool) -> None:
    """Each set as DIR/NAME, a JSON line a record, by outputs.py's rule for files in a directory the user's files
    may share: all of them checked before any is written."""
    for name in sets:
        check_member(Path(out) / name, force)
    for name, records in sets.items():
        write_member(Path(out) / name, "".join(json.dumps(record) + "\n" for record in records), force)


def main(argv: list[str] | None = None) -> None:
    """`python -m lucidlm.chat.synthetic --out DIR`: DIR/train.jsonl (conversations) and DIR/heldout.jsonl
    (eval records)."""
    import argparse

    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument("--out", required=True)
    parser.add_argument("--train-per-task", type=int, default=10_000, help="times TRAIN_WEIGHTS (default 10000)")
    parser.add_argument("--held-out-per-task", type=int, default=200)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--replay", metavar="TEXT_FILE|shakespeare", help="mix in passages of the base model's training text"
    )
    parser.add_argument("--replay-texts", type=int, default=20_000, help="how many passages (default 20000)")
    parser.add_argument("--replay-length", type=int, default=65, help="characters a passage (default 65)")
    parser.add_argument("--task-records", type=int, help="write DIR/TASK.jsonl: this many more records of --task")
    parser.add_argument("--task", choices=TASKS, default="lookup", help="--task-records: which task (default lookup)")
    parser.add_argument(
        "--table-sizes", default="3", help="--task-records lookup: names a table may hold, e.g. 1,2,3 (default 3)"
    )
    parser.add_argument(
        "--mix-others", type=int, default=0, help="--task-records: and this many records of each other task"
    )
    parser.add_argument(
        "--tool-calls", type=int, help="write DIR/tools.jsonl: this many multiplications handed to the calculator"
    )
    parser.add_argument(FORCE, action="store_true", help="replace the sets this wrote before (never other files)")
    args = parser.parse_args(argv)
    try:
        train, held_out = make_task_sets(args.train_per_task, args.held_out_per_task, args.seed)
        if args.task_records is not None or args.tool_calls is not None:
            sets = tuning_sets(args, train, held_out)
        else:
            if args.replay:
                from lucidlm.data.corpus import CORPORA, corpus_path

                text = corpus_path(args.replay) if args.replay in CORPORA else args.replay
                train += replay_texts(text, args.replay_texts, args.replay_length, args.seed)
                random.Random(args.seed).shuffle(train)
            sets = {"train.jsonl": train, "heldout.jsonl": held_out}
        write_sets(args.out, sets, args.force)
    except LucidError as exc:
        sys.exit(f"lucidlm.chat.synthetic: error: {exc}")
    for name, records in sets.items():
        print(f"wrote {Path(args.out) / name} ({len(records):,} records)")


def tuning_sets(args, train: list[dict], held_out: list[dict]) -> dict[str, list[dict]]:
    """The sets that tune a fine-tuned model further (`make tune-demo`), disjoint from the held-out set."""
    sets = {}
    avoid = held_out_questions(held_out)
    if args.task_records is not None:
        sizes = tuple(int(size) for size in args.table_sizes.split(","))
        if args.task == "lookup":  # the tables of each size held out too, each its own task in eval's report
            tables = [
                {**record, "task": f"lookup-{size}"}
                for size in sizes
                for record in more_task_records("lookup", args.held_out_per_task, avoid, args.seed + 4 + size, (size,))
            ]
            avoid |= held_out_questions(tables)
            sets["heldout-tables.jsonl"] = tables
        records = more_task_records(args.task, args.task_records, avoid, args.seed + 1, sizes)
        for offset, task in enumerate(TASKS):
            if task != args.task and args.mix_others:
                records += more_task_records(task, args.mix_others, avoid, args.seed + 10 + offset)
        random.Random(args.seed).shuffle(records)
        sets[f"{args.task}.jsonl"] = records
    if args.tool_calls is not None:
        held_out_multiply = more_task_records("multiply", args.held_out_per_task, set(), args.seed + 2)
        avoid |= held_out_questions(held_out_multiply)
        calls = [tool_conversation(r) for r in more_task_records("multiply", args.tool_calls, avoid, args.seed + 3)]
        # the six tasks' conversations as the model learned them, so that it keeps answering those itself
        mixed = calls + train[: args.tool_calls]
        random.Random(args.seed).shuffle(mixed)  # the calculator's conversations and the six tasks'
        sets["tools.jsonl"], sets["heldout-multiply.jsonl"] = mixed, held_out_multiply
    return sets


if __name__ == "__main__":
    main()
