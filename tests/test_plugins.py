"""One way to plug things in: every pluggable part is a ``plugins.Registry``, a miss names
the kind, where it was asked for and the valid names, and a name cannot be taken twice."""

from __future__ import annotations

import pytest

from mlflow_autotts.cluster.choice import EXECUTOR_REGISTRY, ExecutorError
from mlflow_autotts.controllers.registry import CONTROLLERS
from mlflow_autotts.errors import AutoTTSError, ControllerError
from mlflow_autotts.live.backends import GENERATION_BACKENDS
from mlflow_autotts.live.config import BACKENDS
from mlflow_autotts.plugins import Registry, UnknownPlugin
from mlflow_autotts.search.job import EXPLORERS
from mlflow_autotts.serving import live_mode, replay_mode  # noqa: F401  (they register "live" and "replay")
from mlflow_autotts.serving.modes import MODES
from mlflow_autotts.serving.runners import RUNNERS


def test_a_registry_registers_looks_up_and_names_a_miss():
    reg: Registry[int] = Registry("widget")
    reg.add("b", 2)
    assert reg.register("a")(1) == 1
    assert reg.get("a") == 1 and reg.names() == ["a", "b"] and list(reg) == ["a", "b"]
    assert "a" in reg and "c" not in reg and 3 not in reg
    with pytest.raises(UnknownPlugin, match=r"^where: unknown widget 'c'; valid: a, b$"):
        reg.get("c", "where")
    with pytest.raises(UnknownPlugin, match=r"unknown widget \['a'\]"):
        reg.get(["a"])  # an unhashable name is a miss, not a TypeError
    assert isinstance(UnknownPlugin("x"), AutoTTSError)


def test_a_name_is_taken_once_but_the_same_object_may_register_again():
    reg: Registry[object] = Registry("widget")
    first = object()
    reg.add("a", first)
    reg.add("a", first)  # a module imported twice registers the same object again
    with pytest.raises(ValueError, match="widget 'a' is already registered by object"):
        reg.add("a", object())
    for bad in ("", None):
        with pytest.raises(ValueError, match="needs a non-empty name"):
            reg.add(bad, first)


def test_snapshot_and_restore_leave_the_registry_as_it_was():
    reg: Registry[int] = Registry("widget")
    reg.add("a", 1)
    saved = reg.snapshot()
    reg.add("b", 2)
    reg.restore(saved)
    assert reg.names() == ["a"]


def test_every_pluggable_part_is_a_registry_with_its_own_error():
    assert {"cmc", "sc", "asc", "esc"} <= set(CONTROLLERS.names())
    assert MODES.names() == ["live", "replay"]
    assert RUNNERS.names() == ["builtin", "source"]
    assert EXECUTOR_REGISTRY.names() == ["local", "ray"]
    assert EXPLORERS.names() == ["evolve", "openai"]
    assert GENERATION_BACKENDS.names() == sorted(BACKENDS)  # what LiveConfig accepts can be built
    with pytest.raises(ControllerError, match="unknown controller 'nope'; valid: "):
        CONTROLLERS.get("nope")
    with pytest.raises(ExecutorError, match="unknown executor 'dask'; valid: local, ray"):
        EXECUTOR_REGISTRY.get("dask")
