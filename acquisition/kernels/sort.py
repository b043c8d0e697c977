"""Template matching kernel of the online sorter."""

from __future__ import annotations

import numba
import numpy as np


@numba.njit(cache=True, nogil=True)
def assign_spikes(
    snippets: np.ndarray,
    channels: np.ndarray,
    neighbours: np.ndarray,
    candidates: np.ndarray,
    templates: np.ndarray,
    support: np.ndarray,
    inv_noise: np.ndarray,
    max_score: float,
    max_relative: float,
    alpha: float,
    max_shift: int,
    out_units: np.ndarray,
    out_scores: np.ndarray,
) -> None:
    """Give each snippet the closest template among the units near its peak electrode.

    ``snippets`` ``(n, n_window, k)`` µV on ``neighbours[channels[i]]``; ``candidates``
    ``(n_channels, m)`` unit indices near each electrode (``-1`` pads); ``templates``
    ``(n_units, n_window, n_channels)`` µV, defined on the electrodes where ``support``
    ``(n_units, n_channels)`` is non-zero; a unit is compared on the snippet electrodes
    it is defined on, and only when those are at least half of them. The score is the
    RMS residual in noise units (``inv_noise`` = 1/noise per electrode). A snippet whose
    best score is below ``max_score``, or whose residual energy is below
    ``max_relative`` times its own energy (large spikes), gets that unit
    (``out_units``, else -1) and pulls its template toward itself by ``alpha`` (drift
    tracking). Templates are tried at lags of up to ``max_shift`` samples (peak jitter).
    ``out_scores`` gets the best score.
    """
    n, n_win, k_count = snippets.shape
    m_count = candidates.shape[1]
    for i in range(n):
        c = channels[i]
        best = -1
        best_score = np.inf
        energy = 0.0
        e_cnt = 0
        for k in range(k_count):
            ch = neighbours[c, k]
            if ch < 0:
                break
            w = inv_noise[ch]
            for s in range(n_win):
                energy += (snippets[i, s, k] * w) ** 2
            e_cnt += n_win
        energy /= max(e_cnt, 1)
        best_shift = 0
        for m in range(m_count):
            u = candidates[c, m]
            if u < 0:
                break
            for sh in range(-max_shift, max_shift + 1):
                s0 = max(0, -sh)
                s1 = min(n_win, n_win - sh)
                acc = 0.0
                cnt = 0
                n_valid = 0
                for k in range(k_count):
                    ch = neighbours[c, k]
                    if ch < 0:
                        break
                    n_valid += 1
                    if support[u, ch] == 0:
                        continue
                    w = inv_noise[ch]
                    for s in range(s0, s1):
                        d = (snippets[i, s, k] - templates[u, s + sh, ch]) * w
                        acc += d * d
                    cnt += s1 - s0
                if 2 * cnt < n_valid * (s1 - s0):
                    break  # the unit is defined on too few of these electrodes
                score = np.sqrt(acc / max(cnt, 1))
                if score < best_score:
                    best_score = score
                    best = u
                    best_shift = sh
        out_scores[i] = best_score
        good = best_score < max_score or best_score * best_score < max_relative * energy
        if best >= 0 and good:
            out_units[i] = best
            if alpha > 0.0:
                for k in range(k_count):
                    ch = neighbours[c, k]
                    if ch < 0:
                        break
                    if support[best, ch] == 0:
                        continue
                    for s in range(max(0, -best_shift), min(n_win, n_win - best_shift)):
                        t_s = s + best_shift
                        templates[best, t_s, ch] += alpha * (
                            snippets[i, s, k] - templates[best, t_s, ch]
                        )
        else:
            out_units[i] = -1


def warm_up() -> None:
    snippets = np.zeros((1, 3, 2), dtype=np.float32)
    nb = np.array([[0, 1], [1, 0]], dtype=np.int32)
    cand = np.array([[0, -1], [0, -1]], dtype=np.int32)
    templates = np.zeros((1, 3, 2), dtype=np.float32)
    assign_spikes(
        snippets,
        np.zeros(1, dtype=np.int32),
        nb,
        cand,
        templates,
        np.ones((1, 2), dtype=np.uint8),
        np.ones(2, dtype=np.float32),
        1.0,
        0.2,
        0.1,
        1,
        np.zeros(1, dtype=np.int32),
        np.zeros(1, dtype=np.float32),
    )
