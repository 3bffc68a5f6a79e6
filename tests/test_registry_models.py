"""Registered controllers: log, register, alias, load in a fresh process, evaluate by URI, errors.

Real sqlite MLflow store (``mlflow_store``), real subprocesses, the published Qwen3-1.7B/aime24.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from click.testing import CliRunner

from mlflow_autotts.cli.main import main
from mlflow_autotts.controllers.base import build_controller
from mlflow_autotts.controllers.loading import ControllerSpec, split_source_ref
from mlflow_autotts.data.json_io import read_json
from mlflow_autotts.data.trajectory import Provenance
from mlflow_autotts.replay.episode import ReplayEpisode, shuffle_order
from mlflow_autotts.replay.runner import ReplayConfig, evaluate
from mlflow_autotts.tracking.resolve import logged_model_id, spec_from_model_uri
from tests.helpers import PROBE_VOTE, import_source

NAME = "autotts-controller"
SEED = 5


# PROBE_VOTE with side effects at import, in __init__ and in solve: each writes a marker file
MARKED_VOTE = (
    "import os\nfrom pathlib import Path\n\n"
    "MARKS = Path(os.environ['AUTOTTS_TEST_MARKS'])\n(MARKS / f'import-{os.getpid()}').touch()\n"
    + PROBE_VOTE.replace("class ProbeVote", "class MarkedVote").replace('name = "probe_vote"', 'name = "marked_vote"')
    .replace("        super().__init__(beta, depth=depth)\n",
             "        (MARKS / f'init-{os.getpid()}').touch()\n        super().__init__(beta, depth=depth)\n")
    .replace("        latest = []\n", "        (MARKS / f'solve-{os.getpid()}').touch()\n        latest = []\n"))

FRESH_PROCESS = '''\
import json, sys
import mlflow, pandas as pd
uri, data, seed = sys.argv[1], sys.argv[2], int(sys.argv[3])
records = json.load(open(data))
df = pd.DataFrame({"question": [r["question"] for r in records], "trajectory": [r["each_branch"] for r in records]})
out = mlflow.pyfunc.load_model(uri).predict(df, params={"shuffle_seed": seed})
import mlflow_autotts
print(json.dumps({"rows": [[a, int(t), int(b), int(i)] for a, t, b, i in
                           zip(out["answer"], out["tokens"], out["branches_opened"], out["intervals"])],
                  "errors": [e for e in out["error"] if e is not None],
                  "package": mlflow_autotts.__file__}))
'''


@pytest.fixture(scope="module")
def aime_1p7(data_dir) -> tuple[Path, object]:
    path = data_dir / "Qwen3-1.7B" / "aime24.json"
    return path, read_json(path, Provenance("Qwen3-1.7B", "aime24"))


def invoke(*args: str):
    result = CliRunner().invoke(main, list(args), catch_exceptions=False)
    return result


def direct_rows(spec: ControllerSpec, ts, seed: int) -> list[list]:
    src = split_source_ref(spec.ref)  # this test's own sources, imported here on purpose
    controller = spec.build() if src is None else build_controller(import_source(*src), spec.beta, spec.params)
    rows = []
    for p in ts.problems:
        ep = ReplayEpisode(p.branches, shuffle_order(p.branches.n_branches, seed))
        answer = controller.solve(ep)
        rows.append([answer, ep.tokens_used, ep.branches_opened, ep.intervals])
    return rows


def fresh_predict(tmp_path: Path, uri: str, data: Path, seed: int) -> dict:
    script = tmp_path / "fresh_predict.py"
    script.write_text(FRESH_PROCESS)
    env = {**os.environ, "MLFLOW_DISABLE_TELEMETRY": "true"}
    proc = subprocess.run([sys.executable, str(script), uri, str(data), str(seed)], capture_output=True, text=True,
                          env=env, cwd=tmp_path, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_registered_controllers_load_by_alias_in_a_fresh_process(mlflow_store, tmp_path, aime_1p7):
    from mlflow.tracking import MlflowClient

    data, ts = aime_1p7
    src = tmp_path / "probe_vote.py"
    src.write_text(PROBE_VOTE)

    r1 = invoke("register", "cmc", "--beta", "0.5", "--alias", "champion")
    assert r1.exit_code == 0, r1.output
    assert "version 1" in r1.output and f"models:/{NAME}@champion" in r1.output
    r2 = invoke("register", str(src), "--beta", "0.25", "--param", "depth=4", "--alias", "challenger")
    assert r2.exit_code == 0, r2.output
    assert "version 2" in r2.output

    client = MlflowClient()
    assert {a: str(v) for a, v in client.get_registered_model(NAME).aliases.items()} == {"champion": "1", "challenger": "2"}
    v2 = client.get_model_version(NAME, "2")
    # the version shows a few short tags; its logged model keeps the source hash and parameters
    assert v2.tags == {"autotts.controller": "probe_vote", "autotts.beta": "0.25",
                       "autotts.model_sha256": v2.tags["autotts.model_sha256"]}
    logged = client.get_logged_model(logged_model_id(v2.source))
    assert logged.name == "controller"  # the version's "source model": what it is, not an alias
    assert logged.tags["autotts.source_sha256"] == hashlib.sha256(PROBE_VOTE.encode()).hexdigest()
    assert json.loads(logged.tags["autotts.params"]) == {"depth": 4}
    assert client.get_model_version(NAME, "1").tags["autotts.controller"] == "cmc"

    for alias, spec in (("champion", ControllerSpec("cmc", 0.5)),
                        ("challenger", ControllerSpec(f"{src}:ProbeVote", 0.25, {"depth": 4}))):
        got = fresh_predict(tmp_path, f"models:/{NAME}@{alias}", data, SEED)
        assert got["errors"] == []
        assert got["rows"] == direct_rows(spec, ts, SEED), alias
        # the model carries its own copy of the package: it loads where mlflow_autotts is not installed
        assert "/code/mlflow_autotts/" in got["package"]

    # the logged source is the readable file itself, named after its class (registration
    # never imports a source file: the sandbox reported the class, checked against the AST)
    import mlflow

    local = Path(mlflow.artifacts.download_artifacts(f"models:/{NAME}@challenger"))
    assert (local / "artifacts" / "ProbeVote.py").read_text() == PROBE_VOTE


def test_evaluate_by_model_uri_gives_the_in_process_numbers(mlflow_store, tmp_path, aime_1p7):
    _, ts = aime_1p7
    assert invoke("register", "cmc", "--beta", "0.5", "--alias", "champion").exit_code == 0
    config = ReplayConfig(shuffles=4, workers=1, progress=False)
    spec = spec_from_model_uri(f"models:/{NAME}@champion")
    assert (spec.ref, spec.beta) == ("cmc", 0.5)
    (via_model,) = evaluate(spec, [ts], config)
    (in_process,) = evaluate(ControllerSpec("cmc", 0.5), [ts], config)
    assert (via_model.accuracy, via_model.mean_tokens) == (in_process.accuracy, in_process.mean_tokens)

    out = tmp_path / "results.json"
    r = invoke("evaluate", str(aime_1p7[0]), "--controller", f"models:/{NAME}@champion",
               "--shuffles", "4", "--workers", "1", "--no-progress", "--no-mlflow", "--output-json", str(out))
    assert r.exit_code == 0, r.output
    (row,) = json.loads(out.read_text())["results"]
    assert (row["controller"], row["beta"]) == ("cmc", 0.5)
    assert (row["accuracy"], row["mean_tokens"]) == (in_process.accuracy, in_process.mean_tokens)


def _log_foreign_model(tmp_path: Path) -> None:
    """A registered pyfunc that is not an autotts controller."""
    import mlflow

    code = tmp_path / "echo_model.py"
    code.write_text(textwrap.dedent('''\
        import mlflow
        import pandas as pd

        class Echo(mlflow.pyfunc.PythonModel):
            def predict(self, context, model_input: pd.DataFrame, params=None):
                return model_input

        mlflow.models.set_model(Echo())
    '''))
    with mlflow.start_run():
        mlflow.pyfunc.log_model(name="echo", python_model=str(code), pip_requirements=["mlflow"],
                                registered_model_name="foreign")
    mlflow.tracking.MlflowClient().set_registered_model_alias("foreign", "prod", "1")


def test_bad_model_uris_are_one_line_errors(mlflow_store, tmp_path, aime_1p7):
    data = str(aime_1p7[0])
    assert invoke("register", "cmc", "--alias", "champion").exit_code == 0
    _log_foreign_model(tmp_path)
    cases = {
        "models:/nope@champion": "registered model 'nope' does not exist",
        f"models:/{NAME}@staging": f"alias 'staging' is not set on registered model '{NAME}' (aliases set: champion -> v1)",
        f"models:/{NAME}/9": f"version 9 of registered model '{NAME}' does not exist",
        "models:/foreign@prod": "is not an autotts controller model",
        "runs:/0123456789abcdef/controller": "run '0123456789abcdef' does not exist",
        f"models:{NAME}": f"invalid model URI 'models:{NAME}': expected models:/<name>@<alias>, "
                          "models:/<name>/<version>, models:/<model id> or runs:/<run id>/<path>",
    }
    for uri, message in cases.items():
        r = invoke("evaluate", data, "--controller", uri, "--shuffles", "1", "--no-mlflow", "--no-progress")
        assert r.exit_code == 2, (uri, r.output)
        lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
        assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0], (uri, r.stderr)
    r = invoke("promote", "--from", "staging", "--gate", data)
    assert r.exit_code == 2 and "alias 'staging' is not set" in r.stderr
    r = invoke("register", "models:/foreign@prod")
    assert r.exit_code == 2 and "is not an autotts controller model" in r.stderr


def test_error_through_the_real_console_entry_is_one_line(mlflow_store, aime_1p7):
    proc = subprocess.run([sys.executable, "-m", "mlflow_autotts.cli", "evaluate", str(aime_1p7[0]), "--controller",
                           f"models:/{NAME}@champion", "--no-mlflow"], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2
    assert proc.stderr.strip() == f"error: model URI models:/{NAME}@champion: registered model '{NAME}' does not exist"
    assert "Traceback" not in proc.stdout + proc.stderr


def test_replay_metrics_are_on_the_run_and_the_logged_model_not_the_version(mlflow_store):
    from mlflow.tracking import MlflowClient

    from mlflow_autotts.tracking.model_registry import register

    metrics = {"accuracy.Qwen3-1.7B.aime24": 68.5, "mean_tokens.Qwen3-1.7B.aime24": 276267.0}
    reg = register(ControllerSpec("asc", None, {"threshold": 0.9}), aliases=["challenger"], metrics=metrics)
    client = MlflowClient()
    version = client.get_model_version(reg.name, reg.version)
    logged = client.get_logged_model(reg.model_id)
    assert logged.tags["autotts.controller"] == "asc" and logged.tags["autotts.registry_name"] == "asc"
    assert json.loads(logged.tags["autotts.params"]) == {"max_samples": 64, "threshold": 0.9}
    assert {k: float(logged.tags[f"autotts.metric.{k}"]) for k in metrics} == metrics
    assert client.get_run(reg.run_id).data.metrics == metrics
    # asc ignores β: the version says which controller it is, and nothing longer
    assert set(version.tags) == {"autotts.controller", "autotts.model_sha256"}
    assert version.tags["autotts.controller"] == "asc"


def test_the_registered_model_says_what_it_is_and_how_to_serve_it(mlflow_store):
    from mlflow.tracking import MlflowClient

    from mlflow_autotts.serving.columns import RESPONSE_COLUMNS
    from mlflow_autotts.tracking.model_card import TITLE
    from mlflow_autotts.tracking.model_registry import register

    client = MlflowClient()
    register(ControllerSpec("cmc", 0.5), name="arith", aliases=["champion"])
    model = client.get_registered_model("arith")
    assert model.tags == {"autotts.kind": "test-time-scaling controller (pyfunc)",
                          "autotts.serve": "autotts serve models:/arith@champion"}
    text = model.description
    assert text.startswith(TITLE)
    assert not re.search(r"(^|\s)@\w", text)  # MLflow's UI would render an @name as a link to a GitHub user
    for needed in ("autotts serve models:/arith@champion",
                   "mlflow models serve -m models:/arith@champion --env-manager local",
                   "`@challenger`", "`@candidate`", "`@champion`", "autotts promote --name arith",
                   *(f"`{c}`" for c in RESPONSE_COLUMNS)):
        assert needed in text, needed

    # refreshed on every registration; words someone wrote in the UI are kept, the tags refreshed
    client.update_registered_model("arith", description=text.replace("Serve it.", "Serve it!"))
    client.delete_registered_model_tag("arith", "autotts.serve")
    register(ControllerSpec("cmc", 0.75), name="arith")
    assert client.get_registered_model("arith").description == text
    client.update_registered_model("arith", description="Ours: ask Ana before serving.")
    register(ControllerSpec("cmc", 0.25), name="arith")
    model = client.get_registered_model("arith")
    assert model.description == "Ours: ask Ana before serving."
    assert model.tags["autotts.serve"] == "autotts serve models:/arith@champion"


def _no_candidate_module_loaded(source: str) -> bool:
    return f"autotts_controller_{hashlib.sha256(source.encode()).hexdigest()[:16]}" not in sys.modules


def test_candidate_is_logged_and_registered_without_running_it(mlflow_store, tmp_path, aime_1p7, monkeypatch):
    """An untrusted candidate's source becomes a registered model with no line of it run in
    this process; loaded in a fresh process it replays like the same class run in-process."""
    import mlflow
    from mlflow.tracking import MlflowClient

    from mlflow_autotts.tracking.model import log_candidate_model
    from mlflow_autotts.tracking.model_registry import register_logged_model

    data, ts = aime_1p7
    marks = tmp_path / "marks"
    marks.mkdir()
    monkeypatch.setenv("AUTOTTS_TEST_MARKS", str(marks))
    assert "MarkedVote" in MARKED_VOTE and MARKED_VOTE.count(".touch()") == 3
    metrics = {"accuracy.search": 61.5, "mean_tokens.search": 123456.0}
    sys_path = list(sys.path)

    with mlflow.start_run(run_name="candidate-7") as run:
        info = log_candidate_model(MARKED_VOTE, "MarkedVote", "marked_vote", 0.25, {"depth": 4}, uses_beta=True,
                                   metrics=metrics, tags={"autotts.candidate": "7"})
    reg = register_logged_model(info.model_uri, aliases=["challenger"], description="search winner",
                                tags={"autotts.validation.accuracy": "70.00%"})
    assert list(marks.iterdir()) == [] and _no_candidate_module_loaded(MARKED_VOTE)
    assert sys.path == sys_path  # no model was loaded here (loading prepends its code folder)

    client = MlflowClient()
    assert (reg.name, reg.version, reg.run_id, reg.model_id) == (NAME, "1", run.info.run_id, info.model_id)
    assert {a: str(v) for a, v in client.get_registered_model(NAME).aliases.items()} == {"challenger": "1"}
    version = client.get_model_version(NAME, "1")
    assert version.description == "search winner"
    assert {k: v for k, v in version.tags.items() if k != "autotts.model_sha256"} == {
        "autotts.controller": "marked_vote", "autotts.beta": "0.25", "autotts.validation.accuracy": "70.00%"}
    tags = client.get_logged_model(info.model_id).tags  # the full record stays on the logged model
    assert tags["autotts.candidate"] == "7"
    assert tags["autotts.source_sha256"] == hashlib.sha256(MARKED_VOTE.encode()).hexdigest()
    assert {k: float(tags[f"autotts.metric.{k}"]) for k in metrics} == metrics
    assert json.loads(tags["autotts.params"]) == {"depth": 4}
    assert reg.config["beta"] == 0.25 and reg.config["registry_name"] is None

    # loaded in a fresh process, the candidate is served from the sandbox: its marker writes
    # (it imports os) are refused there, and nothing reaches this machine's files
    script = tmp_path / "fresh_predict.py"
    script.write_text(FRESH_PROCESS)
    proc = subprocess.run([sys.executable, str(script), f"models:/{NAME}@challenger", str(data), str(SEED)],
                          capture_output=True, text=True, timeout=300, cwd=tmp_path,
                          env={**os.environ, "MLFLOW_DISABLE_TELEMETRY": "true"})
    assert proc.returncode != 0
    assert "failed in the sandbox: forbidden" in proc.stderr and "import of 'os' is not allowed" in proc.stderr
    assert list(marks.iterdir()) == []

    # an honest candidate logged the same way replays in a fresh process like in-process code
    with mlflow.start_run(run_name="candidate-8"):
        honest = log_candidate_model(PROBE_VOTE, "ProbeVote", "probe_vote", 0.25, {"depth": 4})
    register_logged_model(honest.model_uri, aliases=["honest"])
    got = fresh_predict(tmp_path, f"models:/{NAME}@honest", data, SEED)
    assert got["errors"] == []
    trusted = tmp_path / "trusted" / "ProbeVote.py"
    trusted.parent.mkdir()
    trusted.write_text(PROBE_VOTE)
    assert got["rows"] == direct_rows(ControllerSpec(f"{trusted}:ProbeVote", 0.25, {"depth": 4}), ts, SEED)
    local = Path(mlflow.artifacts.download_artifacts(info.model_uri))
    assert (local / "artifacts" / "MarkedVote.py").read_text() == MARKED_VOTE


def test_loading_is_refused_while_logging_even_if_mlflow_validates(mlflow_store, tmp_path, monkeypatch, caplog):
    """Should a future MLflow ignore ``validate_serving_input=False``, the model refuses to load
    while it is being logged, so the candidate still does not run."""
    import mlflow
    from mlflow.models import Model

    from mlflow_autotts.tracking.model import log_candidate_model

    marks = tmp_path / "marks"
    marks.mkdir()
    monkeypatch.setenv("AUTOTTS_TEST_MARKS", str(marks))
    log = Model.log.__func__
    monkeypatch.setattr(Model, "log", classmethod(lambda cls, *a, **kw: log(cls, *a, **{**kw, "validate_serving_input": True})))
    source = MARKED_VOTE + "# a source no other test loads in-process\n"
    with mlflow.start_run():
        info = log_candidate_model(source, "MarkedVote", "marked_vote", 0.5)
    assert list(marks.iterdir()) == [] and _no_candidate_module_loaded(source)
    assert "refusing to load a controller model while logging it" in caplog.text  # MLflow did try
    assert info.model_uri.startswith("models:/m-")


def test_register_logged_model_refuses_a_foreign_model(mlflow_store, tmp_path):
    from mlflow_autotts.errors import ControllerError
    from mlflow_autotts.tracking.model_registry import register_logged_model

    _log_foreign_model(tmp_path)
    with pytest.raises(ControllerError, match="is not an autotts controller model"):
        register_logged_model("models:/foreign/1", aliases=["challenger"])


def test_candidates_log_into_a_given_run_from_a_worker_thread(mlflow_store, tmp_path, monkeypatch, caplog):
    """The search logs from worker threads into child runs it does not activate; a run may
    hold several controllers and its own params, which the models leave alone."""
    from concurrent.futures import ThreadPoolExecutor

    import mlflow
    from mlflow.tracking import MlflowClient

    from mlflow_autotts.tracking.model import log_candidate_model

    monkeypatch.setenv("AUTOTTS_TEST_MARKS", str(tmp_path))
    client = MlflowClient()
    run_id = client.create_run(client.get_experiment_by_name("Default").experiment_id).info.run_id
    client.log_param(run_id, "beta", "sweep")
    with ThreadPoolExecutor(max_workers=1) as pool:
        infos = list(pool.map(lambda b: log_candidate_model(MARKED_VOTE, "MarkedVote", "marked_vote", b, run_id=run_id),
                              (0.25, 0.75)))
    assert mlflow.active_run() is None
    assert client.get_run(run_id).data.params == {"beta": "sweep"}
    assert "Failed to log model config" not in caplog.text
    models = [client.get_logged_model(i.model_id) for i in infos]
    assert [m.source_run_id for m in models] == [run_id, run_id]
    assert [m.tags["autotts.beta"] for m in models] == ["0.25", "0.75"]
    assert not list(tmp_path.glob("import-*"))


def test_model_uris_are_recognised_by_scheme_in_one_place():
    """``models:name`` without the slash is routed to MLflow resolution (which refuses it,
    naming the accepted forms) rather than looked up as a registry name or a file."""
    from mlflow_autotts.controllers.loading import is_model_uri, split_source_ref
    from mlflow_autotts.tracking import resolve

    assert not hasattr(resolve, "is_model_uri")  # one definition, in controllers.loading
    for ref in ("models:/x@champion", "models:/x/3", "models:/m-abc", "runs:/abc/controller", "models:x", "runs:abc"):
        assert is_model_uri(ref) and split_source_ref(ref) is None, ref
    for ref in ("cmc", "ctrl.py", "ctrl.py:Mine", "dir/models.py", "./models:x.py"):
        assert not is_model_uri(ref), ref
    assert resolve.logged_model_id("models:/m-abc") == "m-abc"
    assert [resolve.logged_model_id(u) for u in ("models:/m-abc/1", "models:/m-abc@x", "models:/abc", "runs:/m-a/b")] \
        == [None] * 4
