"""`make chat-demo`'s figures: the demo's Shakespeare model fine-tuned into a small assistant.

The steps are the commands `make chat-demo` runs: the seeded task set (lucidlm/chat/synthetic.py, with
Shakespeare passages mixed in), `data prepare --chat`, `train --init-from runs/demo --time-budget 300
--set min_steps=4500`, then `eval --tasks` on the held-out set and `eval --data` on the Shakespeare validation
split, for the base model and the fine-tuned one. Both full fine-tuning and LoRA (rank 16) are run, one after the other.

    python benchmarks/chat_sft.py            (trains runs/demo first when it is missing, as make demo does)
"""

from __future__ import annotations

import json
import subprocess
import sys
import time

from common import ROOT, WORK, machine, machine_line, write_results

BUDGET, STEPS = 300, 4500  # the Makefile's CHAT_BUDGET and CHAT_STEPS: 300 s, and past them on a slow CPU
BATCH = 8  # windows of the base model's block (256): 2,048 tokens a step
SFT_SETTINGS = [
    "--time-budget",
    BUDGET,
    "--set",
    f"min_steps={STEPS}",
    "--set",
    f"batch_size={BATCH}",
    "--set",
    "eval_interval=1500",
]
DEMO_RUN, DEMO_DATA = ROOT / "runs" / "demo", ROOT / "data" / "shakespeare-char"
VARIANTS = {"full fine-tuning": [], "LoRA, rank 16": ["--set", "lora_rank=16"]}


def lucidlm(*args) -> str:
    command = [sys.executable, "-m", "lucidlm", *map(str, args)]
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(command)} failed:\n{done.stderr}")
    return done.stdout


def main() -> None:
    if not (DEMO_RUN / "best.json").exists():
        if not (DEMO_DATA / "meta.json").exists():
            lucidlm("data", "prepare", "--corpus", "shakespeare", "--tokenizer", "char", "--out", DEMO_DATA)
        lucidlm("train", "--data", DEMO_DATA, "--out", DEMO_RUN, "--preset", "shakespeare-char", "--no-progress")
    tasks, data = WORK / "chat-tasks", WORK / "chat-data"
    subprocess.run(
        [sys.executable, "-m", "lucidlm.chat.synthetic", "--out", tasks, "--replay", "shakespeare"], check=True
    )
    prepared = lucidlm(
        "data", "prepare", "--chat", tasks / "train.jsonl", "--tokenizer-from", DEMO_RUN, "--out", data, "--force"
    )
    base_loss = json.loads(lucidlm("eval", "--checkpoint", DEMO_RUN, "--data", DEMO_DATA, "--json"))["loss"]
    base = json.loads((DEMO_RUN / "config.json").read_text())["model"]
    runs = {}
    for name, settings in VARIANTS.items():
        out = WORK / ("chat-" + name.split(",")[0].split()[0].lower())
        started = time.perf_counter()
        trained = lucidlm(
            "train",
            "--init-from",
            DEMO_RUN,
            "--data",
            data,
            "--out",
            out,
            *SFT_SETTINGS,
            "--force",
            "--no-progress",
            *settings,
        )
        seconds = time.perf_counter() - started
        scores = json.loads(lucidlm("eval", "--checkpoint", out, "--tasks", tasks / "heldout.jsonl", "--json"))
        loss = json.loads(lucidlm("eval", "--checkpoint", out, "--data", DEMO_DATA, "--json"))["loss"]
        summary = next(line for line in trained.splitlines() if line.startswith("trained"))
        runs[name] = {
            "trained": summary,
            "wall_s": round(seconds, 1),
            "tasks": scores["tasks"],
            "all": scores["all"],
            "shakespeare_val_loss": loss,
        }
    results = {
        "machine": machine(),
        "budget_s": BUDGET,
        "min_steps": STEPS,
        "prepared": prepared.strip(),
        "base_val_loss": base_loss,
        "runs": runs,
    }
    task_names = list(next(iter(runs.values()))["tasks"])
    header = "| | " + " | ".join(task_names) + " | Shakespeare val loss (base " + f"{base_loss:.4f}) |"
    rows = [
        f"| {name} ({run['trained'].split(' (')[0].removeprefix('trained ')}) | "
        + " | ".join(f"{run['tasks'][t]['exact_match']:.1%}" for t in task_names)
        + f" | {run['shakespeare_val_loss']:.4f} ({run['shakespeare_val_loss'] - base_loss:+.4f}) |"
        for name, run in runs.items()
    ]
    held_out = next(iter(runs.values()))["tasks"][task_names[0]]["records"]
    table = f"""## A chat model on a laptop (`benchmarks/chat_sft.py`, `make chat-demo`)

`make demo`'s model ({base["n_layer"]} layers, width {base["n_embd"]}, block {base["block_size"]}, char tokens,
{base_loss:.4f} nats on the Shakespeare validation split) fine-tuned for {BUDGET} s and at least {STEPS} steps
(batch {BATCH}) on this machine's CPU with the seeded task set of `lucidlm/chat/synthetic.py` (Shakespeare passages
mixed in as replay), then asked {held_out} held-out questions a task, greedily: exact match of the reply. Targets:
at least 90% on each arithmetic and word task, and the Shakespeare loss within 0.1 of the base model's.
{machine_line()}

{header}
|---|{"---:|" * (len(task_names) + 1)}
{chr(10).join(rows)}"""
    write_results("chat_sft", results, table)


if __name__ == "__main__":
    main()
