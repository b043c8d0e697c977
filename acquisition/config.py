"""Config models of the acquisition hot path (``acquisition:`` section of a config file).

Sections: ``inlet`` (LSL input), ``filter`` (causal band-pass and reference),
``detection`` (threshold detector), ``sorter`` (online template sorter), ``spike_outlet``.
Units are in the field names: ``_hz`` hertz, ``_ms`` milliseconds, ``_s`` seconds,
``_um`` micrometres, ``_uv`` microvolts.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BeforeValidator, Field, model_validator

from bci.schema import StrictModel

OverflowPolicy = Literal["drop_oldest", "drop_newest", "block"]


def _default_kind(kind: str) -> BeforeValidator:
    """Let a section omit ``kind`` (the family's default method is meant)."""

    def fill(value: Any) -> Any:
        if isinstance(value, dict) and "kind" not in value:
            return {"kind": kind, **value}
        return value

    return BeforeValidator(fill)


class FilterConfig(StrictModel):
    """Causal Butterworth band-pass per channel, then an optional common reference.

    ``high_hz`` of ``None`` gives a high-pass only. ``reference`` subtracts, at every
    sample, the mean (``"average"``) or median (``"median"``) over all channels.
    """

    low_hz: float = Field(300.0, gt=0)
    high_hz: float | None = Field(6000.0, gt=0)
    order: int = Field(3, ge=1, le=8, description="Butterworth order per band edge")
    reference: Literal["none", "average", "median"] = "none"

    @model_validator(mode="after")
    def _band(self) -> FilterConfig:
        if self.high_hz is not None and self.high_hz <= self.low_hz:
            raise ValueError(f"high_hz ({self.high_hz}) must exceed low_hz ({self.low_hz})")
        return self


class ThresholdDetectorConfig(StrictModel):
    """Locally exclusive threshold detection on filtered data.

    A sample is a spike when it crosses ``threshold`` times the channel's noise (MAD of
    the filtered signal, tracked online) with the given ``polarity`` and is the largest
    such value within ``exclusion_ms`` in time and ``radius_um`` in space; for
    ``shadow_ms`` after a peak (from ``shadow_start_ms`` on), smaller crossings (below
    ``shadow_fraction`` of it) on its neighbourhood are taken for its after-lobes and
    dropped. Snippets of ``snippet_pre_ms`` + ``snippet_post_ms`` are cut on all electrodes within
    ``snippet_radius_um`` of the peak electrode. Weak peaks (between ``weak_threshold``
    and ``threshold``, and the shadowed peaks above ``weak_shadow_fraction`` of theirs) are passed
    on flagged, for the sorter to keep only those that match a template. So are broad
    peaks (``max_shoulder``): the mean of the values ``shoulder_ms`` either side is more
    than that fraction of the peak, a slow hump such as the filter's after-lobe of a
    large spike rather than the sharp trough of a spike.
    """

    kind: Literal["threshold"] = "threshold"
    threshold: float = Field(5.0, gt=0, description="multiple of the MAD noise")
    polarity: Literal["neg", "pos", "both"] = "neg"
    radius_um: float = Field(50.0, ge=0, description="spatial exclusion radius")
    exclusion_ms: float = Field(0.4, gt=0, description="temporal exclusion half-width")
    shadow_ms: float = Field(2.5, ge=0, description="after-lobe suppression window (0: off)")
    shadow_start_ms: float = Field(
        0.0, ge=0, description="the window starts this long after the peak"
    )
    shadow_fraction: float = Field(0.5, ge=0, le=1, description="of the peak's value")
    shadow_radius_um: float = Field(50.0, ge=0, description="after-lobe suppression radius")
    weak_threshold: float = Field(
        0.0, ge=0, description="x MAD: weak peaks from here to threshold, to confirm (0: off)"
    )
    weak_shadow_fraction: float | None = Field(
        None,
        ge=0,
        le=1,
        description="pass on as weak the peaks the shadow hides that reach this "
        "fraction of the big peak (below shadow_fraction; None: none)",
    )
    shoulder_ms: float = Field(
        0.2, gt=0, description="a peak's shoulders: its value this long before and after it"
    )
    max_shoulder: float = Field(
        0.0,
        ge=0,
        description="a peak whose shoulders average above this fraction of it is broad "
        "(an after-lobe, not a spike): weak when weak peaks are on, else dropped (0: off)",
    )
    residual_mask: Literal["near", "unpeeled"] = Field(
        "near",
        description="where the residual pass (sorter.residual_pass) ignores its peaks "
        "within the exclusion window of a first-pass peak: 'near', within radius_um + "
        "snippet_radius_um of it; 'unpeeled', only where that spike's template is not "
        "peeled off (its own electrode, and beyond snippet_radius_um up to radius_um + "
        "snippet_radius_um), so that a neighbour it hid is found",
    )
    residual_retry: bool = Field(
        False,
        description="the residual pass (sorter.residual_pass) looks again where the sorter "
        "rejected a weak first-pass peak: it was judged with only the spikes before it "
        "peeled off, the residual pass sees it with the later ones peeled too",
    )
    snippet_pre_ms: float = Field(0.6, ge=0)
    snippet_post_ms: float = Field(1.0, gt=0)
    snippet_radius_um: float = Field(60.0, ge=0)
    noise_warmup_s: float = Field(0.5, gt=0, description="data used for the first noise estimate")
    noise_tau_s: float = Field(10.0, gt=0, description="time constant of the online MAD tracker")
    adapt_noise: bool = True


#: The detector family (add a method: one model here, one file in ``detection/``).
DetectorConfig = Annotated[
    ThresholdDetectorConfig, Field(discriminator="kind"), _default_kind("threshold")
]


class TemplateSorterConfig(StrictModel):
    """Online template sorter: learn templates, then assign every spike as it comes.

    During ``learning_s`` snippets are collected; then PCA (``n_components``) and
    clustering per electrode build templates. Afterwards each spike goes to the closest
    template among units near its peak electrode when the residual is below
    ``match_threshold`` (in noise units per sample) or its energy is below
    ``match_relative`` of the snippet's; templates follow drift with rate
    ``drift_alpha``; at least ``new_unit_min_spikes`` unmatched waveforms of one shape
    found a new unit (checked every ``recluster_every_s``). Overlapping spikes: the
    templates of spikes already assigned are peeled off a snippet before it is matched,
    and a snippet that fits no single template (residual above ``pair_score``) is fitted
    as two overlapping spikes; the second is reported as a spike of its own when the
    detector could not have (within ``hidden_max_ms`` and ``hidden_radius_um`` of the
    detected one, smaller, and the pair fits to ``hidden_max_score``). A unit found
    with a trough below ``weak_unit_snr`` and a rate below ``weak_unit_rate_hz``, or
    with a trough below ``weak_unit_floor_snr`` at any rate, is kept as a sink whose
    spikes stay unassigned. At each reclustering a sink of the first kind that has been
    matched at ``weak_unit_rate_hz`` since it was found is reported from then on, and a
    unit whose tracked trough has fallen below ``weak_unit_floor_snr`` becomes a sink.
    """

    kind: Literal["template"] = "template"
    learning_s: float = Field(30.0, gt=0)
    n_components: int = Field(6, ge=1, le=32)
    max_learning_spikes: int = Field(200_000, ge=100)
    min_cluster_spikes: int = Field(12, ge=3, description="spikes in the smallest cluster")
    merge_threshold: float = Field(
        0.3, gt=0, description="templates closer than this (relative L2) are merged"
    )
    merge_max_rms: float | None = Field(
        None,
        gt=0,
        description="... but only when they also differ by at most this RMS (noise units; "
        "None: no bound): large units alike in shape are relatively close yet far apart",
    )
    merge_noise_factor: float = Field(
        0.0, ge=0, description="also merge when closer than this x the estimation noise"
    )
    whiten_clustering: bool = Field(
        False, description="cluster again with the noise decorrelated across electrodes"
    )
    match_threshold: float = Field(4.0, gt=0, description="max RMS residual, in noise units")
    match_relative: float = Field(
        0.5, ge=0, lt=1, description="or: max residual energy / snippet energy (big spikes)"
    )
    match_max_shift: int = Field(1, ge=0, le=5, description="lags tried, samples")
    pair_score: float = Field(
        1.3, gt=0, description="above this RMS residual (noise units) look for an overlap"
    )
    pair_gain: float = Field(
        25.0, ge=0, description="energy (noise units squared) a second spike must explain"
    )
    hidden_max_ms: float = Field(
        0.7,
        ge=0,
        description="report the second spike of an overlap this close (ms) to the "
        "detected one (0: never); past the detector's exclusion_ms too, since a smaller "
        "spike on a bigger one's flank is often not detected (or left unmatched) on its "
        "own: a spike found both ways is reported once",
    )
    hidden_radius_um: float = Field(
        70.0,
        ge=0,
        description="... and whose unit lies this close to the detected spike's electrode (µm)",
    )
    hidden_max_score: float = Field(
        1.15,
        gt=0,
        description="max RMS residual (noise units) of the two-spike fit for "
        "the second spike to be reported",
    )
    residual_pass: bool = Field(
        False,
        description="after each chunk, detect again with the labelled spikes' templates "
        "subtracted (spikes hidden under bigger ones), keeping what a unit confirms",
    )
    confirm_max_score: float = Field(
        1.2,
        gt=0,
        description="a weak detection is kept when its RMS residual (noise "
        "units) is at most this ...",
    )
    confirm_min_gain: float = Field(
        0.5,
        description="... and the template removes at least this fraction of its own energy "
        "(noise units squared) from the snippet",
    )
    residual_confirm_max_score: float | None = Field(
        None,
        gt=0,
        description="confirm_max_score for the residual pass's peaks (None: the same). "
        "They are found once the labelled spikes are peeled off, so a bigger neighbour's "
        "spike is no longer there to fake one: a looser fit may do",
    )
    residual_confirm_min_gain: float | None = Field(
        None, description="confirm_min_gain for the residual pass's peaks (None: the same)"
    )
    echo_max_snr: float | None = Field(
        None,
        ge=0,
        description="a detection whose peak keeps less than this many noise units once "
        "the templates of the spikes before it are peeled off is dropped: it was their "
        "tail (a big spike's late lobe crossing the threshold: the templates must reach "
        "it, see detection.snippet_post_ms); None: no such test",
    )
    match_min_gain: float | None = Field(
        None,
        description="a detection is given its best unit only when the template takes at "
        "least this fraction of its own energy out of the snippet (1 for an exact match, "
        "-1 for noise; None: no such test)",
    )
    track_min_gain: float | None = Field(
        None,
        description="a matched spike pulls its unit's template (drift tracking) only when "
        "the template takes at least this fraction of its own energy out of it: a faint "
        "unit matched to noise crossings would else shrink toward them (None: all pull)",
    )
    weak_unit_snr: float = Field(
        6.0, ge=0, description="trough / noise (µV / µV) below which a unit may be weak"
    )
    weak_unit_rate_hz: float = Field(
        1.2,
        ge=0,
        description="a unit below weak_unit_snr firing less than this (Hz) when "
        "found is kept as a sink but its spikes are reported unassigned (until it has "
        "been matched at this rate)",
    )
    weak_unit_floor_snr: float = Field(
        3.5,
        ge=0,
        description="trough / noise (µV / µV) below which a unit, when found or as "
        "tracked at any later reclustering, is a sink for good at any rate: its spikes "
        "are mostly noise that crossed the detection threshold",
    )
    drift_alpha: float = Field(
        0.05, ge=0, le=1, description="fraction of the way a template moves toward each match"
    )
    drift_clip: float = Field(
        1e6,
        gt=0,
        description="per sample, a match pulls its template at most this far "
        "(noise units) before drift_alpha scales it",
    )
    drift_tau_s: float = Field(
        0.0,
        ge=0,
        description="time constant of template tracking: a unit firing at r Hz moves "
        "min(drift_alpha, 1 / (r * drift_tau_s)) per spike (0: drift_alpha for all)",
    )
    new_unit_min_spikes: int = Field(50, ge=5)
    recluster_every_s: float = Field(10.0, gt=0)
    max_unmatched: int = Field(20_000, ge=100)
    unmatched_window_s: float = Field(
        0.0,
        ge=0,
        description="a new unit may gather its spikes over this long (s): the unmatched "
        "spikes are kept this long across reclusterings (0: each sees only its own period)",
    )
    seed: int = 0


#: The sorter family (add a method: one model here, one file in ``sorting/``).
SorterConfig = Annotated[
    TemplateSorterConfig, Field(discriminator="kind"), _default_kind("template")
]


class InletConfig(StrictModel):
    """Where the raw stream comes from and what it must look like.

    The stream is resolved by ``source_id``, ``name`` or ``type`` (the first given, in
    that order; ``type`` defaults to EEG for resolving by type alone, and narrows a
    match by source id or name only when set explicitly). ``n_channels`` /
    ``sample_rate_hz`` (when set) must match the stream.
    ``counter_channel`` names a channel carrying the absolute sample index (float32,
    exact below 2**24) used for exact gap and duplicate detection; otherwise
    timestamps are used: a step between consecutive timestamps of more than
    ``gap_tolerance_samples`` sample periods is a gap of ``round(step) - 1`` samples.
    """

    source_id: str | None = None
    name: str | None = None
    type: str | None = "EEG"
    resolve_timeout_s: float = Field(5.0, gt=0)
    n_channels: int | None = Field(None, ge=1)
    sample_rate_hz: float | None = Field(None, gt=0)
    counter_channel: int | None = Field(None, ge=0)
    max_chunk_samples: int = Field(1024, ge=1)
    pull_timeout_s: float = Field(0.005, ge=0)
    stall_timeout_s: float = Field(1.0, gt=0)
    gap_tolerance_samples: float = Field(
        1.5, ge=1.0, description="a timestamp step above this many samples is a gap"
    )
    max_buffer_s: int = Field(10, ge=1)
    queue_size: int = Field(1024, ge=1)
    overflow: OverflowPolicy = "drop_oldest"

    @model_validator(mode="after")
    def _something(self) -> InletConfig:
        if self.source_id is None and self.name is None and self.type is None:
            raise ValueError("give at least one of source_id, name or type")
        return self


class SpikeOutletConfig(StrictModel):
    """The LSL stream of sorted spikes (irregular rate, 4 float64 channels:
    sample, channel, unit, amplitude µV)."""

    enabled: bool = True
    name: str = "bci-spikes"
    type: str = "Markers"


class AcquisitionConfig(StrictModel):
    """The ``acquisition:`` section: inlet, filter, detection, sorter and spike outlet."""

    inlet: InletConfig = InletConfig()
    filter: FilterConfig = FilterConfig()
    detection: DetectorConfig = ThresholdDetectorConfig()
    sorter: SorterConfig = TemplateSorterConfig()
    spike_outlet: SpikeOutletConfig = SpikeOutletConfig()
    chunk_ms: float = Field(1.0, gt=0, description="chunk size for offline runs")
