# %% [markdown]
# # Lesson 2: matrix multiplication is many dot products
#
# For $A \in \mathbb{R}^{m \times n}$ and $B \in \mathbb{R}^{n \times p}$, the product $C = AB$ has
# $m \times p$ cells, and each cell is one dot product: row $i$ of $A$ with column $j$ of $B$,
#
# $$C_{ij} = \sum_{k=1}^{n} A_{ik} B_{kj} .$$
#
# The inner sizes must agree ($n$), and the outer sizes give the shape of the result: $(m, n) @ (n, p) \to (m, p)$.

# %%
import numpy as np

# fmt: off
A = np.array([[1.0, 2.0, 3.0],
              [4.0, 5.0, 6.0]])  # (2, 3)
B = np.array([[7.0, 8.0],
              [9.0, 10.0],
              [11.0, 12.0]])  # (3, 2)
# fmt: on


def matmul_by_hand(A: np.ndarray, B: np.ndarray) -> np.ndarray:
    """A (m, n) times B (n, p) -> C (m, p), each cell C[i, j] the dot product of row i of A and column j of B,
    written as loops (not @)."""
    ### BEGIN SOLUTION
    m, n = A.shape
    n2, p = B.shape
    assert n == n2, f"inner sizes differ: {n} and {n2}"
    C = np.zeros((m, p))
    for i in range(m):
        for j in range(p):
            C[i, j] = sum(A[i, k] * B[k, j] for k in range(n))  # row i . column j
    return C
    ### END SOLUTION


C = matmul_by_hand(A, B)
print(C)
assert C[0, 0] == 1 * 7 + 2 * 9 + 3 * 11 == 58
assert C[1, 1] == 4 * 8 + 5 * 10 + 6 * 12 == 154
assert np.array_equal(C, A @ B)

# %% [markdown]
# Counting the work: each of the $m p$ cells needs $n$ multiplications and $n$ additions, so a matrix product
# costs $2mnp$ floating-point operations (FLOPs). This count is how training speed is measured (lesson 21).

# %%
rng = np.random.default_rng(0)
for m, n, p in [(4, 5, 6), (1, 7, 3), (8, 1, 2)]:
    X, Y = rng.normal(size=(m, n)), rng.normal(size=(n, p))
    assert np.allclose(matmul_by_hand(X, Y), X @ Y)
print(f"a (2, 3) @ (3, 2) product costs {2 * 2 * 3 * 2} FLOPs")
print("lesson 2 ok: every cell of A @ B is one row-by-column dot product")
