"""The online template sorter (stage class)."""

from __future__ import annotations

import concurrent.futures
import logging
import multiprocessing
from dataclasses import replace
from typing import Any

import numpy as np

from acquisition.config import TemplateSorterConfig
from acquisition.detection.base import Detections
from acquisition.kernels.sort import alike_pairs, assign_spikes, peel_history
from acquisition.sorting.clustering import (
    MIN_OVERLAP,
    alike,
    learn_templates,
    main_channel,
    main_channels,
)

log = logging.getLogger(__name__)

#: a hidden spike and a detection this close in time (and within hidden_radius_um) are
#: one spike found twice (on seed 3 such pairs lie 0-2 samples apart at 30 kHz)
_SAME_SPIKE_MS = 0.1
_NO_HIDDEN = (np.empty(0, np.int64), np.empty(0, np.int32), np.empty(0, np.int64))

#: A main electrode or trough row changes when the new one is this much larger.
_SWITCH = 1.1

#: Two alike units are one neuron only if the smaller trough is at least this share of
#: the larger: both templates follow that neuron's spikes, so they have its size (a
#: fainter look-alike is a neighbour, or a sink that keeps a neighbour's spikes apart).
_DUPLICATE_SIZE = 0.85

#: Assigned spikes remembered for peeling (only those within a window of a new one count).
_HISTORY = 4096


class _Pool:
    """A bounded store of spikes (peak electrode, snippet, sample); oldest dropped."""

    def __init__(self, capacity: int, per_channel: int | None = None) -> None:
        self.capacity = capacity
        self.per_channel = per_channel
        self.channels: list[np.ndarray] = []
        self.snippets: list[np.ndarray] = []
        self.samples: list[np.ndarray] = []
        self.size = 0
        self.dropped = 0
        self._per_channel_count: dict[int, int] = {}

    def add(self, channels: np.ndarray, snippets: np.ndarray, samples: np.ndarray) -> None:
        if self.per_channel is not None and len(channels):
            keep = np.ones(len(channels), dtype=bool)
            for i, c in enumerate(channels.tolist()):
                k = self._per_channel_count.get(c, 0)
                if k >= self.per_channel:
                    keep[i] = False
                else:
                    self._per_channel_count[c] = k + 1
            self.dropped += int((~keep).sum())
            channels, snippets, samples = channels[keep], snippets[keep], samples[keep]
        if not len(channels):
            return
        self.channels.append(channels.copy())
        self.snippets.append(snippets.copy())
        self.samples.append(samples.copy())
        self.size += len(channels)
        while self.size > self.capacity and self.channels:
            self.size -= len(self.channels[0])
            self.dropped += len(self.channels[0])
            del self.channels[0], self.snippets[0], self.samples[0]

    def take(self, keep_from: int | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Everything in the pool; the pool is emptied, or with ``keep_from`` keeps the
        spikes from that absolute sample on (a sliding window)."""
        if not self.channels:
            out = (np.empty(0, np.int32), np.empty((0, 0, 0), np.float32), np.empty(0, np.int64))
        else:
            out = (
                np.concatenate(self.channels),
                np.concatenate(self.snippets),
                np.concatenate(self.samples),
            )
        self.channels, self.snippets, self.samples = [], [], []
        self.size = 0
        self._per_channel_count = {}
        if keep_from is not None and len(out[0]):
            recent = out[2] >= keep_from
            self.add(out[0][recent], out[1][recent], out[2][recent])
        return out


class OnlineTemplateSorter:
    """Label detected spikes with stable unit ids, causally.

    Consumes :class:`~acquisition.detection.base.Detections` (snippets on the peak
    electrode's neighbourhood, noise per electrode) and produces an int32 array of unit
    ids, one per spike (``-1``: not assigned, always during the learning period).

    For ``learning_s`` of stream, snippets are pooled; then templates are learned (PCA and
    HDBSCAN per peak electrode, merged across neighbours). From then on each spike is
    assigned to the closest template near its peak electrode in the same call (the
    residual scored on all the snippet's electrodes); templates follow drift, onto new
    electrodes too; unmatched spikes are pooled and clustered every ``recluster_every_s``, a
    cluster of at least ``new_unit_min_spikes`` unlike every template founds a new unit.
    Unit ids never change once given; a unit that has become alike to another (one
    neuron learned as two) is retired into it at a reclustering. Overlaps: templates of
    spikes already assigned are peeled off each snippet, a snippet that fits no single
    template is fitted as two spikes, and :meth:`with_hidden` adds the smaller spike of
    an overlap that the detector merged into one event. With ``background=True``
    learning runs in a worker process and the stage keeps labelling meanwhile (real
    time); else it blocks (offline, deterministic).
    """

    def __init__(
        self,
        config: TemplateSorterConfig,
        positions_um: np.ndarray,
        neighbours: np.ndarray,
        n_window: int,
        sample_rate: float,
        *,
        background: bool = False,
        peak_row: int | None = None,
    ) -> None:
        if peak_row is None and config.echo_max_snr is not None:
            raise ValueError(
                "sorter.echo_max_snr tests the detected peak: give the sorter the snippet "
                "row of the peak (peak_row, the detector's rows before it)"
            )
        self.config = config
        #: the snippet row of the detected peak (the detector's rows before it)
        self.peak_row = 0 if peak_row is None else peak_row
        # the kernel's limits, None resolved once: (max score, min gain) of a weak peak's
        # confirmation, in the first pass and in the residual pass; the gain tests
        self._confirm = (config.confirm_max_score, config.confirm_min_gain)
        self._residual_confirm = (
            _or(config.residual_confirm_max_score, config.confirm_max_score),
            _or(config.residual_confirm_min_gain, config.confirm_min_gain),
        )
        self._match_min_gain = _or(config.match_min_gain, -np.inf)
        self._track_min_gain = _or(config.track_min_gain, -np.inf)
        self.positions_um = np.asarray(positions_um, dtype=np.float64)
        self.neighbours = neighbours
        self.n_channels = int(neighbours.shape[0])
        self.n_window = n_window
        self.sample_rate = float(sample_rate)
        self.background = background
        self._hidden_max_dt = round(config.hidden_max_ms * self.sample_rate / 1000.0)
        #: a detection and a hidden spike this close (samples) are one spike
        self._same_dt = max(1, round(_SAME_SPIKE_MS * self.sample_rate / 1000.0))
        #: how much earlier than the newest spike a spike may be labelled (a residual
        #: pass finds spikes late); set by whoever runs one (see :meth:`peel`)
        self.order_slack = 0
        pos = self.positions_um
        self._dist = np.sqrt(((pos[:, None, :] - pos[None, :, :]) ** 2).sum(-1))
        self._radius = float(
            max(self._dist[c, nb[nb >= 0]].max() for c, nb in enumerate(neighbours))
        )
        self._executor: concurrent.futures.ProcessPoolExecutor | None = None
        if background:
            # the worker process starts now, not at the end of the learning period: a
            # spawn, and the worker's imports, would otherwise begin inside a chunk
            self._worker()
        self.reset()

    def reset(self) -> None:
        """Forget every unit and start a new learning period."""
        self.templates = np.zeros((0, self.n_window, self.n_channels), dtype=np.float32)
        self.unit_counts: list[int] = []
        self.alphas = np.zeros(0, dtype=np.float32)  # template tracking rate per unit
        self.muted = np.zeros(0, dtype=bool)
        #: units found to duplicate another (see :meth:`_retire_duplicates`): no longer
        #: matched; ``merged_into[u]`` is the unit that takes their spikes
        self.retired = np.zeros(0, dtype=bool)
        self.merged_into: dict[int, int] = {}
        #: spikes reported under each unit so far (none for a muted unit, whose spikes
        #: are reported unassigned)
        self.assigned = np.zeros(0, dtype=np.int64)
        #: spikes matched to each unit so far, reported or not (a muted unit's too), and
        #: the sample at which each unit was installed: a muted unit's rate, measured
        #: online; and units muted for good (see :meth:`_review_sinks`)
        self.matched = np.zeros(0, dtype=np.int64)
        self.born = np.zeros(0, dtype=np.int64)
        self.sunk = np.zeros(0, dtype=bool)
        self._below = np.zeros(0, dtype=bool)  # under the floor at the last review
        self._now = 0
        self.spreads: list[float] = []
        self._job_span_s = 1.0
        self.support = np.zeros((0, self.n_channels), dtype=np.uint8)
        self.candidates = np.full((self.n_channels, 1), -1, dtype=np.int32)
        self.trough_row = np.zeros(0, dtype=np.int64)
        self.mains = np.zeros(0, dtype=np.int64)
        self.hidden_near = np.zeros((self.n_channels, 0), dtype=np.uint8)
        self.hidden = _NO_HIDDEN
        self.dropped: np.ndarray | None = None
        self.gains = np.zeros(0, dtype=np.float32)
        self.scores = np.zeros(0, dtype=np.float32)
        self.learning = True
        self._start: int | None = None
        self._next_recluster = 0
        cfg = self.config
        self._learn_pool = _Pool(cfg.max_learning_spikes, per_channel=1000)
        self._unmatched = _Pool(cfg.max_unmatched)
        self._pending: concurrent.futures.Future[list[tuple[np.ndarray, int, float]]] | None = None
        self._pending_is_learning = False
        self._noise = np.ones(self.n_channels, dtype=np.float32)
        # spikes assigned lately (template origin, unit): peeled off the snippets that
        # overlap them
        self._hist_origin = np.zeros(_HISTORY, dtype=np.int64)
        self._hist_unit = np.zeros(_HISTORY, dtype=np.int32)
        self._hist_count = np.zeros(1, dtype=np.int64)
        # hidden spikes and detections reported lately (sample, electrode): a spike is
        # not reported both ways (see :meth:`_one_report_per_spike`)
        self._recent_hidden = (np.empty(0, np.int64), np.empty(0, np.int64))
        self._recent_reported = (np.empty(0, np.int64), np.empty(0, np.int64))
        self.n_duplicates = 0
        self.n_assigned = 0
        self.n_unmatched = 0
        self.n_confirmed = 0
        self.n_rejected = 0
        self.n_late = 0
        self.n_echoes = 0

    @property
    def n_units(self) -> int:
        return int(self.templates.shape[0])

    # ---------------------------------------------------------------- learning

    def _learn_job(
        self, pool: _Pool, min_size: int, keep_from: int | None = None
    ) -> tuple[tuple[Any, ...], dict[str, Any]]:
        """The arguments of :func:`learn_templates` for the snippets pooled so far
        (taken here, in the caller's thread, so the job itself holds no shared state;
        ``keep_from``: see :meth:`_Pool.take`)."""
        channels, snippets, samples = pool.take(keep_from)
        span = float(samples.max() - samples.min()) if len(samples) else 0.0
        self._job_span_s = max(span / self.sample_rate, 1e-3)
        cfg = self.config
        args = (channels, snippets, self.neighbours, self._noise.copy(), self.positions_um)
        kwargs = {
            "n_components": cfg.n_components,
            "min_size": min_size,
            "merge_threshold": cfg.merge_threshold,
            "merge_radius_um": self._radius,
            "merge_noise_factor": cfg.merge_noise_factor,
            "merge_max_rms": cfg.merge_max_rms,
            "seed": cfg.seed,
            "whiten": cfg.whiten_clustering,
        }
        return args, kwargs

    def _start_job(
        self, pool: _Pool, min_size: int, learning: bool, keep_from: int | None = None
    ) -> None:
        self._pending_is_learning = learning
        args, kwargs = self._learn_job(pool, min_size, keep_from)
        if not len(args[0]):
            self._install([], learning)
        elif self.background:
            self._pending = self._worker().submit(learn_templates, *args, **kwargs)
        else:
            self._install(learn_templates(*args, **kwargs), learning)

    def _worker(self) -> concurrent.futures.ProcessPoolExecutor:
        """The clustering worker: a process, not a thread, since clustering holds the
        interpreter for seconds, which would stall the real-time loop sharing it.
        Started with a job that only imports what clustering needs."""
        if self._executor is None:
            ctx = multiprocessing.get_context("spawn")
            self._executor = concurrent.futures.ProcessPoolExecutor(1, mp_context=ctx)
            self._executor.submit(_ready_worker)
        return self._executor

    def _poll_job(self) -> None:
        if self._pending is not None and self._pending.done():
            result = self._pending.result()
            self._pending = None
            self._install(result, self._pending_is_learning)

    def _install(self, found: list[tuple[np.ndarray, int, float]], learning: bool) -> None:
        """Add new units (during learning: all; later: those unlike existing ones)."""
        new = []
        for template, count, spread in found:
            if not learning and self._like_existing(template):
                continue
            new.append((template, count, spread))
        if new:
            self.templates = np.concatenate(
                [self.templates, np.stack([t for t, _, _ in new]).astype(np.float32)]
            )
            self.unit_counts.extend(c for _, c, _ in new)
            self.alphas = np.concatenate([self.alphas, [self._alpha(c) for _, c, _ in new]]).astype(
                np.float32
            )
            self.spreads.extend(s for _, _, s in new)
            self.muted = np.concatenate([self.muted, [self._weak(t, c) for t, c, _ in new]])
            self.retired = np.concatenate([self.retired, np.zeros(len(new), dtype=bool)])
            self.assigned = np.concatenate([self.assigned, np.zeros(len(new), dtype=np.int64)])
            self.matched = np.concatenate([self.matched, np.zeros(len(new), dtype=np.int64)])
            self.born = np.concatenate([self.born, np.full(len(new), self._now, dtype=np.int64)])
            self.sunk = np.concatenate([self.sunk, np.zeros(len(new), dtype=bool)])
            self._below = np.concatenate([self._below, np.zeros(len(new), dtype=bool)])
            fresh = np.stack([np.any(t != 0, axis=0) for t, _, _ in new]).astype(np.uint8)
            self.support = np.ascontiguousarray(np.concatenate([self.support, fresh]))
        if learning:
            self.learning = False
            self.n_learned = self.n_units
            log.info("online sorter: %d units after learning", self.n_units)
        elif new:
            log.info("online sorter: %d new unit(s), %d in all", len(new), self.n_units)
        self._update_candidates()

    def _alpha(self, count: int) -> float:
        """Tracking rate per spike of a unit found with ``count`` spikes in the last job:
        ``drift_alpha``, or less for a unit firing so often that templates would follow
        it faster than ``drift_tau_s`` (noisier, and pulled by its neighbours' spikes)."""
        cfg = self.config
        if cfg.drift_tau_s <= 0:
            return cfg.drift_alpha
        rate = max(count / self._job_span_s, 1e-3)
        return min(cfg.drift_alpha, 1.0 / (rate * cfg.drift_tau_s))

    def _snr(self, templates: np.ndarray) -> np.ndarray:
        """Per template of ``templates`` ``(units, samples, channels)``: the trough on its
        main electrode over that electrode's noise (µV / µV)."""
        mains = main_channels(templates)
        troughs = templates.min(axis=1)[np.arange(len(mains)), mains]
        return -troughs / np.maximum(self._noise[mains], 1e-6)

    def _weak(self, template: np.ndarray, count: int) -> bool:
        """A small, rarely firing cluster: most likely noise crossings, the residue of
        overlaps or a mixture of faint neurons; or one whose trough is under
        ``weak_unit_floor_snr`` (noise that crossed the threshold, at any rate). Such a
        unit is kept as a sink (its spikes do not pollute real units) but its spikes are
        reported unassigned."""
        cfg = self.config
        snr = float(self._snr(template[None])[0])
        rate = count / self._job_span_s
        if snr < cfg.weak_unit_floor_snr:
            return True
        return snr < cfg.weak_unit_snr and rate < cfg.weak_unit_rate_hz

    def _review_sinks(self) -> None:
        """Decide again, at a reclustering, which units are sinks (muted).

        - A muted unit is reported from now on once it has been matched at
          ``weak_unit_rate_hz`` or more, over at least ``recluster_every_s`` since it was
          installed. The rate that muted it was its cluster's size over the job's span,
          and that undercounts: a cluster holds only the spikes that clustering kept
          together (seed 4's ground-truth unit 76, firing at 2.4 Hz, was learned from 30
          spikes in 30 s and muted at 1.0 Hz).
        - A unit whose tracked trough is under ``weak_unit_floor_snr`` at two
          reclusterings in a row is a sink from now on, for good (once is not enough: a
          faint neuron's template dips at times under tracking). A neuron's template
          holds its size; a unit that gathers noise crossings flattens as it averages
          them (seed 4's unit 215: a trough of 5.0 noise units when learned, 2.9 at 300
          s, four in five of its spikes near no neuron's main electrode).

        Its id stays its own either way: muting only stops reporting its spikes.
        """
        cfg = self.config
        live = ~self.retired
        snr = self._snr(self.templates)
        below = snr < cfg.weak_unit_floor_snr
        sunk = live & ~self.sunk & below & self._below
        self._below = below
        for u in np.flatnonzero(sunk).tolist():
            log.info(
                "online sorter: unit %d's trough is %.1f x noise: a sink from now on", u, snr[u]
            )
        self.sunk |= sunk
        span = (self._now - self.born) / self.sample_rate
        rate = self.matched / np.maximum(span, 1e-3)
        loud = self.muted & live & ~self.sunk & ~below & (span >= cfg.recluster_every_s)
        loud &= rate >= cfg.weak_unit_rate_hz
        for u in np.flatnonzero(loud).tolist():
            log.info(
                "online sorter: unit %d matched at %.2f Hz over %.0f s: reported from now on",
                u,
                rate[u],
                span[u],
            )
        self.muted = (self.muted & ~loud) | self.sunk

    def _like_existing(self, template: np.ndarray) -> bool:
        main = main_channel(template)
        cfg = self.config
        near = ~self.retired & (self._dist[main, main_channels(self.templates)] <= self._radius)
        return any(
            alike(
                template, self.templates[u], cfg.merge_threshold, 2, self._noise, cfg.merge_max_rms
            )
            for u in np.flatnonzero(near)
        )

    def _retire_duplicates(self) -> None:
        """Retire each unit that has become alike to another (the merge test of
        learning): it no longer takes spikes, which go to the unit it duplicates.

        Learning leaves a few small clusters of a unit's fringe (spikes that peaked on a
        neighbouring electrode) as units of their own. Tracking then pulls such a
        template onto its parent's waveform and it takes more and more of the parent's
        spikes: one neuron reported as two. Of the two, the one kept is a reported
        (not muted) unit, then the one that took more spikes (``assigned``), then the
        older; the other's id is not given again, and ``merged_into`` records where its
        spikes go now.
        """
        cfg = self.config
        live = np.flatnonzero(~self.retired)
        if len(live) < 2:
            return
        mains = main_channels(self.templates[live]).astype(np.int64)
        i, j = np.nonzero(np.triu(self._dist[mains[:, None], mains[None, :]] <= self._radius, 1))
        pair_a, pair_b = live[i].astype(np.int64), live[j].astype(np.int64)
        same = np.zeros(len(pair_a), dtype=np.uint8)
        inv_noise = (1.0 / np.maximum(self._noise, 1e-6)).astype(np.float32)
        alike_pairs(
            self.templates,
            self.support,
            pair_a,
            pair_b,
            inv_noise,
            cfg.merge_threshold,
            np.inf if cfg.merge_max_rms is None else cfg.merge_max_rms,
            MIN_OVERLAP,
            2,
            same,
        )
        for a, b in zip(pair_a[same == 1].tolist(), pair_b[same == 1].tolist(), strict=True):
            if self.retired[a] or self.retired[b]:
                continue  # (one of them went in an earlier pair)
            size_a = -float(self.templates[a].min())
            size_b = -float(self.templates[b].min())
            if min(size_a, size_b) < _DUPLICATE_SIZE * max(size_a, size_b):
                continue  # a fainter look-alike: a neighbour, not the same neuron
            keep_a = (self.muted[b], self.assigned[a], -a) > (
                self.muted[a],
                self.assigned[b],
                -b,
            )
            keep, gone = (a, b) if keep_a else (b, a)
            self.retired[gone] = True
            self.merged_into[gone] = keep
            log.info(
                "online sorter: unit %d duplicates unit %d (%d and %d spikes): retired",
                gone,
                keep,
                self.assigned[gone],
                self.assigned[keep],
            )

    def _update_candidates(self) -> None:
        """Per electrode, the units whose main electrode is within the snippet radius.

        With hysteresis: a unit's main electrode (and its trough's row) changes only when
        the new one is ``_SWITCH`` times larger than the old one now is, so that noise in
        a tracked template does not make them flicker (a real drift soon passes that).
        """
        n_old = len(self.mains)
        mains = main_channels(self.templates).astype(np.int64)
        trough = np.array(
            [int(np.argmin(t[:, m])) for t, m in zip(self.templates, mains, strict=True)],
            dtype=np.int64,
        )
        for u in range(min(n_old, len(mains))):
            t = self.templates[u]
            old, old_row = int(self.mains[u]), int(self.trough_row[u])
            ptp = t.max(axis=0) - t.min(axis=0)
            if mains[u] != old and ptp[mains[u]] < _SWITCH * ptp[old]:
                mains[u] = old
                trough[u] = int(np.argmin(t[:, old]))
            if mains[u] == old and t[trough[u], old] > _SWITCH * t[old_row, old]:
                trough[u] = old_row  # (troughs are negative)
        self.mains = mains
        self.hidden_near = np.ascontiguousarray(
            (self._dist[:, mains] <= self.config.hidden_radius_um) & ~self.retired, dtype=np.uint8
        )
        self.trough_row = trough
        live = ~self.retired
        lists = [
            np.flatnonzero((self._dist[c, mains] <= self._radius) & live)
            for c in range(self.n_channels)
        ]
        m = max([1, *(len(x) for x in lists)])
        cand = np.full((self.n_channels, m), -1, dtype=np.int32)
        for c, idx in enumerate(lists):
            cand[c, : len(idx)] = idx
        self.candidates = cand

    # ---------------------------------------------------------------- processing

    def process(self, det: Detections) -> np.ndarray:
        """Unit ids (int32) for the spikes of ``det``, in order.

        Weak candidates (``det.weak``) that match no unit well are not spikes: they get
        -1 here and :meth:`with_hidden` drops them (during learning: all of them). So do
        the echoes (``echo_max_snr``): detections that the spikes labelled before them
        explain, once peeled off.
        """
        n = len(det)
        units = np.full(n, -1, dtype=np.int32)
        self.hidden = _NO_HIDDEN
        weak = det.weak
        self.dropped = weak if weak is not None and weak.any() else None
        if det.noise is not None:
            self._noise = det.noise
        self._now = det.end_sample
        if self._start is None:
            self._start = det.first_sample
            self._next_recluster = self._start + round(
                (self.config.learning_s + self.config.recluster_every_s) * self.sample_rate
            )
        self._poll_job()
        if self.learning:
            if self._pending is None:
                if self.dropped is not None:
                    strong = ~self.dropped
                    self._learn_pool.add(
                        det.channels[strong], det.snippets[strong], det.samples[strong]
                    )
                else:
                    self._learn_pool.add(det.channels, det.snippets, det.samples)
                end_learning = self._start + round(self.config.learning_s * self.sample_rate)
                if det.end_sample >= end_learning:
                    self._start_job(self._learn_pool, self.config.min_cluster_spikes, True)
            return units
        snippets = det.snippets
        if n and self.n_units:
            weak_u8 = weak.view(np.uint8) if weak is not None else np.zeros(n, dtype=np.uint8)
            scores, snippets, hidden, hidden_dt, gains = self._assign(det, weak_u8, units)
            self.gains, self.scores = gains, scores
            found = np.flatnonzero(hidden >= 0)
            if len(found):
                keep = found[~self.muted[hidden[found]]]
                self.hidden = (keep, hidden[keep], hidden_dt[keep])
        if self.dropped is not None:
            # a weak candidate: kept when it matched a unit that is reported
            rejected = self.dropped & (units < 0)
            if self.muted.any():
                rejected |= self.dropped & (units >= 0) & self.muted[np.maximum(units, 0)]
            n_weak = int(self.dropped.sum())
            n_rej = int(rejected.sum())
            self.n_confirmed += n_weak - n_rej
            self.n_rejected += n_rej
            units[rejected] = -1
            self.dropped = rejected
            n -= n_rej
            if not rejected.any():
                self.dropped = None
        echo = units == -4
        if echo.any():  # the tail of a spike labelled before: not a spike
            units[echo] = -1
            self.dropped = echo if self.dropped is None else self.dropped | echo
            n_echo = int(echo.sum())
            self.n_echoes += n_echo
            n -= n_echo
        if self.n_units:
            n -= self._one_report_per_spike(det, units)
            self.matched += np.bincount(units[units >= 0], minlength=self.n_units)
        if self.muted.any():
            hit = units >= 0
            units[hit & self.muted[np.maximum(units, 0)]] = -2
        miss = units == -1
        if self.dropped is not None:
            miss &= ~self.dropped
        n_miss = int(miss.sum())
        self.n_assigned += n - n_miss
        self.n_unmatched += n_miss
        units[units == -2] = -1  # a weak unit's spikes: matched, not reported
        if self.n_units:
            self.assigned += np.bincount(units[units >= 0], minlength=self.n_units)
        if n_miss:
            # what is left once known spikes are peeled off
            self._unmatched.add(det.channels[miss], snippets[miss], det.samples[miss])
        if det.end_sample >= self._next_recluster and self._pending is None:
            self._next_recluster = det.end_sample + round(
                self.config.recluster_every_s * self.sample_rate
            )
            self._review_sinks()
            self._retire_duplicates()
            self._update_candidates()  # main electrodes may have drifted
            window = self.config.unmatched_window_s
            keep_from = det.end_sample - round(window * self.sample_rate) if window > 0 else None
            self._start_job(self._unmatched, self.config.new_unit_min_spikes, False, keep_from)
        return units

    def _one_report_per_spike(self, det: Detections, units: np.ndarray) -> int:
        """Report each spike once, though the sorter may find it both as a detection
        and as the hidden second spike of an overlap (``hidden_max_ms`` reaches past the
        detector's exclusion: a smaller spike on a bigger one's flank is often detected
        but, distorted by the bigger one, left unmatched, or not detected at all).

        A hidden spike and a detection within ``_same_dt`` samples and
        ``hidden_radius_um`` are one spike. Of the two, the one found later was found in
        what was left once the earlier was peeled off, and goes: the hidden spike when
        the detection came first (an unmatched detection of this batch takes its unit),
        the detection when the hidden spike came first (and any hidden spike found in
        its snippet). Returns how many detections were dropped.
        """
        parent, hunits, hdt = self.hidden
        first = det.first_sample - self._horizon() - self._same_dt
        prior_h = tuple(a[self._recent_hidden[0] >= first] for a in self._recent_hidden)
        prior_d = tuple(a[self._recent_reported[0] >= first] for a in self._recent_reported)
        dropped = self.dropped if self.dropped is not None else np.zeros(len(units), bool)
        shown = np.flatnonzero(~dropped)
        radius, same = self.config.hidden_radius_um, self._same_dt
        samples, channels = det.samples, det.channels
        h_samples = samples[parent] + hdt
        h_mains = self.mains[hunits]
        keep_h = np.ones(len(parent), dtype=bool)
        gone = np.zeros(len(units), dtype=bool)

        def one(at: np.ndarray, on: np.ndarray, sample: int, main: int) -> np.ndarray:
            """Are the spikes at samples ``at`` on electrodes ``on`` the spike at
            ``sample`` whose unit's main electrode is ``main``?"""
            return (np.abs(at - sample) <= same) & (self._dist[on, main] <= radius)

        for k in range(len(parent)):
            close = shown[
                one(samples[shown], channels[shown], h_samples[k], h_mains[k])
                & (shown != parent[k])
            ]
            before = close[close < parent[k]]
            gone[close[close > parent[k]]] = True
            if len(before):
                if units[before[0]] == -1:
                    units[before[0]] = hunits[k]
                keep_h[k] = False
            elif one(prior_d[0], prior_d[1], h_samples[k], h_mains[k]).any():
                keep_h[k] = False
        for k in range(len(prior_h[0])):
            gone[shown] |= one(samples[shown], channels[shown], prior_h[0][k], prior_h[1][k])
        keep_h &= ~gone[parent]  # found in what a duplicate left: goes with it
        if not keep_h.all():
            self.hidden = (parent[keep_h], hunits[keep_h], hdt[keep_h])
        self._recent_hidden = (
            np.concatenate([prior_h[0], h_samples[keep_h]]),
            np.concatenate([prior_h[1], h_mains[keep_h]]),
        )
        left = shown[~gone[shown]]
        self._recent_reported = (
            np.concatenate([prior_d[0], samples[left]]),
            np.concatenate([prior_d[1], channels[left].astype(np.int64)]),
        )
        n_gone = int(gone.sum())
        if n_gone:
            units[gone] = -1
            self.dropped = dropped | gone
            self.n_duplicates += n_gone
        return n_gone

    def _assign(
        self,
        det: Detections,
        weak: np.ndarray,
        units: np.ndarray,
        confirm: tuple[float, float] | None = None,
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Run the matching kernel on ``det`` (``weak`` uint8 flags) into ``units``;
        returns its other outputs: (scores, residual snippets, hidden units, their lags,
        gains). ``confirm``: (max score, min gain) for the weak ones, if not the
        configured ``confirm_max_score`` and ``confirm_min_gain``."""
        if confirm is None:
            confirm = self._confirm
        n = len(det)
        scores = np.empty(n, dtype=np.float32)
        resid = np.empty_like(det.snippets)
        hidden = np.empty(n, dtype=np.int32)
        hidden_dt = np.empty(n, dtype=np.int64)
        gains = np.empty(n, dtype=np.float32)
        inv_noise = (1.0 / np.maximum(self._noise, 1e-6)).astype(np.float32)
        assign_spikes(
            det.snippets,
            det.samples,
            det.channels,
            self.neighbours,
            self.candidates,
            self.templates,
            self.support,
            self.trough_row,
            inv_noise,
            self.config.match_threshold,
            self.config.match_relative,
            self.alphas,
            self.config.drift_clip,
            self.config.match_max_shift,
            self.config.pair_score,
            self.config.pair_gain,
            self._hidden_max_dt,
            self.config.hidden_max_score,
            self.hidden_near,
            self._hist_origin,
            self._hist_unit,
            self._hist_count,
            weak,
            confirm[0],
            confirm[1],
            self._match_min_gain,
            self._track_min_gain,
            self._horizon(),
            self.peak_row,
            _or(self.config.echo_max_snr, 0.0),
            units,
            scores,
            resid,
            hidden,
            hidden_dt,
            gains,
        )
        return scores, resid, hidden, hidden_dt, gains

    def _horizon(self) -> int:
        """How far back the history ring is scanned for spikes overlapping a snippet:
        the lags of matching and of hidden spikes, and the residual pass's slack."""
        return 2 * self.config.match_max_shift + 2 * self._hidden_max_dt + 1 + self.order_slack

    def peel(self, buf: np.ndarray, first_sample: int, pre: int) -> None:
        """Subtract from ``buf`` (filtered µV, row 0 = absolute sample ``first_sample``)
        the templates of the spikes assigned so far that overlap it; ``pre`` is the
        detector's snippet rows before the peak. What is left holds the spikes that the
        detector could not see under bigger ones."""
        if self.learning or not self.n_units:
            return
        peel_history(
            buf,
            first_sample,
            pre,
            self.templates,
            self.support,
            self._hist_origin,
            self._hist_unit,
            int(self._hist_count[0]),
            self._horizon(),
        )

    def confirm(self, det: Detections) -> np.ndarray:
        """Unit ids for candidates found late (a residual pass): each is matched like a
        weak detection (the templates of the spikes around it peeled off first, kept
        only when a reported unit fits it well, then remembered for peeling); -1 for
        the others, which are not spikes. Nothing is pooled, no template moves."""
        n = len(det)
        units = np.full(n, -1, dtype=np.int32)
        if not n or self.learning or not self.n_units:
            return units
        self._assign(det, np.ones(n, dtype=np.uint8), units, self._residual_confirm)
        units[units < 0] = -1
        if self.muted.any():
            units[(units >= 0) & self.muted[np.maximum(units, 0)]] = -1
        self.n_late += int((units >= 0).sum())
        return units

    def with_hidden(self, det: Detections, units: np.ndarray) -> tuple[Detections, np.ndarray]:
        """``det`` and ``units`` of the last :meth:`process` call with the hidden spikes
        added, in sample order.

        A hidden spike overlapped a detected one so closely (within ``hidden_max_ms`` and
        ``hidden_radius_um``) that the detector reported only the larger; the sorter found
        it as a second template in the snippet. Its electrode is its unit's main
        electrode, its amplitude the template's trough there, its snippet the detected
        spike's. It may precede ``det.first_sample`` by up to ``hidden_max_ms``.

        The weak candidates that :meth:`process` did not confirm, and the echoes, are
        dropped.
        """
        if self.dropped is not None:
            keep = ~self.dropped
            parent, hunits, dt = self.hidden
            if len(parent):  # renumber the parents of the hidden spikes (of those kept)
                ok = keep[parent]
                parent = (np.cumsum(keep) - 1)[parent[ok]]
                self.hidden = (parent, hunits[ok], dt[ok])
            det, units = det.select(keep), units[keep]
            self.dropped = None
        if det.weak is not None:
            det = replace(det, weak=None)
        parent, hunits, dt = self.hidden
        if not len(parent):
            return det, units
        mains = self.mains[hunits].astype(np.int32)
        amps = self.templates[hunits, self.trough_row[hunits], mains].astype(np.float32)
        out, order = det.added(det.samples[parent] + dt, mains, amps, det.snippets[parent])
        return out, np.concatenate([units, hunits])[order]

    def close(self) -> None:
        """Stop the worker process (if any)."""
        if self._executor is not None:
            self._executor.shutdown(wait=True, cancel_futures=True)
            self._executor = None


def _or(value: float | None, default: float) -> float:
    """``value``, or ``default`` when it is None."""
    return default if value is None else value


def _ready_worker() -> bool:
    """The clustering worker's first job: import what clustering uses (scikit-learn
    takes about a second), so the first real job starts at once."""
    from sklearn.cluster import HDBSCAN

    return HDBSCAN is not None
