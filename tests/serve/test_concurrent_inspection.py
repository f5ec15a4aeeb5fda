"""Inspections of one model at once (issue 47): each request gets the answer it gets alone.

The hooks of a forward pass belong to that call (model/hooks.py), not to the model, so the inspector's requests,
each in a thread of its own, and decoding beside them cannot see each other's hooks.
"""

import threading

import httpx

from lucidlm.lens import ablation, logit_lens

TEXT = "Hello there, friend"
REQUESTS = [
    ("/api/lens", {"text": TEXT, "top": 3}),
    ("/api/heads", {"text": TEXT}),
    ("/api/explain", {"text": TEXT, "position": 5, "layer": 1, "head": 1}),
    ("/api/attention", {"text": TEXT}),
    ("/v1/completions", {"model": "tiny", "prompt": "Hello", "max_tokens": 8, "temperature": 0}),
]
ROUNDS = 12  # each of the 10 threads sends each request this often


def test_concurrent_inspector_requests_each_get_the_answer_they_get_alone(server):
    url, _ = server
    alone = {}
    for path, body in REQUESTS:
        answer = httpx.post(f"{url}{path}", json=body, timeout=60)
        assert answer.status_code == 200, answer.text
        alone[path] = strip_ids(answer.json())
    failures: list[str] = []

    def client(offset: int) -> None:
        with httpx.Client(base_url=url, timeout=60) as http:
            for n in range(ROUNDS * len(REQUESTS)):
                path, body = REQUESTS[(n + offset) % len(REQUESTS)]
                answer = http.post(path, json=body)
                if answer.status_code != 200:
                    failures.append(f"{path}: {answer.status_code} {answer.text[:200]}")
                elif not same(strip_ids(answer.json()), alone[path]):
                    failures.append(f"{path}: 200 with another answer than alone")

    threads = [threading.Thread(target=client, args=(i,)) for i in range(10)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert failures == [], f"{len(failures)} of {10 * ROUNDS * len(REQUESTS)} requests: {failures[:5]}"


def same(a: object, b: object) -> bool:
    """Equal JSON, numbers to float rounding (the wrong answers this catches were off by up to 0.705)."""
    if isinstance(a, float) or isinstance(b, float):
        return isinstance(a, int | float) and isinstance(b, int | float) and abs(a - b) <= 1e-5
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b, strict=True))
    return a == b


def strip_ids(answer: dict) -> dict:
    """The answer less what differs between two equal completions (their id and time)."""
    return {k: v for k, v in answer.items() if k not in ("id", "created")}


def test_threads_running_hooks_on_one_model_see_only_their_own(model):
    """The library itself, without the server: the lens (which reads) and ablations (which replace) in 8
    threads, each on a text of its own."""
    texts = [[(i * 7 + j) % 20 for j in range(4 + i)] for i in range(8)]
    analyses = [logit_lens if index % 2 else ablation for index in range(8)]
    alone = [analysis(model, ids) for analysis, ids in zip(analyses, texts, strict=True)]
    results: dict[int, list] = {}

    def worker(index: int) -> None:
        results[index] = [analyses[index](model, texts[index]) for _ in range(10)]

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    for index, answers in results.items():
        assert all(answer == alone[index] for answer in answers), index
