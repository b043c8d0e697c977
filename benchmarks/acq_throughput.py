"""Throughput and latency of the online hot path (LSL inlet -> filter -> detect -> sort).

For 64, 384 and 1024 channels at 30 kHz, a child process pushes synthetic data (noise
plus spiking units) through a real LSL outlet on loopback in 1 ms chunks; this process
pulls 1 ms chunks through :class:`acquisition.lsl.inlet.LslInlet` and runs the whole
pipeline on each. Printed: the real-time factor (data seconds per wall second, pulling
as fast as data is available) and the per-chunk processing time (median, p99) against
the 1 ms budget; and, side by side on the same data, SpikeInterface's ``detect_peaks``
(``locally_exclusive``, numba) on the filtered signal. With ``--latency`` the outlet is
paced in real time at 384 channels and the time from each spike's trough to its label
being emitted is measured on the LSL clock (median, p99).

The sorter is trained on the first seconds of the same data before the timed run, so
the figures are for the steady state (spikes matched against templates).

    python benchmarks/acq_throughput.py --duration 5 --channels 64 384 1024
    python benchmarks/acq_throughput.py --latency --duration 10
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import tempfile
import time
import uuid
from pathlib import Path

import numpy as np
import pylsl

from acquisition.config import AcquisitionConfig, InletConfig
from acquisition.lsl.inlet import LslInlet
from acquisition.pipeline import OnlinePipeline
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


def _producer(path: str, source_id: str, paced: bool, ready, go, done) -> None:  # pragma: no cover
    data = np.load(path, mmap_mode="r")
    n, n_ch = data.shape
    info = pylsl.StreamInfo("bench-raw", "EEG", n_ch, FS, "float32", source_id)
    outlet = pylsl.StreamOutlet(info, chunk_size=CHUNK, max_buffered=60)
    ready.set()
    outlet.wait_for_consumers(30.0)
    go.wait(30.0)
    t0 = pylsl.local_clock() + 0.05
    for start in range(0, n - CHUNK + 1, CHUNK):
        block = np.ascontiguousarray(data[start : start + CHUNK])
        stamp_last = t0 + (start + CHUNK - 1) / FS
        if paced:
            wait = stamp_last - pylsl.local_clock()
            if wait > 0.0005:
                time.sleep(wait - 0.0003)
            while pylsl.local_clock() < stamp_last:
                pass
        outlet.push_chunk(block, stamp_last)
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


def run_lsl(data: np.ndarray, train: np.ndarray, paced: bool) -> dict[str, object]:
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
        proc = ctx.Process(target=_producer, args=(path, sid, paced, ready, go, done), daemon=True)
        proc.start()
        ready.wait(60.0)
        inlet = LslInlet(
            InletConfig(source_id=sid, max_chunk_samples=CHUNK, pull_timeout_s=0.2, max_buffer_s=60)
        )
        inlet.open(timeout=10.0)
        go.set()
        n_total = (data.shape[0] // CHUNK) * CHUNK
        got = 0
        proc_times, pull_times, latencies, lat_times = [], [], [], []
        n_spikes = n_labelled = 0
        t_start = None
        while got < n_total:
            t_a = time.perf_counter()
            chunks = inlet.pull(timeout=0.5)
            t_b = time.perf_counter()
            if not chunks:
                if not proc.is_alive():
                    break
                continue
            if t_start is None:
                t_start = t_a
            for ch in chunks:
                c = Chunk(ch.data, ch.first_sample + offset, ch.timestamp, FS)
                t_c = time.perf_counter()
                batch = pipe.process(c)
                t_d = time.perf_counter()
                emitted = pylsl.local_clock()
                proc_times.append(t_d - t_c)
                got += ch.n_samples
                n_spikes += len(batch)
                lab = batch.spikes["unit"] >= 0
                n_labelled += int(lab.sum())
                if paced and lab.any():
                    latencies.extend((emitted - batch.spikes["time"][lab]).tolist())
                    lat_times.extend([got / FS] * int(lab.sum()))
            pull_times.append(t_b - t_a)
        wall = time.perf_counter() - (t_start or time.perf_counter())
        done.set()
        proc.join(5.0)
        if proc.is_alive():
            proc.kill()
    pt = np.array(proc_times) * 1e3
    return {
        "samples": got,
        "rtf": (got / FS) / wall if wall > 0 else float("nan"),
        "rtf_busy": (got / FS) / float(np.sum(proc_times)),
        "proc_median_ms": float(np.median(pt)),
        "proc_p99_ms": float(np.percentile(pt, 99)),
        "proc_max_ms": float(pt.max()),
        "pull_median_ms": float(np.median(pull_times)) * 1e3,
        "pulls": len(pull_times),
        "spikes": n_spikes,
        "labelled": n_labelled,
        "units": pipe.sorter.n_units if pipe.sorter else 0,
        "faults": {k: v for k, v in inlet.fault_counts.items() if v},
        "latency_ms": np.array(latencies) * 1e3,
        "latency_at_s": np.array(lat_times),
        "filter_delay": pipe.delay_samples,
        "lookahead": pipe.detector.lookahead,
    }


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
    args = ap.parse_args()

    if args.latency:
        data = synthetic(384, args.train + args.settle + args.duration, seed=1)
        n_train = int(args.train * FS)
        r = run_lsl(data[n_train:], data[:n_train], paced=True)
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
            f"  per-chunk processing median {r['proc_median_ms']:.3f} ms, p99 "
            f"{r['proc_p99_ms']:.3f} ms; faults {r['faults']}"
        )
        return

    print("whole hot path over LSL loopback, 30 kHz, 1 ms chunks (budget 1.000 ms per chunk)")
    print("RTF: data s / wall s, pulling from LSL (bounded by the pushing process too);")
    print("RTF proc: data s / time in filter+detect+sort; ms columns: per-chunk processing")
    header = (
        f"{'channels':>8} {'RTF':>7} {'RTF proc':>8} {'median ms':>10} {'p99 ms':>8} {'max ms':>8} "
        f"{'spikes':>7} {'units':>6} {'SI detect RTF (1 s / 1 ms chunks)':>34}"
    )
    print(header)
    for n_ch in args.channels:
        data = synthetic(n_ch, args.train + args.duration, seed=n_ch)
        n_train = int(args.train * FS)
        r = run_lsl(data[n_train:], data[:n_train], paced=False)
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
        print(f"         pull median {r['pull_median_ms']:.3f} ms over {r['pulls']} pulls")
        if r["faults"]:
            print(f"         inlet faults: {r['faults']}")


if __name__ == "__main__":
    main()
