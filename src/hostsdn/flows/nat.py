"""SNAT port allocation, shared by every port of the switch.

One public address may be shared by many VMs, so allocation is global, keyed like Linux
(``nf_nat_used_tuple``): a translated source (ip, port) is taken for a given
(protocol, remote ip, remote port).  Like Linux, the original source port is kept when it
is free and inside the allowed range; otherwise the next free port in the range is used.
"""

from __future__ import annotations

from dataclasses import dataclass, field

Remote = tuple[int, int, int, int]  # proto, ip_version, remote ip, remote port


@dataclass(slots=True)
class SnatAllocator:
    """Tracks which (nat ip, nat port) are in use towards each remote endpoint."""

    _used: dict[tuple[int, int, int, int, int, int], int] = field(default_factory=dict)
    _cursor: dict[tuple[int, int], int] = field(default_factory=dict)

    def allocate(self, *, proto: int, ip_version: int, nat_ip: int, remote_ip: int,
                 remote_port: int, wanted_port: int, lo: int, hi: int) -> int | None:
        """Return a free source port for ``nat_ip`` towards the remote, or None if exhausted."""
        base = (proto, ip_version, nat_ip, remote_ip, remote_port)
        if lo <= wanted_port <= hi and (*base, wanted_port) not in self._used:
            self._take(base, wanted_port)
            return wanted_port
        span = hi - lo + 1
        start = self._cursor.get((proto, nat_ip), lo)
        for i in range(span):
            port = lo + (start - lo + i) % span
            if (*base, port) not in self._used:
                self._cursor[(proto, nat_ip)] = port + 1 if port < hi else lo
                self._take(base, port)
                return port
        return None

    def _take(self, base: tuple[int, int, int, int, int], port: int) -> None:
        k = (*base, port)
        self._used[k] = self._used.get(k, 0) + 1

    def release(self, *, proto: int, ip_version: int, nat_ip: int, remote_ip: int,
                remote_port: int, port: int) -> None:
        k = (proto, ip_version, nat_ip, remote_ip, remote_port, port)
        n = self._used.get(k, 0)
        if n <= 1:
            self._used.pop(k, None)
        else:
            self._used[k] = n - 1

    def shadow(self) -> SnatAllocator:
        """A view that allocates and releases without changing this allocator (see
        ``hostsdn.flows.overlay``)."""
        from hostsdn.flows.overlay import CowMap

        return SnatAllocator(CowMap(self._used), CowMap(self._cursor))  # type: ignore[arg-type]

    def in_use(self) -> int:
        return len(self._used)
