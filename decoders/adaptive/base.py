"""The interface every adaptive decoder implements, and the adaptation loop they share.

A decoder consumes :class:`~decoders.frames.FeatureFrame` rows (one per bin) and
produces :class:`~decoders.frames.DecoderOutput` rows. With an
:class:`~decoders.frames.Intention` and an adaptation other than ``none`` it also learns
online (SmoothBatch or RML, see :mod:`decoders.adaptive.adaptation`). A subclass says
which regressions it learns from (:meth:`_regressions`) and how to fit and blend its
parameters; the base class runs the loop, the intention labelling and the state I/O.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any, ClassVar

import numpy as np

from bci.schema import StrictModel
from bci.types import FloatArray
from decoders.adaptive.adaptation import (
    AdaptationParams,
    NoAdaptationParams,
    RmlParams,
    SmoothBatchParams,
)
from decoders.adaptive.stats import LinearStats
from decoders.frames import DecoderOutput, FeatureFrame, Intention

ParamDict = dict[str, np.ndarray]


class AdaptiveDecoder(ABC):
    """Features ``(k, n_units)`` in, decoded values ``(k, n_out)`` out, learning online.

    Subclasses set ``kind`` and ``Params`` and implement the abstract methods.
    ``bin_s`` is the duration of one feature bin (s); ``rng`` draws the random
    initial decoder (no global RNG).
    """

    kind: ClassVar[str]
    Params: ClassVar[type[StrictModel]]

    def __init__(
        self,
        params: Any,
        n_units: int,
        bin_s: float,
        rng: np.random.Generator,
        adaptation: AdaptationParams | None = None,
    ) -> None:
        self.params = params
        self.n_units = int(n_units)
        self.n_out = int(params.n_out)
        self.bin_s = float(bin_s)
        self.adaptation: AdaptationParams = adaptation or NoAdaptationParams()
        self._rng = rng
        self.reset()

    # ------------------------------------------------------------------ subclass API

    @abstractmethod
    def _initial_params(self, rng: np.random.Generator) -> ParamDict:
        """A random initial decoder."""

    @abstractmethod
    def _stat_shapes(self) -> dict[str, tuple[int, int, bool]]:
        """``name -> (dim_a, dim_b, full_t)`` of each regression the decoder learns from."""

    @abstractmethod
    def _reset_filter(self) -> None:
        """Clear the running state of the filter (Kalman state, lag history)."""

    @abstractmethod
    def _decode_row(self, z: FloatArray) -> FloatArray:
        """Decode one bin of features."""

    @abstractmethod
    def _regressions(self, z: FloatArray, label: FloatArray | None) -> list[tuple[str, Any, Any]]:
        """``(stats name, a, b)`` observations for the row just decoded (label may be None)."""

    @abstractmethod
    def _fit(self, stats: dict[str, LinearStats], current: ParamDict) -> ParamDict:
        """Parameters fitted to ``stats`` (keep ``current`` where data are lacking)."""

    @abstractmethod
    def _apply_params(self) -> None:
        """Recompute whatever derives from ``self.p`` (gains, inverses)."""

    @abstractmethod
    def _filter_state(self) -> dict[str, np.ndarray]: ...

    @abstractmethod
    def _load_filter_state(self, state: dict[str, np.ndarray]) -> None: ...

    # ------------------------------------------------------------------ the loop

    def reset(self) -> None:
        """A fresh random decoder with no adaptation history."""
        self.p: ParamDict = self._initial_params(self._rng)
        self.stats = {k: LinearStats(*v) for k, v in self._stat_shapes().items()}
        self._rows_since_fit = 0
        self._rows_labelled = 0
        self.n_refits = 0
        self._reset_filter()
        self._apply_params()

    def set_params(self, params: ParamDict) -> None:
        self.p = {k: np.array(v, dtype=np.float64) for k, v in params.items()}
        self._apply_params()

    def fit_offline(self, values: FloatArray, labels: FloatArray) -> None:
        """Fit from calibration data (``(T, n_units)`` features and ``(T, n_out)`` labels)."""
        stats = {k: LinearStats(*v) for k, v in self._stat_shapes().items()}
        self._reset_filter()
        for z, y in zip(values, labels, strict=True):
            self._decode_row(z)
            for name, a, b in self._regressions(z, y):
                stats[name].add(a, b)
        self.set_params(self._fit(stats, self.p))
        self._reset_filter()

    def process(self, frame: FeatureFrame, intention: Intention | None = None) -> DecoderOutput:
        """Decode every row of ``frame``; adapt from ``intention`` when given."""
        k = len(frame)
        out = np.zeros((k, self.n_out))
        adapt = intention is not None and not isinstance(self.adaptation, NoAdaptationParams)
        for r in range(k):
            z = frame.values[r]
            y = self._decode_row(z)
            out[r] = y
            if adapt:
                assert intention is not None
                self._observe(z, self._label(intention, r, y))
        return DecoderOutput(out, frame.end_sample, frame.timestamp, frame.sample_rate)

    def _label(self, intention: Intention, r: int, decoded: FloatArray) -> FloatArray | None:
        a = self.adaptation
        assert not isinstance(a, NoAdaptationParams)
        if a.intention == "given":
            if intention.velocity is None:
                raise ValueError("adaptation with intention 'given' needs Intention.velocity")
            v = np.asarray(intention.velocity[r], dtype=np.float64)
            return None if not np.all(np.isfinite(v)) else v
        if intention.target is None or intention.cursor is None:
            raise ValueError("ReFIT re-labelling needs Intention.target and Intention.cursor")
        to_target = np.asarray(intention.target[r] - intention.cursor[r], dtype=np.float64)
        if not np.all(np.isfinite(to_target)):
            return None
        dist = float(np.linalg.norm(to_target))
        if dist <= a.target_radius or dist == 0.0:
            return np.zeros(self.n_out)
        return float(np.linalg.norm(decoded)) * to_target / dist

    def _observe(self, z: FloatArray, label: FloatArray | None) -> None:
        a = self.adaptation
        rows = self._regressions(z, label)
        if label is None:
            return
        self._rows_labelled += 1
        if isinstance(a, RmlParams):
            lam = 0.5 ** (self.bin_s / a.half_life_s)
            for name, va, vb in rows:
                self.stats[name].add(va, vb, lam)
            self._rows_since_fit += 1
            warm = self._rows_labelled * self.bin_s >= a.warmup_s
            if warm and self._rows_since_fit >= a.update_every_bins:
                self.set_params(self._fit(self.stats, self.p))
                self._rows_since_fit = 0
                self.n_refits += 1
        elif isinstance(a, SmoothBatchParams):
            for name, va, vb in rows:
                self.stats[name].add(va, vb)
            self._rows_since_fit += 1
            if self._rows_since_fit * self.bin_s >= a.batch_s - 1e-9:
                new = self._fit(self.stats, self.p)
                alpha = 0.5 ** (a.batch_s / a.half_life_s)
                self.set_params({k: alpha * self.p[k] + (1 - alpha) * new[k] for k in self.p})
                for s in self.stats.values():
                    s.clear()
                self._rows_since_fit = 0
                self.n_refits += 1

    # ------------------------------------------------------------------ state I/O

    def state_dict(self) -> dict[str, np.ndarray]:
        """Weights, adaptation statistics and filter state, for checkpoints."""
        out: dict[str, np.ndarray] = {f"param.{k}": v.copy() for k, v in self.p.items()}
        for name, s in self.stats.items():
            out.update(s.state(f"stats.{name}"))
        out.update({f"filter.{k}": np.asarray(v).copy() for k, v in self._filter_state().items()})
        out["counters"] = np.array(
            [self._rows_since_fit, self._rows_labelled, self.n_refits], np.int64
        )
        return out

    def load_state_dict(self, state: dict[str, np.ndarray]) -> None:
        """Restore what :meth:`state_dict` returned."""
        self.set_params({k[6:]: v for k, v in state.items() if k.startswith("param.")})
        for name, s in self.stats.items():
            s.load(state, f"stats.{name}")
        self._load_filter_state({k[7:]: v for k, v in state.items() if k.startswith("filter.")})
        c = state["counters"]
        self._rows_since_fit, self._rows_labelled, self.n_refits = (int(x) for x in c)
