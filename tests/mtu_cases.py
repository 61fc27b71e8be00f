"""MTU fixture (shared by the unit and the kernel test-run tests): a policy whose VM `a`
SNATs to the wire and reaches a remote CA over VXLAN, a local VM `small` with a small
MTU, and frame sequences where small frames make (and offload) the flows that bigger
frames then meet."""

from __future__ import annotations

from scapy.all import IP, TCP, UDP, Ether, IPv6, Raw  # type: ignore

from hostsdn.policy.loader import load_policy_text
from hostsdn.switch import UPLINK

A_MAC, SMALL_MAC = "02:00:00:00:00:0a", "02:00:00:00:00:0b"
GW_MAC, UPLINK_MAC, ROUTER_MAC = "02:00:00:00:ee:01", "02:00:00:00:ff:01", "02:00:00:00:ee:01"
REMOTE_MAC = "02:00:00:00:00:05"
POLICY = f"""\
version: 1
uplink: {{mac: "{UPLINK_MAC}", ip: 192.0.2.1, gateway_mac: "{ROUTER_MAC}", mtu: 1500}}
ports:
  - {{name: a, mac: "{A_MAC}", ips: ["10.1.0.4/24", "fd00::4/64"], layers: [nat, vnet]}}
  - {{name: small, mac: "{SMALL_MAC}", ips: ["10.1.0.6/24"], layers: [], mtu: 1000}}
layers:
  - name: nat
    stateful: true
    outbound:
      - {{priority: 20, match: {{dst_ip: "10.0.0.0/8"}}, action: allow}}
      - {{priority: 10, match: {{dst_ip: "0.0.0.0/0"}}, action: {{snat: {{ip: 203.0.113.7}}}}}}
      - {{priority: 10, match: {{dst_ip: "::/0"}}, action: {{snat: {{ip: "2001:db8::7"}}}}}}
  - name: vnet
    outbound:
      - {{priority: 20, match: {{dst_ip: 10.1.0.6}}, action: allow}}
      - {{priority: 10, match: {{dst_ip: "10.1.0.0/16"}}, action: {{encap: {{vxlan: {{vni: 7, map: m}}}}}}}}
mappings:
  m:
    "10.1.0.5": {{pa: 192.0.2.2, mac: "{REMOTE_MAC}"}}
"""


def mtu_policy():
    return load_policy_text(POLICY, "mtu.yaml")


def udp4(size: int, dst: str = "93.184.216.34", df: bool = True, dst_mac: str = GW_MAC,
         sport: int = 4000) -> bytes:
    """A UDP/IPv4 frame from a whose IP packet is ``size`` bytes."""
    pkt = IP(src="10.1.0.4", dst=dst, flags="DF" if df else 0) / UDP(sport=sport, dport=53)
    return bytes(Ether(src=A_MAC, dst=dst_mac) / pkt / Raw(b"x" * (size - 28)))


def udp6(size: int) -> bytes:
    pkt = IPv6(src="fd00::4", dst="2001:db8::53") / UDP(sport=4000, dport=53)
    return bytes(Ether(src=A_MAC, dst=GW_MAC) / pkt / Raw(b"y" * (size - 48)))


def tcp_in(size: int) -> bytes:
    """From the wire to `small` (its MTU is 1000)."""
    pkt = IP(src="198.51.100.9", dst="10.1.0.6") / TCP(sport=80, dport=5000, flags="A")
    return bytes(Ether(src=ROUTER_MAC, dst=SMALL_MAC) / pkt / Raw(b"z" * (size - 40)))


def sequence() -> list[tuple[float, bytes, str]]:
    """Small frames first (flows made, offloaded), then sizes around each limit."""
    frames: list[tuple[float, bytes, str]] = []
    for size in (100, 100, 1500, 1501, 100, 3000, 1501):
        frames.append((0, udp4(size), "a"))                            # SNAT to the wire
        frames.append((0, udp4(size, df=False), "a"))
        frames.append((0, udp6(size), "a"))
        frames.append((0, udp4(size, dst="10.1.0.5", sport=4001), "a"))   # VXLAN: +50
        frames.append((0, udp4(size, dst="10.1.0.6", dst_mac=SMALL_MAC, sport=4002), "a"))
        frames.append((0, tcp_in(min(size, 1500)), UPLINK))
    for size in (1450, 1451, 1000, 1001):
        frames.append((0, udp4(size, dst="10.1.0.5", sport=4001), "a"))
        frames.append((0, udp4(size, dst="10.1.0.6", dst_mac=SMALL_MAC, sport=4002), "a"))
        frames.append((0, tcp_in(size), UPLINK))
    return [(1.0 + i * 0.01, f, p) for i, (_, f, p) in enumerate(frames)]
