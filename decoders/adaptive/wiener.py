"""Ridge-regularised Wiener filter: a linear map from the last ``n_lags`` bins of features.

``y_t = W [z_t, z_{t-1}, ..., z_{t-n_lags+1}, 1]`` (``n_out x (n_units n_lags + 1)``),
fit by ridge regression (``ridge`` times the number of rows; the bias is not
penalised). Adapts with SmoothBatch or RML on the same lagged design.
"""

from __future__ import annotations

from typing import Any, ClassVar, Literal

import numpy as np
from pydantic import Field

from bci.schema import StrictModel
from bci.types import FloatArray
from decoders.adaptive.base import AdaptiveDecoder, ParamDict
from decoders.adaptive.stats import LinearStats


class WienerParams(StrictModel):
    """Wiener filter with lags."""

    kind: Literal["wiener"] = "wiener"
    n_out: int = Field(2, ge=1, le=16)
    n_lags: int = Field(5, ge=1, le=100, description="bins of history, current included")
    ridge: float = Field(1e-2, ge=0)
    init_scale: float = Field(0.01, gt=0, description="spread of the random initial weights")


class WienerDecoder(AdaptiveDecoder):
    """Linear decoder over lagged features, with closed-loop adaptation."""

    kind: ClassVar[str] = "wiener"
    Params: ClassVar[type[StrictModel]] = WienerParams

    params: WienerParams

    @property
    def _dim(self) -> int:
        return self.n_units * self.params.n_lags + 1

    def _initial_params(self, rng: np.random.Generator) -> ParamDict:
        return {"W": rng.normal(0.0, self.params.init_scale, (self.n_out, self._dim))}

    def _stat_shapes(self) -> dict[str, tuple[int, int, bool]]:
        return {"obs": (self._dim, self.n_out, False)}

    def _reset_filter(self) -> None:
        self._a = np.zeros(self._dim)
        self._a[-1] = 1.0

    def _apply_params(self) -> None:
        pass

    def _decode_row(self, z: FloatArray) -> FloatArray:
        n = self.n_units
        a = self._a
        a[n:-1] = a[: -1 - n].copy()  # shift history by one bin
        a[:n] = z
        return np.asarray(self.p["W"] @ a)

    def _regressions(self, z: FloatArray, label: FloatArray | None) -> list[tuple[str, Any, Any]]:
        return [] if label is None else [("obs", self._a.copy(), label)]

    def _fit(self, stats: dict[str, LinearStats], current: ParamDict) -> ParamDict:
        return {"W": stats["obs"].solve(self.params.ridge, no_ridge_last=True)}

    def _filter_state(self) -> dict[str, np.ndarray]:
        return {"lagged": self._a}

    def _load_filter_state(self, state: dict[str, np.ndarray]) -> None:
        self._a = np.asarray(state["lagged"], np.float64).copy()
