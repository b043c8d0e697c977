"""Sparse recurrent synapses with delays: building the graph and delivering spikes.

Neurons have global indices (populations laid end to end in config order). Synapses
are stored as CSR by presynaptic neuron: ``post``, signed ``weight`` (positive
excitatory, negative inhibitory) and ``delay`` in steps (>= 1). A spike of neuron
``i`` at absolute step ``s`` adds ``|w|`` to the excitatory or inhibitory arrival ring
of each target at step ``s + delay``.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from numba import njit

from acquisition.sim.config import SimRigConfig
from bci.errors import ConfigError


@dataclass(frozen=True)
class Synapses:
    """CSR synapse table; ``indptr`` has ``n_neurons + 1`` entries."""

    n_neurons: int
    indptr: np.ndarray
    post: np.ndarray
    weight: np.ndarray
    delay: np.ndarray

    @property
    def n_synapses(self) -> int:
        return int(self.post.shape[0])

    @property
    def min_delay(self) -> int:
        return int(self.delay.min()) if self.n_synapses else 0

    @property
    def max_delay(self) -> int:
        return int(self.delay.max()) if self.n_synapses else 0


def _from_edges(
    n: int, pre: np.ndarray, post: np.ndarray, weight: np.ndarray, delay: np.ndarray
) -> Synapses:
    order = np.argsort(pre, kind="stable")
    counts = np.bincount(pre, minlength=n)
    indptr = np.zeros(n + 1, dtype=np.int64)
    np.cumsum(counts, out=indptr[1:])
    return Synapses(
        n_neurons=n,
        indptr=indptr,
        post=post[order].astype(np.int64),
        weight=weight[order].astype(np.float64),
        delay=delay[order].astype(np.int64),
    )


def read_edge_list(path: Path, n_neurons: int, dt_ms: float) -> tuple[np.ndarray, ...]:
    """Read ``pre,post,weight,delay_ms`` rows; validate indices and delays."""
    rows: list[tuple[int, int, float, float]] = []
    with path.open(newline="", encoding="utf-8") as fh:
        for lineno, row in enumerate(csv.reader(fh), start=1):
            if not row or row[0].lstrip().startswith("#"):
                continue
            try:
                pre, post, w, d = int(row[0]), int(row[1]), float(row[2]), float(row[3])
            except (ValueError, IndexError):
                if lineno == 1:
                    continue  # header
                raise ConfigError(
                    f"{path}:{lineno}: expected 'pre,post,weight,delay_ms', got {row!r}",
                    file=str(path),
                ) from None
            if not (0 <= pre < n_neurons and 0 <= post < n_neurons):
                raise ConfigError(
                    f"{path}:{lineno}: neuron index out of range 0..{n_neurons - 1}: {row!r}",
                    file=str(path),
                )
            if not (np.isfinite(w) and np.isfinite(d) and d > 0):
                raise ConfigError(
                    f"{path}:{lineno}: weight must be finite and delay_ms > 0: {row!r}",
                    file=str(path),
                )
            rows.append((pre, post, w, d))
    arr = np.array(rows, dtype=np.float64).reshape(-1, 4)
    delay = np.maximum(1, np.round(arr[:, 3] / dt_ms)).astype(np.int64)
    return arr[:, 0].astype(np.int64), arr[:, 1].astype(np.int64), arr[:, 2], delay


_DENSE_LIMIT = 4_000_000


def _sample_pairs(
    n_pre: int, n_post: int, p: float, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """Each (pre, post) pair connected with probability ``p``.

    Small blocks draw one uniform per pair; large ones draw the edge count from the
    binomial and then that many distinct pairs, which is the same distribution
    without an ``n_pre x n_post`` matrix.
    """
    total = n_pre * n_post
    if total <= _DENSE_LIMIT:
        pre, post = np.nonzero(rng.random((n_pre, n_post)) < p)
        return pre, post
    k = int(rng.binomial(total, p))
    flat = np.unique(rng.integers(0, total, size=int(k * 1.05) + 16))
    while flat.size < k:  # top up after removing duplicates
        extra = rng.integers(0, total, size=k - flat.size + 16)
        flat = np.unique(np.concatenate([flat, extra]))
    flat = rng.permutation(flat)[:k]
    flat.sort()
    return flat // n_post, flat % n_post


def build_synapses(config: SimRigConfig, rng: np.random.Generator) -> Synapses:
    """Random connections from ``config.connections`` plus the optional edge list."""
    dt_ms = 1000.0 / config.sample_rate_hz
    offsets: dict[str, tuple[int, int, bool]] = {}
    start = 0
    for pop in config.populations:
        offsets[pop.name] = (start, pop.count, pop.excitatory)
        start += pop.count
    n = start
    parts: list[tuple[np.ndarray, ...]] = []
    for conn in config.connections:
        pre0, n_pre, excitatory = offsets[conn.pre]
        post0, n_post, _ = offsets[conn.post]
        pre_local, post_local = _sample_pairs(n_pre, n_post, conn.probability, rng)
        if conn.pre == conn.post:  # no autapses
            keep = pre_local != post_local
            pre_local, post_local = pre_local[keep], post_local[keep]
        k = pre_local.size
        sign = 1.0 if excitatory else -1.0
        delay_ms = rng.uniform(conn.delay_ms[0], conn.delay_ms[1], k)
        parts.append(
            (
                pre_local + pre0,
                post_local + post0,
                np.full(k, sign * conn.weight),
                np.maximum(1, np.round(delay_ms / dt_ms)).astype(np.int64),
            )
        )
    if config.edge_list is not None:
        parts.append(read_edge_list(config.edge_list.path, n, dt_ms))
    if not parts:
        empty_i = np.zeros(0, dtype=np.int64)
        return _from_edges(n, empty_i, empty_i, np.zeros(0), empty_i)
    pre, post, weight, delay = (np.concatenate(cols) for cols in zip(*parts, strict=True))
    return _from_edges(n, pre.astype(np.int64), post.astype(np.int64), weight, delay)


@njit(cache=True, nogil=True)
def deliver_spikes(
    spike_steps: np.ndarray,
    spike_neurons: np.ndarray,
    n_spikes: int,
    indptr: np.ndarray,
    post: np.ndarray,
    weight: np.ndarray,
    delay: np.ndarray,
    ring_e: np.ndarray,
    ring_i: np.ndarray,
) -> None:
    """Add each spike's synaptic weights into the arrival rings at ``step + delay``.

    ``spike_steps`` are absolute steps; rings are ``(D, n_neurons)`` indexed modulo ``D``.
    """
    size = ring_e.shape[0]
    for s in range(n_spikes):
        i = spike_neurons[s]
        step = spike_steps[s]
        for k in range(indptr[i], indptr[i + 1]):
            slot = (step + delay[k]) % size
            w = weight[k]
            if w >= 0.0:
                ring_e[slot, post[k]] += w
            else:
                ring_i[slot, post[k]] -= w
