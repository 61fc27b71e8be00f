"""The one Direction (hostsdn/direction.py)."""

from __future__ import annotations

from hostsdn import direction
from hostsdn.direction import Direction
from hostsdn.flows import table
from hostsdn.offload import backend
from hostsdn.policy import model


def test_every_layer_shares_the_one_direction():
    assert table.Direction is model.Direction is backend.Direction is Direction
    assert direction.Direction is Direction


def test_policy_words_and_reverse():
    assert [d.policy_key for d in Direction] == ["outbound", "inbound"]
    assert [d.value for d in Direction] == ["out", "in"]
    assert Direction.OUT.reverse is Direction.IN and Direction.IN.reverse is Direction.OUT
