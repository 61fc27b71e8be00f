"""Protocol numbers: the one home of the wire constants every layer uses.

Ethertypes (IEEE), IP protocol numbers (IANA), the VXLAN UDP port (RFC 7348) and the
ICMP echo types.  Import them from here (``ethernet``, ``l4`` and ``tunnel`` re-use them);
never define the number in another module.  The per-packet walkers (``fastpath._walk``
and the rewrite loop of ``rewrite``) compare protocol numbers as literals on purpose: a
constant is cheaper than a global in the hottest loop (named constants measured +2% on
``flow_key`` and +4% / +15% on ``apply_transposition`` in two runs here); their values
are these.  The XDP program's C copies
(``nic/xdp/bpf/hostsdn_consts.h``) are checked against these by the kernel tests.
"""

from __future__ import annotations

ETH_P_IPV4 = 0x0800
ETH_P_ARP = 0x0806
ETH_P_IPV6 = 0x86DD
ETH_P_8021Q = 0x8100
ETH_P_8021AD = 0x88A8
ETH_P_TEB = 0x6558
"""Transparent Ethernet bridging (the GRE protocol of NVGRE)."""
ETH_P_ROCE = 0x8915
ETH_P_FCOE = 0x8906
ETH_P_LLDP = 0x88CC
VLAN_TPIDS = (ETH_P_8021Q, ETH_P_8021AD)
IP_ETHERTYPES = {ETH_P_IPV4: 4, ETH_P_IPV6: 6}
"""Ethertype -> IP version."""

IPPROTO_ICMP = 1
IPPROTO_TCP = 6
IPPROTO_UDP = 17
IPPROTO_GRE = 47
IPPROTO_ICMPV6 = 58
IPPROTO_SCTP = 132
PORT_PROTOCOLS = (IPPROTO_TCP, IPPROTO_UDP, IPPROTO_SCTP)
"""IP protocols whose keys carry source and destination ports."""
ICMP_PROTOCOLS = (IPPROTO_ICMP, IPPROTO_ICMPV6)

ICMP_ECHO_REPLY = 0
ICMP_ECHO_REQUEST = 8
ICMPV6_ECHO_REQUEST = 128
ICMPV6_ECHO_REPLY = 129

VXLAN_PORT = 4789
"""IANA-assigned VXLAN UDP destination port (RFC 7348 section 5)."""
