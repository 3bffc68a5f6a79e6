"""The real ``mlflow models serve`` on a loopback port, answering replay requests for the champion."""

from __future__ import annotations

import json

import pytest
import requests

from mlflow_autotts.controllers.loading import ControllerSpec
from mlflow_autotts.data.json_io import read_json
from mlflow_autotts.replay.episode import ReplayEpisode, shuffle_order
from tests.servers import served_model

NAME = "autotts-controller"
PROBLEMS = (0, 7)
SEED = 3


def _strict_json(text: str):
    """JSON as the standard defines it: a NaN in a response is a bug."""
    def bad(constant):
        raise ValueError(f"non-standard JSON constant {constant}")

    return json.loads(text, parse_constant=bad)


@pytest.mark.slow
def test_served_champion_answers_replay_requests(mlflow_store, data_dir, tmp_path):
    from mlflow_autotts.tracking.model_registry import register

    register(ControllerSpec("cmc", 0.5), aliases=["champion"])
    path = data_dir / "Qwen3-1.7B" / "aime24.json"
    records = json.loads(path.read_text())
    ts = read_json(path)

    with served_model(f"models:/{NAME}@champion", tmp_path) as url:

        def post(columns, rows, params=None):
            body = {"dataframe_split": {"columns": columns, "data": rows}}
            if params is not None:
                body["params"] = params
            return requests.post(f"{url}/invocations", json=body, timeout=60)

        # two questions: one in the published triple form, one in the Parquet column form
        q0, q1 = (records[p] for p in PROBLEMS)
        columns_form = {"probe_answers": [b[0] for b in q1["each_branch"]],
                        "branch_tokens": [b[1] for b in q1["each_branch"]],
                        "final_answer": [b[2] for b in q1["each_branch"]]}
        r = post(["question", "trajectory"], [[q0["question"], q0["each_branch"]], [q1["question"], columns_form]],
                 {"shuffle_seed": SEED})
        assert r.status_code == 200, r.text
        predictions = _strict_json(r.text)["predictions"]
        controller = ControllerSpec("cmc", 0.5).build()
        for p, pred in zip(PROBLEMS, predictions):
            br = ts.problems[p].branches
            ep = ReplayEpisode(br, shuffle_order(br.n_branches, SEED))
            answer = controller.solve(ep)
            assert (pred["answer"], pred["tokens"], pred["branches_opened"], pred["intervals"], pred["error"]) == \
                (answer, ep.tokens_used, ep.branches_opened, ep.intervals, None)

        # malformed requests: 4xx with a message that names the problem
        two_fields = [b[:2] if k == 5 else b for k, b in enumerate(q0["each_branch"])]
        cases = [
            (["question"], [[q0["question"]]], {"mode": "replay"}, "needs the column 'trajectory'"),
            (["trajectory"], [[q0["each_branch"]]], None, "missing inputs ['question']"),
            (["question", "trajectory"], [[q0["question"], two_fields]], None,
             "branch 5: expected 3 fields [probe_answers, branch_tokens, final_answer], got 2 fields"),
            (["question", "trajectory"], [[q0["question"], q0["each_branch"]]], {"mode": "vllm"},
             "unknown mode 'vllm'; valid modes: live, replay"),
        ]
        for columns, rows, params, message in cases:
            r = post(columns, rows, params)
            assert 400 <= r.status_code < 500, (message, r.status_code, r.text[:500])
            assert message in _strict_json(r.text)["message"], (message, r.text[:1000])

        # a batch with one bad row: the others are answered, the bad one carries its error
        r = post(["question", "trajectory"], [[q0["question"], two_fields], [q1["question"], q1["each_branch"]]],
                 {"shuffle_seed": SEED})
        assert r.status_code == 200, r.text[:500]
        bad, good = _strict_json(r.text)["predictions"]
        assert bad["answer"] is None and bad["tokens"] is None and "branch 5: expected 3 fields" in bad["error"]
        assert good["error"] is None and (good["answer"], good["tokens"]) == \
            (predictions[1]["answer"], predictions[1]["tokens"])
