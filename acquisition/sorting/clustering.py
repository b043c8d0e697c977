"""Building templates from snippets: PCA and density clustering per electrode, a split
of the clusters that still hold two units, then merging of the clusters that are the
same unit seen from neighbouring electrodes.

Plain functions over arrays (vectorised numpy and scikit-learn), no I/O.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

#: :func:`alike` compares two templates only where at least this share of each one's
#: energy lies on the electrodes both are defined on (seen: 0.83-1.0 for two clusters
#: of one unit, 0.19-0.34 for two units 40 µm apart that chained into one)
MIN_OVERLAP = 0.5
#: :func:`split_mixtures` splits a cluster in two when the halves lie this many of
#: their own standard deviations apart along the line between them (about 2.7 for one
#: Gaussian cut in half)
SPLIT_DPRIME = 4.0
#: ... and when their templates differ by this many times the RMS noise of two medians
#: of their sizes (seen: 2.7-3.8 for two units, 0.9 for a unit cut in two by noise)
SPLIT_NOISE_FACTOR = 2.0
#: the two-means of a split is fitted on this share of the members nearest the
#: cluster's centre (seed 3's units 17 and 114 shared a cluster; untrimmed, two-means
#: put one outlier against the other 195 members)
BISECT_CORE = 0.9


def _cluster_labels(features: np.ndarray, min_size: int, seed: int) -> np.ndarray:
    """Density clustering (HDBSCAN) of ``features``; ``-1`` marks noise points."""
    try:
        from sklearn.cluster import HDBSCAN
    except ImportError as exc:  # pragma: no cover - the sort extra brings it
        raise ImportError("online sorting needs scikit-learn: pip install '.[sort]'") from exc
    if features.shape[0] < 2 * min_size:
        return np.zeros(features.shape[0], dtype=np.int64)
    labels = HDBSCAN(
        min_cluster_size=min_size,
        min_samples=max(3, min_size // 4),
        allow_single_cluster=True,
        copy=True,
    ).fit_predict(features)
    return np.asarray(labels, dtype=np.int64)


def cluster_channel(
    snippets: np.ndarray,
    inv_noise: np.ndarray,
    n_components: int,
    min_size: int,
    seed: int,
    max_depth: int = 3,
) -> list[np.ndarray]:
    """Cluster the snippets ``(n, n_window, k)`` of one peak electrode.

    Features: the snippets in noise units (``inv_noise`` per neighbour), flattened and
    projected on their first ``n_components`` principal components. Each cluster is then
    split again on the principal components of its own members (units alike at the scale
    of the whole electrode differ at their own), up to ``max_depth`` times. Returns the
    index arrays of the clusters with at least ``min_size`` members.
    """
    n = snippets.shape[0]
    if n < min_size:
        return []
    x = (snippets * inv_noise[None, None, :]).reshape(n, -1).astype(np.float64)
    return _split(x, np.arange(n), n_components, min_size, seed, max_depth, top=True)


def _split(
    x: np.ndarray,
    idx: np.ndarray,
    n_components: int,
    min_size: int,
    seed: int,
    depth: int,
    top: bool,
) -> list[np.ndarray]:
    """Clusters of the rows ``idx`` of ``x`` (PCA then HDBSCAN, recursively)."""
    if len(idx) < 2 * min_size and not top:
        return [idx]
    y = x[idx] - x[idx].mean(axis=0)
    _, _, vt = np.linalg.svd(y, full_matrices=False)
    features = y @ vt[:n_components].T
    labels = _cluster_labels(features, min_size, seed)
    labels = _reassign_noise(features, labels)
    groups = [idx[labels == lab] for lab in np.unique(labels) if lab >= 0]
    if not top and len(groups) <= 1:
        return [idx]  # no further split: keep the cluster whole, fringe included
    if depth <= 0:
        return groups
    out: list[np.ndarray] = []
    for grp in groups:
        out.extend(_split(x, grp, n_components, min_size, seed, depth - 1, top=False))
    return out


def _reassign_noise(features: np.ndarray, labels: np.ndarray, factor: float = 2.5) -> np.ndarray:
    """Give each noise point (-1) to the nearest cluster when it lies within ``factor``
    times that cluster's median member distance from its centre (density clustering
    leaves the fringe of small clusters unlabelled)."""
    ids = [lab for lab in np.unique(labels) if lab >= 0]
    noise = np.flatnonzero(labels < 0)
    if not ids or not len(noise):
        return labels
    centres = np.stack([features[labels == lab].mean(axis=0) for lab in ids])
    spread = np.array(
        [
            np.median(np.linalg.norm(features[labels == lab] - centres[i], axis=1))
            for i, lab in enumerate(ids)
        ]
    )
    d = np.linalg.norm(features[noise, None, :] - centres[None, :, :], axis=2) / np.maximum(
        spread[None, :], 1e-9
    )
    best = np.argmin(d, axis=1)
    ok = d[np.arange(len(noise)), best] < factor
    out = labels.copy()
    out[noise[ok]] = np.asarray(ids)[best[ok]]
    return out


def _bisect(x: np.ndarray, n_components: int, seed: int) -> tuple[np.ndarray, float]:
    """Two-means split of the rows of ``x`` on their first ``n_components`` principal
    components: (labels 0/1, the halves' separation along the line between their
    centres in units of their own standard deviation)."""
    from sklearn.cluster import KMeans

    y = x - x.mean(axis=0)
    _, _, vt = np.linalg.svd(y, full_matrices=False)
    f = y @ vt[:n_components].T
    # fitted on the core, then every member goes to the nearer centre: a few outliers
    # (overlaps, misaligned spikes) would otherwise take a centre for themselves
    r = np.linalg.norm(f - np.median(f, axis=0), axis=1)
    core = r <= np.quantile(r, BISECT_CORE)
    km = KMeans(2, n_init=4, random_state=seed).fit(f[core] if core.sum() >= 4 else f)
    labels = np.asarray(km.predict(f), dtype=np.int64)
    axis = km.cluster_centers_[1] - km.cluster_centers_[0]
    p = f @ (axis / max(float(np.linalg.norm(axis)), 1e-12))
    a, b = p[labels == 0], p[labels == 1]
    if len(a) < 2 or len(b) < 2:
        return labels, 0.0
    spread = np.sqrt((a.var() + b.var()) / 2.0)
    return labels, float(abs(b.mean() - a.mean()) / max(float(spread), 1e-12))


def split_mixtures(
    x: np.ndarray,
    members: np.ndarray,
    template_of: Callable[[np.ndarray], np.ndarray],
    apart: Callable[[np.ndarray, np.ndarray, int, int], bool],
    n_components: int,
    min_size: int,
    seed: int,
    depth: int = 2,
    min_dprime: float = SPLIT_DPRIME,
) -> list[np.ndarray]:
    """Split the cluster ``members`` (rows of the features ``x``) while it is two.

    Density clustering keeps two units of the same size and shape on one electrode
    together when noise bridges them. Two-means finds such a pair; the split stands
    when the halves are well apart (``min_dprime``), each has ``min_size`` members, and
    their templates (``template_of(rows)``) are ``apart(t0, t1, n0, n1)`` (see
    :func:`learn_templates`: not merged back, and further apart than their own
    estimation noise; a unit's spikes aligned one sample apart form two halves that
    the merge test joins). Up to ``depth`` times.
    """
    if depth <= 0 or len(members) < 2 * min_size:
        return [members]
    labels, dprime = _bisect(x[members], n_components, seed)
    parts = [members[labels == k] for k in (0, 1)]
    if dprime < min_dprime or min(len(q) for q in parts) < min_size:
        return [members]
    if not apart(template_of(parts[0]), template_of(parts[1]), len(parts[0]), len(parts[1])):
        return [members]
    out: list[np.ndarray] = []
    for q in parts:
        out.extend(
            split_mixtures(
                x, q, template_of, apart, n_components, min_size, seed, depth - 1, min_dprime
            )
        )
    return out


def spatial_correlation(
    channels: np.ndarray,
    snippets: np.ndarray,
    groups: dict[int, list[np.ndarray]],
    neighbours: np.ndarray,
    noise: np.ndarray,
    positions_um: np.ndarray,
    bin_um: float = 5.0,
) -> tuple[np.ndarray, np.ndarray]:
    """Correlation of the noise between two electrodes as a function of their distance,
    from the residuals of clustered snippets (member minus its cluster's median, in noise
    units); ``groups[c]`` holds the clusters (indices into the snippets whose peak
    electrode is ``c``). Returns ``(bin edges µm, correlation per bin)``, 1 at 0 µm; a
    bin with no pair gets 0."""
    pos = np.asarray(positions_um, dtype=np.float64)
    edges = np.arange(0.0, 2.0 * float(np.ptp(pos, axis=0).max()) + 2 * bin_um, bin_um)
    total = np.zeros(len(edges))
    count = np.zeros(len(edges))
    for c, clusters in groups.items():
        sel = np.flatnonzero(channels == c)
        nb = neighbours[c]
        nb = nb[nb >= 0]
        d = np.sqrt(((pos[nb][:, None, :] - pos[nb][None, :, :]) ** 2).sum(-1))
        b = np.minimum(np.digitize(d, edges) - 1, len(edges) - 1).ravel()
        x = snippets[sel][:, :, : len(nb)] / noise[nb][None, None, :]
        for m in clusters:
            r = x[m] - np.median(x[m], axis=0)
            cov = np.einsum("nsk,nsl->kl", r, r) / (r.shape[0] * r.shape[1])
            np.add.at(total, b, cov.ravel())
            np.add.at(count, b, 1.0)
    rho = np.where(count > 0, total / np.maximum(count, 1.0), 0.0)
    return edges, rho / max(float(rho[0]), 1e-12)


def _whitener(
    nb: np.ndarray, positions_um: np.ndarray, edges: np.ndarray, rho: np.ndarray
) -> np.ndarray:
    """``S^-1/2`` for the electrodes ``nb`` (no padding), ``S`` their noise correlation
    by distance (eigenvalues floored at 5 % of the largest)."""
    pos = np.asarray(positions_um, dtype=np.float64)[nb]
    d = np.sqrt(((pos[:, None, :] - pos[None, :, :]) ** 2).sum(-1))
    corr = rho[np.minimum(np.digitize(d, edges) - 1, len(rho) - 1)]
    np.fill_diagonal(corr, 1.0)
    w, v = np.linalg.eigh((corr + corr.T) / 2)
    w = np.maximum(w, 0.05 * w.max())
    return np.asarray((v / np.sqrt(w)) @ v.T)


def dense_template(
    snippets: np.ndarray, channel: int, neighbours: np.ndarray, n_channels: int
) -> np.ndarray:
    """Median waveform ``(n_window, n_channels)`` of snippets cut on ``neighbours[channel]``."""
    med = np.median(snippets, axis=0)
    out = np.zeros((snippets.shape[1], n_channels), dtype=np.float32)
    nb = neighbours[channel]
    valid = nb >= 0
    out[:, nb[valid]] = med[:, valid]
    return out


def support(template: np.ndarray) -> np.ndarray:
    """The electrodes a template ``(n_window, n_channels)`` is defined on (non-zero)."""
    return np.asarray(np.any(template != 0, axis=0))


def _relative_distance(a: np.ndarray, b: np.ndarray, max_shift: int) -> float:
    """Smallest ``||a - shift(b)|| / max(||a||, ||b||)`` over shifts of ``±max_shift``,
    on the electrodes both templates are defined on (``inf`` when they share none)."""
    common = support(a) & support(b)
    if not common.any():
        return float("inf")
    a = a[:, common]
    b = b[:, common]
    norm = max(float(np.linalg.norm(a)), float(np.linalg.norm(b)), 1e-9)
    best = np.inf
    n = a.shape[0]
    for s in range(-max_shift, max_shift + 1):
        d = np.linalg.norm(a[s:] - b[: n - s]) if s >= 0 else np.linalg.norm(a[:s] - b[-s:])
        best = min(best, float(d))
    return best / norm


def _noise_rms_distance(a: np.ndarray, b: np.ndarray, noise: np.ndarray, max_shift: int) -> float:
    """Smallest RMS of ``(a - shift(b)) / noise`` on the shared electrodes."""
    common = support(a) & support(b)
    if not common.any():
        return float("inf")
    w = 1.0 / np.maximum(noise[common], 1e-9)
    a = a[:, common] * w
    b = b[:, common] * w
    n = a.shape[0]
    best = np.inf
    for s in range(-max_shift, max_shift + 1):
        d = a[s:] - b[: n - s] if s >= 0 else a[:s] - b[-s:]
        best = min(best, float(np.sqrt(np.mean(d * d))))
    return best


def _overlap(a: np.ndarray, b: np.ndarray) -> float:
    """The smaller of the shares of ``a``'s and ``b``'s energy on the electrodes both
    are defined on."""
    common = support(a) & support(b)
    share = [float((t[:, common] ** 2).sum()) / max(float((t**2).sum()), 1e-12) for t in (a, b)]
    return min(share)


def alike(
    a: np.ndarray,
    b: np.ndarray,
    threshold: float,
    max_shift: int,
    noise: np.ndarray | None = None,
    max_rms: float | None = None,
    min_overlap: float = MIN_OVERLAP,
) -> bool:
    """Are templates ``a`` and ``b`` one unit: closer than ``threshold`` (relative L2, up
    to ``max_shift`` samples of lag) and, with ``noise`` (µV per electrode) and
    ``max_rms``, at most ``max_rms`` noise units RMS apart (two large units alike in
    shape are relatively close yet many noise units apart)?

    Both are compared on the electrodes they share, so that comparison must hold at
    least ``min_overlap`` of each one's energy: two clusters cut around electrodes
    80 µm apart share a corner of their neighbourhoods, where two different units can
    look the same.
    """
    if _overlap(a, b) < min_overlap:
        return False
    if _relative_distance(a, b, max_shift) >= threshold:
        return False
    return (
        noise is None or max_rms is None or _noise_rms_distance(a, b, noise, max_shift) <= max_rms
    )


def _median_noise(n_a: int, n_b: int) -> float:
    """RMS difference (noise units) expected between the medians of ``n_a`` and ``n_b``
    spikes of one unit, from noise alone."""
    return float(1.25 * np.sqrt(1.0 / n_a + 1.0 / n_b))


def distinct(
    a: np.ndarray,
    b: np.ndarray,
    n_a: int,
    n_b: int,
    noise: np.ndarray,
    threshold: float,
    max_rms: float | None,
    max_shift: int = 2,
) -> bool:
    """Are the templates ``a`` and ``b`` (medians of ``n_a`` and ``n_b`` spikes) two
    units: not :func:`alike` (``threshold``, ``max_rms``) and further apart than
    ``SPLIT_NOISE_FACTOR`` times the estimation noise of two such medians (RMS, noise
    units)? Halves of one faint unit are not alike by chance when few."""
    if alike(a, b, threshold, max_shift, noise, max_rms):
        return False
    expected = _median_noise(n_a, n_b)
    return _noise_rms_distance(a, b, noise, max_shift) >= SPLIT_NOISE_FACTOR * expected


def merge_templates(
    templates: list[np.ndarray],
    counts: list[int],
    main_channels: np.ndarray,
    positions_um: np.ndarray,
    radius_um: float,
    threshold: float,
    max_shift: int = 2,
    noise: np.ndarray | None = None,
    noise_factor: float = 0.0,
    max_rms: float | None = None,
) -> tuple[list[np.ndarray], list[int], list[list[int]]]:
    """Merge the templates that are :func:`alike` (``threshold``, ``max_shift``,
    ``noise``, ``max_rms``) whose main electrodes are within ``radius_um``.

    With ``noise`` (µV per electrode) and ``noise_factor > 0``, two templates are also
    merged when their RMS difference in noise units is within ``noise_factor`` times what
    the estimation noise of two medians of ``n_a`` and ``n_b`` spikes gives
    (``1.25 * sqrt(1/n_a + 1/n_b)``): small units are judged against their own noise.

    Agglomerative, by average linkage over the input templates: two groups merge when
    the pairs of their members that pass hold at least half the weight (count times
    count), the groups with the largest such share (then the closest) first. So a small,
    noisy cluster alike to two units joins one of them and does not chain the two into
    one; and members are compared as they are, not through a mean of two that are
    aligned a sample apart (which smears).

    Returns the merged templates (per electrode, count-weighted means over the members
    defined there), their counts, and for each the indices of the input templates it
    absorbed.
    """
    n = len(templates)
    pos = np.asarray(positions_um)
    # the member pairs that pass, with their relative distance
    close: dict[tuple[int, int], float] = {}
    for a in range(n):
        for b in range(a + 1, n):
            if np.linalg.norm(pos[main_channels[a]] - pos[main_channels[b]]) > radius_um:
                continue
            ta, tb = templates[a], templates[b]
            if alike(ta, tb, threshold, max_shift, noise, max_rms):
                close[(a, b)] = _relative_distance(ta, tb, max_shift)
            elif noise is not None and noise_factor > 0 and _overlap(ta, tb) >= MIN_OVERLAP:
                expected = _median_noise(counts[a], counts[b])
                if _noise_rms_distance(ta, tb, noise, max_shift) < noise_factor * expected:
                    close[(a, b)] = _relative_distance(ta, tb, max_shift)
    group_of = list(range(n))
    groups: dict[int, list[int]] = {i: [i] for i in range(n)}

    def link(ga: list[int], gb: list[int]) -> tuple[float, float]:
        """(share of the pair weight that passes, mean distance of those pairs)."""
        total = passing = dist = 0.0
        for i in ga:
            for j in gb:
                w = float(counts[i]) * float(counts[j])
                total += w
                d = close.get((min(i, j), max(i, j)))
                if d is not None:
                    passing += w
                    dist += w * d
        return passing / total, dist / max(passing, 1e-12)

    while True:
        pairs = {tuple(sorted((group_of[i], group_of[j]))) for i, j in close}
        pairs = {q for q in pairs if q[0] != q[1]}
        best: tuple[float, float] | None = None
        chosen = (0, 0)
        for ga, gb in pairs:
            share, dist = link(groups[ga], groups[gb])
            if share >= 0.5 and (best is None or (-share, dist) < (-best[0], best[1])):
                best, chosen = (share, dist), (ga, gb)
        if best is None:
            break
        ga, gb = chosen
        groups[ga] = groups[ga] + groups.pop(gb)
        for i in groups[ga]:
            group_of[i] = ga
    out_t, out_c, members = [], [], []
    for idx in sorted(groups.values(), key=min):
        w = np.array([counts[i] for i in idx], dtype=np.float64)
        num = sum(templates[i].astype(np.float64) * wi for i, wi in zip(idx, w, strict=True))
        den = sum(support(templates[i]) * wi for i, wi in zip(idx, w, strict=True))
        t = np.where(den > 0, num / np.maximum(den, 1e-12), 0.0)
        out_t.append(np.asarray(t, dtype=np.float32))
        out_c.append(int(w.sum()))
        members.append(sorted(idx))
    return out_t, out_c, members


def main_channel(template: np.ndarray) -> int:
    """The electrode with the largest peak-to-peak amplitude."""
    return int(main_channels(template[None])[0])


def main_channels(templates: np.ndarray) -> np.ndarray:
    """:func:`main_channel` of each of ``templates`` ``(units, samples, channels)``."""
    return np.argmax(templates.max(axis=1) - templates.min(axis=1), axis=1)


def learn_templates(
    channels: np.ndarray,
    snippets: np.ndarray,
    neighbours: np.ndarray,
    noise: np.ndarray,
    positions_um: np.ndarray,
    *,
    n_components: int,
    min_size: int,
    merge_threshold: float,
    merge_radius_um: float,
    merge_noise_factor: float = 0.0,
    merge_max_rms: float | None = None,
    seed: int = 0,
    whiten: bool = False,
) -> list[tuple[np.ndarray, int, float]]:
    """Templates from a pool of spikes: ``channels`` (peak electrode per spike) and
    ``snippets`` ``(n, n_window, k)`` on ``neighbours[channel]``.

    Returns ``(template (n_window, n_channels) µV, n_spikes, spread)`` per unit, where
    ``spread`` is the median RMS deviation of the members from the template in noise
    units (about 1 for a clean unit, more for a mixture).

    With ``whiten``, the noise correlation between electrodes (by distance) is measured on
    the residuals of a first clustering, and the snippets are clustered again decorrelated
    across electrodes (units alike on correlated noise separate); templates are medians
    of the raw snippets either way. Each cluster is then split while it holds two units
    (:func:`split_mixtures`, :func:`distinct`), and clusters of one unit seen from
    neighbouring electrodes are merged (:func:`merge_templates`).
    """
    n_channels = neighbours.shape[0]
    noise = np.maximum(np.asarray(noise, dtype=np.float64), 1e-6)
    templates: list[np.ndarray] = []
    counts: list[int] = []
    spreads: list[float] = []
    groups: dict[int, list[np.ndarray]] = {}
    features: dict[int, np.ndarray] = {}
    for c in np.unique(channels):
        sel = np.flatnonzero(channels == c)
        nb = neighbours[c]
        inv = np.where(nb >= 0, 1.0 / noise[np.maximum(nb, 0)], 0.0)
        if not whiten:  # (else the whitened snippets below)
            features[int(c)] = snippets[sel] * inv[None, None, :]
        groups[int(c)] = cluster_channel(snippets[sel], inv, n_components, min_size, seed)
    if whiten and groups:
        edges, rho = spatial_correlation(
            channels, snippets, groups, neighbours, noise, positions_um
        )
        for c in groups:
            sel = np.flatnonzero(channels == c)
            nb = neighbours[c]
            k = int((nb >= 0).sum())
            x = snippets[sel][:, :, :k] / noise[nb[:k]][None, None, :]
            xw = (x @ _whitener(nb[:k], positions_um, edges, rho)).astype(np.float32)
            features[c] = xw
            groups[c] = cluster_channel(xw, np.ones(k), n_components, min_size, seed)

    def apart(a: np.ndarray, b: np.ndarray, n_a: int, n_b: int) -> bool:
        return distinct(a, b, n_a, n_b, noise, merge_threshold, merge_max_rms)

    for c, clusters in groups.items():
        sel = np.flatnonzero(channels == c)
        x = features[c].reshape(len(sel), -1).astype(np.float64)

        def template_of(rows: np.ndarray, c: int = c, sel: np.ndarray = sel) -> np.ndarray:
            return dense_template(snippets[sel[rows]], c, neighbours, n_channels)

        groups[c] = [
            part
            for members in clusters
            for part in split_mixtures(x, members, template_of, apart, n_components, min_size, seed)
        ]
    for c, clusters in groups.items():
        sel = np.flatnonzero(channels == c)
        nb = neighbours[c]
        inv = np.where(nb >= 0, 1.0 / noise[np.maximum(nb, 0)], 0.0)
        for members in clusters:
            t = dense_template(snippets[sel[members]], int(c), neighbours, n_channels)
            templates.append(t)
            counts.append(len(members))
            valid = nb >= 0
            dev = (snippets[sel[members]][:, :, valid] - t[None, :, nb[valid]]) * inv[valid]
            spreads.append(float(np.median(np.sqrt(np.mean(dev * dev, axis=(1, 2))))))
    if not templates:
        return []
    mains = np.array([main_channel(t) for t in templates])
    merged, merged_counts, absorbed = merge_templates(
        templates,
        counts,
        mains,
        positions_um,
        merge_radius_um,
        merge_threshold,
        noise=noise,
        noise_factor=merge_noise_factor,
        max_rms=merge_max_rms,
    )
    merged_spreads = [
        float(np.average([spreads[i] for i in idx], weights=[counts[i] for i in idx]))
        for idx in absorbed
    ]
    return list(zip(merged, merged_counts, merged_spreads, strict=True))
