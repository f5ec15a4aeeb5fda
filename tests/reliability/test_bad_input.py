"""Fuzzed and abusive input: always a clear LucidError (or the right 4xx), never a traceback or a hang."""

import json
import math
import shutil
import socket
import time

import httpx
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from safetensors.torch import save_file

from lucidlm.errors import LucidError
from lucidlm.load import load_model
from lucidlm.tokenizers import BPETokenizer, CharTokenizer, load_tokenizer
from lucidlm.train import train

from ..conftest import tiny_config

JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=5),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=6), children, max_size=4),
    max_leaves=12,
)


def valid_tokenizer_files() -> list[dict]:
    bpe = BPETokenizer.train(["hello world, hello there"] * 3, vocab_size=270)
    return [CharTokenizer.train(["hello world"]).to_dict(), bpe.to_dict()]


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(which=st.integers(0, 1), path=st.lists(st.text(max_size=8), min_size=1, max_size=3), value=JSON_VALUES)
def test_tampered_tokenizer_json_is_refused_or_loaded(tmp_path, which, path, value):
    """Replace one key anywhere in a real tokenizer.json by random JSON: it loads, or a LucidError says why."""
    data = valid_tokenizer_files()[which]
    node = data
    for key in path[:-1]:
        child = node.get(key) if isinstance(node, dict) else None
        if not isinstance(child, dict):
            break
        node = child
    node[path[-1] if isinstance(node, dict) else 0] = value
    file = tmp_path / "tokenizer.json"
    file.write_text(json.dumps(data))
    try:
        tokenizer = load_tokenizer(file)
    except LucidError:
        return
    try:  # what loads must work, or say clearly why it cannot encode
        ids = tokenizer.encode("hello")
    except LucidError:
        return
    tokenizer.decode(ids)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.binary(max_size=200))
def test_random_bytes_as_tokenizer_json_are_a_clear_error(tmp_path, data):
    file = tmp_path / "tokenizer.json"
    file.write_bytes(data)
    with pytest.raises(LucidError):
        load_tokenizer(file)


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory):
    from lucidlm.data import Source, prepare

    root = tmp_path_factory.mktemp("run")
    (root / "text.txt").write_text("To be, or not to be, that is the question.\n" * 50)
    prepare([Source(root / "text.txt", "text")], root / "data", "char", progress=False)
    train(root / "data", root / "run", tiny_config(20, max_steps=4), progress=False)
    return root / "run"


@pytest.mark.parametrize("damage", ["truncated", "empty", "wrong shape", "missing tensor", "config type"])
def test_damaged_checkpoints_are_clear_errors(tmp_path, trained_run, damage):

    run = tmp_path / "run"
    shutil.copytree(trained_run, run)
    manifest = json.loads((run / "latest.json").read_text())
    weights = run / manifest["checkpoint"] / "model.safetensors"
    if damage == "truncated":
        weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    elif damage == "empty":
        weights.write_bytes(b"")
    elif damage in ("wrong shape", "missing tensor"):
        from safetensors.torch import load_file

        tensors = load_file(weights)
        name = "transformer.wte.weight"
        if damage == "wrong shape":
            tensors[name] = torch.zeros(3, 3)
        else:
            del tensors[name]
        save_file(tensors, weights)
    else:
        config = json.loads((run / "config.json").read_text())
        config["model"]["n_layer"] = "two"
        (run / "config.json").write_text(json.dumps(config))
    with pytest.raises(LucidError):
        load_model(run, "latest")


def test_server_abuse_gets_4xx_and_the_server_keeps_serving(server):
    url, engine = server
    post = lambda body, **kw: httpx.post(f"{url}/v1/completions", content=body, timeout=30, **kw)  # noqa: E731
    base = {"model": "tiny", "prompt": "Hello", "max_tokens": 4}
    cases = {
        "NaN temperature": (json.dumps({**base, "temperature": math.nan}), 400),
        "infinite top_p": (json.dumps({**base, "top_p": math.inf}), 400),
        "negative max_tokens": (json.dumps({**base, "max_tokens": -5}), 400),
        "huge max_tokens": (json.dumps({**base, "max_tokens": 10**12}), 400),
        "max_tokens a string": (json.dumps({**base, "max_tokens": "many"}), 422),
        "prompt a dict": (json.dumps({**base, "prompt": {"a": 1}}), 422),
        "stop a number": (json.dumps({**base, "stop": 5}), 422),
        "truncated JSON": ('{"model": "tiny", "prompt": "He', 400),
        "not an object": ("[1, 2, 3]", 400),
        "not UTF-8": (b"\xff\xfe{}", 400),
        "ten megabytes": (b"{" + b" " * 10_000_000 + b"}", 413),
        "five stop strings": (json.dumps({**base, "stop": ["a", "b", "c", "d", "e"]}), 400),
        "empty prompt list": (json.dumps({**base, "prompt": []}), 400),
    }
    for name, (body, status) in cases.items():
        response = post(body)
        assert response.status_code == status, (name, response.text)
        assert set(response.json()["error"]) == {"message", "type", "param", "code"}, name
    ok = post(json.dumps(base))
    assert ok.status_code == 200 and ok.json()["usage"]["completion_tokens"] == 4
    assert engine.load() == (0, 0)


def test_slow_and_stalled_clients_do_not_hold_up_the_others(server):
    """A client that sends half its body and waits, and one that asks for a long stream and never reads it:
    requests from everyone else are answered meanwhile, and the stalled stream's row is freed when it hangs up."""
    url, engine = server
    host, port = url.removeprefix("http://").split(":")
    body = json.dumps({"model": "tiny", "prompt": "Hello", "max_tokens": 200, "stream": True}).encode()
    head = f"POST /v1/completions HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\n"
    half_sent = socket.create_connection((host, int(port)))
    half_sent.sendall(f"{head}Content-Length: {len(body)}\r\n\r\n".encode() + body[: len(body) // 2])
    never_reads = socket.create_connection((host, int(port)))
    never_reads.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    never_reads.sendall(f"{head}Content-Length: {len(body)}\r\n\r\n".encode() + body)
    try:
        for _ in range(5):
            ok = httpx.post(
                f"{url}/v1/completions", json={"model": "tiny", "prompt": "Hi", "max_tokens": 8}, timeout=30
            )
            assert ok.status_code == 200 and ok.json()["usage"]["completion_tokens"] == 8
    finally:
        half_sent.close()
        never_reads.close()
    for _ in range(500):
        if engine.load() == (0, 0):
            break
        time.sleep(0.01)
    assert engine.load() == (0, 0)


TEXT_FILES = st.one_of(
    st.binary(max_size=400),  # random bytes: mostly not UTF-8
    st.text(max_size=400).map(lambda t: t.encode("utf-8", "surrogatepass")),  # any code points, lone surrogates too
    st.text(alphabet="ab \n", max_size=50).map(lambda t: (t + "x" * 100_000).encode()),  # one huge line
    st.tuples(st.text(max_size=100), st.text(alphabet="éüßç", min_size=1, max_size=20)).map(
        lambda parts: parts[0].encode() + parts[1].encode("latin-1")  # UTF-8, then Latin-1: mixed encodings
    ),
)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=TEXT_FILES, kind=st.sampled_from(["char", "word"]))
def test_data_prepare_reads_any_file_exactly_or_says_why_not(tmp_path, data, kind):
    """Whatever the bytes: the prepared tokens decode to exactly the file's text (words unseen in training
    aside), or a DataError says why (not UTF-8, with the byte offset; too short to split), and no half-written
    output is left."""
    from lucidlm.data import Source, prepare
    from lucidlm.data.loader import open_split
    from lucidlm.errors import DataError

    source, out = tmp_path / "input.txt", tmp_path / f"out-{kind}"
    shutil.rmtree(out, ignore_errors=True)
    source.write_bytes(data)
    try:
        prepare([Source(source, "input.txt")], out, kind, progress=False)
    except DataError:
        assert not out.exists() or not any(out.iterdir())
        return
    tokenizer, text = load_tokenizer(out / "tokenizer.json"), data.decode("utf-8")
    train_text = tokenizer.decode(open_split(out, "train"))
    assert text.startswith(train_text)
    val = [tokenizer.decode([i]) for i in open_split(out, "val")]
    if kind == "char":
        assert train_text + "".join(val) == text
    else:  # the word vocabulary is learned from the training split: unseen validation words are <unk>
        pieces = tokenizer.split(text[len(train_text) :])
        assert len(val) == len(pieces) and all(v in (p, "<unk>") for v, p in zip(val, pieces, strict=True))


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(section=st.sampled_from(["model", "train", None]), key=st.text(max_size=12), value=JSON_VALUES)
def test_tampered_config_json_is_refused_or_loaded(tmp_path, trained_run, section, key, value):
    """One key of a real run's config.json (a model or training setting, or a top-level one) set to random
    JSON: the model loads, or a LucidError says why."""
    run = tmp_path / "run"
    shutil.rmtree(run, ignore_errors=True)
    shutil.copytree(trained_run, run)
    config = json.loads((run / "config.json").read_text())
    node = config if section is None else config[section]
    node[key if key or not node else next(iter(node))] = value
    (run / "config.json").write_text(json.dumps(config))
    try:
        model, _, _ = load_model(run, "latest")
    except LucidError:
        return
    model(torch.zeros(1, 2, dtype=torch.long))


@pytest.mark.parametrize("key", ["n_layer", "n_embd", "vocab_size", "block_size", "mlp_hidden"])
def test_huge_sizes_in_config_json_are_refused_before_anything_is_allocated(tmp_path, trained_run, key):
    """Found by fuzzing config.json: a size of 10^9 was allocated (the process was killed for memory)."""
    run = tmp_path / "run"
    shutil.copytree(trained_run, run)
    config = json.loads((run / "config.json").read_text())
    config["model"][key] = 10**9
    (run / "config.json").write_text(json.dumps(config))
    with pytest.raises(LucidError, match="does not fit the model in config.json|larger than 131072"):
        load_model(run, "latest")
