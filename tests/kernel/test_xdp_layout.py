"""layout.py vs. the C headers, the build cache, and the lazy libbpf import.

Most of these need no kernel; the C-layout check needs a C compiler (clang, the same
one the BPF build needs) and is skipped with that reason when it is missing.
"""

from __future__ import annotations

import ctypes
import os
import re
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest

from hostsdn.errors import NicError
from hostsdn.flows.keys import normalize
from hostsdn.nic.xdp import layout
from hostsdn.nic.xdp.build import BPF_SOURCE_DIR, OBJECT_NAME, build_object
from hostsdn.nic.xdp.layout import (
    FlowActionC,
    HdrKeyC,
    LastResultC,
    MacKeyC,
    OutKeyC,
    OutTunKeyC,
    PortInfoC,
    Reason,
    TunKeyC,
    check_map_layouts,
    decode_action,
    decode_key,
    encode_action,
    encode_key,
    flow_map,
)
from hostsdn.packet import Transposition, build_vxlan_template
from hostsdn.packet import flow_key as raw_flow_key
from xdp_cases import KEY_FRAMES, UPLINK, VXLAN_TEMPLATE


def flow_key(frame: bytes):
    return normalize(raw_flow_key(frame))

STRUCTS = {"hdr_key": HdrKeyC, "out_key": OutKeyC, "tun_key": TunKeyC,
           "out_tun_key": OutTunKeyC, "flow_action": FlowActionC, "port_info": PortInfoC,
           "mac_key": MacKeyC, "last_result": LastResultC}


def _c_fields(struct_name: str) -> list[str]:
    text = (BPF_SOURCE_DIR / "hostsdn_structs.h").read_text()
    body = re.search(rf"struct {struct_name} \{{(.*?)\n\}};", text, re.DOTALL)
    assert body, struct_name
    names = []
    for line in body.group(1).splitlines():
        m = re.match(r"\s*(?:struct\s+)?\w+\s+(\w+)(\[\d+\])?;", line)
        if m:
            names.append(m.group(1))
    return names


@pytest.mark.parametrize("name", list(STRUCTS))
def test_ctypes_fields_follow_the_header(name: str) -> None:
    assert [f[0] for f in STRUCTS[name]._fields_] == _c_fields(name)


def test_ctypes_offsets_equal_the_c_compiler_layout(tmp_path: Path) -> None:
    cc = os.environ.get("HOSTSDN_CLANG") or shutil.which("clang") or shutil.which("cc")
    if not cc:
        pytest.skip("no C compiler (clang) installed")
    lines = []
    for cname, ctype in STRUCTS.items():
        lines.append(f'printf("{cname} size %zu\\n", sizeof(struct {cname}));')
        for fname, *_ in ctype._fields_:
            lines.append(f'printf("{cname}.{fname} %zu\\n", offsetof(struct {cname}, {fname}));')
    src = tmp_path / "layout.c"
    src.write_text(textwrap.dedent("""\
        #include <stdio.h>
        #include <stddef.h>
        #include "hostsdn_structs.h"
        int main(void) {
        %s
        return 0; }
        """) % "\n".join(lines))
    exe = tmp_path / "layout"
    subprocess.run([cc, f"-I{BPF_SOURCE_DIR}", str(src), "-o", str(exe)], check=True,
                   capture_output=True)
    out = subprocess.run([str(exe)], check=True, capture_output=True, text=True).stdout
    c_layout = dict(line.rsplit(" ", 1) for line in out.splitlines())
    for cname, ctype in STRUCTS.items():
        assert int(c_layout[f"{cname} size"]) == ctypes.sizeof(ctype), cname
        for fname, *_ in ctype._fields_:
            assert int(c_layout[f"{cname}.{fname}"]) == getattr(ctype, fname).offset, \
                f"{cname}.{fname}"


def _defines() -> dict[str, int]:
    text = (BPF_SOURCE_DIR / "hostsdn_consts.h").read_text()
    values = {}
    for name, expr in re.findall(r"#define\s+(\w+)\s+([^/\n]+)", text):
        expr = re.sub(r"\b(0x[0-9a-fA-F]+|\d+)u\b", r"\1", expr.strip())
        shift = re.fullmatch(r"\((\d+) << (\d+)\)", expr)
        if shift:
            values[name] = int(shift.group(1)) << int(shift.group(2))
        elif re.fullmatch(r"0x[0-9a-fA-F]+|\d+", expr):
            values[name] = int(expr, 0)
    return values


def test_constants_equal_the_header() -> None:
    defines = _defines()
    for name in ("HOSTSDN_NO_PORT", "HOSTSDN_NO_VNI", "HOSTSDN_MAX_FLOWS", "HOSTSDN_MAX_PORTS",
                 "HOSTSDN_MAX_TUNNEL_FLOWS",
                 "ACT_F_DROP", "ACT_F_DECAP", "ACT_F_ENCAP", "ACT_F_TCP_FLAGS_TO_HOST",
                 "SET_SRC_MAC", "SET_DST_MAC", "SET_SRC_IP", "SET_DST_IP", "SET_SRC_PORT",
                 "SET_DST_PORT", "SET_DSCP", "HIT_OUT", "HIT_IN", "ENCAP_LEN"):
        assert getattr(layout, name) == defines[name], name
    assert layout.VXLAN_PORT == defines["VXLAN_PORT"]
    assert layout.PortKind.VM == defines["PORT_KIND_VM"]
    assert layout.PortKind.UPLINK == defines["PORT_KIND_UPLINK"]
    c_reasons = {k[2:]: v for k, v in defines.items() if k.startswith("R_")}
    assert c_reasons == {r.name: r.value for r in Reason}


def test_entropy_constants_equal_the_hosts() -> None:
    from hostsdn.packet import tunnel

    defines = _defines()
    assert defines["ENTROPY_PORT_MIN"] == tunnel.ENTROPY_PORT_MIN
    assert defines["ENTROPY_PORT_SPAN"] == tunnel.ENTROPY_PORT_SPAN
    assert defines["FNV32_OFFSET"] == tunnel.FNV32_OFFSET
    assert defines["FNV32_PRIME"] == tunnel.FNV32_PRIME
    assert defines["ENTROPY_INPUT_LEN"] == len(tunnel.entropy_input(ip_version=4))


# ----------------------------------------------------------------- encoding

@pytest.mark.parametrize("name", list(KEY_FRAMES))
def test_key_encoding_round_trips_and_matches_ctypes(name: str) -> None:
    key = flow_key(KEY_FRAMES[name])
    tunnel = key.inner is not None
    assert flow_map("in", key) == ("in_tun_flows" if tunnel else "in_flows")
    assert flow_map("out", key) == ("out_tun_flows" if tunnel else "out_flows")
    raw_in, raw_out = encode_key(key, None), encode_key(key, 7)
    assert decode_key(flow_map("in", key), raw_in) == (None, key)
    assert decode_key(flow_map("out", key), raw_out) == (7, key)
    if tunnel:
        c_out = OutTunKeyC.from_buffer_copy(raw_out)
        assert bytes(c_out.key) == raw_in
        c = TunKeyC.from_buffer_copy(raw_in)
        assert c.vni == key.vni and c.inner.proto == key.inner.proto
        outer = c.outer
    else:
        c_out = OutKeyC.from_buffer_copy(raw_out)
        assert bytes(c_out.outer) == raw_in
        outer = HdrKeyC.from_buffer_copy(raw_in)
    assert c_out.port_id == 7
    assert outer.ip_version == key.ip_version
    assert outer.proto == key.proto
    assert bytes(outer.src_mac) == key.src_mac
    assert int.from_bytes(outer.src_port.to_bytes(2, sys.byteorder), "big") == key.src_port
    if key.ip_version == 4:
        assert int.from_bytes(outer.src_ip[3].to_bytes(4, sys.byteorder), "big") == key.src_ip


def test_action_encoding_round_trips() -> None:
    t = Transposition(decap=True, set_src_mac=b"\x02" * 6, set_dst_ip=0x0A000001,
                      set_src_port=65535, set_dst_port=0, set_dscp=63, encap=VXLAN_TEMPLATE)
    raw = encode_action(t, dest_port_id=UPLINK, tcp_flags_to_host=False)
    decoded = decode_action(raw)
    assert decoded.transposition == t
    assert (decoded.drop, decoded.dest_port_id, decoded.tcp_flags_to_host) == \
        (False, UPLINK, False)
    c = FlowActionC.from_buffer_copy(raw)
    assert c.flags == layout.ACT_F_DECAP | layout.ACT_F_ENCAP
    assert c.set_mask == (layout.SET_SRC_MAC | layout.SET_DST_IP | layout.SET_SRC_PORT
                          | layout.SET_DST_PORT | layout.SET_DSCP)
    assert bytes(c.encap) == VXLAN_TEMPLATE
    assert (c.packets, c.bytes, c.last_used_ns) == (0, 0, 0)
    dropped = decode_action(encode_action(Transposition(), drop=True))
    assert dropped.drop and dropped.dest_port_id is None and dropped.tcp_flags_to_host


@pytest.mark.parametrize("kwargs,match", [
    ({"t": Transposition()}, "needs dest_port_id"),
    ({"t": Transposition(encap=b"\0" * 70), "dest_port_id": 1}, "70 bytes"),
    ({"t": Transposition(encap=build_vxlan_template(
        src_mac=b"\x02" * 6, dst_mac=b"\x02" * 6, src_ip=1, dst_ip=2, ip_version=4,
        src_port=1, vni=1, vlan=5)), "dest_port_id": 1}, "54 bytes"),
    ({"t": Transposition(set_dscp=64), "dest_port_id": 1}, "DSCP"),
    ({"t": Transposition(set_src_port=70000), "dest_port_id": 1}, "cannot encode"),
])
def test_bad_actions_raise(kwargs: dict[str, Any], match: str) -> None:
    with pytest.raises(NicError, match=match):
        encode_action(**kwargs)


class _FakeMap:
    def __init__(self, name: str, key_size: int, value_size: int) -> None:
        self.name, self.key_size, self.value_size = name, key_size, value_size


def test_map_layout_check_names_the_mismatch() -> None:
    maps = {name: _FakeMap(name, ctypes.sizeof(k), ctypes.sizeof(v))
            for name, (k, v) in layout.EXPECTED_MAP_LAYOUTS.items()}
    check_map_layouts(maps)
    maps["in_flows"] = _FakeMap("in_flows", 64, ctypes.sizeof(FlowActionC))
    del maps["tx_ports"]
    with pytest.raises(NicError, match=r"in_flows: key size 64 in the object, 56 in "
                                       r"layout.py; map tx_ports missing"):
        check_map_layouts(maps)


# ----------------------------------------------------------------- lazy libbpf, build

def test_import_works_without_libbpf_and_use_raises(tmp_path: Path) -> None:
    script = textwrap.dedent("""\
        import ctypes, ctypes.util
        real = ctypes.CDLL
        def fake(name, *a, **k):
            if name and "bpf" in str(name):
                raise OSError(f"{name}: cannot open shared object file")
            return real(name, *a, **k)
        ctypes.CDLL = fake
        import hostsdn.nic.xdp, hostsdn.nic.xdp.datapath, hostsdn.nic.xdp.layout
        from hostsdn.nic.xdp import libbpf
        from hostsdn.errors import NicError
        assert not libbpf.available()
        try:
            hostsdn.nic.xdp.datapath.XdpDatapath().open("/nonexistent.o")
        except NicError as exc:
            print("NicError:", exc)
        """)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                         env=env, check=True).stdout
    assert out.startswith("NicError: libbpf is not available")


def test_libbpf_errors_carry_errno_text(xdp_ready: None) -> None:
    from hostsdn.nic.xdp import libbpf
    with pytest.raises(libbpf.LibbpfError, match=r"bpf_map_update_elem\(999999\): Bad file "
                                                 r"descriptor \[EBADF\]") as info:
        libbpf.map_update_elem(999999, b"\0" * 4, b"\0" * 4)
    assert info.value.errno == 9 and isinstance(info.value, NicError)


def test_build_is_cached_and_rebuilt_on_change(xdp_ready: None, tmp_path: Path) -> None:
    obj = build_object(tmp_path)
    assert obj == tmp_path / OBJECT_NAME
    mtime = obj.stat().st_mtime_ns
    assert build_object(tmp_path).stat().st_mtime_ns == mtime        # up to date: no rebuild
    (tmp_path / (OBJECT_NAME + ".stamp")).write_text("stale\n")      # sources "changed"
    assert build_object(tmp_path).stat().st_mtime_ns != mtime


def test_build_failure_is_a_nic_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOSTSDN_CLANG", "/bin/false")
    with pytest.raises(NicError, match="clang failed"):
        build_object(tmp_path)


def test_build_entry_point(xdp_ready: None, tmp_path: Path) -> None:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    out = subprocess.run([sys.executable, "-m", "hostsdn.nic.xdp.build", "--out-dir",
                          str(tmp_path)], capture_output=True, text=True, env=env, check=True)
    assert out.stdout.strip() == str(tmp_path / OBJECT_NAME)
