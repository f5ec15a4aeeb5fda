"""Preference tuning: the DPO loss and its gradient against a direct computation and against TRL's DPOTrainer,
preference data through the chat template, the loader's pairs, and a DPO run that raises the chosen reply's
reward and resumes exactly."""

import json

import pytest
import torch
import torch.nn.functional as F

from lucidlm.chat.data import prepare_tuning
from lucidlm.chat.preferences import Preferences
from lucidlm.data.loader import BatchLoader
from lucidlm.errors import ConfigError, DataError, LucidError
from lucidlm.model import GPT, GPTConfig
from lucidlm.train.objectives import dpo_loss, sequence_logprobs
from lucidlm.train.plan import carry_out, plan_run
from tests.chat.conftest import assert_same_weights, write_jsonl
from tests.chat.test_repl import write_run

BLOCK = 48


def direct_logprob(model: GPT, ids: list[int], reply_from: int) -> torch.Tensor:
    """log p(ids[reply_from:] | ids[:reply_from]), one token at a time from the logits, as the definition reads."""
    logits, _ = model(torch.tensor([ids[:-1]]))
    total = torch.zeros(())
    for position in range(reply_from - 1, len(ids) - 1):
        total = total + torch.log(torch.softmax(logits[0, position], dim=-1)[ids[position + 1]])
    return total


def test_the_dpo_loss_and_its_gradient_match_the_formula_from_log_probabilities():
    torch.manual_seed(0)
    config = GPTConfig(vocab_size=11, block_size=16, n_layer=1, n_head=2, n_embd=16)
    policy, reference = GPT(config), GPT(config)
    prompt, chosen, rejected = [1, 2, 3], [4, 5, 10], [6, 10]
    beta = 0.5
    # the direct computation: -log sigmoid(beta (log pi_c - log ref_c) - beta (log pi_r - log ref_r))
    sequences = [prompt + chosen, prompt + rejected]
    with torch.no_grad():
        reference_c, reference_r = (direct_logprob(reference, ids, len(prompt)) for ids in sequences)
    policy_c, policy_r = (direct_logprob(policy, ids, len(prompt)) for ids in sequences)
    expected = -F.logsigmoid(beta * (policy_c - reference_c) - beta * (policy_r - reference_r))
    expected.backward()
    expected_grads = {name: p.grad.clone() for name, p in policy.named_parameters()}
    policy.zero_grad()
    # the trainer's way: padded rows, targets -1 outside the reply
    length = max(map(len, sequences))
    x = torch.zeros(2, length - 1, dtype=torch.long)
    y = torch.full((2, length - 1), -1)
    for row, ids in enumerate(sequences):
        x[row, : len(ids) - 1] = torch.tensor(ids[:-1])
        y[row, len(prompt) - 1 : len(ids) - 1] = torch.tensor(ids[len(prompt) :])
    with torch.no_grad():
        reference_both = sequence_logprobs(reference(x)[0], y)
    policy_both = sequence_logprobs(policy(x)[0], y)
    loss, metrics = dpo_loss(policy_both[:1], policy_both[1:], reference_both[:1], reference_both[1:], beta)
    loss.backward()
    torch.testing.assert_close(loss, expected, rtol=1e-5, atol=1e-6)
    for name, p in policy.named_parameters():
        torch.testing.assert_close(p.grad, expected_grads[name], rtol=1e-4, atol=1e-6, msg=name)
    margin = beta * ((policy_c - reference_c) - (policy_r - reference_r))
    assert float(metrics["reward_margin"]) == pytest.approx(margin.item(), abs=1e-5)
    assert float(metrics["reward_accuracy"]) == float(margin > 0)


def test_the_dpo_loss_and_its_gradient_match_trls_dpo_trainer(tmp_path, chat_tokenizer):
    """TRL's DPOTrainer, on our models exported to Hugging Face's format, tokenizes the pairs its own way (prompt,
    reply, end of turn, right padding, a completion mask); on those token ids, our loss from our models equals
    its loss, and our gradient its gradient."""
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import DPOConfig, DPOTrainer

    from lucidlm.interop.hf_export import export_hf
    from lucidlm.interop.hf_layout import to_hf_state

    config = GPTConfig(vocab_size=chat_tokenizer.vocab_size, block_size=BLOCK, n_layer=2, n_head=2, n_kv_head=1,
                       n_embd=32, positions="rope", norm="rmsnorm", mlp="swiglu")  # fmt: skip
    models = {}
    for seed, name in [(0, "policy"), (1, "reference")]:
        torch.manual_seed(seed)
        models[name] = GPT(config)
        export_hf(models[name], chat_tokenizer, tmp_path / name)
    pairs = [{"prompt": "How old is Ann? ", "chosen": "31", "rejected": "8"},
             {"prompt": "Spell cat. ", "chosen": "c a t", "rejected": "c t"}]  # fmt: skip
    settings = DPOConfig(output_dir=str(tmp_path / "trl"), beta=0.1, per_device_train_batch_size=2, report_to=[],
                         use_cpu=True, bf16=False)  # fmt: skip
    tokenizer = AutoTokenizer.from_pretrained(tmp_path / "policy")
    tokenizer.pad_token = "<|end|>"
    trainer = DPOTrainer(
        model=AutoModelForCausalLM.from_pretrained(tmp_path / "policy"),
        ref_model=AutoModelForCausalLM.from_pretrained(tmp_path / "reference"),
        args=settings,
        train_dataset=Dataset.from_list(pairs),
        processing_class=tokenizer,
    )
    batch = next(iter(trainer.get_train_dataloader()))
    theirs = trainer.compute_loss(trainer.model, batch)
    theirs.backward()
    # the same token ids as the trainer's (x, y): targets -1 outside the replies
    ids, completion = batch["input_ids"], batch["completion_mask"]
    x, y = ids[:, :-1], torch.where(completion[:, 1:] == 1, ids[:, 1:], -1)
    assert chat_tokenizer.decode(ids[0][completion[0] == 1].tolist()) == "31<|end|>"
    with torch.no_grad():
        reference = sequence_logprobs(models["reference"](x)[0], y)
    policy = sequence_logprobs(models["policy"](x)[0], y)
    ours, _ = dpo_loss(policy[:2], policy[2:], reference[:2], reference[2:], beta=0.1)
    ours.backward()
    torch.testing.assert_close(ours, theirs, rtol=1e-5, atol=1e-6)
    our_grads = to_hf_state(config, {name: p.grad for name, p in models["policy"].named_parameters()})
    their_grads = {name: p.grad for name, p in trainer.model.named_parameters()}
    assert our_grads.keys() == their_grads.keys()
    for name, grad in our_grads.items():
        torch.testing.assert_close(grad, their_grads[name], rtol=1e-4, atol=1e-7, msg=name)


def test_the_dpo_loss_at_the_reference_is_log_2_and_falls_as_the_margin_grows():
    zero = torch.zeros(4)
    loss, metrics = dpo_loss(zero, zero, zero, zero, beta=0.1)
    assert float(loss) == pytest.approx(0.693147, abs=1e-6) and float(metrics["reward_margin"]) == 0
    loss, metrics = dpo_loss(torch.tensor([2.0]), torch.tensor([-3.0]), torch.zeros(1), torch.zeros(1), beta=0.2)
    assert float(loss) == pytest.approx(-F.logsigmoid(torch.tensor(1.0)).item(), rel=1e-6)
    assert float(metrics["reward_accuracy"]) == 1.0 and float(metrics["chosen_reward"]) == pytest.approx(0.4)


def pairs(count: int) -> list[dict]:
    """Questions about a word, the chosen reply the word reversed, the rejected one the word as it is."""
    words = ["abc", "dog", "sun", "map", "kit", "pen", "rug", "owl", "fig", "jam", "bus", "cot"]
    records = []
    for index in range(count):
        word = words[index % len(words)]
        records.append({"messages": [{"role": "user", "content": f"Reverse {word}."}], "chosen": word[::-1],
                        "rejected": word})  # fmt: skip
    return records


def test_preference_data_holds_pairs_whose_replies_alone_are_learned(tmp_path, chat_tokenizer):
    records = pairs(20)
    records[3] = {"messages": [{"role": "user", "content": "Hi."}, {"role": "assistant", "content": "Hello."},
                               {"role": "user", "content": "Reverse ab."}],
                  "chosen": [{"role": "assistant", "content": "ba"}], "rejected": "ab"}  # fmt: skip
    write_jsonl(tmp_path / "pairs.jsonl", records)
    meta = prepare_tuning(
        Preferences(), tmp_path / "pairs.jsonl", tmp_path / "data", chat_tokenizer, BLOCK, val_fraction=0.2
    )
    assert meta["preferences"] is True and meta["chat"]["pairs"] == 20 and meta["chat"]["dropped"] == 0
    assert meta["chat"]["train_starts"] == 32 and meta["chat"]["val_starts"] == 8
    loader = BatchLoader(tmp_path / "data", BLOCK, batch_size=4, seed=1)
    x, y = loader.batch("train", 0)
    assert x.shape == (8, BLOCK)
    end = chat_tokenizer.special_tokens["<|end|>"]
    for row in range(4):
        chosen = chat_tokenizer.decode([t for t in y[row].tolist() if t >= 0])
        rejected = chat_tokenizer.decode([t for t in y[row + 4].tolist() if t >= 0])
        # the learned targets are the reply and its end of turn, nothing of the next pair
        prompt = chat_tokenizer.decode([t for t in x[row].tolist()])
        word = prompt.split("Reverse ")[1].split(".")[0]
        assert chosen == word[::-1] + "<|end|>" and rejected == word + "<|end|>"
        assert y[row].tolist().count(end) == 1
    # the earlier assistant turn of a longer conversation is context, not learned
    starts = loader.starts["train"]
    span = slice(starts[6], starts[7])  # the fourth pair's chosen sequence
    learned = [int(t) for t, m in zip(loader.splits["train"][span], loader.masks["train"][span], strict=True) if m]
    assert chat_tokenizer.decode(learned) == "ba<|end|>"


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ('{"messages": [{"role": "user", "content": "Hi"}], "chosen": "a"}',
         'line 2: "rejected" must be the reply\'s text, or messages that end in the assistant\'s turn'),
        ('{"messages": [{"role": "user", "content": "Hi"}], "chosen": "a", "rejected": 3}',
         'line 2: "rejected" must be the reply'),
        ('{"messages": [{"role": "user", "content": "Hi"}], "chosen": "a", "rejected": "a"}',
         "line 2: the chosen and the rejected reply are the same; a pair must differ"),
        ('{"messages": [{"role": "user", "content": "Hi"}], "chosen": "a", "rejected": "b", "score": 1}',
         "line 2: unknown key(s) 'score'"),
        ('{"messages": [{"role": "user", "content": "Hi"}], "chosen": "a", "rejected": "~"}',
         "line 2: characters not in the vocabulary: '~'"),
        ("{not json", "line 2: "),
    ],
)  # fmt: skip
def test_a_bad_preference_line_is_one_error_naming_it(tmp_path, chat_tokenizer, line, message):
    good = json.dumps(pairs(1)[0])
    (tmp_path / "pairs.jsonl").write_text(good + "\n" + line + "\n")
    with pytest.raises(DataError, match="pairs.jsonl " + message.replace("(", r"\(").replace(")", r"\)")):
        prepare_tuning(Preferences(), tmp_path / "pairs.jsonl", tmp_path / "data", chat_tokenizer, BLOCK)
    assert not (tmp_path / "data").exists()


def dpo_plan(data, out, base, steps, lora=False, **extra):
    settings = [f"max_steps={steps}", "batch_size=4", "eval_interval=4", "eval_batches=2", "device=cpu", "lr=3e-3",
                "warmup_steps=0", "decay_steps=12", "objective=dpo", "dpo_beta=0.5", "optimizer=adamw"]  # fmt: skip
    settings += ["lora_rank=4"] if lora else []
    settings += [f"{key}={value}" for key, value in extra.items()]
    return plan_run(data, out, overrides=settings, init_from=None if out.exists() else str(base), resume=out.exists())


@pytest.mark.parametrize("lora", [False, True])
def test_dpo_raises_the_chosen_replies_reward_and_resumes_exactly(tmp_path, base_run, chat_tokenizer, lora):
    write_jsonl(tmp_path / "pairs.jsonl", pairs(40))
    prepare_tuning(Preferences(), tmp_path / "pairs.jsonl", tmp_path / "data", chat_tokenizer, BLOCK)
    carry_out(dpo_plan(tmp_path / "data", tmp_path / "straight", base_run, 12, lora), progress=False)
    records = [json.loads(line) for line in (tmp_path / "straight" / "metrics.jsonl").read_text().splitlines()]
    steps = [r for r in records if "loss" in r]
    evals = [r for r in records if "val_loss" in r]
    assert steps[0]["loss"] == pytest.approx(0.693147, abs=1e-4)  # the policy starts as the reference
    assert steps[0]["reward_margin"] == pytest.approx(0.0, abs=1e-4)
    assert evals[-1]["val_reward_margin"] > (0.15 if lora else 0.4) and evals[-1]["val_reward_accuracy"] == 1.0
    assert evals[-1]["val_loss"] < 0.693 - (0.07 if lora else 0.15)
    # 12 steps at once, or 8 and then 4 more after a resume: the same weights
    carry_out(dpo_plan(tmp_path / "data", tmp_path / "resumed", base_run, 8, lora), progress=False)
    carry_out(dpo_plan(tmp_path / "data", tmp_path / "resumed", base_run, 12, lora), progress=False)
    for which in ("straight", "resumed"):
        assert (tmp_path / which / "loss.png").exists()
    assert_same_weights(tmp_path / "straight", tmp_path / "resumed")


def test_dpo_needs_preference_data_and_a_model_to_start_from(tmp_path, base_run, chat_tokenizer):
    write_jsonl(tmp_path / "pairs.jsonl", pairs(10))
    prepare_tuning(Preferences(), tmp_path / "pairs.jsonl", tmp_path / "data", chat_tokenizer, BLOCK)
    with pytest.raises(ConfigError, match="holds preferences, which train with --set objective=dpo"):
        plan_run(tmp_path / "data", tmp_path / "a", init_from=str(base_run), overrides=["device=cpu"])
    with pytest.raises(ConfigError, match="objective=dpo tunes a trained model: add --init-from"):
        plan_run(tmp_path / "data", tmp_path / "b", overrides=["objective=dpo", "device=cpu", "vocab_size=80"])
    (tmp_path / "text.txt").write_text("hello there " * 100)
    with pytest.raises(ConfigError, match="objective=dpo trains on preferences data, and .* holds text"):
        plan_run(tmp_path / "text.txt", tmp_path / "c", init_from=str(base_run), overrides=["objective=dpo"])


def test_eval_writes_a_models_wrong_replies_as_pairs_that_prepare_reads(tmp_path, chat_tokenizer):
    from tests.chat.conftest import one_token_model
    from tests.conftest import run_lucidlm

    write_run(tmp_path / "run", chat_tokenizer, one_token_model(chat_tokenizer, chat_tokenizer.encode("7")[0]))
    records = [{"task": "t", "messages": [{"role": "user", "content": f"Say {n}."}], "answer": n} for n in "77ab7"]
    write_jsonl(tmp_path / "tasks.jsonl", records)
    args = ("eval", "--checkpoint", tmp_path / "run", "--tasks", tmp_path / "tasks.jsonl", "--max-new-tokens", "1")
    written = run_lucidlm(*args, "--pairs", tmp_path / "pairs.jsonl")
    assert written.returncode == 0, written.stderr
    assert "wrote" in written.stdout and "2 preference pairs" in written.stdout
    pairs = [json.loads(line) for line in (tmp_path / "pairs.jsonl").read_text().splitlines()]
    source = f"lucidlm eval {tmp_path / 'run'}"
    assert pairs == [{"source": source, "task": "t", "messages": records[n]["messages"], "chosen": answer,
                      "rejected": "7"} for n, answer in ((2, "a"), (3, "b"))]  # fmt: skip
    again = run_lucidlm(*args, "--pairs", tmp_path / "pairs.jsonl")
    assert again.returncode == 2 and "pass --force to replace it, or choose another --pairs" in again.stderr
    assert run_lucidlm(*args, "--pairs", tmp_path / "pairs.jsonl", "--force").returncode == 0
    (tmp_path / "mine.jsonl").write_text("my notes\n")
    refused = run_lucidlm(*args, "--pairs", tmp_path / "mine.jsonl", "--force")
    assert refused.returncode == 2 and "is not a file of preference pairs" in refused.stderr
    assert (tmp_path / "mine.jsonl").read_text() == "my notes\n"
    meta = prepare_tuning(
        Preferences(), tmp_path / "pairs.jsonl", tmp_path / "data", chat_tokenizer, BLOCK, val_fraction=0.5
    )
    assert meta["chat"]["pairs"] == 2


def test_the_chosen_replies_cross_entropy_joins_the_dpo_loss_with_its_weight(tmp_path, chat_tokenizer):
    from lucidlm.run_config import RunConfig, TrainConfig
    from lucidlm.train.backends import TorchBackend
    from lucidlm.train.distributed import Distributed

    write_jsonl(tmp_path / "pairs.jsonl", pairs(12))
    prepare_tuning(Preferences(), tmp_path / "pairs.jsonl", tmp_path / "data", chat_tokenizer, BLOCK)
    x, y = BatchLoader(tmp_path / "data", BLOCK, batch_size=3, seed=0).batch("train", 0)
    config = GPTConfig(vocab_size=chat_tokenizer.vocab_size, block_size=BLOCK, n_layer=1, n_head=2, n_embd=16)
    torch.manual_seed(0)
    start = GPT(config).state_for_saving()
    losses = {}
    for weight in (0.0, 2.0):
        train = TrainConfig(objective="dpo", device="cpu", dtype="fp32", compile="false", dpo_nll=weight)
        backend = TorchBackend(RunConfig(config, train), torch.device("cpu"), Distributed())
        backend.load_weights(start)
        loss, metrics = backend.objective_loss((x, y))
        losses[weight] = loss.item()
    with torch.no_grad():
        expected_nll = -sequence_logprobs(backend.model(x)[0], y)[:3].sum() / (y[:3] >= 0).sum()
    assert float(metrics["chosen_nll"]) == pytest.approx(float(expected_nll), rel=1e-5)
    assert losses[2.0] == pytest.approx(losses[0.0] + 2 * float(expected_nll), rel=1e-5)


def test_a_loss_that_a_huge_dpo_beta_overflows_names_it(tmp_path, base_run, chat_tokenizer):
    write_jsonl(tmp_path / "pairs.jsonl", pairs(16))
    prepare_tuning(Preferences(), tmp_path / "pairs.jsonl", tmp_path / "data", chat_tokenizer, BLOCK)
    with pytest.raises(
        LucidError, match=r"the loss became (nan|inf) at step \d+; .* dpo_beta=1e\+308 overflows the loss"
    ):
        carry_out(dpo_plan(tmp_path / "data", tmp_path / "run", base_run, 4, dpo_beta=1e308), progress=False)
    # a diverging run with ordinary weights still blames the learning rate
    with pytest.raises(LucidError, match=r"became (nan|inf) .* lower lr"):
        carry_out(dpo_plan(tmp_path / "data", tmp_path / "run2", base_run, 4, lr=1e30), progress=False)
