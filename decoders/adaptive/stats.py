"""Sufficient statistics of a linear regression ``b ≈ M a``, with exponential forgetting.

``R = Σ λ^age a aᵀ``, ``S = Σ λ^age b aᵀ``, ``T = Σ λ^age b bᵀ`` (or only its diagonal),
``n = Σ λ^age``. Recursive maximum likelihood keeps one set and decays it every row
(``λ = 0.5 ** (bin_s / half_life_s)``); SmoothBatch fills a fresh set per batch.
"""

from __future__ import annotations

import numpy as np
from numba import njit


@njit(cache=True, nogil=True)
def stats_add(R: np.ndarray, S: np.ndarray, a: np.ndarray, b: np.ndarray, lam: float) -> None:
    """``R = lam R + a aᵀ`` and ``S = lam S + b aᵀ``."""
    da = a.size
    for i in range(da):
        for j in range(da):
            R[i, j] = lam * R[i, j] + a[i] * a[j]
    for i in range(b.size):
        for j in range(da):
            S[i, j] = lam * S[i, j] + b[i] * a[j]


@njit(cache=True, nogil=True)
def outer_add(T: np.ndarray, b: np.ndarray, lam: float) -> None:
    """``T = lam T + b bᵀ`` (full second moment)."""
    for i in range(b.size):
        for j in range(b.size):
            T[i, j] = lam * T[i, j] + b[i] * b[j]


@njit(cache=True, nogil=True)
def square_add(T: np.ndarray, b: np.ndarray, lam: float) -> None:
    """``T = lam T + b²`` (diagonal of the second moment)."""
    for i in range(b.size):
        T[i] = lam * T[i] + b[i] * b[i]


class LinearStats:
    """Forgetting sufficient statistics of ``b ≈ M a`` (``a``: ``dim_a``, ``b``: ``dim_b``)."""

    def __init__(self, dim_a: int, dim_b: int, full_t: bool = False) -> None:
        self.dim_a = dim_a
        self.dim_b = dim_b
        self.full_t = full_t
        self.clear()

    def clear(self) -> None:
        self.R = np.zeros((self.dim_a, self.dim_a))
        self.S = np.zeros((self.dim_b, self.dim_a))
        self.T = np.zeros((self.dim_b, self.dim_b) if self.full_t else self.dim_b)
        self.n = 0.0

    def add(self, a: np.ndarray, b: np.ndarray, lam: float = 1.0) -> None:
        """Decay everything by ``lam`` and add one observation."""
        stats_add(self.R, self.S, a, b, lam)
        if self.full_t:
            outer_add(self.T, b, lam)
        else:
            square_add(self.T, b, lam)
        self.n = lam * self.n + 1.0

    def solve(self, ridge: float = 1e-6, no_ridge_last: bool = False) -> np.ndarray:
        """Least-squares ``M`` (``dim_b x dim_a``) with a ridge of ``ridge * n`` on ``R``."""
        reg = np.full(self.dim_a, ridge * max(self.n, 1.0))
        if no_ridge_last:
            reg[-1] = 1e-9 * max(self.n, 1.0)
        return np.linalg.solve(self.R + np.diag(reg), self.S.T).T

    def residual(self, M: np.ndarray) -> np.ndarray:
        """Mean residual covariance of ``b - M a`` (matrix if ``full_t``, else its diagonal)."""
        n = max(self.n, 1e-12)
        if self.full_t:
            cov = (self.T - M @ self.S.T - self.S @ M.T + M @ self.R @ M.T) / n
            return np.asarray(0.5 * (cov + cov.T))
        diag = (self.T - 2 * np.sum(M * self.S, axis=1) + np.sum((M @ self.R) * M, axis=1)) / n
        return np.asarray(diag)

    def state(self, prefix: str) -> dict[str, np.ndarray]:
        return {
            f"{prefix}.R": self.R.copy(),
            f"{prefix}.S": self.S.copy(),
            f"{prefix}.T": self.T.copy(),
            f"{prefix}.n": np.array(self.n),
        }

    def load(self, state: dict[str, np.ndarray], prefix: str) -> None:
        self.R = np.asarray(state[f"{prefix}.R"], np.float64).copy()
        self.S = np.asarray(state[f"{prefix}.S"], np.float64).copy()
        self.T = np.asarray(state[f"{prefix}.T"], np.float64).copy()
        self.n = float(state[f"{prefix}.n"])
