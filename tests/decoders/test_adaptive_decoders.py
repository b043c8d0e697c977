"""Closed-loop decoder adaptation on a simulated cosine-tuned population."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from decoders.adaptive import RmlParams, SmoothBatchParams, make_decoder
from decoders.adaptive.kalman import KalmanParams
from tests.decoders.cursor_task import CursorTask, Population

HALF_LIFE_S = 20.0
SETTLE_S = 300.0  # "within 5 simulated minutes"
WINDOW_S = 20.0

SCENARIOS: dict[str, tuple[Any, Any]] = {
    "rml-kalman": (
        RmlParams(half_life_s=HALF_LIFE_S, update_every_bins=5),
        KalmanParams(),
    ),
    "smoothbatch-steady-state-kalman": (
        SmoothBatchParams(half_life_s=HALF_LIFE_S, batch_s=5.0),
        KalmanParams(steady_state=True),
    ),
}


def run_scenario(name: str, seed: int) -> CursorTask:
    """Random decoder -> 5 min closed loop -> perturbation -> three half-lives more."""
    adaptation, decoder_params = SCENARIOS[name]
    decoder = make_decoder(decoder_params, 96, 0.05, np.random.default_rng([seed, 3]), adaptation)
    task = CursorTask(decoder, Population(n_units=96, seed=seed), seed=seed, bin_ms=50.0)
    task.run(SETTLE_S)
    task.population.perturb(45.0, 0.2, np.random.default_rng([seed, 4]))
    task.run(3 * HALF_LIFE_S)
    return task


@pytest.fixture(scope="module", params=sorted(SCENARIOS))
def scenario(request: pytest.FixtureRequest) -> tuple[str, CursorTask]:
    return request.param, run_scenario(request.param, seed=7)


def test_starts_random_and_reaches_r2_within_five_minutes(scenario: tuple[str, CursorTask]) -> None:
    _, task = scenario
    assert task.r2(0.0, 5.0) < 0.3  # the random decoder really is bad
    assert task.r2(SETTLE_S - WINDOW_S, SETTLE_S) >= 0.7


def test_recovers_from_perturbation_within_three_half_lives(
    scenario: tuple[str, CursorTask],
) -> None:
    _, task = scenario
    before = task.r2(SETTLE_S - WINDOW_S, SETTLE_S)
    just_after = task.r2(SETTLE_S, SETTLE_S + 5.0)
    end = SETTLE_S + 3 * HALF_LIFE_S
    recovered = task.r2(end - WINDOW_S, end)
    assert just_after < 0.9 * before  # the perturbation hurt
    assert recovered >= 0.9 * before, (before, just_after, recovered)


def test_identical_run_for_the_same_seed(scenario: tuple[str, CursorTask]) -> None:
    name, task = scenario
    again = run_scenario(name, seed=7)
    assert np.array_equal(np.array(task.decoded_v), np.array(again.decoded_v))
    assert np.array_equal(np.array(task.true_v), np.array(again.true_v))
    other = run_scenario(name, seed=8)
    assert not np.array_equal(np.array(task.decoded_v), np.array(other.decoded_v))
