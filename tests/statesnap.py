"""A deep, comparable snapshot of everything a datapath holds (for "changed nothing"
tests): every object reachable from the switch, the offload manager and the NIC model,
walked generically (dataclass slots, __dict__, containers), so a field nobody thought of
is compared too.  Left out: the compiled policy (immutable values, the ports' compiled
anti-spoofing checks and the classifiers' lookup caches, which only speed lookups up)."""

from __future__ import annotations

import enum
import itertools
import random
from typing import Any

from hostsdn.flows.pipeline import CompiledLayer, Walker
from hostsdn.flows.portsec import PortGuard
from hostsdn.policy import model as pm

_SKIP = (CompiledLayer, PortGuard, pm.Policy, pm.Port, pm.Layer, pm.Rule)
_LEAF = (int, float, str, bytes, bool, type(None), enum.Enum)


def snapshot(root: Any) -> Any:
    seen: dict[int, int] = {}
    keep: list[Any] = []          # keeps walked objects alive so ids stay unique

    def walk(o: Any) -> Any:
        if isinstance(o, _LEAF):
            return o
        if isinstance(o, _SKIP) or callable(o) and not hasattr(o, "__dict__") \
                and not hasattr(o, "__slots__"):
            return ("skip", type(o).__name__)
        if isinstance(o, Walker):
            return ("walker",)     # policy + the meters/snat it shares (walked elsewhere)
        if isinstance(o, tuple) and not hasattr(o, "_fields"):
            return tuple(walk(x) for x in o)
        if hasattr(o, "_fields"):                           # NamedTuple (FlowKey)
            return o
        if id(o) in seen:
            return ("ref", seen[id(o)])
        seen[id(o)] = len(seen)
        keep.append(o)
        if isinstance(o, random.Random):
            return ("rng", o.getstate())
        if isinstance(o, itertools.count):
            return ("count", repr(o))
        if isinstance(o, dict):
            return ("dict", type(o).__name__,
                    tuple((walk(k), walk(v)) for k, v in o.items()))
        if isinstance(o, list):
            return ("list", tuple(walk(x) for x in o))
        if isinstance(o, (set, frozenset)):
            return ("set", tuple(sorted(repr(walk(x)) for x in o)))
        fields: dict[str, Any] = {}
        for cls in type(o).__mro__:
            for name in getattr(cls, "__slots__", ()):
                if hasattr(o, name):
                    fields[name] = getattr(o, name)
        fields.update(getattr(o, "__dict__", {}))
        return (type(o).__name__, tuple((k, walk(v)) for k, v in sorted(fields.items())))

    return walk(root)


def datapath_snapshot(dp: Any) -> Any:
    return snapshot((dp.switch, dp.manager, dp.backend, dp.counters, dp.drop_reasons))
