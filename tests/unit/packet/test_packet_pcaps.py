"""Every frame of every capture (tests/data/pcaps, and ../shared/pcaps when it is there; see
tests/captures.py): parse or PacketError, nothing else.

Also: flow_key agrees with parse_frame (same key, or the same error), the raw rebuild
gives the bytes back, and frames whose checksums are all right rebuild identically with
every length and checksum recomputed.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest
from packet_oracle import by_link_type, read_frames

from captures import all_captures, capture_params, carried, shared_corpus
from hostsdn.errors import PacketError
from hostsdn.packet import (
    Transposition,
    apply_transposition,
    build_frame,
    flow_key,
    frame_key,
    parse_frame,
    verify_checksums,
)

ETHERNET = by_link_type(all_captures())
OTHER = by_link_type(all_captures(), ethernet=False)


@pytest.mark.parametrize("path", capture_params(ETHERNET))
def test_capture(path: Path) -> None:
    outcomes: Counter[str] = Counter()
    for index, data in enumerate(read_frames(path)):
        where = f"{path.name} frame {index}"
        try:
            frame = parse_frame(data)
        except PacketError as error:
            outcomes[str(error.reason)] += 1
            with pytest.raises(PacketError) as keyed:
                flow_key(data)
            assert (str(keyed.value), keyed.value.reason) == (str(error), error.reason), where
            continue
        outcomes["parsed"] += 1
        assert flow_key(data) == frame_key(frame), where
        assert build_frame(frame, recompute=False) == data, where
        if all(verify_checksums(data).values()):
            assert build_frame(frame) == data, where
        if frame.is_tunnel:
            decapped = apply_transposition(data, Transposition(decap=True))
            assert flow_key(decapped) == flow_key(data).inner, where


@pytest.mark.parametrize("path", capture_params(OTHER))
def test_non_ethernet_captures_read_as_ethernet_only_raise_packet_errors(path: Path) -> None:
    # Raw IP / SLL / loopback records are garbage as Ethernet: a robustness check.
    for data in read_frames(path):
        try:
            frame = parse_frame(data)
        except PacketError as error:
            with pytest.raises(PacketError) as keyed:
                flow_key(data)
            assert str(keyed.value) == str(error)
            continue
        assert flow_key(data) == frame_key(frame)
        assert build_frame(frame, recompute=False) == data


EXPECTED_DROPS = {
    # snaplen-cut captures fail at the IP length check before any L4 check
    "trunc_ethernet_header.pcap": {"truncated_ethernet": 1},
    "trunc_ipv4_header.pcap": {"truncated_ipv4": 1},
    "trunc_ipv6_header.pcap": {"truncated_ipv6": 1},
    "trunc_ipv6_ext_header.pcap": {"truncated_ipv6": 1},
    "trunc_icmp_header.pcap": {"truncated_ipv4": 2},
    "trunc_udp_payload.pcap": {"truncated_ipv4": 1},
    "ipv4_bad_ihl.pcap": {"bad_ipv4_header": 1},
    "ipv4_broken_header.pcap": {"bad_ipv4_header": 1},
    "ipv6_bad_version.pcap": {"bad_ipv6_header": 2},
    "ipv6_frag_negative_len.pcap": {"truncated_ipv6_ext": 1},
}


@pytest.mark.parametrize("name, reasons", sorted(EXPECTED_DROPS.items()))
def test_malformed_captures_are_dropped_for_the_right_reason(name: str,
                                                             reasons: dict[str, int]) -> None:
    seen: Counter[str] = Counter()
    for data in read_frames(carried(name)):
        try:
            parse_frame(data)
        except PacketError as error:
            seen[str(error.reason)] += 1
    assert dict(seen) == reasons


def _vxlan_captures() -> list[tuple[Path, int]]:
    cases = [(carried("vxlan_http.pcap"), 1), (carried("vxlan_icmp_arp.pcap"), 100)]
    corpus = shared_corpus()
    if corpus is not None:      # LGPL: not carried
        cases.append((corpus / "vxlan_dns_https.pcap", 1111))
    return cases


@pytest.mark.parametrize("path, vni", _vxlan_captures(),
                         ids=lambda v: v.name if isinstance(v, Path) else str(v))
def test_vxlan_captures_yield_inner_keys(path: Path, vni: int) -> None:
    keys = [flow_key(data) for data in read_frames(path)]
    assert keys and all(key.vni == vni and key.inner is not None for key in keys)


def test_nvgre_capture_yields_the_inner_key() -> None:
    (nvgre,) = [flow_key(d) for d in read_frames(carried("nvgre_tcp.pcap"))]
    assert nvgre.inner is not None and nvgre.inner.proto == 6
