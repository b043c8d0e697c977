"""Closed-loop policies as synchronous stages, fed synthetic spike batches."""

from __future__ import annotations

import numpy as np
import pytest

from bci.types import SPIKE_DTYPE, SpikeBatch
from stimulators.commands import ElectricalPulseTrain, OpticalPulseTrain, command_adapter
from stimulators.policies import make_policy
from stimulators.policies.decoder_driven import DecoderDrivenParams
from stimulators.policies.rate_clamp import RateClampParams, RateClampPolicy
from stimulators.policies.spike_triggered import SpikeTriggeredParams, SpikeTriggeredPolicy

FS = 30_000.0
CHUNK = 30  # 1 ms
ELECTRICAL = {"kind": "electrical", "electrodes": [3], "amplitude_ua": 10, "width_us": 200}
OPTICAL = {"kind": "optical", "site": "led0", "power_mw": 1.0}


def batch(
    first: int, spikes: list[tuple[int, int]], n: int = CHUNK, channel: int = 0
) -> SpikeBatch:
    arr = np.zeros(len(spikes), dtype=SPIKE_DTYPE)
    for k, (sample, unit) in enumerate(spikes):
        arr[k] = (sample, sample / FS, channel, unit, -80.0)
    return SpikeBatch(arr, first, first + n, first / FS, FS)


def test_spike_triggered_one_command_per_qualifying_spike_none_in_lockout() -> None:
    params = SpikeTriggeredParams(
        device="stim0", units=[2], lockout_ms=10, deadline_ms=5, command=ELECTRICAL
    )
    policy = SpikeTriggeredPolicy(params, "rig0", FS)
    # unit 2 fires at 0.5 ms, 5 ms (in lockout), 20 ms, 20.3 ms (lockout); unit 1 at 8 ms
    times = {15: 2, 150: 2, 240: 1, 600: 2, 609: 2}
    sent = []
    for k in range(40):
        first = k * CHUNK
        spikes = [(s, u) for s, u in times.items() if first <= s < first + CHUNK]
        now = (first + CHUNK) / FS
        sent.extend(policy.process(batch(first, spikes), now))
    assert [c.cause.sample for c in sent] == [15, 600]
    assert policy.triggers == 2
    assert policy.locked_out == 2
    cmd = sent[0]
    assert isinstance(cmd, ElectricalPulseTrain)
    assert cmd.electrodes == [3]
    assert cmd.amplitudes_ua == (10, 10)
    assert cmd.cause.time == pytest.approx(15 / FS)
    assert cmd.deadline == pytest.approx(15 / FS + 0.005)
    assert cmd.rig == "rig0"
    assert cmd.device == "stim0"


def test_spike_triggered_qualifying_matches_isin_in_sample_order() -> None:
    rng = np.random.default_rng(3)
    for field, chosen in (("unit", [0, 4, 9]), ("channel", [2, 31])):
        kwargs = {"units": chosen} if field == "unit" else {"electrodes": chosen}
        params = SpikeTriggeredParams(device="stim0", command=ELECTRICAL, **kwargs)
        policy = SpikeTriggeredPolicy(params, "rig0", FS)
        arr = np.zeros(200, dtype=SPIKE_DTYPE)
        arr["sample"] = rng.integers(0, 1000, 200)
        # unsorted (-1), inside the table, and far beyond the largest chosen id
        arr["unit"] = rng.choice([-1, 0, 3, 4, 9, 10, 500], 200)
        arr["channel"] = rng.choice([0, 2, 30, 31, 32, 1000], 200)
        got = policy.qualifying(SpikeBatch(arr, 0, 1000, 0.0, FS))
        want = arr[np.isin(arr[field], chosen)]
        assert sorted(got["sample"].tolist()) == got["sample"].tolist()
        assert sorted(map(tuple, got.tolist())) == sorted(map(tuple, want.tolist()))


def test_spike_triggered_waits_for_its_delay_and_can_watch_electrodes() -> None:
    params = SpikeTriggeredParams(
        device="stim0", electrodes=[7], delay_ms=5, lockout_ms=0, command=ELECTRICAL
    )
    policy = SpikeTriggeredPolicy(params, "rig0", FS)
    sent_at = []
    for k in range(20):
        first = k * CHUNK
        spikes = [(30, 0)] if k == 1 else []
        b = batch(first, spikes, channel=7)
        for cmd in policy.process(b, (first + CHUNK) / FS):
            sent_at.append((k, cmd.cause.sample))
    # the spike at 1 ms is due at 6 ms: it goes out with the chunk ending at 6 ms (k = 5)
    assert sent_at == [(5, 30)]
    other = SpikeTriggeredPolicy(params, "rig0", FS)
    assert other.process(batch(0, [(10, 0)], channel=6), 1.0) == []  # wrong electrode


class Plant:
    """A population whose rate rises with light power: rate = base + gain * power (Hz),
    observed through Poisson spike counts."""

    def __init__(self, base: float, gain: float, seed: int = 0) -> None:
        self.base, self.gain = base, gain
        self.power = 0.0
        self.rng = np.random.default_rng(seed)

    def spikes(self, first: int) -> list[tuple[int, int]]:
        rate = self.base + self.gain * self.power
        n = self.rng.poisson(rate * CHUNK / FS)
        return [(first + int(s), 0) for s in self.rng.integers(0, CHUNK, n)]


def test_rate_clamp_brings_rate_to_setpoint_and_holds_it() -> None:
    params = RateClampParams(
        device="opto0",
        setpoint_hz=60.0,
        period_ms=50,
        window_ms=200,
        kp=0.02,
        ki=0.1,
        output_max=10.0,
        command=OPTICAL,
    )
    policy = RateClampPolicy(params, "rig0", FS)
    plant = Plant(base=20.0, gain=8.0)
    commands = []
    for k in range(20_000):  # 20 s
        first = k * CHUNK
        out = policy.process(batch(first, plant.spikes(first)), (first + CHUNK) / FS)
        for cmd in out:
            assert isinstance(cmd, OpticalPulseTrain)
            plant.power = cmd.power_mw
            assert cmd.duration_ms == pytest.approx(45.0)  # 90 % of the period
        commands.extend(out)
        if not out and policy.output <= params.output_min:
            plant.power = 0.0
    hist = np.array(policy.history)
    settled = hist[hist[:, 0] > 10 * FS]  # the last 10 s
    assert abs(settled[:, 1].mean() - 60.0) < 6.0  # within 10 % of the setpoint
    assert 0 < settled[:, 2].mean() < 10.0  # not saturated: the controller is in control
    assert hist[0, 1] < 40.0  # it started from the baseline
    assert len(commands) > 300


def test_rate_clamp_resynchronises_after_a_gap_without_winding_up() -> None:
    params = RateClampParams(
        device="opto0", setpoint_hz=50, period_ms=10, window_ms=10, output_max=5, command=OPTICAL
    )
    policy = RateClampPolicy(params, "rig0", FS)
    policy.process(batch(0, []), 0.001)
    policy.process(batch(300, [], n=30), 0.011)
    integral = policy.integral
    out = policy.process(batch(30_000, []), 1.0)  # a 1 s gap: data the policy never saw
    assert policy.gaps == 1
    assert policy.integral == integral  # nothing integrated over the gap
    assert len(out) <= 1


def test_rate_clamp_refuses_a_mismatched_actuator() -> None:
    with pytest.raises(ValueError, match="optical command"):
        RateClampParams(
            device="x", setpoint_hz=10, output_max=1, actuator="power_mw", command=ELECTRICAL
        )


def test_decoder_driven_from_readout_spikes() -> None:
    params = DecoderDrivenParams(
        device="stim0", source="readout", dimension=1, min_interval_ms=5, command=ELECTRICAL
    )
    policy = make_policy(params, "rig0", FS)
    readout = batch(0, [(3, 1), (60, 0), (90, 1), (100, 1), (400, 1)], n=600)
    out = policy.process(batch(0, [], n=600), 0.02, None, readout)
    # unit 0 is not watched; 90 and 100 fall within 5 ms (150 samples) of the one at 3
    assert [c.cause.sample for c in out] == [3, 400]
    assert policy.status()["skipped"] == 2


def test_decoder_driven_from_decoded_values() -> None:
    from decoders.frames import DecoderOutput

    params = DecoderDrivenParams(
        device="stim0",
        source="decoded",
        dimension=0,
        threshold=0.5,
        gain=10.0,
        actuator="amplitude_ua",
        output_max=20.0,
        min_interval_ms=0,
        command=ELECTRICAL,
    )
    policy = make_policy(params, "rig0", FS)
    decoded = DecoderOutput(
        values=np.array([[0.1, 9.0], [-0.8, 0.0], [3.0, 0.0]]),
        end_sample=np.array([1500, 3000, 4500]),
        timestamp=np.array([0.05, 0.1, 0.15]),
        sample_rate=FS,
    )
    out = policy.process(batch(0, [], n=4500), 0.2, decoded)
    assert [c.cause.sample for c in out] == [3000, 4500]
    assert [c.amplitudes_ua[0] for c in out if isinstance(c, ElectricalPulseTrain)] == [8.0, 20.0]


def test_spike_triggered_rehearsals_change_no_decision_and_are_valid_commands() -> None:
    """``rehearsal`` (run between chunks by ``loop.rehearse_ms``) builds a command the
    way a trigger does and leaves the policy as it was; the commands a trigger stamps
    from the validated prototype survive a validating round trip unchanged."""
    params = SpikeTriggeredParams(
        device="stim0", units=[2], delay_ms=1.0, lockout_ms=10, deadline_ms=5, command=ELECTRICAL
    )
    plain = SpikeTriggeredPolicy(params, "rig0", FS)
    rehearsed = SpikeTriggeredPolicy(params, "rig0", FS)
    times = {15: 2, 150: 2, 240: 1, 600: 2, 609: 2, 29: 2}
    got: dict[str, list] = {"plain": [], "rehearsed": []}
    for k in range(40):
        first = k * CHUNK
        spikes = [(s, u) for s, u in times.items() if first <= s < first + CHUNK]
        now = (first + CHUNK) / FS
        got["plain"].extend(plain.process(batch(first, spikes), now))
        got["rehearsed"].extend(rehearsed.process(batch(first, spikes), now))
        rehearsal = rehearsed.rehearsal(now)
        assert isinstance(rehearsal, ElectricalPulseTrain)
        assert command_adapter.validate_json(rehearsal.model_dump_json()) == rehearsal
    strip = {"command_id"}
    assert [c.model_dump(exclude=strip) for c in got["plain"]] == [
        c.model_dump(exclude=strip) for c in got["rehearsed"]
    ]
    assert (plain.triggers, plain.locked_out) == (rehearsed.triggers, rehearsed.locked_out)
    sent = got["plain"]
    assert [c.cause.sample for c in sent] == [15, 600]
    assert len({c.command_id for c in sent}) == len(sent)
    for cmd in sent:
        assert command_adapter.validate_json(cmd.model_dump_json()) == cmd
        assert cmd.command_id.version == 4
    # the prototype's electrode list is the template's, never shared with it
    assert sent[0].electrodes == [3]
    assert sent[0].electrodes is not params.command.electrodes
