"""The server's chat endpoint, through the official `openai` client: a model with lucidlm's chat template gets
its conversation written by that template, and its reply ends at the end-of-turn token."""

import openai
import torch

from lucidlm.model import GPT, GPTConfig
from lucidlm.serve import BackgroundServer, Engine, ServerSettings, create_app
from lucidlm.tokenizers.base import END_OF_TURN
from tests.chat.conftest import one_token_model
from tests.chat.test_repl import reply


def chat(model, tokenizer, messages, max_tokens=10):
    engine = Engine(model, tokenizer, max_batch=4, max_waiting=8)
    app = create_app(model, tokenizer, ServerSettings(model_id="chat", max_tokens=100), engine)
    with BackgroundServer(app) as url:
        client = openai.OpenAI(base_url=f"{url}/v1", api_key="none")
        return client.chat.completions.create(model="chat", messages=messages, max_tokens=max_tokens, temperature=0)


def test_the_reply_is_written_by_the_template_and_ends_at_the_end_of_turn(chat_tokenizer):
    messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}]
    torch.manual_seed(5)
    model = GPT(GPTConfig(vocab_size=chat_tokenizer.vocab_size, block_size=64, n_layer=2, n_head=2, n_embd=32)).eval()
    result = chat(model, chat_tokenizer, messages)
    assert result.choices[0].message.content.strip() == reply(model, chat_tokenizer, messages, 10)
    prompt = "<|system|>Be brief.<|end|><|user|>Hi<|end|><|assistant|>"
    assert result.usage.prompt_tokens == len(chat_tokenizer.encode_with_specials(prompt)) == 1 + 9 + 1 + 1 + 2 + 1 + 1
    ending = one_token_model(chat_tokenizer, chat_tokenizer.special_tokens[END_OF_TURN])
    ended = chat(ending, chat_tokenizer, messages)
    assert ended.choices[0].finish_reason == "stop" and ended.choices[0].message.content == ""
    chatty = one_token_model(chat_tokenizer, chat_tokenizer.encode("a")[0])
    cut = chat(chatty, chat_tokenizer, messages, max_tokens=5)
    assert cut.choices[0].finish_reason == "length" and cut.choices[0].message.content == "aaaaa"
