"""The session report of a closed-loop run: figures as PNG and a small HTML page.

Figures: spike raster with stimulation marks, firing rate versus setpoint, unit
waveforms, readout weights over time, and the latency histogram per stage. Also a
``summary.json`` with the figures' numbers, for scripts.
"""

from __future__ import annotations

import html
import json
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np

from bci.loop import STAGES
from bci.runtime import Runtime
from stimulators.policies.rate_clamp import RateClampPolicy


def _save(fig: Any, path: Path) -> str:
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path.name


def _raster(rt: Runtime, out: Path) -> str | None:
    hot = rt.hot
    if hot is None:
        return None
    spikes = hot.raster
    rate = hot.acquisition.sample_rate
    t0 = hot.stats.first_sample or 0
    fig, ax = plt.subplots(figsize=(11, 4.5))
    if len(spikes):
        t = (spikes["sample"] - t0) / rate
        units = spikes["unit"]
        sorted_mask = units >= 0
        ax.scatter(
            t[~sorted_mask],
            spikes["channel"][~sorted_mask] * 0 - 1,
            s=1,
            c="0.7",
            label="unsorted (learning)",
        )
        ax.scatter(
            t[sorted_mask],
            units[sorted_mask],
            s=2,
            c=units[sorted_mask] % 10,
            cmap="tab10",
            label="sorted spikes",
        )
    # stimulation: one strip of ticks per device above the units, so dense trains
    # do not hide the spikes
    top = int(spikes["unit"].max()) + 2 if len(spikes) else 1
    by_device: dict[str, list[float]] = {}
    for tr in rt.tracer.traces():
        if tr.status == "executed":
            sample = tr.start_sample if tr.start_sample is not None else tr.cause_sample
            by_device.setdefault(tr.device, []).append((sample - t0) / rate)
    for k, (device, times) in enumerate(sorted(by_device.items())):
        row = top + 1.5 * k
        ax.vlines(
            times,
            row - 0.6,
            row + 0.6,
            color=f"C{k + 3}",
            lw=0.8,
            label=f"stimulation: {device} ({len(times)})",
        )
    ax.set_xlabel("time (s)")
    ax.set_ylabel("unit (-1: before sorting); stimulation above")
    ax.set_title("Spike raster with stimulation marks")
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8, markerscale=4)
    return _save(fig, out / "raster.png")


def _rates(rt: Runtime, out: Path) -> str | None:
    hot = rt.hot
    if hot is None:
        return None
    clamps = [p for p in hot.policies if isinstance(p, RateClampPolicy) and p.history]
    if not clamps:
        return None
    rate = hot.acquisition.sample_rate
    t0 = hot.stats.first_sample or 0
    fig, axes = plt.subplots(2, 1, figsize=(11, 5), sharex=True)
    for policy in clamps:
        hist = np.array(policy.history)
        t = (hist[:, 0] - t0) / rate
        axes[0].plot(t, hist[:, 1], label=f"measured rate ({policy.params.device})")
        axes[0].axhline(policy.params.setpoint_hz, ls="--", color="k", label="setpoint")
        axes[0].axhspan(
            0.9 * policy.params.setpoint_hz,
            1.1 * policy.params.setpoint_hz,
            color="k",
            alpha=0.07,
            label="±10 %",
        )
        axes[1].plot(t, hist[:, 2], color="C3", label=policy.params.actuator)
    axes[0].set_ylabel("rate (Hz)")
    axes[0].legend(fontsize=8)
    axes[0].set_title("Firing rate versus setpoint (rate clamp)")
    axes[1].set_ylabel("controller output")
    axes[1].set_xlabel("time (s)")
    axes[1].legend(fontsize=8)
    return _save(fig, out / "rate_clamp.png")


def _waveforms(rt: Runtime, out: Path) -> str | None:
    hot = rt.hot
    sorter = None if hot is None else hot.acquisition.sorter
    templates = getattr(sorter, "templates", None)
    if templates is None or len(templates) == 0 or hot is None:
        return None
    n = min(len(templates), 24)
    cols = 6
    rows = (n + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(11, 1.8 * rows), squeeze=False)
    ms = np.arange(templates.shape[1]) / hot.acquisition.sample_rate * 1000.0
    for k in range(rows * cols):
        ax = axes[k // cols][k % cols]
        ax.axis("off")
        if k >= n:
            continue
        tpl = templates[k]
        main = int(np.argmin(tpl.min(axis=0)))
        ax.plot(ms, tpl[:, main], color=f"C{k % 10}")
        ax.set_title(f"unit {k} (e{main}) {tpl[:, main].min():.0f} µV", fontsize=7)
    fig.suptitle("Unit waveforms (template on the peak electrode, filtered µV)")
    return _save(fig, out / "waveforms.png")


def _weights(rt: Runtime, out: Path) -> str | None:
    hot = rt.hot
    if hot is None or not hot.weights:
        return None
    rate = hot.acquisition.sample_rate
    t0 = hot.stats.first_sample or 0
    t = np.array([(s - t0) / rate for s, _ in hot.weights])
    w = np.stack([w for _, w in hot.weights])  # (time, pre, post)
    fig, axes = plt.subplots(1, 2, figsize=(11, 3.8), gridspec_kw={"width_ratios": [2, 1]})
    flat = w.reshape(len(t), -1)
    for k in range(min(flat.shape[1], 40)):
        axes[0].plot(t, flat[:, k], lw=0.8)
    axes[0].set_xlabel("time (s)")
    axes[0].set_ylabel("weight")
    axes[0].set_title("Plastic readout weights over time")
    im = axes[1].imshow(w[-1].T, aspect="auto", cmap="viridis")
    axes[1].set_xlabel("input unit")
    axes[1].set_ylabel("output neuron")
    axes[1].set_title("Final weights")
    fig.colorbar(im, ax=axes[1])
    return _save(fig, out / "weights.png")


def _latency(rt: Runtime, out: Path) -> str | None:
    stages = rt.tracer.stage_arrays()
    if stages["total"].size == 0:
        return None
    fig, axes = plt.subplots(1, len(STAGES), figsize=(13, 3))
    for ax, stage in zip(axes, STAGES, strict=True):
        values = stages[stage]
        ax.hist(values, bins=30, color="C0" if stage != "total" else "C3")
        ax.set_title(f"{stage}\nmedian {np.median(values):.2f} ms", fontsize=9)
        ax.set_xlabel("ms")
    axes[0].set_ylabel("commands")
    fig.suptitle("Latency from spike to driver receipt, by stage")
    return _save(fig, out / "latency.png")


def write_report(rt: Runtime, health: dict[str, Any], out: Path, title: str) -> Path:
    """Write the figures, ``summary.json`` and ``index.html`` into ``out``."""
    out.mkdir(parents=True, exist_ok=True)
    figures = [
        ("Spike raster and stimulation", _raster(rt, out)),
        ("Rate clamp", _rates(rt, out)),
        ("Unit waveforms", _waveforms(rt, out)),
        ("Readout weights", _weights(rt, out)),
        ("Latency", _latency(rt, out)),
    ]
    summary = summarise(rt, health)
    (out / "summary.json").write_text(json.dumps(summary, indent=2, default=str))
    rows = "".join(
        f"<tr><th>{html.escape(k)}</th><td>{html.escape(json.dumps(v, default=str))}</td></tr>"
        for k, v in summary.items()
    )
    imgs = "".join(
        f"<h2>{html.escape(name)}</h2><img src='{file}' alt='{html.escape(name)}'>"
        for name, file in figures
        if file is not None
    )
    page = (
        "<!doctype html><html><head><meta charset='utf-8'>"
        f"<title>{html.escape(title)}</title>"
        "<style>body{font-family:sans-serif;max-width:1200px;margin:auto}"
        "img{max-width:100%}td,th{text-align:left;padding:2px 8px;font-size:13px}</style>"
        f"</head><body><h1>{html.escape(title)}</h1><table>{rows}</table>{imgs}</body></html>"
    )
    index = out / "index.html"
    index.write_text(page, encoding="utf-8")
    return index


def summarise(rt: Runtime, health: dict[str, Any]) -> dict[str, Any]:
    """The run's figures: counts, rates, stimulation outcomes, latency percentiles."""
    hot = rt.hot
    out: dict[str, Any] = {"rig": rt.config.rig}
    if hot is not None:
        rate = hot.acquisition.sample_rate
        out["seconds"] = round(hot.stats.samples / rate, 3)
        out["spikes"] = hot.stats.spikes
        out.update(hot.status())
        out["stale_chunks"] = hot.stats.stale_chunks
        out["policies"] = {p.kind: p.status() for p in hot.policies}
        proc = np.array(hot.stats.processing_s) * 1e3
        if proc.size:
            out["chunk_processing_ms"] = {
                "median": float(np.median(proc)),
                "p99": float(np.percentile(proc, 99)),
            }
    out["acks"] = dict(rt.tracer.status_counts)
    out["rejected_by_controller_envelope"] = rt.tracer.rejected_by_envelope
    out["latency_ms"] = rt.tracer.summary()
    faults = list(rt.inlet_faults)  # the loop has stopped: nothing appends any more
    out["inlet_faults"] = [f"{f.kind}@{f.sample}:{f.count}" for f in faults][:50]
    out["services"] = health
    return out
