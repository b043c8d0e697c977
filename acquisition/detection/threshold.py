"""Locally exclusive threshold detector with online MAD noise (stage class)."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from acquisition.config import ThresholdDetectorConfig
from acquisition.detection.base import Detections, neighbourhoods
from acquisition.kernels.detect import (
    BOTH,
    NEG,
    POS,
    detect_peaks,
    extract_snippets,
    track_median_abs,
)
from bci.types import Chunk

_POLARITY = {"neg": NEG, "pos": POS, "both": BOTH}
_MAD_TO_SIGMA = 1.0 / 0.6744897501960817
#: the detector sets its thresholds from the noise estimate at the start of each block of
#: this many seconds on the absolute sample grid (the same whatever the chunking)
NOISE_BLOCK_S = 0.010


class ThresholdDetector:
    """Find spikes in filtered chunks, each exactly once, and cut their snippets.

    Consumes filtered :class:`~bci.types.Chunk` (µV, ``(n_samples, n_channels)``) and
    produces :class:`Detections`. A peak at sample ``t`` is decided once the samples up
    to ``t + lookahead`` have arrived (``lookahead = max(exclusion, snippet post)``), so
    the output lags the input by ``lookahead`` samples, and a spike that straddles a
    chunk boundary is decided exactly once. Noise per channel is the MAD of the filtered
    signal: first from ``noise_warmup_s`` of data (no detection before), then tracked
    sample by sample (time constant ``noise_tau_s``). ``positions_um`` is
    ``(n_channels, 2)``; neighbourhoods are by distance. With ``weak_threshold`` or
    ``weak_shadow_fraction``, fainter peaks come too, flagged in ``Detections.weak``: they are
    candidates only (see :meth:`Detections.strong`).
    """

    def __init__(
        self,
        config: ThresholdDetectorConfig,
        positions_um: np.ndarray,
        sample_rate: float,
        *,
        residual: bool = False,
    ) -> None:
        self.config = config
        self.sample_rate = float(sample_rate)
        self.positions_um = np.asarray(positions_um, dtype=np.float64)
        self.n_channels = int(self.positions_um.shape[0])
        fs = self.sample_rate
        self.exclude = max(1, round(config.exclusion_ms * fs / 1000.0))
        self.pre = round(config.snippet_pre_ms * fs / 1000.0)
        self.post = max(1, round(config.snippet_post_ms * fs / 1000.0))
        self.n_window = self.pre + self.post
        self.left = max(self.exclude, self.pre)
        self.lookahead = max(self.exclude, self.post)
        self.neighbours = neighbourhoods(self.positions_um, config.radius_um)
        # the residual pass decides its samples this much later than the first pass, so
        # that every spike whose template reaches them has been labelled
        self.residual_lag = self.exclude + self.pre if residual else 0
        pos = self.positions_um
        dist = np.sqrt(((pos[:, None, :] - pos[None, :, :]) ** 2).sum(-1))
        # a first-pass peak masks the residual pass: its template is peeled only within
        # the snippet radius, and a big spike reaches further. "near": all around it;
        # "unpeeled": only where the template left something (its peak's electrode) or
        # was not taken out, so a neighbour it hid shows
        reach = dist <= config.radius_um + config.snippet_radius_um + 1e-9
        if config.residual_mask == "near":
            self._masked = reach
        else:
            self._masked = (dist <= 1e-9) | (reach & (dist > config.snippet_radius_um + 1e-9))
        self.snippet_neighbours = neighbourhoods(self.positions_um, config.snippet_radius_um)
        self.polarity = _POLARITY[config.polarity]
        self.shadow = round(config.shadow_ms * fs / 1000.0)
        self.shadow_neighbours = neighbourhoods(self.positions_um, config.shadow_radius_um)
        weak_shadow = config.weak_shadow_fraction
        self._weak_shadow_ratio = (
            weak_shadow / config.shadow_fraction
            if weak_shadow is not None and weak_shadow < config.shadow_fraction
            else 2.0  # > 1: no shadowed peak is passed on
        )
        # the shoulders must lie inside the context kept around the decided rows
        self.shoulder = max(
            1, min(round(config.shoulder_ms * fs / 1000.0), self.left, self.lookahead)
        )
        self.shadow_start = min(self.shadow, round(config.shadow_start_ms * fs / 1000.0))
        self._shadow_from = np.full(self.n_channels, -(2**62), dtype=np.int64)
        self._shadow_until = np.full(self.n_channels, -(2**62), dtype=np.int64)
        self._shadow_value = np.zeros(self.n_channels, dtype=np.float32)
        self._eta = 1.0 / (config.noise_tau_s * fs)
        #: the thresholds are set anew at every block of this many samples (10 ms)
        self._noise_block = max(1, round(NOISE_BLOCK_S * fs))
        self._warmup_n = max(1, round(config.noise_warmup_s * fs))
        self.median_abs = np.zeros(self.n_channels, dtype=np.float64)
        self.thresholds = np.full(self.n_channels, np.inf, dtype=np.float32)
        self.weak_thresholds = np.full(self.n_channels, np.inf, dtype=np.float32)
        # the residual pass casts no shadow: state the kernel reads but never writes
        self._no_shadow = (
            np.zeros(self.n_channels, np.int64),
            np.zeros(self.n_channels, np.float32),
            np.zeros(self.n_channels, np.int64),
        )
        self.reset()

    @property
    def weak_enabled(self) -> bool:
        """Does this detector pass on weak peaks (flagged) for the sorter to confirm?"""
        cfg = self.config
        return 0 < cfg.weak_threshold < cfg.threshold or (
            self.shadow > 0 and self._weak_shadow_ratio <= 1.0
        )

    # ---------------------------------------------------------------- state

    def reset(self) -> None:
        """Forget everything: buffer, noise estimate, position in the stream."""
        self._warm_parts: list[np.ndarray] = []
        self._warm_count = 0
        self._shadow_from[:] = -(2**62)
        self._shadow_until[:] = -(2**62)
        self._shadow_value[:] = 0.0
        self._detect_from = 0  # no peak before the end of the noise warm-up
        #: absolute sample up to which the noise estimate has followed the signal
        self._noise_pos: int | None = None
        self.noise_ready = False
        self.median_abs[:] = 0.0
        self.thresholds[:] = np.inf
        self.weak_thresholds[:] = np.inf
        self._restart(None)

    def _restart(self, first_sample: int | None) -> None:
        """Start a fresh buffer (stream start or after a gap); keep the noise estimate."""
        cap = max(4096, 2 * (self.left + self.lookahead))
        self._buf = np.zeros((cap, self.n_channels), dtype=np.float32)
        self._n = self.left  # ``left`` rows of zeros before the first sample
        self._buf_start = None if first_sample is None else first_sample - self.left
        if self._noise_pos is not None and first_sample is not None:
            self._noise_pos = first_sample  # the noise follows on after a gap
        self._next = first_sample  # next undecided absolute sample
        self._res_next = first_sample  # ... of the residual pass
        self._recent = (np.empty(0, np.int64), np.empty(0, np.int32))  # first-pass peaks
        self._t0 = 0.0  # LSL time of absolute sample 0 on the stream's clock

    @property
    def noise(self) -> np.ndarray:
        """Current noise per channel (µV, robust standard deviation)."""
        return (self.median_abs * _MAD_TO_SIGMA).astype(np.float32)

    def _warm_up_noise(self, data: np.ndarray, first_sample: int) -> None:
        if not self.noise_ready:
            # exactly the first ``warmup`` samples, every 3rd on the absolute grid, so the
            # estimate does not depend on how the stream is cut into chunks
            take = min(data.shape[0], self._warmup_n - self._warm_count)
            offset = (-first_sample) % 3
            self._warm_parts.append(np.abs(data[offset:take:3]))
            self._warm_count += take
            if self._warm_count >= self._warmup_n:
                self._detect_from = first_sample + take
                self.median_abs[:] = np.median(np.concatenate(self._warm_parts), axis=0)
                self.median_abs[self.median_abs <= 0] = 1e-6
                self._warm_parts = []
                self.noise_ready = True
                self._noise_pos = first_sample + take
                self._set_thresholds()

    def _advance_noise(self, to: int) -> None:
        """Let the noise estimate follow the signal up to absolute sample ``to`` (in the
        buffer) and set the thresholds from it. Detection calls this at fixed blocks of
        the absolute sample grid, so the thresholds a peak meets do not depend on how
        the stream is cut into chunks (they once followed each chunk's end: a replay in
        1 ms chunks and a live run whose chunks grew while it caught up disagreed on
        peaks at the threshold)."""
        if not self.config.adapt_noise or self._noise_pos is None or to <= self._noise_pos:
            return
        assert self._buf_start is not None
        r0, r1 = self._noise_pos - self._buf_start, to - self._buf_start
        track_median_abs(self._buf[r0:r1], self.median_abs, self._eta)
        self._noise_pos = to
        self._set_thresholds()

    def _set_thresholds(self) -> None:
        if self.noise_ready:
            sigma = self.median_abs * _MAD_TO_SIGMA
            self.thresholds[:] = self.config.threshold * sigma
            weak = self.config.weak_threshold
            self.weak_thresholds[:] = (
                weak * sigma if 0 < weak < self.config.threshold else self.thresholds
            )

    # ---------------------------------------------------------------- processing

    def process(self, chunk: Chunk) -> Detections:
        """Append a filtered chunk; return the spikes whose peaks are now decided."""
        data = chunk.data
        if data.shape[1] != self.n_channels:
            raise ValueError(f"expected {self.n_channels} channels, got {data.shape[1]}")
        if self._next is None or self._buf_start is None:
            self._restart(chunk.first_sample)
        elif chunk.first_sample != self._buf_start + self._n:
            self._restart(chunk.first_sample)  # gap in the stream: begin again
        assert self._buf_start is not None
        assert self._next is not None
        self._t0 = chunk.timestamp - chunk.first_sample / chunk.sample_rate
        n_new = data.shape[0]
        if self._n + n_new > self._buf.shape[0]:
            grown = np.zeros((2 * (self._n + n_new), self.n_channels), dtype=np.float32)
            grown[: self._n] = self._buf[: self._n]
            self._buf = grown
        self._buf[self._n : self._n + n_new] = data
        self._n += n_new
        self._warm_up_noise(data, chunk.first_sample)

        end_abs = self._buf_start + self._n - self.lookahead  # first sample not decidable
        first = self._next
        if end_abs <= first:
            return self._empty(first, first)
        start_row = max(first, self._detect_from) - self._buf_start
        stop_row = end_abs - self._buf_start
        if self.noise_ready and stop_row > start_row:
            cap = self.n_channels * ((stop_row - start_row) // (self.exclude + 1) + 1)
            out_t = np.empty(cap, dtype=np.int64)
            out_c = np.empty(cap, dtype=np.int32)
            out_w = np.empty(cap, dtype=np.uint8)
            n = 0
            block = self._noise_block
            seg = start_row
            while seg < stop_row:
                # thresholds from the noise at the start of this row's block
                at = (seg + self._buf_start) // block * block
                self._advance_noise(at)
                seg_end = min(stop_row, at + block - self._buf_start)
                n += detect_peaks(
                    self._buf,
                    seg,
                    seg_end,
                    self.thresholds,
                    self.neighbours,
                    self.exclude,
                    self.polarity,
                    out_t[n:],
                    out_c[n:],
                    self._buf_start,
                    self.shadow,
                    self.config.shadow_fraction,
                    self._shadow_until,
                    self._shadow_value,
                    self.shadow_neighbours,
                    self.weak_thresholds,
                    self._weak_shadow_ratio,
                    out_w[n:],
                    self.shadow_start,
                    self._shadow_from,
                    self.shoulder,
                    self.config.max_shoulder,
                    self.weak_enabled,
                )
                seg = seg_end
            rows, chans = out_t[:n], out_c[:n]
            snippets = np.empty(
                (n, self.n_window, self.snippet_neighbours.shape[1]), dtype=np.float32
            )
            extract_snippets(self._buf, rows, chans, self.snippet_neighbours, self.pre, snippets)
            det = Detections(
                samples=rows + self._buf_start,
                channels=chans.copy(),
                amplitudes=self._buf[rows, chans].copy(),
                snippets=snippets,
                first_sample=first,
                end_sample=end_abs,
                timestamp=self._t0 + first / self.sample_rate,
                sample_rate=self.sample_rate,
                noise=self.noise,
                weak=out_w[:n].astype(bool) if self.weak_enabled else None,
            )
        else:
            det = self._empty(first, end_abs)
        self._next = end_abs
        if self.residual_lag:
            self._recent = (
                np.concatenate([self._recent[0], det.samples]),
                np.concatenate([self._recent[1], det.channels]),
            )
        # keep ``left`` rows of context before the next undecided sample (of either pass)
        undecided = end_abs
        if self.residual_lag and self._res_next is not None:
            undecided = min(end_abs, self._res_next)
        keep_from = undecided - self.left
        if self._noise_pos is not None and self.config.adapt_noise:
            keep_from = min(keep_from, self._noise_pos)  # the noise has yet to see these
        drop = keep_from - self._buf_start
        if drop > 0:
            keep = self._n - drop
            self._buf[:keep] = self._buf[drop : self._n]
            self._n = keep
            self._buf_start += drop
        return det

    def unmask(self, samples: np.ndarray, channels: np.ndarray) -> None:
        """Let the residual pass look again at these first-pass peaks (of the last
        :meth:`process` call; ones the sorter rejected): they no longer mask it."""
        if not len(samples) or not self.residual_lag:
            return
        rs, rc = self._recent
        key = rs * self.n_channels + rc
        drop = np.asarray(samples, np.int64) * self.n_channels + channels
        keep = ~np.isin(key, drop)
        self._recent = (rs[keep], rc[keep])

    def residual(self, peel: Callable[[np.ndarray, int, int], None]) -> Detections:
        """Detect again, ``residual_lag`` samples behind :meth:`process`, in the signal
        with the spikes labelled so far taken out: spikes that a bigger one hid (landing
        on its rebound, or merged with it) show up there.

        ``peel(buf, first_sample, pre)`` subtracts the templates of the labelled spikes
        from ``buf`` (a copy of the filtered signal, row 0 = absolute ``first_sample``).
        Peaks are found as in :meth:`process` (down to the weak threshold if there is
        one; no shadow; broad ones dropped), except near a peak the first pass found
        (within the exclusion window and, by ``residual_mask``, the radius plus the
        snippet radius, or only there where the peak's template was not peeled). All
        are returned weak: candidates for the sorter to confirm. Their snippets are cut
        from the filtered signal itself.
        Call it after each :meth:`process` (the detector must be made with
        ``residual=True``).
        """
        lag = self.residual_lag
        if not lag:
            raise RuntimeError("this detector was made without residual=True")
        if self._next is None or self._buf_start is None or self._res_next is None:
            return self._empty(0, 0)
        first = self._res_next
        stop = self._next - lag
        start = max(first, self._detect_from)
        if stop <= start or not self.noise_ready:
            if stop > first:
                self._res_next = stop
            return self._empty(first, max(first, stop))
        ctx_l, ctx_r = max(self.exclude, self.pre), max(self.exclude, self.post)
        r0 = start - ctx_l - self._buf_start
        r1 = stop + ctx_r - self._buf_start
        res = self._buf[r0:r1].copy()
        peel(res, r0 + self._buf_start, self.pre)
        n_rows = stop - start
        cap = self.n_channels * (n_rows // (self.exclude + 1) + 1)
        out_t = np.empty(cap, dtype=np.int64)
        out_c = np.empty(cap, dtype=np.int32)
        out_w = np.empty(cap, dtype=np.uint8)
        until, value, since = self._no_shadow
        n = detect_peaks(
            res,
            ctx_l,
            ctx_l + n_rows,
            self.weak_thresholds,
            self.neighbours,
            self.exclude,
            self.polarity,
            out_t,
            out_c,
            r0 + self._buf_start,
            0,
            0.0,
            until,
            value,
            self.shadow_neighbours,
            self.weak_thresholds,
            2.0,
            out_w,
            0,
            since,
            self.shoulder,
            self.config.max_shoulder,
            False,
        )
        samples = out_t[:n] + r0 + self._buf_start
        chans = out_c[:n]
        # not where the first pass found a peak
        rs, rc = self._recent
        keep_recent = rs >= start - self.exclude
        rs, rc = rs[keep_recent], rc[keep_recent]
        self._recent = (rs, rc)
        if n and len(rs):
            close = np.abs(samples[:, None] - rs[None, :]) <= self.exclude
            close &= self._masked[chans[:, None], rc[None, :]]
            new = ~close.any(axis=1)
            samples, chans, rows = samples[new], chans[new], out_t[:n][new]
        else:
            rows = out_t[:n]
        amps = res[rows, chans].copy()
        snippets = np.empty(
            (len(samples), self.n_window, self.snippet_neighbours.shape[1]), dtype=np.float32
        )
        extract_snippets(
            self._buf,
            samples - self._buf_start,
            chans,
            self.snippet_neighbours,
            self.pre,
            snippets,
        )
        self._res_next = stop
        return Detections(
            samples=samples,
            channels=chans.copy(),
            amplitudes=amps,
            snippets=snippets,
            first_sample=first,
            end_sample=stop,
            timestamp=self._t0 + first / self.sample_rate,
            sample_rate=self.sample_rate,
            noise=self.noise,
            weak=np.ones(len(samples), dtype=bool),
        )

    def _empty(self, first: int, end: int) -> Detections:
        return Detections(
            samples=np.empty(0, dtype=np.int64),
            channels=np.empty(0, dtype=np.int32),
            amplitudes=np.empty(0, dtype=np.float32),
            snippets=np.empty((0, self.n_window, self.snippet_neighbours.shape[1]), np.float32),
            first_sample=first,
            end_sample=end,
            timestamp=self._t0 + first / self.sample_rate,
            sample_rate=self.sample_rate,
            weak=np.empty(0, dtype=bool) if self.weak_enabled else None,
        )
