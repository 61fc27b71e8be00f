"""Serving the management API from a running ``up``: uvicorn in its own thread.

``api_service(options)`` is a service for ``runtime.serving.serve``: once the datapath
exists it binds the Unix socket ``<run dir>/<stem>.sock`` (mode 0600) and, when asked
(``--api-listen HOST:PORT``), a TCP socket, and runs uvicorn (h11: no HTTP parsing of
ours) on them in one thread with its own event loop.  Handlers reach the switch only
through the control channel (``api.app.Board``), so the packet loop never waits for a
client.

Limits (a slow or hostile client cannot stall forwarding, nor take the API down for
long): request bodies over ``max_body`` bytes get 413 before they are read further
(``BodyLimit``); request heads over 16 KiB are refused by h11; at most ``max_clients``
connections at once (503 beyond: uvicorn's ``limit_concurrency``); idle keep-alive
connections close after ``keepalive`` s, and a connection that has not completed a
request head within ``HEAD_TIMEOUT`` s (slowloris) is closed; a request waits at most ``JOB_TIMEOUT`` for the
loop (504).  On TCP every request needs ``Authorization: Bearer <token>`` (the token file
given at start; compared with ``hmac.compare_digest``), else 401; with ``--api-cert`` /
``--api-key`` the TCP listener speaks TLS.  The Unix socket is guarded by its mode.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import json
import logging
import os
import socket
import stat
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import uvicorn

from hostsdn.api.app import Board, create_app
from hostsdn.errors import DaemonError
from hostsdn.runtime.logs import log_event
from hostsdn.runtime.serving import ServeContext, Service

__all__ = ["ApiOptions", "BearerAuth", "BodyLimit", "api_service", "parse_listen",
           "read_token"]

MAX_BODY = 1 << 20
MAX_CLIENTS = 32
KEEPALIVE = 5.0
MAX_HEAD = 16 * 1024
HEAD_TIMEOUT = 10.0
"""A connection that has not completed a request head for this long is closed (a client
trickling its headers would otherwise hold a connection slot for ever: uvicorn times
out only idle keep-alive connections)."""
START_TIMEOUT = 10.0


@dataclass(frozen=True, slots=True)
class ApiOptions:
    listen: tuple[str, int] | None = None
    """TCP address to serve on too (None: the Unix socket only)."""
    token: str | None = None
    """Bearer token every TCP request must carry (None: TCP without auth)."""
    certfile: str | None = None
    keyfile: str | None = None
    """TLS for the TCP listener."""
    max_body: int = MAX_BODY
    max_clients: int = MAX_CLIENTS
    keepalive: float = KEEPALIVE
    head_timeout: float = HEAD_TIMEOUT


def parse_listen(text: str) -> tuple[str, int]:
    """``HOST:PORT`` (``[::1]:PORT`` for IPv6) -> (host, port); ``ValueError`` if not."""
    host, sep, port = text.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ValueError(f"{text!r} is not HOST:PORT (e.g. 127.0.0.1:9464)")
    return host.strip("[]"), int(port)


def read_token(path: str) -> str:
    """The bearer token in ``path`` (first line, stripped): it must not be empty, and the
    file must not be readable by others."""
    p = Path(path)
    try:
        mode = p.stat().st_mode
        lines = p.read_text().strip().splitlines()
    except OSError as exc:
        raise DaemonError(f"cannot read the API token file {path}: {exc.strerror or exc}") \
            from None
    token = lines[0].strip() if lines else ""
    if not token:
        raise DaemonError(f"the API token file {path} is empty")
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise DaemonError(f"the API token file {path} is readable by others "
                          f"(mode {stat.S_IMODE(mode):04o}); chmod 600 it")
    return token


async def _problem(send: Any, status: int, detail: str, kind: str,
                   headers: Sequence[tuple[bytes, bytes]] = ()) -> None:
    body = json.dumps({"detail": detail, "kind": kind, "errors": [], "differences": [],
                       "file": None, "line": None, "field": None}).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"),
                            (b"content-length", str(len(body)).encode()),
                            (b"connection", b"close"), *headers]})
    await send({"type": "http.response.body", "body": body})


class BodyLimit:
    """ASGI middleware: a request body over ``max_body`` bytes is a 413 (by its
    Content-Length before reading, or while a chunked body streams in)."""

    def __init__(self, app: Any, max_body: int) -> None:
        self.app = app
        self.max_body = max_body

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        too_big = (f"request body larger than {self.max_body} bytes "
                   f"(the limit of this API)")
        for name, value in scope["headers"]:
            if name == b"content-length":
                if not value.isdigit():
                    await _problem(send, 400, "malformed Content-Length", "request")
                    return
                if int(value) > self.max_body:
                    await _problem(send, 413, too_big, "too_large")
                    return
        # read the (small) body here, so an over-long chunked one is refused before the
        # app sees any of it
        chunks: list[bytes] = []
        size = 0
        more = True
        disconnected = None
        while more:
            msg = await receive()
            if msg["type"] != "http.request":
                disconnected = msg
                break
            chunk = msg.get("body", b"")
            size += len(chunk)
            if size > self.max_body:
                await _problem(send, 413, too_big, "too_large")
                return
            chunks.append(chunk)
            more = msg.get("more_body", False)
        replayed = False

        async def replay() -> Any:
            nonlocal replayed
            if not replayed:
                replayed = True
                if disconnected is not None:
                    return disconnected
                return {"type": "http.request", "body": b"".join(chunks), "more_body": False}
            return await receive()

        await self.app(scope, replay, send)


class BearerAuth:
    """ASGI middleware for the TCP listener: ``Authorization: Bearer <token>``."""

    def __init__(self, app: Any, token: str) -> None:
        self.app = app
        self.token = token.encode()

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        given = None
        for name, value in scope["headers"]:
            if name == b"authorization":
                given = value
        challenge = [(b"www-authenticate", b'Bearer realm="hostsdn"')]
        if given is None:
            await _problem(send, 401, "this TCP listener needs 'Authorization: Bearer "
                                      "<token>' (the token file given to up)", "auth",
                           challenge)
            return
        scheme, _, token = given.partition(b" ")
        if scheme.lower() != b"bearer" or not hmac.compare_digest(token.strip(), self.token):
            await _problem(send, 401, "wrong bearer token", "auth", challenge)
            return
        await self.app(scope, receive, send)


def bind_unix(path: Path) -> socket.socket:
    """A listening Unix socket at ``path``, mode 0600 from the start (umask), replacing a
    stale one (``up`` checked no live switch owns it)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with contextlib.suppress(FileNotFoundError):
        path.unlink()
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    old = os.umask(0o177)
    try:
        sock.bind(str(path))
    finally:
        os.umask(old)
    os.chmod(path, 0o600)
    sock.listen(128)
    sock.setblocking(False)
    return sock


def bind_tcp(host: str, port: int) -> socket.socket:
    try:
        sock = socket.create_server((host, port), family=socket.AF_INET6 if ":" in host
                                    else socket.AF_INET, backlog=128, reuse_port=False)
    except OSError as exc:
        raise DaemonError(f"cannot listen on {host}:{port} for the API: "
                          f"{exc.strerror or exc}") from None
    sock.setblocking(False)
    return sock


def _config(app: Any, options: ApiOptions, *, tls: bool) -> uvicorn.Config:
    return uvicorn.Config(
        app, http="h11", ws="none", lifespan="off", log_config=None, access_log=False,
        server_header=False, date_header=False, limit_concurrency=options.max_clients,
        timeout_keep_alive=int(max(1, options.keepalive)),
        h11_max_incomplete_event_size=MAX_HEAD,
        ssl_certfile=options.certfile if tls else None,
        ssl_keyfile=options.keyfile if tls else None)


class ApiServer:
    """uvicorn on the given sockets, in a thread of its own (see module docstring)."""

    def __init__(self, board: Board, options: ApiOptions, unix: socket.socket,
                 tcp: socket.socket | None, logger: logging.Logger | None = None) -> None:
        app = create_app(board)
        self.options = options
        self.log = logger
        self.servers: list[tuple[uvicorn.Server, socket.socket]] = [
            (uvicorn.Server(_config(BodyLimit(app, options.max_body), options, tls=False)),
             unix)]
        if tcp is not None:
            tcp_app: Any = BodyLimit(app, options.max_body)
            if options.token is not None:
                tcp_app = BearerAuth(tcp_app, options.token)
            tls = options.certfile is not None
            self.servers.append((uvicorn.Server(_config(tcp_app, options, tls=tls)), tcp))
        for server, _ in self.servers:
            server.config.load()            # TLS files are read here: errors before ready
        self._thread = threading.Thread(target=self._run, name="hostsdn-api", daemon=True)
        self._error: BaseException | None = None

    async def _reap_slow_heads(self) -> None:
        """Close connections with no request in progress for ``head_timeout`` s."""
        limit = self.options.head_timeout
        waiting: dict[int, tuple[object, float]] = {}
        loop = asyncio.get_running_loop()
        while not all(s.should_exit for s, _ in self.servers):
            await asyncio.sleep(min(1.0, limit / 4))
            now = loop.time()
            seen = set()
            for server, _ in self.servers:
                for proto in list(server.server_state.connections):
                    cycle = getattr(proto, "cycle", None)
                    if cycle is not None and not getattr(cycle, "response_complete", True):
                        continue                    # a request is being served
                    key = id(proto)
                    seen.add(key)
                    mark = waiting.get(key)
                    if mark is None or mark[0] is not cycle:
                        waiting[key] = (cycle, now)
                    elif now - mark[1] >= limit:
                        transport = getattr(proto, "transport", None)
                        if transport is not None:
                            transport.close()
            for key in set(waiting) - seen:
                del waiting[key]

    def _run(self) -> None:
        async def main() -> None:
            await asyncio.gather(*(s.serve(sockets=[sock]) for s, sock in self.servers),
                                 self._reap_slow_heads())
        try:
            asyncio.run(main())
        except BaseException as exc:  # noqa: BLE001  (reported by start / the log)
            self._error = exc
            if self.log is not None:
                log_event(self.log, logging.ERROR, "api", f"hostsdn up: the API stopped: "
                          f"{exc}", exc_info=True)

    def start(self) -> None:
        self._thread.start()
        deadline = START_TIMEOUT
        step = 0.01
        while deadline > 0 and not all(s.started for s, _ in self.servers):
            if not self._thread.is_alive():
                raise DaemonError(f"the management API did not start: {self._error}")
            threading.Event().wait(step)
            deadline -= step
        if not all(s.started for s, _ in self.servers):
            raise DaemonError("the management API did not start in time")

    def stop(self) -> None:
        for server, _ in self.servers:
            server.should_exit = True
        self._thread.join(timeout=5.0)
        for _, sock in self.servers:
            with contextlib.suppress(OSError):
                sock.close()


def api_service(options: ApiOptions) -> Service:
    """The management API as a service of ``serve``."""

    @contextlib.contextmanager
    def run(ctx: ServeContext) -> Iterator[ApiServer]:
        unix = bind_unix(ctx.socket_path)
        tcp = None
        try:
            if options.listen is not None:
                tcp = bind_tcp(*options.listen)
                host, port = tcp.getsockname()[:2]
                ctx.info["api_tcp"] = f"{'[' + host + ']' if ':' in host else host}:{port}"
                ctx.info["api_tls"] = options.certfile is not None
                ctx.info["api_token"] = options.token is not None
            ctx.info["api_socket"] = str(ctx.socket_path)
            server = ApiServer(Board.from_context(ctx), options, unix, tcp, ctx.logger)
            server.start()
        except BaseException:
            unix.close()
            if tcp is not None:
                tcp.close()
            raise
        if options.listen is not None and options.token is None:
            log_event(ctx.logger, logging.WARNING, "api",
                      f"hostsdn up: the API on TCP {ctx.info['api_tcp']} has no token: "
                      f"anyone who reaches it can change the policy")
        try:
            yield server
        finally:
            server.stop()
            with contextlib.suppress(FileNotFoundError):
                ctx.socket_path.unlink()

    return run
