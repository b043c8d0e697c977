"""Closed-loop decoder adaptation settings: SmoothBatch and recursive maximum likelihood.

Both are set by a half-life: how long until old data carry half the weight.

* ``smoothbatch`` (Orsborn et al. 2012): every ``batch_s`` fit the decoder to the last
  batch alone and blend, ``params = α old + (1 - α) batch_fit``,
  ``α = 0.5 ** (batch_s / half_life_s)``.
* ``rml`` (Dangi et al. 2014): sufficient statistics decayed every bin by
  ``λ = 0.5 ** (bin_s / half_life_s)``; the decoder is refit from them every
  ``update_every_bins`` bins.

``intention`` says where the training labels come from: ``given`` (the task knows the
intended kinematics) or ``refit`` (ReFIT-style, Gilja et al. 2012: the decoded
velocity rotated to point at the target, zero inside ``target_radius``).
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field

from bci.schema import StrictModel


class NoAdaptationParams(StrictModel):
    """A fixed decoder."""

    kind: Literal["none"] = "none"


class _Adaptive(StrictModel):
    half_life_s: float = Field(30.0, gt=0, description="half-life of old data, s")
    intention: Literal["given", "refit"] = "given"
    target_radius: float = Field(0.0, ge=0, description="ReFIT: zero velocity within, task units")


class SmoothBatchParams(_Adaptive):
    """SmoothBatch: blend in a batch fit every ``batch_s``."""

    kind: Literal["smoothbatch"] = "smoothbatch"
    batch_s: float = Field(10.0, gt=0)


class RmlParams(_Adaptive):
    """Recursive maximum likelihood: forgetting sufficient statistics, refit every few bins."""

    kind: Literal["rml"] = "rml"
    update_every_bins: int = Field(1, ge=1)
    warmup_s: float = Field(2.0, ge=0, description="labelled data before the first refit")


AdaptationParams = Annotated[
    NoAdaptationParams | SmoothBatchParams | RmlParams, Field(discriminator="kind")
]
