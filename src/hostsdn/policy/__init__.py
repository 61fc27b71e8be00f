"""hostsdn.policy: the policy model, its YAML loader and the rule classifier.

* ``load_policy_text(text, filename)`` -> ``Policy`` (files: ``hostsdn.runtime.policyfile``) (raises ``PolicyError``
  naming file, line and field path; see ``loader`` for the format decisions).
* ``Classifier(rules).lookup(key) -> Rule | None``: highest priority, ties to the first
  rule in the file; ``LinearClassifier`` is the brute-force reference.
"""

from hostsdn.direction import Direction
from hostsdn.policy.classifier import Classifier, ClassifierStats, LinearClassifier
from hostsdn.policy.loader import load_policy_text, parse_match
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
