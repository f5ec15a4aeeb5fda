import pytest
import torch

from lucidlm.model import GPT, GPTConfig
from lucidlm.serve import BackgroundServer, Engine, EngineProcess, ServerSettings, create_app
from lucidlm.tokenizers import CharTokenizer

ALPHABET = "abcdefghijklmnopqrstuvwxyz ABCDEFGHIJKLMNOPQRSTUVWXYZ:.,!?\n"


def tiny_model(seed: int = 0, **switches) -> GPT:
    torch.manual_seed(seed)
    settings = dict(block_size=32, n_layer=2, n_head=2, n_embd=32)
    settings.update(switches)
    return GPT(GPTConfig(vocab_size=len(ALPHABET), **settings)).eval()


@pytest.fixture(scope="session")
def tokenizer() -> CharTokenizer:
    return CharTokenizer.train([ALPHABET])


@pytest.fixture(scope="session")
def model() -> GPT:
    return tiny_model()


@pytest.fixture(scope="session")
def server(model, tokenizer):
    """A live server on a random local port: (base URL, engine)."""
    engine = Engine(model, tokenizer, max_batch=16, max_waiting=64)
    app = create_app(model, tokenizer, ServerSettings(model_id="tiny", max_tokens=200, max_body_bytes=100_000), engine)
    with BackgroundServer(app) as url:
        yield url, engine


@pytest.fixture(scope="module")
def process_server(model, tokenizer):
    """The server as `lucidlm serve` runs it, the engine in a process of its own: (base URL, engine)."""
    engine = EngineProcess(model, tokenizer, max_batch=16, max_waiting=64)
    app = create_app(model, tokenizer, ServerSettings(model_id="tiny", max_tokens=200), engine)
    with BackgroundServer(app) as url:
        yield url, engine
