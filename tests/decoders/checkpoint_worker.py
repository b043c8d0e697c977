"""A decoder process for the checkpoint test: run closed loop, checkpoint, maybe block.

``python -m tests.decoders.checkpoint_worker DIR N_BINS [BLOCK_AT]`` restores from DIR if
it holds a checkpoint, runs bins up to N_BINS (each bin's randomness seeded by its index,
so a resumed run can match an uninterrupted one bit for bit), prints one line per event,
and with BLOCK_AT waits on stdin after that bin (the test kills it there).
"""

from __future__ import annotations

import hashlib
import logging
import sys

import numpy as np

from bci.types import SpikeBatch, empty_spikes
from decoders.adaptive import RmlParams, make_decoder
from decoders.adaptive.kalman import KalmanParams
from decoders.checkpoint import CheckpointStore, DecoderCheckpointer, StateBundle
from decoders.features import BinnedCounts, CountFeaturesParams
from decoders.frames import Intention
from tests.decoders.cursor_task import Population

FS = 30_000.0
BIN = 1500  # 50 ms
SEED = 21


class TaskState:
    def __init__(self) -> None:
        self.cursor = np.zeros(2)
        self.target = np.array([0.5, 0.0])
        self.bin = 0

    def state_dict(self) -> dict[str, np.ndarray]:
        return {
            "cursor": self.cursor.copy(),
            "target": self.target.copy(),
            "bin": np.array(self.bin),
        }

    def load_state_dict(self, state: dict[str, np.ndarray]) -> None:
        self.cursor = state["cursor"].copy()
        self.target = state["target"].copy()
        self.bin = int(state["bin"])


def digest(state: dict[str, np.ndarray]) -> str:
    h = hashlib.sha256()
    for k in sorted(state):
        h.update(k.encode())
        h.update(np.ascontiguousarray(state[k]).tobytes())
    return h.hexdigest()


def main(argv: list[str]) -> int:
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    directory, n_bins = argv[0], int(argv[1])
    block_at = int(argv[2]) if len(argv) > 2 else -1
    pop = Population(n_units=96, seed=SEED)
    decoder = make_decoder(
        KalmanParams(), 96, 0.05, np.random.default_rng(SEED), RmlParams(half_life_s=10.0)
    )
    features = BinnedCounts(CountFeaturesParams(bin_ms=50.0), 96, FS)
    task = TaskState()
    bundle = StateBundle(decoder=decoder, features=features, task=task)
    ckpt = DecoderCheckpointer(bundle, CheckpointStore(directory, keep_last=3), 2.0, FS)
    restored = ckpt.restore()
    print(f"restored bin={task.bin}" if restored else "fresh", flush=True)
    ckpt.tick(task.bin * BIN)
    while task.bin < n_bins:
        b = task.bin
        rng = np.random.default_rng([SEED, b])
        v = np.clip(2.0 * (task.target - task.cursor), -1, 1)
        counts = rng.poisson(pop.rates(v) * 0.05)
        units = np.repeat(np.arange(96), counts)
        samples = b * BIN + np.sort(rng.integers(0, BIN, units.size))
        spikes = empty_spikes(units.size)
        spikes["sample"], spikes["unit"] = samples, units
        frame = features.process(SpikeBatch(spikes, b * BIN, (b + 1) * BIN, b * BIN / FS, FS))
        k = len(frame)
        out = decoder.process(frame, Intention(velocity=np.repeat(v[None], k, 0)))
        for row in out.values:
            task.cursor = np.clip(task.cursor + 0.05 * row, -1.5, 1.5)
        if np.linalg.norm(task.target - task.cursor) < 0.1 or rng.random() < 0.02:
            task.target = rng.uniform(-1, 1, 2)
        task.bin = b + 1
        if ckpt.tick(task.bin * BIN) is not None:
            print(f"checkpoint bin={task.bin}", flush=True)
        if task.bin == block_at:
            print(f"blocked bin={task.bin}", flush=True)
            sys.stdin.readline()  # the test kills us here, mid-run
    ckpt.shutdown(task.bin * BIN)
    print(f"done bin={task.bin} digest={digest(bundle.state_dict())}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
