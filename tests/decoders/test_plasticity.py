"""Plasticity rules against analytic results, and devices under noise."""

from __future__ import annotations

import math

import numpy as np
import pytest

from decoders.devices import make_device
from decoders.devices.ideal import IdealParams
from decoders.devices.memristor import MemristorDevice, MemristorParams
from decoders.devices.pulsed import PulsedParams
from decoders.plasticity import make_rule
from decoders.plasticity.pair_stdp import PairStdpParams
from decoders.plasticity.rate import RateRuleParams
from decoders.plasticity.triplet_stdp import TripletStdpParams
from tests.decoders.helpers import FS, batch, chunks

MS = int(FS / 1000)  # samples per ms


def run_pair(rule, pre_ms, post_ms, total_ms, chunk_ms):  # type: ignore[no-untyped-def]
    samples = np.concatenate(
        [np.round(np.asarray(pre_ms) * MS), np.round(np.asarray(post_ms) * MS)]
    ).astype(np.int64)
    is_post = np.r_[np.zeros(len(pre_ms), bool), np.ones(len(post_ms), bool)]
    for b in chunks(
        samples, np.zeros(samples.size, np.int64), 0, int(total_ms * MS), int(chunk_ms * MS)
    ):
        sel = (samples >= b.first_sample) & (samples < b.end_sample)
        pre_s, post_s = samples[sel & ~is_post], samples[sel & is_post]
        rule.process(
            batch(pre_s, np.zeros(pre_s.size, np.int64), b.first_sample, b.end_sample),
            batch(post_s, np.zeros(post_s.size, np.int64), b.first_sample, b.end_sample),
        )
    return rule.weights[0, 0]


@pytest.mark.parametrize("pairing", ["all_to_all", "nearest"])
@pytest.mark.parametrize("dependence", ["additive", "multiplicative"])
def test_pair_stdp_window_matches_exponential(pairing: str, dependence: str) -> None:
    params = PairStdpParams(
        a_plus=0.01, a_minus=0.012, tau_plus_ms=16.8, tau_minus_ms=33.7,
        pairing=pairing, weight_dependence=dependence,
    )  # fmt: skip
    w0 = 0.3
    lags = np.arange(-100, 101, 1.0)
    measured, expected = [], []
    for lag in lags:
        device = make_device(IdealParams(), (1, 1), np.random.default_rng(0), w_init=w0)
        rule = make_rule(params, 1, 1, device, FS)
        t_pre = 150.0
        w = run_pair(rule, [t_pre], [t_pre + lag], 300.0, 7.0)  # chunks cut across the pair
        measured.append(w - w0)
        expected.append(params.window(lag, w0))
    measured_a = np.array(measured)
    # the analytic window, written out from the configured amplitudes and time constants
    f_plus = (1 - w0) if dependence == "multiplicative" else 1.0
    f_minus = w0 if dependence == "multiplicative" else 1.0
    analytic = np.where(
        lags > 0,
        0.01 * f_plus * np.exp(-lags / 16.8),
        np.where(lags < 0, -0.012 * f_minus * np.exp(lags / 33.7), 0.0),
    )
    np.testing.assert_allclose(measured_a, analytic, rtol=1e-9, atol=1e-15)
    np.testing.assert_allclose(np.array(expected), analytic, rtol=1e-12)  # params.window agrees
    assert measured_a[lags == 0][0] == 0.0


def triplet_reference(pre: np.ndarray, post: np.ndarray, p: TripletStdpParams) -> float:
    """Direct sums over spike pairs and triplets (no traces): the analytic model."""
    dw = 0.0
    for t in post:
        r1 = sum(math.exp(-(t - s) / p.tau_plus_ms) for s in pre if s < t)
        o2 = sum(math.exp(-(t - s) / p.tau_y_ms) for s in post if s < t)
        dw += r1 * (p.a2_plus + p.a3_plus * o2)
    for t in pre:
        o1 = sum(math.exp(-(t - s) / p.tau_minus_ms) for s in post if s < t)
        r2 = sum(math.exp(-(t - s) / p.tau_x_ms) for s in pre if s < t)
        dw -= o1 * (p.a2_minus + p.a3_minus * r2)
    return dw


def test_triplet_stdp_pairing_frequency_dependence() -> None:
    """60 pairings at ±10 ms: depression at low frequency, potentiation at high (P&G 2006)."""
    p = TripletStdpParams()  # NEST defaults
    results: dict[tuple[float, float], float] = {}
    for lag in (10.0, -10.0):
        for freq in (0.1, 1.0, 10.0, 20.0, 40.0, 50.0):
            period = 1000.0 / freq
            pre = np.arange(60) * period + 50.0
            post = pre + lag
            device = make_device(
                IdealParams(w_min=0.0, w_max=100.0), (1, 1), np.random.default_rng(0), 50.0
            )
            rule = make_rule(p, 1, 1, device, FS)
            total = pre[-1] + 200.0
            w = run_pair(rule, pre, post, total, 1000.0 if freq < 5 else 1.0)
            results[(lag, freq)] = w - 50.0
            assert w - 50.0 == pytest.approx(triplet_reference(pre, post, p), rel=1e-6, abs=1e-12)
    # post-before-pre: depression at low pairing frequency, potentiation at high
    assert results[(-10.0, 0.1)] < 0
    assert results[(-10.0, 1.0)] < 0
    assert results[(-10.0, 40.0)] > 0
    assert results[(-10.0, 50.0)] > 0
    # pre-before-post: no change at low frequency, potentiation growing with frequency
    assert abs(results[(10.0, 0.1)]) < 1e-3 * results[(10.0, 50.0)]
    assert 0 < results[(10.0, 10.0)] < results[(10.0, 20.0)] < results[(10.0, 50.0)]
    # the crossover of post-before-pre lies between 1 and 40 Hz, as in the paper's figure
    assert results[(-10.0, 10.0)] < results[(-10.0, 40.0)]


@pytest.mark.parametrize(
    "device_params",
    [
        PulsedParams(
            w_min=-0.5,
            w_max=1.5,
            alpha_p=0.5,
            alpha_d=0.5,
            d2d_cv=1.0,
            c2c_cv=1.5,
            write_noise=0.2,
            max_pulses=50,
        ),
        MemristorParams(
            w_min=0.0, w_max=2.0, v_set=1.6, v_reset=-1.8, d2d_cv=1.0, c2c_cv=1.5, max_pulses=50
        ),
    ],
    ids=["pulsed", "memristor"],
)
def test_weights_stay_in_bounds_under_device_noise(device_params) -> None:  # type: ignore[no-untyped-def]
    rng = np.random.default_rng(3)
    device = make_device(device_params, (40, 25), np.random.default_rng(4))
    lo, hi = device.w_min, device.w_max
    seen_lo, seen_hi = np.inf, -np.inf
    for _ in range(300):
        pulses = rng.integers(-50, 51, size=device.shape)
        device.apply_pulses(pulses)
        w = device.weights
        assert np.all(w >= lo)
        assert np.all(w <= hi)
        assert np.all(np.isfinite(w))
        seen_lo, seen_hi = min(seen_lo, w.min()), max(seen_hi, w.max())
        if isinstance(device, MemristorDevice):
            r = device.resistance_ohm
            assert np.all(r >= device_params.r_lo_ohm)
            assert np.all(r <= device_params.r_hi_ohm)
    # the noise really pushed the weights to both ends of the range
    assert seen_lo < lo + 0.1 * (hi - lo)
    assert seen_hi > hi - 0.1 * (hi - lo)
    # and a rule with huge requested changes goes through the same bounds
    stdp = make_rule(PairStdpParams(a_plus=5.0, a_minus=5.0), 40, 25, device, FS)
    spk = rng.integers(0, 30 * MS * 100, size=2000)
    for b in chunks(spk, rng.integers(0, 25, size=2000), 0, 30 * MS * 100, 30):
        stdp.process(b, b)
        assert np.all(device.weights >= lo)
        assert np.all(device.weights <= hi)


@pytest.mark.parametrize("device_kind", ["pulsed", "memristor"])
def test_rate_rule_sign_with_noisy_device(device_kind: str) -> None:
    """High-rate epochs potentiate, low-rate epochs depress, in >= 95% of epochs."""
    rng = np.random.default_rng(11)
    n_pre, n_post, n_epochs, window_ms = 12, 4, 120, 500.0
    if device_kind == "pulsed":  # write noise of a third of a mid-range step per pulse
        dev_params = PulsedParams(
            alpha_p=0.06, alpha_d=0.06, d2d_cv=0.3, c2c_cv=0.5, write_noise=0.01
        )
    else:
        dev_params = MemristorParams(d2d_cv=0.3, c2c_cv=0.5)
    device = make_device(dev_params, (n_pre, n_post), np.random.default_rng(12))
    rule = make_rule(
        RateRuleParams(window_ms=window_ms, threshold_hz=10.0, pulses_ltp=3, pulses_ltd=3),
        n_pre, n_post, device, FS,
    )  # fmt: skip
    win = int(window_ms * MS)
    correct = total = 0
    for epoch in range(n_epochs):
        high = rng.random(n_pre) < 0.5
        rates = np.where(high, rng.uniform(20, 40, n_pre), rng.uniform(0, 4, n_pre))
        counts = rng.poisson(rates * window_ms / 1000.0)
        units = np.repeat(np.arange(n_pre), counts)
        samples = epoch * win + rng.integers(0, win, size=units.size)
        before = device.weights.copy()
        for b in chunks(samples, units, epoch * win, (epoch + 1) * win, 30):  # 1 ms chunks
            rule.process(b)
        change = device.weights - before
        expected = np.where(high, 1.0, -1.0)[:, None]
        correct += int(np.sum(np.sign(change) == expected))
        total += change.size
    assert rule.epochs_closed == n_epochs
    assert correct / total >= 0.95, correct / total
