"""Port security: a VM may only send as itself (anti-spoofing, as OpenStack port security
and the OVS firewall driver do it).

``PortGuard(port).check(frame, key)`` is run by the switch on every frame a VM sends,
before any flow lookup, and returns the ``DropReason`` of a spoofed frame (or None):

* ``spoofed_src_mac``: the Ethernet source is not the port MAC (nor an allowed MAC).
* ``vlan_not_allowed``: a tagged frame whose VID the port does not declare (``vlans``), or
  a frame with more than one tag (a port may use single 802.1Q tags, like Neutron trunk
  subports; QinQ from a VM is refused).
* ``spoofed_src_ip``: an IPv4/IPv6 source that is not one of the port's addresses (the
  address of each ``ips`` entry, not its prefix) paired with the frame's source MAC.  Also
  allowed: the EUI-64 link-local address of each allowed MAC, ``0.0.0.0`` for DHCP
  discovery (UDP 68 -> 67 only) and ``::`` for DAD and MLD (ICMPv6 neighbour solicitation
  and MLD reports only), as Neutron allows them.
* ``spoofed_arp``: an ARP packet that is not Ethernet/IPv4, whose sender MAC is not the
  frame's source or whose sender IP is not an address of that MAC (0.0.0.0 is allowed:
  probes, RFC 5227).
* ``spoofed_nd``: an IPv6 neighbour solicitation/advertisement whose source or target
  link-layer option is not the frame's source MAC, an advertisement whose target is not
  one of the port's addresses, malformed ND options, fragmented ND (RFC 6980), and
  router advertisements and redirects (a VM is not a router: Neutron drops them too).

``allowed_addresses`` adds (MAC, network) pairs (OpenStack allowed-address-pairs);
``port_security: false`` turns every check off.

A flow's key holds the source MAC, IP and VLANs exactly, so a flow (host or NIC) made for
a permitted frame never matches a spoofed one.  ARP and ND keys do not hold what is
checked here (sender IP, target, options): their flows are never offloaded
(``is_neighbor_discovery``) and the check runs on every such frame.
"""

from __future__ import annotations

from hostsdn.errors import PacketError
from hostsdn.flows.table import DropReason
from hostsdn.packet.ethernet import ArpPacket
from hostsdn.packet.frame import parse_frame
from hostsdn.packet.key import FRAG_NONE, FlowKey
from hostsdn.policy import model as pm

ETH_P_ARP = 0x0806
IPPROTO_UDP = 17
IPPROTO_ICMPV6 = 58
ND_ROUTER_SOLICIT, ND_ROUTER_ADVERT, ND_NEIGHBOR_SOLICIT, ND_NEIGHBOR_ADVERT, ND_REDIRECT = (
    133, 134, 135, 136, 137)
MLD_REPORT_V1, MLD_REPORT_V2 = 131, 143
UNSPECIFIED_SOURCE_ICMPV6 = frozenset({ND_NEIGHBOR_SOLICIT, MLD_REPORT_V1, MLD_REPORT_V2})
"""ICMPv6 types a host sends from ``::`` (RFC 4862 DAD, RFC 3810 MLDv2 reports)."""
ND_OPT_SOURCE_LL, ND_OPT_TARGET_LL = 1, 2
_LINK_LOCAL = 0xFE80 << 112


def eui64_link_local(mac: bytes) -> int:
    """The IPv6 link-local address (fe80::/64) a MAC gives with modified EUI-64
    (RFC 4291 appendix A): the U/L bit flipped, ff:fe in the middle."""
    iid = bytes([mac[0] ^ 0x02]) + mac[1:3] + b"\xff\xfe" + mac[3:6]
    return _LINK_LOCAL | int.from_bytes(iid, "big")


def is_neighbor_discovery(key: FlowKey) -> bool:
    """ARP, or IPv6 neighbour discovery (ICMPv6 133..137): what port security checks
    beyond the flow key, so such frames always go to the host."""
    if key.ethertype == ETH_P_ARP:
        return True
    return (key.ip_version == 6 and key.proto == IPPROTO_ICMPV6
            and ND_ROUTER_SOLICIT <= key.dst_port >> 8 <= ND_REDIRECT)


class PortGuard:
    """The anti-spoofing check of one VM port, compiled from its policy entry."""

    __slots__ = ("_exact", "_nets", "enabled", "macs", "vlans")

    def __init__(self, port: pm.Port) -> None:
        self.enabled = port.port_security
        own = [(i.version, i.ip) for i in port.ips]
        pairs: set[tuple[bytes, int, int]] = set()
        nets: list[tuple[bytes, pm.IpPrefix]] = []
        macs = {port.mac}
        for allowed in port.allowed_addresses:
            mac = allowed.mac if allowed.mac is not None else port.mac
            macs.add(mac)
            if allowed.ip is None:
                pairs.update((mac, v, ip) for v, ip in own)
            elif allowed.ip.prefixlen == pm.IP_WIDTH[allowed.ip.version]:
                pairs.add((mac, allowed.ip.version, allowed.ip.network))
            else:
                nets.append((mac, allowed.ip))
        pairs.update((port.mac, v, ip) for v, ip in own)
        pairs.update((mac, 6, eui64_link_local(mac)) for mac in macs)
        self.macs = frozenset(macs)
        """Source MACs the VM may use."""
        self.vlans = port.vlans
        self._exact = frozenset(pairs)
        self._nets = tuple(nets)

    def permits(self, mac: bytes, version: int, ip: int) -> bool:
        """True when the VM may send with source ``mac`` and address ``ip``."""
        if (mac, version, ip) in self._exact:
            return True
        for net_mac, net in self._nets:
            if net_mac == mac and net.contains(version, ip):
                return True
        return False

    def check(self, frame: bytes, key: FlowKey) -> DropReason | None:
        """Why the VM may not send ``frame`` (whose key is ``key``), or None."""
        if not self.enabled:
            return None
        reason = self.check_key(key)
        if reason is not None or not is_neighbor_discovery(key):
            return reason
        if key.ip_version == 6:
            return self._check_nd(frame, key)
        return self._check_arp(frame, key.src_mac)

    def check_key(self, key: FlowKey) -> DropReason | None:
        """What the key alone shows (source MAC, VLANs, source IP): why a flow with this
        key from the VM must drop, or None.  Flows the host makes on its own for the VM's
        direction (the eager reply flow of an inbound connection) get this verdict, so no
        NIC entry forwards what the host would refuse."""
        if not self.enabled:
            return None
        src_mac = key.src_mac
        if src_mac not in self.macs:
            return DropReason.SPOOFED_SRC_MAC
        if key.vlans and (len(key.vlans) > 1 or key.vlans[0] not in self.vlans):
            return DropReason.VLAN_NOT_ALLOWED
        version = key.ip_version
        if version and not self.permits(src_mac, version, key.src_ip) \
                and not self._unspecified_source(key):
            return DropReason.SPOOFED_SRC_IP
        return None

    @staticmethod
    def _unspecified_source(key: FlowKey) -> bool:
        if key.src_ip != 0:
            return False
        if key.ip_version == 4:
            return key.proto == IPPROTO_UDP and key.has_ports \
                and key.src_port == 68 and key.dst_port == 67
        return key.proto == IPPROTO_ICMPV6 and key.frag == FRAG_NONE \
            and key.dst_port >> 8 in UNSPECIFIED_SOURCE_ICMPV6

    def _check_arp(self, frame: bytes, src_mac: bytes) -> DropReason | None:
        try:
            arp = parse_frame(frame).l3
        except PacketError:   # pragma: no cover - the key was made from the same bytes
            return DropReason.MALFORMED
        if not isinstance(arp, ArpPacket) or arp.hw_type != 1 or arp.proto_type != 0x0800 \
                or len(arp.sender_hw) != 6 or len(arp.sender_proto) != 4:
            return DropReason.SPOOFED_ARP
        if arp.sender_hw != src_mac:
            return DropReason.SPOOFED_ARP
        sender_ip = int.from_bytes(arp.sender_proto, "big")
        if sender_ip != 0 and not self.permits(src_mac, 4, sender_ip):
            return DropReason.SPOOFED_ARP
        return None

    def _check_nd(self, frame: bytes, key: FlowKey) -> DropReason | None:
        icmp_type = key.dst_port >> 8
        if icmp_type in (ND_ROUTER_ADVERT, ND_REDIRECT) or key.frag != FRAG_NONE:
            return DropReason.SPOOFED_ND
        try:
            body = parse_frame(frame).payload
        except PacketError:   # pragma: no cover - the key was made from the same bytes
            return DropReason.MALFORMED
        # RS: 4 reserved bytes then options; NS/NA: 4 bytes, the 16-byte target, options.
        fixed = 4 if icmp_type == ND_ROUTER_SOLICIT else 20
        if len(body) < fixed:
            return DropReason.SPOOFED_ND
        options = body[fixed:]
        at = 0
        while at < len(options):
            if len(options) - at < 2 or options[at + 1] == 0:
                return DropReason.SPOOFED_ND          # RFC 4861 4.6: length 0 is invalid
            kind, size = options[at], options[at + 1] * 8
            if size > len(options) - at:
                return DropReason.SPOOFED_ND
            if kind in (ND_OPT_SOURCE_LL, ND_OPT_TARGET_LL) \
                    and (size != 8 or options[at + 2:at + 8] != key.src_mac):
                return DropReason.SPOOFED_ND
            at += size
        if icmp_type == ND_NEIGHBOR_ADVERT:
            target = int.from_bytes(body[4:20], "big")
            if not self.permits(key.src_mac, 6, target):
                return DropReason.SPOOFED_ND
        return None
