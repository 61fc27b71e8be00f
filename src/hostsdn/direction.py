"""The one ``Direction`` of the package: which side of a VM port a packet travels.

Used by the policy (a layer's ``outbound`` / ``inbound`` rule lists), the flow tables
(outgoing / incoming), the offload interface (the NIC's two caches) and the XDP maps.
It sits at the bottom of the import order (beside ``errors``) so every layer shares it.
"""

from __future__ import annotations

from enum import StrEnum


class Direction(StrEnum):
    """``OUT``: sent by the VM (its outgoing rule set, flow table and NIC cache).
    ``IN``: towards the VM (incoming rule set, flow table and NIC cache)."""

    OUT = "out"
    IN = "in"

    @property
    def policy_key(self) -> str:
        """The word the policy uses for this direction's rule list (the YAML key and the
        middle part of a rule label, ``acl/outbound/0``)."""
        return "outbound" if self is Direction.OUT else "inbound"

    @property
    def reverse(self) -> Direction:
        """The other direction (the direction of a reply)."""
        return Direction.IN if self is Direction.OUT else Direction.OUT
