"""LSL inlet on loopback: exact sample accounting, loss and recovery, bad input."""

from __future__ import annotations

import asyncio
import math
import threading
from collections.abc import Callable

import numpy as np
import pylsl
import pytest

from acquisition.config import InletConfig, SpikeOutletConfig
from acquisition.lsl.inlet import InletService, LslInlet
from acquisition.lsl.kernels import copy_finite, counter_steps, timestamp_steps_ok
from acquisition.lsl.spike_outlet import SpikeOutlet
from bci.errors import StreamError
from bci.queues import BoundedQueue
from bci.types import SPIKE_DTYPE, Chunk, SpikeBatch

pytestmark = pytest.mark.integration

FS = 1000.0
N_CH = 4
DEADLINE = 10.0


def make_outlet(
    source_id: str, n_ch: int = N_CH, fs: float = FS, name: str = "raw"
) -> pylsl.StreamOutlet:
    info = pylsl.StreamInfo(name, "EEG", n_ch, fs, "float32", source_id)
    return pylsl.StreamOutlet(info)


def block(first: int, n: int, n_ch: int = N_CH) -> np.ndarray:
    """Samples ``first .. first+n-1``: channel 0 is the counter, others random."""
    x = np.random.default_rng(first).normal(size=(n, n_ch)).astype(np.float32)
    x[:, 0] = np.arange(first, first + n)
    return x


def push(outlet: pylsl.StreamOutlet, first: int, n: int, t0: float, data=None) -> None:
    data = block(first, n) if data is None else data
    stamps = [t0 + (first + i) / FS for i in range(n)]
    outlet.push_chunk(data, stamps)


def pull_until(inlet: LslInlet, done: Callable[[list[Chunk]], bool]) -> list[Chunk]:
    """Pull until ``done(chunks)`` holds, or fail at a deadline (no sleeping)."""
    got: list[Chunk] = []
    deadline = pylsl.local_clock() + DEADLINE
    while not done(got):
        assert pylsl.local_clock() < deadline, f"deadline passed; faults: {list(inlet.faults)}"
        got.extend(inlet.pull(timeout=0.05))
    return got


def n_samples(chunks: list[Chunk]) -> int:
    return sum(c.n_samples for c in chunks)


def check_counter(chunks: list[Chunk]) -> None:
    for c in chunks:
        np.testing.assert_array_equal(c.data[:, 0], np.arange(c.first_sample, c.end_sample))


def open_inlet(sid: str, **kw) -> LslInlet:
    inlet = LslInlet(InletConfig(source_id=sid, resolve_timeout_s=5.0, **kw))
    inlet.open()
    return inlet


def test_receives_every_sample_with_counter(unique_id: str) -> None:
    outlet = make_outlet(unique_id)
    inlet = open_inlet(unique_id, counter_channel=0, n_channels=N_CH, sample_rate_hz=FS)
    assert outlet.wait_for_consumers(5.0)
    t0 = pylsl.local_clock()
    for k in range(30):
        push(outlet, 100 * k, 100, t0)
    chunks = pull_until(inlet, lambda got: n_samples(got) >= 3000)
    assert n_samples(chunks) == 3000
    assert chunks[0].first_sample == 0
    check_counter(chunks)
    assert sum(inlet.fault_counts.values()) == 0
    assert chunks[0].timestamp == pytest.approx(t0, abs=1e-3)  # clock-corrected, same host


def test_small_pull_buffer_while_samples_trickle_in(unique_id: str) -> None:
    """Pulls into a 7-sample buffer while another thread pushes 3 samples at a time:
    every sample arrives once, in order, whether a pull found data waiting or waited."""
    outlet = make_outlet(unique_id)
    inlet = open_inlet(unique_id, counter_channel=0, max_chunk_samples=7)
    assert outlet.wait_for_consumers(5.0)
    t0 = pylsl.local_clock()

    def pusher() -> None:
        for k in range(200):
            push(outlet, 3 * k, 3, t0)

    thread = threading.Thread(target=pusher)
    thread.start()
    chunks = pull_until(inlet, lambda got: n_samples(got) >= 600)
    thread.join()
    assert n_samples(chunks) == 600
    assert max(c.n_samples for c in chunks) <= 7
    check_counter(chunks)
    assert sum(inlet.fault_counts.values()) == 0


def test_timestamp_gap_is_reported_exactly(unique_id: str) -> None:
    outlet = make_outlet(unique_id)
    inlet = open_inlet(unique_id)  # no counter: timestamps only
    assert outlet.wait_for_consumers(5.0)
    t0 = pylsl.local_clock()
    push(outlet, 0, 100, t0)
    push(outlet, 137, 100, t0)  # 37 samples never sent
    chunks = pull_until(inlet, lambda got: n_samples(got) >= 200)
    gaps = [f for f in inlet.faults if f.kind == "gap"]
    assert [(g.sample, g.count) for g in gaps] == [(100, 37)]
    check_counter(chunks)  # indices from the timestamps match the sent counter


def test_pull_checks_as_kernels() -> None:
    x = np.arange(12, dtype=np.float32).reshape(4, 3)
    x[1, 2] = np.nan
    x[3, 0] = -np.inf
    out = np.empty_like(x)
    assert copy_finite(x, out) == 2
    want = np.nan_to_num(x, nan=0.0, posinf=0.0, neginf=0.0)
    np.testing.assert_array_equal(out, want)
    ts = 10.0 + np.arange(5) / FS
    assert timestamp_steps_ok(ts, FS, ts[0] * FS - 1.0, 1.5)
    ts[3] = ts[2]
    assert not timestamp_steps_ok(ts, FS, ts[0] * FS - 1.0, 1.5)
    counter = np.zeros((4, 2), dtype=np.float32)
    counter[:, 1] = [5, 6, 7, 8]
    assert counter_steps(counter, 1, 4.0, 2.0**24) == 1
    assert counter_steps(counter, 1, 3.0, 2.0**24) == 0  # one sample missing before
    counter[2, 1] = 2.0**24
    assert counter_steps(counter, 1, 4.0, 2.0**24) == -1  # not exact: use timestamps


def test_spike_outlet_sends_every_field_and_the_trough_times(unique_id: str) -> None:
    outlet = SpikeOutlet(SpikeOutletConfig(name=f"spikes-{unique_id}"), unique_id)
    info = pylsl.resolve_byprop("source_id", unique_id, timeout=5.0)[0]
    inlet = pylsl.StreamInlet(info)
    inlet.open_stream(timeout=5.0)
    assert outlet.outlet.wait_for_consumers(5.0)
    sent = []
    for n in (3, 0, 150):  # the second batch is empty, the third outgrows the buffers
        spikes = np.zeros(n, dtype=SPIKE_DTYPE)
        spikes["sample"] = 1000 + np.arange(n) * 7
        spikes["time"] = 100.0 + spikes["sample"] / 30_000.0
        spikes["channel"] = np.arange(n) % 32
        spikes["unit"] = np.arange(n) % 5 - 1
        spikes["amplitude"] = -50.0 - np.arange(n)
        outlet.push(SpikeBatch(spikes, 0, 1, 0.0, 30_000.0))
        sent.append(spikes)
    want = np.concatenate(sent)
    got: list[list[float]] = []
    stamps: list[float] = []
    deadline = pylsl.local_clock() + DEADLINE
    while len(got) < len(want):
        assert pylsl.local_clock() < deadline
        samples, ts = inlet.pull_chunk(timeout=0.1)
        got.extend(samples)
        stamps.extend(ts)
    arr = np.array(got)
    np.testing.assert_array_equal(arr[:, 0], want["sample"])
    np.testing.assert_array_equal(arr[:, 1], want["channel"])
    np.testing.assert_array_equal(arr[:, 2], want["unit"])
    np.testing.assert_allclose(arr[:, 3], want["amplitude"])
    np.testing.assert_allclose(stamps, want["time"], atol=1e-9)
    assert outlet.pushed == len(want)


@pytest.mark.parametrize("counter", [True, False])
def test_survives_outlet_close_and_reopen_and_reports_exact_gap(
    unique_id: str, counter: bool
) -> None:
    sid = f"{unique_id}-{counter}"
    outlet = make_outlet(sid)
    inlet = open_inlet(sid, counter_channel=0 if counter else None, stall_timeout_s=30.0)
    assert outlet.wait_for_consumers(5.0)
    t0 = pylsl.local_clock()
    push(outlet, 0, 1000, t0)
    before = pull_until(inlet, lambda got: n_samples(got) >= 1000)
    del outlet  # the source disappears
    pull_until(inlet, lambda _: inlet.fault_counts["lost"] >= 1)
    assert not inlet.connected
    outlet = make_outlet(sid)  # the same source comes back
    pull_until(inlet, lambda _: inlet.fault_counts["resumed"] >= 1)
    assert outlet.wait_for_consumers(5.0)
    push(outlet, 1500, 1000, t0)  # 500 samples were never sent
    after = pull_until(inlet, lambda got: n_samples(got) >= 1000)
    gaps = [f for f in inlet.faults if f.kind == "gap"]
    assert len(gaps) == 1
    assert gaps[0].count == 500
    assert gaps[0].sample == 1000
    assert after[0].first_sample == 1500
    check_counter(before + after)
    del outlet


def test_wrong_channel_count_or_rate_is_a_clear_error(unique_id: str) -> None:
    _outlet = make_outlet(unique_id, n_ch=3)
    with pytest.raises(StreamError, match="3 channels, the config says 4"):
        LslInlet(InletConfig(source_id=unique_id, n_channels=4)).open()
    with pytest.raises(StreamError, match="runs at 1000 Hz, the config says 30000 Hz"):
        LslInlet(InletConfig(source_id=unique_id, sample_rate_hz=30_000)).open()


def test_not_found_lists_what_was_found(unique_id: str) -> None:
    _outlet = make_outlet(unique_id, name=f"decoy-{unique_id}")
    with pytest.raises(StreamError, match=f"found: .*decoy-{unique_id}"):
        LslInlet(InletConfig(source_id=f"missing-{unique_id}", resolve_timeout_s=0.3)).open()


def test_nonfinite_samples_are_zeroed_and_counted(unique_id: str) -> None:
    outlet = make_outlet(unique_id)
    inlet = open_inlet(unique_id, counter_channel=0)
    assert outlet.wait_for_consumers(5.0)
    data = block(0, 100)
    data[10, 1] = np.nan
    data[20, 2] = np.inf
    push(outlet, 0, 100, pylsl.local_clock(), data)
    chunks = pull_until(inlet, lambda got: n_samples(got) >= 100)
    assert np.isfinite(np.concatenate([c.data for c in chunks])).all()
    assert inlet.fault_counts["nonfinite"] >= 1
    assert sum(f.count for f in inlet.faults if f.kind == "nonfinite") == 2


def test_out_of_order_and_duplicate_timestamps(unique_id: str) -> None:
    outlet = make_outlet(unique_id)
    inlet = open_inlet(unique_id)  # no counter: timestamps only
    assert outlet.wait_for_consumers(5.0)
    t0 = pylsl.local_clock()
    stamps = [t0 + i / FS for i in range(100)]
    stamps[50] = stamps[40]  # goes back in time
    stamps[70] = stamps[69]  # duplicate
    outlet.push_chunk(block(0, 100), stamps)
    chunks = pull_until(inlet, lambda got: n_samples(got) >= 98)
    assert n_samples(chunks) == 98
    assert inlet.fault_counts["out_of_order"] == 1
    assert inlet.fault_counts["duplicate"] == 1
    # the bad samples are dropped, every other keeps its true index
    idx = np.concatenate([np.arange(c.first_sample, c.end_sample) for c in chunks])
    vals = np.concatenate([c.data[:, 0] for c in chunks])
    np.testing.assert_array_equal(idx, vals)
    assert 50 not in idx
    assert 70 not in idx


def test_stalled_stream_is_reported_once(unique_id: str) -> None:
    outlet = make_outlet(unique_id)
    inlet = open_inlet(unique_id, stall_timeout_s=0.2)
    assert outlet.wait_for_consumers(5.0)
    pull_until(inlet, lambda _: inlet.fault_counts["stalled"] >= 1)
    for _ in range(3):
        inlet.pull(timeout=0.01)
    assert inlet.fault_counts["stalled"] == 1
    push(outlet, 0, 10, pylsl.local_clock())
    pull_until(inlet, lambda got: n_samples(got) >= 10)
    assert inlet.connected


def test_bounded_queue_policies() -> None:
    async def scenario() -> None:
        q: BoundedQueue[int] = BoundedQueue(3, "drop_oldest")
        for i in range(5):
            q.put_nowait(i)
        assert [q.get_nowait() for _ in range(3)] == [2, 3, 4]
        assert q.dropped == 2
        q2: BoundedQueue[int] = BoundedQueue(2, "drop_newest")
        assert [q2.put_nowait(i) for i in range(3)] == [True, True, False]
        assert q2.stats()["dropped"] == 1
        q3: BoundedQueue[int] = BoundedQueue(1, "block")
        await q3.put(1)
        waiter = asyncio.create_task(q3.put(2))
        await asyncio.sleep(0)  # let it reach the wait
        assert not waiter.done()
        assert await q3.get() == 1
        async with asyncio.timeout(1.0):
            await waiter
        assert await q3.get() == 2
        assert q3.dropped == 0
        with pytest.raises(ValueError, match="unknown overflow"):
            BoundedQueue(1, "drop_all")  # type: ignore[arg-type]

    asyncio.run(scenario())


async def test_inlet_service_fills_queue(unique_id: str) -> None:
    outlet = make_outlet(unique_id)
    inlet = LslInlet(InletConfig(source_id=unique_id, counter_channel=0, queue_size=1000))
    service = InletService(inlet)
    stop = asyncio.Event()
    task = asyncio.create_task(service.run(stop))
    got: list[Chunk] = []
    async with asyncio.timeout(DEADLINE):
        while not outlet.have_consumers():
            await asyncio.to_thread(outlet.wait_for_consumers, 0.1)
        push(outlet, 0, 500, pylsl.local_clock())
        while n_samples(got) < 500:
            got.append(await service.queue.get())
    stop.set()
    await task
    check_counter(got)
    assert not math.isnan(got[0].timestamp)


def test_a_connection_opened_unstarted_lets_no_sample_pile_up(unique_id: str) -> None:
    """``open(start=False)``: the description can be read (set-up work) while no sample
    flows; after ``start`` the samples flow from then on, with none of what was pushed
    before queued ahead of them (the closed loop's first chunks are not stale)."""
    outlet = make_outlet(unique_id)
    inlet = LslInlet(InletConfig(source_id=unique_id, resolve_timeout_s=5.0, counter_channel=0))
    inlet.open(start=False)
    assert inlet.full_info().channel_count() == N_CH
    assert not outlet.have_consumers()
    t0 = pylsl.local_clock()
    push(outlet, 0, 100, t0)  # before the start: nobody receives these
    inlet.start()
    assert outlet.wait_for_consumers(5.0)
    inlet.start()  # a second start changes nothing
    push(outlet, 100, 50, t0)
    chunks = pull_until(inlet, lambda got: n_samples(got) >= 50)
    assert chunks[0].first_sample == 100
    assert n_samples(chunks) == 50
    check_counter(chunks)
    inlet.close()
    with pytest.raises(StreamError):
        inlet.start()
