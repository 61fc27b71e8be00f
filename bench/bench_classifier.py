"""Classifier.lookup vs LinearClassifier on random-ish rules: mix of /32,/24,/16 CIDRs,
ports, protos, random priorities.

    PYTHONPATH=src python bench/bench_classifier.py [100 1000 10000]

DST_P (environment, default 0.8) is the share of rules with a destination network;
DST_P=1 (like bench_setup.py) leaves no broad rule to end a lookup early.  Times are
the best of 5 passes over the keys (the first pass also fills the per-signature caches).
"""
import random
import sys
import time

from hostsdn.direction import Direction
from hostsdn.packet.key import FRAG_NONE, FlowKey
from hostsdn.policy.classifier import Classifier, LinearClassifier
from hostsdn.policy.model import ALLOW, IpPrefix, Match, Rule

DST_P = float(__import__("os").environ.get("DST_P", "0.8"))
def rand_prefix(rng):
    plen = rng.choice([16, 24, 32])
    ip = (10 << 24) | rng.getrandbits(16) << 8 | rng.getrandbits(8)
    ip &= ~((1 << (32 - plen)) - 1) & 0xFFFFFFFF
    return IpPrefix(4, ip, plen)

def rand_ports(rng):
    r = rng.random()
    if r < 0.5:
        p = rng.choice([22, 53, 80, 443, 3306, 5432, 8080, rng.randrange(1, 65536)])
        return ((p, p),)
    if r < 0.8:
        lo = rng.randrange(0, 65000); return ((lo, min(65535, lo + rng.choice([1, 9, 99, 999]))),)
    return ((80, 80), (443, 443), (8000, 8999))

def rand_rules(n, seed):
    rng = random.Random(seed)
    rules = []
    for i in range(n):
        kw = {}
        if rng.random() < DST_P: kw["dst_ip"] = (rand_prefix(rng),)
        if rng.random() < 0.5: kw["src_ip"] = (rand_prefix(rng),)
        if rng.random() < 0.7:
            kw["proto"] = frozenset([rng.choice([6, 17])])
            if rng.random() < 0.8: kw["dst_port"] = rand_ports(rng)
            if rng.random() < 0.1: kw["src_port"] = rand_ports(rng)
        elif rng.random() < 0.3:
            kw["proto"] = frozenset([1])
        rules.append(Rule("acl", Direction.OUT, i, rng.randrange(0, 1000), Match(**kw), (ALLOW,)))
    return rules

def rand_keys(rules, n, seed):
    rng = random.Random(seed)
    keys = []
    for _ in range(n):
        r = rng.choice(rules).match
        def pick_ip(nets):
            if nets is None or rng.random() < 0.2: return (10 << 24) | rng.getrandbits(24)
            net = nets[0]; return net.network | rng.getrandbits(32 - net.prefixlen)
        proto = next(iter(r.proto)) if r.proto and rng.random() < 0.9 else rng.choice([6, 17, 1])
        dp = rng.randint(*r.dst_port[0]) if r.dst_port and rng.random() < 0.9 else rng.randrange(65536)
        keys.append(FlowKey((), b"\x02" * 6, b"\x04" * 6, 0x0800, 4, pick_ip(r.src_ip), pick_ip(r.dst_ip),
                            proto, 0, rng.randrange(1024, 65536), dp, FRAG_NONE))
    return keys

def best_of(lookup, keys, passes=5):
    """Microseconds per lookup, best of ``passes`` passes."""
    best = float("inf")
    for _ in range(passes):
        t0 = time.perf_counter()
        for k in keys: lookup(k)
        best = min(best, time.perf_counter() - t0)
    return best / len(keys) * 1e6

def bench(n):
    rules = rand_rules(n, n)
    keys = rand_keys(rules, 2000, 1)
    t0 = time.perf_counter(); c = Classifier(rules); build = time.perf_counter() - t0
    lin = LinearClassifier(rules)
    for k in keys: c.lookup(k)  # warm plans
    tss = best_of(c.lookup, keys)
    miss_keys = [k._replace(dst_ip=(11 << 24) | i) for i, k in enumerate(keys[:500])]
    miss = best_of(c.lookup, miss_keys)
    sample = keys[:200]
    t0 = time.perf_counter()
    for k in sample: lin.lookup(k)
    linear = (time.perf_counter() - t0) / len(sample) * 1e6
    mism = sum(c.lookup(k) is not lin.lookup(k) for k in sample)
    hits = sum(c.lookup(k) is not None for k in keys)
    s = c.stats()
    print(f"{n:>6} rules | build {build*1e3:7.1f} ms | tss {tss:6.2f} us | tss miss {miss:6.2f} us | linear {linear:8.1f} us | "
          f"tuples {s.tuples:4} entries {s.entries:6} residual {s.residual} | hits {hits}/{len(keys)} | mismatches {mism}")

for n in map(int, sys.argv[1:] or ["100", "1000", "10000"]):
    bench(n)
