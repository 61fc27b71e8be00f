"""The control channel: work other threads (the management API) hand to the packet loop.

The switch is not thread-safe and must not be: the packet loop's thread owns it.  Another
thread that wants to read or change it ``submit``\\s a job (a function of no arguments);
the loop runs the pending jobs between two batches of frames (``run_pending``) and the
caller gets the result through a ``concurrent.futures.Future`` (``asyncio.wrap_future``
for an event loop).  The loop never waits for a client: a job only computes on the
switch's state and returns plain data; serialising and writing it to the client happens
in the caller's thread.

Bounds: at most ``max_pending`` jobs wait at once (``ControlBusy`` beyond: the API
answers 503), and one wake-up of the loop runs at most ``batch`` of them, so a flood of
requests delays forwarding by at most ``batch`` short jobs per batch of frames.
"""

from __future__ import annotations

import collections
import threading
from collections.abc import Callable
from concurrent.futures import Future
from typing import Any, TypeVar

from hostsdn.errors import DaemonError

__all__ = ["ControlBusy", "ControlChannel", "ControlClosed"]

T = TypeVar("T")

MAX_PENDING = 64
BATCH = 8


class ControlBusy(DaemonError):
    """Too many control requests are waiting for the packet loop."""


class ControlClosed(DaemonError):
    """The packet loop has stopped (or not started): nothing will run the request."""


class ControlChannel:
    """A bounded queue of jobs into the packet loop's thread (see module docstring)."""

    def __init__(self, *, max_pending: int = MAX_PENDING, batch: int = BATCH) -> None:
        self.max_pending = max_pending
        self.batch = batch
        self._jobs: collections.deque[tuple[Callable[[], Any], Future[Any]]] = \
            collections.deque()
        self._lock = threading.Lock()
        self._wake: Callable[[], None] | None = None
        self._closed = False
        self.served = 0
        self.refused_busy = 0

    def attach(self, wake: Callable[[], None]) -> None:
        """The loop is ready: ``wake()`` makes it look at the queue (thread-safe)."""
        with self._lock:
            self._wake = wake
            pending = bool(self._jobs)
        if pending:
            wake()

    def submit(self, job: Callable[[], T]) -> Future[T]:
        """Queue ``job`` for the loop's thread.  Raises ``ControlBusy`` / ``ControlClosed``."""
        fut: Future[T] = Future()
        with self._lock:
            if self._closed:
                raise ControlClosed("the switch is stopping")
            if len(self._jobs) >= self.max_pending:
                self.refused_busy += 1
                raise ControlBusy(f"{len(self._jobs)} control requests are already waiting "
                                  f"for the switch; try again")
            self._jobs.append((job, fut))
            wake = self._wake
        if wake is not None:
            wake()
        return fut

    def pending(self) -> int:
        return len(self._jobs)

    def run_pending(self) -> int:
        """Run up to ``batch`` queued jobs here (the loop's thread); returns how many ran.
        A job's exception goes to its future, never out of here."""
        ran = 0
        while ran < self.batch:
            with self._lock:
                if not self._jobs:
                    break
                job, fut = self._jobs.popleft()
            ran += 1
            if not fut.set_running_or_notify_cancel():
                continue                      # the client gave up before we got to it
            try:
                fut.set_result(job())
            except BaseException as exc:  # noqa: BLE001  (handed to the caller)
                fut.set_exception(exc)
        self.served += ran
        return ran

    def close(self) -> None:
        """No more jobs: the waiting ones fail with ``ControlClosed``."""
        with self._lock:
            self._closed = True
            jobs, self._jobs = list(self._jobs), collections.deque()
        for _, fut in jobs:
            if fut.set_running_or_notify_cancel():
                fut.set_exception(ControlClosed("the switch stopped before it ran the request"))
