"""The online hot path as one synchronous stage: filter -> detect -> sort -> SpikeBatch."""

from __future__ import annotations

import numpy as np

from acquisition import kernels
from acquisition.config import AcquisitionConfig
from acquisition.detection import make_detector
from acquisition.filter import StreamingFilter
from acquisition.lsl import kernels as lsl_kernels
from acquisition.sorting import make_sorter
from bci.types import SPIKE_DTYPE, Chunk, SpikeBatch


class OnlinePipeline:
    """Raw chunks in, sorted spikes out.

    Consumes raw :class:`~bci.types.Chunk` (float32 µV ``(n_samples, n_channels)``);
    produces a :class:`~bci.types.SpikeBatch` per chunk whose ``sample`` is the
    absolute index of the spike's trough in the *raw* signal (the filter's delay is
    compensated), ``channel`` the peak electrode, ``unit`` the sorted unit (-1 when not
    assigned), ``amplitude`` the filtered peak value in µV. ``positions_um`` is
    ``(n_channels, 2)``. Call :meth:`warm_up` before arming a real-time loop.
    """

    def __init__(
        self,
        config: AcquisitionConfig,
        positions_um: np.ndarray,
        sample_rate: float,
        *,
        background_learning: bool = False,
        sort: bool = True,
    ) -> None:
        self.config = config
        self.positions_um = np.asarray(positions_um, dtype=np.float64)
        self.n_channels = int(self.positions_um.shape[0])
        self.sample_rate = float(sample_rate)
        self.filter = StreamingFilter(config.filter, self.n_channels, self.sample_rate)
        self.residual = sort and config.sorter.residual_pass
        self.retry = self.residual and config.detection.residual_retry
        self.detector = make_detector(
            config.detection, self.positions_um, self.sample_rate, residual=self.residual
        )
        self.sorter = (
            make_sorter(
                config.sorter,
                self.positions_um,
                self.detector.snippet_neighbours,
                self.detector.n_window,
                self.sample_rate,
                background=background_learning,
                peak_row=self.detector.pre,
            )
            if sort
            else None
        )
        if self.sorter is not None and self.residual:
            self.sorter.order_slack = self.detector.residual_lag + self.detector.exclude
        self.delay_samples = self.filter.delay_samples

    @property
    def latency_samples(self) -> int:
        """Samples between a trough and the end of the chunk in which it is labelled
        (at least; plus the wait for the chunk to fill)."""
        return self.detector.lookahead + self.delay_samples

    @staticmethod
    def warm_up() -> None:
        """Compile every kernel (call before a real-time loop is armed)."""
        kernels.warm_up()
        lsl_kernels.warm_up()

    def reset(self) -> None:
        self.filter.reset()
        self.detector.reset()
        if self.sorter is not None:
            self.sorter.reset()

    def process(self, chunk: Chunk) -> SpikeBatch:
        filtered = self.filter.process(chunk)
        det = self.detector.process(filtered)
        units = None
        if self.sorter is not None:
            units = self.sorter.process(det)
            dropped = self.sorter.dropped
            if self.retry and dropped is not None and det.weak is not None:
                rejected = dropped & det.weak  # not a spike it found twice (a strong one)
                self.detector.unmask(det.samples[rejected], det.channels[rejected])
            det, units = self.sorter.with_hidden(det, units)  # + overlapped spikes it found
            if self.residual:  # + the spikes found under the ones labelled
                late = self.detector.residual(self.sorter.peel)
                if len(late):
                    late_units = self.sorter.confirm(late)
                    keep = late_units >= 0
                    if keep.any():
                        late = late.select(keep)
                        det, order = det.added(
                            late.samples, late.channels, late.amplitudes, late.snippets
                        )
                        units = np.concatenate([units, late_units[keep]])[order]
        else:
            det = det.strong()  # weak candidates count only when a sorter confirms them
        n = len(det)
        spikes = np.empty(n, dtype=SPIKE_DTYPE)
        d = self.delay_samples
        if n:  # (most chunks have no spike)
            spikes["unit"] = -1 if units is None else units
            spikes["sample"] = det.samples - d
            spikes["time"] = det.timestamp + (det.samples - d - det.first_sample) / self.sample_rate
            spikes["channel"] = det.channels
            spikes["amplitude"] = det.amplitudes
        return SpikeBatch(
            spikes=spikes,
            first_sample=det.first_sample - d,
            end_sample=det.end_sample - d,
            timestamp=det.timestamp - d / self.sample_rate,
            sample_rate=self.sample_rate,
        )

    def close(self) -> None:
        if self.sorter is not None:
            self.sorter.close()
