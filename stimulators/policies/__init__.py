"""Closed-loop policies: a registry of one file per policy.

To add one: write ``mypolicy.py`` with a params model (``kind: Literal["mypolicy"]``)
and a :class:`~stimulators.policies.base.Policy` subclass, then add the pair to
``_POLICIES`` and its params to :data:`PolicyParams`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated

from pydantic import Field

from bci.errors import UnknownKindError
from stimulators.policies.base import AnyStimCommand, CommandTemplate, Policy
from stimulators.policies.decoder_driven import DecoderDrivenParams, DecoderDrivenPolicy
from stimulators.policies.rate_clamp import RateClampParams, RateClampPolicy
from stimulators.policies.spike_triggered import SpikeTriggeredParams, SpikeTriggeredPolicy

_POLICIES: dict[str, Callable[..., Policy]] = {
    "spike_triggered": SpikeTriggeredPolicy,
    "rate_clamp": RateClampPolicy,
    "decoder_driven": DecoderDrivenPolicy,
}

PolicyParams = Annotated[
    SpikeTriggeredParams | RateClampParams | DecoderDrivenParams, Field(discriminator="kind")
]


def make_policy(
    params: SpikeTriggeredParams | RateClampParams | DecoderDrivenParams,
    rig: str,
    sample_rate: float,
) -> Policy:
    """The policy a params model describes."""
    try:
        cls = _POLICIES[params.kind]
    except KeyError:
        raise UnknownKindError(
            f"unknown policy {params.kind!r}; known: {sorted(_POLICIES)}"
        ) from None
    return cls(params, rig, sample_rate)


__all__ = ["AnyStimCommand", "CommandTemplate", "Policy", "PolicyParams", "make_policy"]
