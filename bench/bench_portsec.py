"""What port security costs the host, and what a spoofing VM costs it.

Four measurements in one run, on ``Switch.receive`` (the host alone):

* established UDP flows from a VM (the host hit path) with ``port_security`` on and off:
  the per-packet check (source MAC and IP pair, VLANs) is the difference;
* a flood of frames with random spoofed IPv4 sources from the same VM (each dropped
  ``spoofed_src_ip`` before any flow lookup, so it makes no flow: state stays flat),
  against the same number of new honest flows (each set up by the slow path);
* ARP replies (checked field by field on every frame: their keys lack the sender IP).

    PYTHONPATH=src python bench/bench_portsec.py [--quick] [--flows K]
"""

from __future__ import annotations

import argparse
import random
from collections.abc import Callable

import benchutil as bu

from hostsdn.packet import make_arp_reply, make_udp
from hostsdn.policy import model as pm
from hostsdn.policy.loader import load_policy_text
from hostsdn.switch import Switch


def policy(port_security: bool) -> pm.Policy:
    return load_policy_text(
        f"version: 1\n"
        f'uplink: {{mac: "{bu.UPLINK_MAC}", ip: 192.0.2.1, gateway_mac: "{bu.GW_MAC}"}}\n'
        f"ports:\n"
        f'  - {{name: vm, mac: "{bu.VM_MAC}", ips: ["{bu.VM_IP}/24"], layers: [allow-all],\n'
        f"     port_security: {'true' if port_security else 'false'}}}\n"
        f"layers:\n{bu.ALLOW_ALL}", "bench.yaml")


def honest(k: int, base: int = 20000) -> list[bytes]:
    return [make_udp(bu.VM_MAC, bu.GW_MAC, bu.VM_IP, f"198.51.100.{1 + i % 250}",
                     base + i % 40000, 1000 + i // 250, b"x" * 64) for i in range(k)]


def spoofed(k: int) -> list[bytes]:
    rng = random.Random(7)
    return [make_udp(bu.VM_MAC, bu.GW_MAC,
                     f"10.{rng.randrange(256)}.{rng.randrange(256)}.{rng.randrange(1, 255)}",
                     "198.51.100.1", rng.randrange(1024, 65535), 53, b"x" * 64)
            for _ in range(k)]


def rate_of(sw: Switch, frames: list[bytes], budget: float, repeat: bool) -> float:
    clock = [1.0]

    def step(frame: object) -> None:
        clock[0] += 1e-6
        sw.receive(frame, "vm", clock[0])  # type: ignore[arg-type]

    n, secs = bu.run_timed(frames, step, budget=budget, min_items=len(frames) if repeat else 1,
                           repeat=repeat)
    return bu.rate(n, secs)


def warm(sw: Switch, frames: list[bytes]) -> Switch:
    for frame in frames:
        sw.receive(frame, "vm", 1.0)
    return sw


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="short run")
    ap.add_argument("--flows", type=int, default=None, help="flows / frames per kind (K)")
    bu.add_gc_option(ap)
    args = ap.parse_args()
    gc_label = bu.apply_gc(args.gc)
    k = args.flows or (2000 if args.quick else 20000)
    budget = 0.4 if args.quick else 2.0
    print(f"bench_portsec: K={k}; {bu.environment()}; {budget} s per point; {gc_label}")
    flows = honest(k)
    on, off = policy(True), policy(False)
    hit_on = rate_of(warm(Switch(on), flows), flows, budget, repeat=True)
    hit_off = rate_of(warm(Switch(off), flows), flows, budget, repeat=True)
    sw_spoof = Switch(on)
    spoof = rate_of(sw_spoof, spoofed(k), budget, repeat=False)
    sw_new = Switch(on)
    new = rate_of(sw_new, honest(k, base=1), budget, repeat=False)
    arp = [make_arp_reply(bu.VM_MAC, bu.VM_IP, bu.GW_MAC, "10.1.0.1")]
    arp_rate = rate_of(warm(Switch(on), arp), arp * 256, budget, repeat=True)
    rows: list[tuple[str, ...]] = [
        ("established, port security on", bu.fmt_rate(hit_on), f"{hit_on / hit_off:.2f}x", "-"),
        ("established, port security off", bu.fmt_rate(hit_off), "1.00x", "-"),
        ("spoofed sources (dropped)", bu.fmt_rate(spoof), f"{spoof / hit_off:.2f}x",
         str(sw_spoof.flow_count())),
        ("new honest flows (slow path)", bu.fmt_rate(new), f"{new / hit_off:.2f}x",
         str(sw_new.flow_count())),
        ("ARP replies (checked per frame)", bu.fmt_rate(arp_rate),
         f"{arp_rate / hit_off:.2f}x", "-"),
    ]
    show: Callable[..., None] = bu.print_table
    show("Switch.receive, packets/s", ["frames from the VM", "rate", "vs established off",
                                       "flows left"], rows,
         ["the spoofing flood makes no flow (flows left 0); honest new flows make two each"])


if __name__ == "__main__":
    main()
