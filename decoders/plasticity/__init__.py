"""Online plasticity rules: a registry of one file per rule.

To add a rule: write ``myrule.py`` with a ``Params`` model (``kind: Literal[...]``) and a
:class:`~decoders.plasticity.base.PlasticityRule` subclass whose kernel is a numba
function, then add the class to ``_RULES`` and its params to ``PlasticityParams``.
"""

from __future__ import annotations

from typing import Annotated

from pydantic import Field

from bci.errors import UnknownKindError
from decoders.devices import SynapseDevice
from decoders.plasticity.base import PlasticityRule, unit_spikes
from decoders.plasticity.bcm import Bcm, BcmParams
from decoders.plasticity.homeostatic import HomeostaticParams, HomeostaticScaling
from decoders.plasticity.pair_stdp import PairStdp, PairStdpParams
from decoders.plasticity.rate import RateRule, RateRuleParams
from decoders.plasticity.triplet_stdp import TripletStdp, TripletStdpParams

_RULES: tuple[type[PlasticityRule], ...] = (
    PairStdp,
    TripletStdp,
    RateRule,
    Bcm,
    HomeostaticScaling,
)

RULES: dict[str, type[PlasticityRule]] = {r.kind: r for r in _RULES}

#: The config union of every rule's parameters, discriminated on ``kind``.
PlasticityParams = Annotated[
    PairStdpParams | TripletStdpParams | RateRuleParams | BcmParams | HomeostaticParams,
    Field(discriminator="kind"),
]


def rule_class(kind: str) -> type[PlasticityRule]:
    """The plasticity rule registered under ``kind``."""
    try:
        return RULES[kind]
    except KeyError:
        raise UnknownKindError(
            f"unknown plasticity rule {kind!r}; known: {sorted(RULES)}", kind=kind
        ) from None


def make_rule(
    params: PairStdpParams | TripletStdpParams | RateRuleParams | BcmParams | HomeostaticParams,
    n_pre: int,
    n_post: int,
    device: SynapseDevice,
    sample_rate: float,
) -> PlasticityRule:
    """Build the rule that ``params.kind`` names, acting on ``device``."""
    return rule_class(params.kind)(params, n_pre, n_post, device, sample_rate)


__all__ = [
    "RULES",
    "PlasticityParams",
    "PlasticityRule",
    "make_rule",
    "rule_class",
    "unit_spikes",
]
