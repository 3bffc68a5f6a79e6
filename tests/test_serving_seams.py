"""The serving layer's two seams: a serving mode registered by name and a controller runner
chosen by the kind of code plug into ``ControllerModel.predict`` without changing it."""

from __future__ import annotations

import sys

import pandas as pd
import pytest
from mlflow.exceptions import MlflowException

from mlflow_autotts.controllers.base import build_controller
from mlflow_autotts.controllers.loading import ControllerSpec
from mlflow_autotts.data.trajectory import Branches
from mlflow_autotts.replay.episode import ReplayEpisode
from mlflow_autotts.serving import modes as mode_registry
from mlflow_autotts.serving import runners
from mlflow_autotts.serving.modes import RowResult, register_mode
from mlflow_autotts.serving.model_config import candidate_config, model_config_for
from mlflow_autotts.serving.payload import RequestParams, Row
from mlflow_autotts.serving.pyfunc import ControllerModel
from mlflow_autotts.serving.runners import ControllerFailed, InProcessRunner, in_process
from tests.helpers import import_source, random_set

SET = random_set(n_problems=3, n_branches=8, seed=5)

SOURCE = '''\
from mlflow_autotts.controllers.base import Controller


class FirstFinal(Controller):
    name = "first_final"

    def solve(self, episode):
        return episode.get_new_branch_final_answer()
'''


class EchoMode:
    """A stand-in for a generation backend: no trajectory, the question is the only branch."""

    name = "echo"
    required_columns: dict[str, str] = {}

    def __init__(self, config):
        self.controller_label = config["controller"]

    def solve_row(self, controller, row: Row, request: RequestParams) -> RowResult:
        episode = ReplayEpisode(Branches.from_lists(row.question, 10, [[row.question]], [7], [row.question.upper()]))
        answer = controller.solve(episode)
        return RowResult(answer, episode.tokens_used, episode.branches_opened, episode.intervals,
                         extra={"beta_used": controller.beta, "model": self.controller_label})


def _model(ref: str, beta: float | None = 0.5) -> ControllerModel:
    config, source = model_config_for(ControllerSpec(ref, beta))
    m = ControllerModel()
    m.setup(config, source.path)
    return m


def test_a_registered_serving_mode_answers_through_predict_with_its_own_columns(monkeypatch):
    monkeypatch.setattr(mode_registry.MODES, "_items", mode_registry.MODES.snapshot())
    register_mode("echo")(EchoMode)
    m = _model("sc", None)
    assert m.modes == ["echo", "live", "replay"]
    out = m.predict(None, pd.DataFrame({"question": ["six", "seven"]}), {"mode": "echo", "beta": 0.25})
    assert list(out["answer"]) == ["SIX", "SEVEN"] and list(out["tokens"]) == [7, 7]
    assert list(out["beta_used"]) == [0.25, 0.25] and list(out["model"]) == ["sc", "sc"]
    with pytest.raises(ValueError, match="serving mode 'echo' is already registered"):
        register_mode("echo")(type("OtherEcho", (EchoMode,), {}))


def test_an_unknown_mode_even_by_its_legacy_param_name_lists_the_registered_ones():
    with pytest.raises(MlflowException, match="unknown mode 'vllm'; valid modes: live, replay"):
        _model("cmc").predict(None, pd.DataFrame({"question": ["q"]}), {"backend": "vllm"})


class CrashOnCue:
    """A bound controller that fails like a sandboxed one would on the question "crash"."""

    def __init__(self, inner, label):
        self.inner, self.label, self.beta = inner, label, inner.beta

    def solve(self, episode):
        if episode.question == "crash":
            raise ControllerFailed(f"controller {self.label!r} crashed in the sandbox")
        return self.inner.solve(episode)


class RecordingRunner:
    """A stand-in for the sandbox runner: records what it was asked to run."""

    made: list = []

    def __init__(self, config, source_path):
        self.label = config["controller"]
        self.cls = import_source(source_path, config["class_name"])  # the test's own source, in the test
        self.default_beta = float(config["beta"])
        RecordingRunner.made.append((config["class_name"], source_path))

    def bind(self, beta, deadline=None):
        return CrashOnCue(in_process(build_controller(self.cls, beta), self.label), self.label)


def test_source_controllers_run_through_the_source_runner_and_builtins_stay_in_process(tmp_path, monkeypatch):
    path = tmp_path / "first_final.py"
    path.write_text(SOURCE)
    items = runners.RUNNERS.snapshot()
    items["source"] = runners.RunnerEntry(f"{__name__}:RecordingRunner")
    monkeypatch.setattr(runners.RUNNERS, "_items", items)
    RecordingRunner.made = []
    assert isinstance(_model("cmc").runner, InProcessRunner) and RecordingRunner.made == []

    m = ControllerModel()
    m.setup(candidate_config(SOURCE, "FirstFinal", "first_final", 0.5), path)  # never imported here
    assert isinstance(m.runner, RecordingRunner) and RecordingRunner.made == [("FirstFinal", path)]
    df = pd.DataFrame({"question": [SET.problems[0].question, "crash"],
                       "trajectory": [SET.problems[0].branches.triples(), SET.problems[1].branches.triples()]})
    out = m.predict(None, df, {})
    assert out["answer"][0] == SET.problems[0].branches.final_answers[0] and out["error"][0] is None
    assert out["answer"][1] is None and out["error"][1] == "controller 'first_final' crashed in the sandbox"


def test_a_controller_bug_is_that_rows_error_but_a_serving_mode_bug_fails_the_request(monkeypatch):
    class Broken(EchoMode):
        name = "broken"

        def solve_row(self, controller, row, request):
            raise KeyError("a bug in the serving mode")

    monkeypatch.setattr(mode_registry.MODES, "_items", mode_registry.MODES.snapshot())
    register_mode("broken")(Broken)
    with pytest.raises(KeyError):
        _model("sc", None).predict(None, pd.DataFrame({"question": ["q"]}), {"mode": "broken"})


def test_source_controllers_are_served_from_the_sandbox_by_default(tmp_path):
    """Without a stand-in, a served source-file controller runs in sandbox children: the
    answers are the in-process ones, and the runner never imported the source here."""
    from mlflow_autotts.serving.sandbox_runner import SandboxRunner

    path = tmp_path / "FirstFinal.py"
    path.write_text(SOURCE)
    before = set(sys.modules)
    m = ControllerModel()
    m.setup(candidate_config(SOURCE, "FirstFinal", "first_final", 0.5), path)
    assert isinstance(m.runner, SandboxRunner)
    assert not [name for name in set(sys.modules) - before if "autotts_controller" in name]
    df = pd.DataFrame({"question": [SET.problems[0].question, SET.problems[1].question],
                       "trajectory": [SET.problems[0].branches.triples(), SET.problems[1].branches.triples()]})
    out = m.predict(None, df, {})
    assert list(out["answer"]) == [SET.problems[k].branches.final_answers[0] for k in (0, 1)]
    assert list(out["error"]) == [None, None]
