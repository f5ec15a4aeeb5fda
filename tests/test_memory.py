import platform
import subprocess
import sys

import pytest

# Ten nanogpt-baby training steps after ten of warm-up, in a fresh process (malloc's settings are process-wide);
# prints the minor page faults per step.
STEPS = """
import resource, sys, torch
from lucidlm.run_config import resolve_config
from lucidlm.memory import keep_freed_memory
from lucidlm.model import GPT
if sys.argv[1] == "keep":
    assert keep_freed_memory()
torch.manual_seed(0)
config = resolve_config("nanogpt-baby", overrides=["vocab_size=65"])
model = GPT(config.model)
optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
x = torch.randint(0, 65, (12, 64))
def step():
    model(x, x)[1].backward()
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
for _ in range(10):
    step()
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(10):
    step()
print((resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before) / 10)
"""


def faults_per_step(mode: str) -> float:
    result = subprocess.run([sys.executable, "-c", STEPS, mode], capture_output=True, text=True, check=True)
    return float(result.stdout)


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="mallopt is glibc's")
def test_keep_freed_memory_stops_the_training_step_page_faulting():
    # Three processes of each: how much glibc gives back by default varies from run to run (270 to 1,200 faults
    # a step were seen), so the test compares the most of the one with the least of the other.
    default = max(faults_per_step("default") for _ in range(3))
    kept = min(faults_per_step("keep") for _ in range(3))
    # glibc's defaults give back and fault in the activations every step (hundreds of pages); kept, almost none
    assert default > 200
    assert kept < default / 10
