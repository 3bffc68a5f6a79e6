"""ControllerModel: request parsing, predict semantics and the saved models-from-code pyfunc."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from mlflow.exceptions import MlflowException

from mlflow_autotts.controllers import cmc as cmc_module
from mlflow_autotts.controllers.loading import ControllerSpec, source_label
from mlflow_autotts.replay.episode import ReplayEpisode, replay_cost, shuffle_order
from mlflow_autotts.serving.model_config import candidate_config, model_config_for
from mlflow_autotts.serving.payload import TrajectoryError, parse_trajectory
from mlflow_autotts.serving.pyfunc import ControllerModel
from mlflow_autotts.tracking.model import save_controller_model
from tests.helpers import random_set

SET = random_set(n_problems=5, n_branches=24, seed=3)


def _model(ref: str = "cmc", beta: float | None = 0.5, params: dict | None = None) -> ControllerModel:
    """A ControllerModel set up from its config, as MLflow's loader would."""
    spec = ControllerSpec(ref, beta, params or {})
    if spec.is_builtin:
        config, source = model_config_for(spec)
        m = ControllerModel()
        m.setup(config, source.path)
        return m
    text, class_name = spec.source()  # a source is never built here: its config from facts
    label, class_name = source_label(text, class_name, ref)
    m = ControllerModel()
    m.setup(candidate_config(text, class_name, label, 0.5 if beta is None else beta, params), ref.partition(":")[0])
    return m


def _frame(problems, form: str = "triples") -> pd.DataFrame:
    cells = []
    for p in problems:
        t = p.branches.triples()
        if form == "columns":
            t = {"probe_answers": [b[0] for b in t], "branch_tokens": [b[1] for b in t], "final_answer": [b[2] for b in t]}
        elif form == "json":
            t = json.dumps(t)
        elif form == "numpy":  # what pandas gives for a Parquet list column
            t = _object_array([_object_array([np.array(b[0], dtype=object), np.int64(b[1]), b[2]]) for b in t])
        cells.append(t)
    return pd.DataFrame({"question": [p.question for p in problems], "trajectory": cells})


def _object_array(items: list) -> np.ndarray:
    out = np.empty(len(items), dtype=object)
    for k, x in enumerate(items):
        out[k] = x
    return out


def _direct(spec: ControllerSpec, problems, seed: int) -> list[tuple]:
    controller = spec.build()
    out = []
    for p in problems:
        order = None if seed < 0 else shuffle_order(p.branches.n_branches, seed)
        ep = ReplayEpisode(p.branches, order)
        answer = controller.solve(ep)
        out.append((answer, ep.tokens_used, ep.branches_opened, ep.intervals))
    return out


def _rows(df: pd.DataFrame) -> list[tuple]:
    return list(zip(df["answer"], df["tokens"].tolist(), df["branches_opened"].tolist(), df["intervals"].tolist()))


@pytest.mark.parametrize("form", ["triples", "columns", "json", "numpy"])
@pytest.mark.parametrize("ref,beta,params", [("cmc", 0.5, {}), ("sc", None, {"n": 8}), ("parallel_probe", None, {})])
def test_predict_equals_direct_replay(form, ref, beta, params):
    m = _model(ref, beta, params)
    for seed in (-1, 0, 7):
        out = m.predict(None, _frame(SET.problems, form), {"shuffle_seed": seed})
        assert list(out.columns) == ["answer", "tokens", "branches_opened", "intervals", "error"]
        assert out["error"].isna().all()
        assert _rows(out) == _direct(ControllerSpec(ref, beta, params), SET.problems, seed)


def test_beta_override_and_actions_replay_to_the_same_cost():
    m = _model("cmc", 0.5)
    df = _frame(SET.problems)
    out = m.predict(None, df, {"beta": 1.0, "shuffle_seed": 2, "return_actions": True})
    assert _rows(out) == _direct(ControllerSpec("cmc", 1.0), SET.problems, 2)
    assert _rows(out) != _rows(m.predict(None, df, {"shuffle_seed": 2}))  # β really changed the spend
    for p, row in zip(SET.problems, out.itertuples()):
        actions = [tuple(a) for a in json.loads(row.actions)]
        order = shuffle_order(p.branches.n_branches, 2)
        assert replay_cost(p.branches, order, actions) == (row.tokens, row.branches_opened, row.intervals)


def test_interval_tokens_column_changes_the_charge():
    m = _model("cmc", 0.5)
    df = _frame(SET.problems)
    df["interval_tokens"] = [250] * len(df)
    out = m.predict(None, df, {"shuffle_seed": 1})
    controller = ControllerSpec("cmc", 0.5).build()
    expected = []
    for p in SET.problems:
        ep = ReplayEpisode(parse_trajectory(p.branches.triples(), p.question, 250), shuffle_order(p.branches.n_branches, 1))
        answer = controller.solve(ep)
        expected.append((answer, ep.tokens_used, ep.branches_opened, ep.intervals))
    assert _rows(out) == expected
    assert _rows(out) != _rows(m.predict(None, _frame(SET.problems), {"shuffle_seed": 1}))


@pytest.mark.parametrize("value,message", [
    ([[["1"], 500]], "branch 0: expected 3 fields"),
    ([[["1"], 500, "1"], [["2"], 600]], "branch 1: expected 3 fields [probe_answers, branch_tokens, final_answer], got 2"),
    ([[["1"], -5, "1"]], "branch 0: branch_tokens must be >= 0"),
    ([[["1"], "500", "1"]], "branch 0: branch_tokens must be an integer"),
    ([[["1"], True, "1"]], "branch 0: branch_tokens must be an integer"),
    ([[["1", 7], 500, "1"]], "branch 0: probe_answers[1] must be a string"),
    ([[["1"], 500, 1]], "branch 0: final_answer must be a string"),
    ([[["1"], 500, "1"], "oops"], "branch 1: expected 3 fields [probe_answers, branch_tokens, final_answer], got str"),
    ([], "trajectory has no branches"),
    (None, "trajectory is missing"),
    (float("nan"), "trajectory is missing"),
    (42, "trajectory must be a list"),
    ("[[", "trajectory is not valid JSON"),
    ({"probe_answers": [["1"]], "branch_tokens": [500]}, "trajectory columns miss final_answer"),
    ({"probe_answers": [["1"]], "branch_tokens": [500, 600], "final_answer": ["1"]}, "different lengths"),
])
def test_malformed_trajectory_is_named(value, message):
    with pytest.raises(TrajectoryError) as err:
        parse_trajectory(value, "q")
    assert message in str(err.value)


def test_a_bad_row_gets_its_own_error_and_the_others_are_answered():
    m = _model("cmc", 0.5)
    df = _frame(SET.problems[:3])
    bad = SET.problems[1].branches.triples()
    bad[4] = bad[4][:2]
    df.at[1, "trajectory"] = bad
    out = m.predict(None, df, {"shuffle_seed": 0})
    assert out["error"][0] is None and out["error"][2] is None
    assert "branch 4: expected 3 fields" in out["error"][1]
    assert out["answer"][1] is None and pd.isna(out["tokens"][1])
    good = _direct(ControllerSpec("cmc", 0.5), [SET.problems[0], SET.problems[2]], 0)
    assert [_rows(out)[0], _rows(out)[2]] == good


def test_every_row_bad_fails_the_request_with_the_reasons():
    m = _model("cmc", 0.5)
    df = pd.DataFrame({"question": ["a", "b"], "trajectory": [[[["1"], 5]], "nope"]})
    with pytest.raises(MlflowException) as err:
        m.predict(None, df, {})
    assert err.value.error_code == "INVALID_PARAMETER_VALUE"
    assert "row 0: branch 0: expected 3 fields" in err.value.message
    assert "row 1: trajectory is not valid JSON" in err.value.message


@pytest.mark.parametrize("df,params,message", [
    (pd.DataFrame({"question": ["q"]}), {"backend": "replay"}, "needs the column 'trajectory'"),
    (pd.DataFrame({"trajectory": [[]]}), {}, "missing the column 'question'"),
    (_frame(SET.problems[:1]), {"mode": "vllm"}, "unknown mode 'vllm'; valid modes: live, replay"),
    (_frame(SET.problems[:1]), {"beta": 1.5}, "invalid beta 1.5"),
])
def test_request_errors_are_400s(df, params, message):
    with pytest.raises(MlflowException) as err:
        _model().predict(None, df, params)
    assert err.value.error_code == "INVALID_PARAMETER_VALUE" and message in err.value.message
    assert err.value.get_http_status_code() == 400


def test_a_failing_controller_is_a_row_error(tmp_path):
    src = tmp_path / "boom.py"
    src.write_text("from mlflow_autotts.controllers.base import Controller\n\n"
                   "class Boom(Controller):\n    name = 'boom'\n"
                   "    def solve(self, episode):\n        episode.probe_new()\n        raise RuntimeError('bad luck')\n")
    out = _model(str(src), 0.5).predict(None, _frame(SET.problems[:2]), {})
    # a source-file controller is served from the sandbox: its failure comes back from there
    assert list(out["error"]) == ["controller 'boom' failed in the sandbox: exception: solve() raised "
                                  "RuntimeError: bad luck"] * 2


def test_saved_model_loads_through_pyfunc_and_matches(tmp_path):
    import mlflow

    path = save_controller_model(ControllerSpec("cmc", 0.25), tmp_path / "model")
    assert (path / "artifacts" / "cmc.py").read_text() == Path(cmc_module.__file__).read_text()
    loaded = mlflow.pyfunc.load_model(str(path))
    sig = loaded.metadata.signature
    assert sig.inputs.input_names() == ["question", "trajectory", "interval_tokens"]
    assert {p.name: p.default for p in sig.params} == {"beta": 0.25, "mode": "auto", "backend": "", "shuffle_seed": -1,
                                                        "return_actions": False}
    reqs = (path / "requirements.txt").read_text().split()
    assert all("==" in r for r in reqs) and any(r.startswith("mlflow==") for r in reqs)
    out = loaded.predict(_frame(SET.problems), params={"shuffle_seed": 4})
    assert _rows(out) == _direct(ControllerSpec("cmc", 0.25), SET.problems, 4)
    with pytest.raises(MlflowException, match="missing inputs"):
        loaded.predict(pd.DataFrame({"trajectory": [[]]}))


PROBE_SOURCE = '''\
from mlflow_autotts.controllers.base import Controller


class ProbeTwo(Controller):
    name = "probe_two"

    def __init__(self, beta: float = 0.5, depth: int = 3):
        super().__init__(beta, depth=depth)
        self.depth = int(depth)

    def solve(self, episode):
        answer, i, done = episode.probe_new()
        for _ in range(self.depth):
            if done:
                break
            answer, done = episode.probe_more(i)
        return answer
'''


def test_candidate_config_equals_the_trusted_config_of_the_same_source(tmp_path):
    """What a built-in's config holds, a candidate's holds from facts (the source is never
    built outside the sandbox, so the trusted side cannot build it to compare)."""
    import hashlib

    builtin, _ = model_config_for(ControllerSpec("cmc", 0.25))
    config = candidate_config(PROBE_SOURCE, "ProbeTwo", "probe_two", 0.25, {"depth": 3})
    assert config.keys() == builtin.keys()
    assert config == {"autotts": 1, "controller": "probe_two", "class_name": "ProbeTwo", "registry_name": None,
                      "source_file": "ProbeTwo.py", "source_sha256": hashlib.sha256(PROBE_SOURCE.encode()).hexdigest(),
                      "beta": 0.25, "uses_beta": True, "params": {"depth": 3}}
    # a blank label falls back to the class name; the source file is always named after the class
    assert candidate_config(PROBE_SOURCE, "ProbeTwo", "  ", 0.25)["controller"] == "ProbeTwo"


@pytest.mark.parametrize("kwargs,message", [
    ({"source": "class ProbeTwo(:\n"}, "candidate source does not parse (line 1)"),
    ({"class_name": "Other"}, "candidate source defines no top-level class 'Other'"),
    ({"class_name": "../../etc/x"}, "candidate class name must be a Python identifier"),
    ({"label": "x" * 201}, "candidate label must be a string of at most 200 characters"),
    ({"label": None}, "candidate label must be a string"),
    ({"beta": 2.0}, "invalid beta 2.0"),
    ({"params": {"f": object()}}, "candidate params must be plain JSON values"),
    ({"params": {"f": float("nan")}}, "candidate params must be plain JSON values"),
    ({"source": b"class ProbeTwo: pass"}, "candidate source must be a string"),
])
def test_candidate_config_rejects_bad_facts(kwargs, message):
    from mlflow_autotts.errors import ControllerError

    args = {"source": PROBE_SOURCE, "class_name": "ProbeTwo", "label": "probe_two", "beta": 0.5, **kwargs}
    with pytest.raises(ControllerError) as err:
        candidate_config(**args)
    assert message in str(err.value)
