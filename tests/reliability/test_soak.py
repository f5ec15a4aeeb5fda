"""The server soak: 1,000 well-formed requests from 16 concurrent clients, some of them streaming and some
hanging up early. Zero errors, and memory flat. Only in `make soak` (LUCIDLM_SOAK=1): it takes minutes."""

import asyncio
import os
import random
import resource

import httpx
import pytest

pytestmark = pytest.mark.skipif(not os.environ.get("LUCIDLM_SOAK"), reason="the soak runs in `make soak`")
REQUESTS, CLIENTS = 1000, 16


def resident_mib() -> float:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def test_a_thousand_requests_from_sixteen_clients(server):
    url, engine = server
    errors, memory = [], []

    async def client(number: int, http: httpx.AsyncClient, queue: asyncio.Queue) -> None:
        rng = random.Random(number)
        while not queue.empty():
            index = queue.get_nowait()
            body = dict(model="tiny", prompt="Hello", max_tokens=rng.randint(1, 40), temperature=1.0, seed=index)
            try:
                if rng.random() < 0.5:
                    async with http.stream("POST", f"{url}/v1/completions", json={**body, "stream": True}) as response:
                        if response.status_code != 200:
                            errors.append((index, response.status_code))
                        async for _line in response.aiter_lines():
                            if rng.random() < 0.05:
                                break  # hang up mid-stream
                else:
                    response = await http.post(f"{url}/v1/completions", json=body)
                    if response.status_code != 200 or not response.json()["choices"]:
                        errors.append((index, response.status_code))
            except httpx.HTTPError as exc:
                errors.append((index, repr(exc)))
            if index % 100 == 0:
                memory.append(resident_mib())

    async def run() -> None:
        queue: asyncio.Queue[int] = asyncio.Queue()
        for index in range(REQUESTS):
            queue.put_nowait(index)
        async with httpx.AsyncClient(timeout=120, limits=httpx.Limits(max_connections=CLIENTS)) as http:
            await asyncio.gather(*(client(n, http, queue) for n in range(CLIENTS)))

    asyncio.run(run())
    assert errors == []
    assert memory[-1] - memory[1] < 50, memory  # MiB; the first 100 requests warm the allocator up
    for _ in range(200):
        if engine.load() == (0, 0):
            break
        asyncio.run(asyncio.sleep(0.05))
    assert engine.load() == (0, 0)
    print(f"soak: {REQUESTS} requests, 0 errors, resident memory {memory[1]:.0f} -> {memory[-1]:.0f} MiB")
