"""Slow reference implementations, kept to check the fast solver against.

``solve_lp`` states the TSDS objective as a linear program (scipy's HiGHS) over the whole pool.
``solve_heap`` walks the breakpoints one at a time with a heap, the straightforward way.
"""

from __future__ import annotations

import heapq

import numpy as np
from scipy import sparse
from scipy.optimize import linprog


def solve_lp(D, rho, *, alpha: float, C: float):
    """Exact optimum of the TSDS problem on a full M x N distance matrix.

    Returns (objective, p, gamma). Variables: gamma (M*N) and t >= rho_i gamma_{j,i}.
    """
    D = np.asarray(D, dtype=np.float64)
    M, N = D.shape
    rho = np.ones(N) if rho is None else np.asarray(rho, dtype=np.float64)
    nvar = M * N + 1
    c = np.append(alpha / C * D.ravel(), (1 - alpha) * M)
    rows = np.repeat(np.arange(M), N)
    A_eq = sparse.csr_matrix((np.ones(M * N), (rows, np.arange(M * N))), shape=(M, nvar))
    b_eq = np.full(M, 1.0 / M)
    idx = np.arange(M * N)
    A_ub = sparse.csr_matrix(
        (np.concatenate([np.tile(rho, M), -np.ones(M * N)]),
         (np.concatenate([idx, idx]), np.concatenate([idx, np.full(M * N, M * N)]))),
        shape=(M * N, nvar),
    )
    res = linprog(c, A_ub=A_ub, b_ub=np.zeros(M * N), A_eq=A_eq, b_eq=b_eq,
                  bounds=(0, None), method="highs",
                  options={"primal_feasibility_tolerance": 1e-10, "dual_feasibility_tolerance": 1e-10})
    if res.status != 0:
        raise RuntimeError(f"LP failed: {res.message}")
    gamma = res.x[:-1].reshape(M, N)
    return float(res.fun), gamma.sum(axis=0), gamma


def solve_heap(D, rho, *, alpha: float, C: float):
    """Breakpoint walk with a heap over queries, one breakpoint at a time (lists assumed complete).

    Returns (level, weights) with the same meaning as ``tsds.core.solve``.
    """
    D = np.asarray(D, dtype=np.float64)
    M, K = D.shape
    inv = np.ones((M, K)) if rho is None else 1.0 / np.asarray(rho, dtype=np.float64)
    d = D.tolist()
    w = inv.tolist()
    threshold = (1 - alpha) * C * M
    level_count = [0] * M
    S = [0.0] * M
    heap = [(w[j][0], j) for j in range(M)]
    heapq.heapify(heap)
    total = 0.0
    level = heap[0][0]
    finished = False
    while heap:
        value = heap[0][0]
        while heap and heap[0][0] == value:
            _, j = heapq.heappop(heap)
            L = level_count[j]
            S[j] += w[j][L]
            level_count[j] = L + 1
            if L + 1 < K:
                total += S[j] * (d[j][L + 1] - d[j][L])
                heapq.heappush(heap, (S[j] + w[j][L + 1], j))
            else:
                finished = True
        level = value
        if finished or alpha * total >= threshold:
            break
    weights = np.zeros((M, K))
    for j in range(M):
        L = level_count[j]
        filled = 0.0
        for k in range(L):
            weights[j, k] = w[j][k] / (M * level)
            filled += w[j][k]
        if L < K:
            weights[j, L] = max(1.0 / M - filled / (M * level), 0.0)
    return level, weights
