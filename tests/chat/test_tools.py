"""Tool use: the calculator (arithmetic only, bounded), calls read back from both template forms, tool calls
through lucidlm's template and a Hub template as `transformers` renders them, chat data that learns the calls,
and a model that calls the calculator through the server (the official `openai` client), the chat and eval."""

import contextlib
import io
import json
import re

import httpx
import openai
import pytest
import torch
import transformers

from lucidlm.chat.data import Conversations, encode_conversation, prepare_tuning
from lucidlm.chat.repl import ChatSession
from lucidlm.chat.template import OWN_CHAT_TEMPLATE, chat_prompt, render_template
from lucidlm.chat.tools import (
    CALCULATOR,
    TOOL_TOKENS,
    CallHoldback,
    ToolError,
    built_in_tools,
    calculate,
    parse_tool_calls,
    reply_with_tools,
    template_messages,
    tools_problem,
)
from lucidlm.decode import SamplingConfig
from lucidlm.errors import ConfigError, DataError
from lucidlm.evaluate import TaskRecord, score_tasks
from lucidlm.model import GPT, GPTConfig
from lucidlm.serve import BackgroundServer, Engine, ServerSettings, create_app
from tests.chat.conftest import ALPHABET, write_jsonl
from tests.conftest import run_lucidlm

TOOLS_ALPHABET = ALPHABET + '{}()"*/+-_'


@pytest.mark.parametrize(
    ("expression", "value"),
    [("347*28", "9716"), ("2 + 3 * 4", "14"), ("(2 + 3) * 4", "20"), ("-7 // 2", "-4"), ("7 % 3", "1"),
     ("2 ** 10", "1024"), ("1 / 4", "0.25"), ("10 / 4 * 2", "5"), ("1 / 3", "0.333333333333"), ("-(-2.5)", "2.5"),
     ("9 ** 0.5", "3"), ("2 ** -1", "0.5"), ("123456789 * 987654321", "121932631112635269"),
     # a power's size is its result's: tiny bases and negative powers make small numbers
     ("(-1) ** 1001", "-1"), ("2 ** -1001", "4.66631809252e-302"), ("1 ** 99999", "1"), ("0.5 ** 5000", "0")],
)  # fmt: skip
def test_the_calculator_computes_arithmetic(expression, value):
    assert calculate(expression) == value


@pytest.mark.parametrize(
    ("expression", "says"),
    [("__import__('os').system('true')", "only numbers"), ("open('x')", "only numbers"), ("x + 1", "only numbers"),
     ("(1).__class__", "only numbers"), ("'a' * 3", "only numbers"), ("[1, 2]", "only numbers"),
     ("lambda: 1", "only numbers"), ("1 if 1 else 2", "only numbers"), ("True + 1", "only numbers"),
     ("9 ** 9 ** 9", "the power is too large"), ("2 ** 400", "the power is too large"),
     ("10 ** 99 * 10 ** 99", "grew past 100 digits"), ("1e308 * 10", "not a finite number"),
     ("1 / 0", "division by zero"),
     # real numbers only: a complex result is an error, wherever it appears
     ("(-8) ** 0.5", "not a real number"), ("2 ** ((-8) ** 0.5)", "not a real number"),
     ("((-1) ** 0.5) // 1", "not a real number"), ("((-1) ** 0.5) % 2", "not a real number"),
     ("(-8) ** (1 / 3) * 2", "not a real number"), ("0 ** -1", "division by zero"), ("(0.5) ** -2000", "out of range"),
     ("1 +", "is not an arithmetic expression"), ("1" * 201, "longer than 200 characters"), ("", "give an arithmetic"),
     ("(" * 150 + "1" + ")" * 150, "longer than 200"), ("(" * 99 + "1" + ")" * 99, "")],
)  # fmt: skip
def test_the_calculator_refuses_what_is_not_arithmetic_and_bounds_what_it_computes(expression, says):
    if not says:  # deep but short nesting: parsed or refused, never a crash
        with contextlib.suppress(ToolError):
            assert calculate(expression) == "1"
        return
    with pytest.raises(ToolError, match=says):
        calculate(expression)


def test_calls_are_read_back_from_both_forms_and_malformed_ones_stay_text():
    content, calls = parse_tool_calls('Let me see.<|call|>calculator({"expression": "3*4"})')
    assert content == "Let me see." and [(c.name, c.arguments) for c in calls] == [
        ("calculator", {"expression": "3*4"})
    ]
    text = '<tool_call>\n{"name": "calculator", "arguments": {"expression": "1+1"}}\n</tool_call>\n<tool_call>\n' \
           '{"name": "f", "arguments": "{\\"a\\": 1}"}\n</tool_call>'  # fmt: skip
    content, calls = parse_tool_calls(text)
    assert content == "" and [(c.name, c.arguments) for c in calls] == [
        ("calculator", {"expression": "1+1"}),
        ("f", {"a": 1}),
    ]
    message = calls[0].message()
    assert message["type"] == "function" and json.loads(message["function"]["arguments"]) == {"expression": "1+1"}
    assert message["id"].startswith("call_") and message["id"] != calls[1].message()["id"]
    for malformed in [
        '<|call|>calculator({"expression": ',
        "<|call|>calculator(3*4)",
        "<tool_call>{not json}</tool_call>",
    ]:
        assert parse_tool_calls(malformed) == (malformed, [])
    assert parse_tool_calls("12") == ("12", [])


def test_a_streamed_reply_holds_back_its_calls_until_the_end():
    holdback = CallHoldback()
    pieces = ["Sure", ". <", "|call|", ">calculator(", '{"expression": "2*3"})']
    out = "".join(holdback.push(piece) for piece in pieces)
    rest, calls = holdback.finish()
    assert out == "Sure. " and rest == "" and calls[0].arguments == {"expression": "2*3"}
    plain = CallHoldback()
    out = "".join(plain.push(piece) for piece in ["a <", "b"])
    assert out + plain.finish()[0] == "a <b" and plain.finish()[1] == []


CONVERSATION = [
    {"role": "user", "content": "What is 3 times 4?"},
    {"role": "assistant", "content": None, "tool_calls": [{"id": "call_1", "type": "function",
     "function": {"name": "calculator", "arguments": '{"expression": "3*4"}'}}]},
    {"role": "tool", "tool_call_id": "call_1", "content": "12"},
    {"role": "assistant", "content": "12"},
]  # fmt: skip

# A Hub template in the Hermes form that Qwen's templates use: the tools' JSON in the system turn, calls in
# <tool_call> tags, results in the user's turn in <tool_response> tags (written for this test).
HERMES_TEMPLATE = (
    "{% if tools %}<|im_start|>system\n# Tools\n<tools>{% for tool in tools %}\n{{ tool | tojson }}{% endfor %}"
    "\n</tools><|im_end|>\n{% endif %}"
    "{% for message in messages %}"
    "{% if message.role == 'tool' %}<|im_start|>user\n<tool_response>\n{{ message.content }}\n</tool_response>"
    "<|im_end|>\n"
    "{% elif message.role == 'assistant' %}<|im_start|>assistant\n{{ message.content or '' }}"
    '{% for call in message.tool_calls or [] %}<tool_call>\n{"name": "{{ call.function.name }}", '
    '"arguments": {{ call.function.arguments | tojson }}}\n</tool_call>{% endfor %}<|im_end|>\n'
    "{% else %}<|im_start|>{{ message.role }}\n{{ message.content }}<|im_end|>\n{% endif %}{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def hub_like_tokenizer(template: str, specials: list[str]) -> transformers.PreTrainedTokenizerFast:
    import tokenizers
    from tokenizers import models, pre_tokenizers

    backend = tokenizers.Tokenizer(models.WordLevel({c: i for i, c in enumerate(TOOLS_ALPHABET + "<>|:#[],=\n")},
                                                    unk_token=" "))  # fmt: skip
    backend.pre_tokenizer = pre_tokenizers.Split("", behavior="isolated")
    backend.add_special_tokens(specials)
    return transformers.PreTrainedTokenizerFast(tokenizer_object=backend, eos_token=specials[0], chat_template=template)


@pytest.mark.parametrize("template", [OWN_CHAT_TEMPLATE, HERMES_TEMPLATE])
def test_tool_calls_round_trip_through_a_template_as_transformers_renders_it(template):
    own = ["<|end|>", "<|user|>", "<|assistant|>", "<|system|>", *TOOL_TOKENS]
    specials = own if template == OWN_CHAT_TEMPLATE else ["<|im_end|>", "<|im_start|>"]
    theirs = hub_like_tokenizer(template, specials)
    for add_generation_prompt, messages in ((False, CONVERSATION), (True, CONVERSATION[:1]), (True, CONVERSATION[:3])):
        # transformers asks its callers for a call's arguments as a dictionary, which lucidlm hands the template
        expected = theirs.apply_chat_template(template_messages(messages), tools=[CALCULATOR], tokenize=False,
                                              add_generation_prompt=add_generation_prompt)  # fmt: skip
        assert render_template(template, messages, add_generation_prompt, tools=[CALCULATOR]) == expected
    # what the template writes for the assistant's call, read back as the model's reply, is the same call
    before = render_template(template, CONVERSATION[:1], True, tools=[CALCULATOR])
    through = render_template(template, CONVERSATION[:2], False, tools=[CALCULATOR])
    written = through[len(before) :].removesuffix("\n").removesuffix(specials[0])
    _, calls = parse_tool_calls(written)
    assert [(c.name, c.arguments) for c in calls] == [("calculator", {"expression": "3*4"})]


def test_lucidlm_template_writes_tools_as_signatures_and_calls_compactly():
    text = render_template(OWN_CHAT_TEMPLATE, CONVERSATION, False, tools=[CALCULATOR])
    assert text == (
        "<|system|>calculator(expression: string): Arithmetic<|end|><|user|>What is 3 times 4?<|end|>"
        '<|assistant|><|call|>calculator({"expression": "3*4"})<|end|><|tool|>12<|end|><|assistant|>12<|end|>'
    )
    # without tools, a conversation is written as it always was
    plain = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}]
    assert render_template(OWN_CHAT_TEMPLATE, plain, True) == "<|system|>Be brief.<|end|><|user|>Hi<|end|><|assistant|>"


@pytest.fixture
def tool_tokenizer(chat_tokenizer):
    from lucidlm.tokenizers import CharTokenizer

    return CharTokenizer.train([TOOLS_ALPHABET]).with_special_tokens([*chat_tokenizer.special_tokens, *TOOL_TOKENS])


def test_chat_data_learns_the_calls_and_the_answer_but_not_the_tools_results(tmp_path, chat_tokenizer, tool_tokenizer):
    ids, mask, _ = encode_conversation(tool_tokenizer, CONVERSATION, [CALCULATOR])
    learned = tool_tokenizer.decode([t for t, m in zip(ids, mask, strict=True) if m])
    assert learned == '<|call|>calculator({"expression": "3*4"})<|end|>12<|end|>'
    # a base model's tokenizer gets the tool tokens with the turn tokens, where the data calls tools
    from lucidlm.tokenizers import CharTokenizer

    base = CharTokenizer.train([TOOLS_ALPHABET])
    write_jsonl(tmp_path / "chat.jsonl", [{"messages": CONVERSATION, "tools": [CALCULATOR]}] * 10)
    prepare_tuning(Conversations(), tmp_path / "chat.jsonl", tmp_path / "data", base, 160)
    from lucidlm.tokenizers import load_tokenizer

    assert set(TOOL_TOKENS) <= set(load_tokenizer(tmp_path / "data" / "tokenizer.json").special_tokens)
    bad = {"messages": [CONVERSATION[0], {"role": "assistant", "content": None, "tool_calls": [{"function": {}}]}]}
    write_jsonl(tmp_path / "bad.jsonl", [{"messages": CONVERSATION}, bad])
    with pytest.raises(DataError, match=r"bad.jsonl line 2: message 2: tool_calls\[0\] is not"):
        prepare_tuning(Conversations(), tmp_path / "bad.jsonl", tmp_path / "data2", base, 160)
    with pytest.raises(ConfigError, match="this model has no <|tool|> or <|call|> token: it was not fine-tuned"):
        chat_prompt(chat_tokenizer, CONVERSATION[:1], [CALCULATOR])


@pytest.fixture(scope="module")
def calling_model():
    """A tiny model taught one conversation by heart: asked for 3 times 4 with the calculator offered, it calls
    it, and given the result, it answers 12."""
    from lucidlm.tokenizers import CharTokenizer

    tokenizer = CharTokenizer.train([TOOLS_ALPHABET]).with_special_tokens(
        ["<|system|>", "<|user|>", "<|assistant|>", "<|end|>", *TOOL_TOKENS]
    )
    ids, mask, _ = encode_conversation(tokenizer, CONVERSATION, [CALCULATOR])
    torch.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=tokenizer.vocab_size, block_size=128, n_layer=2, n_head=2, n_embd=48))
    x = torch.tensor([ids[:-1]])
    y = torch.tensor([[t if m else -1 for t, m in zip(ids[1:], mask[1:], strict=True)]])
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    for _ in range(300):
        loss = model(x, y)[1]
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    assert loss.item() < 0.01
    return model.eval(), tokenizer


def test_the_server_returns_tool_calls_to_the_official_client_and_reads_the_results(calling_model):
    model, tokenizer = calling_model
    app = create_app(model, tokenizer, ServerSettings(model_id="m"), Engine(model, tokenizer))
    with BackgroundServer(app) as url:
        client = openai.OpenAI(base_url=f"{url}/v1", api_key="unused", max_retries=0)
        asked = [CONVERSATION[0]]
        first = client.chat.completions.create(
            model="m", messages=asked, tools=[CALCULATOR], temperature=0, max_tokens=60
        )
        choice = first.choices[0]
        assert choice.finish_reason == "tool_calls" and choice.message.content is None
        call = choice.message.tool_calls[0]
        assert call.type == "function" and call.function.name == "calculator"
        assert json.loads(call.function.arguments) == {"expression": "3*4"}
        # the client runs the tool, as the API intends, and sends the result back
        history = [*asked, choice.message.model_dump(exclude_none=True),
                   {"role": "tool", "tool_call_id": call.id, "content": calculate("3*4")}]  # fmt: skip
        second = client.chat.completions.create(
            model="m", messages=history, tools=[CALCULATOR], temperature=0, max_tokens=10
        )
        assert second.choices[0].message.content == "12" and second.choices[0].finish_reason == "stop"
        # streamed: the call arrives as tool_calls deltas, which the client puts together
        stream = client.chat.completions.create(model="m", messages=asked, tools=[CALCULATOR], temperature=0,
                                                max_tokens=60, stream=True)  # fmt: skip
        content, calls, finish = "", {}, None
        for chunk in stream:
            delta = chunk.choices[0].delta
            content += delta.content or ""
            for piece in delta.tool_calls or []:
                calls.setdefault(piece.index, {"name": "", "arguments": ""})
                calls[piece.index]["name"] += piece.function.name or ""
                calls[piece.index]["arguments"] += piece.function.arguments or ""
            finish = chunk.choices[0].finish_reason or finish
        assert content == "" and finish == "tool_calls"
        assert calls == {0: {"name": "calculator", "arguments": '{"expression": "3*4"}'}}
        # tool_choice "none": no tools offered, no calls read
        plain = client.chat.completions.create(model="m", messages=asked, tools=[CALCULATOR], tool_choice="none",
                                               temperature=0, max_tokens=5)  # fmt: skip
        assert plain.choices[0].message.tool_calls is None


def test_chat_and_eval_run_the_calculator_themselves(calling_model):
    model, tokenizer = calling_model
    session = ChatSession(model, tokenizer, SamplingConfig(temperature=0), 60, tools=["calculator"])
    out = io.StringIO()
    answer = session.reply("What is 3 times 4?", out.write)
    assert answer == "12" and "[12]" in out.getvalue()
    assert [turn["role"] for turn in session.turns] == ["user", "assistant", "tool", "assistant"]
    assert session.turns[1]["tool_calls"][0]["function"]["name"] == "calculator"
    records = [TaskRecord("times", [CONVERSATION[0]], "12")]
    with_tool = score_tasks(model, tokenizer, records, 60, progress=False, tools=["calculator"])
    assert with_tool["all"]["exact_match"] == 1.0
    call, result = with_tool["replies"][0]["tool_turns"]
    assert result == {"role": "tool", "tool_call_id": call["tool_calls"][0]["id"], "content": "12"}
    with pytest.raises(ConfigError, match="no built-in tool search; the tools are: calculator"):
        ChatSession(model, tokenizer, SamplingConfig(), tools=["search"])


def test_a_model_that_keeps_calling_stops_after_the_rounds_allowed():
    asked = []

    def respond(messages):
        asked.append(len(messages))
        return '<|call|>calculator({"expression": "1+1"})'

    text, added = reply_with_tools(
        respond, [{"role": "user", "content": "go"}], {"calculator": lambda a: "2"}, rounds=2
    )
    assert asked == [1, 3, 5] and text.startswith("<|call|>") and len(added) == 5


def test_no_tool_error_ends_a_reply():
    """A call whose tool fails (the calculator's domain, or a tool's own bug) is read back as an error result."""
    calls = iter(['<|call|>calculator({"expression": "2**((-8)**0.5)"})', "<|call|>broken({})", "done"])
    _, functions = built_in_tools(["calculator"])

    def broken(arguments: dict) -> str:
        raise TypeError("unsupported operand")

    text, added = reply_with_tools(lambda _: next(calls), [{"role": "user", "content": "go"}],
                                   {**functions, "broken": broken})  # fmt: skip
    results = [turn["content"] for turn in added if turn["role"] == "tool"]
    assert text == "done" and results == [
        "error: the result is not a real number (the calculator works in real numbers)",
        "error: the tool broken failed (TypeError: unsupported operand)",
    ]


@pytest.mark.parametrize(
    ("parameter", "problem"),
    [({"type": 5}, 'parameter "q" has "type" 5; use one of string, number'),
     ({"type": ["string", 3]}, 'has "type" ["string", 3]'), ({"type": "text"}, 'has "type" "text"'),
     ({"type": []}, 'has "type" []'), ("string", 'parameter "q" must be a JSON Schema object'),
     ({"type": "string", "description": 5}, 'parameter "q"\'s "description" must be text')],
)  # fmt: skip
def test_invalid_tool_schemas_are_named(tmp_path, chat_tokenizer, parameter, problem):
    tool = {"type": "function", "function": {"name": "look", "parameters": {"properties": {"q": parameter}}}}
    assert problem in tools_problem([tool])
    write_jsonl(tmp_path / "chat.jsonl", [{"messages": CONVERSATION, "tools": [tool]}])
    with pytest.raises(DataError, match=r"chat\.jsonl line 1: .*" + re.escape(problem)):
        prepare_tuning(Conversations(), tmp_path / "chat.jsonl", tmp_path / "data", chat_tokenizer, 64, progress=False)
    assert not (tmp_path / "data").exists()


def test_an_invalid_tool_schema_is_one_line_from_the_command_line(tmp_path, base_run):
    tool = {"type": "function", "function": {"name": "look", "parameters": {"properties": {"q": {"type": 5}}}}}
    write_jsonl(tmp_path / "chat.jsonl", [{"messages": CONVERSATION, "tools": [tool]}])
    result = run_lucidlm("data", "prepare", "--chat", tmp_path / "chat.jsonl", "--tokenizer-from", base_run,
                         "--out", tmp_path / "data")  # fmt: skip
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert 'line 1: tools[0]\'s parameter "q" has "type" 5' in result.stderr and not (tmp_path / "data").exists()


@pytest.mark.parametrize("description", [5, ["a"]])
def test_a_tool_description_must_be_text(description):
    tool = {"type": "function", "function": {"name": "look", "description": description}}
    assert tools_problem([tool]) == 'tools[0]\'s "description" must be text'


def test_valid_schemas_are_served_and_invalid_ones_are_400s(calling_model):
    model, tokenizer = calling_model
    app = create_app(model, tokenizer, ServerSettings(model_id="m"), Engine(model, tokenizer))
    nullable = {"type": "function", "function": {"name": "look", "description": "looks",
                "parameters": {"type": "object", "properties": {"q": {"type": ["string", "null"]}}}}}  # fmt: skip
    assert "look(q: string or null): looks" in render_template(OWN_CHAT_TEMPLATE, CONVERSATION[:1], tools=[nullable])
    with BackgroundServer(app) as url:

        def ask(tool: dict) -> httpx.Response:
            body = {"model": "m", "messages": CONVERSATION[:1], "tools": [tool], "max_tokens": 2}
            return httpx.post(f"{url}/v1/chat/completions", json=body)

        assert ask(nullable).status_code == 200, ask(nullable).text
        for bad in ({"type": 5}, {"type": "string", "description": ["a"]}):
            tool = json.loads(json.dumps(nullable))
            tool["function"]["parameters"]["properties"]["q"] = bad
            answer = ask(tool)
            assert answer.status_code == 400 and answer.json()["error"]["param"] == "tools", answer.text
        tool = json.loads(json.dumps(nullable))
        tool["function"]["description"] = 5
        assert ask(tool).status_code == 400
