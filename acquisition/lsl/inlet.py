"""The LSL inlet: resolve a raw stream, pull chunks into preallocated buffers, account
for every sample.

:class:`LslInlet` is synchronous (testable without an event loop): :meth:`LslInlet.pull`
returns :class:`~bci.types.Chunk` objects whose ``first_sample`` is the absolute sample
index. Gaps, duplicates, out-of-order timestamps, non-finite samples, stalls and the
loss of the source are *faults*: counted, logged and kept in :attr:`LslInlet.faults`,
never a crash and never hidden. After a loss the inlet keeps re-resolving the same
source id and resumes; the gap is reported with its exact size (from the counter
channel, or from the timestamps). :class:`InletService` moves chunks into a
:class:`~bci.queues.BoundedQueue` from an asyncio task.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import ctypes
import logging
from dataclasses import dataclass

import numpy as np
import pylsl
from pylsl.util import LostError, handle_error

from acquisition.config import InletConfig
from acquisition.lsl.kernels import copy_finite, counter_steps, timestamp_steps_ok
from acquisition.lsl.kernels import warm_up as _warm_up_kernels
from bci.clock import now
from bci.errors import StreamError, StreamFault
from bci.queues import BoundedQueue
from bci.types import Chunk

log = logging.getLogger(__name__)

#: Kinds of fault an inlet reports.
FAULT_KINDS = ("gap", "duplicate", "out_of_order", "nonfinite", "stalled", "lost", "resumed")

_COUNTER_EXACT = 2**24  # float32 holds every integer below this


@dataclass(frozen=True, slots=True)
class FaultRecord:
    """One reported fault: ``kind`` (see :data:`FAULT_KINDS`), the absolute sample index
    where it happened, how many samples it concerns, LSL time, and a message."""

    kind: str
    sample: int
    count: int
    time: float
    message: str


def _describe(info: pylsl.StreamInfo) -> str:
    return (
        f"name={info.name()!r} type={info.type()!r} source_id={info.source_id()!r} "
        f"channels={info.channel_count()} rate={info.nominal_srate():g} Hz "
        f"host={info.hostname()!r}"
    )


def resolve_stream(config: InletConfig, timeout: float | None = None) -> pylsl.StreamInfo:
    """Find the stream ``config`` asks for (by source id, else name, else type).

    Raises :class:`StreamError` after ``timeout`` (default ``config.resolve_timeout_s``)
    with the list of the streams that *were* found.
    """
    wait = config.resolve_timeout_s if timeout is None else timeout
    if config.source_id is not None:
        prop, value = "source_id", config.source_id
    elif config.name is not None:
        prop, value = "name", config.name
    else:
        prop, value = "type", str(config.type)
    found = pylsl.resolve_byprop(prop, value, minimum=1, timeout=wait)
    # a name or source id may be shared by streams of other types: narrow down, by the
    # type only when the config sets it (its default is for resolving by type alone)
    narrow_type = prop != "type" and "type" in config.model_fields_set
    for info in found:
        if config.name is not None and info.name() != config.name:
            continue
        if narrow_type and config.type is not None and info.type() != config.type:
            continue
        return info
    others = pylsl.resolve_streams(wait_time=min(1.0, wait))
    listing = "; ".join(_describe(i) for i in others) or "no LSL stream at all"
    raise StreamError(
        f"no LSL stream with {prop}={value!r} (name={config.name!r}, type={config.type!r}) "
        f"within {wait:g} s; found: {listing}",
        prop=prop,
        value=value,
    )


class LslInlet:
    """Pull a raw float32 stream into chunks with absolute sample indices.

    Consumes an LSL stream (float32 µV, regular rate); produces :class:`Chunk`
    ``(n_samples, n_channels)`` with ``first_sample`` and the clock-corrected LSL time
    of that sample. Chunk data are copies of a preallocated pull buffer.
    """

    def __init__(self, config: InletConfig) -> None:
        self.config = config
        self.info: pylsl.StreamInfo | None = None
        self.n_channels = 0
        self.sample_rate = 0.0
        self.source_id = config.source_id
        self.faults: collections.deque[FaultRecord] = collections.deque(maxlen=10_000)
        self.fault_counts: dict[str, int] = dict.fromkeys(FAULT_KINDS, 0)
        self.samples_received = 0
        self.connected = False
        self._inlet: pylsl.StreamInlet | None = None
        self._buf = np.empty((0, 0), dtype=np.float32)  # pull buffers (liblsl writes here)
        self._ts = np.empty(0, dtype=np.float64)
        self._buf_addr = 0
        self._ts_addr = 0
        self._errcode = ctypes.c_int()
        self._last_index: int | None = None  # absolute index of the last sample delivered
        self._last_mark = 0.0  # counter value, or timestamp x rate, of the last sample
        self._last_data_time = 0.0
        self._stalled = False
        self._offset = 0.0  # sender clock -> local LSL clock, s
        self._next_offset_check = 0.0
        self._started = False  # open_stream called on the current connection

    # ---------------------------------------------------------------- connection

    def open(self, timeout: float | None = None, *, start: bool = True) -> None:
        """Resolve and open the stream; check it matches the config.

        With ``start=False`` the inlet is connected (:meth:`full_info` works) but no
        sample flows until :meth:`start`: a consumer that has set-up work to do after
        reading the description starts the data when it is ready to pull, so no
        backlog piles up meanwhile.

        Raises :class:`StreamError` when it cannot be found or does not match (wrong
        channel count, rate, or format).
        """
        _warm_up_kernels()
        info = resolve_stream(self.config, timeout)
        self._check(info)
        self._connect(info, timeout, start=start)

    def start(self, timeout: float | None = None) -> None:
        """Start the samples flowing (after ``open(start=False)``; a no-op otherwise)."""
        if self._inlet is None:
            raise StreamError("the inlet is not connected")
        if not self._started:
            assert self.info is not None  # set by the connection
            self._open_stream(self._inlet, self.info, timeout)

    def full_info(self, timeout: float = 5.0) -> pylsl.StreamInfo:
        """The stream's full description (a resolved StreamInfo lacks ``desc``)."""
        if self._inlet is None:
            raise StreamError("the inlet is not connected")
        return self._inlet.info(timeout)

    def _check(self, info: pylsl.StreamInfo) -> None:
        cfg = self.config
        desc = _describe(info)
        if info.channel_format() != pylsl.cf_float32:
            raise StreamError(
                f"stream is not float32: {desc}", channel_format=info.channel_format()
            )
        if info.nominal_srate() <= 0:
            raise StreamError(f"stream has an irregular rate; a raw stream needs one: {desc}")
        if cfg.n_channels is not None and info.channel_count() != cfg.n_channels:
            raise StreamError(
                f"stream has {info.channel_count()} channels, the config says {cfg.n_channels}: "
                f"{desc}",
                expected=cfg.n_channels,
                got=info.channel_count(),
            )
        if cfg.sample_rate_hz is not None and abs(info.nominal_srate() - cfg.sample_rate_hz) > 1e-6:
            raise StreamError(
                f"stream runs at {info.nominal_srate():g} Hz, the config says "
                f"{cfg.sample_rate_hz:g} Hz: {desc}",
                expected=cfg.sample_rate_hz,
                got=info.nominal_srate(),
            )
        if cfg.counter_channel is not None and cfg.counter_channel >= info.channel_count():
            raise StreamError(
                f"counter_channel {cfg.counter_channel} does not exist: {desc}",
                counter_channel=cfg.counter_channel,
            )
        if self.info is not None and (
            info.channel_count() != self.n_channels or info.nominal_srate() != self.sample_rate
        ):
            raise StreamError(f"the source came back with another shape or rate: {desc}")

    def _connect(self, info: pylsl.StreamInfo, timeout: float | None, start: bool = True) -> None:
        inlet = pylsl.StreamInlet(
            info,
            max_buflen=self.config.max_buffer_s,
            recover=False,  # we re-resolve ourselves, so that a loss is never hidden
            # no liblsl post-processing: gaps are judged on the sender's own timestamps;
            # the clock offset is applied to chunk times only (see _clock_offset)
            processing_flags=0,
        )
        self._started = False
        if start:
            self._open_stream(inlet, info, timeout)
        if self.info is None:
            self.info = info
            self.n_channels = info.channel_count()
            self.sample_rate = float(info.nominal_srate())
            self._buf = np.zeros((self.config.max_chunk_samples, self.n_channels), np.float32)
            self._ts = np.zeros(self.config.max_chunk_samples, np.float64)
            self._buf_addr = self._buf.ctypes.data
            self._ts_addr = self._ts.ctypes.data
        if not self.source_id:
            self.source_id = info.source_id() or None
        self._inlet = inlet
        self.connected = True
        self._last_data_time = now()
        self._stalled = False
        self._offset = 0.0
        self._next_offset_check = 0.0

    def _open_stream(
        self, inlet: pylsl.StreamInlet, info: pylsl.StreamInfo, timeout: float | None
    ) -> None:
        try:
            inlet.open_stream(timeout=self.config.resolve_timeout_s if timeout is None else timeout)
        except Exception as exc:  # liblsl raises TimeoutError or LostError here
            raise StreamError(f"cannot open stream: {_describe(info)}: {exc}") from exc
        self._started = True
        self._last_data_time = now()

    def close(self) -> None:
        """Close the connection (the inlet can be opened again)."""
        if self._inlet is not None:
            self._inlet.close_stream()
            self._inlet = None
        self.connected = False

    def _fault(self, kind: str, sample: int, count: int, message: str) -> None:
        self.fault_counts[kind] += 1
        rec = FaultRecord(kind, sample, count, now(), message)
        self.faults.append(rec)
        level = logging.INFO if kind == "resumed" else logging.WARNING
        log.log(level, "stream %s: %s: %s", self.source_id, kind, message)

    def _try_reconnect(self) -> bool:
        query = self.config
        if self.source_id:
            query = self.config.model_copy(update={"source_id": self.source_id})
        wait = max(self.config.pull_timeout_s, 0.05)
        try:
            info = resolve_stream(query, timeout=wait) if self.source_id else None
        except StreamError:
            return False
        if info is None:
            try:
                info = resolve_stream(self.config, timeout=wait)
            except StreamError:
                return False
        try:
            self._check(info)
            self._connect(info, timeout=1.0)
        except StreamError as exc:
            self._fault("lost", self._next_index(), 0, f"found again but cannot use it: {exc}")
            return False
        self._fault("resumed", self._next_index(), 0, f"source back: {_describe(info)}")
        return True

    def _next_index(self) -> int:
        return 0 if self._last_index is None else self._last_index + 1

    # ---------------------------------------------------------------- pulling

    def pull(self, timeout: float | None = None) -> list[Chunk]:
        """Pull what has arrived (waiting up to ``timeout``, default the config's).

        Returns zero or more chunks (more than one when a gap splits the data). When
        the source is lost this says so at once (a ``lost`` fault) and each later call
        tries to re-resolve it.
        """
        if self._inlet is None and not self._try_reconnect():
            return []
        assert self._inlet is not None
        wait = self.config.pull_timeout_s if timeout is None else timeout
        try:
            n = self._pull_into_buffer(wait)
        except LostError:
            self._fault("lost", self._next_index(), 0, "the source disappeared")
            self.close()
            return []
        t_now = now()
        if n == 0:
            if not self._stalled and t_now - self._last_data_time > self.config.stall_timeout_s:
                self._stalled = True
                self._fault(
                    "stalled",
                    self._next_index(),
                    0,
                    f"no sample for {t_now - self._last_data_time:.2f} s",
                )
            return []
        self._last_data_time = t_now
        self._stalled = False
        return self._account(self._buf[:n], self._ts[:n], t_now)

    def _pull_into_buffer(self, wait: float) -> int:
        """Pull into the preallocated buffers what has arrived, waiting up to ``wait``
        for the first sample; returns how many samples.

        One liblsl call when data are waiting (``lsl_pull_chunk_f`` straight into the
        buffers, none of pylsl's per-call allocations); when none are, a wait for one
        sample, then a non-blocking pull of the rest.
        """
        assert self._inlet is not None
        got = self._pull_raw(0, self._buf.shape[0], 0.0)
        if got == 0 and wait > 0.0:
            got = self._pull_raw(0, 1, wait)
            if got:
                got += self._pull_raw(got, self._buf.shape[0] - got, 0.0)
        return got

    def _pull_raw(self, at: int, max_samples: int, timeout: float) -> int:
        if max_samples <= 0:
            return 0
        inlet = self._inlet
        assert inlet is not None
        n_ch = self.n_channels
        self._errcode.value = 0
        elements = inlet.do_pull_chunk(
            inlet.obj,
            ctypes.c_void_p(self._buf_addr + at * n_ch * 4),
            ctypes.c_void_p(self._ts_addr + at * 8),
            ctypes.c_size_t(max_samples * n_ch),
            ctypes.c_size_t(max_samples),
            ctypes.c_double(timeout),
            ctypes.byref(self._errcode),
        )
        code = self._errcode.value
        if code and code != -1:  # -1: timeout, nothing arrived
            handle_error(code)
        return int(elements) // n_ch

    def _account(self, data: np.ndarray, ts: np.ndarray, t_now: float) -> list[Chunk]:
        """Give absolute indices to ``data``; report gaps and drop duplicates.

        The position of each sample comes from the counter channel when there is one
        (exact), else from its timestamp (``gap_tolerance_samples`` of jitter allowed).
        The usual case (every step one sample) is decided by one kernel pass and gives
        one chunk; anything else goes the slow way, sample by sample.
        """
        n = data.shape[0]
        cc = self.config.counter_channel
        use_counter = False
        ok = False
        if cc is not None:
            first_mark = float(data[0, cc])
            last_mark = self._last_mark if self._last_index is not None else first_mark - 1.0
            code = counter_steps(data, cc, last_mark, _COUNTER_EXACT)
            use_counter = code >= 0
            ok = code == 1
        if not use_counter:
            first_mark = float(ts[0]) * self.sample_rate
            last_mark = self._last_mark if self._last_index is not None else first_mark - 1.0
            ok = timestamp_steps_ok(
                ts, self.sample_rate, last_mark, self.config.gap_tolerance_samples
            )
        if self._last_index is None:
            # the first sample of the stream: its index is the counter, else 0
            self._last_index = int(first_mark) - 1 if use_counter else -1
            self._last_mark = first_mark - 1.0
        if ok:
            first = self._last_index + 1
            chunks = [self._make_chunk(data, first, float(ts[0]), t_now)]
            self._last_index = first + n - 1
            self._last_mark = (
                float(data[n - 1, cc]) if use_counter else float(ts[-1]) * (self.sample_rate)
            )
            return chunks
        assert cc is not None or not use_counter
        marks = data[:, cc].astype(np.float64) if use_counter else ts * self.sample_rate
        return self._split(data, ts, marks, use_counter, t_now)

    def _split(
        self, data: np.ndarray, ts: np.ndarray, marks: np.ndarray, counter: bool, t_now: float
    ) -> list[Chunk]:
        """Slow path, sample by sample: gaps split chunks, duplicates are dropped."""
        chunks: list[Chunk] = []
        assert self._last_index is not None
        seg_start: int | None = None
        seg_first = 0
        index = self._last_index
        prev = self._last_mark
        tol = 1.0 if counter else self.config.gap_tolerance_samples
        for i in range(data.shape[0]):
            step = marks[i] - prev
            if step <= 0.5:
                kind = "duplicate" if step == 0 else "out_of_order"
                self._fault(kind, index + 1, 1, f"sample step {step:g}: dropped")
                if seg_start is not None:
                    chunks.append(
                        self._make_chunk(data[seg_start:i], seg_first, ts[seg_start], t_now)
                    )
                    seg_start = None
                continue
            advance = 1
            if step > tol:
                advance = round(float(step))
                self._fault("gap", index + 1, advance - 1, f"{advance - 1} samples missing")
                if seg_start is not None:
                    chunks.append(
                        self._make_chunk(data[seg_start:i], seg_first, ts[seg_start], t_now)
                    )
                    seg_start = None
            index += advance
            prev = float(marks[i])
            if seg_start is None:
                seg_start, seg_first = i, index
        if seg_start is not None:
            chunks.append(self._make_chunk(data[seg_start:], seg_first, ts[seg_start], t_now))
        self._last_index = index
        self._last_mark = prev
        return chunks

    def _clock_offset(self, t_now: float) -> float:
        """Sender-to-local clock offset (s), refreshed every second without blocking."""
        if t_now >= self._next_offset_check and self._inlet is not None:
            self._next_offset_check = t_now + 1.0
            # no estimate yet (liblsl TimeoutError) or lost: keep the last offset
            with contextlib.suppress(Exception):
                self._offset = float(self._inlet.time_correction(timeout=0.0))
        return self._offset

    def _make_chunk(self, data: np.ndarray, first: int, timestamp: float, t_now: float) -> Chunk:
        out = np.empty(data.shape, dtype=np.float32)
        bad = copy_finite(data, out)
        if bad:
            self._fault("nonfinite", first, bad, f"{bad} NaN/inf values set to 0")
        self.samples_received += data.shape[0]
        local = float(timestamp) + self._clock_offset(t_now)
        return Chunk(out, int(first), local, self.sample_rate)

    def raise_if_lost(self) -> None:
        """Raise :class:`StreamFault` when the source is currently gone."""
        if not self.connected:
            raise StreamFault("the LSL source is lost", source_id=self.source_id)


class InletService:
    """Async mover: pulls from an :class:`LslInlet` in a worker thread and puts the chunks
    in a bounded queue (policy from the config; drops counted by the queue)."""

    def __init__(self, inlet: LslInlet, queue: BoundedQueue[Chunk] | None = None) -> None:
        self.inlet = inlet
        cfg = inlet.config
        self.queue: BoundedQueue[Chunk] = queue or BoundedQueue(
            cfg.queue_size, cfg.overflow, name="inlet"
        )

    async def run(self, stop: asyncio.Event) -> None:
        """Open the stream (if needed) and pull until ``stop`` is set."""
        if not self.inlet.connected:
            await asyncio.to_thread(self.inlet.open)
        while not stop.is_set():
            chunks = await asyncio.to_thread(self.inlet.pull)
            for chunk in chunks:
                await self.queue.put(chunk)
