"""LiveConfig: documented defaults and validation errors that name the field."""

from __future__ import annotations

import ast
import inspect
import itertools
import re
from dataclasses import fields

import pytest

from mlflow_autotts.cli.model_registry import RegisterConfig
from mlflow_autotts.errors import AutoTTSError
from mlflow_autotts.live.config import LiveConfig, LiveConfigError, stored_live_config


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


def test_a_stored_live_section_and_the_operators_environment_make_one_live_config():
    stored = {"model": "m", "backend": "openai", "base_url": "http://model-chosen:1/v1", "temperature": 0.2}
    env = {"AUTOTTS_LIVE_BASE_URL": "http://operator:2/v1", "AUTOTTS_LIVE_LOOKAHEAD": "4", "AUTOTTS_LIVE_SEED": ""}
    got = stored_live_config(stored, env)
    assert got == LiveConfig("m", backend="openai", base_url="http://operator:2/v1", temperature=0.2, lookahead=4)
    assert stored_live_config(stored, {}) == LiveConfig(**stored)  # already-registered sections read as they are
    assert stored_live_config(None, {}) is None and stored_live_config({}, {"AUTOTTS_LIVE_TOP_P": "0.5"}) is None
    assert stored_live_config(None, {"AUTOTTS_LIVE_MODEL": "m"}) == LiveConfig("m")
    with pytest.raises(AutoTTSError, match=r"\$AUTOTTS_LIVE_LOOKAHEAD: invalid lookahead 'two'"):
        stored_live_config(stored, {"AUTOTTS_LIVE_LOOKAHEAD": "two"})
    with pytest.raises(LiveConfigError, match="live config: bogus is not a live setting"):
        stored_live_config({"model": "m", "bogus": 1}, {})


@pytest.mark.parametrize("field, value, message", [
    ("interval_tokens", 0, "interval_tokens must be >= 1, got 0"), ("seed", -1, "seed must be >= 0, got -1"),
    ("top_p", 0.0, "top_p must be > 0, got 0.0"), ("top_p", 1.5, "top_p must be <= 1, got 1.5"),
    ("top_logprobs", 21, "top_logprobs must be <= 20, got 21"), ("request_timeout", 0, "request_timeout must be > 0"),
    ("backend", "tgi", "backend must be one of vllm, openai, got 'tgi'"),
    ("dtype", "int8", "dtype must be one of float32, float16, bfloat16, auto, got 'int8'"),
    ("probe_tokens", True, "probe_tokens must be an integer, got True"),
    ("overall_timeout", float("inf"), "overall_timeout must be a finite number, got inf"),
])
def test_declared_bounds_refuse_with_one_message_shape(field, value, message):
    with pytest.raises(LiveConfigError, match=f"^live config: {re.escape(message)}"):
        LiveConfig(model="m", **{field: value})


def test_register_stores_the_live_settings_as_given_and_checks_them_the_way_serving_reads_them():
    cfg = RegisterConfig("sc", live_model="m", live_base_url="http://x:1/v1", live={"lookahead": "3", "seed": 2})
    stored = cfg.live_settings()
    assert stored == {"model": "m", "backend": "openai", "base_url": "http://x:1/v1", "lookahead": 3, "seed": 2}
    assert stored_live_config(stored, {"AUTOTTS_LIVE_SEED": "5"}) == LiveConfig(
        "m", backend="openai", base_url="http://x:1/v1", lookahead=3, seed=5)
    with pytest.raises(LiveConfigError, match="live config: lookahead must be >= 1, got 0"):
        RegisterConfig("sc", live_model="m", live={"lookahead": 0}).live_settings()
    with pytest.raises(AutoTTSError, match="register: unknown live setting 'base_url'"):
        RegisterConfig("sc", live_model="m", live={"base_url": "http://x:1/v1"}).live_settings()
