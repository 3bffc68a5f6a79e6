"""A controller that is not built in decides from the sandbox while this process drives
live generation: same actions, answer and bill as in process; the episode's bookkeeping
and the backend stay on the trusted side."""

from __future__ import annotations

import inspect

import pytest

from mlflow_autotts.controllers import cmc, parallel_probe
from mlflow_autotts.controllers.loading import ControllerSpec
from mlflow_autotts.errors import BackendError
from mlflow_autotts.live.backends.base import BackendUnavailable
from mlflow_autotts.sandbox.session import SandboxedController
from tests.helpers import live_episode

LENGTHS = [13, 30, 7, 22, 40, 18, 9, 27]


@pytest.mark.parametrize("module, cls, beta", [(cmc, "ConfidenceMomentum", 0.5), (parallel_probe, "ParallelProbe", 0.5)])
def test_a_sandboxed_controller_drives_a_live_episode_like_the_same_code_in_process(module, cls, beta):
    source = inspect.getsource(module)
    name = module.__name__.rsplit(".", 1)[1]
    params = {"chains": 6, "T": 5, "warm_up": 2, "patience": 2} if name == "parallel_probe" else {}
    trusted, _ = live_episode(LENGTHS, max_branches=8, lookahead=3)
    answer = ControllerSpec(name, beta, params).build().solve(trusted)
    boxed, _ = live_episode(LENGTHS, max_branches=8, lookahead=3)
    with SandboxedController(source.replace("@register_controller\n", ""), cls, beta, params) as ctrl:
        got = ctrl.solve(boxed)
    assert (got, boxed.tokens_used, boxed.branches_opened, boxed.intervals) == \
        (answer, trusted.tokens_used, trusted.branches_opened, trusted.intervals)
    assert boxed.stats().generated_tokens == trusted.stats().generated_tokens


def test_a_backend_failure_under_a_sandboxed_controller_reaches_the_server_not_the_controller():
    ep, backend = live_episode(LENGTHS)
    backend.fail_with = BackendUnavailable("the vLLM server is down")
    with SandboxedController(inspect.getsource(cmc).replace("@register_controller\n", ""), "ConfidenceMomentum", 0.5) as ctrl:
        with pytest.raises(BackendError, match="the vLLM server is down"):
            ctrl.solve(ep)
