"""The management API of a running `hostsdn up`, simnic and xdp, end to end.

Each `up` serves the API on its Unix socket (mode 0600) and on TCP 127.0.0.1: the simnic
one with a bearer token and TLS (a self-signed certificate made here), the xdp one with
neither.  After TCP traffic between the VMs: the flows, connections, NIC entries and
ports the API lists agree with each other and with the traffic; PUT /v1/policy applies
(and blocks a port), refuses a topology change (409, each difference) and an invalid
policy (422, file/line/field) while forwarding goes on; `hostsdn reload` goes through
the API.  A real Prometheus server (Debian's package, own config, storage and loopback
port) scrapes the TCP listener, and the series it stored equal the switch's counters.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import ssl
import stat
import subprocess
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from netns_util import REMOTE_IP, VM_A, VM_B, leftovers, listen_in, ns_run, transfer, wait_for_text
from test_up_reload import blocked, blocking, works
from test_up_simnic import Setup, destroy, hostsdn, make_setup, run

pytestmark = [pytest.mark.kernel, pytest.mark.timeout(240)]

TOKEN = "k8s-style-0123456789abcdef"


@dataclass
class ApiUp:
    s: Setup
    nic: str
    sock: Path
    tcp: str
    token: str | None
    cert: Path | None

    def unix(self) -> httpx.Client:
        return httpx.Client(transport=httpx.HTTPTransport(uds=str(self.sock)),
                            base_url="http://hostsdn", timeout=20)

    def remote(self, token: str | None = None) -> httpx.Client:
        scheme = "https" if self.cert else "http"
        headers = {"authorization": f"Bearer {token}"} if token else {}
        verify: Any = ssl.create_default_context(cafile=str(self.cert)) if self.cert else True
        return httpx.Client(base_url=f"{scheme}://{self.tcp}", headers=headers,
                            verify=verify, timeout=20)


def make_cert(tmp: Path) -> tuple[Path, Path]:
    cert, key = tmp / "api.crt", tmp / "api.key"
    r = subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days",
                        "2", "-subj", "/CN=127.0.0.1", "-addext",
                        "subjectAltName=IP:127.0.0.1", "-keyout", str(key), "-out", str(cert)],
                       capture_output=True, text=True, timeout=60, check=False)
    assert r.returncode == 0, r.stderr
    return cert, key


@pytest.fixture(scope="module", params=["simnic", "xdp"])
def api_up(request: pytest.FixtureRequest,
           tmp_path_factory: pytest.TempPathFactory) -> Iterator[ApiUp]:
    nic = request.param
    if nic == "xdp":
        request.getfixturevalue("xdp_ready")
    tmp = tmp_path_factory.mktemp(f"api-{nic}")
    s = make_setup(tmp)
    args = ["up", str(s.policy), "--nic", nic, "--remote-ip", REMOTE_IP, "--uplink-ns",
            s.ns_up, "--duration", "200", "--status-interval", "1", "--api-listen",
            "127.0.0.1:0", "--log-format", "json"]
    token = cert = None
    if nic == "simnic":
        token_file = tmp / "token"
        token_file.write_text(TOKEN + "\n")
        token_file.chmod(0o600)
        cert, key = make_cert(tmp)
        token = TOKEN
        args += ["--api-token-file", str(token_file), "--api-cert", str(cert), "--api-key",
                 str(key)]
    with open(s.log, "wb") as log:
        proc = subprocess.Popen(hostsdn(*args), stdout=log, stderr=subprocess.STDOUT,
                                env=s.env)
    try:
        wait_for_text(s.log, '"event": "ready"', 40, proc)
        ready = next(json.loads(ln) for ln in s.log.read_text().splitlines()
                     if '"event": "ready"' in ln)
        yield ApiUp(s, nic, Path(ready["api_socket"]), ready["api_tcp"], token, cert)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=20) == 0, s.log.read_text()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        destroy(s)
    assert leftovers(s.tag) == []
    assert not Path(ready["api_socket"]).exists()


def traffic(a: ApiUp, port: int = 5003, size: int = 200_000) -> None:
    with listen_in(a.s.ns_b, VM_B, port) as server:
        peer, data, reply = transfer(server, a.s.ns_a, (VM_B, port), b"x" * size)
    assert (peer[0], len(data)) == (VM_A, size) and reply.startswith(b"done ")


def all_flows(c: httpx.Client, **params: Any) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    after = None
    while True:
        q = dict(params, limit=50, **({"after": after} if after is not None else {}))
        body = c.get("/v1/flows", params=q).json()
        out.extend(body["flows"])
        after = body["next"]
        if after is None:
            return out


def test_unix_socket_is_private_and_answers(api_up: ApiUp) -> None:
    st = api_up.sock.stat()
    assert stat.S_ISSOCK(st.st_mode) and stat.S_IMODE(st.st_mode) == 0o600
    assert api_up.sock.parent == Path(api_up.s.env["HOSTSDN_RUN_DIR"])
    with api_up.unix() as c:
        h = c.get("/v1/health").json()
    assert h["status"] == "ok" and h["nic"] == api_up.nic
    assert h["policy"] == str(api_up.s.policy.resolve())
    assert h["pid"] == int((api_up.sock.parent / f"{api_up.s.tag}.pid").read_text())


def test_tcp_listener_auth(api_up: ApiUp) -> None:
    if api_up.token is None:
        with api_up.remote() as c:
            assert c.get("/v1/health").json()["status"] == "ok"
        return
    with api_up.remote() as c:
        r = c.get("/v1/health")
        assert r.status_code == 401 and "Bearer" in r.headers["www-authenticate"]
    with api_up.remote("not-the-token") as c:
        r = c.put("/v1/policy", json={"text": "ports: []"})
        assert r.status_code == 401 and r.json()["detail"] == "wrong bearer token"
    with api_up.remote(api_up.token) as c:
        assert c.get("/v1/health").json()["status"] == "ok"
    with pytest.raises(httpx.HTTPError):       # TLS only: plain HTTP gets no answer
        httpx.get(f"http://{api_up.tcp}/v1/health", timeout=5)


def test_flows_agree_with_the_switch(api_up: ApiUp) -> None:
    traffic(api_up)
    a, b = f"{api_up.s.tag}a", f"{api_up.s.tag}b"
    with api_up.unix() as c:
        flows = all_flows(c)
        summary = c.get("/v1/summary").json()
        ports = {p["name"]: p for p in c.get("/v1/ports").json()}
        conns = c.get("/v1/connections", params={"limit": 1000}).json()["connections"]
        entries = c.get("/v1/nic/entries", params={"limit": 1000}).json()["entries"]
        mine = c.get("/v1/flows", params={"port": a, "direction": "out", "proto": "tcp",
                                          "dst_ip": VM_B, "dst_port": 5003}).json()["flows"]
        one = c.get(f"/v1/flows/{mine[0]['id']}").json() if mine else None
    assert len(flows) == summary["flows_active"]
    for name in (a, b):
        for d in ("out", "in"):
            assert ports[name][d]["flows"] == sum(1 for f in flows if f["port"] == name
                                                  and f["direction"] == d)
    assert {f["connection"] for f in flows} == {c["id"] for c in conns}
    offloaded = {f["offload"]["nic_handle"]: f["id"] for f in flows
                 if f["offload"]["state"] == "offloaded"}
    assert {e["handle"]: e["flow"] for e in entries} == offloaded
    assert len(entries) == summary["nic_flows_now"]
    assert len(mine) == 1

    def timeless(f: dict[str, Any]) -> dict[str, Any]:     # what does not age between calls
        return {k: v for k, v in f.items() if k not in ("age", "idle", "conn")} | {
            "conn": {k: v for k, v in f["conn"].items() if k != "expires_in"}}
    assert one is not None and timeless(one) == timeless(mine[0])
    flow = mine[0]
    # ~200 kB from a to b: most segments went through the NIC (simnic model or BPF maps)
    # while the connection was established; its FINs took it back to the host
    assert flow["nic_packets"] + flow["host_packets"] > 100
    assert flow["nic_packets"] > flow["host_packets"]
    assert (flow["offload"]["state"], flow["offload"]["reason"]) == ("pending", "conn_state")
    assert flow["offload"]["nic_handle"] is None
    assert [r["layer"] for r in flow["rules"]] == ["acl", "nat"]
    assert flow["rules"][0]["how"] == "rule" and flow["rules"][0]["line"]
    conn = next(c for c in conns if c["id"] == flow["connection"])
    assert conn["proto_name"] == "tcp" and flow["id"] in conn["flows"]
    assert ports[a]["out"]["nic_packets"] >= flow["nic_packets"]


def test_trace_through_the_running_switch(api_up: ApiUp) -> None:
    from scapy.layers.inet import IP, TCP
    from scapy.layers.l2 import Ether

    a, b = f"{api_up.s.tag}a", f"{api_up.s.tag}b"
    syn = bytes(Ether(src="02:00:00:00:00:01", dst="02:00:00:00:00:02")
                / IP(src=VM_A, dst=VM_B) / TCP(sport=41000, dport=5003, flags="S"))
    blocked_syn = bytes(Ether(src="02:00:00:00:00:01", dst="02:00:00:00:00:02")
                        / IP(src=VM_A, dst=VM_B) / TCP(sport=41000, dport=6000, flags="S"))
    with api_up.unix() as c:
        before = c.get("/v1/summary").json()
        t = c.post("/v1/trace", json={"port": a, "frame": syn.hex()}).json()
        tb = c.post("/v1/trace", json={"port": a, "frame": blocked_syn.hex()}).json()
        after = c.get("/v1/summary").json()
    assert [o["port"] for o in t["outputs"]] == [b] and t["drops"] == []
    assert t["nic"]["hit"] is False and t["nic"]["miss"]
    assert {f["direction"] for f in t["created"]} == {"out", "in"}
    assert tb["outputs"] == [] and tb["drops"] == [{"port": a, "reason": "blocked"}]
    acl = [step for f in tb["host"]["flows"] for step in f["layers"] if step["layer"] == "acl"]
    assert acl and acl[0]["how"] == "rule"
    for k in ("packets", "flows_active", "flows_created", "connections_created",
              "nic_flows_now"):
        assert after[k] == before[k], k                  # the trace changed nothing


def test_put_policy_ok_409_422_and_forwarding_goes_on(api_up: ApiUp) -> None:
    s = api_up.s
    original = s.policy.read_text()
    with api_up.unix() as c:
        gen = c.get("/v1/health").json()["generation"]
        r = c.put("/v1/policy", json={"text": blocking(original)})
        assert r.status_code == 200, r.text
        assert r.json()["generation"] == gen + 1 and r.json()["changed"]
        assert s.policy.read_text() == blocking(original)     # the file follows
        blocked(s, 5005)
        works(s, 5004)

        moved = original.replace('"02:00:00:00:00:02"', '"02:00:00:00:00:12"')
        r = c.put("/v1/policy", json={"text": moved})
        assert r.status_code == 409 and r.json()["kind"] == "topology"
        assert any("MAC 02:00:00:00:00:02 -> 02:00:00:00:00:12" in d
                   for d in r.json()["differences"])
        bad = original.replace("default: block", "default: blok", 1)
        r = c.put("/v1/policy", json={"text": bad})
        assert r.status_code == 422
        p = r.json()
        line = original[:original.index("default: block")].count("\n") + 1
        assert (p["file"], p["line"], p["field"]) == (str(s.policy.resolve()), line,
                                                     "layers[0].default")
        assert s.policy.read_text() == blocking(original)     # nothing applied
        blocked(s, 5005)
        works(s, 5004)
        r = c.put("/v1/policy", json={"text": original, "force": True})
        assert r.status_code == 400 and "force" in r.json()["detail"]
        assert c.get("/v1/health").json()["generation"] == gen + 1

        s.policy.write_text(original)                          # hostsdn reload: the API
        rel = run(s, "reload", str(s.policy))
        assert rel.returncode == 0, rel.stderr
        assert "applied by pid" in rel.stdout
        assert c.get("/v1/health").json()["generation"] == gen + 2
    works(s, 5005)
    events = [json.loads(ln) for ln in s.log.read_text().splitlines() if ln.startswith("{")]
    kinds = [e.get("kind") for e in events if e["event"] == "reload_refused"]
    assert kinds == ["topology", "invalid"]
    assert sum(1 for e in events if e["event"] == "reload") == 2


def free_port() -> int:
    with socket.socket() as sk:
        sk.bind(("127.0.0.1", 0))
        return int(sk.getsockname()[1])


def prom_query(base: str, query: str) -> list[dict[str, Any]]:
    url = f"{base}/api/v1/query?" + urllib.parse.urlencode({"query": query})
    with urllib.request.urlopen(url, timeout=10) as r:
        body = json.load(r)
    assert body["status"] == "success", body
    return list(body["data"]["result"])


@pytest.fixture
def prometheus(api_up: ApiUp, tmp_path: Path) -> Iterator[str]:
    exe = shutil.which("prometheus")
    if exe is None:
        pytest.fail("prometheus is not installed (.ci/run installs the Debian package)")
    job: dict[str, Any] = {"job_name": "hostsdn", "scrape_interval": "1s",
                           "scrape_timeout": "1s",
                           "static_configs": [{"targets": [api_up.tcp]}]}
    if api_up.token:
        (tmp_path / "token").write_text(api_up.token)
        job["authorization"] = {"credentials_file": str(tmp_path / "token")}
    if api_up.cert:
        job["scheme"] = "https"
        job["tls_config"] = {"ca_file": str(api_up.cert)}
    config = tmp_path / "prometheus.yml"
    config.write_text(json.dumps({"global": {"scrape_interval": "1s"},
                                  "scrape_configs": [job]}))    # JSON is YAML
    port = free_port()
    proc = subprocess.Popen([exe, f"--config.file={config}",
                             f"--storage.tsdb.path={tmp_path / 'data'}",
                             f"--web.listen-address=127.0.0.1:{port}"],
                            stdout=subprocess.DEVNULL, stderr=open(tmp_path / "prom.log", "w"))
    base = f"http://127.0.0.1:{port}"
    try:
        end = time.monotonic() + 30
        while True:
            try:
                if prom_query(base, "up"):
                    break
            except OSError:
                pass
            assert proc.poll() is None, (tmp_path / "prom.log").read_text()
            assert time.monotonic() < end, (tmp_path / "prom.log").read_text()
            time.sleep(0.2)
        yield base
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def test_prometheus_scrapes_the_switch_counters(api_up: ApiUp, prometheus: str) -> None:
    traffic(api_up, 5006, 100_000)
    ns_run(api_up.s.ns_a, "ping", "-c", "2", "-i", "0.2", VM_B)
    with api_up.unix() as c:
        ports = {p["name"]: p for p in c.get("/v1/ports").json()}
        summary = c.get("/v1/summary").json()
        settled = time.time()
    # wait for a scrape taken after the traffic (the counters stand still since)
    end = time.monotonic() + 30
    while True:
        up = prom_query(prometheus, 'up{job="hostsdn"}')
        ts = prom_query(prometheus, "timestamp(hostsdn_uptime_seconds)")
        if up and up[0]["value"][1] == "1" and ts and float(ts[0]["value"][1]) > settled + 0.5:
            break
        assert time.monotonic() < end, f"no scrape after the traffic: up={up} ts={ts}"
        time.sleep(0.3)
    series = prom_query(prometheus, "hostsdn_port_packets_total")
    got = {(r["metric"]["port"], r["metric"]["direction"], r["metric"]["path"]):
           int(float(r["value"][1])) for r in series}
    want = {(name, d, path): p[d][f"{path}_packets"] for name, p in ports.items()
            for d in ("out", "in") for path in ("host", "nic")}
    assert got == want
    assert sum(want.values()) > 0
    flows = prom_query(prometheus, "sum(hostsdn_flows)")
    assert int(float(flows[0]["value"][1])) == summary["flows_active"]
    hits = prom_query(prometheus, "hostsdn_nic_hits_total")
    assert int(float(hits[0]["value"][1])) >= summary["nic_hits"] > 0
    setup = prom_query(prometheus, "hostsdn_slow_path_setup_seconds_count")
    assert int(float(setup[0]["value"][1])) > 0
    gen = prom_query(prometheus, "hostsdn_policy_generation")
    assert int(float(gen[0]["value"][1])) == c_generation(api_up)
    labels = prom_query(prometheus, 'count by (__name__) ({__name__=~"hostsdn_.*"})')
    assert len(labels) >= 15


def c_generation(a: ApiUp) -> int:
    with a.unix() as c:
        return int(c.get("/v1/health").json()["generation"])


def test_bad_requests_do_not_disturb_forwarding(api_up: ApiUp) -> None:
    raw: list[bytes] = [
        b"GET /v1/flows?limit=-1 HTTP/1.1\r\nHost: x\r\n\r\n",
        b"PUT /v1/policy HTTP/1.1\r\nHost: x\r\nContent-Length: 9999999\r\n\r\n",
        b"GARBAGE\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 40000 + b"\r\n\r\n",
    ]
    answers = []
    for req in raw:
        with socket.socket(socket.AF_UNIX) as sk:
            sk.settimeout(10)
            sk.connect(str(api_up.sock))
            sk.sendall(req)
            answers.append(sk.recv(200).split(b"\r\n", 1)[0])
    assert answers[0].startswith(b"HTTP/1.1 400") and answers[1].startswith(b"HTTP/1.1 413")
    assert all(a.startswith(b"HTTP/1.1 4") for a in answers), answers
    # a client that connects and says nothing holds no more than its own connection
    idle = [socket.socket(socket.AF_UNIX) for _ in range(5)]
    try:
        for sk in idle:
            sk.connect(str(api_up.sock))
        works(api_up.s, 5007)
        with api_up.unix() as c:
            assert c.get("/v1/health").json()["status"] == "ok"
    finally:
        for sk in idle:
            sk.close()
    assert os.path.exists(api_up.sock)
