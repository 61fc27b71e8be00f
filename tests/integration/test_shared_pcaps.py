"""Every capture replays without an uncaught exception, every frame is accounted for, and
offload changes nothing (outputs identical in every NIC setting).

The captures: those the repository carries (tests/data/pcaps, ids ``data/...``) and, when
the project corpus is beside the clone (``../shared/pcaps`` or ``$HOSTSDN_SHARED_PCAPS``),
its other captures (ids ``shared/...``); ``test_shared_corpus`` is skipped, with the
reason, when it is not."""

from __future__ import annotations

from pathlib import Path

import pytest

from captures import (
    DATA_PCAPS,
    SUFFIXES,
    capture_params,
    carried,
    carried_captures,
    shared_corpus,
    shared_corpus_hint,
)
from fidelity import CONFIGS, assert_same, policy_for
from hostsdn.runtime.pcap import read_frames
from hostsdn.runtime.replay import replay

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def test_shared_corpus():
    """The corpus is there, holds the captures we carry byte for byte, and more."""
    corpus = shared_corpus()
    if corpus is None:
        pytest.skip(shared_corpus_hint())
    names = [p.relative_to(DATA_PCAPS).as_posix() for p in carried_captures()]
    for name in names:
        assert (corpus / name).read_bytes() == (DATA_PCAPS / name).read_bytes(), name
    assert sum(1 for p in corpus.rglob("*") if p.suffix in SUFFIXES) > len(names)


@pytest.mark.parametrize("capture", capture_params())
def test_capture_replays_identically_with_and_without_offload(capture):
    frames = read_frames(capture)
    policy = policy_for(frames)
    configs = CONFIGS if len(frames) < 3000 else {k: CONFIGS[k] for k in
                                                  ("none", "default", "cache1", "guest_list")}
    ref, _ = assert_same(policy, [(f.time, f.data, None) for f in frames], configs)
    assert ref["packets"] == len(frames)
    assert ref["nic_hits"] == 0
    assert ref["exceptions_by_path"] == ({"host": len(frames)} if frames else {})


def _engaging() -> list:
    return capture_params([carried(n) for n in ("ipv4_http_download_dns.pcap",
                                                "large_tls_ipv4_ipv6.pcap")])


def _fragmented() -> list:
    paths = [carried("ipv4_frag_udp_nfs.pcap")]
    corpus = shared_corpus()
    if corpus is not None:          # LGPL: not carried
        paths.append(corpus / "ipv4_frag_garbage.pcap")
    return capture_params(paths)


@pytest.mark.parametrize("capture", _fragmented())
def test_fragments_stay_on_the_host_on_real_traffic(capture):
    """A datagram's later fragments follow its first on the host (flows.fragments): no
    NIC holds a fragment flow, the outputs are the same."""
    frames = read_frames(capture)
    _, sums = assert_same(policy_for(frames), [(f.time, f.data, None) for f in frames],
                          {k: CONFIGS[k] for k in ("none", "default")})
    s = sums["default"]
    # first fragments' flows are refused; later fragments without a first (the garbage
    # capture has nothing but those) are held, then time out
    assert s["offload_refused"].get("not_cacheable", 0) + \
        s["drop_reasons"].get("frag_held", 0) > 0, s
    assert s["nic_hits"] < s["packets"] / 2, s


@pytest.mark.parametrize("capture", _engaging())
def test_offload_engages_on_real_traffic(capture):
    frames = read_frames(capture)
    _, sums = assert_same(policy_for(frames), [(f.time, f.data, None) for f in frames],
                          {k: CONFIGS[k] for k in ("none", "default")})
    s = sums["default"]
    assert s["nic_hits"] > s["packets"] / 2, s


def test_example_replay_shows_every_outcome(example_policy, tmp_path):
    out = replay(example_policy, EXAMPLES / "example.pcap", out_dir=tmp_path,
                 keep_verdicts=True)
    s = out.to_json()
    assert s["packets"] == s["forwarded"] + s["dropped"]
    assert s["drop_reasons"] == {"blocked": 3, "malformed": 1, "meter": 7, "no_port": 1}
    assert s["nic_hits"] > 0 and s["exceptions"] < s["packets"]
    assert {p.name for p in tmp_path.iterdir()} == {"web.pcap", "db.pcap", "uplink.pcap"}
    decided = " ".join(" ".join(v["decided_by"]) for v in out.verdicts)
    for needle in ("nat/outbound/1", "nat/inbound/0", "vnet/outbound/1", "vnet/inbound/0",
                   "meter/outbound/0", "acl/outbound/0", "conn-reply"):
        assert needle in decided
