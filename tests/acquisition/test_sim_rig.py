"""The simulated rig as a synchronous stage: determinism, ground truth, stimulation."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import probeinterface as pi
import pytest

from acquisition.sim.config import SimRigConfig
from acquisition.sim.rig import COUNTER_MODULUS, SimulatedRig
from acquisition.sim.stimulus import ElectricalStimulus, OpticalStimulus
from bci.config import validate
from bci.errors import ConfigError, SimulationError


def make_config(base_dir: Path | None = None, **overrides: Any) -> SimRigConfig:
    data: dict[str, Any] = {
        "seed": 5,
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
        "connections": [
            {"pre": "exc", "post": "inh", "probability": 0.5, "weight": 30},
            {"pre": "inh", "post": "exc", "probability": 0.5, "weight": 30},
        ],
    }
    data.update(overrides)
    return validate(SimRigConfig, data, "test", base_dir=base_dir)


def run(rig: SimulatedRig, sizes: list[int]) -> tuple[np.ndarray, np.ndarray]:
    chunks, gts = [], []
    for n in sizes:
        out = rig.process(n)
        assert out.chunk.first_sample == sum(c.shape[0] for c in chunks)
        chunks.append(out.chunk.data)
        gts.append(out.ground_truth)
    return np.concatenate(chunks), np.concatenate(gts)


def test_same_seed_identical_output_whatever_the_chunking() -> None:
    cfg = make_config()
    data_a, gt_a = run(SimulatedRig(cfg), [30] * 200)
    rng = np.random.default_rng(0)
    sizes = [int(s) for s in rng.integers(1, 250, 40)]
    sizes.append(6000 - sum(sizes))
    assert sizes[-1] > 0
    data_b, gt_b = run(SimulatedRig(cfg), sizes)
    assert len(gt_a) > 20
    np.testing.assert_array_equal(data_a, data_b)
    np.testing.assert_array_equal(gt_a, gt_b)
    data_c, gt_c = run(SimulatedRig(cfg), [300] * 20)
    np.testing.assert_array_equal(data_a, data_c)
    np.testing.assert_array_equal(gt_a, gt_c)
    data_d, _ = run(SimulatedRig(cfg.model_copy(update={"seed": 6})), [30] * 200)
    assert not np.array_equal(data_a, data_d)


def test_ground_truth_lines_up_with_trough_on_nearest_electrode() -> None:
    cfg = make_config(noise={"thermal_uv": 0, "pink_uv": 0}, connections=[])
    rig = SimulatedRig(cfg)
    data, gt = run(rig, [300] * 300)
    fp = rig.footprints
    checked = 0
    for spike in gt:
        j, s = int(spike["neuron"]), int(spike["sample"])
        channel = fp.nearest_channel(j)
        # isolated: no other spike touching this channel within a waveform length
        others = gt[(np.abs(gt["sample"] - s) < fp.length) & (gt["neuron"] != j)]
        if any(channel in fp.channels[fp.indptr[o] : fp.indptr[o + 1]] for o in others["neuron"]):
            continue
        if s - fp.trough < 0 or s + fp.length >= data.shape[0]:
            continue
        window = data[s - 10 : s + 11, channel]
        assert np.argmin(window) == 10, f"neuron {j} spike at {s}"
        assert window[10] == pytest.approx(-fp.peak_uv(j), rel=1e-4)
        checked += 1
    assert checked > 50


def test_ground_truth_is_emitted_with_the_chunk_holding_the_trough() -> None:
    rig = SimulatedRig(make_config())
    for _ in range(100):
        out = rig.process(30)
        gt = out.ground_truth["sample"]
        assert np.all((gt >= out.chunk.first_sample) & (gt < out.chunk.end_sample))
        assert np.all(np.diff(gt) >= 0)


def test_counter_channel_counts_samples() -> None:
    rig = SimulatedRig(make_config(stream={"counter_channel": True}))
    data, _ = run(rig, [17] * 50)
    np.testing.assert_array_equal(data[:, 0], np.arange(850, dtype=np.float32))
    assert COUNTER_MODULUS == 2**24  # every counter value is exact in float32


def _near_far(rig: SimulatedRig, electrode: int, radius_um: float) -> tuple[np.ndarray, ...]:
    xy = rig.electrode_xy[electrode]
    d = np.linalg.norm(rig.neuron_xyz - np.array([xy[0], xy[1], 0.0]), axis=1)
    return np.nonzero(d < radius_um)[0], np.nonzero(d > 3 * radius_um)[0]


def stim_config() -> SimRigConfig:
    return make_config(
        probe={"kind": "linear", "n_electrodes": 32},
        populations=[
            {
                "name": "exc",
                "count": 60,
                "model": {"kind": "lif"},
                "drive": {"mean": 230, "noise_std": 60},
                "opsin": {"fraction": 1.0},
            }
        ],
        connections=[],
        stimulation={"optical": {"sites": [{"name": "led0", "electrode": 16}]}},
    )


def test_electrical_stimulation_raises_firing_of_nearby_neurons_only() -> None:
    cfg = stim_config()
    base, stim = SimulatedRig(cfg), SimulatedRig(cfg)
    start = stim.stimulate(
        ElectricalStimulus(
            electrodes=(16,),
            amplitudes_ua=(20.0, 20.0),
            widths_us=(200.0, 200.0),
            n_pulses=50,
            frequency_hz=50.0,
        )
    )
    assert start == 0
    base_data, _ = run(base, [300] * 100)
    stim_data, _ = run(stim, [300] * 100)
    near, far = _near_far(stim, 16, 80.0)
    assert near.size >= 3
    assert far.size >= 10
    near_gain = stim.spike_counts[near].sum() - base.spike_counts[near].sum()
    assert near_gain >= 25  # about one evoked spike per pulse in the near group
    # the effect falls with distance: per neuron, far (> 240 µm) gains much less
    gain_near = (stim.spike_counts[near] - base.spike_counts[near]).mean()
    gain_far = (stim.spike_counts[far] - base.spike_counts[far]).mean()
    assert gain_near > 3 * max(gain_far, 0.1)
    # artifact during the first pulse (before any evoked spike's waveform): large on the
    # stimulated contact, falling along the shank
    artifact = np.abs(stim_data[:12] - base_data[:12]).max(axis=0)
    assert artifact[16] > 300.0
    assert artifact[16] > 3 * artifact[0]


def test_optical_stimulation_raises_firing_of_expressing_neurons() -> None:
    cfg = stim_config()
    base, lit = SimulatedRig(cfg), SimulatedRig(cfg)
    lit.stimulate(
        OpticalStimulus(site="led0", power_mw=0.2, pulse_width_ms=5.0, n_pulses=20, frequency_hz=20)
    )
    run(base, [300] * 100)
    run(lit, [300] * 100)
    near, far = _near_far(lit, 16, 100.0)
    assert lit.spike_counts[near].sum() >= base.spike_counts[near].sum() + 20
    # photocurrent falls with distance: the effect on near neurons is larger per neuron
    gain_near = (lit.spike_counts[near] - base.spike_counts[near]).mean()
    gain_far = (lit.spike_counts[far] - base.spike_counts[far]).mean()
    assert gain_near > 2 * max(gain_far, 0.1)


def test_stop_stimulation_ends_a_running_train() -> None:
    # silent neurons and no noise: the recording is the stimulation artifact alone
    silent = [{"name": "exc", "count": 10, "model": {"kind": "lif"}, "drive": {"mean": 0}}]
    rig = SimulatedRig(
        make_config(populations=silent, connections=[], noise={"thermal_uv": 0, "pink_uv": 0})
    )
    rig.stimulate(
        ElectricalStimulus(
            electrodes=(8,), amplitudes_ua=(5, 5), widths_us=(200, 200), n_pulses=100
        )
    )
    assert np.abs(rig.process(3000).chunk.data).max() > 50.0
    assert rig.stimulating
    rig.stop_stimulation()
    assert not rig.stimulating
    assert np.abs(rig.process(3000).chunk.data).max() == 0.0


def test_stimulus_for_missing_hardware_is_refused() -> None:
    rig = SimulatedRig(stim_config())
    with pytest.raises(SimulationError, match="do not exist"):
        rig.stimulate(ElectricalStimulus(electrodes=(99,), amplitudes_ua=(1, 1), widths_us=(1, 1)))
    with pytest.raises(SimulationError, match="unknown optical site"):
        rig.stimulate(OpticalStimulus(site="nope", power_mw=1, pulse_width_ms=1))
    with pytest.raises(SimulationError):
        ElectricalStimulus(electrodes=(1,), amplitudes_ua=(-1, 1), widths_us=(1, 1))
    assert not rig.stimulating


def test_edge_list_synapse_delivers_after_its_delay(tmp_path: Path) -> None:
    # neuron 0 fires on its own; neuron 1 gets no drive and one strong synapse from 0
    edges = tmp_path / "edges.csv"
    edges.write_text("pre,post,weight,delay_ms\n0,1,20000,2.0\n")
    cfg = make_config(
        base_dir=tmp_path,
        populations=[
            {"name": "driver", "count": 1, "model": {"kind": "lif"}, "drive": {"mean": 400}},
            {"name": "follower", "count": 1, "model": {"kind": "lif"}, "drive": {"mean": 0}},
        ],
        connections=[],
        edge_list={"path": "edges.csv"},
        synapses={"tau_exc_ms": 0.5},
    )
    rig = SimulatedRig(cfg)
    assert rig.synapses.n_synapses == 1
    assert rig.synapses.min_delay == 60
    _, gt = run(rig, [300] * 20)
    pre = gt["sample"][gt["neuron"] == 0]
    pre = pre[pre + 90 < 6000]  # followers of the last spikes may fall past the end
    post = gt["sample"][gt["neuron"] == 1]
    assert pre.size >= 3
    assert post.size >= pre.size
    lags = post[: pre.size] - pre
    assert np.all((lags >= 60) & (lags <= 60 + 30))  # the delay, plus < 1 ms to threshold


def test_edge_list_errors_name_the_line(tmp_path: Path) -> None:
    edges = tmp_path / "edges.csv"
    edges.write_text("0,1,1.0,1.0\n0,70,1.0,1.0\n")
    cfg = make_config(base_dir=tmp_path, edge_list={"path": str(edges)})
    with pytest.raises(ConfigError, match=r"edges.csv:2: neuron index out of range"):
        SimulatedRig(cfg)
    with pytest.raises(ConfigError, match="file not found"):
        make_config(base_dir=tmp_path, edge_list={"path": "missing.csv"})


def test_recurrent_excitation_raises_rates() -> None:
    pops = [{"name": "exc", "count": 40, "model": {"kind": "lif"}, "drive": {"noise_std": 50}}]
    alone = SimulatedRig(make_config(populations=pops, connections=[]))
    coupled = SimulatedRig(
        make_config(
            populations=pops,
            connections=[{"pre": "exc", "post": "exc", "probability": 0.2, "weight": 40}],
        )
    )
    run(alone, [300] * 50)
    run(coupled, [300] * 50)
    assert coupled.spike_counts.sum() > 1.2 * alone.spike_counts.sum()


@pytest.mark.parametrize(
    ("probe", "n"),
    [
        ({"kind": "linear", "n_electrodes": 32}, 32),
        ({"kind": "linear", "n_electrodes": 64, "n_shanks": 2}, 64),
        ({"kind": "linear", "n_electrodes": 384, "n_columns": 2}, 384),
        ({"kind": "grid", "n_rows": 32, "n_cols": 32, "pitch_um": 30}, 1024),
    ],
)
def test_probe_geometries(probe: dict[str, Any], n: int) -> None:
    rig = SimulatedRig(make_config(probe=probe))
    out = rig.process(30)
    assert out.chunk.data.shape == (30, n)
    assert out.chunk.data.dtype == np.float32
    assert rig.probe.get_contact_count() == n
    assert len(np.unique(rig.electrode_xy, axis=0)) == n


def test_probe_from_probeinterface_file(tmp_path: Path) -> None:
    probe = pi.generate_multi_columns_probe(num_columns=4, num_contact_per_column=8, xpitch=25)
    pi.write_probeinterface(tmp_path / "probe.json", probe)
    rig = SimulatedRig(make_config(base_dir=tmp_path, probe={"kind": "file", "path": "probe.json"}))
    assert rig.n_channels == 32
    np.testing.assert_allclose(rig.electrode_xy, probe.contact_positions)
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"nonsense": 1}))
    with pytest.raises(ConfigError, match="cannot read probe file"):
        SimulatedRig(make_config(base_dir=tmp_path, probe={"kind": "file", "path": "bad.json"}))


@pytest.mark.parametrize("rate", [1_000.0, 10_000.0, 50_000.0])
def test_sample_rates(rate: float) -> None:
    rig = SimulatedRig(make_config(sample_rate_hz=rate))
    out = rig.process(int(rate))  # one second
    assert out.chunk.sample_rate == rate
    rates = rig.spike_counts[:12]
    assert 1 < rates.mean() < 100  # the neurons behave the same at any sampling rate


def test_noise_has_the_configured_rms_gaussian_shape_and_1_over_f_spectrum() -> None:
    from scipy import stats
    from scipy.signal import welch

    from acquisition.sim.config import NoiseConfig
    from acquisition.sim.signal import NoiseGenerator

    white = NoiseGenerator(NoiseConfig(thermal_uv=8.0, pink_uv=0.0), 4, np.random.default_rng(0))
    x = white.generate(300_000).astype(np.float64)
    np.testing.assert_allclose(x.std(axis=0), 8.0, rtol=0.02)
    assert abs(stats.kurtosis(x[:, 0])) < 0.05  # Gaussian: excess kurtosis 0
    assert stats.kstest(x[:, 0] / 8.0, "norm").pvalue > 0.001
    assert abs(np.corrcoef(x[:, 0], x[:, 1])[0, 1]) < 0.02  # channels independent
    pink = NoiseGenerator(NoiseConfig(thermal_uv=0.0, pink_uv=4.0), 2, np.random.default_rng(1))
    y = pink.generate(300_000)[:, 0]
    assert y.std() == pytest.approx(4.0, rel=0.05)
    f, p = welch(y, fs=30_000, nperseg=2**14)
    band = (f > 10) & (f < 3000)
    slope = np.polyfit(np.log10(f[band]), np.log10(p[band]), 1)[0]
    assert slope == pytest.approx(-1.0, abs=0.1)


def test_conductance_synapses_inhibit_and_need_a_voltage_in_mv() -> None:
    pops = [
        {"name": "exc", "count": 30, "model": {"kind": "lif"}, "drive": {"noise_std": 50}},
        {
            "name": "inh",
            "count": 10,
            "excitatory": False,
            "model": {"kind": "lif", "tau_m_ms": 10},
            "drive": {"mean": 600, "noise_std": 50},
        },
    ]
    free = SimulatedRig(make_config(populations=pops, connections=[]))
    inhibited = SimulatedRig(
        make_config(
            populations=pops,
            synapses={"mode": "conductance", "e_inh_mv": -80.0},
            # weight in pA per mV of driving force: about 30 mV below E_inh's reversal
            connections=[{"pre": "inh", "post": "exc", "probability": 0.5, "weight": 2.0}],
        )
    )
    run(free, [300] * 50)
    run(inhibited, [300] * 50)
    assert inhibited.spike_counts[:30].sum() < 0.8 * free.spike_counts[:30].sum()
    assert inhibited.spike_counts[30:].sum() == free.spike_counts[30:].sum()  # untouched
    with pytest.raises(ConfigError, match="no membrane potential in mV"):
        make_config(
            populations=[{"name": "p", "count": 3, "model": {"kind": "poisson"}}],
            synapses={"mode": "conductance"},
            connections=[],
        )
