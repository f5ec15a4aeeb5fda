"""The demo's task sets: the tuning sets' held-out tables, one task per table size, share no question with any
training record or with the chat demo's held-out set."""

import json

from lucidlm.chat.synthetic import held_out_questions, main, make_task_sets


def read_jsonl(path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_the_held_out_tables_are_one_task_a_size_and_never_trained_on(tmp_path):
    main(["--out", str(tmp_path), "--train-per-task", "1", "--held-out-per-task", "30",
          "--task-records", "3000", "--table-sizes", "1,2,3"])  # fmt: skip
    tables = read_jsonl(tmp_path / "heldout-tables.jsonl")
    for size in (1, 2, 3):
        of_size = [r for r in tables if r["task"] == f"lookup-{size}"]
        assert len(of_size) == 30
        assert all(r["messages"][0]["content"].count(" is ") == size for r in of_size)
    records = read_jsonl(tmp_path / "lookup.jsonl")
    trained, chat_held_out = held_out_questions(records), held_out_questions(make_task_sets(1, 30)[1])
    assert len(records) == 3000
    assert not held_out_questions(tables) & (trained | chat_held_out)


def test_the_sets_are_written_by_the_rule_every_output_follows(tmp_path, capsys):
    """A user's file of the same name is never replaced; the generator's own earlier sets only with --force, and
    a refusal writes none of the sets (issue 47)."""

    def generate(*extra: str) -> str:
        """What the command says on stderr: its one-line error, or nothing."""
        try:
            main(["--out", str(tmp_path), "--train-per-task", "1", "--held-out-per-task", "5", *extra])
        except SystemExit as exit:  # how `python -m lucidlm.chat.synthetic` ends on an error: status 1
            return str(exit.code)
        return ""

    (tmp_path / "heldout.jsonl").write_text("mine\n")
    assert "heldout.jsonl exists and is not a file lucidlm wrote" in generate("--force")
    assert not (tmp_path / "train.jsonl").exists() and (tmp_path / "heldout.jsonl").read_text() == "mine\n"
    (tmp_path / "heldout.jsonl").unlink()
    assert generate() == "" and len(read_jsonl(tmp_path / "heldout.jsonl")) == 30  # 5 a task
    assert "already holds a file lucidlm wrote; pass --force" in generate()
    assert generate("--force") == ""
    with open(tmp_path / "train.jsonl", "a") as f:
        f.write("{}\n")  # changed by hand since: the user's now
    assert "is not a file lucidlm wrote (or it was changed since)" in generate("--force")
    capsys.readouterr()
