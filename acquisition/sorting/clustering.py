"""Building templates from snippets: PCA and density clustering per electrode, then
merging of the clusters that are the same unit seen from neighbouring electrodes.

Plain functions over arrays (vectorised numpy and scikit-learn), no I/O.
"""

from __future__ import annotations

import numpy as np


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


def alike(
    a: np.ndarray,
    b: np.ndarray,
    threshold: float,
    max_shift: int,
    noise: np.ndarray | None = None,
    max_rms: float | None = None,
) -> bool:
    """Are templates ``a`` and ``b`` one unit: closer than ``threshold`` (relative L2, up
    to ``max_shift`` samples of lag) and, with ``noise`` (µV per electrode) and
    ``max_rms``, at most ``max_rms`` noise units RMS apart (two large units alike in
    shape are relatively close yet many noise units apart)?"""
    if _relative_distance(a, b, max_shift) >= threshold:
        return False
    return (
        noise is None or max_rms is None or _noise_rms_distance(a, b, noise, max_shift) <= max_rms
    )


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

    Returns the merged templates (count-weighted means), their counts, and for each the
    indices of the input templates it absorbed.
    """
    n = len(templates)
    parent = list(range(n))

    def find(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    pos = np.asarray(positions_um)
    for a in range(n):
        for b in range(a + 1, n):
            if np.linalg.norm(pos[main_channels[a]] - pos[main_channels[b]]) > radius_um:
                continue
            if alike(templates[a], templates[b], threshold, max_shift, noise, max_rms):
                parent[find(b)] = find(a)
            elif noise is not None and noise_factor > 0:
                expected = 1.25 * np.sqrt(1.0 / counts[a] + 1.0 / counts[b])
                rms = _noise_rms_distance(templates[a], templates[b], noise, max_shift)
                if rms < noise_factor * expected:
                    parent[find(b)] = find(a)
    groups: dict[int, list[int]] = {}
    for i in range(n):
        groups.setdefault(find(i), []).append(i)
    out_t, out_c, members = [], [], []
    for idx in groups.values():
        w = np.array([counts[i] for i in idx], dtype=np.float64)
        # per electrode, the count-weighted mean over the members defined there
        num = sum(templates[i].astype(np.float64) * wi for i, wi in zip(idx, w, strict=True))
        den = sum(support(templates[i]) * wi for i, wi in zip(idx, w, strict=True))
        t = np.where(den > 0, num / np.maximum(den, 1e-12), 0.0)
        out_t.append(np.asarray(t, dtype=np.float32))
        out_c.append(int(w.sum()))
        members.append(idx)
    return out_t, out_c, members


def main_channel(template: np.ndarray) -> int:
    """The electrode with the largest peak-to-peak amplitude."""
    return int(np.argmax(template.max(axis=0) - template.min(axis=0)))


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
    of the raw snippets either way.
    """
    n_channels = neighbours.shape[0]
    noise = np.maximum(np.asarray(noise, dtype=np.float64), 1e-6)
    templates: list[np.ndarray] = []
    counts: list[int] = []
    spreads: list[float] = []
    groups: dict[int, list[np.ndarray]] = {}
    for c in np.unique(channels):
        sel = np.flatnonzero(channels == c)
        nb = neighbours[c]
        inv = np.where(nb >= 0, 1.0 / noise[np.maximum(nb, 0)], 0.0)
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
            groups[c] = cluster_channel(xw, np.ones(k), n_components, min_size, seed)
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
