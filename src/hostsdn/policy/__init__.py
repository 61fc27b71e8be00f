"""hostsdn.policy: the policy model, its YAML loader and the rule classifier.

* ``load_policy_text(text, filename)`` -> ``Policy`` (files: ``hostsdn.runtime.policyfile``) (raises ``PolicyError``
  naming file, line and field path; see ``loader`` for the format decisions).
* ``Classifier(rules).lookup(key) -> Rule | None``: highest priority, ties to the first
  rule in the file; ``LinearClassifier`` is the brute-force reference.

The loader (pydantic: its schema costs start-up time) is imported on first use of
``load_policy_text`` / ``parse_match``, not with the package: the switch and the NIC
backends need the model, not the YAML schema.
"""

from typing import TYPE_CHECKING, Any

from hostsdn.direction import Direction
from hostsdn.policy.classifier import Classifier, ClassifierStats, LinearClassifier
from hostsdn.policy.model import (
    Action,
    Allow,
    Block,
    Decap,
    DefaultAction,
    Dnat,
    Encap,
    EncapKind,
    IpInterface,
    IpPrefix,
    Layer,
    MappingEntry,
    Match,
    Meter,
    MeterUnit,
    Policy,
    Port,
    Rule,
    SetDscp,
    Snat,
    Uplink,
    VnetMap,
)

__all__ = [
    "Action", "Allow", "Block", "Classifier", "ClassifierStats", "Decap", "DefaultAction",
    "Direction", "Dnat", "Encap", "EncapKind", "IpInterface", "IpPrefix", "Layer",
    "LinearClassifier", "MappingEntry", "Match", "Meter", "MeterUnit", "Policy", "Port",
    "Rule", "SetDscp", "Snat", "Uplink", "VnetMap", "load_policy_text",
    "parse_match",
]

if TYPE_CHECKING:
    from hostsdn.policy.loader import load_policy_text, parse_match


def __getattr__(name: str) -> Any:
    if name in ("load_policy_text", "parse_match"):
        from hostsdn.policy import loader

        return getattr(loader, name)
    raise AttributeError(f"module 'hostsdn.policy' has no attribute {name!r}")
