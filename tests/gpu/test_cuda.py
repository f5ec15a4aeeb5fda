"""The CUDA paths, held to the CPU's numbers. They run where `LUCIDLM_TEST_CUDA=1` is set (`make gpu-check` sets
it) and are skipped elsewhere; asked for on a machine without CUDA, they fail rather than skip."""

import os

import pytest
import torch

from lucidlm.decode import SamplingConfig
from lucidlm.generate import generate_ids
from lucidlm.model import GPT, GPTConfig
from lucidlm.run_config import RunConfig, TrainConfig
from lucidlm.serve import Engine, Request
from lucidlm.tokenizers import CharTokenizer
from lucidlm.train.backends import TorchBackend
from lucidlm.train.distributed import Distributed

ASKED = os.environ.get("LUCIDLM_TEST_CUDA") == "1"
pytestmark = pytest.mark.skipif(not ASKED, reason="CUDA tests run with LUCIDLM_TEST_CUDA=1 (make gpu-check)")
SWITCHES = [
    dict(),
    dict(positions="rope", norm="rmsnorm", mlp="swiglu", n_kv_head=2, qk_norm=True, tie_embeddings=False),
    dict(positions="sinusoidal", mlp="relu2", bias=True),
]


def test_cuda_is_there_when_asked_for():
    assert torch.cuda.is_available(), "LUCIDLM_TEST_CUDA=1 but this PyTorch sees no CUDA GPU"


def model_pair(**switches) -> tuple[GPT, GPT]:
    torch.manual_seed(0)
    config = GPTConfig(vocab_size=50, block_size=32, n_layer=2, n_head=4, n_embd=64, **switches)
    cpu = GPT(config).eval()
    cuda = GPT(config).eval().cuda()
    cuda.load_state_dict(cpu.state_dict())
    return cpu, cuda


@pytest.mark.parametrize("switches", SWITCHES, ids=str)
def test_the_forward_pass_on_cuda_gives_the_cpus_logits(switches):
    cpu, cuda = model_pair(**switches)
    ids = torch.randint(0, 50, (3, 32), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        torch.backends.cuda.matmul.allow_tf32 = False
        torch.testing.assert_close(cuda(ids.cuda())[0].cpu(), cpu(ids)[0], rtol=0, atol=1e-4)
        _, cache = cuda.run_with_cache(ids.cuda(), ["blocks.1.attn.hook_pattern"])
        torch.testing.assert_close(cache["blocks.1.attn.hook_pattern"].sum(-1).cpu(), torch.ones(3, 4, 32))


def test_greedy_decoding_on_cuda_gives_the_cpus_tokens_past_the_window():
    cpu, cuda = model_pair(**SWITCHES[1])
    greedy = SamplingConfig(temperature=0)
    assert list(generate_ids(cuda, [1, 2, 3], 60, greedy)) == list(generate_ids(cpu, [1, 2, 3], 60, greedy))


def test_the_serving_engine_on_cuda_gives_generate_ids_tokens():
    _, cuda = model_pair(**SWITCHES[1])
    tokenizer = CharTokenizer.train(["abcdefghijklmnopqrstuvwxyz ABCDEFGHIJKLMNOPQRSTUVW\n"])
    engine, events = Engine(cuda, tokenizer, max_batch=3), {}
    prompts = [[1, 2], [5], [7, 8, 9], [3]]
    for index, prompt in enumerate(prompts):
        events[index] = []
        engine.submit(Request(prompt, 40, SamplingConfig(0.0), events[index].append))
    engine.run_until_idle()
    for index, prompt in enumerate(prompts):
        assert [e.token for e in events[index]] == list(generate_ids(cuda, prompt, 40, SamplingConfig(0.0)))


@pytest.mark.parametrize("optimizer", ["adamw", "muon"])
def test_a_compiled_bf16_training_step_on_cuda_learns(optimizer):
    model = GPTConfig(vocab_size=50, block_size=32, n_layer=2, n_head=4, n_embd=64, positions="rope")
    train = TrainConfig(batch_size=8, max_steps=1000, lr=3e-3, device="cuda", compile="true", optimizer=optimizer)
    backend = TorchBackend(RunConfig(model, train), torch.device("cuda"), Distributed())
    assert backend.precision == "bf16" and backend.compiled
    ids = torch.arange(33).repeat(8, 1).cuda() % 50  # one repeating text: learnable
    batch = (ids[:, :-1], ids[:, 1:])
    assert backend.compile_now(batch) > 0
    losses = [backend.train_step([batch], 3e-3, 1.0) for _ in range(40)]
    assert losses[-1] < losses[0] / 4
