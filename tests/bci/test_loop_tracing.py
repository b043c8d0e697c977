"""The latency tracer and the clock it reads."""

from __future__ import annotations

import pylsl

from bci.clock import now
from bci.loop import LatencyTracer
from stimulators.commands import Ack
from tests.stimulators.helpers import electrical


def test_now_reads_the_lsl_clock() -> None:
    for _ in range(100):
        before = pylsl.local_clock()
        t = now()
        after = pylsl.local_clock()
        assert before - 1e-6 <= t <= after + 1e-6


def ack(cmd_id: object, status: str, received: float, **fields: object) -> Ack:
    return Ack.model_validate(
        {
            "command_id": cmd_id,
            "rig": "rig0",
            "device": "stim0",
            "driver": "d",
            "status": status,
            "received": received,
            "time": received,
            **fields,
        }
    )


def test_an_ack_that_overtakes_the_record_of_its_command_is_kept() -> None:
    """The hot path records a command after sending it; an ack that comes back first
    (another thread) is applied once the command is recorded, not lost."""
    tracer = LatencyTracer()
    cmd = electrical()
    t = cmd.cause.time
    tracer.on_ack(ack(cmd.command_id, "accepted", t + 0.002, sent=t + 0.0015))
    tracer.on_ack(ack(cmd.command_id, "executed", t + 0.003, executed_at=t + 0.003))
    tracer.on_command(cmd, chunk_end=t + 0.0005, pulled=t + 0.001, at=t + 0.0012)
    (trace,) = tracer.traces()
    assert trace.received == t + 0.002
    assert trace.sent == t + 0.0015
    assert trace.status == "executed"
    assert tracer.status_counts == {"accepted": 1, "executed": 1}
    stages = trace.stages_ms()
    assert stages is not None
    assert abs(stages["total"] - 2.0) < 1e-6
    # an ack for a command never recorded does not grow the tracer for ever
    for _ in range(2_000):
        tracer.on_ack(ack(electrical().command_id, "accepted", t))
    assert len(tracer._early) <= 1_000
