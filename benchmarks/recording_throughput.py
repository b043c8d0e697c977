"""Recorder write rate and offline replay speed.

1. Recorder, unpaced: 1 ms chunks of 1024 channels (float32) are handed to
   ``SessionRecorder.write`` as fast as the caller can; the writer thread flushes
   (write + fsync + CRC32 index line) every 100 ms of data. Printed: the sustained
   rate actually written to disk (MB/s, up to ``close()`` returning, fsyncs included)
   against what 1024 channels at 30 kHz need (122.9 MB/s), as a ratio, and the drops
   if the caller outran the writer.
2. Recorder, paced in real time at 1024 channels: the cost of ``write()`` in the
   caller's thread (median, p99, max; this is what the real-time loop pays) and the
   drops (should be 0).
3. Offline replay of a recorded session through the whole online pipeline (filter,
   detection, template sorting with a learning period), in 1 ms chunks (as online)
   and 10 ms chunks (the stages are chunking-invariant, so offline replay may use
   larger ones), for 64 and 384 channels, as a real-time factor: over the whole replay
   and after the learning period (steady state). The data are noise plus spiking
   units (one per 4 channels). "reading alone" is the session reader without stages.

    python benchmarks/recording_throughput.py [--seconds 5] [--replay-seconds 20 10]
        [--chunk-ms 1 10] [--learning-s 5] [--folder /tmp] [--skip-replay]
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("NUMBA_NUM_THREADS", "1")

import numpy as np

from acquisition.config import AcquisitionConfig
from acquisition.pipeline import OnlinePipeline
from acquisition.recording.config import RecordingConfig
from acquisition.recording.recorder import SessionRecorder
from acquisition.recording.replay import replay_offline
from acquisition.recording.sources import open_source
from bci.types import Chunk

FS = 30_000.0
CHUNK = 30  # 1 ms
MB = 1e6


def positions(n: int) -> np.ndarray:
    """Two columns 32 µm apart, 20 µm vertical pitch."""
    return np.array([[32.0 * (i % 2), 20.0 * (i // 2)] for i in range(n)])


def synthetic(n_ch: int, seconds: float, seed: int = 0) -> np.ndarray:
    """Noise (8 µV) plus one unit per 4 electrodes firing at 5-15 Hz (float32 µV)."""
    rng = np.random.default_rng(seed)
    n = int(seconds * FS)
    x = rng.normal(0, 8.0, size=(n, n_ch)).astype(np.float32)
    pos = positions(n_ch)
    t = (np.arange(60) - 20) / FS
    for _ in range(n_ch // 4):
        centre = np.array([rng.uniform(0, 32), rng.uniform(0, pos[-1, 1])])
        z = t / rng.uniform(0.8e-4, 1.3e-4)
        shape = (-(1 - z**2) * np.exp(-0.5 * z**2)).astype(np.float32)
        gain = rng.uniform(100, 300) * np.exp(-np.linalg.norm(pos - centre, axis=1) / 25.0)
        chans = np.flatnonzero(gain > 2.0)
        times = np.cumsum(rng.exponential(FS / rng.uniform(5, 15), size=int(seconds * 20) + 5))
        times = times.astype(np.int64) + 100
        g = gain[chans].astype(np.float32)
        for s in times[times < n - 100]:
            x[s - 20 : s + 40, chans] += shape[:, None] * g[None, :]
    return x


def bench_write_rate(folder: Path, seconds: float, n_ch: int = 1024) -> None:
    rng = np.random.default_rng(0)
    pool = [rng.standard_normal((CHUNK, n_ch)).astype(np.float32) for _ in range(64)]
    need = n_ch * FS * 4 / MB
    n_chunks = int(seconds * FS / CHUNK)
    rec = SessionRecorder(
        folder / "rate", FS, n_ch, config=RecordingConfig(warn_free_mb=0, stop_free_mb=0)
    ).start()
    t0 = time.perf_counter()
    for k in range(n_chunks):
        rec.write(Chunk(pool[k % 64], k * CHUNK, k * CHUNK / FS, FS))
    t_fed = time.perf_counter() - t0
    stats = rec.close()
    wall = time.perf_counter() - t0
    rate = stats.samples_written * n_ch * 4 / MB / wall
    print(f"recorder, unpaced, {n_ch} channels, {seconds:g} s of data ({n_chunks} chunks of 1 ms):")
    print(
        f"  written {stats.samples_written * n_ch * 4 / MB:.0f} MB in {wall:.2f} s "
        f"(caller done after {t_fed:.2f} s): {rate:.0f} MB/s sustained, "
        f"need {need:.1f} MB/s -> ratio {rate / need:.2f}x"
    )
    print(
        f"  flushes {stats.flushes}, slowest flush {stats.max_flush_s * 1e3:.1f} ms, "
        f"dropped {stats.dropped_chunks} chunks ({stats.dropped_samples} samples), "
        f"queue high water {stats.queue_high_water_bytes / MB:.1f} MB"
    )
    shutil.rmtree(folder / "rate", ignore_errors=True)


def _paced(n_chunks: int, call: object) -> np.ndarray:
    cost = np.zeros(n_chunks)
    t0 = time.perf_counter()
    for k in range(n_chunks):
        due = t0 + (k + 1) * CHUNK / FS
        while time.perf_counter() < due:
            left = due - time.perf_counter()
            if left > 0.0005:
                time.sleep(left - 0.0003)
        a = time.perf_counter()
        call(k)  # type: ignore[operator]
        cost[k] = time.perf_counter() - a
    return cost * 1e6


def bench_write_cost(folder: Path, seconds: float, n_ch: int = 1024) -> None:
    rng = np.random.default_rng(1)
    pool = [rng.standard_normal((CHUNK, n_ch)).astype(np.float32) for _ in range(64)]
    n_chunks = int(seconds * FS / CHUNK)
    # the same paced loop doing only the copy write() makes: the machine's own noise
    base = _paced(n_chunks, lambda k: np.array(pool[k % 64], copy=True))
    rec = SessionRecorder(
        folder / "paced", FS, n_ch, config=RecordingConfig(warn_free_mb=0, stop_free_mb=0)
    ).start()
    us = _paced(n_chunks, lambda k: rec.write(Chunk(pool[k % 64], k * CHUNK, k * CHUNK / FS, FS)))
    stats = rec.close()
    print(f"recorder, paced in real time, {n_ch} channels, {seconds:g} s:")
    print(
        f"  write() in the caller: median {np.median(us):.1f} µs, p99 "
        f"{np.percentile(us, 99):.1f} µs, max {us.max():.0f} µs (budget 1000 µs per chunk); "
        f"dropped {stats.dropped_chunks} chunks; slowest flush {stats.max_flush_s * 1e3:.1f} ms"
    )
    print(
        f"  baseline, a bare copy of the chunk in the same loop: median {np.median(base):.1f} "
        f"µs, p99 {np.percentile(base, 99):.1f} µs, max {base.max():.0f} µs"
    )
    shutil.rmtree(folder / "paced", ignore_errors=True)


def bench_replay(
    folder: Path, n_ch: int, seconds: float, learning_s: float, chunks_ms: list[float]
) -> None:
    data = synthetic(n_ch, seconds, seed=n_ch)
    session = folder / f"replay{n_ch}"
    rec = SessionRecorder(
        session,
        FS,
        n_ch,
        positions_um=positions(n_ch),
        config=RecordingConfig(warn_free_mb=0, stop_free_mb=0, queue_s=min(600, seconds + 1)),
    ).start()
    for a in range(0, data.shape[0], 3000):
        rec.write(Chunk(data[a : a + 3000], a, a / FS, FS))
    written = rec.close()
    assert written.dropped == 0
    del data
    source = open_source(session)
    for chunk_ms in chunks_ms:
        replay_once(source, n_ch, seconds, learning_s, chunk_ms)
    shutil.rmtree(session, ignore_errors=True)


def replay_once(source: Any, n_ch: int, seconds: float, learning_s: float, chunk_ms: float) -> None:
    step = max(1, round(chunk_ms * FS / 1000))
    cfg = AcquisitionConfig.model_validate(
        {"sorter": {"learning_s": learning_s}, "detection": {"noise_warmup_s": 0.5}}
    )
    pipe = OnlinePipeline(cfg, source.positions_um, source.sample_rate)
    pipe.warm_up()
    learn_end = int(learning_s * FS)
    mark: dict[str, float] = {}
    n_spikes = [0]

    last = [time.perf_counter(), 0.0]  # time of the previous chunk, slowest chunk

    def on_progress(done: int) -> None:
        t = time.perf_counter()
        last[1] = max(last[1], t - last[0])  # the chunk that ends learning clusters
        last[0] = t
        if "learned" not in mark and done >= learn_end + 3 * FS:
            mark["learned"] = t
            mark["learned_at"] = done

    def on_output(chunk: Chunk, batch: object) -> None:
        n_spikes[0] += len(batch)  # type: ignore[arg-type]

    last[0] = time.perf_counter()
    stats = replay_offline(
        source,
        [pipe],
        chunk_samples=step,
        on_output=on_output,
        on_progress=on_progress,
    )
    t1 = time.perf_counter()
    pipe.close()
    null = replay_offline(source, [], chunk_samples=step)
    steady = ""
    if "learned" in mark:
        data_s = (stats.samples - mark["learned_at"]) / FS
        steady = f", after learning x{data_s / (t1 - mark['learned']):.1f}"
    units = pipe.sorter.n_units if pipe.sorter is not None else 0
    print(
        f"offline replay, {n_ch} channels, {seconds:g} s (learning {learning_s:g} s), "
        f"{chunk_ms:g} ms chunks: "
        f"x{stats.realtime_factor:.1f} real time overall{steady}; slowest chunk (end of "
        f"learning: clustering) {last[1]:.2f} s, overall without it "
        f"x{stats.duration_s / (stats.wall_s - last[1]):.1f}; "
        f"{n_spikes[0]} spikes, {units} units; reading alone x{null.realtime_factor:.0f}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=5.0, help="data for the write tests")
    parser.add_argument("--replay-seconds", type=float, nargs=2, default=[20.0, 10.0])
    parser.add_argument("--learning-s", type=float, default=5.0)
    parser.add_argument("--folder", type=Path, default=None, help="where to write (a disk)")
    parser.add_argument("--chunk-ms", type=float, nargs="+", default=[1.0, 10.0])
    parser.add_argument("--skip-replay", action="store_true")
    args = parser.parse_args()
    load = os.getloadavg()
    print(f"{os.cpu_count()} cores, load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}")
    with tempfile.TemporaryDirectory(dir=args.folder) as tmp:
        folder = Path(tmp)
        bench_write_rate(folder, args.seconds)
        bench_write_cost(folder, min(args.seconds, 3.0))
        if not args.skip_replay:
            for n_ch, seconds in zip((64, 384), args.replay_seconds, strict=True):
                bench_replay(folder, n_ch, seconds, args.learning_s, args.chunk_ms)


if __name__ == "__main__":
    main()
