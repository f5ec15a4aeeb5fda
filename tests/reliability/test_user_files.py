"""Issue 18, parts 1 and 4: nothing a user has is lost or silently replaced, a failed command leaves nothing
behind, and a mistake is one line with exit status 2.

The commands run in this process through `lucidlm.cli.main`, as the command line runs them, with tiny models."""

import hashlib
import json
import os
import shlex
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lucidlm.cli import main
from lucidlm.outputs import DATA_DIR, HF_EXPORT, RUN_DIR

from ..conftest import SAMPLE_TEXT, tiny_model_args

TINY = [*tiny_model_args(block_size=16, eval_interval=2, eval_batches=1, batch_size=2), "--no-progress"]


def lucidlm(*args, capsys=None) -> tuple[int, str, str]:
    """(exit status, stdout, stderr) of `lucidlm ARGS`."""
    status = main([str(a) for a in args])
    if capsys is None:
        return status, "", ""
    captured = capsys.readouterr()
    return status, captured.out, captured.err


def tree_digest(root: Path) -> list[tuple[str, str]]:
    """Every path under `root` with the sha256 of its bytes ("dir" for a directory): equal digests, equal trees."""
    entries = []
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames:
            entries.append((os.path.relpath(os.path.join(dirpath, name), root), "dir"))
        for name in filenames:
            path = os.path.join(dirpath, name)
            entries.append((os.path.relpath(path, root), hashlib.sha256(Path(path).read_bytes()).hexdigest()))
    return sorted(entries)


@pytest.fixture(scope="module")
def made(tmp_path_factory) -> dict[str, Path]:
    """A text, a data directory, a run and its Hugging Face export, each as the command writes it."""
    root = tmp_path_factory.mktemp("made")
    text = root / "my.txt"
    text.write_text(SAMPLE_TEXT)
    assert main(["data", "prepare", "--input", str(text), "--out", str(root / "data")]) == 0
    assert main(["train", "--data", str(text), "--out", str(root / "run"), "--max-steps", "4", *TINY]) == 0
    assert main(["export", "--checkpoint", str(root / "run"), "--out", str(root / "export")]) == 0
    return {"text": text, "data": root / "data", "run": root / "run", "export": root / "export"}


# --- the property: refuse without changing a byte, or write only what is documented ---------------------------

TREES = ["absent", "empty dir", "a file", "user files", "data", "run", "export", "current dir", "parent dir"]
COMMANDS = {  # what each writes at --out
    "prepare": DATA_DIR,
    "export": HF_EXPORT,
    "train": RUN_DIR,
}


def command_args(command: str, made: dict[str, Path], out: str, force: bool) -> list[str]:
    flag = ["--force"] if force else []
    if command == "prepare":
        return ["data", "prepare", "--input", str(made["text"]), "--out", out, *flag]
    if command == "export":
        return ["export", "--checkpoint", str(made["run"]), "--out", out, *flag]
    return ["train", "--data", str(made["text"]), "--out", out, "--max-steps", "2", *TINY, *flag]


@settings(max_examples=45, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    command=st.sampled_from(sorted(COMMANDS)),
    tree=st.sampled_from(TREES),
    force=st.booleans(),
    user_files=st.dictionaries(st.sampled_from(["config.json", "notes.txt", "meta.json", "train.bin"]), st.binary()),
)
def test_a_command_refuses_without_changing_a_byte_or_writes_only_its_output(
    made, monkeypatch, command, tree, force, user_files
):
    root = Path(tempfile.mkdtemp())
    try:
        (root / "keep.txt").write_text("a file beside the target, never touched\n")
        target = root / "target"
        if tree == "empty dir":
            target.mkdir()
        elif tree == "a file":
            target.write_text("my thesis\n")
        elif tree in ("user files", "current dir", "parent dir"):
            target.mkdir()
            (target / "thesis.txt").write_text("my thesis\n")
            for name, data in user_files.items():
                (target / name).write_bytes(data)
        elif tree in ("data", "run", "export"):
            shutil.copytree(made[tree], target)
        out = str(target)
        if tree == "current dir":
            monkeypatch.chdir(target)
            out = "."
        elif tree == "parent dir":
            (target / "sub").mkdir()
            monkeypatch.chdir(target / "sub")
            out = ".."
        before = tree_digest(root)
        status = main(command_args(command, made, out, force))
        after = tree_digest(root)
        kind = COMMANDS[command]
        own = tree == {DATA_DIR: "data", RUN_DIR: "run", HF_EXPORT: "export"}[kind]
        if status != 0:
            assert status == 2 and after == before
            assert not (tree in ("absent", "empty dir") or (own and force)), "refused what it may write"
            return
        assert tree in ("absent", "empty dir") or (own and force), "wrote over what it may not replace"
        assert kind.holds(target)
        outside = [entry for entry in after if not entry[0].startswith("target")]
        assert outside == [entry for entry in before if not entry[0].startswith("target")]
    finally:
        monkeypatch.chdir(Path(__file__).parent)
        shutil.rmtree(root, ignore_errors=True)


# --- each reported case ---------------------------------------------------------------------------------------


def test_export_refuses_a_directory_of_the_users_and_the_run_itself(made, tmp_path, capsys):
    keep = tmp_path / "keep"
    keep.mkdir()
    (keep / "thesis.txt").write_text("x")
    status, _, err = lucidlm("export", "--checkpoint", made["run"], "--out", keep, "--force", capsys=capsys)
    assert status == 2 and (keep / "thesis.txt").read_text() == "x" and len(list(keep.iterdir())) == 1
    assert "is not a Hugging Face export lucidlm wrote" in err and "--force" in err
    run_before = tree_digest(made["run"])
    status, _, err = lucidlm("export", "--checkpoint", made["run"], "--out", made["run"], capsys=capsys)
    assert status == 2 and "holds a run directory, not a Hugging Face export" in err
    assert tree_digest(made["run"]) == run_before


def test_export_to_a_path_under_a_file_leaves_no_tmp_directory(made, tmp_path, capsys):
    (tmp_path / "x").write_text("a file")
    status, _, err = lucidlm("export", "--checkpoint", made["run"], "--out", tmp_path / "x" / "out", capsys=capsys)
    assert status == 2 and "is a file, not a directory" in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["x"]


def test_export_force_replaces_only_its_own_earlier_export(made, tmp_path, capsys):
    out = tmp_path / "export"
    shutil.copytree(made["export"], out)
    status, _, err = lucidlm("export", "--checkpoint", made["run"], "--out", out, capsys=capsys)
    assert status == 2 and "already holds a Hugging Face export; pass --force" in err
    assert lucidlm("export", "--checkpoint", made["run"], "--out", out, "--force") == (0, "", "")
    assert HF_EXPORT.holds(out) and sorted(p.name for p in tmp_path.iterdir()) == ["export"]


def test_train_refuses_a_directory_that_holds_run_like_files_of_the_users(made, tmp_path, capsys):
    mydocs = tmp_path / "mydocs"
    (mydocs / "data").mkdir(parents=True)
    for name in ("config.json", "metrics.jsonl", "data/train.bin"):
        (mydocs / name).write_text("mine")
    before = tree_digest(mydocs)
    status, _, err = lucidlm("train", "--data", made["text"], "--out", mydocs, *TINY, capsys=capsys)
    assert status == 2 and "is not empty and is not a run directory" in err
    assert tree_digest(mydocs) == before


def test_prepare_refuses_an_earlier_data_directory_and_a_run(made, tmp_path, capsys):
    data, run = tmp_path / "data", tmp_path / "run"
    shutil.copytree(made["data"], data)
    shutil.copytree(made["run"], run)
    before = tree_digest(tmp_path)
    status, _, err = lucidlm("data", "prepare", "--input", made["text"], "--out", data, capsys=capsys)
    assert status == 2 and "already holds a data directory; pass --force" in err
    status, _, err = lucidlm("data", "prepare", "--input", made["text"], "--out", run, "--force", capsys=capsys)
    assert status == 2 and "holds a run directory, not a data directory" in err
    assert tree_digest(tmp_path) == before  # the run's tokenizer.json is untouched
    other = tmp_path / "other.txt"
    other.write_text("a different text, long enough to split in two. " * 20)
    assert lucidlm("data", "prepare", "--input", other, "--out", data, "--force")[0] == 0
    assert json.loads((data / "meta.json").read_text())["sources"][0]["source"] == str(other)


@pytest.mark.parametrize("other", ["other words", "same characters", "more characters"])
def test_resume_with_other_data_is_refused_before_anything_is_written(made, tmp_path, capsys, other):
    run = tmp_path / "run"
    shutil.copytree(made["run"], run)
    text = tmp_path / "other.txt"
    if other == "same characters":  # the run's own characters, in another order: trained on silently before
        text.write_text(SAMPLE_TEXT[::-1])
    elif other == "more characters":  # blamed a vocab_size setting the user never gave
        text.write_text(SAMPLE_TEXT + "Zebras & quokkas!\n")
    else:
        text.write_text(SAMPLE_TEXT.replace("speak", "peaks"))
    before = tree_digest(run)
    status, _, err = lucidlm("train", "--data", text, "--out", run, "--resume", "--max-steps", "8", capsys=capsys)
    assert status == 2 and "is not the data" in err and "sha256" in err and "vocab_size" not in err
    assert tree_digest(run) == before


def test_resume_with_the_same_text_continues_and_a_finished_run_says_so(made, tmp_path, capsys):
    run = tmp_path / "run"
    shutil.copytree(made["run"], run)
    status, out, _ = lucidlm("train", "--data", made["text"], "--out", run, "--resume", capsys=capsys)
    assert status == 0 and "already at step 4 of max_steps=4: nothing to train; raise --max-steps" in out
    status, out, _ = lucidlm(
        "train", "--data", made["text"], "--out", run, "--resume", "--max-steps", "6", *TINY, capsys=capsys
    )
    assert status == 0 and "trained 6 steps" in out


def test_the_same_command_again_with_resume_is_accepted_and_real_changes_are_named(tmp_path, made, capsys):
    run = tmp_path / "run"
    first = ["train", "--data", made["text"], "--out", run, "--preset", "nanogpt-baby", "--max-steps", "2", *TINY]
    assert lucidlm(*first)[0] == 0
    status, out, err = lucidlm(*first, "--resume", "--max-steps", "4", capsys=capsys)
    assert status == 0 and "trained 4 steps" in out, err
    status, _, err = lucidlm(*first[:5], "--preset", "llama-tiny", "--max-steps", "6", *TINY, "--resume", capsys=capsys)
    assert status == 2 and "--preset/--config would change" in err and "positions ('learned' -> 'rope')" in err


@pytest.mark.parametrize(
    ("case", "args", "message"),
    [
        ("resume a missing run", ["--resume"], "holds no run to resume"),
        ("a text too short", ["--data", "{short}"], "fewer than block_size"),
        ("unknown symbols for --init-from", ["--data", "{unknown}", "--init-from", "{run}"], "not in the vocabulary"),
        ("time budget nan", ["--time-budget", "nan"], "time_budget=nan is not a finite number"),
        ("a NaN loss", ["--set", "lr=1e30", "--set", "eval_interval=100"], "no checkpoint was saved, so nothing"),
    ],
)
def test_a_failed_train_leaves_nothing_behind(made, tmp_path, capsys, case, args, message):
    (tmp_path / "short.txt").write_text("ab\n" * 4)
    (tmp_path / "unknown.txt").write_text("qqq zzz xxx " * 40)
    values = {"short": tmp_path / "short.txt", "unknown": tmp_path / "unknown.txt", "run": made["run"]}
    args = [a.format(**values) for a in args]
    data = [] if "--data" in args else ["--data", str(made["text"])]
    tiny = TINY
    if "--init-from" in args:  # the model's shape comes from the run
        tiny = ["--device", "cpu", "--no-progress", "--set", "batch_size=2", "--set", "eval_interval=2"]
    status, _, err = lucidlm("train", *data, "--out", tmp_path / "runs" / "new", *tiny, *args, capsys=capsys)
    assert status == 2 and message in err, err
    assert len(err.strip().splitlines()) == 1
    assert not (tmp_path / "runs").exists()


@pytest.mark.parametrize(
    ("setting", "message"),
    [
        ("lr=nan", "lr=nan is not a finite number"),
        ("lr=inf", "lr=inf is not a finite number"),
        ("beta1=2", "beta1=2.0 must lie in [0, 1)"),
        ("warmup_steps=-1", "warmup_steps=-1 must be 0 or more"),
        ("min_lr=0.5", "min_lr=0.5 must lie in [0, lr="),
        ("weight_decay=-1", "weight_decay=-1.0 must be 0 or more"),
        ("grad_clip=nan", "grad_clip=nan is not a finite number"),
        ("n_embd=100000", "more than this machine's"),
    ],
)
def test_every_setting_is_checked_before_a_run_starts(made, tmp_path, capsys, setting, message):
    status, _, err = lucidlm(
        "train", "--data", made["text"], "--out", tmp_path / "r", *TINY, "--set", setting, capsys=capsys
    )
    assert status == 2 and message in err and len(err.strip().splitlines()) == 1, err
    assert not (tmp_path / "r").exists()


def test_a_config_file_of_the_wrong_kind_is_one_line(made, tmp_path, capsys):
    (tmp_path / "fast.toml").write_text('[train]\nlr = "fast"\n')
    for config, message in ((tmp_path / "fast.toml", "lr='fast' is not a finite number"), ("/bin/ls", "not a text")):
        status, _, err = lucidlm(
            "train", "--data", made["text"], "--out", tmp_path / "r", "--config", config, *TINY, capsys=capsys
        )
        assert status == 2 and message in err, err


def test_the_printed_hints_are_quoted_and_prompt_with_the_runs_own_text(made, tmp_path, capsys):
    run = tmp_path / "my runs" / "a b"
    status, out, _ = lucidlm("train", "--data", made["text"], "--out", run, "--max-steps", "2", *TINY, capsys=capsys)
    assert status == 0
    generate = next(line for line in out.splitlines() if "lucidlm generate" in line)
    assert f"--checkpoint {shlex.quote(str(run))}" in generate and "--prompt 'First Citizen:'" in generate
    args = [*shlex.split(generate.strip())[1:], "--max-new-tokens", "3", "--device", "cpu"]
    assert lucidlm(*args, capsys=capsys)[0] == 0


def test_which_chooses_the_checkpoint_and_a_step_folder_works_as_the_checkpoint(made, capsys):
    steps = {which: json.loads((made["run"] / f"{which}.json").read_text())["step"] for which in ("latest", "best")}
    for which in ("latest", "best", f"step-{steps['latest']}"):
        status, out, err = lucidlm(
            "eval", "--checkpoint", made["run"], "--data", made["data"], "--which", which, "--json", capsys=capsys
        )
        assert status == 0, err
        assert json.loads(out)["checkpoint_step"] == steps.get(which, steps["latest"])
    folder = made["run"] / json.loads((made["run"] / "latest.json").read_text())["checkpoint"]
    status, out, _ = lucidlm("eval", "--checkpoint", folder, "--data", made["data"], "--json", capsys=capsys)
    assert status == 0 and json.loads(out)["checkpoint_step"] == steps["latest"]
    status, _, err = lucidlm("generate", "--checkpoint", made["run"], "--which", "step-999", capsys=capsys)
    assert status == 2 and "has no checkpoint of step 999" in err


def test_generate_counts_the_tokens_it_generated(made, capsys):
    status, _, err = lucidlm(
        "generate", "--checkpoint", made["run"], "--max-new-tokens", "9", "--stop", "e", "--seed", "1", capsys=capsys
    )
    assert status == 0
    count = int(err.split("[", 1)[1].split()[0])
    assert 1 <= count <= 9  # with a stop string the text is cut, not the count of tokens made


def test_a_word_model_reads_unseen_words_as_unk_with_a_note(tmp_path, capsys):
    text = tmp_path / "words.txt"
    text.write_text(SAMPLE_TEXT)
    assert main(["data", "prepare", "--input", str(text), "--tokenizer", "word", "--out", str(tmp_path / "d")]) == 0
    assert main(["train", "--data", str(tmp_path / "d"), "--out", str(tmp_path / "r"), "--max-steps", "2", *TINY]) == 0
    capsys.readouterr()
    status, _, err = lucidlm(
        "generate", "--checkpoint", tmp_path / "r", "--prompt", "Citizen zebra", "--max-new-tokens", "2", capsys=capsys
    )
    assert status == 0 and "1 word(s) not in the vocabulary are read as <unk>: 'zebra'" in err


def test_prepare_skips_empty_and_binary_files_of_a_source_tree(tmp_path, capsys):
    tree = tmp_path / "src"
    (tree / "__pycache__").mkdir(parents=True)
    (tree / "a.py").write_text(SAMPLE_TEXT)
    (tree / "__init__.py").write_text("")
    (tree / "__pycache__" / "a.cpython-311.pyc").write_bytes(b"\xa7\r\r\n\0\0\0\0\xe3binary")
    status, _, err = lucidlm("data", "prepare", "--input", tree, "--out", tmp_path / "d", capsys=capsys)
    assert status == 0 and "skipped 2 empty or binary file(s)" in err and "a.cpython-311.pyc" in err
    named = tree / "__pycache__" / "a.cpython-311.pyc"
    status, _, err = lucidlm("data", "prepare", "--input", named, "--out", tmp_path / "e", capsys=capsys)
    assert status == 2 and "is a binary file, not text" in err and "iconv" not in err


def test_generate_refuses_an_infinite_temperature(made, capsys):
    status, _, err = lucidlm("generate", "--checkpoint", made["run"], "--temperature", "inf", capsys=capsys)
    assert status == 2 and "temperature inf must be 0 (greedy) or a positive number" in err


# --- issue 37: symbolic links at --out, and what a killed command left -----------------------------------------


@pytest.mark.parametrize("command", sorted(COMMANDS))
@pytest.mark.parametrize("force", [False, True])
def test_a_link_at_out_is_followed_and_stays_a_link(made, tmp_path, capsys, command, force):
    """`--out link` wrote a real directory at `link`, moved the user's link to a hidden name and exited 2;
    with --force over a link to an earlier output it said `Cannot call rmtree on a symbolic link`."""
    target, link = tmp_path / "mine", tmp_path / "link"
    if force:  # a link to this command's earlier output, to replace
        assert lucidlm(*command_args(command, made, str(target), force=False)) == (0, "", "")
    else:  # a link to an empty directory of the user's
        target.mkdir()
    link.symlink_to(target)
    status, _, err = lucidlm(*command_args(command, made, str(link), force), capsys=capsys)
    assert status == 0, err
    assert link.is_symlink() and os.readlink(link) == str(target)  # the link, untouched
    assert COMMANDS[command].holds(target)  # the output, where it points
    assert sorted(p.name for p in tmp_path.iterdir()) == ["link", "mine"]  # nothing moved aside or left over


def test_a_link_in_the_parents_of_out_is_followed(made, tmp_path, capsys):
    (tmp_path / "disk").mkdir()
    (tmp_path / "runs").symlink_to(tmp_path / "disk")
    assert lucidlm("export", "--checkpoint", made["run"], "--out", tmp_path / "runs" / "a", capsys=capsys)[0] == 0
    assert (tmp_path / "runs").is_symlink() and HF_EXPORT.holds(tmp_path / "disk" / "a")


def test_a_loop_of_links_at_out_is_one_line(made, tmp_path, capsys):
    (tmp_path / "a").symlink_to(tmp_path / "b")
    (tmp_path / "b").symlink_to(tmp_path / "a")
    status, _, err = lucidlm("data", "prepare", "--input", made["text"], "--out", tmp_path / "a", capsys=capsys)
    assert status == 2 and "is a loop of symbolic links; choose another --out" in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a", "b"]


@pytest.mark.parametrize("command", ["prepare", "export"])
def test_a_killed_commands_temporaries_are_removed_by_the_next_one_and_nothing_else(made, tmp_path, capsys, command):
    """kill -9 during `data prepare` or `export` left `.NAME.lucidlm-tmp-*` beside the output for good."""
    out = tmp_path / "out"
    dead = subprocess_pid_that_ended()
    stale = tmp_path / f".out.lucidlm-tmp-{dead}-0123abcd"
    (stale / "sub").mkdir(parents=True)
    (stale / "sub" / "train.bin").write_bytes(b"half")
    running = tmp_path / f".out.lucidlm-tmp-{os.getpid()}-0123abcd"  # a command still writing: left alone
    running.mkdir()
    users = [tmp_path / ".out.lucidlm-tmp-notes.txt", tmp_path / f".out.lucidlm-tmp-{dead}-mine"]
    for path in users:
        path.write_text("the user's")
    aside = tmp_path / f".out.lucidlm-old-{dead}-0123abcd"  # an earlier output a killed --force had moved aside
    aside.mkdir()
    status, _, err = lucidlm(*command_args(command, made, str(out), force=False), capsys=capsys)
    assert status == 0, err
    assert f"removed {stale}, left half-written by a lucidlm command that was killed" in err
    assert f"{aside} holds an earlier output that a killed lucidlm command was replacing" in err
    assert not stale.exists() and running.is_dir() and aside.is_dir()
    assert all(path.read_text() == "the user's" for path in users)


def subprocess_pid_that_ended() -> int:
    process = subprocess.Popen(["true"])
    process.wait()
    return process.pid


def test_a_255_byte_gguf_name_is_written(made, tmp_path, capsys):
    """The temporary name beside it, `.NAME.lucidlm-tmp-...`, was over the file system's 255 bytes."""
    out = tmp_path / ("m" * 250 + ".gguf")
    status, _, err = lucidlm("export", "--checkpoint", made["run"], "--format", "gguf", "--out", out, capsys=capsys)
    assert status == 0, err
    assert out.read_bytes()[:4] == b"GGUF" and [p.name for p in tmp_path.iterdir()] == [out.name]
