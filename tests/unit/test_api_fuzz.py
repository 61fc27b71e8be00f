"""Fuzz the management API from its own OpenAPI document (schemathesis): valid and
invalid requests of every operation, against an in-process switch.  Every answer must
match the document (status, content type, schema), no request may produce a 5xx, and
the switch must go on forwarding the same way afterwards."""

from __future__ import annotations

import warnings
from pathlib import Path

import pytest
from hypothesis import HealthCheck, settings

from api_fixtures import Rig, make_rig
from hostsdn.api.app import create_app
from hostsdn.api.server import BodyLimit

with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    import schemathesis
    from schemathesis.specs.openapi.checks import positive_data_acceptance

_RIG: Rig = make_rig(Path(__import__("tempfile").mkdtemp(prefix="hsdn-fuzz-")))
APP = BodyLimit(create_app(_RIG.board), 1 << 16)
schema = schemathesis.openapi.from_asgi("/openapi.json", APP)


@schema.parametrize()
@settings(max_examples=25, deadline=None,
          suppress_health_check=list(HealthCheck))
def test_api_conforms_to_its_document(case: schemathesis.Case) -> None:
    excluded = []
    if (case.method, case.path) == ("PUT", "/v1/policy"):
        # any string is a schema-valid body; whether it is a valid *policy* is the policy
        # loader's call (422, documented), not the schema's
        excluded.append(positive_data_acceptance)
    case.call_and_validate(excluded_checks=excluded)


def test_the_switch_still_forwards_the_same_after_fuzzing(tmp_path: Path) -> None:
    """Whatever the fuzzer sent, the policy stayed what the file says and forwarding
    matches a fresh switch's (nothing half-applied)."""
    from api_fixtures import EXAMPLE_TRACE
    from hostsdn.runtime.pcap import read_frames
    from hostsdn.runtime.replay import classify_port

    fresh = make_rig(tmp_path, frames=0)
    pol = _RIG.dp.switch.policy
    assert _RIG.policy_file.read_text() == fresh.policy_file.read_text() or \
        _RIG.board.reloader is not None and _RIG.board.reloader.outcomes["applied"] > 0
    by_mac = {p.mac: p.name for p in pol.ports}
    frames = read_frames(EXAMPLE_TRACE)
    t0 = _RIG.now + 1000.0          # long after: every connection of the first run expired
    for tf in frames:
        port = classify_port(tf.data, by_mac)
        a = _RIG.dp.receive(tf.data, port, t0 + tf.time)
        b = fresh.dp.receive(tf.data, port, tf.time)
        assert (a.outputs, a.drops) == (b.outputs, b.drops), tf.index


pytestmark = pytest.mark.filterwarnings("ignore")
