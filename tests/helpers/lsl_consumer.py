"""A stand-alone LSL consumer, run as a separate process by the tests.

Resolves a stream by source id, pulls ``--samples`` samples into a preallocated
buffer, and prints one JSON object: the stream's metadata, the counter channel's
continuity and the timestamps' spacing.

    python tests/helpers/lsl_consumer.py --source-id ID --samples N [--timeout S]
"""

from __future__ import annotations

import argparse
import json
import sys

import numpy as np
import pylsl


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--source-id", required=True)
    parser.add_argument("--samples", type=int, required=True)
    parser.add_argument("--timeout", type=float, default=20.0)
    args = parser.parse_args()

    found = pylsl.resolve_byprop("source_id", args.source_id, 1, args.timeout)
    if not found:
        print(json.dumps({"error": "stream not found"}))
        return 1
    inlet = pylsl.StreamInlet(found[0], max_buflen=60, recover=False)
    info = inlet.info(timeout=args.timeout)
    n_ch = info.channel_count()
    print(json.dumps({"ready": True}), flush=True)  # the parent starts streaming now
    data = np.zeros((args.samples, n_ch), dtype=np.float32)
    stamps = np.zeros(args.samples)
    buf = np.zeros((1024, n_ch), dtype=np.float32)
    got = 0
    deadline = pylsl.local_clock() + args.timeout
    while got < args.samples and pylsl.local_clock() < deadline:
        _, ts = inlet.pull_chunk(timeout=0.5, max_samples=1024, dest_obj=buf)
        n = min(len(ts), args.samples - got)
        if n:
            data[got : got + n] = buf[:n]
            stamps[got : got + n] = ts[:n]
            got += n
    labels, units, xs = [], [], []
    ch = info.desc().child("channels").child("channel")
    while not ch.empty():
        labels.append(ch.child_value("label"))
        units.append(ch.child_value("unit"))
        xs.append(float(ch.child("location").child_value("Y") or "nan"))
        ch = ch.next_sibling("channel")
    counter = data[:got, 0].astype(np.int64)
    steps = np.diff(counter) % (1 << 24)
    print(
        json.dumps(
            {
                "name": info.name(),
                "channels": n_ch,
                "rate": info.nominal_srate(),
                "format": info.channel_format(),
                "labels": labels,
                "units": sorted(set(units)),
                "y_um": xs,
                "received": got,
                "first_counter": int(counter[0]) if got else -1,
                "counter_steps": sorted({int(s) for s in steps}),
                "all_finite": bool(np.isfinite(data[:got]).all()),
                "signal_std_uv": float(data[:got, 1:].std()) if got else 0.0,
                "stamp_step_s": float(np.median(np.diff(stamps[:got]))) if got > 1 else 0.0,
            }
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
