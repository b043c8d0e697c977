"""A recorder killed with SIGKILL at random moments leaves a session that opens and
holds every sample up to its last flush, exactly as the rig produced it."""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from acquisition.recording import layout
from acquisition.recording.session import Session, open_session
from acquisition.sim.rig import SimulatedRig
from tests.helpers.record_rig import rig_config

HELPER = Path(__file__).resolve().parents[1] / "helpers" / "record_rig.py"
SEED = 3
CHUNK = 30  # the rig's chunk (1 ms at 30 kHz): the reference uses the same chunking


def flushed_samples(folder: Path) -> int:
    """Samples named by the index files (the flushed ones)."""
    total = 0
    for index in folder.glob("traces_cached_seg*.index.jsonl"):
        for line in index.read_bytes().split(b"\n"):
            if line:
                with contextlib.suppress(ValueError, KeyError):
                    total += json.loads(line)["n_samples"]
    return total


def wait_for_flushed(
    folder: Path, target: int, child: subprocess.Popen[str] | None = None, timeout_s: float = 60.0
) -> int:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        n = flushed_samples(folder)
        if n >= target:
            return n
        if child is not None and child.poll() is not None:
            raise AssertionError(f"the recording child exited early ({child.returncode})")
        time.sleep(0.002)  # polling a sample count with a deadline
    raise AssertionError(f"only {flushed_samples(folder)} of {target} samples flushed in time")


@pytest.fixture(scope="module")
def reference() -> tuple[np.ndarray, np.ndarray]:
    rig = SimulatedRig(rig_config(SEED))
    data, gts = [], []
    for _ in range(4000):  # 4 s
        out = rig.process(CHUNK)
        data.append(out.chunk.data)
        gts.append(out.ground_truth)
    return np.concatenate(data), np.concatenate(gts)


@pytest.mark.integration
@pytest.mark.slow
def test_sigkill_at_random_moments_keeps_every_flushed_sample(
    tmp_path: Path, reference: tuple[np.ndarray, np.ndarray]
) -> None:
    import spikeinterface.core as sc

    ref, ref_gt = reference
    rng = random.Random(20261122)
    for trial in range(4):
        folder = tmp_path / f"s{trial}"
        target = rng.randrange(3_000, 60_000)
        child = subprocess.Popen(
            [
                sys.executable,
                str(HELPER),
                "--folder",
                str(folder),
                "--seed",
                str(SEED),
                "--flush-ms",
                "5",
                "--rotate-s",
                "0.4",
            ],
            stdout=subprocess.PIPE,
            text=True,
        )
        try:
            assert child.stdout is not None
            assert json.loads(child.stdout.readline()) == {"ready": True}
            before = wait_for_flushed(folder, target, child)
            os.kill(child.pid, signal.SIGKILL)
            assert child.wait(10) == -signal.SIGKILL
        finally:
            if child.poll() is None:
                child.kill()
                child.wait()
        session = Session(folder, verify="all")
        assert session.state == "recording"  # never closed
        assert session.problems  # the unclosed state (and any torn tail) is reported
        n = session.n_samples
        assert n >= before, f"trial {trial}: lost flushed samples ({n} < {before})"
        live = [s for s in session.segments if s.n_samples]
        assert live[-1].end_sample <= len(ref)
        for seg in live:  # each segment holds exactly the rig's samples at its place
            assert np.array_equal(session.read(seg.k), ref[seg.first_sample : seg.end_sample]), (
                f"trial {trial}: data differ in segment {seg.k}"
            )
        # nothing was dropped (the queue is large): segments follow each other
        for a, b in itertools.pairwise(live):
            assert b.first_sample == a.end_sample
        gt = session.ground_truth()
        assert np.array_equal(gt, ref_gt[: len(gt)])
        # repair makes SpikeInterface see exactly the verified samples
        repaired = open_session(folder, repair=True)
        assert repaired.state == "recovered"
        assert not repaired.problems
        assert repaired.n_samples == n
        rec = sc.load(folder)
        assert rec.get_num_segments() == len(live)
        for k, seg in enumerate(live):
            first = round(rec.get_times(k)[0] * 30_000)
            assert first == seg.first_sample
            assert np.array_equal(rec.get_traces(segment_index=k), ref[first : seg.end_sample])
        meta = json.loads((folder / layout.SESSION_JSON).read_text())
        assert meta["recovered"]["n_samples"] == n
