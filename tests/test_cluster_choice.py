"""Choosing the executor by name: the local objects by default, clear errors otherwise
(the Ray objects themselves are tested on a real cluster in ``test_ray.py``)."""

from __future__ import annotations

import pytest

from mlflow_autotts.cluster import choice
from mlflow_autotts.evaluation import EvaluateConfig
from mlflow_autotts.errors import AutoTTSError
from mlflow_autotts.replay.runner import LocalPool
from mlflow_autotts.sandbox.limits import SandboxLimits
from mlflow_autotts.sandbox.process import ProcessSandbox
from mlflow_autotts.search.config import SearchConfig


def test_local_is_the_default_everywhere():
    assert EvaluateConfig(data=("x.json",), controller="cmc").executor == "local"
    assert SearchConfig().executor == "local"
    assert isinstance(choice.chunk_executor("local"), LocalPool)
    assert isinstance(choice.sandbox("local", SandboxLimits()), ProcessSandbox)


def test_ray_where_it_is_not_installed_says_how_to_install_it(monkeypatch):
    monkeypatch.setattr(choice.importlib.util, "find_spec", lambda name: None)
    for make in (lambda: choice.chunk_executor("ray"), lambda: choice.sandbox("ray", SandboxLimits())):
        with pytest.raises(choice.ExecutorError, match=r"executor 'ray' needs Ray: pip install 'mlflow-autotts\[ray\]'"):
            make()


def test_an_unknown_executor_is_named_with_where_it_was_set():
    with pytest.raises(AutoTTSError, match="evaluate config: unknown executor 'dask'; valid: local, ray"):
        EvaluateConfig(data=("x.json",), controller="cmc", executor="dask")
    with pytest.raises(AutoTTSError, match="search config: unknown executor 'spark'; valid: local, ray"):
        SearchConfig(executor="spark")
    with pytest.raises(choice.ExecutorError, match="chunk_executor: unknown executor ''; valid: local, ray"):
        choice.chunk_executor("")
