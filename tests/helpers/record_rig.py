"""Records a simulated rig into a session until killed (a child process for crash tests).

    python tests/helpers/record_rig.py --folder DIR [--seed N] [--flush-ms MS]
        [--rotate-s S] [--seconds S]

The rig config is :func:`rig_config` (fast pacing), so the parent can regenerate the
exact samples in-process. Prints ``{"ready": true}`` once the kernels are compiled and
recording has started.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from acquisition.recording.config import RecordingConfig
from acquisition.recording.recorder import SessionRecorder
from acquisition.sim.config import SimRigConfig
from acquisition.sim.rig import SimulatedRig, warm_up
from acquisition.sim.streamer import RigStreamer
from bci.config import validate


def rig_config(seed: int = 3, **overrides: Any) -> SimRigConfig:
    """A small, fast rig: 16 electrodes, 16 LIF neurons, 1 ms chunks, fast pacing."""
    data: dict[str, Any] = {
        "seed": seed,
        "pacing": "fast",
        "probe": {"kind": "linear", "n_electrodes": 16},
        "populations": [
            {"name": "exc", "count": 12, "model": {"kind": "lif"}, "drive": {"noise_std": 50}},
            {
                "name": "inh",
                "count": 4,
                "excitatory": False,
                "model": {"kind": "lif", "tau_m_ms": 10},
                "drive": {"mean": 450, "noise_std": 50},
            },
        ],
        "connections": [{"pre": "exc", "post": "inh", "probability": 0.5, "weight": 30}],
    }
    data.update(overrides)
    return validate(SimRigConfig, data, "record_rig")


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--folder", required=True)
    parser.add_argument("--seed", type=int, default=3)
    parser.add_argument("--flush-ms", type=float, default=20.0)
    parser.add_argument("--rotate-s", type=float, default=None)
    parser.add_argument("--seconds", type=float, default=None)
    parser.add_argument("--queue-s", type=float, default=60.0)
    args = parser.parse_args()
    warm_up(rig_config(args.seed))  # compile before "ready": no JIT inside the timed part
    rig = SimulatedRig(rig_config(args.seed))
    config = RecordingConfig(
        flush_interval_ms=args.flush_ms,
        rotate_s=args.rotate_s,
        warn_free_mb=0,
        stop_free_mb=0,
        queue_s=args.queue_s,
    )
    recorder = SessionRecorder.for_rig(rig, Path(args.folder), config).start()
    streamer = RigStreamer(rig, stream=False, on_chunk=recorder.write_rig_chunk)
    print(json.dumps({"ready": True}), flush=True)
    streamer.run(args.seconds)
    recorder.close()
    print(json.dumps({"done": True, "samples": streamer.stats.samples}), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
