"""Neuron models of the simulated rig against their known behaviour.

Every rate here is measured by running the model's kernel; the expectations come from
the literature (analytic LIF rate, type I/II excitability, Izhikevich 2003 firing
patterns, FitzHugh-Nagumo's oscillating range, Poisson statistics).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from pydantic import TypeAdapter, ValidationError

from acquisition.sim.neurons import NEURON_MODELS, NeuronModel, NeuronParams, model_class
from acquisition.sim.neurons.base import SYN_CONDUCTANCE, SynapseBlock
from acquisition.sim.neurons.fitzhugh_nagumo import FitzHughNagumoModel, FitzHughNagumoParams
from acquisition.sim.neurons.hodgkin_huxley import HodgkinHuxleyModel, HodgkinHuxleyParams
from acquisition.sim.neurons.izhikevich import IzhikevichModel, IzhikevichParams
from acquisition.sim.neurons.lif import LifModel, LifParams
from acquisition.sim.neurons.poisson import PoissonModel, PoissonParams
from bci.errors import UnknownKindError
from bci.schema import StrictModel

DT = 1.0 / 30.0  # ms: the rig's step at 30 kHz
BLOCK = 300  # steps per call (10 ms)

ALL_MODELS: list[type[NeuronModel]] = [
    LifModel,
    IzhikevichModel,
    HodgkinHuxleyModel,
    FitzHughNagumoModel,
    PoissonModel,
]


def make(cls: type[NeuronModel], n: int, seed: int = 0, **params: Any) -> NeuronModel:
    return cls(cls.Params(**params), n, np.random.default_rng(seed))


def simulate(
    model: NeuronModel,
    current: Any,
    t_ms: float,
    dt: float = DT,
    syn: SynapseBlock | None = None,
    block: int = BLOCK,
) -> list[np.ndarray]:
    """Run ``model`` for ``t_ms``; return each neuron's spike times (ms from the start).

    ``current``: a scalar or ``(n,)`` constant input, or a function ``(first_step,
    n_steps) -> (n_steps, n)`` array. ``syn``: synaptic state whose ``ge_in``/``gi_in``
    (``(total_steps, n)``) are sliced per block.
    """
    n = model.n
    n_steps = round(t_ms / dt)
    empty = SynapseBlock.empty(n, block, dt)
    spikes = np.zeros((block * n, 2), dtype=np.int64)
    steps: list[np.ndarray] = []
    neurons: list[np.ndarray] = []
    for s0 in range(0, n_steps, block):
        L = min(block, n_steps - s0)
        if callable(current):
            i_ext = np.ascontiguousarray(current(s0, L), dtype=float)
        else:
            i_ext = np.broadcast_to(np.asarray(current, dtype=float), (L, n)).copy()
        src = syn if syn is not None else empty
        blk = SynapseBlock(
            ge=src.ge,
            gi=src.gi,
            ge_in=src.ge_in[s0 : s0 + L] if syn is not None else empty.ge_in[:L],
            gi_in=src.gi_in[s0 : s0 + L] if syn is not None else empty.gi_in[:L],
            decay_e=src.decay_e,
            decay_i=src.decay_i,
            mode=src.mode,
            e_exc=src.e_exc,
            e_inh=src.e_inh,
        )
        k = model.advance(i_ext, blk, dt, spikes[: L * n])
        assert 0 <= k <= L * n
        steps.append(spikes[:k, 0] + s0)
        neurons.append(spikes[:k, 1].copy())
    step = np.concatenate(steps)
    neuron = np.concatenate(neurons)
    return [step[neuron == j] * dt for j in range(n)]


def rates_hz(trains: list[np.ndarray], t0_ms: float, t1_ms: float) -> np.ndarray:
    """Spike count of each train in ``[t0, t1)`` divided by the window (Hz)."""
    return np.array([np.sum((s >= t0_ms) & (s < t1_ms)) for s in trains]) * 1000.0 / (t1_ms - t0_ms)


def repetitive_rate_hz(spikes: np.ndarray, skip_ms: float) -> float:
    """Steady firing rate (Hz) from the mean ISI after ``skip_ms``; 0 unless the neuron
    fires at least twice there (a lone transient spike is not repetitive firing)."""
    late = spikes[spikes >= skip_ms]
    return 1000.0 / float(np.diff(late).mean()) if len(late) >= 2 else 0.0


def onset_bracket(
    cls: type[NeuronModel],
    params: dict[str, Any],
    lo: float,
    hi: float,
    t_ms: float,
    skip_ms: float,
    levels: int,
    n_points: int = 21,
) -> tuple[float, float, float]:
    """Locate the onset of repetitive firing between ``lo`` (silent) and ``hi`` (firing).

    Each level simulates ``n_points`` constant currents across the bracket in one
    population, checks that repetitive firing is monotonic in the current, and narrows
    the bracket to the two currents around the onset. Returns ``(i_silent, i_firing,
    rate_at_i_firing)``.
    """
    rate = 0.0
    for _ in range(levels):
        currents = np.linspace(lo, hi, n_points)
        trains = simulate(make(cls, n_points, **params), currents, t_ms)
        rates = np.array([repetitive_rate_hz(s, skip_ms) for s in trains])
        firing = rates > 0
        assert not firing[0], (currents, rates)
        assert firing[-1], (currents, rates)
        first = int(np.argmax(firing))
        assert firing[first:].all(), f"firing not monotonic in current: {currents}, {rates}"
        lo, hi, rate = float(currents[first - 1]), float(currents[first]), float(rates[first])
    return lo, hi, rate


# ------------------------------------------------------------------ registry and config


def test_registry_and_config_union_cover_every_model() -> None:
    assert set(NEURON_MODELS) == {
        "lif",
        "izhikevich",
        "hodgkin_huxley",
        "fitzhugh_nagumo",
        "poisson",
    }
    adapter: TypeAdapter[Any] = TypeAdapter(NeuronParams)
    for kind, cls in NEURON_MODELS.items():
        assert model_class(kind) is cls
        parsed = adapter.validate_python({"kind": kind})
        assert type(parsed) is cls.Params
        assert issubclass(cls.Params, StrictModel)
        assert cls.__doc__
        assert cls.Params.__doc__
    with pytest.raises(UnknownKindError):
        model_class("adex")
    with pytest.raises(ValidationError):
        adapter.validate_python({"kind": "adex"})
    with pytest.raises(ValidationError):  # a field of another model is an error
        adapter.validate_python({"kind": "poisson", "tau_m_ms": 10.0})


def test_param_overrides_and_bad_params() -> None:
    p = IzhikevichParams(preset="chattering", d=3.0)
    assert p.abcd() == (0.02, 0.2, -50.0, 3.0)
    assert p.resting_mv() == pytest.approx(-70.0)
    with pytest.raises(ValidationError):
        IzhikevichParams(preset="bursty")
    with pytest.raises(ValidationError):
        HodgkinHuxleyParams(v_spike_mv=-40.0, v_rearm_mv=-30.0)
    with pytest.raises(ValidationError):
        PoissonParams(t_ref_ms=-1.0)
    with pytest.raises(ValidationError):
        FitzHughNagumoParams(v_spike=-0.5)
    assert FitzHughNagumoParams().resting_state() == pytest.approx((-1.1994, -0.6243), abs=1e-3)


# ------------------------------------------------------------------ f-I curves, excitability


def test_lif_f_i_curve_matches_analytic_formula() -> None:
    currents = np.array([260.0, 300.0, 400.0, 600.0, 1000.0])  # pA, rheobase 250
    params = LifParams()
    trains = simulate(make(LifModel, len(currents)), currents, 1500.0)
    for current, spikes in zip(currents, trains, strict=True):
        isi = np.diff(spikes[spikes > 200.0])
        assert len(isi) >= 3
        measured = 1000.0 / isi.mean()
        assert measured == pytest.approx(params.rate_hz(float(current)), rel=0.015)


def test_lif_is_type_i() -> None:
    # Rheobase is 250 pA; bracket it, then narrow to ~0.005 pA: the rate there is tiny.
    lo, hi, r_hi = onset_bracket(LifModel, {}, 200.0, 300.0, t_ms=2000.0, skip_ms=200.0, levels=4)
    assert lo <= 250.0 < hi
    assert 0.0 < r_hi < 5.0


def test_izhikevich_regular_spiking_is_type_i() -> None:
    lo, hi, r_hi = onset_bracket(
        IzhikevichModel, {"preset": "regular_spiking"}, 3.0, 5.0, 2300.0, 300.0, levels=3
    )
    assert 3.5 < lo < hi < 4.2
    assert 0.0 < r_hi < 10.0


def test_hodgkin_huxley_is_type_ii() -> None:
    # A sweep from 5 to 8 µA/cm² finds the onset; a refinement narrows it to < 0.005
    # µA/cm², and the rate still jumps from 0 to a high rate across that gap. (Closer to
    # the fold of limit cycles, firing outlasts any finite window: slow passage.)
    lo, hi, r_hi = onset_bracket(
        HodgkinHuxleyModel, {}, 5.0, 8.0, t_ms=500.0, skip_ms=100.0, levels=2, n_points=31
    )
    assert 5.5 <= lo < hi <= 7.5
    assert hi - lo < 5e-3
    assert r_hi > 40.0


def test_hodgkin_huxley_rate_rises_with_current_and_is_stable_in_dt() -> None:
    currents = np.array([8.0, 10.0, 20.0, 50.0])
    ref = rates_hz(simulate(make(HodgkinHuxleyModel, 4), currents, 400.0), 100.0, 400.0)
    assert np.all(np.diff(ref) > 0)
    assert 50.0 < ref[0] < 90.0
    coarse = rates_hz(
        simulate(make(HodgkinHuxleyModel, 4), currents, 400.0, dt=1.0, block=10), 100.0, 400.0
    )
    np.testing.assert_allclose(coarse, ref, rtol=0.1)


def test_hodgkin_huxley_gate_table_matches_the_rate_functions() -> None:
    from acquisition.sim.neurons.hodgkin_huxley import (
        TABLE_DV,
        TABLE_V_MAX,
        TABLE_V_MIN,
        hh_gate_rates,
        hh_gate_tables,
    )

    n_points = round((TABLE_V_MAX - TABLE_V_MIN) / TABLE_DV) + 1
    table = hh_gate_tables(DT, 1.0, TABLE_V_MIN, TABLE_DV, n_points)
    grid = TABLE_V_MIN + TABLE_DV * np.arange(n_points)
    for v in np.random.default_rng(0).uniform(-100.0, 60.0, 500):
        am, bm, ah, bh, an, bn = hh_gate_rates(float(v))
        exact = []
        for a, b in ((am, bm), (ah, bh), (an, bn)):
            exact += [a / (a + b), np.exp(-DT * (a + b))]
        looked_up = [np.interp(v, grid, table[:, c]) for c in range(6)]
        np.testing.assert_allclose(looked_up, exact, atol=2e-5)


def test_hodgkin_huxley_warmer_axon_fires_faster() -> None:
    cold = rates_hz(simulate(make(HodgkinHuxleyModel, 1), 10.0, 400.0), 100.0, 400.0)[0]
    warm_model = make(HodgkinHuxleyModel, 1, temperature_c=16.3)  # rates x3 (Q10 = 3)
    warm = rates_hz(simulate(warm_model, 10.0, 400.0), 100.0, 400.0)[0]
    assert warm > 1.5 * cold > 0


# ------------------------------------------------------------------ Izhikevich patterns


def _izh_train(preset: str, current: float = 10.0, t_ms: float = 500.0) -> np.ndarray:
    return simulate(make(IzhikevichModel, 1, preset=preset), current, t_ms)[0]


def _early_late(spikes: np.ndarray) -> tuple[float, float]:
    """Rate (Hz) in the 50 ms after the first spike, and over the last 200 ms."""
    early = np.sum(spikes < spikes[0] + 50.0) / 0.05
    late = np.sum(spikes >= 300.0) / 0.2
    return float(early), float(late)


def test_izhikevich_regular_spiking_adapts() -> None:
    spikes = _izh_train("regular_spiking")
    isi = np.diff(spikes)
    assert len(isi) >= 5
    assert isi.min() > 10.0  # tonic, no bursts
    assert isi[-1] > 2.0 * isi[0]  # ISIs grow
    early, late = _early_late(spikes)
    assert late < 0.6 * early


def test_izhikevich_fast_spiking_is_fast_with_little_adaptation() -> None:
    spikes = _izh_train("fast_spiking")
    early, late = _early_late(spikes)
    assert late > 100.0
    assert late > 0.75 * early
    rs_early, rs_late = _early_late(_izh_train("regular_spiking"))
    assert late / early > 1.4 * rs_late / rs_early
    isi = np.diff(spikes[spikes > 100.0])
    assert isi.std() / isi.mean() < 0.05  # tonic and regular


def test_izhikevich_intrinsically_bursting_bursts_then_spikes_tonically() -> None:
    isi = np.diff(_izh_train("intrinsically_bursting"))
    burst = isi[:2]
    tonic = isi[3:]
    assert np.all(burst < 10.0)  # an initial burst of 3 spikes
    assert len(tonic) >= 5
    assert tonic.min() > 5.0 * burst.max()  # then single spikes at a much lower rate
    assert tonic.std() / tonic.mean() < 0.1


def test_izhikevich_chattering_repeats_bursts() -> None:
    spikes = _izh_train("chattering")
    isi = np.diff(spikes)
    short = isi[isi < 10.0]
    long = isi[isi >= 10.0]
    assert len(long) >= 4  # at least 5 bursts
    assert len(short) >= 2 * len(long)  # of 3 or more spikes each
    assert long.min() > 4.0 * short.max()  # bimodal: nothing between the two modes
    assert long.std() / long.mean() < 0.1  # bursts repeat regularly
    assert np.all(np.diff(np.flatnonzero(isi >= 10.0)) >= 3)


# ------------------------------------------------------------------ FitzHugh-Nagumo


def test_fitzhugh_nagumo_fires_only_in_its_oscillating_range() -> None:
    drives = np.array([0.0, 0.2, 0.3, 0.4, 0.5, 0.8, 1.2, 1.6, 2.0])
    rates = rates_hz(simulate(make(FitzHughNagumoModel, len(drives)), drives, 1000.0), 200, 1000)
    silent = (drives < 0.33) | (drives > 1.45)
    assert np.all(rates[silent] == 0.0)
    assert np.all(rates[~silent] > 15.0)  # repetitive, ~38 model time units per cycle


def test_fitzhugh_nagumo_time_scale_stretches_time() -> None:
    fast = rates_hz(simulate(make(FitzHughNagumoModel, 1), 0.5, 1000.0), 200, 1000)[0]
    slow = make(FitzHughNagumoModel, 1, time_scale_ms=2.0)
    assert rates_hz(simulate(slow, 0.5, 1000.0), 200, 1000)[0] == pytest.approx(fast / 2, rel=0.1)


# ------------------------------------------------------------------ Poisson


@pytest.mark.parametrize("t_ref_ms", [0.0, 1.0, 4.0])
def test_poisson_rate_matches_request(t_ref_ms: float) -> None:
    n, rate, t_ms = 200, 40.0, 2000.0
    trains = simulate(make(PoissonModel, n, seed=3, t_ref_ms=t_ref_ms), rate, t_ms)
    count = sum(len(s) for s in trains)
    expected = n * rate * t_ms / 1000.0
    assert abs(count - expected) < 4.0 * np.sqrt(expected)
    isi = np.concatenate([np.diff(s) for s in trains])
    assert isi.min() >= t_ref_ms
    cv = isi.std() / isi.mean()
    # Exponential ISIs (CV 1) without dead time, more regular with it (CV = 1 - r t_ref).
    assert cv == pytest.approx(1.0 - rate * t_ref_ms / 1000.0, abs=0.05)


def test_poisson_follows_a_time_varying_rate_and_clips_negative_rates() -> None:
    n = 100

    def square(s0: int, L: int) -> np.ndarray:
        t = (s0 + np.arange(L)) * DT
        return np.repeat(np.where((t // 250) % 2 == 0, 80.0, -50.0)[:, None], n, axis=1)

    trains = simulate(make(PoissonModel, n, seed=5), square, 1000.0)
    on = rates_hz(trains, 0, 250).sum() + rates_hz(trains, 500, 750).sum()
    off = rates_hz(trains, 250, 500).sum() + rates_hz(trains, 750, 1000).sum()
    assert off == 0.0
    assert on / (2 * n) == pytest.approx(80.0, rel=0.1)


def test_poisson_is_deterministic_per_seed_without_global_state() -> None:
    def run(seed: int) -> list[np.ndarray]:
        return simulate(make(PoissonModel, 50, seed=seed), 30.0, 500.0)

    np.random.seed(1)
    a = run(7)
    np.random.seed(2)
    np.random.uniform(size=10)
    b = run(7)
    c = run(8)
    assert all(np.array_equal(x, y) for x, y in zip(a, b, strict=True))
    assert not all(np.array_equal(x, y) for x, y in zip(a, c, strict=True))
    # Block boundaries do not change the spikes either.
    d = simulate(make(PoissonModel, 50, seed=7), 30.0, 500.0, block=7)
    assert all(np.array_equal(x, y) for x, y in zip(a, d, strict=True))


# ------------------------------------------------------------------ every model

#: A drive that makes each model fire fast (for capacity and reset tests).
STRONG = {
    LifModel: 2000.0,
    IzhikevichModel: 30.0,
    HodgkinHuxleyModel: 40.0,
    FitzHughNagumoModel: 1.0,
    PoissonModel: 400.0,
}


@pytest.mark.parametrize("cls", ALL_MODELS)
def test_default_drive_gives_a_few_to_tens_of_hz(cls: type[NeuronModel]) -> None:
    n = 40
    rng = np.random.default_rng(11)
    drive = cls.default_drive * (1.0 + 0.1 * rng.standard_normal(n))
    rates = rates_hz(simulate(make(cls, n), drive, 1500.0), 500.0, 1500.0)
    assert np.all(rates > 0.0)
    assert 2.0 <= np.median(rates) <= 100.0


@pytest.mark.parametrize("cls", ALL_MODELS)
@pytest.mark.parametrize("dt", [0.02, 1.0])
def test_rate_is_stable_across_time_steps(cls: type[NeuronModel], dt: float) -> None:
    n = 500 if cls is PoissonModel else 20  # Poisson: enough spikes for a 2 % error
    drive = np.full(n, 1.5 * cls.default_drive)
    ref = rates_hz(simulate(make(cls, n), drive, 1000.0), 300.0, 1000.0).mean()
    other = rates_hz(
        simulate(make(cls, n), drive, 1000.0, dt=dt, block=max(1, round(10 / dt))), 300.0, 1000.0
    ).mean()
    assert ref > 0
    assert other == pytest.approx(ref, rel=0.08)


@pytest.mark.parametrize("cls", ALL_MODELS)
def test_block_length_does_not_change_the_spikes(cls: type[NeuronModel]) -> None:
    n = 12
    drive = cls.default_drive * np.linspace(0.9, 1.3, n)
    a = simulate(make(cls, n, seed=2), drive, 300.0, block=300)
    b = simulate(make(cls, n, seed=2), drive, 300.0, block=7)
    assert sum(len(s) for s in a) > n
    assert all(np.array_equal(x, y) for x, y in zip(a, b, strict=True))


@pytest.mark.parametrize("cls", ALL_MODELS)
def test_spikes_are_written_only_within_capacity(cls: type[NeuronModel]) -> None:
    n, L = 16, 600
    params: dict[str, Any] = {"t_ref_ms": 0.0} if cls is PoissonModel else {}
    model = make(cls, n, **params)
    i_ext = np.full((L, n), STRONG[cls] if cls is not PoissonModel else 1e9)
    buffer = np.full((L * n + 50, 2), -7, dtype=np.int64)
    k = model.advance(i_ext, SynapseBlock.empty(n, L, DT), DT, buffer[: L * n])
    assert 0 < k <= L * n
    assert np.all(buffer[L * n :] == -7)  # nothing past the capacity given
    assert np.all(buffer[k : L * n] == -7)  # nothing past the count returned
    rows = buffer[:k]
    assert np.all((rows[:, 0] >= 0) & (rows[:, 0] < L) & (rows[:, 1] >= 0) & (rows[:, 1] < n))
    assert np.all(np.diff(rows[:, 0]) >= 0)  # in time order
    assert len({(int(t), int(j)) for t, j in rows}) == k  # at most one spike per step
    if cls is PoissonModel:
        assert k == L * n  # an overwhelming rate fills the capacity exactly


@pytest.mark.parametrize("cls", ALL_MODELS)
def test_reset_restores_the_initial_state(cls: type[NeuronModel]) -> None:
    n = 8
    first = make(cls, n, seed=4)
    v0 = first.v.copy()
    a = simulate(first, STRONG[cls], 100.0)
    assert all(len(s) > 0 for s in a)
    # Leave it mid-spike / refractory, then reset with the same random stream.
    simulate(first, STRONG[cls], 3.3)
    first._rng = np.random.default_rng(4)
    first.reset()
    np.testing.assert_array_equal(first.v, v0)
    b = simulate(first, STRONG[cls], 100.0)
    assert all(np.array_equal(x, y) for x, y in zip(a, b, strict=True))


def _settle_ms(cls: type[NeuronModel]) -> float:
    return 150.0 if cls is LifModel else 20.0  # LIF starts anywhere below threshold


@pytest.mark.parametrize("cls", ALL_MODELS)
def test_cathodic_pulse_evokes_a_spike_from_rest(cls: type[NeuronModel]) -> None:
    # A 20 µA, 200 µs cathodic pulse at 0 µm injects default_stim_gain * 20 for 6 steps.
    n = 10
    t0 = _settle_ms(cls)
    s0, width = round(t0 / DT), round(0.2 / DT)

    def pulse(scale: float) -> Any:
        def current(first: int, L: int) -> np.ndarray:
            out = np.zeros((L, n))
            lo, hi = max(s0 - first, 0), min(s0 + width - first, L)
            if hi > lo:
                out[lo:hi] = scale * cls.default_stim_gain * 20.0
            return out

        return current

    evoked = simulate(make(cls, n), pulse(1.0), t0 + 30.0)
    assert all(len(s) == 1 and t0 <= s[0] < t0 + 20.0 for s in evoked)
    weak = simulate(make(cls, n), pulse(0.1), t0 + 30.0)  # 20 µA at 3 r0 (180 µm)
    assert sum(len(s) for s in weak) <= n // 5
    assert all(len(s) == 0 for s in simulate(make(cls, n), 0.0, t0 + 30.0))


#: Synaptic charge that fires each model from rest: weight (current unit) of one arrival.
SYN_WEIGHT = {
    LifModel: 2000.0,
    IzhikevichModel: 8.0,
    HodgkinHuxleyModel: 4.0,
    FitzHughNagumoModel: 0.4,
    PoissonModel: 4000.0,
}


def _arrivals(n: int, n_steps: int, step: int, weight: float) -> np.ndarray:
    out = np.zeros((n_steps, n))
    out[step] = weight
    return out


@pytest.mark.parametrize(
    ("cls", "mode"),
    [(cls, "current") for cls in ALL_MODELS]
    + [(cls, "conductance") for cls in ALL_MODELS if cls.voltage_in_mv],
)
def test_synaptic_input_drives_a_spike(cls: type[NeuronModel], mode: str) -> None:
    n = 6
    t0 = _settle_ms(cls)
    t_ms = t0 + 40.0
    n_steps = round(t_ms / DT)
    at = round(t0 / DT)
    syn = SynapseBlock.empty(n, n_steps, DT)
    weight = SYN_WEIGHT[cls]
    if mode == "conductance":
        # ge (E_exc - v) with v near -65 mV and E_exc = 0 mV: the same initial current.
        syn.mode = SYN_CONDUCTANCE
        weight /= 65.0
    syn.ge_in[:] = _arrivals(n, n_steps, at, weight)
    trains = simulate(make(cls, n), 0.0, t_ms, syn=syn)
    assert all(len(s) >= 1 and t0 <= s[0] < t0 + 30.0 for s in trains)
    quiet = SynapseBlock.empty(n, n_steps, DT)
    quiet.mode = syn.mode
    assert all(len(s) == 0 for s in simulate(make(cls, n), 0.0, t_ms, syn=quiet))


@pytest.mark.parametrize("cls", ALL_MODELS)
def test_inhibition_reduces_firing(cls: type[NeuronModel]) -> None:
    n, t_ms = 10, 600.0
    n_steps = round(t_ms / DT)
    drive = 1.5 * cls.default_drive
    free = sum(len(s) for s in simulate(make(cls, n), drive, t_ms))
    syn = SynapseBlock.empty(n, n_steps, DT)
    # Steady inhibition worth the whole drive (gi settles at w / (1 - decay_i)).
    syn.gi_in[:] = drive * (1.0 - syn.decay_i)
    inhibited = sum(len(s) for s in simulate(make(cls, n), drive, t_ms, syn=syn))
    assert free > 20
    assert inhibited < 0.2 * free
