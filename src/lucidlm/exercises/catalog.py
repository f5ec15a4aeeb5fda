"""The exercises, lesson by lesson: each one's cases and hints.

A case's expected value comes from a reference that is not the lesson's own solution: NumPy itself, or
lucidlm.scratch, whose layers the tests hold to PyTorch autograd. Beside random cases of several shapes, each
exercise has the cases where wrong code is commonly wrong (large logits for a softmax, a constant row for a
norm, a non-square matrix for a transpose), and says which mistake each one catches.
"""

from __future__ import annotations

import json
import math

import numpy as np

from lucidlm.exercises.checks import Case, Exercise, check_source
from lucidlm.model.config import GPTConfig
from lucidlm.scratch.gpt import NumpyGPT, rope_tables
from lucidlm.scratch.layers import (
    attention_forward,
    crossentropy_forward,
    layernorm_backward,
    layernorm_forward,
    linear_backward,
)
from lucidlm.scratch.optim import AdamW
from lucidlm.scratch.sampling import filter_logits


def cosine_cases(rng: np.random.Generator) -> list[Case]:
    u, v = rng.normal(size=5), rng.normal(size=5)
    return [
        Case("two random vectors of 5", (u, v), float(u @ v / np.linalg.norm(u) / np.linalg.norm(v))),
        Case("a vector and itself", (u, u), 1.0, why="a vector's cosine with itself is 1"),
        Case("a vector and 3 times it", (u, 3 * u), 1.0, why="divide by both lengths: scaling changes nothing"),
        Case("opposite vectors", (u, -2 * u), -1.0),
        Case("perpendicular vectors", (np.array([1.0, 0.0]), np.array([0.0, 2.0])), 0.0),
    ]


def matmul_cases(rng: np.random.Generator) -> list[Case]:
    pairs = [((2, 3), (3, 4)), ((3, 3), (3, 3)), ((1, 5), (5, 1)), ((4, 1), (1, 2))]
    cases = []
    for a, b in pairs:
        A, B = rng.normal(size=a), rng.normal(size=b)
        cases.append(Case(f"{a} @ {b}", (A, B), A @ B, why="C[i, j] is row i of A with column j of B"))
    return cases


def linear_cases(rng: np.random.Generator) -> list[Case]:
    W, b = rng.normal(size=(3, 2)), rng.normal(size=2)
    X, tokens = rng.normal(size=(4, 3)), rng.normal(size=(2, 5, 3))
    return [
        Case("a batch of 4 rows (4, 3), W (3, 2)", (X, W, b), X @ W + b, why="the bias is added to every row"),
        Case("one row (3,)", (X[0], W, b), X[0] @ W + b),
        Case("sequences (2, 5, 3)", (tokens, W, b), tokens @ W + b, why="the layer applies to the last axis"),
    ]


def embed_cases(rng: np.random.Generator) -> list[Case]:
    table = rng.normal(size=(7, 3))
    return [
        Case("ids [4, 0, 3] of a (7, 3) table", ([4, 0, 3], table), table[[4, 0, 3]]),
        Case("a token twice", ([2, 2], table), table[[2, 2]], why="the same token gets the same row"),
        Case("one token", ([6], table), table[[6]], why="the result is (T, C), even for one token"),
    ]


def relu_cases(rng: np.random.Generator) -> list[Case]:
    z = rng.normal(size=(3, 4))
    return [
        Case("a (3, 4) array", (z,), np.maximum(z, 0), why="negative values become 0, the others stay"),
        Case("zeros and negatives", (np.array([-2.0, 0.0, 3.0]),), np.array([0.0, 0.0, 3.0])),
    ]


def reference_softmax(z: np.ndarray, temperature: float = 1.0) -> np.ndarray:
    z = np.asarray(z, dtype=float) / temperature
    e = np.exp(z - z.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def softmax_cases(rng: np.random.Generator) -> list[Case]:
    z, rows = rng.normal(size=6), rng.normal(size=(3, 5))
    return [
        Case("6 logits", (z,), reference_softmax(z)),
        Case("3 rows of 5 logits", (rows,), reference_softmax(rows), why="normalise each row on its own (axis=-1)"),
        Case("logits of 1e4", (np.array([1e4, 1e4 - 1, 0.0]),), reference_softmax(np.array([1.0, 0.0, -1e4])),
             why="exp(1e4) overflows: subtract the largest logit first"),
        Case("temperature 0.5", (z, 0.5), reference_softmax(2 * z), why="divide the logits by the temperature"),
    ]  # fmt: skip


def cross_entropy_cases(rng: np.random.Generator) -> list[Case]:
    logits, targets = rng.normal(size=(8, 10)), rng.integers(0, 10, 8)

    def reference(z: np.ndarray, t: np.ndarray) -> float:
        return crossentropy_forward(z[None], t[None])[0]

    large = logits * 1e4
    return [
        Case("8 positions, 10 tokens", (logits, targets), reference(logits, targets)),
        Case("equal logits", (np.zeros((4, 65)), np.arange(4)), math.log(65), why="a uniform guess costs ln V"),
        Case("logits of 1e4", (large, targets), reference(large, targets),
             why="from the logits (log-sum-exp), not log(softmax): that overflows or takes log(0)"),
    ]  # fmt: skip


def sinusoidal_cases(rng: np.random.Generator) -> list[Case]:
    def reference(T: int, C: int) -> np.ndarray:
        angle = np.arange(T)[:, None] / 10000 ** (np.arange(0, C, 2) / C)  # (T, C/2)
        table = np.empty((T, C))
        table[:, 0::2], table[:, 1::2] = np.sin(angle), np.cos(angle)
        return table

    return [
        Case("T 6, C 8", (6, 8), reference(6, 8), why="channel 2i holds sin, channel 2i + 1 cos"),
        Case("T 50, C 16", (50, 16), reference(50, 16), why="the frequency of pair i is 10000^(-2i/C)"),
    ]


def rotate_cases(rng: np.random.Generator) -> list[Case]:
    def reference(x: np.ndarray, position: int) -> np.ndarray:
        cos, sin = rope_tables(position + 1, len(x), 10000.0)
        return x * cos[position] + np.roll(x, len(x) // 2) * sin[position]

    x, wide = rng.normal(size=8), rng.normal(size=16)
    return [
        Case("position 0", (x, 0), x, why="position 0 turns by no angle"),
        Case("D 8 at position 3", (x, 3), reference(x, 3),
             why="pair (x_i, x_(i+D/2)) turns counter-clockwise: x_i cos - x_(i+D/2) sin first"),
        Case("D 16 at position 100", (wide, 100), reference(wide, 100), why="D is the length of x"),
    ]  # fmt: skip


def attention_cases(rng: np.random.Generator) -> list[Case]:
    def reference(Q: np.ndarray, K: np.ndarray, V: np.ndarray) -> np.ndarray:
        return reference_softmax(Q @ K.T / math.sqrt(Q.shape[-1])) @ V

    Q, K, V = rng.normal(size=(5, 4)), rng.normal(size=(5, 4)), rng.normal(size=(5, 4))
    Q2, K2, V2 = rng.normal(size=(2, 16)), rng.normal(size=(7, 16)), rng.normal(size=(7, 3))
    return [
        Case("T 5, d 4", (Q, K, V), reference(Q, K, V), why="scale the scores by 1 / sqrt(d)"),
        Case("2 queries over 7 keys, d 16, values of 3", (Q2, K2, V2), reference(Q2, K2, V2),
             why="d is the queries' width, and the output has the values' width"),
    ]  # fmt: skip


def causal_attention_cases(rng: np.random.Generator) -> list[Case]:
    def reference(q: np.ndarray, k: np.ndarray, v: np.ndarray) -> np.ndarray:
        return attention_forward(q[None, None], k[None, None], v[None, None])[0][0, 0]

    q, k, v = rng.normal(size=(6, 4)), rng.normal(size=(6, 4)), rng.normal(size=(6, 4))
    one = [part[:1] for part in (q, k, v)]
    return [
        Case("T 6, d 4", (q, k, v), reference(q, k, v), why="position t sees 0..t, itself included"),
        Case("one position", tuple(one), one[2], why="the first position sees only itself: its output is its value"),
    ]


def split_heads_cases(rng: np.random.Generator) -> list[Case]:
    def reference(x: np.ndarray, n_head: int) -> np.ndarray:
        B, T, C = x.shape
        return x.reshape(B, T, n_head, C // n_head).transpose(0, 2, 1, 3)

    x = rng.normal(size=(2, 4, 6))
    return [
        Case("(2, 4, 6) into 3 heads", (x, 3), reference(x, 3),
             why="reshape to (B, T, H, D), then move the heads before the time axis"),
        Case("(2, 4, 6) into 2 heads", (x, 2), reference(x, 2)),
        Case("one head", (x, 1), x[:, None]),
    ]  # fmt: skip


def layernorm_cases(rng: np.random.Generator) -> list[Case]:
    def reference(x: np.ndarray) -> np.ndarray:
        return layernorm_forward(x, np.ones(x.shape[-1]), None, 1e-5)[0]

    x = rng.normal(2.0, 3.0, size=(4, 8))
    return [
        Case("4 rows of 8", (x,), reference(x), rtol=1e-5, why="each row on its own: mean and variance on axis -1"),
        Case("a constant row", (np.full((1, 5), 7.0),), np.zeros((1, 5)), why="add 1e-5 to the variance"),
        Case("(2, 2, 8)", (x.reshape(2, 2, 8),), reference(x.reshape(2, 2, 8)), rtol=1e-5),
    ]


def linear_backward_cases(rng: np.random.Generator) -> list[Case]:
    def reference(dout: np.ndarray, x: np.ndarray, W: np.ndarray) -> tuple:
        dx, dweight, dbias = linear_backward(dout, (x, x.shape, W.T, True))  # scratch stores W as (out, in)
        return dx, dweight.T, dbias

    x, W, dout = rng.normal(size=(5, 3)), rng.normal(size=(3, 2)), rng.normal(size=(5, 2))
    square = rng.normal(size=(4, 4)), rng.normal(size=(4, 4)), rng.normal(size=(4, 4))
    return [
        Case("x (5, 3), W (3, 2)", (dout, x, W), reference(dout, x, W),
             why="dx = dout W^T, dW = x^T dout (the shape of W), db sums dout over the positions"),
        Case("square (4, 4)", (square[2], square[0], square[1]), reference(square[2], square[0], square[1]),
             why="with square matrices a transposed product has the right shape and the wrong values"),
    ]  # fmt: skip


def block_forward_cases(rng: np.random.Generator) -> list[Case]:
    model = NumpyGPT(GPTConfig(vocab_size=11, block_size=6, n_layer=1, n_head=2, n_embd=8), np.float64, seed=3)
    for name, value in model.params.items():  # gains away from 1, so that a skipped norm weight shows
        model.params[name] = value + rng.normal(0, 0.3, value.shape)
    x = rng.normal(size=(2, 6, 8))
    expected, _ = model.block_forward(x, "transformer.h.0.")
    model.caches = None
    return [
        Case("2 sequences of 6, C 8, 2 heads", (x, model.params, "transformer.h.0.", 2), expected,
             why="pre-norm: x + attention(ln_1(x)), then + mlp(ln_2(..)), each norm with its own weight"),
        Case("one position", (x[:, :1], model.params, "transformer.h.0.", 2),
             model.block_forward(x[:, :1], "transformer.h.0.")[0], why="attention is causal"),
    ]  # fmt: skip


def layernorm_backward_cases(rng: np.random.Generator) -> list[Case]:
    def case(name: str, shape: tuple, bias: bool, why: str = "") -> Case:
        x, dout = rng.normal(size=shape), rng.normal(size=shape)
        weight, b = rng.normal(size=shape[-1]), rng.normal(size=shape[-1]) if bias else None
        _, cache = layernorm_forward(x, weight, b)
        return Case(name, (dout, cache), layernorm_backward(dout, cache), why=why)

    return [
        case("(2, 3, 8), with a bias", (2, 3, 8), True,
             "dx = rstd (dn - mean(dn) - normalized mean(dn normalized)), dn = dout * weight"),
        case("(4, 5), without a bias", (4, 5), False, "dbias is None without a bias"),
    ]  # fmt: skip


def adamw_cases(rng: np.random.Generator) -> list[Case]:
    def reference(param, grad, m, v, t, lr, betas, eps, weight_decay) -> tuple:
        optimizer = AdamW({"p": param.copy()}, lr, betas, eps, weight_decay)
        optimizer.exp_avg["p"], optimizer.exp_avg_sq["p"] = m.copy(), v.copy()
        optimizer.step_count = t - 1
        optimizer.step({"p": grad})
        return optimizer.params["p"], optimizer.exp_avg["p"], optimizer.exp_avg_sq["p"]

    def case(name: str, t: int, weight_decay: float, why: str) -> Case:
        param, grad = rng.normal(size=(3, 4)), rng.normal(size=(3, 4))
        m, v = (np.zeros((3, 4)), np.zeros((3, 4))) if t == 1 else (rng.normal(size=(3, 4)), rng.random((3, 4)))
        args = (param, grad, m, v, t, 1e-2, (0.9, 0.99), 1e-8, weight_decay)
        return Case(name, args, reference(*args), why=why)

    return [
        case("the first step", 1, 0.0, "at t = 1 the corrected moments are grad and grad^2: the step is lr sign(grad)"),
        case("step 10, with moments", 10, 0.0, "m_hat = m / (1 - beta1^t), v_hat = v / (1 - beta2^t)"),
        case("weight decay 0.1", 5, 0.1, "the decay multiplies param by (1 - lr wd), apart from the gradient"),
    ]  # fmt: skip


def top_p_cases(rng: np.random.Generator) -> list[Case]:
    def reference(logits: np.ndarray, p: float) -> np.ndarray:
        return np.where(np.isfinite(filter_logits(logits, top_p=p)), logits, -np.inf)

    logits = rng.normal(size=12) * 2
    halves = np.log(np.array([0.5, 0.3, 0.2]))
    return [
        Case("12 logits, p 0.9", (logits, 0.9), reference(logits, 0.9)),
        Case("probabilities 0.5, 0.3, 0.2 with p 0.7", (halves, 0.7), np.array([halves[0], halves[1], -np.inf]),
             why="the token that crosses p stays: keep while the tokens before reach less than p"),
        Case("p smaller than the top token", (halves, 0.1), np.array([halves[0], -np.inf, -np.inf]),
             why="the most likely token always stays"),
        Case("p 1", (logits, 1.0), logits, why="p = 1 keeps every token"),
    ]  # fmt: skip


def cached_attention_cases(rng: np.random.Generator) -> list[Case]:
    def case(name: str, cached: int, why: str = "") -> Case:
        q, k, v = (rng.normal(size=(cached + 1, 4)) for _ in range(3))
        out = attention_forward(q[None, None], k[None, None], v[None, None])[0][0, 0, -1]
        return Case(name, (q[-1], k[-1], v[-1], k[:-1], v[:-1]), (out, k, v), why=why)

    return [
        case("5 cached positions", 5, "append the new key and value, then attend over all of them, itself included"),
        case("an empty cache", 0, "the first position attends only to itself: its output is its value"),
    ]


def merge_cases(rng: np.random.Generator) -> list[Case]:
    from lucidlm.tokenizers.bpe import merge_pair  # here: the tokenizers import regex, which only this check needs

    ids = rng.integers(0, 4, 30).tolist()
    return [
        Case("30 ids, merging (1, 2)", (ids, (1, 2), 256), merge_pair(ids, (1, 2), 256)),
        Case("three in a row", ([97, 97, 97], (97, 97), 256), [256, 97], why="left to right, without overlaps"),
        Case("the pair at the end", ([1, 5, 2, 1, 2], (1, 2), 9), [1, 5, 2, 9]),
        Case("no such pair", ([3, 4], (4, 3), 9), [3, 4]),
    ]


def parameters_cases(rng: np.random.Generator) -> list[Case]:
    def case(name: str, why: str = "", **settings) -> Case:
        config = GPTConfig(**{"vocab_size": 65, "block_size": 32, "n_layer": 2, "n_head": 2, "n_embd": 16,
                              "bias": True, **settings})  # fmt: skip
        model = NumpyGPT(config)  # its parameters, counted from the tensors it builds (the head is tied)
        return Case(name, (config,), sum(p.size for p in model.params.values()), why=why)

    return [
        case("2 blocks of 16 channels", "the head is the token table: count it once"),
        case("an MLP of 24, not 4C", "the MLP's width is c.mlp_hidden", mlp_hidden=24),
        case("3 blocks, a window of 8", "the position table is block_size x C", n_layer=3, block_size=8),
    ]


def read_out_cases(rng: np.random.Generator) -> list[Case]:
    def reference(stream: np.ndarray, gain: np.ndarray, unembedding: np.ndarray) -> np.ndarray:
        return layernorm_forward(stream, gain, None, 1e-5)[0] @ unembedding.T

    stream, gain, unembedding = rng.normal(1.0, 4.0, (2, 5, 8)), rng.normal(1, 0.5, 8), rng.normal(size=(11, 8))
    return [
        Case("a stream (2, 5, 8), V 11", (stream, gain, unembedding), reference(stream, gain, unembedding),
             rtol=1e-5, why="the final norm first, with its gain, then the unembedding"),
        Case("one position", (stream[0, 0], gain, unembedding), reference(stream[0, 0], gain, unembedding),
             rtol=1e-5),
    ]  # fmt: skip


def mean_attention_at_cases(rng: np.random.Generator) -> list[Case]:
    def reference(pattern: np.ndarray, n: int, offset: int) -> float:
        return float(np.mean([pattern[b, i, i - offset] for b in range(len(pattern)) for i in range(n, 2 * n)]))

    pattern = rng.random((3, 12, 12))
    return [
        Case(
            "induction, n 6",
            (pattern, 6, 5),
            reference(pattern, 6, 5),
            why="only the repeat's positions, n <= i < 2n, count",
        ),
        Case("previous token, n 6", (pattern, 6, 1), reference(pattern, 6, 1)),
        Case("duplicate token, n 6", (pattern, 6, 6), reference(pattern, 6, 6), why="i - n is the first copy"),
    ]


def masked_targets_cases(rng: np.random.Generator) -> list[Case]:
    ids = rng.integers(0, 50, 9).tolist()
    mask = [0, 0, 0, 0, 1, 1, 1, 0, 1]
    return [
        Case("9 tokens, a reply in the middle", (ids, mask), np.array([ids[t + 1] if mask[t + 1] else -1
                                                                       for t in range(8)]),
             why="position t predicts ids[t + 1]: its mask is mask[t + 1]"),
        Case("all learned", (ids[:4], [1, 1, 1, 1]), np.array(ids[1:4])),
        Case("nothing learned", (ids[:3], [0, 0, 0]), np.array([-1, -1])),
    ]  # fmt: skip


def lora_weight_cases(rng: np.random.Generator) -> list[Case]:
    W, A, B = rng.normal(size=(6, 5)), rng.normal(size=(2, 5)), rng.normal(size=(6, 2))
    W2, A2, B2 = rng.normal(size=(3, 8)), rng.normal(size=(4, 8)), rng.normal(size=(3, 4))
    return [
        Case(
            "rank 2, alpha 8",
            (W, A, B, 8.0),
            W + 4.0 * np.einsum("or,ri->oi", B, A),
            why="the update is scaled by alpha / r",
        ),
        Case("rank 4, alpha 4", (W2, A2, B2, 4.0), W2 + np.einsum("or,ri->oi", B2, A2)),
        Case("B zero", (W, A, np.zeros((6, 2)), 8.0), W, why="with B = 0 the adapter adds nothing"),
    ]


def rmsnorm_cases(rng: np.random.Generator) -> list[Case]:
    def reference(x: np.ndarray, gain: np.ndarray, eps: float = 1e-6) -> np.ndarray:
        root_mean_square = np.sqrt(np.linalg.norm(x, axis=-1, keepdims=True) ** 2 / x.shape[-1] + eps)
        return gain * x / root_mean_square

    x, gain = rng.normal(3.0, 2.0, (4, 8)), rng.normal(1.0, 0.3, 8)
    return [
        Case("4 rows of 8, mean 3", (x, gain), reference(x, gain), rtol=1e-5,
             why="RMSNorm skips the mean: it divides by sqrt(mean(x^2) + eps) only"),
        Case("zeros", (np.zeros((1, 4)), np.ones(4)), np.zeros((1, 4)), why="eps keeps 0 / 0 away"),
        Case("eps 1e-2", (x[:1] * 1e-2, gain, 1e-2), reference(x[:1] * 1e-2, gain, 1e-2), rtol=1e-5),
    ]  # fmt: skip


def merge_heads_cases(rng: np.random.Generator) -> list[Case]:
    y = rng.normal(size=(2, 3, 4, 5))  # (B, H, T, D)
    expected = np.concatenate([y[:, h] for h in range(3)], axis=-1)  # head h's D channels, side by side
    return [
        Case(
            "(2, 3, 4, 5) -> (2, 4, 15)", (y,), expected, why="move the time axis back before the heads, then reshape"
        ),
        Case("one head", (y[:, :1],), y[:, 0]),
    ]


def top_k_cases(rng: np.random.Generator) -> list[Case]:
    logits = rng.normal(size=10)
    top3 = np.where(np.isfinite(filter_logits(logits, top_k=3)), logits, -np.inf)
    return [
        Case("10 logits, k 3", (logits, 3), top3, why="exactly k tokens stay, the largest, as they are"),
        Case("k 1", (logits, 1), np.where(logits == logits.max(), logits, -np.inf), why="k = 1 is greedy"),
        Case("k = V", (logits, 10), logits),
    ]


def dpo_loss_cases(rng: np.random.Generator) -> list[Case]:
    def reference(pc, pr, rc, rr, beta):  # the loss -log sigmoid(margin), its derivative -sigmoid(-margin)
        margin = beta * (pc - rc - pr + rr)
        slope = -0.5 * (1 - np.tanh(margin / 2)) / len(margin)  # -sigmoid(-margin), which cannot overflow
        stats = {"reward_margin": margin.mean(), "reward_accuracy": (margin > 0).mean()}
        return np.logaddexp(0, -margin).mean(), np.concatenate([beta * slope, -beta * slope]), stats

    logprobs = [rng.normal(-20, 5, size=6) for _ in range(4)]
    far = [np.array([-1.0, -900.0]), np.array([-900.0, -1.0]), np.array([-5.0, -5.0]), np.array([-5.0, -5.0])]
    return [
        Case("6 pairs, beta 0.1", (*logprobs, 0.1), reference(*logprobs, 0.1),
             why="margin = beta ((policy - reference) of the chosen - (policy - reference) of the rejected)"),
        Case("the policy equal to the reference", (*logprobs[:2], *logprobs[:2], 0.5),
             reference(*logprobs[:2], *logprobs[:2], 0.5), why="a margin of 0 costs log 2 a pair"),
        Case("margins of +-899", (*far, 1.0), reference(*far, 1.0),
             why="log sigmoid(m) = -logaddexp(0, -m): exp(-m) overflows for very negative m"),
    ]  # fmt: skip


def group_advantages_cases(rng: np.random.Generator) -> list[Case]:
    groups = rng.integers(0, 2, size=(3, 8)).astype(float)
    return [
        Case("3 groups of 8 rewards", (groups,), groups - groups.mean(axis=-1, keepdims=True),
             why="each reward against its own group's mean, not the mean of all groups"),
        Case("one group", (np.array([1.0, 0.0, 0.0, 0.0]),), np.array([0.75, -0.25, -0.25, -0.25])),
        Case("a group that all got the same", (np.ones(5),), np.zeros(5), why="no reward stands out: all 0"),
    ]  # fmt: skip


EXERCISES = [
    Exercise(1, "cosine", cosine_cases,
             ("The dot product u @ v grows with both lengths.", "Divide u @ v by sqrt(u @ u) * sqrt(v @ v).")),
    Exercise(2, "matmul_by_hand", matmul_cases,
             ("C has A's rows and B's columns: (m, p).",
              "Three loops: for each i and j, sum A[i, k] * B[k, j] over k.")),
    Exercise(3, "linear", linear_cases,
             ("Which axis of X meets which axis of W?", "X @ W, then + b, which broadcasts over the rows.")),
    Exercise(4, "embed", embed_cases,
             ("Each id picks one row of the table.", "Index the table with the list of ids: table[ids].")),
    Exercise(5, "relu", relu_cases, ("Compare each element with 0.", "np.maximum(z, 0).")),
    Exercise(6, "softmax", softmax_cases,
             ("softmax(z) = softmax(z - c) for any c.",
              "z = z / temperature; e = exp(z - z.max(axis=-1, keepdims=True)); e / e.sum(axis=-1, keepdims=True).")),
    Exercise(7, "cross_entropy", cross_entropy_cases,
             ("log softmax(z)_i = z_i - log sum_j exp(z_j).",
              "Shift by the row's max, take log_probs = shifted - log(sum(exp(shifted))), average "
              "-log_probs[arange(N), targets].")),
    Exercise(8, "linear_backward", linear_backward_cases,
             ("y = x W + b: how does y change with each of x, W and b?",
              "dx = dout @ W.T, dW = x.T @ dout, db = dout.sum(axis=0).")),
    Exercise(9, "sinusoidal_table", sinusoidal_cases,
             ("Row t is position t; the channels come in (sin, cos) pairs.",
              "angle = t / 10000 ** (2 * i / C) for pair i; channel 2i = sin(angle), 2i + 1 = cos(angle).")),
    Exercise(10, "rotate", rotate_cases,
             ("Split x into its two halves: x_i pairs with x_(i + D/2).",
              "angle = position * 10000 ** (-2 i / D); return [a cos - b sin, a sin + b cos] for halves a, b.")),
    Exercise(11, "attention", attention_cases,
             ("The scores are one dot product per (query, key) pair: Q @ K.T.",
              "softmax(Q @ K.T / sqrt(d)) over the keys (each row), times V.")),
    Exercise(12, "causal_attention", causal_attention_cases,
             ("A query may see its own key, not the ones after it.",
              "Add np.triu(np.full((T, T), -np.inf), k=1) to the scores before the softmax.")),
    Exercise(13, "split_heads", split_heads_cases,
             ("The channels of a position are [head 0's D, head 1's D, ...].",
              "x.reshape(B, T, n_head, C // n_head).transpose(0, 2, 1, 3).")),
    Exercise(13, "merge_heads", merge_heads_cases,
             ("The inverse of split_heads.", "y.transpose(0, 2, 1, 3).reshape(B, T, H * D).")),
    Exercise(14, "rmsnorm", rmsnorm_cases,
             ("Like layer norm, without the mean.", "x / sqrt(mean(x * x, axis=-1, keepdims=True) + eps) * gain.")),
    Exercise(14, "layernorm", layernorm_cases,
             ("Mean and variance of each row: axis=-1, keepdims=True.",
              "(x - mean) / sqrt(var + 1e-5).")),
    Exercise(15, "block_forward", block_forward_cases,
             ("Two residual branches, each reading a normalised copy of the stream.",
              "h = ln_1(x); q, k, v from h @ c_attn.T, split into heads; x += merged attention @ c_proj.T; "
              "then x += gelu(ln_2(x) @ c_fc.T) @ mlp c_proj.T.")),
    Exercise(16, "layernorm_backward", layernorm_backward_cases,
             ("Go back through out = n * weight + bias first, then through n = (x - mean) * rstd.",
              "dweight = sum(dout * n), dbias = sum(dout); dn = dout * weight; "
              "dx = rstd * (dn - mean(dn) - n * mean(dn * n)), the means over the last axis.")),
    Exercise(17, "adamw_update", adamw_cases,
             ("Decay, then the two moving averages, then their bias corrections.",
              "param *= 1 - lr wd; m = b1 m + (1 - b1) g; v = b2 v + (1 - b2) g^2; "
              "param -= lr (m / (1 - b1^t)) / (sqrt(v / (1 - b2^t)) + eps).")),
    Exercise(18, "top_p_filter", top_p_cases,
             ("Sort the tokens by probability, most likely first, and add them up.",
              "Keep a token when the probabilities of the tokens before it sum to less than p; set the rest "
              "to -inf.")),
    Exercise(18, "top_k_filter", top_k_cases,
             ("Find the k-th largest logit.", "np.where(logits < np.sort(logits)[-k], -np.inf, logits).")),
    Exercise(19, "cached_attention_step", cached_attention_cases,
             ("The newest query may see every key: no mask is needed.",
              "keys = vstack([keys, k]); scores = keys @ q / sqrt(d); softmax; weights @ values.")),
    Exercise(20, "merge", merge_cases,
             ("Walk the list once, looking at each position and the next.",
              "When (ids[i], ids[i + 1]) is the pair, append new_id and skip 2; else append ids[i] and skip 1.")),
    Exercise(21, "parameters", parameters_cases,
             ("Go through the shapes: the tables, then one block, then the final norm.",
              "V C + T C + L (4C + 3C^2 + 3C + C^2 + C + 2 C h + h + C) + 2C, h = mlp_hidden; no separate head.")),
    Exercise(22, "read_out", read_out_cases,
             ("The model's last two steps, applied to any layer's stream.",
              "layernorm over the last axis (eps 1e-5) times the gain, then @ unembedding.T.")),
    Exercise(23, "mean_attention_at", mean_attention_at_cases,
             ("Index the pattern at (sequence, query i, key i - offset).",
              "queries = arange(n, 2n); pattern[:, queries, queries - offset].mean().")),
    Exercise(24, "masked_targets", masked_targets_cases,
             ("The targets are the inputs shifted by one; so is the mask.",
              "np.where(np.array(mask[1:]) == 1, ids[1:], -1).")),
    Exercise(25, "lora_weight", lora_weight_cases,
             ("B A has W's shape: (out, r) @ (r, in).", "W + (alpha / A.shape[0]) * B @ A.")),
    Exercise(26, "dpo_loss", dpo_loss_cases,
             ("The loss is -log sigmoid of beta times how much more the policy prefers the chosen reply than the "
              "reference does.",
              "margin = beta ((pc - rc) - (pr - rr)); loss = mean(-log_sigmoid(margin)); d loss / d margin = "
              "-(1 - sigmoid(margin)) / P, times +beta for the chosen and -beta for the rejected.")),
    Exercise(27, "group_advantages", group_advantages_cases,
             ("The baseline is the group's own mean.", "rewards - rewards.mean(axis=-1, keepdims=True).")),
]  # fmt: skip


def exercises_of(lesson: int) -> list[Exercise]:
    return [exercise for exercise in EXERCISES if exercise.lesson == lesson]


def find_exercise(key: str) -> Exercise:
    """An exercise by its key, `LESSON.FUNCTION` (e.g. `6.softmax`)."""
    for exercise in EXERCISES:
        if exercise.key == key:
            return exercise
    raise LookupError(f"there is no exercise {key}; the exercises are {', '.join(e.key for e in EXERCISES)}")


def print_report(key: str, cell: str, others: list[str], prefix: str) -> None:
    """The page's Check: one line, `prefix` then the report as JSON (course.js reads it from the output)."""
    report = check_source(find_exercise(key), cell, others)
    print(prefix + json.dumps(report.to_json()), flush=True)
