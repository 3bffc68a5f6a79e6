"""The logged signature's outputs are what ``mlflow models serve`` returns.

The registry page shows a model's signature; it must list the columns a response really
holds. Fast: the in-process response of each mode against the declared columns. Slow: a
registered controller served by the real ``mlflow models serve``, one replay request and one
live request (generating on vLLM's server with the tiny model), each asking for actions: the
keys of their rows, together, are exactly the signature's output names.
"""

from __future__ import annotations

import json

import pandas as pd
import pytest
import requests

from mlflow_autotts.serving.columns import ACTIONS_COLUMN, LIVE_COLUMNS, RESPONSE_COLUMNS, ROW_COLUMNS
from mlflow_autotts.serving.modes import RowResult
from mlflow_autotts.serving.pyfunc import _response
from mlflow_autotts.tracking.model import input_example, model_signature
from tests.live_fixtures import _require_vllm
from tests.servers import served_model

NAME = "autotts-controller"
LIVE = {"interval_tokens": 32, "max_tokens_per_branch": 64, "lookahead": 8, "probe_tokens": 8,
        "request_timeout": 300, "overall_timeout": 600, "max_retries": 0, "seed": 1}


def test_the_signature_lists_every_response_column_optional_with_its_type():
    outputs = model_signature(0.5).outputs
    assert outputs.input_names() == list(RESPONSE_COLUMNS)
    assert all(not spec.required for spec in outputs.inputs)
    assert {s.name: s.type.name for s in outputs.inputs} == RESPONSE_COLUMNS


def test_the_in_process_response_has_the_declared_columns():
    live = RowResult("7", 120, 2, 4, actions="[]", extra={k: 1 for k in LIVE_COLUMNS})
    assert list(_response([live], record=True).columns) == list(RESPONSE_COLUMNS)
    replay = RowResult("7", 120, 2, 4)
    assert list(_response([replay], record=False).columns) == list(ROW_COLUMNS)
    assert list(_response([replay], record=True).columns) == [*ROW_COLUMNS, ACTIONS_COLUMN]


@pytest.mark.slow
@pytest.mark.vllm
def test_served_replay_and_live_rows_hold_exactly_the_signature_outputs(mlflow_store, tiny_model, vllm_server,
                                                                        tmp_path):
    _require_vllm()
    import mlflow
    from click.testing import CliRunner

    from mlflow_autotts.cli.main import main

    args = ["register", "cmc", "--beta", "0.5", "--alias", "champion", "--live-model", tiny_model,
            "--live-base-url", vllm_server.base_url] + [a for k, v in LIVE.items() for a in ("--live", f"{k}={v}")]
    res = CliRunner().invoke(main, args)
    assert res.exit_code == 0, res.output
    uri = f"models:/{NAME}@champion"
    outputs = mlflow.models.get_model_info(uri).signature.outputs.input_names()

    example = input_example()
    with served_model(uri, tmp_path) as url:
        def rows(frame: pd.DataFrame) -> list[dict]:
            body = {"dataframe_split": json.loads(frame.to_json(orient="split", index=False)),
                    "params": {"return_actions": True}}
            r = requests.post(f"{url}/invocations", json=body, timeout=600)
            assert r.status_code == 200, r.text[:1000]
            return r.json()["predictions"]

        replay = rows(example)
        live = rows(example[["question"]])
    assert replay[0]["error"] is None and live[0]["error"] is None, (replay, live)
    replay_keys, live_keys = list(replay[0]), list(live[0])
    assert live_keys == outputs  # a live row with actions holds every column, in the signature's order
    assert replay_keys == [c for c in outputs if c not in LIVE_COLUMNS]
    assert set(replay_keys) | set(live_keys) == set(outputs)
