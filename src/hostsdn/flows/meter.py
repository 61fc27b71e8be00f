"""Token-bucket meters referenced by flows.

A meter is created per rule that carries a ``meter`` action, so every flow created by
that rule shares one bucket.  Host and NIC consult the same ``MeterTable`` (the model of
a NIC meter that the host path also charges), which keeps verdicts identical whichever
side processes a packet.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field


@dataclass(slots=True)
class TokenBucket:
    """rate in units/s (packets or bits); burst in units (packets or bytes*8)."""

    rate: float
    burst: float
    per_bit: bool
    tokens: float = -1.0
    last: float | None = None
    passed: int = 0
    dropped: int = 0

    def __post_init__(self) -> None:
        if self.tokens < 0:
            self.tokens = self.burst

    def cost(self, frame_len: int) -> float:
        return frame_len * 8.0 if self.per_bit else 1.0

    def refill(self, now: float) -> None:
        if self.last is not None and now > self.last:
            self.tokens = min(self.burst, self.tokens + (now - self.last) * self.rate)
        if self.last is None or now > self.last:
            self.last = now

    def admit(self, frame_len: int, now: float) -> bool:
        self.refill(now)
        c = self.cost(frame_len)
        if self.tokens >= c:
            self.tokens -= c
            self.passed += 1
            return True
        self.dropped += 1
        return False


@dataclass(slots=True)
class MeterTable:
    """Meters by id (the deciding rule's id)."""

    meters: dict[str, TokenBucket] = field(default_factory=dict)

    def ensure(self, meter_id: str, rate: float, burst: float, per_bit: bool) -> None:
        if meter_id not in self.meters:
            self.meters[meter_id] = TokenBucket(rate=rate, burst=burst, per_bit=per_bit)

    def admit_all(self, meter_ids: tuple[str, ...], frame_len: int, now: float) -> str | None:
        """Charge each meter in order; return the id of the first that refuses, else None."""
        for mid in meter_ids:
            if not self.meters[mid].admit(frame_len, now):
                return mid
        return None

    def configure(self, configs: dict[str, tuple[float, float, bool]]) -> list[str]:
        """After a policy change: a meter whose ``(rate, burst, per_bit)`` differs from
        ``configs`` starts afresh with the new parameters (a full bucket), a meter missing
        from ``configs`` goes; meters with the same parameters keep their state.  Returns
        the ids replaced or removed."""
        changed = []
        for mid, bucket in list(self.meters.items()):
            want = configs.get(mid)
            if want is None:
                del self.meters[mid]
                changed.append(mid)
            elif want != (bucket.rate, bucket.burst, bucket.per_bit):
                self.meters[mid] = TokenBucket(rate=want[0], burst=want[1], per_bit=want[2])
                changed.append(mid)
        return changed

    def shadow(self, copier: Callable[[TokenBucket], TokenBucket]) -> MeterTable:
        """A view whose buckets are copies (taken when first charged): charging it leaves
        this table's tokens alone (``hostsdn trace``)."""
        from hostsdn.flows.overlay import CowMap

        return MeterTable(CowMap(self.meters, copier))  # type: ignore[arg-type]

    def reset(self) -> None:
        self.meters.clear()
