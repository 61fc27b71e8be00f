"""The katran-style packet table (tests/xdp_cases.py) run through simnic: no root needed.

The same rows the kernel tests run through the XDP program with BPF_PROG_TEST_RUN: the
model NIC must forward the same bytes to the same port, drop what the program drops, and
hand to the host what the program passes (except the rows tagged ``XDP_LIMIT``: frames
the program leaves to the host by its own limits; simnic may process those, and then
exactly as the host's reference ``apply_transposition`` would).
"""

from __future__ import annotations

import pytest

from hostsdn.direction import Direction
from hostsdn.errors import PacketError
from hostsdn.flows.keys import normalize
from hostsdn.flows.table import DropReason
from hostsdn.nic.simnic import SimNic
from hostsdn.offload.backend import FlowOp, NicEntry, OpKind
from hostsdn.packet import apply_transposition, flow_key
from hostsdn.policy.loader import load_policy_text
from xdp_cases import CASES, PORTS, UPLINK, XDP_LIMIT, Case, FlowSpec

NAMES = {pid: "uplink" if pid == UPLINK else f"vm{pid}" for pid in PORTS}


def _policy():
    ports = "\n".join(f'  - {{name: {NAMES[pid]}, mac: "{mac.hex(":")}"}}'
                      for pid, (_, mac, _) in PORTS.items() if pid != UPLINK)
    uplink_mac = PORTS[UPLINK][1].hex(":")
    return load_policy_text(f"""\
version: 1
uplink: {{mac: "{uplink_mac}", ip: 203.0.113.1, gateway_mac: "02:00:00:00:00:fe"}}
ports:
{ports}
""", "xdp-cases.yaml")


POLICY = _policy()


def _entry(spec: FlowSpec, case: Case) -> NicEntry:
    """The NicEntry the offload manager would make for the row's flow."""
    dest = NAMES.get(spec.dest, f"port{spec.dest}") if spec.dest is not None else ""
    if spec.direction == "in":
        # an incoming entry belongs to the port it delivers to; a dropping one to the port
        # the row's outgoing entry sends to (or VM1)
        local = [NAMES[f.dest] for f in case.flows if f.direction == "out" and f.dest]
        port = dest or (local[0] if local else NAMES[1])
        return NicEntry(Direction.IN, port, spec.key, spec.t, drop=spec.drop,
                        drop_reason=DropReason.BLOCKED if spec.drop else None, dest=dest,
                        tcp_flags_to_host=spec.tcp_flags_to_host, max_len=spec.max_len)
    next_key = None
    if dest not in ("", "uplink"):
        # a local delivery: the key the frame has after this entry (its in-cache key)
        try:
            next_key = normalize(flow_key(apply_transposition(case.frame, spec.t)))
        except PacketError:
            next_key = None
    assert spec.port_id is not None
    return NicEntry(Direction.OUT, NAMES[spec.port_id], spec.key, spec.t, drop=spec.drop,
                    drop_reason=DropReason.BLOCKED if spec.drop else None, dest=dest,
                    next_key=next_key, tcp_flags_to_host=spec.tcp_flags_to_host,
                    max_len=spec.max_len)


@pytest.mark.parametrize("case", CASES, ids=[c.description for c in CASES])
def test_fixture_table_on_simnic(case: Case) -> None:
    nic = SimNic(POLICY)
    ops = [FlowOp(OpKind.ADD, i + 1, _entry(spec, case)) for i, spec in enumerate(case.flows)]
    assert all(r.ok for r in nic.operate(ops)), case.description
    rx = nic.receive(case.frame, NAMES[case.ingress], 1.0)
    if case.verdict == "REDIRECT":
        assert rx.hit and rx.drops == []
        assert rx.outputs == [(NAMES[case.dest], case.output)]
    elif case.verdict == "DROP":
        assert rx.hit and rx.outputs == [] and rx.drops == [(rx.drops[0][0],
                                                              DropReason.BLOCKED)]
    elif XDP_LIMIT in case.tags:
        if rx.hit:           # the model NIC processes it: as the host's reference does
            ref = case.frame
            for spec in case.flows:
                ref = apply_transposition(ref, spec.t)
            assert len(rx.outputs) == 1 and rx.outputs[0][1] == ref
    else:
        assert not rx.hit and rx.outputs == [], case.description
    assert nic.counters["hits"] + nic.counters["misses"] == 1


def test_every_row_runs_with_a_verdict_simnic_checks() -> None:
    verdicts = {c.verdict for c in CASES}
    assert verdicts == {"PASS", "DROP", "REDIRECT"}
    # the simnic run checks more than misses: most rows are hits
    assert sum(c.verdict != "PASS" for c in CASES) >= 20
