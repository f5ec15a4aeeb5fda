"""Reinforcement learning with verifiable rewards: GRPO's advantages and clipped objective on hand-made groups,
a policy-gradient step that makes a rewarded reply likelier, task data, rewards, a GRPO run that raises its
reward and resumes exactly, and replayed supervised data whose loss joins the step's."""

import json
import math

import pytest
import torch

from lucidlm.chat.data import Conversations, prepare_tuning
from lucidlm.chat.template import CHAT_TOKENS
from lucidlm.decode import SamplingConfig
from lucidlm.errors import ConfigError, DataError, LucidError
from lucidlm.generate import sample_group
from lucidlm.model import GPT, GPTConfig
from lucidlm.tokenizers import CharTokenizer
from lucidlm.train.objectives import clipped_policy_loss, group_advantages, sequence_logprobs, token_logprobs
from lucidlm.train.plan import carry_out, plan_run
from lucidlm.train.rl import TaskLoader, Tasks, load_reward, number_reward
from tests.chat.conftest import ALPHABET, assert_same_weights, conversation, write_jsonl

BLOCK = 48


def test_advantages_are_each_reward_against_its_group():
    rewards = torch.tensor([[1.0, 0.0, 0.0, 1.0], [1.0, 1.0, 1.0, 1.0], [3.0, 0.0, 0.0, 0.0]])
    advantages = group_advantages(rewards)
    torch.testing.assert_close(advantages[0], torch.tensor([1.0, -1.0, -1.0, 1.0]), atol=1e-3, rtol=0)
    assert advantages[1].tolist() == [0.0, 0.0, 0.0, 0.0]  # all alike: nothing to learn
    # mean 0.75, standard deviation sqrt(3 * 0.75**2 / 4 + 2.25**2 / 4) = 1.299
    torch.testing.assert_close(advantages[2], torch.tensor([1.7321, -0.5774, -0.5774, -0.5774]), atol=2e-3, rtol=0)


def test_the_clipped_objective_takes_the_pessimistic_side_and_stops_the_gradient_there():
    old = torch.zeros(4, 1)
    logprobs = torch.log(torch.tensor([[1.5], [1.5], [0.5], [0.5]])).requires_grad_()
    advantages = torch.tensor([1.0, -1.0, 1.0, -1.0])
    loss, metrics = clipped_policy_loss(logprobs, old, advantages, torch.ones(4, 1), clip=0.2)
    # per reply: min(r A, clip(r) A) -> 1.2, -1.5, 0.5, -0.8; the loss is minus their mean
    assert loss.item() == pytest.approx(-(1.2 - 1.5 + 0.5 - 0.8) / 4, abs=1e-6)
    loss.backward()
    # the clipped replies (1 and 4) get no gradient; the others d(-r A / 4)/d log r = -r A / 4
    torch.testing.assert_close(logprobs.grad[:, 0], torch.tensor([0.0, 1.5 / 4, -0.5 / 4, 0.0]))
    assert metrics["clipped"].item() == 0.5 and metrics["kl"].item() == 0.0


def test_the_kl_penalty_is_zero_at_the_reference_and_schulmans_estimate_elsewhere():
    logprobs = torch.tensor([[-1.0, -2.0]])
    mask = torch.tensor([[1, 0]])
    _, at_reference = clipped_policy_loss(logprobs, logprobs, torch.zeros(1), mask, 0.2, logprobs, 0.1)
    assert at_reference["kl"].item() == 0.0
    reference = torch.tensor([[-1.5, -9.0]])  # the masked token does not count
    loss, metrics = clipped_policy_loss(logprobs, logprobs, torch.zeros(1), mask, 0.2, reference, 0.1)
    expected = math.exp(-0.5) + 0.5 - 1
    assert metrics["kl"].item() == pytest.approx(expected, rel=1e-6) and loss.item() == pytest.approx(0.1 * expected)


def test_a_policy_gradient_step_makes_the_rewarded_reply_likelier():
    torch.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=12, block_size=16, n_layer=1, n_head=2, n_embd=16))
    prompt, good, bad = [1, 2, 3], [4, 5, 0], [6, 7, 0]
    x = torch.tensor([prompt + good[:-1], prompt + bad[:-1]])
    y = torch.tensor([[-1, -1, *good], [-1, -1, *bad]])
    before = sequence_logprobs(model(x)[0], y).detach()
    logprobs = token_logprobs(model(x)[0], y)
    loss, _ = clipped_policy_loss(logprobs, logprobs.detach(), torch.tensor([1.0, -1.0]), y >= 0, clip=0.2)
    loss.backward()
    with torch.no_grad():
        for parameter in model.parameters():
            parameter -= 0.1 * parameter.grad
    after = sequence_logprobs(model(x)[0], y).detach()
    assert after[0] > before[0] + 0.05 and after[1] < before[1] - 0.05


def test_a_group_is_sampled_together_as_one_reply_at_a_time_would_be():
    torch.manual_seed(1)
    model = GPT(GPTConfig(vocab_size=12, block_size=16, n_layer=2, n_head=2, n_embd=16)).eval()
    greedy = sample_group(model, [1, 2, 3], 3, 8, SamplingConfig(temperature=0.0), None, [0])
    one = []
    ids = [1, 2, 3]
    for _ in range(8):
        token = int(model(torch.tensor([ids]))[0][0, -1].argmax())
        one.append(token)
        ids.append(token)
        if token == 0:
            break
    assert greedy == [one] * 3
    sampled = sample_group(model, [1, 2, 3], 4, 8, SamplingConfig(), torch.Generator().manual_seed(5), [0])
    again = sample_group(model, [1, 2, 3], 4, 8, SamplingConfig(), torch.Generator().manual_seed(5), [0])
    assert sampled == again and len({tuple(r) for r in sampled}) > 1
    assert all(len(r) == 8 or r[-1] == 0 for r in sampled)
    with pytest.raises(ConfigError, match="a prompt of 3 tokens leaves no room for 15 more in the window of 16"):
        sample_group(model, [1, 2, 3], 1, 15, SamplingConfig(), None, [0])


def test_rewards_exact_number_and_a_users_function(tmp_path, monkeypatch):
    assert load_reward("exact")(" 42 ", "42") == 1.0 and load_reward("exact")("42.", "42") == 0.0
    assert number_reward("so it is 1,204.", "1204") == 1.0 and number_reward("12 then 13", "12") == 0.0
    assert number_reward("no digits", "3") == 0.0 and number_reward("-2.50", "-2.5") == 1.0
    (tmp_path / "my_rewards.py").write_text(
        "def starts_with_answer(reply, answer):\n    return reply.startswith(answer)\n"
    )
    monkeypatch.chdir(tmp_path)
    assert load_reward("my_rewards:starts_with_answer")("abc", "ab") == 1.0
    with pytest.raises(ConfigError, match="reward=my_rewards:nothing: my_rewards has no function nothing"):
        load_reward("my_rewards:nothing")
    with pytest.raises(ConfigError, match="reward=no_such_module:f: cannot import no_such_module"):
        load_reward("no_such_module:f")
    with pytest.raises(ConfigError, match="reward='close' is one of: exact, number, or a Python function"):
        load_reward("close")


def tasks(count: int) -> list[dict]:
    """Say a word: the answer starts with a vowel."""
    return [{"messages": [{"role": "user", "content": f"Say {word}."}], "answer": word, "task": "say"}
            for word in ["apple", "egg", "ice", "orange", "umbrella", "owl", "ant", "elk"] * (count // 8)]  # fmt: skip


def test_task_data_holds_the_templated_prompts_and_their_answers(tmp_path, chat_tokenizer):
    write_jsonl(tmp_path / "tasks.jsonl", tasks(16))
    meta = prepare_tuning(
        Tasks(), tmp_path / "tasks.jsonl", tmp_path / "data", chat_tokenizer, BLOCK, val_fraction=0.25
    )
    assert meta["tasks"] == {"train": 12, "val": 4}
    loader = TaskLoader(tmp_path / "data", batch_size=3, seed=0)
    batch = loader.batch("train", 5)
    assert batch == loader.batch("train", 5) and batch.seed != loader.batch("train", 6).seed
    for prompt, answer in zip(batch.prompts, batch.answers, strict=True):
        assert chat_tokenizer.decode(prompt) == f"<|user|>Say {answer}.<|end|><|assistant|>"
    assert len(loader.batch("val", 0).prompts) == 4 and loader.val_batches(20) == 1


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ('{"messages": [{"role": "user", "content": "Hi"}]}', 'line 2: "answer" must be the reply\'s text'),
        ('{"messages": [{"role": "user", "content": "Hi"}], "answer": "a", "choices": ["a", "b"]}',
         "line 2: a multiple-choice record is for eval --tasks"),
        ('{"messages": [{"role": "user", "content": "Hi~"}], "answer": "a"}',
         "line 2: characters not in the vocabulary: '~'"),
        ('{"messages": []}', "line 2: expected"),
    ],
)  # fmt: skip
def test_a_bad_task_line_is_one_error_naming_it(tmp_path, chat_tokenizer, line, message):
    (tmp_path / "tasks.jsonl").write_text(json.dumps(tasks(8)[0]) + "\n" + line + "\n")
    with pytest.raises(DataError, match="tasks.jsonl " + message.replace("(", r"\(")):
        prepare_tuning(Tasks(), tmp_path / "tasks.jsonl", tmp_path / "data", chat_tokenizer, BLOCK)
    assert not (tmp_path / "data").exists()


def grpo_plan(data, out, base, steps, **extra):
    settings = {"max_steps": steps, "decay_steps": 16, "batch_size": 4, "group_size": 6, "eval_interval": 8,
                "device": "cpu", "lr": 1e-2, "warmup_steps": 0, "objective": "grpo", "optimizer": "adamw",
                "max_reply_tokens": 4, "reward": "vowel_reward:first_is_vowel", **extra}  # fmt: skip
    overrides = [f"{key}={value}" for key, value in settings.items()]
    return plan_run(data, out, overrides=overrides, init_from=None if out.exists() else str(base), resume=out.exists())


@pytest.fixture
def vowel_tasks(tmp_path, chat_tokenizer, monkeypatch):
    """Task data whose reward, a user's function in the working directory, pays a reply that starts with a vowel."""
    (tmp_path / "vowel_reward.py").write_text(
        "def first_is_vowel(reply, answer):\n    return float(reply[:1] in 'aeiou')\n"
    )
    monkeypatch.chdir(tmp_path)
    write_jsonl(tmp_path / "tasks.jsonl", tasks(32))
    prepare_tuning(Tasks(), tmp_path / "tasks.jsonl", tmp_path / "data", chat_tokenizer, BLOCK, val_fraction=0.25)
    return tmp_path / "data"


def test_grpo_raises_the_reward_and_resumes_exactly(tmp_path, base_run, vowel_tasks):
    carry_out(grpo_plan(vowel_tasks, tmp_path / "straight", base_run, 16, kl_coef=0.05), progress=False)
    records = [json.loads(line) for line in (tmp_path / "straight" / "metrics.jsonl").read_text().splitlines()]
    steps = [r for r in records if "loss" in r]
    evals = [r for r in records if "val_loss" in r]
    assert {"reward", "kl", "clipped", "reply_tokens"} <= set(steps[0])
    assert steps[0]["kl"] == 0.0 and steps[-1]["kl"] > 0
    early = sum(r["reward"] for r in steps[:4]) / 4
    late = sum(r["reward"] for r in steps[-4:]) / 4
    assert late > early + 0.15 and evals[-1]["val_pass_at_1"] >= 0.5, (early, late)
    assert evals[-1]["val_pass_at_1"] == pytest.approx(1 - evals[-1]["val_loss"])
    carry_out(grpo_plan(vowel_tasks, tmp_path / "resumed", base_run, 8, kl_coef=0.05), progress=False)
    carry_out(grpo_plan(vowel_tasks, tmp_path / "resumed", base_run, 16, kl_coef=0.05), progress=False)
    assert_same_weights(tmp_path / "straight", tmp_path / "resumed")


def test_a_failing_reward_function_is_named(tmp_path, base_run, chat_tokenizer, monkeypatch):
    (tmp_path / "bad_reward.py").write_text("def broken(reply, answer):\n    return 1 / 0\n")
    monkeypatch.chdir(tmp_path)
    write_jsonl(tmp_path / "tasks.jsonl", tasks(16))
    prepare_tuning(Tasks(), tmp_path / "tasks.jsonl", tmp_path / "data", chat_tokenizer, BLOCK)
    plan = grpo_plan(tmp_path / "data", tmp_path / "run", base_run, 2, reward="bad_reward:broken")
    with pytest.raises(
        LucidError, match=r"the reward function failed on the reply .* \(ZeroDivisionError: division by zero\)"
    ):
        carry_out(plan, progress=False)
    assert not (tmp_path / "run").exists()


def test_replayed_chat_data_is_learned_beside_the_rewards_and_resumes_exactly(
    tmp_path, base_run, chat_tokenizer, vowel_tasks
):
    spelled = [conversation(f"Spell {word}.", " ".join(word)) for word in ["cat", "dog"] * 16]
    write_jsonl(tmp_path / "sft.jsonl", spelled)
    prepare_tuning(Conversations(), tmp_path / "sft.jsonl", tmp_path / "sft", chat_tokenizer, BLOCK)
    replay = {"replay_data": str(tmp_path / "sft"), "replay_coef": 2.0}
    carry_out(grpo_plan(vowel_tasks, tmp_path / "straight", base_run, 12, **replay), progress=False)
    steps = [json.loads(line) for line in (tmp_path / "straight" / "metrics.jsonl").read_text().splitlines()]
    replay_losses = [r["replay_loss"] for r in steps if "loss" in r]
    assert len(replay_losses) == 12 and replay_losses[-1] < 0.5 * replay_losses[0], replay_losses
    carry_out(grpo_plan(vowel_tasks, tmp_path / "resumed", base_run, 6, **replay), progress=False)
    carry_out(grpo_plan(vowel_tasks, tmp_path / "resumed", base_run, 12, **replay), progress=False)
    assert_same_weights(tmp_path / "straight", tmp_path / "resumed")


def test_replay_data_must_be_text_or_chat_in_the_same_tokens(tmp_path, base_run, chat_tokenizer):
    write_jsonl(tmp_path / "tasks.jsonl", tasks(16))
    prepare_tuning(Tasks(), tmp_path / "tasks.jsonl", tmp_path / "data", chat_tokenizer, BLOCK)
    prepare_tuning(Tasks(), tmp_path / "tasks.jsonl", tmp_path / "tasks-again", chat_tokenizer, BLOCK)
    write_jsonl(tmp_path / "sft.jsonl", [conversation("Say ~.", "~")] * 20)
    wider = CharTokenizer.train([ALPHABET + "~"]).with_special_tokens(CHAT_TOKENS)
    prepare_tuning(Conversations(), tmp_path / "sft.jsonl", tmp_path / "wider", wider, BLOCK)
    for replay, message in [
        ("missing", "missing is not a prepared data directory; prepare it with `lucidlm data prepare`"),
        ("tasks-again", "tasks-again holds tasks; replay text or chat data"),
        ("wider", "wider was prepared with another tokenizer than .*data; prepare it with --tokenizer-from"),
    ]:
        with pytest.raises(ConfigError, match=f"replay_data=.*{message}"):
            grpo_plan(tmp_path / "data", tmp_path / "run", base_run, 2, replay_data=str(tmp_path / replay))
    with pytest.raises(ConfigError, match="replay_data is for objective=dpo or grpo; to train next-token on two"):
        grpo_plan(tmp_path / "data", tmp_path / "run", base_run, 2, replay_data="x", objective="next_token")
    assert not (tmp_path / "run").exists()


def test_grpo_settings_that_cannot_fit_are_refused_before_training(tmp_path, base_run, vowel_tasks):
    """A group's replies count in the memory a step needs, and a reply must fit the window beside its prompt."""
    cases = [
        ({"group_size": 10**9}, r"batch_size=4 prompts with group_size=1000000000 replies each .* lower one of them"),
        ({"group_size": 100000, "batch_size": 100}, r"group_size=100000 replies each of 48 tokens needs about"),
        (
            {"max_reply_tokens": 100000},
            r"max_reply_tokens=100000 cannot fit in the window of block_size=48 .* at most 47",
        ),
    ]
    for settings, message in cases:
        with pytest.raises(ConfigError, match=message):
            grpo_plan(vowel_tasks, tmp_path / "run", base_run, 2, **settings)
        assert not (tmp_path / "run").exists()


def test_a_reply_as_long_as_the_window_allows_is_sampled(chat_tokenizer):
    """sample_group reads every token but the last, so a reply may fill the window to its end."""
    torch.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=chat_tokenizer.vocab_size, block_size=16, n_layer=1, n_head=2, n_embd=16)).eval()
    prompt = list(range(10))
    replies = sample_group(model, prompt, 3, 16 + 1 - len(prompt), SamplingConfig(temperature=1.0), None, [])
    assert [len(reply) for reply in replies] == [7, 7, 7]


def test_a_loss_that_a_huge_kl_coef_overflows_names_it(tmp_path, base_run, vowel_tasks):
    with pytest.raises(
        LucidError, match=r"the loss became nan at step \d+; .* kl_coef=1e\+300 overflows the loss; lower"
    ):
        carry_out(grpo_plan(vowel_tasks, tmp_path / "run", base_run, 4, kl_coef=1e300), progress=False)
