"""Real-time factor of the simulated rig (simulated seconds per wall second).

For 64, 384 and 1024 electrodes and 100, 1,000 and 10,000 neurons (80 % excitatory,
20 % inhibitory, each neuron receiving about 50 excitatory and 20 inhibitory
synapses with 1-3 ms delays), the rig simulates in 1 ms chunks and pushes every chunk
to a real LSL outlet, as ``bci sim-rig`` does, on one thread. A factor above 1 keeps
up with real time.

    python benchmarks/sim_rig_rtf.py [--seconds 2] [--model lif|izhikevich]
        [--channels 64 384 1024] [--neurons 100 1000 10000]
"""

from __future__ import annotations

import argparse
import cProfile
import os
import pstats
import sys
import time

os.environ.setdefault("NUMBA_NUM_THREADS", "1")

from acquisition.sim.config import SimRigConfig
from acquisition.sim.neurons import NEURON_MODELS
from acquisition.sim.rig import SimulatedRig, warm_up
from acquisition.sim.streamer import RigStreamer
from bci.config import validate

EXC_IN_DEGREE = 50
INH_IN_DEGREE = 20


def probe_for(channels: int) -> dict[str, object]:
    if channels == 1024:
        return {"kind": "grid", "n_rows": 32, "n_cols": 32, "pitch_um": 40}
    return {"kind": "linear", "n_electrodes": channels, "n_columns": 2 if channels > 64 else 1}


def models(kind: str) -> tuple[dict[str, object], dict[str, object], dict[str, object], float]:
    """(exc model, inh model, drive, synaptic weight) giving a few Hz to tens of Hz."""
    if kind == "izhikevich":
        return (
            {"kind": "izhikevich", "preset": "regular_spiking"},
            {"kind": "izhikevich", "preset": "fast_spiking"},
            {"mean": 4.0, "noise_std": 3.0},
            0.5,
        )
    return (
        {"kind": "lif"},
        {"kind": "lif", "tau_m_ms": 10.0},
        {"mean": 250.0, "noise_std": 80.0},
        6.0,
    )


def config(channels: int, neurons: int, model: str) -> SimRigConfig:
    exc_model, inh_model, drive, weight = models(model)
    n_exc = int(neurons * 0.8)
    n_inh = neurons - n_exc
    return validate(
        SimRigConfig,
        {
            "seed": 1,
            "pacing": "fast",
            "probe": probe_for(channels),
            "populations": [
                {"name": "exc", "count": n_exc, "model": exc_model, "drive": drive},
                {
                    "name": "inh",
                    "count": n_inh,
                    "excitatory": False,
                    "model": inh_model,
                    "drive": drive,
                },
            ],
            "connections": [
                {
                    "pre": pre,
                    "post": post,
                    "probability": min(1.0, degree / n_pre),
                    "weight": weight * (2.0 if pre == "inh" else 1.0),
                    "delay_ms": [1.0, 3.0],
                }
                for pre, n_pre, degree in (
                    ("exc", n_exc, EXC_IN_DEGREE),
                    ("inh", n_inh, INH_IN_DEGREE),
                )
                for post in ("exc", "inh")
            ],
            "stream": {"source_id": f"bench-rig-{os.getpid()}", "ground_truth": True},
        },
        "benchmark",
    )


def measure(channels: int, neurons: int, seconds: float, model: str) -> tuple[float, float]:
    cfg = config(channels, neurons, model)
    warm_up(cfg)
    rig = SimulatedRig(cfg)
    streamer = RigStreamer(rig, "bench")
    try:
        stats = streamer.run(seconds)
    finally:
        streamer.close()
    rate_hz = stats.ground_truth_spikes / neurons / seconds
    return stats.realtime_factor(cfg.sample_rate_hz), rate_hz


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=2.0, help="simulated seconds per case")
    parser.add_argument("--model", default="izhikevich" if "izhikevich" in NEURON_MODELS else "lif")
    parser.add_argument("--channels", type=int, nargs="+", default=[64, 384, 1024])
    parser.add_argument("--neurons", type=int, nargs="+", default=[100, 1000, 10000])
    parser.add_argument("--profile", action="store_true", help="profile the 384 x 1000 case")
    args = parser.parse_args()

    if args.profile:
        cfg = config(384, 1000, args.model)
        warm_up(cfg)
        rig = SimulatedRig(cfg)
        prof = cProfile.Profile()
        prof.enable()
        for _ in range(int(args.seconds * 1000)):
            rig.process(cfg.chunk_samples)
        prof.disable()
        pstats.Stats(prof).sort_stats("tottime").print_stats(12)
        return 0

    print(f"simulated rig, {args.model} neurons, 1 ms chunks to a real LSL outlet, one thread")
    print(f"{'channels':>8} {'neurons':>8} {'rate/Hz':>8} {'real-time factor':>17}")
    for channels in args.channels:
        for neurons in args.neurons:
            t0 = time.perf_counter()
            rtf, rate = measure(channels, neurons, args.seconds, args.model)
            verdict = "keeps up" if rtf >= 1.0 else "SLOWER than real time"
            print(
                f"{channels:>8} {neurons:>8} {rate:>8.1f} {rtf:>17.2f}  {verdict}"
                f"  (case took {time.perf_counter() - t0:.1f} s)",
                flush=True,
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
