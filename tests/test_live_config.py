"""LiveConfig: documented defaults and validation errors that name the field."""

from __future__ import annotations

import ast
import inspect
import itertools
from dataclasses import fields

import pytest

from mlflow_autotts.errors import AutoTTSError
from mlflow_autotts.live.config import LiveConfig, LiveConfigError


def test_every_field_has_a_docstring():
    tree = ast.parse(inspect.getsource(LiveConfig))
    body = tree.body[0].body
    documented = {
        stmt.target.id for stmt, nxt in itertools.pairwise(body)
        if isinstance(stmt, ast.AnnAssign) and isinstance(nxt, ast.Expr) and isinstance(nxt.value, ast.Constant)
    }
    assert {f.name for f in fields(LiveConfig)} <= documented


def test_defaults_follow_the_replay_protocol_and_the_measured_probe():
    cfg = LiveConfig(model="m")
    assert cfg.interval_tokens == 500 and cfg.lookahead == 1 and cfg.backend == "vllm"
    assert cfg.probe_suffix.endswith("\\boxed{")


@pytest.mark.parametrize("field, value", [
    ("interval_tokens", 0), ("max_tokens_per_branch", -1), ("max_branches", 1.5), ("lookahead", 0),
    ("probe_tokens", True), ("temperature", -0.1), ("top_p", 0.0), ("top_p", 1.5), ("seed", -1),
    ("top_logprobs", 21), ("request_timeout", 0), ("overall_timeout", float("nan")), ("backend", "tgi"),
    ("probe_suffix", "Answer:"), ("model", " "), ("dtype", "int8"), ("max_retries", -1),
])
def test_a_bad_value_is_refused_with_a_message_naming_the_field(field, value):
    kwargs = {"model": "m", field: value}
    with pytest.raises(LiveConfigError) as err:
        LiveConfig(**kwargs)
    assert err.value.field == field
    assert field in str(err.value)
    assert isinstance(err.value, AutoTTSError)


def test_the_server_backend_needs_a_url():
    with pytest.raises(LiveConfigError, match="base_url"):
        LiveConfig(model="m", backend="openai")
    assert LiveConfig(model="m", backend="openai", base_url="http://127.0.0.1:8000/v1").base_url


def test_the_recorded_sampling_settings_leave_out_secrets_and_timeouts():
    sampling = LiveConfig(model="m").sampling()
    assert "api_key_env" not in sampling and "request_timeout" not in sampling
    assert sampling["temperature"] == 0.7 and sampling["interval_tokens"] == 500


def test_importing_live_loads_neither_mlflow_nor_the_engine():
    import subprocess
    import sys

    code = ("import sys, mlflow_autotts.live, mlflow_autotts.live.recording, mlflow_autotts.live.server; "
            "print(sorted(m for m in ('mlflow', 'vllm', 'torch', 'transformers', 'openai') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
