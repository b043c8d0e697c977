"""Threshold detection: exactly once across chunk boundaries, one event per spike."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from acquisition.config import ThresholdDetectorConfig
from acquisition.detection import Detections, make_detector, neighbourhoods
from bci.types import Chunk

FS = 30_000.0
SIGMA = 10.0


def linear_positions(n: int, pitch: float = 20.0) -> np.ndarray:
    return np.column_stack([np.zeros(n), np.arange(n) * pitch])


def spike_shape() -> np.ndarray:
    """A 2 ms extracellular-like waveform with its trough (-1) at index 20."""
    t = (np.arange(60) - 20) / FS
    return -np.exp(-0.5 * (t / 1.0e-4) ** 2) + 0.3 * np.exp(-0.5 * ((t - 5e-4) / 3e-4) ** 2)


def plant(x: np.ndarray, sample: int, centre: int, amp: float, spread: int = 2) -> None:
    """Add a spike with its trough at ``sample`` on ``centre`` and its neighbours."""
    w = spike_shape()
    for d in range(-spread, spread + 1):
        c = centre + d
        if 0 <= c < x.shape[1]:
            lag = abs(d)  # later and smaller away from the centre
            s0 = sample - 20 + lag
            x[s0 : s0 + len(w), c] += amp * (0.75 ** abs(d)) * w


def run(det, x: np.ndarray, cuts: list[int]) -> list[Detections]:
    out = []
    bounds = [0, *cuts, x.shape[0]]
    for a, b in itertools.pairwise(bounds):
        out.append(det.process(Chunk(x[a:b], a, a / FS, FS)))
    return out


def collect(dets: list[Detections]) -> tuple[np.ndarray, np.ndarray]:
    s = np.concatenate([d.samples for d in dets])
    c = np.concatenate([d.channels for d in dets])
    return s, c


def noise(n: int, c: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).normal(0, SIGMA, size=(n, c)).astype(np.float32)


CFG = ThresholdDetectorConfig(adapt_noise=False, noise_warmup_s=0.1)


def test_boundaries_exactly_once_random_cuts() -> None:
    rng = np.random.default_rng(3)
    n, c = 30_000, 16
    x = noise(n, c)
    times = np.arange(4000, 29_000, 157)  # many spikes, every chunk boundary position
    chans = rng.integers(0, c, size=len(times))
    for t, ch in zip(times, chans, strict=True):
        plant(x, int(t), int(ch), 150.0)
    pos = linear_positions(c)
    whole_s, whole_c = collect(run(make_detector(CFG, pos, FS), x, []))
    for trial in range(3):
        cuts = sorted(set(rng.integers(1, n, size=400 + 100 * trial).tolist()))
        s, ch = collect(run(make_detector(CFG, pos, FS), x, cuts))
        np.testing.assert_array_equal(s, whole_s)
        np.testing.assert_array_equal(ch, whole_c)
    # every planted spike once, at its trough, on its centre electrode; nothing else big
    for t, ch in zip(times, chans, strict=True):
        hit = np.flatnonzero(np.abs(whole_s - t) <= 2)
        assert len(hit) == 1, (t, ch, whole_s[hit])
        assert abs(whole_s[hit[0]] - t) <= 2
        assert whole_c[hit[0]] == ch
    assert len(whole_s) <= len(times) + 3  # noise at 5 sigma: almost nothing


def test_chunks_of_one_sample() -> None:
    x = noise(4000, 4, seed=1)
    plant(x, 3500, 1, 200.0)
    det = make_detector(CFG, linear_positions(4), FS)
    s, ch = collect(run(det, x, list(range(1, 4000))))
    assert s.tolist() == [3500]
    assert ch.tolist() == [1]


def test_five_electrode_spike_gives_one_event() -> None:
    x = noise(6000, 12, seed=2)
    plant(x, 5000, 6, 200.0, spread=2)  # electrodes 4..8, 80 µm tall
    det = make_detector(CFG, linear_positions(12), FS)
    assert det.neighbours.shape[1] == 5  # within 50 µm at 20 µm pitch: itself + 4
    crossing: np.ndarray = np.asarray((x[4980:5020] < -5 * SIGMA).any(axis=0))
    assert crossing[4:9].all()  # really crosses on all five electrodes
    s, ch = collect(run(det, x, [5001, 5003]))
    assert len(s) == 1
    assert abs(s[0] - 5000) <= 2
    assert ch.tolist() == [6]
    d = run(make_detector(CFG, linear_positions(12), FS), x, [])[0]
    assert d.snippets.shape == (1, det.n_window, det.snippet_neighbours.shape[1])
    # the snippet is the data around the trough, peak electrode first
    t = int(d.samples[0])
    np.testing.assert_array_equal(d.snippets[0, :, 0], x[t - det.pre : t + det.post, 6])
    np.testing.assert_array_equal(d.snippets[0, :, 1:3].T, x[t - det.pre : t + det.post, [5, 7]].T)
    assert d.amplitudes[0] == x[t, 6]


def test_neighbourhood_is_by_distance_not_index() -> None:
    rng = np.random.default_rng(4)
    c = 12
    perm = rng.permutation(c)  # channel k sits at depth perm[k] * 20 µm
    pos = linear_positions(c)[perm]
    x_ordered = noise(6000, c, seed=5)
    plant(x_ordered, 5000, 6, 200.0, spread=2)
    plant(x_ordered, 5000, 0, 200.0, spread=0)  # far away (120 µm): its own event
    x = np.ascontiguousarray(x_ordered[:, perm])  # channel k carries depth slot perm[k]
    s, ch = collect(run(make_detector(CFG, pos, FS), x, [2500]))
    assert sorted(perm[ch].tolist()) == [0, 6]
    assert np.abs(s - 5000).max() <= 2
    nb = neighbourhoods(pos, 25.0)
    assert set(perm[nb[int(np.flatnonzero(perm == 6)[0])]].tolist()) == {5, 6, 7}


@pytest.mark.parametrize(
    ("polarity", "sign", "expected"),
    [("pos", 1, 0), ("neg", 1, 1), ("pos", -1, 1), ("both", -1, 1), ("both", 1, 1)],
)
def test_polarity(polarity: str, sign: int, expected: int) -> None:
    x = noise(6000, 4, seed=6)
    t = (np.arange(60) - 20) / FS
    x[4980:5040, 1] -= 200.0 * sign * np.exp(-0.5 * (t / 1.0e-4) ** 2)  # sign=1: downward
    cfg = CFG.model_copy(update={"polarity": polarity})
    s, _ = collect(run(make_detector(cfg, linear_positions(4), FS), x, []))
    assert len(s) == expected


def test_noise_estimate_online() -> None:
    cfg = ThresholdDetectorConfig(noise_warmup_s=0.1, noise_tau_s=0.2)
    det = make_detector(cfg, linear_positions(3), FS)
    x = noise(3000, 3, seed=7)
    det.process(Chunk(x, 0, 0.0, FS))
    assert det.noise_ready
    np.testing.assert_allclose(det.noise, SIGMA, rtol=0.08)
    y = noise(30_000, 3, seed=8) * 3  # the noise triples: the tracker follows
    for a in range(0, 30_000, 30):
        det.process(Chunk(y[a : a + 30], 3000 + a, 0.0, FS))
    np.testing.assert_allclose(det.noise, 3 * SIGMA, rtol=0.1)
    np.testing.assert_allclose(det.thresholds, 5 * det.noise, rtol=1e-5)


def test_gap_restarts_buffer_without_crash() -> None:
    det = make_detector(CFG, linear_positions(4), FS)
    x = noise(6000, 4, seed=9)
    plant(x, 5500, 2, 200.0, spread=0)
    det.process(Chunk(x[:4000], 0, 0.0, FS))
    d = det.process(Chunk(x[4000:], 9000, 0.3, FS))  # 5000 samples missing
    assert len(d) == 1
    assert abs(d.samples[0] - 10_500) <= 2


def test_after_lobes_of_a_big_spike_are_shadowed() -> None:
    x = noise(8000, 4, seed=10)
    t = (np.arange(60) - 20) / FS
    x[4980:5040, 1] -= 300.0 * np.exp(-0.5 * (t / 1.0e-4) ** 2)  # the spike
    x[5010:5070, 1] -= 80.0 * np.exp(-0.5 * (t / 1.0e-4) ** 2)  # its after-lobe, 1 ms later
    x[6980:7040, 2] -= 300.0 * np.exp(-0.5 * (t / 1.0e-4) ** 2)
    x[7010:7070, 2] -= 250.0 * np.exp(-0.5 * (t / 1.0e-4) ** 2)  # a real second spike
    cuts = [5005, 5020, 7015]
    s, _ = collect(run(make_detector(CFG, linear_positions(4), FS), x, cuts))
    assert len(s) == 3
    assert np.abs(s - np.array([5000, 7000, 7030])).max() <= 2
    off = CFG.model_copy(update={"shadow_ms": 0.0})
    s, _ = collect(run(make_detector(off, linear_positions(4), FS), x, cuts))
    assert len(s) == 4


def test_weak_peaks_are_flagged_and_strong_ones_unchanged() -> None:
    x = noise(8000, 4, seed=13)
    plant(x, 4000, 1, 120.0)  # strong (12 sigma)
    plant(x, 5000, 2, 40.0)  # weak: between 3.5 and 5 sigma
    x[6980:7040, 0] += 300.0 * spike_shape()
    x[7010:7070, 0] += 80.0 * spike_shape()  # in the shadow of the spike before it
    cuts = [4001, 5010, 7015]
    base = run(make_detector(CFG, linear_positions(4), FS), x, cuts)
    s0, c0 = collect(base)
    assert all(d.weak is None for d in base)
    cfg = CFG.model_copy(update={"weak_threshold": 3.5, "weak_shadow_fraction": 0.0})
    dets = run(make_detector(cfg, linear_positions(4), FS), x, cuts)
    s, c = collect(dets)
    weak = np.concatenate([d.weak for d in dets])
    assert np.array_equal(s[~weak], s0)
    assert np.array_equal(c[~weak], c0)
    assert np.abs(s0 - np.array([4000, 7000])).max() <= 2
    found = s[weak]
    assert np.abs(found[:, None] - np.array([5000, 7030])[None, :]).min(axis=0).max() <= 2
    # a detector alone never reports them
    strong = [d.strong() for d in dets]
    assert all(d.weak is None for d in strong)
    assert np.array_equal(collect(strong)[0], s0)


def test_shadow_starts_after_shadow_start_ms() -> None:
    x = noise(8000, 4, seed=10)
    t = (np.arange(60) - 20) / FS
    x[4980:5040, 1] -= 300.0 * np.exp(-0.5 * (t / 1.0e-4) ** 2)  # the spike
    x[4998:5058, 1] -= 140.0 * np.exp(-0.5 * (t / 1.0e-4) ** 2)  # 0.6 ms later: a spike
    x[6980:7040, 1] -= 300.0 * np.exp(-0.5 * (t / 1.0e-4) ** 2)
    x[7020:7080, 1] -= 80.0 * np.exp(-0.5 * (t / 1.0e-4) ** 2)  # 1.3 ms later: a lobe
    cfg = CFG.model_copy(update={"shadow_ms": 2.0, "shadow_start_ms": 0.65})
    s, _ = collect(run(make_detector(cfg, linear_positions(4), FS), x, [5003, 5030]))
    assert np.abs(s - np.array([5000, 5018, 7000])).max() <= 2
    s, _ = collect(run(make_detector(CFG, linear_positions(4), FS), x, [5003, 5030]))
    assert np.abs(s - np.array([5000, 7000])).max() <= 2


def test_broad_humps_are_weak_or_dropped_and_sharp_spikes_kept() -> None:
    """A slow hump (the filter's after-lobe of a big spike) crossing the threshold is
    not a spike: weak when weak peaks are on, else dropped; sharp spikes are unchanged,
    whatever the chunking."""
    x = noise(9000, 4, seed=21)
    t = (np.arange(200) - 100) / FS
    x[3900:4100, 1] -= 70.0 * np.exp(-0.5 * (t / 4.0e-4) ** 2)  # 7 sigma, 0.4 ms wide
    plant(x, 6000, 2, 70.0)  # a spike of the same depth, 0.1 ms wide
    plant(x, 8000, 1, 60.0)  # and a smaller one
    cuts = [3990, 4003, 6001, 8010]
    off = collect(run(make_detector(CFG, linear_positions(4), FS), x, cuts))[0]
    assert np.abs(off - np.array([4000, 6000, 8000])[:, None]).min(axis=1).max() <= 20
    broad = CFG.model_copy(update={"max_shoulder": 0.4})
    s, _ = collect(run(make_detector(broad, linear_positions(4), FS), x, cuts))
    assert np.abs(s - np.array([6000, 8000])).max() <= 2
    weak_on = broad.model_copy(update={"weak_threshold": 3.5})
    dets = run(make_detector(weak_on, linear_positions(4), FS), x, cuts)
    s, _ = collect(dets)
    weak = np.concatenate([d.weak for d in dets])
    assert np.abs(s[~weak] - np.array([6000, 8000])).max() <= 2
    assert np.abs(s[weak] - 4000).min() <= 20
    for cut in ([], [4001], [3995, 4005, 4010]):  # chunking does not change the result
        again = collect(run(make_detector(broad, linear_positions(4), FS), x, cut))[0]
        assert np.array_equal(again, s[~weak])


def test_adaptive_thresholds_do_not_depend_on_chunking() -> None:
    """With the noise estimate adapting, the thresholds are set on a fixed grid of
    absolute samples: a run in 1 ms chunks and one in chunks of up to 100 ms (a live
    loop catching up after a stall) find the same peaks, strong and weak, even those
    at the threshold while the noise level drifts."""
    rng = np.random.default_rng(5)
    n, c = 90_000, 8
    x = noise(n, c, seed=5) * np.linspace(1.0, 1.4, n, dtype=np.float32)[:, None]
    times = np.arange(4000, n - 100, 97)
    chans = rng.integers(0, c, size=len(times))
    amps = rng.uniform(3.0, 6.0, size=len(times)) * SIGMA  # around both thresholds
    for t, ch, a in zip(times, chans, amps, strict=True):
        plant(x, int(t), int(ch), float(a), spread=1)
    cfg = ThresholdDetectorConfig(
        adapt_noise=True, noise_tau_s=0.3, noise_warmup_s=0.1, weak_threshold=3.5
    )
    pos = linear_positions(c)

    def found(cuts: list[int]) -> tuple[np.ndarray, ...]:
        dets = run(make_detector(cfg, pos, FS), x, cuts)
        weak = np.concatenate([d.weak if d.weak is not None else [] for d in dets])
        return (*collect(dets), weak.astype(bool))

    reference = found(list(range(30, n, 30)))
    cuts = np.cumsum(rng.integers(1, 3000, size=200))
    s, ch, weak = found(sorted(cuts[cuts < n].tolist()))
    assert len(reference[0]) > 500
    assert reference[2].sum() > 100  # many weak peaks: the thresholds matter here
    np.testing.assert_array_equal(s, reference[0])
    np.testing.assert_array_equal(ch, reference[1])
    np.testing.assert_array_equal(weak, reference[2])


def test_residual_pass_looks_again_where_a_weak_peak_was_unmasked() -> None:
    """A first-pass peak masks the residual pass on its own electrode (with
    ``residual_mask: unpeeled``): what its template left is not a new spike. A weak peak
    the sorter rejected was never peeled, so :meth:`unmask` lets the residual pass see
    it again (with the later spikes peeled too); the others stay masked."""
    x = noise(9000, 4, seed=21)
    plant(x, 4500, 1, 28.0)  # both weak: between 3.5 and 4.5 sigma
    plant(x, 6000, 2, 28.0)
    cfg = CFG.model_copy(
        update={"weak_threshold": 3.5, "threshold": 4.5, "residual_mask": "unpeeled"}
    )

    def passes(unmask: bool) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        det = make_detector(cfg, linear_positions(4), FS, residual=True)
        first, late = [], []
        for a in range(0, len(x), 300):
            d = det.process(Chunk(x[a : a + 300], a, a / FS, FS))
            first.append(d)
            if unmask:  # the sorter rejected the first one
                out = np.abs(d.samples - 4500) <= 2
                det.unmask(d.samples[out], d.channels[out])
            late.append(det.residual(lambda buf, first_sample, pre: None))  # peels nothing
        weak = np.concatenate([d.weak for d in first])
        return *(v[weak] for v in collect(first)), *collect(late)

    s, c, masked, _ = passes(False)
    near = np.abs(s[:, None] - np.array([4500, 6000])[None, :]) <= 2
    assert near.sum(axis=0).tolist() == [1, 1]  # the first pass found both, weak
    assert not (np.abs(masked[:, None] - np.array([4500, 6000])) <= 2).any()
    _, _, again, chans = passes(True)
    hit = np.abs(again - 4500) <= 2
    assert hit.sum() == 1  # found again, once, where the first pass found it
    assert chans[hit][0] == c[near[:, 0]][0]
    assert not (np.abs(again - 6000) <= 2).any()  # the other peak still masks
