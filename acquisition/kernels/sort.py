"""Template matching kernel of the online sorter."""

from __future__ import annotations

import numba
import numpy as np


@numba.njit(cache=True, nogil=True)
def _subtract_history(
    snippet: np.ndarray,
    t0: int,
    row: np.ndarray,
    templates: np.ndarray,
    support: np.ndarray,
    hist_origin: np.ndarray,
    hist_unit: np.ndarray,
    hist_count: int,
    horizon: int,
    out: np.ndarray,
) -> None:
    """``out = snippet`` minus the templates of the spikes already assigned that overlap it.

    ``snippet`` ``(n_window, k)`` starts at absolute sample ``t0`` on electrodes ``row``;
    history entry ``j`` (a ring of the newest ``len(hist_origin)``) is unit
    ``hist_unit[j]`` placed so that its template row ``r`` is absolute sample
    ``hist_origin[j] + r``. Entries are in time order up to ``horizon`` samples, so the
    scan stops at the first one that ends well before ``t0``.
    """
    n_win, k_count = snippet.shape
    cap = hist_origin.shape[0]
    for s in range(n_win):
        for k in range(k_count):
            out[s, k] = snippet[s, k]
    j_stop = max(0, hist_count - cap)
    for j in range(hist_count - 1, j_stop - 1, -1):
        slot = j % cap
        o = hist_origin[slot]
        if o + n_win + horizon <= t0:
            break
        lag = t0 - o  # template row of snippet row 0
        if lag >= n_win or lag <= -n_win:
            continue
        u = hist_unit[slot]
        s0 = max(0, -lag)
        s1 = min(n_win, n_win - lag)
        for k in range(k_count):
            ch = row[k]
            if ch < 0:
                break
            if support[u, ch] == 0:
                continue
            for s in range(s0, s1):
                out[s, k] -= templates[u, s + lag, ch]


@numba.njit(cache=True, nogil=True)
def peel_history(
    buf: np.ndarray,
    first: int,
    pre: int,
    templates: np.ndarray,
    support: np.ndarray,
    hist_origin: np.ndarray,
    hist_unit: np.ndarray,
    hist_count: int,
    horizon: int,
) -> None:
    """Subtract from ``buf`` ``(n_rows, n_channels)``, whose row 0 is absolute sample
    ``first``, the templates of the assigned spikes in the history ring that overlap it.

    Entry ``j`` places template row ``r`` of unit ``hist_unit[j]`` at absolute sample
    ``hist_origin[j] + r - pre`` (the ring's origins are peak samples minus the matching
    lag, and a snippet starts ``pre`` samples before its peak). The ring is scanned from
    the newest entry back until one ends ``horizon`` samples before ``first``.
    """
    n_rows, n_ch = buf.shape
    n_win = templates.shape[1]
    cap = hist_origin.shape[0]
    j_stop = max(0, hist_count - cap)
    for j in range(hist_count - 1, j_stop - 1, -1):
        slot = j % cap
        start = hist_origin[slot] - pre - first  # buffer row of template row 0
        if start + n_win + horizon <= 0:
            break
        if start >= n_rows or start + n_win <= 0:
            continue
        u = hist_unit[slot]
        r0 = max(0, -start)
        r1 = min(n_win, n_rows - start)
        for ch in range(n_ch):
            if support[u, ch] == 0:
                continue
            for r in range(r0, r1):
                buf[start + r, ch] -= templates[u, r, ch]


@numba.njit(cache=True, nogil=True)
def _best_unit(
    x: np.ndarray,
    row: np.ndarray,
    cands: np.ndarray,
    templates: np.ndarray,
    support: np.ndarray,
    inv_noise: np.ndarray,
    max_shift: int,
    cum: np.ndarray,
) -> tuple[int, int, float]:
    """(unit, lag, RMS residual in noise units) of the template among ``cands`` that
    fits ``x`` ``(n_window, k)`` (electrodes ``row``) best; ``(-1, 0, inf)`` if none.

    The residual is taken on all the snippet's electrodes: where a unit is not defined,
    it predicts nothing and the snippet itself is left. (Scored on its own electrodes
    only, a unit defined on fewer of them would not answer for the energy on the
    others, and a neighbour whose template misses the electrodes where two neurons
    differ would take both.) A unit is tried only when it is defined on at least half
    of the snippet's electrodes; snippet row ``s`` meets template row ``s + lag``.
    ``cum``: the prefix sums :func:`_energy` left for ``x``.
    """
    n_win, k_count = x.shape
    best = -1
    best_score = np.inf
    best_shift = 0
    for m in range(cands.shape[0]):
        u = cands[m]
        if u < 0:
            break
        n_valid = 0
        n_def = 0
        for k in range(k_count):
            ch = row[k]
            if ch < 0:
                break
            n_valid += 1
            if support[u, ch] != 0:
                n_def += 1
        if 2 * n_def < n_valid or n_def == 0:
            continue  # the unit is defined on too few of these electrodes
        for sh in range(-max_shift, max_shift + 1):
            s0 = max(0, -sh)
            s1 = min(n_win, n_win - sh)
            cnt = n_valid * (s1 - s0)
            bound = best_score * best_score * cnt  # stop once it cannot win
            acc = 0.0
            for k in range(k_count):
                ch = row[k]
                if ch < 0:
                    break
                if support[u, ch] == 0:
                    acc += cum[s1, k] - cum[s0, k]
                    continue
                w = inv_noise[ch]
                for s in range(s0, s1):
                    d = (x[s, k] - templates[u, s + sh, ch]) * w
                    acc += d * d
                if acc >= bound:
                    break
            if acc >= bound:
                continue
            score = np.sqrt(acc / max(cnt, 1))
            if score < best_score:
                best_score = score
                best = u
                best_shift = sh
    return best, best_shift, best_score


@numba.njit(cache=True, nogil=True)
def _add_template(
    x: np.ndarray,
    row: np.ndarray,
    templates: np.ndarray,
    support: np.ndarray,
    u: int,
    lag: int,
    sign: float,
) -> None:
    """``x += sign * template u`` (snippet row ``s`` meets template row ``s + lag``)."""
    n_win, k_count = x.shape
    s0 = max(0, -lag)
    s1 = min(n_win, n_win - lag)
    for k in range(k_count):
        ch = row[k]
        if ch < 0:
            break
        if support[u, ch] == 0:
            continue
        for s in range(s0, s1):
            x[s, k] += sign * templates[u, s + lag, ch]


@numba.njit(cache=True, nogil=True)
def _fit(
    x: np.ndarray,
    row: np.ndarray,
    templates: np.ndarray,
    support: np.ndarray,
    inv_noise: np.ndarray,
    u: int,
    lag: int,
) -> tuple[float, float]:
    """``(<x, t>, <t, t>)`` in noise units for template ``u`` at ``lag`` on its electrodes."""
    n_win, k_count = x.shape
    s0 = max(0, -lag)
    s1 = min(n_win, n_win - lag)
    xt = 0.0
    tt = 0.0
    for k in range(k_count):
        ch = row[k]
        if ch < 0:
            break
        if support[u, ch] == 0:
            continue
        w2 = inv_noise[ch] * inv_noise[ch]
        for s in range(s0, s1):
            tv = templates[u, s + lag, ch]
            xt += w2 * tv * x[s, k]
            tt += w2 * tv * tv
    return xt, tt


@numba.njit(cache=True, nogil=True)
def _gain(
    x: np.ndarray,
    row: np.ndarray,
    templates: np.ndarray,
    support: np.ndarray,
    inv_noise: np.ndarray,
    u: int,
    lag: int,
) -> float:
    """``(||x||² - ||x - t||²) / ||t||²`` for template ``u`` at ``lag`` on its electrodes,
    in noise units: the share of the template's energy it takes out of ``x`` (1 for an
    exact match, about -1 for noise)."""
    xt, tt = _fit(x, row, templates, support, inv_noise, u, lag)
    return (2.0 * xt - tt) / max(tt, 1e-12)


@numba.njit(cache=True, nogil=True)
def _energy(x: np.ndarray, row: np.ndarray, inv_noise: np.ndarray, cum: np.ndarray) -> float:
    """Sum of squares of ``x`` in noise units over the snippet's electrodes; ``cum``
    ``(n_window + 1, k)`` gets its prefix sums (``cum[s, k]``: the energy on electrode
    ``k`` in the rows before ``s``), which :func:`_best_unit` reads."""
    n_win, k_count = x.shape
    acc = 0.0
    for k in range(k_count):
        ch = row[k]
        if ch < 0:
            break
        w = inv_noise[ch]
        cum[0, k] = 0.0
        for s in range(n_win):
            v = (x[s, k] * w) ** 2
            acc += v
            cum[s + 1, k] = cum[s, k] + v
    return acc


@numba.njit(cache=True, nogil=True)
def _second_spike(
    x: np.ndarray,
    row: np.ndarray,
    cands: np.ndarray,
    templates: np.ndarray,
    support: np.ndarray,
    inv_noise: np.ndarray,
    trough_row: np.ndarray,
    first: int,
    first_lag: int,
    min_peak: float,
    max_shift: int,
    scratch: np.ndarray,
    cum: np.ndarray,
) -> tuple[int, int, float, float]:
    """Look for a second spike in ``x`` once unit ``first`` (at ``first_lag``) is taken
    out: the largest trough left (at least ``min_peak`` noise units) is explained by the
    candidate template, placed on it, that leaves the least energy (a candidate must
    reach a quarter of that trough there). Returns ``(unit, lag, energy left, energy
    with the first template only)`` (unit ``-1`` when the trough is too small);
    ``scratch`` holds ``x`` minus the first template on return (``cum``: its prefix
    sums, see :func:`_energy`)."""
    n_win, k_count = x.shape
    for s in range(n_win):
        for k in range(k_count):
            scratch[s, k] = x[s, k]
    _add_template(scratch, row, templates, support, first, first_lag, -1.0)
    e_single = _energy(scratch, row, inv_noise, cum)
    peak = 0.0
    s_peak = -1
    ch_peak = -1
    for k in range(k_count):
        ch = row[k]
        if ch < 0:
            break
        w = inv_noise[ch]
        for s in range(n_win):
            v = -scratch[s, k] * w
            if v > peak:
                peak = v
                s_peak = s
                ch_peak = ch
    if peak < min_peak:
        return -1, 0, np.inf, e_single
    best = -1
    best_lag = 0
    best_e = np.inf
    for m in range(cands.shape[0]):
        u = cands[m]
        if u < 0:
            break
        if u == first or support[u, ch_peak] == 0:
            continue
        if -templates[u, trough_row[u], ch_peak] * inv_noise[ch_peak] < 0.25 * peak:
            continue
        for d in range(-max_shift, max_shift + 1):
            lag = trough_row[u] - s_peak + d
            if lag <= -n_win or lag >= n_win:
                continue
            # energy of (scratch - template) = e_single + <t, t> - 2 <scratch, t>
            xt, tt = _fit(scratch, row, templates, support, inv_noise, u, lag)
            e = e_single + tt - 2.0 * xt
            if e < best_e:
                best_e = e
                best = u
                best_lag = lag
    return best, best_lag, best_e, e_single


@numba.njit(cache=True, nogil=True)
def _track(
    x: np.ndarray,
    row: np.ndarray,
    templates: np.ndarray,
    support: np.ndarray,
    inv_noise: np.ndarray,
    u: int,
    lag: int,
    alpha: float,
    clip: float,
) -> None:
    """Pull template ``u`` toward the snippet ``x`` by ``alpha`` on the snippet's
    electrodes, each difference clipped to ``clip`` noise units (an overlapping spike the
    peeling missed must not drag the template; noise and drift pass). An electrode of
    the snippet where the unit was not yet defined joins its ``support`` (from a zero
    template): a neuron that drifts carries its template onto the electrodes it moves
    to, which the score, taken on all the snippet's electrodes, would else count
    against it."""
    n_win, k_count = x.shape
    s0 = max(0, -lag)
    s1 = min(n_win, n_win - lag)
    for k in range(k_count):
        ch = row[k]
        if ch < 0:
            break
        if support[u, ch] == 0:
            support[u, ch] = 1
        lim = clip / inv_noise[ch]
        for s in range(s0, s1):
            d = x[s, k] - templates[u, s + lag, ch]
            d = min(lim, max(-lim, d))
            templates[u, s + lag, ch] += alpha * d


@numba.njit(cache=True, nogil=True)
def _smaller(snippet: np.ndarray, templates: np.ndarray, u: int, trough: int) -> bool:
    """Is unit ``u``'s trough smaller than the deepest value on the snippet's peak
    electrode (column 0)? (Else the detector would have kept it, not the other.)"""
    deepest = 0.0
    for s in range(snippet.shape[0]):
        deepest = min(deepest, snippet[s, 0])
    lowest = 0.0
    for ch in range(templates.shape[2]):
        lowest = min(lowest, templates[u, trough, ch])
    return lowest > deepest


@numba.njit(cache=True, nogil=True)
def assign_spikes(
    snippets: np.ndarray,
    samples: np.ndarray,
    channels: np.ndarray,
    neighbours: np.ndarray,
    candidates: np.ndarray,
    templates: np.ndarray,
    support: np.ndarray,
    trough_row: np.ndarray,
    inv_noise: np.ndarray,
    max_score: float,
    max_relative: float,
    alphas: np.ndarray,
    track_clip: float,
    max_shift: int,
    pair_score: float,
    pair_gain: float,
    hidden_max_dt: int,
    hidden_max_score: float,
    hidden_near: np.ndarray,
    hist_origin: np.ndarray,
    hist_unit: np.ndarray,
    hist_count: np.ndarray,
    weak: np.ndarray,
    confirm_max_score: float,
    confirm_min_gain: float,
    match_min_gain: float,
    track_min_gain: float,
    horizon: int,
    peak_row: int,
    echo_max_snr: float,
    out_units: np.ndarray,
    out_scores: np.ndarray,
    out_resid: np.ndarray,
    out_hidden: np.ndarray,
    out_hidden_dt: np.ndarray,
    out_gain: np.ndarray,
) -> None:
    """Give each snippet the closest template among the units near its peak electrode.

    ``snippets`` ``(n, n_window, k)`` µV on ``neighbours[channels[i]]``, peak at absolute
    sample ``samples[i]``, in time order; ``candidates`` ``(n_channels, m)`` unit
    indices near each electrode (``-1`` pads); ``templates``
    ``(n_units, n_window, n_channels)`` µV, defined on the electrodes where ``support``
    ``(n_units, n_channels)`` is non-zero; ``trough_row`` the row of each template's
    trough on its main electrode.

    Peeling: from each snippet the templates of the spikes assigned before it (this call
    or earlier ones, kept in the ring ``hist_origin`` / ``hist_unit``, ``hist_count[0]``
    entries written so far) are subtracted first; the result goes to ``out_resid``, and
    an assigned spike is added to the ring. Causal: a spike is never revised.

    The score is the RMS residual in noise units (``inv_noise`` = 1/noise per electrode)
    on all the snippet's electrodes, tried at lags of up to ``max_shift`` samples (peak
    jitter). Overlaps: when the best score exceeds ``pair_score``, a second spike (an
    undetected or later neighbour) is fitted on the largest trough left; when the pair
    leaves at least ``pair_gain`` noise units² less energy than the single template, the
    snippet's unit is chosen again with the second template taken out, then the second
    spike given it; when the pair leaves an RMS residual of at most ``hidden_max_score``
    and the second spike's trough lies within ``hidden_max_dt`` samples of the first's
    (so that the detector, which keeps one peak per neighbourhood and exclusion window,
    could not report it: its unit's main electrode is within the detector's radius of
    the peak electrode, ``hidden_near`` ``(n_channels, n_units)``, and its trough is
    smaller than the detected peak), the second spike is reported too: ``out_hidden[i]``
    its unit (else -1), ``out_hidden_dt[i]`` its trough minus the first's (samples). A
    snippet whose best score is below ``max_score``, or whose residual energy is below
    ``max_relative`` times its own energy (large spikes), gets that unit (``out_units``,
    else -1) and, when its score is at most ``track_max_score`` (a clean fit, no
    unexplained overlap), pulls its template toward itself by ``alpha`` (drift
    tracking). ``out_scores`` gets the score.

    Weak snippets (``weak[i]`` non-zero: candidates below the detector's threshold) are
    only confirmed: the best unit is kept when its score is at most
    ``confirm_max_score`` and the template takes at least ``confirm_min_gain`` times its
    own energy out of the snippet (``out_gain[i]`` = (||x||² - ||x - t||²) / ||t||² on
    the template's electrodes, in noise units: 1 for an exact match, -1 for noise);
    else ``out_units[i]`` is ``-3`` (drop it). No overlap search, no tracking.

    The same gain decides for the others: a snippet whose best unit takes out less than
    ``match_min_gain`` of the template's energy is not matched (a noise crossing fits a
    faint template best, at a gain near -1), and one under ``track_min_gain`` is matched
    but does not pull the template (``-inf`` for either: no test). ``out_gain[i]`` is
    the best unit's gain (0 when none fitted well enough to be tried).
    ``horizon`` (samples): how far before a snippet the ring is scanned for entries that
    may overlap it (the matching and hidden-spike lags, plus the slack of spikes found
    late, by a residual pass, which are added out of order).

    Echoes: a detection (not weak) whose peak (snippet row ``peak_row``, its own
    electrode) keeps less than ``echo_max_snr`` noise units once the spikes before it
    are peeled off was the tail of those spikes (a big spike's late lobe crosses the
    threshold on its own): ``out_units[i]`` is ``-4`` (drop it), nothing is matched.
    ``0`` turns the test off.
    """
    n, n_win, k_count = snippets.shape
    cap = hist_origin.shape[0]
    scratch = np.empty((n_win, k_count), dtype=np.float32)
    cum = np.empty((n_win + 1, k_count), dtype=np.float64)  # prefix sums of x's energy
    cum2 = np.empty((n_win + 1, k_count), dtype=np.float64)  # and of scratch's
    for i in range(n):
        c = channels[i]
        row = neighbours[c]
        cands = candidates[c]
        t0 = samples[i]  # any fixed offset: only differences count
        x = out_resid[i]
        _subtract_history(
            snippets[i],
            t0,
            row,
            templates,
            support,
            hist_origin,
            hist_unit,
            hist_count[0],
            horizon,
            x,
        )
        out_hidden[i] = -1
        out_hidden_dt[i] = 0
        out_gain[i] = 0.0
        if weak[i] == 0 and echo_max_snr > 0.0:  # (decided before any unit is tried)
            peak = snippets[i, peak_row, 0]
            left = x[peak_row, 0] * inv_noise[c]
            if (peak < 0.0 and -left < echo_max_snr) or (peak > 0.0 and left < echo_max_snr):
                out_scores[i] = np.inf
                out_units[i] = -4
                continue
        energy = _energy(x, row, inv_noise, cum)
        e_cnt = 0
        for k in range(k_count):
            if row[k] < 0:
                break
            e_cnt += n_win
        energy /= max(e_cnt, 1)
        best, best_shift, best_score = _best_unit(
            x, row, cands, templates, support, inv_noise, max_shift, cum
        )
        if weak[i] != 0:
            out_scores[i] = best_score
            out_units[i] = -3
            if best >= 0 and best_score <= confirm_max_score:
                gain = _gain(x, row, templates, support, inv_noise, best, best_shift)
                out_gain[i] = gain
                if gain >= confirm_min_gain:
                    out_units[i] = best
                    slot = hist_count[0] % cap
                    hist_origin[slot] = t0 - best_shift
                    hist_unit[slot] = best
                    hist_count[0] += 1
            continue
        second = -1
        second_lag = 0
        if best >= 0 and best_score > pair_score:
            other, lag, e_pair, e_single = _second_spike(
                x,
                row,
                cands,
                templates,
                support,
                inv_noise,
                trough_row,
                best,
                best_shift,
                max_score,
                max_shift,
                scratch,
                cum2,
            )
            if other >= 0 and e_pair < e_single - pair_gain:
                # choose the snippet's own unit again without the second spike
                for s in range(n_win):
                    for k in range(k_count):
                        scratch[s, k] = x[s, k]
                _add_template(scratch, row, templates, support, other, lag, -1.0)
                _energy(scratch, row, inv_noise, cum2)
                b2, sh2, sc2 = _best_unit(
                    scratch, row, cands, templates, support, inv_noise, max_shift, cum2
                )
                if b2 >= 0:
                    best, best_shift, best_score = b2, sh2, sc2
                if best != other:
                    # and the second spike again, given the first as now chosen
                    o2, l2, e2, _ = _second_spike(
                        x,
                        row,
                        cands,
                        templates,
                        support,
                        inv_noise,
                        trough_row,
                        best,
                        best_shift,
                        max_score,
                        max_shift,
                        scratch,
                        cum2,
                    )
                    if o2 >= 0 and np.sqrt(e2 / max(e_cnt, 1)) <= hidden_max_score:
                        second = o2
                        second_lag = l2
        out_scores[i] = best_score
        good = best_score < max_score or best_score * best_score < max_relative * energy
        gain = 1.0
        if best >= 0 and good:
            gain = _gain(x, row, templates, support, inv_noise, best, best_shift)
            out_gain[i] = gain
            good = gain >= match_min_gain
        if best >= 0 and good:
            out_units[i] = best
            slot = hist_count[0] % cap
            hist_origin[slot] = t0 - best_shift
            hist_unit[slot] = best
            hist_count[0] += 1
            if second >= 0 and hidden_near[c, second]:
                dt = (trough_row[second] - second_lag) - (trough_row[best] - best_shift)
                if abs(dt) <= hidden_max_dt and _smaller(
                    snippets[i], templates, second, trough_row[second]
                ):
                    out_hidden[i] = second
                    out_hidden_dt[i] = dt
                    slot = hist_count[0] % cap
                    hist_origin[slot] = t0 - second_lag
                    hist_unit[slot] = second
                    hist_count[0] += 1
            if alphas[best] > 0.0 and gain >= track_min_gain:
                _track(
                    x,
                    row,
                    templates,
                    support,
                    inv_noise,
                    best,
                    best_shift,
                    alphas[best],
                    track_clip,
                )
        else:
            out_units[i] = -1


@numba.njit(cache=True, nogil=True)
def alike_pairs(
    templates: np.ndarray,
    support: np.ndarray,
    pair_a: np.ndarray,
    pair_b: np.ndarray,
    inv_noise: np.ndarray,
    threshold: float,
    max_rms: float,
    min_overlap: float,
    max_shift: int,
    out: np.ndarray,
) -> None:
    """:func:`acquisition.sorting.clustering.alike` for many pairs of ``templates``
    ``(n_units, n_window, n_channels)`` at once: ``out[p]`` is 1 when units
    ``pair_a[p]`` and ``pair_b[p]`` are one unit, else 0.

    As there: compared on the electrodes both are defined on (``support``), which must
    hold ``min_overlap`` of each one's energy; over lags of ``±max_shift`` the smallest
    L2 distance relative to the larger norm must be below ``threshold`` and the smallest
    RMS distance in noise units (``inv_noise`` per electrode) at most ``max_rms``.
    """
    n_win = templates.shape[1]
    n_ch = templates.shape[2]
    for p in range(pair_a.shape[0]):
        a = pair_a[p]
        b = pair_b[p]
        out[p] = 0
        ea = 0.0
        eb = 0.0
        ea_common = 0.0
        eb_common = 0.0
        n_common = 0
        for ch in range(n_ch):
            sa = support[a, ch] != 0
            sb = support[b, ch] != 0
            if not (sa or sb):
                continue
            for s in range(n_win):
                va = templates[a, s, ch]
                vb = templates[b, s, ch]
                ea += va * va
                eb += vb * vb
                if sa and sb:
                    ea_common += va * va
                    eb_common += vb * vb
            if sa and sb:
                n_common += 1
        if n_common == 0:
            continue
        if ea_common < min_overlap * max(ea, 1e-12) or eb_common < min_overlap * max(eb, 1e-12):
            continue
        norm = np.sqrt(max(ea_common, eb_common, 1e-18))
        best_l2 = np.inf
        best_rms = np.inf
        for sh in range(-max_shift, max_shift + 1):
            # row i of a meets row i - sh of b
            r0 = max(0, sh)
            r1 = n_win + min(0, sh)
            l2 = 0.0
            ms = 0.0
            for ch in range(n_ch):
                if support[a, ch] == 0 or support[b, ch] == 0:
                    continue
                w = inv_noise[ch]
                for i in range(r0, r1):
                    d = templates[a, i, ch] - templates[b, i - sh, ch]
                    l2 += d * d
                    ms += (d * w) * (d * w)
            best_l2 = min(best_l2, np.sqrt(l2))
            best_rms = min(best_rms, np.sqrt(ms / max(n_common * (r1 - r0), 1)))
        if best_l2 / norm < threshold and best_rms <= max_rms:
            out[p] = 1


def warm_up() -> None:
    peel_history(
        np.zeros((8, 2), dtype=np.float32),
        0,
        1,
        np.zeros((1, 3, 2), dtype=np.float32),
        np.ones((1, 2), dtype=np.uint8),
        np.ones(4, dtype=np.int64),
        np.zeros(4, dtype=np.int32),
        1,
        4,
    )
    snippets = np.zeros((1, 3, 2), dtype=np.float32)
    nb = np.array([[0, 1], [1, 0]], dtype=np.int32)
    cand = np.array([[0, -1], [0, -1]], dtype=np.int32)
    templates = np.zeros((1, 3, 2), dtype=np.float32)
    assign_spikes(
        snippets,
        np.zeros(1, dtype=np.int64),
        np.zeros(1, dtype=np.int32),
        nb,
        cand,
        templates,
        np.ones((1, 2), dtype=np.uint8),
        np.ones(1, dtype=np.int64),
        np.ones(2, dtype=np.float32),
        1.0,
        0.2,
        np.full(1, 0.1, dtype=np.float32),
        3.0,
        1,
        0.5,
        10.0,
        2,
        1.0,
        np.ones((2, 1), dtype=np.uint8),
        np.zeros(4, dtype=np.int64),
        np.zeros(4, dtype=np.int32),
        np.zeros(1, dtype=np.int64),
        np.zeros(1, dtype=np.uint8),
        1.0,
        0.5,
        -1.0,
        0.5,
        5,
        1,
        3.5,
        np.zeros(1, dtype=np.int32),
        np.zeros(1, dtype=np.float32),
        np.zeros((1, 3, 2), dtype=np.float32),
        np.zeros(1, dtype=np.int32),
        np.zeros(1, dtype=np.int64),
        np.zeros(1, dtype=np.float32),
    )
    alike_pairs(
        np.ones((2, 3, 2), dtype=np.float32),
        np.ones((2, 2), dtype=np.uint8),
        np.zeros(1, dtype=np.int64),
        np.ones(1, dtype=np.int64),
        np.ones(2, dtype=np.float32),
        0.3,
        0.8,
        0.5,
        1,
        np.zeros(1, dtype=np.uint8),
    )
