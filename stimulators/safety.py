"""The safety envelope: the one check used by the controller and by every driver.

:class:`SafetyEnvelope` holds one device's limits (from the config) and the state of
what that device has been told to do (per-electrode pulse timing and charge, per-site
light energy and on-time). ``check(command, start)`` is pure: it raises
:class:`~bci.errors.SafetyViolation` naming the broken rule (see :data:`RULES`) and the
values, or returns an :class:`Admission`; only ``commit(admission)`` changes the state.
``admit`` does both, so a command is accepted whole or rejected whole and a rejected
command changes nothing.

Sliding-window budgets (charge per second, optical energy over 1 s and 60 s, duty
cycle) are counted on 10 ms bins, each window widened by one bin, so they err on the
safe side by at most one bin.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from bci.errors import SafetyViolation
from stimulators import safety_kernels as kernels
from stimulators.commands import ElectricalPulseTrain, OpticalPulseTrain, StopAll
from stimulators.config import (
    ElectricalDeviceConfig,
    ElectrodeEnvelope,
    OpticalDeviceConfig,
    OpticalSiteEnvelope,
)

__all__ = ["BIN_S", "RULES", "Admission", "SafetyEnvelope"]

#: Every rule a rejection can name, with what it guards.
RULES: dict[str, str] = {
    "device.mismatch": "the command is addressed to another device",
    "device.kind": "the device cannot execute this kind of command",
    "electrode.unknown": "an electrode not declared in the device's envelope",
    "electrode.count": "more electrodes in one command than the device allows",
    "electrical.amplitude": "phase amplitude above the electrode's maximum",
    "electrical.width": "phase width outside the electrode's range",
    "electrical.interphase_gap": "interphase gap above the electrode's maximum",
    "electrical.frequency": "pulse frequency above the electrode's limit, or pulses overlap",
    "electrical.charge_balance": "phase charges differ by more than the allowed imbalance",
    "electrical.charge_per_phase": "charge per phase above the microelectrode cap",
    "electrical.charge_density": "charge density above the electrode material's limit",
    "electrical.shannon": "Shannon criterion log10(D) <= k - log10(Q) broken (macroelectrode)",
    "electrical.train_length": "pulse train too long or too many pulses",
    "electrical.rate": "pulses on an electrode closer than 1 / max_rate_hz",
    "electrical.charge_budget": "charge in a 1 s window above the electrode's budget",
    "optical.site_unknown": "an optical site not declared in the device's envelope",
    "optical.wavelength": "wavelength differs from the site's",
    "optical.power": "power above the site's cap",
    "optical.pulse_width": "pulse width below the minimum or pulses overlap",
    "optical.frequency": "pulse frequency above the site's limit",
    "optical.train_length": "light train too long or too many pulses",
    "optical.busy": "a new train would start before the site's previous train ends",
    "optical.on_time": "continuous on-time above the site's limit",
    "optical.heating_1s": "estimated temperature rise from 1 s average power above the budget",
    "optical.heating_60s": "estimated temperature rise from 60 s average power above the budget",
    "optical.duty_cycle": "light on for more than the allowed fraction of a 60 s window",
}

BIN_S = 0.01
_HISTORY_BINS = 6_100  # 61 s: the longest window plus a margin
_RING_BINS = 16_384  # history + longest train (60 s) + windows fit inside
_EPS = 1e-9
_MERGE_S = 1e-3  # light off for less than this does not end a continuous on-period


def _violation(rule: str, message: str, **values: object) -> SafetyViolation:
    assert rule in RULES, rule
    return SafetyViolation(message, rule=rule, **values)


class _Ring:
    """An amount per :data:`BIN_S` bin for absolute bins ``[low, low + size)``."""

    def __init__(self) -> None:
        self.data = np.zeros(_RING_BINS)
        self.low = 0

    def advance(self, floor: int) -> None:
        self.low = kernels.advance(self.data, self.low, floor)

    def add(self, first: int, amounts: np.ndarray, floor: int) -> None:
        self.advance(floor)
        if first < self.low or first + amounts.size > self.low + _RING_BINS:
            raise ValueError("ledger bins out of range")  # excluded by the envelope limits
        kernels.add(self.data, self.low, first, np.ascontiguousarray(amounts, dtype=float))


_EMPTY = np.zeros(1)


def _max_window(
    ring: _Ring | None, first: int, amounts: np.ndarray, window_bins: int, floor: int
) -> float:
    """Largest total over ``window_bins + 1`` consecutive bins with ``amounts`` added
    (one compiled pass; the same sums, in the same order, as a cumulative sum)."""
    return float(
        kernels.max_window(
            _EMPTY if ring is None else ring.data,
            0 if ring is None else ring.low,
            floor,
            ring is not None,
            first,
            np.ascontiguousarray(amounts, dtype=float),
            window_bins,
        )
    )


def _pulse_bins(start: float, n: int, frequency: float, amount: float) -> tuple[int, np.ndarray]:
    """Bin index of the first pulse and the amount per bin of ``n`` point pulses."""
    if n == 1:  # the common case, without the array arithmetic (same result)
        return math.floor(start / BIN_S), np.full(1, float(amount))
    bins = np.floor((start + np.arange(n) / frequency) / BIN_S).astype(np.int64)
    first = int(bins[0])
    return first, np.bincount(bins - first).astype(float) * amount


def _on_time_bins(start: float, n: int, frequency: float, width_s: float) -> tuple[int, np.ndarray]:
    """Bin index of the first bin and the light on-time (s) per bin of a pulse train."""
    period = 1.0 / frequency

    def on_before(t: np.ndarray) -> np.ndarray:
        x = t - start
        k = np.clip(np.floor(x / period), 0, n)
        partial = np.where(k < n, np.clip(x - k * period, 0.0, width_s), 0.0)
        return np.where(x <= 0, 0.0, k * width_s + partial)

    end = start + (n - 1) * period + width_s
    first = math.floor(start / BIN_S)
    last = math.floor(end / BIN_S)
    edges = np.arange(first, last + 2) * BIN_S
    return first, np.diff(on_before(edges))


@dataclass
class _ElectrodeState:
    last_pulse: float = -math.inf
    last_end: float = -math.inf
    charge: _Ring = field(default_factory=_Ring)


@dataclass
class _SiteState:
    last_end: float = -math.inf
    last_run_s: float = 0.0
    energy: _Ring = field(default_factory=_Ring)  # mW·s per bin
    on_time: _Ring = field(default_factory=_Ring)  # s per bin


@dataclass(frozen=True)
class Admission:
    """A command that passed the envelope, with what committing it adds to the state."""

    command: ElectricalPulseTrain | OpticalPulseTrain | StopAll
    start: float
    floor: int
    electrical: tuple[tuple[int, float, float, int, np.ndarray], ...] = ()
    optical: tuple[tuple[str, float, float, int, np.ndarray, np.ndarray], ...] = ()


class SafetyEnvelope:
    """One device's safety limits and usage state.

    Consumes validated commands with the LSL time (s) they would start at; produces an
    :class:`Admission` or raises :class:`SafetyViolation` (``rule`` in :data:`RULES`).
    Not thread-safe; use it from one task.
    """

    def __init__(self, device: ElectricalDeviceConfig | OpticalDeviceConfig) -> None:
        self.device = device
        self._electrodes: dict[int, ElectrodeEnvelope] = {}
        self._sites: dict[str, OpticalSiteEnvelope] = {}
        if isinstance(device, ElectricalDeviceConfig):
            for env in device.electrodes:
                for i in env.ids:
                    self._electrodes[i] = env
        else:
            self._sites = {s.site: s for s in device.sites}
        self._estate: dict[int, _ElectrodeState] = {}
        self._sstate: dict[str, _SiteState] = {}

    @property
    def name(self) -> str:
        return self.device.name

    # ------------------------------------------------------------ public API

    def check(
        self, command: ElectricalPulseTrain | OpticalPulseTrain | StopAll, start: float
    ) -> Admission:
        """Check ``command`` starting at LSL time ``start`` (s); change nothing."""
        if command.device != self.device.name:
            raise _violation(
                "device.mismatch",
                "command is for another device",
                device=self.device.name,
                command_device=command.device,
            )
        floor = math.floor(start / BIN_S) - _HISTORY_BINS
        if isinstance(command, StopAll):
            return Admission(command, start, floor)
        if isinstance(command, ElectricalPulseTrain):
            if not isinstance(self.device, ElectricalDeviceConfig):
                raise _violation("device.kind", "not an electrical device", kind=command.kind)
            return self._check_electrical(command, start, floor, self.device)
        if not isinstance(self.device, OpticalDeviceConfig):
            raise _violation("device.kind", "not an optical device", kind=command.kind)
        return self._check_optical(command, start, floor, self.device)

    def commit(self, admission: Admission) -> None:
        """Record an admitted command in the usage state."""
        cmd = admission.command
        if isinstance(cmd, StopAll):
            self.stopped(admission.start)
            return
        for electrode, last_pulse, end, first, charge in admission.electrical:
            est = self._estate.get(electrode)
            if est is None:  # not setdefault: a state's ledger is 128 kB of fresh zeros
                est = self._estate[electrode] = _ElectrodeState()
            est.last_pulse, est.last_end = last_pulse, end
            est.charge.add(first, charge, admission.floor)
        for site, end, run, first, energy, on in admission.optical:
            sst = self._sstate.get(site)
            if sst is None:
                sst = self._sstate[site] = _SiteState()
            sst.last_end, sst.last_run_s = end, run
            sst.energy.add(first, energy, admission.floor)
            sst.on_time.add(first, on, admission.floor)

    def admit(
        self, command: ElectricalPulseTrain | OpticalPulseTrain | StopAll, start: float
    ) -> Admission:
        """``check`` then ``commit``: accept the command whole or raise, changing nothing."""
        admission = self.check(command, start)
        self.commit(admission)
        return admission

    def stopped(self, at: float) -> None:
        """Output was stopped at LSL time ``at``: trains end there (budgets keep counting)."""
        for est in self._estate.values():
            est.last_pulse = min(est.last_pulse, at)
            est.last_end = min(est.last_end, at)
        for sst in self._sstate.values():
            if sst.last_end > at:
                sst.last_end = at

    # ------------------------------------------------------------ electrical

    def _check_electrical(
        self, cmd: ElectricalPulseTrain, start: float, floor: int, dev: ElectricalDeviceConfig
    ) -> Admission:
        if len(cmd.electrodes) > dev.max_electrodes_per_command:
            raise _violation(
                "electrode.count",
                "too many electrodes in one command",
                n_electrodes=len(cmd.electrodes),
                limit=dev.max_electrodes_per_command,
            )
        unknown = [e for e in cmd.electrodes if e not in self._electrodes]
        if unknown:
            raise _violation(
                "electrode.unknown", "electrode not in the envelope", electrodes=unknown
            )
        if cmd.n_pulses > dev.max_pulses or cmd.duration_s > dev.max_train_s:
            raise _violation(
                "electrical.train_length",
                "pulse train too long",
                n_pulses=cmd.n_pulses,
                duration_s=cmd.duration_s,
                max_pulses=dev.max_pulses,
                max_train_s=dev.max_train_s,
            )
        q1, q2 = cmd.phase_charges_nc
        q = max(q1, q2)
        period_s = 1.0 / cmd.frequency_hz
        updates = []
        for electrode in cmd.electrodes:
            env = self._electrodes[electrode]
            self._check_pulse(cmd, electrode, env, q1, q2, period_s)
            est = self._estate.get(electrode)
            min_interval = 1.0 / env.max_rate_hz
            if est is not None and (
                start - est.last_pulse < min_interval - _EPS or start < est.last_end
            ):
                raise _violation(
                    "electrical.rate",
                    "pulses too close on one electrode",
                    electrode=electrode,
                    interval_s=start - est.last_pulse,
                    min_interval_s=min_interval,
                )
            first, charge = _pulse_bins(start, cmd.n_pulses, cmd.frequency_hz, q)
            peak = _max_window(
                None if est is None else est.charge, first, charge, round(1.0 / BIN_S), floor
            )
            budget = env.charge_budget_limit_nc_per_s
            if peak > budget + _EPS:
                raise _violation(
                    "electrical.charge_budget",
                    "charge in a 1 s window above the budget",
                    electrode=electrode,
                    charge_nc=peak,
                    budget_nc_per_s=budget,
                )
            last_pulse = start + (cmd.n_pulses - 1) * period_s
            updates.append((electrode, last_pulse, start + cmd.duration_s, first, charge))
        return Admission(cmd, start, floor, electrical=tuple(updates))

    @staticmethod
    def _check_pulse(
        cmd: ElectricalPulseTrain,
        electrode: int,
        env: ElectrodeEnvelope,
        q1: float,
        q2: float,
        period_s: float,
    ) -> None:
        amp = max(cmd.amplitudes_ua)
        if amp > env.max_amplitude_ua:
            raise _violation(
                "electrical.amplitude",
                "amplitude above the maximum",
                electrode=electrode,
                amplitude_ua=amp,
                max_amplitude_ua=env.max_amplitude_ua,
            )
        for w in cmd.widths_us:
            if not env.min_width_us <= w <= env.max_width_us:
                raise _violation(
                    "electrical.width",
                    "phase width out of range",
                    electrode=electrode,
                    width_us=w,
                    min_width_us=env.min_width_us,
                    max_width_us=env.max_width_us,
                )
        if cmd.interphase_gap_us > env.max_interphase_gap_us:
            raise _violation(
                "electrical.interphase_gap",
                "interphase gap too long",
                electrode=electrode,
                interphase_gap_us=cmd.interphase_gap_us,
                max_interphase_gap_us=env.max_interphase_gap_us,
            )
        if cmd.frequency_hz > min(env.max_frequency_hz, env.max_rate_hz) or (
            cmd.n_pulses > 1 and cmd.pulse_us * 1e-6 > period_s
        ):
            raise _violation(
                "electrical.frequency",
                "frequency above the limit or pulses overlap",
                electrode=electrode,
                frequency_hz=cmd.frequency_hz,
                max_frequency_hz=min(env.max_frequency_hz, env.max_rate_hz),
                pulse_us=cmd.pulse_us,
            )
        q = max(q1, q2)
        if q > 0 and abs(q1 - q2) / q > env.max_imbalance + _EPS:
            raise _violation(
                "electrical.charge_balance",
                "phases not charge-balanced",
                electrode=electrode,
                charges_nc=[q1, q2],
                imbalance=abs(q1 - q2) / q,
                max_imbalance=env.max_imbalance,
            )
        if env.is_micro:
            cap = env.max_charge_per_phase_nc or 4.0
            if q > cap + _EPS:
                raise _violation(
                    "electrical.charge_per_phase",
                    "charge per phase above the microelectrode cap",
                    electrode=electrode,
                    charge_nc=q,
                    max_charge_nc=cap,
                )
        else:
            if env.max_charge_per_phase_nc is not None and q > env.max_charge_per_phase_nc + _EPS:
                raise _violation(
                    "electrical.charge_per_phase",
                    "charge per phase above the cap",
                    electrode=electrode,
                    charge_nc=q,
                    max_charge_nc=env.max_charge_per_phase_nc,
                )
            if q > 0:
                q_uc = q / 1000.0
                d = q_uc / env.area_cm2
                if math.log10(d) > env.shannon_k - math.log10(q_uc) + _EPS:
                    raise _violation(
                        "electrical.shannon",
                        "Shannon criterion broken",
                        electrode=electrode,
                        charge_uc=q_uc,
                        density_uc_cm2=d,
                        k=math.log10(d) + math.log10(q_uc),
                        max_k=env.shannon_k,
                    )
        density_limit = env.charge_density_limit_uc_cm2
        density = q / 1000.0 / env.area_cm2
        if density_limit is not None and density > density_limit + _EPS:
            raise _violation(
                "electrical.charge_density",
                "charge density above the material's limit",
                electrode=electrode,
                density_uc_cm2=density,
                max_density_uc_cm2=density_limit,
                material=env.material,
            )

    # ------------------------------------------------------------ optical

    def _check_optical(
        self, cmd: OpticalPulseTrain, start: float, floor: int, dev: OpticalDeviceConfig
    ) -> Admission:
        env = self._sites.get(cmd.site)
        if env is None:
            raise _violation(
                "optical.site_unknown", "optical site not in the envelope", site=cmd.site
            )
        if (
            cmd.wavelength_nm is not None
            and env.wavelength_nm is not None
            and abs(cmd.wavelength_nm - env.wavelength_nm) > 1.0
        ):
            raise _violation(
                "optical.wavelength",
                "wavelength differs from the site's",
                site=cmd.site,
                wavelength_nm=cmd.wavelength_nm,
                site_wavelength_nm=env.wavelength_nm,
            )
        if cmd.power_mw > env.max_power_mw:
            raise _violation(
                "optical.power",
                "power above the cap",
                site=cmd.site,
                power_mw=cmd.power_mw,
                max_power_mw=env.max_power_mw,
            )
        if cmd.frequency_hz > env.max_frequency_hz:
            raise _violation(
                "optical.frequency",
                "frequency above the limit",
                site=cmd.site,
                frequency_hz=cmd.frequency_hz,
                max_frequency_hz=env.max_frequency_hz,
            )
        width_s = cmd.pulse_width_ms / 1000.0
        n = cmd.n_pulses
        if cmd.pulse_width_ms < env.min_pulse_ms or (n > 1 and width_s >= 1.0 / cmd.frequency_hz):
            raise _violation(
                "optical.pulse_width",
                "pulse width below the minimum, or pulses overlap",
                site=cmd.site,
                pulse_width_ms=cmd.pulse_width_ms,
                min_pulse_ms=env.min_pulse_ms,
                period_ms=1000.0 / cmd.frequency_hz,
            )
        if n > dev.max_pulses or cmd.duration_s > dev.max_train_s:
            raise _violation(
                "optical.train_length",
                "light train too long",
                site=cmd.site,
                n_pulses=n,
                duration_s=cmd.duration_s,
                max_pulses=dev.max_pulses,
                max_train_s=dev.max_train_s,
            )
        sst = self._sstate.get(cmd.site)
        run = width_s
        if sst is not None:
            if start < sst.last_end - _EPS:
                raise _violation(
                    "optical.busy",
                    "the site's previous train has not ended",
                    site=cmd.site,
                    start=start,
                    previous_end=sst.last_end,
                )
            gap = start - sst.last_end
            if gap < _MERGE_S and cmd.power_mw > 0:
                run = sst.last_run_s + gap + width_s
        if run * 1000.0 > env.max_on_ms + _EPS:
            raise _violation(
                "optical.on_time",
                "continuous on-time above the limit",
                site=cmd.site,
                on_ms=run * 1000.0,
                max_on_ms=env.max_on_ms,
            )
        first, on = _on_time_bins(start, n, cmd.frequency_hz, width_s)
        energy = on * cmd.power_mw
        for rule, window_s, c_per_mw in (
            ("optical.heating_1s", 1.0, env.heating_1s_c_per_mw),
            ("optical.heating_60s", 60.0, env.heating_c_per_mw),
        ):
            bins = round(window_s / BIN_S)
            peak = _max_window(None if sst is None else sst.energy, first, energy, bins, floor)
            mean_mw = peak / window_s
            if mean_mw * c_per_mw > env.max_temperature_rise_c + _EPS:
                raise _violation(
                    rule,
                    "estimated heating above the budget",
                    site=cmd.site,
                    mean_power_mw=mean_mw,
                    window_s=window_s,
                    rise_c=mean_mw * c_per_mw,
                    max_rise_c=env.max_temperature_rise_c,
                )
        bins = round(60.0 / BIN_S)
        peak_on = _max_window(None if sst is None else sst.on_time, first, on, bins, floor)
        if cmd.power_mw > 0 and peak_on / 60.0 > env.max_duty_cycle + _EPS:
            raise _violation(
                "optical.duty_cycle",
                "light on for too large a fraction of 60 s",
                site=cmd.site,
                duty_cycle=peak_on / 60.0,
                max_duty_cycle=env.max_duty_cycle,
            )
        last_run = width_s if n > 1 else run
        if cmd.power_mw == 0:
            energy_on = np.zeros_like(on)
            update = (cmd.site, start + cmd.duration_s, 0.0, first, energy, energy_on)
        else:
            update = (cmd.site, start + cmd.duration_s, last_run, first, energy, on)
        return Admission(cmd, start, floor, optical=(update,))
