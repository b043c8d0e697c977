"""The safety envelope: each rule, accept-whole/reject-whole, and property tests."""

from __future__ import annotations

import copy
import itertools
import math

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bci.errors import SafetyViolation
from stimulators.safety import BIN_S, RULES, SafetyEnvelope, _max_window, _pulse_bins, _Ring
from tests.stimulators.helpers import (
    electrical,
    electrical_device,
    optical,
    optical_device,
    stop_all,
)

T0 = 1000.0


def rule_of(envelope: SafetyEnvelope, command: object, start: float = T0) -> str | None:
    try:
        envelope.admit(command, start)  # type: ignore[arg-type]
    except SafetyViolation as v:
        rule = v.rule
    else:
        return None
    assert rule in RULES
    return rule


@pytest.mark.parametrize(
    ("fields", "rule"),
    [
        ({}, None),
        ({"electrodes": [42]}, "electrode.unknown"),
        ({"electrodes": list(range(8)) + [100] * 0 + []}, None),
        ({"amplitudes_ua": (60.0, 60.0), "widths_us": (60.0, 60.0)}, "electrical.amplitude"),
        ({"widths_us": (10.0, 10.0)}, "electrical.width"),
        ({"widths_us": (600.0, 600.0), "amplitudes_ua": (1.0, 1.0)}, "electrical.width"),
        ({"interphase_gap_us": 5000.0}, "electrical.interphase_gap"),
        ({"frequency_hz": 300.0, "n_pulses": 2}, "electrical.frequency"),
        ({"amplitudes_ua": (10.0, 9.0)}, "electrical.charge_balance"),
        ({"amplitudes_ua": (10.0, 20.0), "widths_us": (100.0, 50.0)}, None),
        (
            {"amplitudes_ua": (45.0, 45.0), "widths_us": (100.0, 100.0)},
            "electrical.charge_per_phase",
        ),
        ({"n_pulses": 5000, "frequency_hz": 100.0}, "electrical.train_length"),
        (
            {"n_pulses": 200, "frequency_hz": 200.0, "amplitudes_ua": (30.0, 30.0)},
            "electrical.charge_budget",
        ),
        ({"device": "other"}, "device.mismatch"),
    ],
)
def test_electrical_rules(fields: dict, rule: str | None) -> None:
    assert rule_of(SafetyEnvelope(electrical_device()), electrical(**fields)) == rule


def test_macroelectrode_shannon() -> None:
    env = SafetyEnvelope(electrical_device())
    # 6 mm² Pt-Ir: Shannon k=1.85 allows Q = sqrt(10^1.85 * 0.06) ≈ 2.07 µC per phase,
    # but the Pt-Ir density limit (50 µC/cm² * 0.06 cm² = 3 µC) is looser.
    ok = electrical(electrodes=[100], amplitudes_ua=(2000.0, 2000.0), widths_us=(1000.0, 1000.0))
    bad = electrical(electrodes=[100], amplitudes_ua=(2200.0, 2200.0), widths_us=(1000.0, 1000.0))
    assert rule_of(env, ok) is None
    assert rule_of(SafetyEnvelope(electrical_device()), bad) == "electrical.shannon"


def test_rate_limit_between_commands() -> None:
    env = SafetyEnvelope(electrical_device())
    assert rule_of(env, electrical(), T0) is None
    assert rule_of(env, electrical(), T0 + 0.004) == "electrical.rate"  # 250 Hz
    assert rule_of(env, electrical(), T0 + 0.005) is None  # 200 Hz
    assert rule_of(env, electrical(electrodes=[2]), T0 + 0.006) is None  # another electrode


def test_rejected_command_changes_nothing() -> None:
    env = SafetyEnvelope(electrical_device())
    env.admit(electrical(n_pulses=100, frequency_hz=200.0, amplitudes_ua=(30.0, 30.0)), T0)
    before = copy.deepcopy(env._estate)
    env.admit(electrical(electrodes=[2], n_pulses=150, frequency_hz=200.0), T0 + 0.1)
    before2 = copy.deepcopy(env._estate)
    # electrode 3 is fine, electrode 1 breaks its charge budget: nothing may be recorded
    with pytest.raises(SafetyViolation) as err:
        env.admit(
            electrical(
                electrodes=[3, 1], n_pulses=60, frequency_hz=200.0, amplitudes_ua=(30.0, 30.0)
            ),
            T0 + 0.6,
        )
    assert err.value.rule == "electrical.charge_budget"
    assert 3 not in env._estate
    for key, state in before2.items():
        assert state.last_pulse == env._estate[key].last_pulse
        np.testing.assert_array_equal(state.charge.data, env._estate[key].charge.data)
    assert set(before) <= set(before2)


@pytest.mark.parametrize(
    ("fields", "rule"),
    [
        ({}, None),
        ({"site": "nope"}, "optical.site_unknown"),
        ({"wavelength_nm": 590.0}, "optical.wavelength"),
        ({"power_mw": 12.0}, "optical.power"),
        ({"frequency_hz": 150.0}, "optical.frequency"),
        ({"pulse_width_ms": 0.05}, "optical.pulse_width"),
        ({"pulse_width_ms": 60.0, "frequency_hz": 20.0}, "optical.pulse_width"),
        ({"pulse_width_ms": 1500.0, "frequency_hz": 0.5, "duration_ms": 1500.0}, "optical.on_time"),
        (
            {"power_mw": 10.0, "pulse_width_ms": 40.0, "frequency_hz": 20.0, "duration_ms": 2000.0},
            None,
        ),
        ({"duration_ms": 20_000.0}, "optical.train_length"),
    ],
)
def test_optical_rules(fields: dict, rule: str | None) -> None:
    assert rule_of(SafetyEnvelope(optical_device()), optical(**fields)) == rule


def test_optical_1s_heating() -> None:
    dev = optical_device()
    site = dev.sites[0].model_copy(update={"max_power_mw": 30.0, "max_duty_cycle": 1.0})
    env = SafetyEnvelope(dev.model_copy(update={"sites": [site]}))
    # 30 mW at 50% duty is 15 mW mean: 0.75 °C after 1 s with 0.05 °C/mW
    cmd = optical(power_mw=30.0, pulse_width_ms=10.0, frequency_hz=50.0, duration_ms=1000.0)
    assert rule_of(env, cmd) == "optical.heating_1s"
    assert rule_of(env, optical(power_mw=30.0, pulse_width_ms=10.0, frequency_hz=50.0)) is None


def test_optical_60s_heating_and_duty_cycle() -> None:
    dev = optical_device()
    site = dev.sites[0].model_copy(update={"max_duty_cycle": 1.0})
    env = SafetyEnvelope(dev.model_copy(update={"sites": [site]}))
    # 8 mW mean for 1 s at a time is fine once (0.4 °C), but not for most of a minute
    rules = []
    t = T0
    for _ in range(45):
        rules.append(
            rule_of(
                env,
                optical(power_mw=10.0, pulse_width_ms=8.0, frequency_hz=100.0, duration_ms=995.0),
                t,
            )
        )
        t += 1.0
    assert rules[0] is None
    assert "optical.heating_60s" in rules
    env2 = SafetyEnvelope(optical_device())
    rules2 = [
        rule_of(
            env2,
            optical(power_mw=0.5, pulse_width_ms=900.0, frequency_hz=1.0, duration_ms=1.0),
            T0 + i * 1.0,
        )
        for i in range(60)
    ]
    assert "optical.duty_cycle" in rules2


def test_optical_busy_and_continuous_on_time() -> None:
    env = SafetyEnvelope(optical_device())
    assert rule_of(env, optical(pulse_width_ms=600.0, frequency_hz=1.0, duration_ms=1.0)) is None
    assert rule_of(env, optical(pulse_width_ms=5.0), T0 + 0.3) == "optical.busy"  # still lit
    # back to back: the light never goes off -> one continuous 1.2 s on-period
    assert (
        rule_of(env, optical(pulse_width_ms=600.0, frequency_hz=1.0, duration_ms=1.0), T0 + 0.6)
        == "optical.on_time"
    )


def test_stop_all_always_passes_and_ends_trains() -> None:
    env = SafetyEnvelope(electrical_device())
    env.admit(electrical(n_pulses=100, frequency_hz=100.0, amplitudes_ua=(5.0, 5.0)), T0)
    assert rule_of(env, electrical(), T0 + 0.1) == "electrical.rate"
    env.admit(stop_all(), T0 + 0.1)
    assert rule_of(env, electrical(amplitudes_ua=(5.0, 5.0)), T0 + 0.11) is None


# ---------------------------------------------------------------- properties


def electrical_ok(cmd, env_cfg) -> bool:  # type: ignore[no-untyped-def]
    """An independent statement of the stateless electrical limits (exact, not binned)."""
    e = next(e for e in env_cfg.electrodes if cmd.electrodes[0] in e.ids)
    q1, q2 = (a * w / 1000.0 for a, w in zip(cmd.amplitudes_ua, cmd.widths_us, strict=True))
    q = max(q1, q2)
    period = 1.0 / cmd.frequency_hz
    return (
        max(cmd.amplitudes_ua) <= e.max_amplitude_ua
        and all(e.min_width_us <= w <= e.max_width_us for w in cmd.widths_us)
        and cmd.frequency_hz <= min(e.max_frequency_hz, e.max_rate_hz)
        and (cmd.n_pulses == 1 or sum(cmd.widths_us) + cmd.interphase_gap_us <= period * 1e6)
        and (q == 0 or abs(q1 - q2) / q <= 0.01 + 1e-9)
        and q <= 4.0 + 1e-9  # microelectrode cap
        and q / 1000.0 / (e.geometric_area_um2 * 1e-8) <= 1000.0 + 1e-6  # IrOx density
        and (cmd.n_pulses - 1) * period <= 10.0
    )


electrical_commands = st.builds(
    dict,
    electrodes=st.sampled_from([[0], [1], [2], [0, 1]]),
    amplitudes_ua=st.tuples(st.floats(0, 80), st.floats(0, 80)),
    widths_us=st.tuples(st.floats(1, 800), st.floats(1, 800)),
    interphase_gap_us=st.floats(0, 200),
    n_pulses=st.integers(1, 300),
    frequency_hz=st.floats(1, 400),
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    steps=st.lists(
        st.tuples(st.floats(0.0, 0.6), electrical_commands, st.booleans()), min_size=1, max_size=8
    )
)
def test_no_accepted_electrical_sequence_breaks_a_limit(steps: list) -> None:
    dev = electrical_device()
    env = SafetyEnvelope(dev)
    pulses: dict[int, list[tuple[float, float]]] = {}
    t = T0
    for dt, fields, balanced in steps:
        t += dt
        if balanced:  # make many commands charge-balanced so they get further
            a, w = fields["amplitudes_ua"][0], fields["widths_us"][0]
            fields = {**fields, "amplitudes_ua": (a, a), "widths_us": (w, w)}
        cmd = electrical(**fields)
        if rule_of(env, cmd, t) is not None:
            continue
        assert electrical_ok(cmd, dev)
        q = max(cmd.phase_charges_nc)
        for e in cmd.electrodes:
            pulses.setdefault(e, []).extend(
                (t + k / cmd.frequency_hz, q) for k in range(cmd.n_pulses)
            )
    budget = dev.electrodes[0].charge_budget_limit_nc_per_s
    for train in pulses.values():
        times = np.array(sorted(p[0] for p in train))
        if times.size > 1:
            assert np.min(np.diff(times)) >= 1 / 200.0 - 1e-9  # rate limit
        for start, _ in train:  # charge in every 1 s window starting at a pulse
            total = sum(qq for tt, qq in train if start <= tt < start + 1.0)
            assert total <= budget + 1e-6


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    steps=st.lists(
        st.tuples(
            st.floats(0.0, 1.5),
            st.floats(0.0, 15.0),
            st.floats(0.05, 1200.0),
            st.floats(0.5, 150.0),
            st.floats(1.0, 3000.0),
        ),
        min_size=1,
        max_size=6,
    )
)
def test_no_accepted_optical_sequence_breaks_a_limit(steps: list) -> None:
    dev = optical_device()
    site = dev.sites[0]
    env = SafetyEnvelope(dev)
    pulses: list[tuple[float, float, float]] = []  # start, end, power
    t = T0
    for dt, power, width, freq, duration in steps:
        t += dt
        cmd = optical(power_mw=power, pulse_width_ms=width, frequency_hz=freq, duration_ms=duration)
        if rule_of(env, cmd, t) is not None:
            continue
        assert power <= site.max_power_mw
        assert width <= site.max_on_ms + 1e-9
        assert freq <= site.max_frequency_hz
        for k in range(cmd.n_pulses):
            s = t + k / freq
            pulses.append((s, s + width / 1000.0, power))
    if not pulses:
        return
    limit_mw = site.max_temperature_rise_c / site.heating_1s_c_per_mw
    candidates = {p[0] for p in pulses} | {p[1] - 1.0 for p in pulses}
    for a in candidates:
        energy = sum(max(0.0, min(e, a + 1.0) - max(s, a)) * p for s, e, p in pulses)
        assert energy <= limit_mw * 1.0 + 1e-6  # 1 s mean power within the heating budget
    spans = sorted((s, e) for s, e, p in pulses if p > 0)
    for (_, e1), (s2, _) in itertools.pairwise(spans):
        assert s2 >= e1 - 1e-9  # never two trains lit at once


def test_rules_are_documented() -> None:
    assert all(isinstance(v, str) and v for v in RULES.values())
    assert all("." in k for k in RULES)
    assert math.isclose(electrical_device().electrodes[0].phase_charge_limit_nc, 4.0)


@settings(max_examples=300, deadline=None)
@given(
    history=st.lists(
        st.tuples(st.integers(0, 30_000), st.lists(st.floats(0, 50), min_size=1, max_size=40)),
        max_size=6,
    ),
    first_offset=st.integers(-200, 20_000),
    amounts=st.lists(st.floats(0, 50), min_size=1, max_size=300),
    window_bins=st.sampled_from([0, 1, 7, 100, 6_000]),
    floor_offset=st.integers(-7_000, 7_000),
)
def test_compiled_ledger_window_equals_the_numpy_reference(
    history: list[tuple[int, list[float]]],
    first_offset: int,
    amounts: list[float],
    window_bins: int,
    floor_offset: int,
) -> None:
    """The compiled windowed sums give the very same floats as the numpy version they
    replaced, on rings that wrapped around, with old bins and fresh ones."""
    ring = _Ring()
    base = 0
    for start, values in history:
        base += start
        ring.add(base, np.array(values), base - 6_100)
    first = base + first_offset
    floor = base + floor_offset
    arr = np.array(amounts)
    for r in (ring, None):
        fast = _max_window(r, first, arr, window_bins, floor)
        assert fast == max_window_numpy(r, first, arr, window_bins, floor)


def max_window_numpy(
    ring: _Ring | None, first: int, amounts: np.ndarray, window_bins: int, floor: int
) -> float:
    """The envelope's windowed sum as it was first written, in numpy."""
    lo, hi = first - window_bins, first + amounts.size + window_bins
    total = np.zeros(hi - lo)
    if ring is not None:
        idx = np.arange(lo, hi)
        valid = (idx >= max(ring.low, floor)) & (idx < ring.low + ring.data.size)
        total = np.where(valid, ring.data[idx % ring.data.size], 0.0)
    total[window_bins : window_bins + amounts.size] += amounts
    csum = np.concatenate(([0.0], np.cumsum(total)))
    span = window_bins + 1
    return float(np.max(csum[span:] - csum[:-span]))


@given(
    start=st.floats(0.0, 1e6, allow_nan=False),
    frequency=st.floats(0.5, 1e4, allow_nan=False),
    amount=st.floats(0.0, 100.0, allow_nan=False),
)
def test_a_single_pulse_lands_in_the_same_bin_as_in_the_general_formula(
    start: float, frequency: float, amount: float
) -> None:
    bins = np.floor((start + np.arange(1) / frequency) / BIN_S).astype(np.int64)
    first, amounts = _pulse_bins(start, 1, frequency, amount)
    assert first == int(bins[0])
    assert amounts.tolist() == (np.bincount(bins - bins[0]).astype(float) * amount).tolist()
