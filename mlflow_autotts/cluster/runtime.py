"""The connection to a Ray cluster, and the data a driver ships to it once.

``connect`` joins the cluster at ``RAY_ADDRESS`` (``ray start --head`` prints it) or, when
that is unset, starts a local Ray instance for this process. ``DataRefs`` puts each list of
trajectory sets into Ray's object store once per driver, however many tasks or candidates
use it; ``resolve`` on a worker deserialises an object once per worker process and keeps
it, so the sandbox's per-dataset encoding cache (keyed by object identity) hits across
candidates there as it does locally.
"""

from __future__ import annotations

import logging
import os
import threading
from collections import OrderedDict
from typing import Any

import ray

MAX_RETRIES = 3
"""Times Ray re-runs a task whose worker died (lost, killed, out of memory). A task's own
error (a controller's, the sandbox's refusal) is never retried: it comes back from ``fetch``."""

_CONNECT_LOCK = threading.Lock()


def connect(num_cpus: int | None = None) -> int:
    """Join (or start) the cluster once per process; returns the CPUs it has in all.

    ``num_cpus`` caps a local instance started here; a cluster at ``RAY_ADDRESS`` has the
    CPUs its nodes were started with."""
    with _CONNECT_LOCK:
        if not ray.is_initialized():
            address = os.environ.get("RAY_ADDRESS") or None
            ray.init(address=address, num_cpus=None if address else num_cpus, include_dashboard=False,
                     log_to_driver=False, logging_level=logging.WARNING)
    return max(1, int(ray.cluster_resources().get("CPU", 1)))


class DataRefs:
    """Object-store references of the driver's data, one ``ray.put`` per distinct object.

    Keyed by identity: callers pass the same loaded ``TrajectorySet`` lists again and again
    (every candidate of a search, every β); the objects are kept alive with their refs."""

    def __init__(self) -> None:
        self._refs: dict[tuple[int, ...], tuple[Any, ray.ObjectRef]] = {}
        self._lock = threading.Lock()

    def ref(self, items: list[Any]) -> ray.ObjectRef:
        key = tuple(id(x) for x in items)
        with self._lock:
            hit = self._refs.get(key)
            if hit is None:
                hit = self._refs[key] = (list(items), ray.put(list(items)))
            return hit[1]


_RESOLVED: OrderedDict[str, Any] = OrderedDict()
_RESOLVED_SIZE = 4


def resolve(ref: ray.ObjectRef) -> Any:
    """The object behind ``ref``, deserialised once per worker process (a few kept)."""
    key = ref.hex()
    hit = _RESOLVED.get(key)
    if hit is None:
        hit = _RESOLVED[key] = ray.get(ref)
        while len(_RESOLVED) > _RESOLVED_SIZE:
            _RESOLVED.popitem(last=False)
    else:
        _RESOLVED.move_to_end(key)
    return hit


def fetch(refs: Any) -> Any:
    """``ray.get(refs)``, raising the error a task raised as its own type when it survived
    the trip (a controller's ``ControllerError``, a sandbox's ``ValueError``), else Ray's."""
    try:
        return ray.get(refs)
    except ray.exceptions.RayTaskError as exc:
        cause = getattr(exc, "cause", None)
        raise (cause if isinstance(cause, BaseException) else exc) from None
