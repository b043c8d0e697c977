"""Throughput and latency of the online hot path (LSL inlet -> filter -> detect -> sort).

For 64, 384 and 1024 channels at 30 kHz, a child process pushes synthetic data (noise
plus spiking units) through a real LSL outlet on loopback in 1 ms chunks; this process
pulls 1 ms chunks through :class:`acquisition.lsl.inlet.LslInlet` and runs the whole
pipeline on each. Printed: the real-time factor (data seconds per wall second, pulling
as fast as data is available) and the per-chunk processing time (median, p99) against
the 1 ms budget; and, side by side on the same data, SpikeInterface's ``detect_peaks``
(``locally_exclusive``, numba) on the filtered signal. With ``--latency`` the outlet is
paced in real time at 384 channels and the time from each spike's trough to its label
being emitted (pushed to the spike outlet) is measured on the LSL clock (median, p99),
and split into its parts: waiting for the chunk to fill, delivery (the pusher's own
lateness plus LSL transport), and processing.

Under every row: the time per stage (inlet pull, filter, detect, sort, batch assembly,
spike outlet push; mean and p99 per chunk, µs; a pull includes its wait for data), the
per-chunk time on the thread's CPU clock (what the hot path costs, without the time it
spent descheduled), the garbage collections during the run, the CPU used by this
process and by the pusher, and the load average: the machine may be shared, and a
chunk's wall time includes any time the scheduler gave its core to someone else.
``--paced`` paces the pusher at real time in the throughput table too (the sustained
30 kHz condition of the target). As in the closed loop, the heap is collected
and frozen once everything is warm (``--no-gc-freeze``: not).

The sorter is trained on the first seconds of the same data before the timed run, so
the figures are for the steady state (spikes matched against templates).

    python benchmarks/acq_throughput.py --duration 5 --channels 64 384 1024
    python benchmarks/acq_throughput.py --latency --duration 10
    python benchmarks/acq_throughput.py --paced --duration 5 --channels 1024 --no-si
"""

from __future__ import annotations

import argparse
import functools
import gc
import multiprocessing as mp
import os
import resource
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import numpy as np
import pylsl

from acquisition.config import AcquisitionConfig, InletConfig, SpikeOutletConfig
from acquisition.lsl.inlet import LslInlet
from acquisition.lsl.spike_outlet import SpikeOutlet
from acquisition.pipeline import OnlinePipeline
from bci.clock import tight_timers
from bci.runtime import settle_heap
from bci.types import Chunk

FS = 30_000.0
CHUNK = 30  # 1 ms


def probe_positions(n: int) -> np.ndarray:
    """Two columns 32 µm apart, 20 µm vertical pitch (a dense linear probe)."""
    return np.array([[32.0 * (i % 2), 20.0 * (i // 2)] for i in range(n)])


def synthetic(n_ch: int, seconds: float, seed: int = 0) -> np.ndarray:
    """Noise (8 µV) plus one unit per 4 electrodes firing at 5-15 Hz (float32 µV)."""
    rng = np.random.default_rng(seed)
    n = int(seconds * FS)
    x = rng.normal(0, 8.0, size=(n, n_ch)).astype(np.float32)
    pos = probe_positions(n_ch)
    t = (np.arange(60) - 20) / FS
    for _ in range(n_ch // 4):
        centre = np.array([rng.uniform(0, 32), rng.uniform(0, pos[-1, 1])])
        width = rng.uniform(0.8e-4, 1.3e-4)
        z = t / width
        shape = -(1 - z**2) * np.exp(-0.5 * z**2)
        gain = rng.uniform(60, 200) * np.exp(-np.linalg.norm(pos - centre, axis=1) / 25.0)
        chans = np.flatnonzero(gain > 2.0)
        times = np.cumsum(rng.exponential(FS / rng.uniform(5, 15), size=int(seconds * 20) + 5))
        times = times.astype(np.int64) + 100
        for s in times[times < n - 100]:
            x[s - 20 : s + 40, chans] += shape[:, None] * gain[None, chans]
    return x


def _producer(
    path: str, source_id: str, paced: bool, ready, go, done, report
) -> None:  # pragma: no cover
    tight_timers()  # 1 ns timer slack: the paced sleeps end on time
    data = np.load(path, mmap_mode="r")
    n, n_ch = data.shape
    info = pylsl.StreamInfo("bench-raw", "EEG", n_ch, FS, "float32", source_id)
    outlet = pylsl.StreamOutlet(info, chunk_size=CHUNK, max_buffered=60)
    ready.set()
    outlet.wait_for_consumers(30.0)
    go.wait(30.0)
    late = np.zeros(n // CHUNK + 1)
    cpu0, t0 = time.process_time(), pylsl.local_clock() + 0.05
    for i, start in enumerate(range(0, n - CHUNK + 1, CHUNK)):
        block = np.ascontiguousarray(data[start : start + CHUNK])
        stamp_last = t0 + (start + CHUNK - 1) / FS
        if paced:
            # sleep only (no busy wait: on a shared machine a spinning pusher takes CPU
            # from the process it feeds); its lateness is measured and reported
            wait = stamp_last - pylsl.local_clock()
            if wait > 0:
                time.sleep(wait)
        outlet.push_chunk(block, stamp_last)
        late[i] = pylsl.local_clock() - stamp_last
    late[-1] = time.process_time() - cpu0  # the pusher's CPU seconds while it pushed
    report.put(late)
    done.wait(120.0)  # keep the outlet alive until the consumer has everything


def make_pipeline(data: np.ndarray, train_s: float) -> OnlinePipeline:
    cfg = AcquisitionConfig.model_validate(
        {"sorter": {"learning_s": train_s * 0.8, "recluster_every_s": 1e6}}
    )
    pipe = OnlinePipeline(cfg, probe_positions(data.shape[1]), FS)
    pipe.warm_up()
    n = int(train_s * FS)
    for a in range(0, n, 3000):
        pipe.process(Chunk(data[a : min(n, a + 3000)], a, 0.0, FS))
    return pipe


STAGES = ("pull", "filter", "detect", "sort", "batch", "outlet")


class Timed:
    """Stands in for a stage of the pipeline and adds the time of each call of its
    working methods (``process``; the sorter's ``sort``, ``with_hidden``) to
    ``acc[slot]`` (s)."""

    METHODS = frozenset({"process", "sort", "with_hidden"})

    def __init__(self, stage: Any, acc: np.ndarray, slot: int) -> None:
        self.stage, self.acc, self.slot = stage, acc, slot

    def _timed(self, method: Any, *args: Any) -> Any:
        t = time.perf_counter()
        out = method(*args)
        self.acc[self.slot] += time.perf_counter() - t
        return out

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self.stage, name)
        if name in self.METHODS and callable(attr):
            return functools.partial(self._timed, attr)
        return attr


def run_lsl(data: np.ndarray, train: np.ndarray, paced: bool, gc_freeze: bool) -> dict[str, object]:
    """Stream ``data`` through LSL; time the whole hot path per 1 ms chunk."""
    pipe = make_pipeline(train, train.shape[0] / FS)
    # continue the stream's sample numbering after the training data
    offset = train.shape[0]
    with tempfile.TemporaryDirectory() as tmp:
        path = str(Path(tmp) / "data.npy")
        np.save(path, data)
        sid = f"bench-{uuid.uuid4().hex[:8]}"
        ctx = mp.get_context("spawn")
        ready, go, done = ctx.Event(), ctx.Event(), ctx.Event()
        report = ctx.Queue()
        proc = ctx.Process(
            target=_producer, args=(path, sid, paced, ready, go, done, report), daemon=True
        )
        proc.start()
        ready.wait(60.0)
        inlet = LslInlet(
            InletConfig(source_id=sid, max_chunk_samples=CHUNK, pull_timeout_s=0.2, max_buffer_s=60)
        )
        inlet.open(timeout=10.0)
        spike_out = SpikeOutlet(SpikeOutletConfig(name=f"bench-spikes-{sid}"), f"{sid}-spikes")
        n_total = (data.shape[0] // CHUNK) * CHUNK
        n_max = n_total // CHUNK + 16
        # preallocated records: nothing grows in the timed loop but the latency lists
        wall = np.zeros(n_max)  # s, pipeline + outlet, per chunk
        cpu = np.zeros(n_max)  # s, same on the thread's CPU clock
        stages = np.zeros((n_max, len(STAGES)))  # s
        arrival = np.zeros(n_max)  # s, last sample's time -> pulled
        acc = np.zeros(3)  # s in filter, detect, sort during one chunk
        pipe.filter = Timed(pipe.filter, acc, 0)
        pipe.detector = Timed(pipe.detector, acc, 1)
        if pipe.sorter is not None:
            pipe.sorter = Timed(pipe.sorter, acc, 2)
        latencies: list[float] = []
        lat_times: list[float] = []
        got = k = n_pulls = 0
        n_spikes = n_labelled = 0
        pull_sum = 0.0
        t_start = None
        if gc_freeze:
            settle_heap()  # as the closed loop does before it is armed
        gc_before = [g["collections"] for g in gc.get_stats()]
        self_cpu0 = resource.getrusage(resource.RUSAGE_SELF)
        load0 = os.getloadavg()
        go.set()
        pc, tt, clock = time.perf_counter, time.thread_time, pylsl.local_clock
        while got < n_total:
            t_a = pc()
            chunks = inlet.pull(timeout=0.5)
            t_b = pc()
            pulled = clock()
            if not chunks:
                if not proc.is_alive():
                    break
                continue
            if t_start is None:
                t_start = t_a
            n_pulls += 1
            pull_sum += t_b - t_a
            for j, ch in enumerate(chunks):
                c = Chunk(ch.data, ch.first_sample + offset, ch.timestamp, FS)
                acc[:] = 0.0
                c0, t_c = tt(), pc()
                batch = pipe.process(c)
                t_d = pc()
                spike_out.push(batch)
                t_e = pc()
                c1 = tt()
                emitted = clock()
                if k < n_max:
                    wall[k] = t_e - t_c
                    cpu[k] = c1 - c0
                    stages[k, 0] = (t_b - t_a) if j == 0 else 0.0
                    stages[k, 1:4] = acc
                    stages[k, 4] = (t_d - t_c) - acc.sum()  # batch assembly and the rest
                    stages[k, 5] = t_e - t_d
                    arrival[k] = pulled - (ch.timestamp + (ch.n_samples - 1) / FS)
                    k += 1
                got += ch.n_samples
                n_spikes += len(batch)
                lab = batch.spikes["unit"] >= 0
                n_lab = int(np.count_nonzero(lab))
                n_labelled += n_lab
                if paced and n_lab:
                    latencies.extend((emitted - batch.spikes["time"][lab]).tolist())
                    lat_times.extend([got / FS] * n_lab)
        elapsed = pc() - (t_start or pc())
        load1 = os.getloadavg()
        self_cpu1 = resource.getrusage(resource.RUSAGE_SELF)
        gc_after = [g["collections"] for g in gc.get_stats()]
        if gc_freeze:
            gc.unfreeze()
        try:
            late = report.get(timeout=10.0)
        except Exception:
            late = np.zeros(2)
        pusher_cpu, late = float(late[-1]), late[:-1]
        done.set()
        proc.join(5.0)
        if proc.is_alive():
            proc.kill()
    wall, cpu, stages, arrival = wall[:k] * 1e3, cpu[:k] * 1e3, stages[:k] * 1e6, arrival[:k] * 1e3
    pipe.close()

    def cpu_s(r: resource.struct_rusage) -> float:
        return r.ru_utime + r.ru_stime

    return {
        "samples": got,
        "rtf": (got / FS) / elapsed if elapsed > 0 else float("nan"),
        "rtf_busy": (got / FS) / (float(np.sum(wall)) * 1e-3),
        "proc_median_ms": float(np.median(wall)),
        "proc_p99_ms": float(np.percentile(wall, 99)),
        "proc_max_ms": float(wall.max()),
        "cpu_median_ms": float(np.median(cpu)),
        "cpu_p99_ms": float(np.percentile(cpu, 99)),
        "stage_mean_us": stages.mean(axis=0),
        "stage_p99_us": np.percentile(stages, 99, axis=0),
        "pull_mean_us": pull_sum / max(n_pulls, 1) * 1e6,
        "pulls": n_pulls,
        "arrival_median_ms": float(np.median(arrival)),
        "arrival_p99_ms": float(np.percentile(arrival, 99)),
        "pusher_late_median_ms": float(np.median(late)) * 1e3,
        "pusher_late_p99_ms": float(np.percentile(late, 99)) * 1e3,
        "spikes": n_spikes,
        "labelled": n_labelled,
        "units": pipe.sorter.n_units if pipe.sorter else 0,
        "faults": {k: v for k, v in inlet.fault_counts.items() if v},
        "gc": [b - a for a, b in zip(gc_before, gc_after, strict=True)],
        "load": (load0[0], load1[0]),
        "cpu_self_pct": 100.0 * (cpu_s(self_cpu1) - cpu_s(self_cpu0)) / max(elapsed, 1e-9),
        "cpu_pusher_pct": 100.0 * pusher_cpu / max(elapsed, 1e-9),
        "latency_ms": np.array(latencies) * 1e3,
        "latency_at_s": np.array(lat_times),
        "filter_delay": pipe.delay_samples,
        "lookahead": pipe.detector.lookahead,
    }


def print_details(r: dict[str, object]) -> None:
    """The per-stage breakdown and the conditions of a run, under its figures."""
    mean, p99 = r["stage_mean_us"], r["stage_p99_us"]
    parts = ", ".join(
        f"{name} {m:.0f}/{q:.0f}" for name, m, q in zip(STAGES, mean, p99, strict=True)
    )
    print(f"         stages µs mean/p99: {parts}")
    print(
        f"         per chunk on the thread CPU clock: median {r['cpu_median_ms']:.3f} ms, "
        f"p99 {r['cpu_p99_ms']:.3f} ms; {r['pulls']} pulls"
    )
    print(
        f"         gc collections (gen 0/1/2) {r['gc']}; CPU: this process "
        f"{r['cpu_self_pct']:.0f}% (with liblsl's receiver thread), pusher "
        f"{r['cpu_pusher_pct']:.0f}%; load average {r['load'][0]:.2f} -> {r['load'][1]:.2f} "
        f"on {os.cpu_count()} CPUs"
    )
    if r["faults"]:
        print(f"         inlet faults: {r['faults']}")


def run_si(filtered: np.ndarray, positions: np.ndarray, chunk_samples: int) -> float:
    """Real-time factor of SpikeInterface's detect_peaks (locally exclusive) on ``filtered``."""
    import spikeinterface.core as sc
    from spikeinterface.sortingcomponents.peak_detection import detect_peaks

    rec = sc.NumpyRecording([filtered], sampling_frequency=FS)
    rec.set_dummy_probe_from_locations(positions)
    from spikeinterface.core import get_noise_levels

    noise = get_noise_levels(
        rec, return_in_uV=False, random_slices_kwargs={"seed": 0}, progress_bar=False
    )
    kwargs = dict(
        peak_sign="neg",
        detect_threshold=5,
        exclude_sweep_ms=0.4,
        radius_um=50.0,
        noise_levels=noise,
    )
    job = dict(n_jobs=1, chunk_size=chunk_samples, progress_bar=False)
    short = rec.frame_slice(0, min(rec.get_num_samples(), 30 * chunk_samples + 3000))
    detect_peaks(short, method="locally_exclusive", method_kwargs=kwargs, job_kwargs=job)  # JIT
    t0 = time.perf_counter()
    detect_peaks(rec, method="locally_exclusive", method_kwargs=kwargs, job_kwargs=job)
    return (filtered.shape[0] / FS) / (time.perf_counter() - t0)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--channels", type=int, nargs="+", default=[64, 384, 1024])
    ap.add_argument("--duration", type=float, default=10.0, help="timed seconds of data")
    ap.add_argument("--train", type=float, default=4.0, help="seconds to train the sorter")
    ap.add_argument("--latency", action="store_true", help="paced run at 384 ch: latency")
    ap.add_argument("--settle", type=float, default=3.0, help="latency: seconds left out")
    ap.add_argument("--no-si", action="store_true", help="skip the SpikeInterface comparison")
    ap.add_argument("--paced", action="store_true", help="throughput table: pusher in real time")
    ap.add_argument(
        "--no-gc-freeze",
        dest="gc_freeze",
        action="store_false",
        help="leave the heap unfrozen (the closed loop collects and freezes it once armed)",
    )
    args = ap.parse_args()

    if args.latency:
        data = synthetic(384, args.train + args.settle + args.duration, seed=1)
        n_train = int(args.train * FS)
        r = run_lsl(data[n_train:], data[:n_train], paced=True, gc_freeze=args.gc_freeze)
        skip = args.settle
        lat = r["latency_ms"][r["latency_at_s"] >= skip]
        early = r["latency_ms"][r["latency_at_s"] < skip]
        print(f"trough-to-label latency, 384 ch, 30 kHz, 1 ms chunks, paced: {len(lat)} spikes")
        print(
            f"  (the first {skip:g} s after the LSL connection opens are left out: liblsl "
            f"delivers the first samples in a burst, max latency there "
            f"{early.max() if len(early) else float('nan'):.0f} ms)"
        )
        if len(lat):
            print(
                f"  median {np.median(lat):.2f} ms, p99 {np.percentile(lat, 99):.2f} ms, "
                f"max {lat.max():.2f} ms (filter delay {r['filter_delay']} + lookahead "
                f"{r['lookahead']} samples = {(r['filter_delay'] + r['lookahead']) / 30:.2f} ms)"
            )
        print(
            f"  parts: chunk fill up to 1 ms + lookahead; delivery (last sample's stamp to "
            f"pulled) median {r['arrival_median_ms']:.2f} ms, p99 {r['arrival_p99_ms']:.2f} ms, "
            f"of which the pusher's own lateness median {r['pusher_late_median_ms']:.2f} ms, "
            f"p99 {r['pusher_late_p99_ms']:.2f} ms"
        )
        print(
            f"  per-chunk processing (pipeline + spike outlet) median "
            f"{r['proc_median_ms']:.3f} ms, p99 {r['proc_p99_ms']:.3f} ms, max "
            f"{r['proc_max_ms']:.2f} ms"
        )
        print_details(r)
        return

    pacing = "pusher paced in real time" if args.paced else "pusher as fast as it can"
    print(
        f"whole hot path over LSL loopback, 30 kHz, 1 ms chunks (budget 1.000 ms per chunk), "
        f"{pacing}"
    )
    print("RTF: data s / wall s, pulling from LSL (bounded by the pushing process too);")
    print("RTF proc: data s / time in filter+detect+sort+spike outlet; ms columns: per chunk")
    header = (
        f"{'channels':>8} {'RTF':>7} {'RTF proc':>8} {'median ms':>10} {'p99 ms':>8} {'max ms':>8} "
        f"{'spikes':>7} {'units':>6} {'SI detect RTF (1 s / 1 ms chunks)':>34}"
    )
    print(header)
    for n_ch in args.channels:
        data = synthetic(n_ch, args.train + args.duration, seed=n_ch)
        n_train = int(args.train * FS)
        r = run_lsl(data[n_train:], data[:n_train], paced=args.paced, gc_freeze=args.gc_freeze)
        si_txt = "-"
        if not args.no_si:
            from acquisition.config import FilterConfig
            from acquisition.filter import StreamingFilter

            filt = StreamingFilter(FilterConfig(), n_ch, FS)
            filtered = filt.process(Chunk(data[n_train:], 0, 0.0, FS)).data
            pos = probe_positions(n_ch)
            si_1s = run_si(filtered, pos, 30_000)
            si_1ms = run_si(filtered[: int(min(2.0, args.duration) * FS)], pos, CHUNK)
            si_txt = f"{si_1s:.1f} / {si_1ms:.2f}"
        print(
            f"{n_ch:>8} {r['rtf']:>7.2f} {r['rtf_busy']:>8.2f} "
            f"{r['proc_median_ms']:>10.3f} {r['proc_p99_ms']:>8.3f} "
            f"{r['proc_max_ms']:>8.2f} {r['spikes']:>7} {r['units']:>6} {si_txt:>34}",
            flush=True,
        )
        print_details(r)


if __name__ == "__main__":
    main()
