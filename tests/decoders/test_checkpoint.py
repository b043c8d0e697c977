"""Checkpoints: resume after SIGKILL, and fall back past corrupt or truncated files."""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from bci.errors import CheckpointError
from decoders.checkpoint import CheckpointStore, DecoderCheckpointer

ROOT = Path(__file__).resolve().parents[2]
N_BINS = 300  # 15 s of 50 ms bins; a checkpoint every 2 s = 40 bins


def start_worker(directory: Path, *args: int) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "tests.decoders.checkpoint_worker", str(directory), *map(str, args)],
        cwd=ROOT,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )


def read_until(proc: subprocess.Popen[str], prefix: str) -> list[str]:
    """Lines up to and including the first one starting with ``prefix`` (blocks on output)."""
    assert proc.stdout is not None
    lines = []
    for line in proc.stdout:
        lines.append(line.strip())
        if line.startswith(prefix):
            return lines
    raise AssertionError(f"worker ended without {prefix!r}: {lines}")


def field_of(line: str, key: str) -> str:
    return dict(p.split("=", 1) for p in line.split()[1:])[key]


@pytest.mark.integration
def test_killed_process_resumes_from_last_checkpoint(tmp_path: Path) -> None:
    reference = start_worker(tmp_path / "reference", N_BINS)  # runs while the other is killed
    victim = start_worker(tmp_path / "killed", N_BINS, 230)
    lines = read_until(victim, "blocked")
    victim.send_signal(signal.SIGKILL)
    victim.wait(timeout=30)
    assert victim.returncode == -signal.SIGKILL
    saved = [int(field_of(x, "bin")) for x in lines if x.startswith("checkpoint")]
    assert saved
    assert saved[-1] < 230

    resumed = start_worker(tmp_path / "killed", N_BINS)
    out, _ = resumed.communicate(timeout=120)
    first, last = out.strip().splitlines()[0], out.strip().splitlines()[-1]
    assert first == f"restored bin={saved[-1]}"
    ref_out, _ = reference.communicate(timeout=120)
    ref_last = ref_out.strip().splitlines()[-1]
    # the resumed run ends in exactly the state of a run that was never interrupted
    assert last == ref_last
    assert field_of(last, "bin") == str(N_BINS)
    # and it checkpointed on shutdown
    store = CheckpointStore(tmp_path / "killed", keep_last=3)
    latest = store.load_latest()
    assert latest is not None
    assert latest.sample == N_BINS * 1500
    assert len(store.paths()) == 3


class Box:
    def __init__(self, value: float) -> None:
        self.w = np.full((4, 3), value)

    def state_dict(self) -> dict[str, np.ndarray]:
        return {"w": self.w.copy()}

    def load_state_dict(self, state: dict[str, np.ndarray]) -> None:
        self.w = state["w"].copy()


@pytest.mark.parametrize("damage", ["truncate", "flip_byte", "empty"])
def test_corrupt_checkpoint_falls_back_with_warning(
    tmp_path: Path, damage: str, caplog: pytest.LogCaptureFixture
) -> None:
    box = Box(0.0)
    ckpt = DecoderCheckpointer(box, CheckpointStore(tmp_path, keep_last=5), 1.0, 1000.0)
    for value in (1.0, 2.0, 3.0):
        box.w[:] = value
        ckpt.save(int(value * 1000))
    newest = ckpt.store.paths()[-1]
    data = newest.read_bytes()
    if damage == "truncate":
        newest.write_bytes(data[: len(data) - 17])
    elif damage == "flip_byte":
        newest.write_bytes(data[:-40] + bytes([data[-40] ^ 0x01]) + data[-39:])
    else:
        newest.write_bytes(b"")
    with pytest.raises(CheckpointError):
        ckpt.store.read(newest)

    fresh = Box(-1.0)
    restorer = DecoderCheckpointer(fresh, CheckpointStore(tmp_path, keep_last=5), 1.0, 1000.0)
    with caplog.at_level(logging.WARNING, logger="decoders.checkpoint"):
        got = restorer.restore()
    assert got is not None
    assert got.sample == 2000
    np.testing.assert_array_equal(fresh.w, 2.0)
    assert any(
        newest.name in r.getMessage() for r in caplog.records if r.levelno == logging.WARNING
    )


def test_rollback_to_last_known_good_is_one_call(tmp_path: Path) -> None:
    box = Box(1.0)
    ckpt = DecoderCheckpointer(box, CheckpointStore(tmp_path, keep_last=2), 1.0, 1000.0)
    ckpt.save(1000, known_good=True)
    for value in (5.0, 6.0, 7.0):  # later, worse states, not known-good
        box.w[:] = value
        ckpt.save(int(value * 1000), known_good=False)
    assert ckpt.rollback().sample == 1000
    np.testing.assert_array_equal(box.w, 1.0)
