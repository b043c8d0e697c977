"""Per-chunk update cost of every plasticity rule and adaptive decoder.

Spikes arrive in 1 ms chunks (30 samples at 30 kHz) from Poisson units at 20 Hz. For
100, 1,000 and 10,000 synapses (rules: ``n_pre x n_post``; the LIF readout likewise)
or units (decoders: 50 ms count bins, so one chunk in 50 closes a bin and runs the
decoder and its adaptation), each stage processes ``--chunks`` chunks after a warm-up
that compiles its kernels. Printed per stage and size: the mean and the 99th
percentile cost of one chunk, as a fraction of the 1 ms the chunk spans (measured in
this run with ``time.perf_counter_ns``; below 1 keeps up with real time on one core).

    python benchmarks/decoders_update_cost.py [--chunks 2000] [--sizes 100 1000 10000]
"""

from __future__ import annotations

import argparse
import os
import time
from collections.abc import Callable

os.environ.setdefault("NUMBA_NUM_THREADS", "1")

import numpy as np

from bci.types import SpikeBatch, empty_spikes
from decoders.adaptive import NoAdaptationParams, RmlParams, SmoothBatchParams, make_decoder
from decoders.adaptive.kalman import KalmanParams
from decoders.adaptive.wiener import WienerParams
from decoders.devices import make_device
from decoders.devices.ideal import IdealParams
from decoders.devices.memristor import MemristorParams
from decoders.devices.pulsed import PulsedParams
from decoders.features import (
    BinnedCounts,
    CountFeaturesParams,
    ExponentialTraces,
    TraceFeaturesParams,
)
from decoders.frames import Intention
from decoders.plasticity import make_rule
from decoders.plasticity.bcm import BcmParams
from decoders.plasticity.homeostatic import HomeostaticParams
from decoders.plasticity.pair_stdp import PairStdpParams
from decoders.plasticity.rate import RateRuleParams
from decoders.plasticity.triplet_stdp import TripletStdpParams
from decoders.readout import ReadoutParams, SpikingReadout

FS = 30_000.0
CHUNK = 30  # samples: 1 ms
CHUNK_S = CHUNK / FS
RATE_HZ = 20.0

SHAPES = {100: (10, 10), 1000: (40, 25), 10000: (100, 100)}


def poisson_batches(n_units: int, n_chunks: int, seed: int) -> list[SpikeBatch]:
    rng = np.random.default_rng(seed)
    out = []
    for c in range(n_chunks):
        k = rng.poisson(RATE_HZ * n_units * CHUNK_S)
        spikes = empty_spikes(k)
        spikes["sample"] = np.sort(c * CHUNK + rng.integers(0, CHUNK, k))
        spikes["unit"] = rng.integers(0, n_units, k)
        out.append(SpikeBatch(spikes, c * CHUNK, (c + 1) * CHUNK, c * CHUNK_S, FS))
    return out


def measure(step: Callable[[int], object], n_chunks: int, warmup: int) -> tuple[float, float]:
    """(mean, p99) seconds per chunk of ``step(chunk_index)`` after ``warmup`` chunks."""
    for c in range(warmup):
        step(c)
    times = np.empty(n_chunks)
    for c in range(n_chunks):
        t0 = time.perf_counter_ns()
        step(warmup + c)
        times[c] = (time.perf_counter_ns() - t0) * 1e-9
    return float(times.mean()), float(np.percentile(times, 99))


RULES = {
    "pair_stdp (ideal)": (PairStdpParams(), IdealParams()),
    "pair_stdp nearest, multiplicative": (
        PairStdpParams(pairing="nearest", weight_dependence="multiplicative"),
        IdealParams(),
    ),
    "pair_stdp (pulsed device)": (PairStdpParams(), PulsedParams()),
    "pair_stdp (memristor)": (PairStdpParams(), MemristorParams()),
    "triplet_stdp (ideal)": (TripletStdpParams(), IdealParams(w_max=100.0)),
    "rate rule (pulsed device)": (RateRuleParams(window_ms=100.0), PulsedParams()),
    "rate rule (memristor)": (RateRuleParams(window_ms=100.0), MemristorParams()),
    "bcm (ideal)": (BcmParams(), IdealParams()),
    "homeostatic (ideal)": (HomeostaticParams(), IdealParams()),
}


def bench_rules(
    sizes: list[int], n_chunks: int, warmup: int
) -> list[tuple[str, int, float, float]]:
    rows = []
    for name, (rule_params, dev_params) in RULES.items():
        for size in sizes:
            n_pre, n_post = SHAPES[size]
            device = make_device(dev_params, (n_pre, n_post), np.random.default_rng(1))
            rule = make_rule(rule_params, n_pre, n_post, device, FS)
            pre = poisson_batches(n_pre, warmup + n_chunks, 2)
            post = poisson_batches(n_post, warmup + n_chunks, 3)
            mean, p99 = measure(lambda c: rule.process(pre[c], post[c]), n_chunks, warmup)  # noqa: B023
            rows.append((name, size, mean, p99))
    for size in sizes:
        n_in, n_out = SHAPES[size]
        device = make_device(IdealParams(), (n_in, n_out), np.random.default_rng(1))
        rule = make_rule(PairStdpParams(), n_in, n_out, device, FS)
        readout = SpikingReadout(ReadoutParams(n_out=n_out), n_in, device, FS, rule)
        batches = poisson_batches(n_in, warmup + n_chunks, 4)
        mean, p99 = measure(lambda c: readout.process(batches[c]), n_chunks, warmup)  # noqa: B023
        rows.append(("LIF readout + pair_stdp", size, mean, p99))
    return rows


def decoder_cases(n: int) -> dict[str, tuple[object, object, object] | str]:
    cases: dict[str, tuple[object, object, object] | str] = {
        "kalman, fixed": (CountFeaturesParams(), KalmanParams(), NoAdaptationParams()),
        "kalman + rml": (CountFeaturesParams(), KalmanParams(), RmlParams(warmup_s=0.0)),
        "kalman + smoothbatch": (
            CountFeaturesParams(),
            KalmanParams(),
            SmoothBatchParams(batch_s=1.0),
        ),
        "steady-state kalman + rml": (
            CountFeaturesParams(),
            KalmanParams(steady_state=True),
            RmlParams(warmup_s=0.0),
        ),
        "kalman (trace features) + rml": (
            TraceFeaturesParams(),
            KalmanParams(),
            RmlParams(warmup_s=0.0),
        ),
        "wiener 5 lags, fixed": (CountFeaturesParams(), WienerParams(), NoAdaptationParams()),
    }
    dim = n * 5 + 1
    if dim <= 1000:
        cases["wiener 5 lags + rml"] = (
            CountFeaturesParams(),
            WienerParams(),
            RmlParams(warmup_s=0.0),
        )
    else:
        gb = dim * dim * 8 / 1e9
        cases["wiener 5 lags + rml"] = f"n/a: RML on {dim} lagged inputs needs a {gb:.1f} GB matrix"
    return cases


def bench_decoders(
    sizes: list[int], n_chunks: int, warmup: int
) -> list[tuple[str, int, float, float] | tuple[str, int, str]]:
    rows: list[tuple[str, int, float, float] | tuple[str, int, str]] = []
    for size in sizes:
        batches = poisson_batches(size, warmup + n_chunks, 5)
        rng = np.random.default_rng(6)
        for name, case in decoder_cases(size).items():
            if isinstance(case, str):
                rows.append((name, size, case))
                continue
            feat_params, dec_params, adapt = case
            feats: BinnedCounts | ExponentialTraces
            if isinstance(feat_params, TraceFeaturesParams):
                feats = ExponentialTraces(feat_params, size, FS)
            else:
                assert isinstance(feat_params, CountFeaturesParams)
                feats = BinnedCounts(feat_params, size, FS)
            dec = make_decoder(dec_params, size, feats.bin_s, np.random.default_rng(7), adapt)  # type: ignore[arg-type]
            labels = rng.normal(size=(warmup + n_chunks, 2))

            def step(c: int) -> object:
                frame = feats.process(batches[c])  # noqa: B023
                if len(frame):
                    v = np.repeat(labels[c][None], len(frame), 0)  # noqa: B023
                    return dec.process(frame, Intention(velocity=v))  # noqa: B023
                return None

            mean, p99 = measure(step, n_chunks, warmup)
            rows.append((name, size, mean, p99))
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--chunks", type=int, default=2000, help="measured 1 ms chunks per case")
    ap.add_argument("--warmup", type=int, default=200)
    ap.add_argument("--sizes", type=int, nargs="+", default=[100, 1000, 10000])
    args = ap.parse_args()
    for s in args.sizes:
        if s not in SHAPES:
            ap.error(f"sizes must be among {sorted(SHAPES)}")

    print(
        f"1 ms chunks ({CHUNK} samples at {FS / 1000:.0f} kHz), Poisson units at {RATE_HZ:.0f} Hz;"
    )
    print(f"{args.chunks} measured chunks per case; cost as a fraction of the 1 ms chunk\n")
    print(f"{'plasticity rule / readout':38s} {'synapses':>9s} {'mean':>9s} {'p99':>9s}")
    for name, size, mean, p99 in bench_rules(args.sizes, args.chunks, args.warmup):
        print(f"{name:38s} {size:9d} {mean / 1e-3:9.4f} {p99 / 1e-3:9.4f}")
    print(f"\n{'decoder (50 ms bins)':38s} {'units':>9s} {'mean':>9s} {'p99':>9s}")
    for row in bench_decoders(args.sizes, args.chunks, args.warmup):
        if len(row) == 3:
            print(f"{row[0]:38s} {row[1]:9d}   {row[2]}")
        else:
            name, size, mean, p99 = row
            print(f"{name:38s} {size:9d} {mean / 1e-3:9.4f} {p99 / 1e-3:9.4f}")


if __name__ == "__main__":
    main()
