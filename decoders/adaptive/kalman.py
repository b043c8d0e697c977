"""Kalman filter decoder (Wu et al. 2006) and its steady-state form (Malik et al. 2011).

State ``x`` (``n_out``, e.g. 2-D velocity): ``x_t = A x_{t-1} + w``, ``w ~ N(0, W)``;
observation ``z_t = C x_t + d + q``, ``q ~ N(0, Q)`` (features per unit: counts or
rates). ``C``, ``d``, ``Q`` are regressed from features on labels; ``A`` and ``W`` from
consecutive labels (``fit_dynamics``). ``Q`` is diagonal by default (cheap at thousands of
units) or full. The update uses the information form (``P = (P⁻¹ + Cᵀ Q⁻¹ C)⁻¹``), so its
cost is linear in the number of units. ``steady_state: true`` iterates the Riccati
equation to convergence once per parameter change and then applies a fixed gain.
"""

from __future__ import annotations

from typing import Any, ClassVar, Literal

import numpy as np
from pydantic import Field

from bci.schema import StrictModel
from bci.types import FloatArray
from decoders.adaptive.base import AdaptiveDecoder, ParamDict
from decoders.adaptive.stats import LinearStats


class KalmanParams(StrictModel):
    """Kalman decoder of ``n_out`` kinematic variables (units of the labels)."""

    kind: Literal["kalman"] = "kalman"
    n_out: int = Field(2, ge=1, le=16)
    steady_state: bool = False
    noise_model: Literal["diagonal", "full"] = "diagonal"
    state_decay: float = Field(0.9, gt=-1, lt=1, description="initial A = decay * I")
    state_noise: float = Field(0.1, gt=0, description="initial W = noise * I")
    fit_dynamics: bool = True
    ridge: float = Field(1e-3, ge=0)
    min_noise_var: float = Field(1e-2, gt=0, description="floor of Q's diagonal")
    init_scale: float = Field(1.0, gt=0, description="spread of the random initial C")


class KalmanDecoder(AdaptiveDecoder):
    """Kalman (or steady-state Kalman) decoder with closed-loop adaptation."""

    kind: ClassVar[str] = "kalman"
    Params: ClassVar[type[StrictModel]] = KalmanParams

    params: KalmanParams

    def _initial_params(self, rng: np.random.Generator) -> ParamDict:
        m, n, p = self.n_out, self.n_units, self.params
        q = np.eye(n) if p.noise_model == "full" else np.ones(n)
        return {
            "C": rng.normal(0.0, p.init_scale, (n, m)),
            "d": np.zeros(n),
            "Q": q,
            "A": p.state_decay * np.eye(m),
            "W": p.state_noise * np.eye(m),
        }

    def _stat_shapes(self) -> dict[str, tuple[int, int, bool]]:
        full = self.params.noise_model == "full"
        return {"obs": (self.n_out + 1, self.n_units, full), "dyn": (self.n_out, self.n_out, True)}

    x: np.ndarray
    P: np.ndarray

    def _reset_filter(self) -> None:
        self.x = np.zeros(self.n_out)
        self.P = np.eye(self.n_out) * self.params.state_noise
        self._prev_label: FloatArray | None = None

    def _apply_params(self) -> None:
        C, Q = self.p["C"], self.p["Q"]
        if Q.ndim == 1:
            self._G = C.T / Q  # Cᵀ Q⁻¹
        else:
            self._G = np.linalg.solve(Q, C).T
        self._M = self._G @ C
        self._K: FloatArray | None = None
        if self.params.steady_state:
            A, W = self.p["A"], self.p["W"]
            P = self.P  # warm start from the last solution
            for _ in range(1000):
                P_new = np.linalg.inv(np.linalg.inv(A @ P @ A.T + W) + self._M)
                done = np.max(np.abs(P_new - P)) <= 1e-10 * float(np.max(np.abs(P_new)))
                P = P_new
                if done:
                    break
            self.P = P
            self._K = P @ self._G

    def _decode_row(self, z: FloatArray) -> FloatArray:
        A, C, d = self.p["A"], self.p["C"], self.p["d"]
        x_pred = A @ self.x
        innovation = z - d - C @ x_pred
        if self._K is not None:
            self.x = x_pred + self._K @ innovation
        else:
            P_pred = A @ self.P @ A.T + self.p["W"]
            self.P = np.linalg.inv(np.linalg.inv(P_pred) + self._M)
            self.x = x_pred + self.P @ (self._G @ innovation)
        return self.x.copy()

    def _regressions(self, z: FloatArray, label: FloatArray | None) -> list[tuple[str, Any, Any]]:
        if label is None:
            self._prev_label = None
            return []
        rows: list[tuple[str, Any, Any]] = [("obs", np.append(label, 1.0), z)]
        if self.params.fit_dynamics and self._prev_label is not None:
            rows.append(("dyn", self._prev_label, label))
        self._prev_label = np.array(label, dtype=np.float64)
        return rows

    def _fit(self, stats: dict[str, LinearStats], current: ParamDict) -> ParamDict:
        p, m = self.params, self.n_out
        obs = stats["obs"]
        Ct = obs.solve(p.ridge, no_ridge_last=True)
        resid = obs.residual(Ct)
        if resid.ndim == 1:
            Q = np.maximum(resid, p.min_noise_var)
        else:
            Q = resid + p.min_noise_var * np.eye(self.n_units)
        new = {"C": Ct[:, :m], "d": Ct[:, m], "Q": Q, "A": current["A"], "W": current["W"]}
        dyn = stats["dyn"]
        if p.fit_dynamics and dyn.n >= 10 * m:
            A = dyn.solve(p.ridge)
            W = dyn.residual(A)
            vals, vecs = np.linalg.eigh(W)
            new["A"] = A
            new["W"] = (vecs * np.maximum(vals, 1e-6)) @ vecs.T
        return new

    def _filter_state(self) -> dict[str, np.ndarray]:
        prev = np.full(self.n_out, np.nan) if self._prev_label is None else self._prev_label
        state = {"x": self.x, "P": self.P, "prev_label": prev}
        if self._K is not None:
            state["K"] = self._K
        return state

    def _load_filter_state(self, state: dict[str, np.ndarray]) -> None:
        self.x = np.asarray(state["x"], np.float64).copy()
        self.P = np.asarray(state["P"], np.float64).copy()
        prev = np.asarray(state["prev_label"], np.float64)
        self._prev_label = None if np.isnan(prev).any() else prev.copy()
        if "K" in state:  # the exact gain, not a re-converged one: resumes bit for bit
            self._K = np.asarray(state["K"], np.float64).copy()
