"""Every exercise's check passes the lesson's solution, fails the stub, and fails a plausible wrong solution
with the message that names its mistake: a check that a wrong solution passes is a defect."""

import ast

import numpy as np
import pytest

from lucidlm.exercises import EXERCISES, check, check_source, solved_functions, stubbed, without_markers
from lucidlm.exercises.source import BEGIN, END
from lucidlm.model.config import GPTConfig
from lucidlm.scratch import NumpyGPT
from lucidlm.tutorial.lessons import find_lesson, lesson_files, lesson_number


def no_max_shift_softmax(z, temperature=1.0):
    e = np.exp(np.asarray(z, dtype=float) / temperature)
    return e / e.sum(axis=-1, keepdims=True)


def naive_cross_entropy(logits, targets):
    probs = np.exp(logits) / np.exp(logits).sum(axis=-1, keepdims=True)
    return float(-np.log(probs[np.arange(len(targets)), targets]).mean())


def row_by_row(A, B):
    """Row i of A with row j of B: right only where B is symmetric."""
    C = np.zeros((A.shape[0], B.shape[1]))
    for i in range(A.shape[0]):
        for j in range(B.shape[1]):
            C[i, j] = sum(A[i, k] * B[j % B.shape[0], k % B.shape[1]] for k in range(A.shape[1]))
    return C


def off_by_one_causal_attention(q, k, v):
    T, d = q.shape
    scores = q @ k.T / np.sqrt(d) + np.triu(np.full((T, T), -np.inf), k=0)  # hides the diagonal too
    weights = np.exp(scores - scores.max(axis=-1, keepdims=True))
    return weights / weights.sum(axis=-1, keepdims=True) @ v


def swapped_rotation(x, position):
    half = len(x) // 2
    angle = position * 10000.0 ** (-np.arange(half) * 2 / len(x))
    a, b = x[:half], x[half:]
    return np.concatenate([a * np.cos(angle) + b * np.sin(angle), -a * np.sin(angle) + b * np.cos(angle)])


def sin_cos_swapped(T, C):
    angle = np.arange(T)[:, None] / 10000 ** (np.arange(0, C, 2) / C)
    table = np.empty((T, C))
    table[:, 0::2], table[:, 1::2] = np.cos(angle), np.sin(angle)
    return table


def chosen_minus_rejected_without_reference(pc, pr, rc, rr, beta):
    margin = beta * (pc - pr)  # forgets the reference model
    slope = -1 / (1 + np.exp(margin)) / len(margin)
    stats = {"reward_margin": float(margin.mean()), "reward_accuracy": float((margin > 0).mean())}
    return float(np.logaddexp(0, -margin).mean()), np.concatenate([beta * slope, -beta * slope]), stats


def block_with_unit_gains(x, p, name, n_head):
    """The block with every norm's weight taken as 1."""
    config = GPTConfig(vocab_size=11, block_size=x.shape[1], n_layer=1, n_head=n_head, n_embd=x.shape[-1])
    model = NumpyGPT(config, np.float64)
    model.params = {key: np.ones_like(value) if ".ln_" in key else value for key, value in p.items()}
    return model.block_forward(x, name)[0]


def layernorm_backward_one_correction(dout, cache):
    normalized, rstd, weight, has_bias = cache
    flat = dout.reshape(-1, dout.shape[-1])
    dnormalized = dout * weight
    dx = rstd * (dnormalized - dnormalized.mean(axis=-1, keepdims=True))  # forgets the variance's term
    return dx, (flat * normalized.reshape(flat.shape)).sum(axis=0), flat.sum(axis=0) if has_bias else None


def adam_without_bias_correction(param, grad, m, v, t, lr, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0):
    param = param * (1 - lr * weight_decay)
    m = betas[0] * m + (1 - betas[0]) * grad
    v = betas[1] * v + (1 - betas[1]) * grad * grad
    return param - lr * m / (np.sqrt(v) + eps), m, v


def top_p_without_the_crossing_token(logits, p):
    order = np.argsort(-logits)
    probabilities = np.exp(logits[order] - logits[order[0]])
    probabilities /= probabilities.sum()
    filtered = np.full(len(logits), -np.inf)
    kept = order[(np.cumsum(probabilities) < p) | (np.arange(len(order)) == 0)]
    filtered[kept] = logits[kept]
    return filtered


def attention_over_the_cache_only(q, k, v, keys, values):
    scores = keys @ q / np.sqrt(len(q))  # its own key is appended only afterwards
    weights = np.exp(scores - scores.max())
    return weights / weights.sum() @ values, np.vstack([keys, k]), np.vstack([values, v])


def overlapping_merge(ids, pair, new_id):
    merged = []
    for i, token in enumerate(ids):
        if i + 1 < len(ids) and (token, ids[i + 1]) == pair:
            merged.append(new_id)  # and moves on by one: the pair's second id is read again
        elif not (i > 0 and (ids[i - 1], token) == pair):
            merged.append(token)
    return merged


def parameters_with_an_untied_head(c):
    C, hidden = c.n_embd, c.mlp_hidden
    block = 4 * C + 3 * C * C + 3 * C + C * C + C + 2 * C * hidden + hidden + C
    return 2 * c.vocab_size * C + c.block_size * C + c.n_layer * block + 2 * C


def mean_attention_over_every_position(pattern, n, offset):
    queries = np.arange(offset, 2 * n)
    return float(pattern[:, queries, queries - offset].mean())


# For each exercise, a wrong solution a learner plausibly writes, and words its failure must contain.
WRONG = {
    "1.cosine": (lambda u, v: float(u @ v / (u @ u)), "divide by both lengths"),
    "2.matmul_by_hand": (row_by_row, "column j of B"),
    "3.linear": (lambda X, W, b: X @ W, "the bias is added to every row"),
    "4.embed": (lambda ids, table: table[:, ids], "expected shape"),
    "5.relu": (lambda z: np.abs(z), "negative values become 0"),
    "6.softmax": (no_max_shift_softmax, "subtract the largest logit first"),
    "7.cross_entropy": (naive_cross_entropy, "log-sum-exp"),
    "8.linear_backward": (lambda dout, x, W: (dout @ W.T, dout.T @ x, dout.sum(axis=0)), "dW = x^T dout"),
    "9.sinusoidal_table": (sin_cos_swapped, "channel 2i holds sin"),
    "10.rotate": (swapped_rotation, "counter-clockwise"),
    "11.attention": (lambda Q, K, V: no_max_shift_softmax(Q @ K.T) @ V, "1 / sqrt(d)"),
    "12.causal_attention": (off_by_one_causal_attention, "itself included"),
    "13.split_heads": (lambda x, n: x.reshape(x.shape[0], n, x.shape[1], -1), "move the heads"),
    "14.layernorm": (lambda x: (x - x.mean(-1, keepdims=True)) / x.std(-1, keepdims=True), "add 1e-5"),
    "15.block_forward": (block_with_unit_gains, "each norm with its own weight"),
    "16.layernorm_backward": (layernorm_backward_one_correction, "normalized mean(dn normalized)"),
    "17.adamw_update": (adam_without_bias_correction, "m_hat = m / (1 - beta1^t)"),
    "18.top_p_filter": (top_p_without_the_crossing_token, "the token that crosses p stays"),
    "19.cached_attention_step": (attention_over_the_cache_only, "itself included"),
    "20.merge": (overlapping_merge, "without overlaps"),
    "21.parameters": (parameters_with_an_untied_head, "count it once"),
    "22.read_out": (lambda stream, gain, unembedding: stream @ unembedding.T, "the final norm first"),
    "23.mean_attention_at": (mean_attention_over_every_position, "only the repeat's positions"),
    "24.masked_targets": (lambda ids, mask: np.where(np.array(mask[:-1]) == 1, ids[1:], -1), "mask[t + 1]"),
    "25.lora_weight": (lambda W, A, B, alpha: W + alpha * B @ A, "alpha / r"),
    "13.merge_heads": (lambda y: y.reshape(y.shape[0], y.shape[2], -1), "move the time axis back"),
    "14.rmsnorm": (lambda x, gain, eps=1e-6: (x - x.mean(-1, keepdims=True)) / np.sqrt(x.var(-1, keepdims=True) + eps)
                   * gain, "RMSNorm skips the mean"),
    "18.top_k_filter": (lambda logits, k: np.where(logits < np.sort(logits)[-k - 1], -np.inf, logits),
                        "exactly k tokens stay"),
    "26.dpo_loss": (chosen_minus_rejected_without_reference, "(policy - reference) of the chosen"),
    "27.group_advantages": (lambda r: r - r.mean(), "its own group's mean"),
}  # fmt: skip
KEYS = [exercise.key for exercise in EXERCISES]


def lesson_source(exercise) -> str:
    return find_lesson(exercise.lesson).read_text(encoding="utf-8")


def test_every_exercise_has_a_wrong_solution_here():
    assert sorted(WRONG) == sorted(KEYS)


@pytest.mark.parametrize("exercise", EXERCISES, ids=KEYS)
def test_the_lessons_solution_passes(exercise):
    report = check_source(exercise, lesson_source(exercise))
    assert report.passed, report.text()


@pytest.mark.parametrize("exercise", EXERCISES, ids=KEYS)
def test_the_stub_fails_as_not_written(exercise):
    report = check_source(exercise, stubbed(lesson_source(exercise)))
    assert not report.passed and not report.written
    assert report.text() == (
        f"{exercise.key}: not yet\n  FAIL the function\n"
        "       not written yet: replace the `raise NotImplementedError` with your code"
    )


@pytest.mark.parametrize("exercise", EXERCISES, ids=KEYS)
def test_a_wrong_solution_fails_with_the_message_that_names_its_mistake(exercise):
    wrong, words = WRONG[exercise.key]
    report = check(exercise, wrong)
    assert not report.passed and report.written
    failed = [result.message for result in report.results if not result.passed]
    assert any(words in message for message in failed), report.text()


def test_a_failure_says_what_was_expected_what_came_back_and_where():
    softmax = next(e for e in EXERCISES if e.key == "6.softmax")
    report = check(softmax, lambda z, temperature=1.0: np.full(np.shape(z), 1 / np.shape(z)[-1]))
    first = report.results[0]
    assert first.case == "6 logits" and not first.passed
    expected = softmax.cases(np.random.default_rng(0))[0].expected
    assert first.message == (
        f"first difference at index [0]: expected {expected[0]:.6g}, got 0.166667 "
        f"(largest difference {np.abs(expected - 1 / 6).max():.3g})"
    )
    shapes = check(softmax, lambda z, temperature=1.0: np.zeros(3)).results[1].message
    assert shapes.startswith("expected shape (3, 5), got shape (3,)")
    raised = check_source(softmax, "def softmax(z, temperature=1.0):\n    return z.nope\n").results[0].message
    assert raised == "raised AttributeError: 'numpy.ndarray' object has no attribute 'nope' (line 2)"


def test_code_that_does_not_parse_or_lacks_the_function_says_so():
    softmax = next(e for e in EXERCISES if e.key == "6.softmax")
    assert check_source(softmax, "def softmax(z:\n").results[0].message.startswith("does not parse: line 1")
    missing = check_source(softmax, "import numpy as np\n").results[0].message
    assert missing == "not written yet: there is no `def softmax(...)` at the top level of the code"


def test_a_check_runs_the_functions_not_the_lesson():
    """The lesson's top-level code (training, prints) does not run: only imports and definitions."""
    softmax = next(e for e in EXERCISES if e.key == "6.softmax")
    source = stubbed(lesson_source(softmax)).replace(
        'raise NotImplementedError("softmax',
        'return __import__("lucidlm.exercises.catalog").exercises.catalog.'
        'reference_softmax(z, temperature)\n    raise NotImplementedError("softmax',
    )
    assert check_source(softmax, source + "\nraise SystemExit('the lesson ran')\n").passed


def test_stubs_keep_the_lessons_valid_python_without_a_solution_left():
    for path in lesson_files():
        source = path.read_text(encoding="utf-8")
        learner = stubbed(source)
        ast.parse(learner)
        assert BEGIN not in learner and END not in learner
        for name in solved_functions(source):
            assert f'raise NotImplementedError("{name}: not written yet' in learner
        assert BEGIN not in without_markers(source)


def test_every_exercise_is_marked_in_its_lesson_and_every_marked_function_is_an_exercise():
    marked = {f"{lesson_number(path)}.{name}" for path in lesson_files() for name in solved_functions(path.read_text())}
    assert marked == set(KEYS)


def test_the_lesson_uses_the_learners_function():
    """A stubbed lesson fails at the first use of the stub, so the lesson's later cells run on what the learner
    wrote (checked on lesson 6, cheap to run)."""
    with pytest.raises(NotImplementedError, match="softmax: not written yet"):
        exec(compile(stubbed(find_lesson(6).read_text()), "lesson 6", "exec"), {})


def test_the_dpo_check_catches_an_overflowing_log_sigmoid():
    dpo = next(e for e in EXERCISES if e.key == "26.dpo_loss")

    def naive(pc, pr, rc, rr, beta):
        margin = beta * ((pc - rc) - (pr - rr))
        sigmoid = 1 / (1 + np.exp(-margin))
        slope = -(1 - sigmoid) / len(margin)
        stats = {"reward_margin": float(margin.mean()), "reward_accuracy": float((margin > 0).mean())}
        return float(-np.log(sigmoid).mean()), np.concatenate([beta * slope, -beta * slope]), stats

    failed = [r for r in check(dpo, naive).results if not r.passed]
    assert [r.case for r in failed] == ["margins of +-899"] and "logaddexp" in failed[0].message
