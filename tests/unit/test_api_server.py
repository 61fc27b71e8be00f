"""The API server itself (uvicorn in its thread) on a Unix socket, without the kernel:
socket mode, limits, slow clients, and `hostsdn reload`'s client against it."""

from __future__ import annotations

import socket
import stat
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from api_fixtures import Rig, make_rig
from hostsdn.api.server import ApiOptions, ApiServer, bind_unix, parse_listen, read_token
from hostsdn.errors import DaemonError


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[Rig, Path]]:
    rig = make_rig(tmp_path)
    path = tmp_path / "run" / "web.sock"
    server = ApiServer(rig.board, ApiOptions(head_timeout=0.5, max_clients=4),
                       bind_unix(path), None)
    server.start()
    try:
        yield rig, path
    finally:
        server.stop()


def test_unix_socket_is_0600_and_serves(served: tuple[Rig, Path]) -> None:
    _, path = served
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    with httpx.Client(transport=httpx.HTTPTransport(uds=str(path)),
                      base_url="http://x") as c:
        assert c.get("/v1/health").json()["status"] == "ok"


def test_a_client_trickling_its_head_is_cut_off_and_others_are_served(
        served: tuple[Rig, Path]) -> None:
    _, path = served
    slow = socket.socket(socket.AF_UNIX)
    slow.connect(str(path))
    slow.sendall(b"GET /v1/health HTTP/1.1\r\nHost: x\r\n")     # and never the blank line
    slow.settimeout(30)
    with httpx.Client(transport=httpx.HTTPTransport(uds=str(path)),
                      base_url="http://x") as c:
        assert c.get("/v1/health").status_code == 200
    assert slow.recv(100) == b""              # closed by the server, no answer
    slow.close()


def test_too_many_clients_get_503_not_a_hang(served: tuple[Rig, Path]) -> None:
    _, path = served
    idle = []
    for _ in range(4):
        sk = socket.socket(socket.AF_UNIX)
        sk.connect(str(path))
        idle.append(sk)
    try:
        with httpx.Client(transport=httpx.HTTPTransport(uds=str(path)),
                          base_url="http://x") as c:
            end = time.monotonic() + 10        # once the server has accepted the four
            while (status := c.get("/v1/health").status_code) != 503 \
                    and time.monotonic() < end:
                time.sleep(0.05)
            assert status == 503
    finally:
        for sk in idle:
            sk.close()


def test_listen_and_token_options(tmp_path: Path) -> None:
    assert parse_listen("127.0.0.1:9464") == ("127.0.0.1", 9464)
    assert parse_listen("[::1]:0") == ("::1", 0)
    for bad in ("9464", "host:", "h:99999", ":80"):
        with pytest.raises(ValueError, match="is not HOST:PORT"):
            parse_listen(bad)
    token = tmp_path / "token"
    token.write_text("\n")
    token.chmod(0o600)
    with pytest.raises(DaemonError, match="is empty"):
        read_token(str(token))
    token.write_text("abc\n")
    token.chmod(0o644)
    with pytest.raises(DaemonError, match=r"readable by others \(mode 0644\); chmod 600"):
        read_token(str(token))
    token.chmod(0o600)
    assert read_token(str(token)) == "abc"
