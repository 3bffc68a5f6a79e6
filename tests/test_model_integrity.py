"""Trust from the artifact store (``docs/architecture.md``, "The trust boundary"): a built-in
is a registry name and nothing else; a model's files are checked against the digest recorded
at registration before any command uses them; a served model may read its API key only from
a variable the operator allowed. Real sqlite stores (``mlflow_store``), real subprocesses."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path
from urllib.parse import unquote, urlparse

import pytest
import yaml
from click.testing import CliRunner

from mlflow_autotts.cli.main import main
from mlflow_autotts.controllers.loading import ControllerSpec
from mlflow_autotts.data import write_json
from mlflow_autotts.errors import ControllerError
from mlflow_autotts.serving.integrity import MODEL_DIGEST_TAG, ModelIntegrityError, model_digest
from mlflow_autotts.serving.model_config import candidate_config, model_config_for, spec_from_config
from mlflow_autotts.serving.pyfunc import ControllerModel
from tests.helpers import random_set

NAME = "autotts-controller"

HONEST = '''\
from mlflow_autotts.controllers.base import Controller


class ReadTwo(Controller):
    name = "read_two"
    uses_beta = False

    def solve(self, episode):
        answers = [episode.get_new_branch_final_answer() for _ in range(2)]
        return answers[0]
'''

# module body leaves a mark wherever it runs (the sandbox refuses the import of os)
EVIL = '''\
import os
from pathlib import Path

(Path(os.environ["AUTOTTS_TEST_MARKS"]) / f"evil-{os.getpid()}").touch()

from mlflow_autotts.controllers.base import Controller


class Evil(Controller):
    name = "evil"

    def solve(self, episode):
        return episode.get_new_branch_final_answer()
'''

LOAD = '''\
import sys
import mlflow
mlflow.pyfunc.load_model(sys.argv[1])
print("loaded")
'''


@pytest.fixture
def marks(tmp_path, monkeypatch) -> Path:
    folder = tmp_path / "marks"
    folder.mkdir()
    monkeypatch.setenv("AUTOTTS_TEST_MARKS", str(folder))
    return folder


def evil_config(tmp_path: Path, registry_name: str | None = None) -> tuple[dict, Path]:
    path = tmp_path / "evil.py"
    path.write_text(EVIL)
    config = candidate_config(EVIL, "Evil", "evil", 0.5)
    return {**config, "registry_name": registry_name or f"{path}:Evil"}, path


def store_dir(model_id: str) -> Path:
    """The artifact-store folder of a logged model (a local file store here)."""
    from mlflow.tracking import MlflowClient

    location = MlflowClient().get_logged_model(model_id).artifact_location
    parsed = urlparse(location)
    return Path(unquote(parsed.path)) if parsed.scheme in ("file", "") else pytest.fail(location)


def register_honest(live: dict | None = None):
    import mlflow

    from mlflow_autotts.tracking.model import log_candidate_model
    from mlflow_autotts.tracking.model_registry import register_logged_model

    with mlflow.start_run():
        info = log_candidate_model(HONEST, "ReadTwo", "read_two", 0.5, live=live)
    return register_logged_model(info.model_uri, aliases=["challenger"]), info


def edit_config(model_dir: Path, **changes) -> None:
    """Rewrite the model_config in a model's MLmodel file."""
    mlmodel = model_dir / "MLmodel"
    meta = yaml.safe_load(mlmodel.read_text())
    meta["flavors"]["python_function"]["config"].update(changes)
    mlmodel.write_text(yaml.safe_dump(meta))


def run_script(tmp_path: Path, script: str, *args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    path = tmp_path / "script.py"
    path.write_text(script)
    return subprocess.run([sys.executable, str(path), *args], capture_output=True, text=True, cwd=tmp_path,
                          timeout=300, env={**os.environ, "MLFLOW_DISABLE_TELEMETRY": "true", **(env or {})})


def evaluate_cli(tmp_path: Path, uri: str):
    data = tmp_path / "synth.json"
    if not data.exists():
        write_json(random_set(n_problems=3, n_branches=8, seed=1, name="Synth/integrity"), data)
    return CliRunner().invoke(main, ["evaluate", str(data), "-c", uri, "--shuffles", "2", "--workers", "1",
                                     "--no-mlflow", "--no-progress", "--allow-weaker-isolation"])


# ------------------------------------------------------------------ a built-in is a registry name
@pytest.mark.parametrize("registry_name", [None, "evil.py:Evil", "evil.py", "no_such_controller", "../cmc"])
def test_a_config_claiming_a_builtin_that_is_not_registered_is_refused_and_never_imported(
        tmp_path, marks, monkeypatch, registry_name):
    monkeypatch.chdir(tmp_path)
    config, path = evil_config(tmp_path, registry_name)
    with pytest.raises(ControllerError, match="not a name in the built-in controller registry"):
        spec_from_config(config, path)
    with pytest.raises(ControllerError, match="not a name in the built-in controller registry"):
        ControllerModel().setup(config, path)
    assert list(marks.iterdir()) == []


def test_a_saved_model_claiming_a_builtin_it_is_not_is_refused_at_load(tmp_path, marks):
    """Through MLflow's own loader (what ``mlflow models serve`` runs), in a fresh process."""
    import mlflow

    from mlflow_autotts.tracking.model import _model_kwargs

    config, path = evil_config(tmp_path)
    stage = tmp_path / "stage"
    stage.mkdir()
    model = tmp_path / "model"
    honest = candidate_config(EVIL, "Evil", "evil", 0.5)
    mlflow.pyfunc.save_model(path=str(model), **_model_kwargs(honest, EVIL, stage))
    edit_config(model, registry_name=config["registry_name"])
    proc = run_script(tmp_path, LOAD, str(model))
    assert proc.returncode != 0 and "not a name in the built-in controller registry" in proc.stderr, proc.stderr[-2000:]
    assert list(marks.iterdir()) == []


def test_a_builtin_whose_installed_source_differs_from_the_logged_one_is_refused():
    config, _ = model_config_for(ControllerSpec("cmc", 0.5))
    assert spec_from_config(config, None).ref == "cmc"
    with pytest.raises(ControllerError, match="built-in controller 'cmc': the installed source .* is not the one"):
        spec_from_config({**config, "source_sha256": "0" * 64}, None)


# ------------------------------------------------------------ the digest recorded at registration
def test_the_digest_of_every_file_is_recorded_on_the_logged_model_and_the_version(mlflow_store, tmp_path):
    import mlflow
    from mlflow.tracking import MlflowClient

    reg, info = register_honest()
    local = Path(mlflow.artifacts.download_artifacts(info.model_uri, dst_path=str(tmp_path / "copy")))
    digest = model_digest(local)
    client = MlflowClient()
    assert client.get_model_version(NAME, reg.version).tags[MODEL_DIGEST_TAG] == digest
    assert client.get_logged_model(info.model_id).tags[MODEL_DIGEST_TAG] == digest
    assert model_digest(store_dir(info.model_id)) == digest
    (local / "code" / "mlflow_autotts" / "extra.py").write_text("")  # an added file changes it too
    assert model_digest(local) != digest


def _tamper_source(model_dir: Path) -> None:
    """A consistent edit: the source and its sha256 in the config (which alone passed before)."""
    source = model_dir / "artifacts" / "ReadTwo.py"
    text = source.read_text().replace("answers[0]", "answers[-1]")
    source.write_text(text)
    edit_config(model_dir, source_sha256=hashlib.sha256(text.encode()).hexdigest())


def _tamper_code(model_dir: Path) -> None:
    worker = model_dir / "code" / "mlflow_autotts" / "sandbox" / "worker.py"
    worker.write_text(worker.read_text() + "\nimport os  # planted\n")


def _tamper_config(model_dir: Path) -> None:
    edit_config(model_dir, beta=0.0, live={"model": "m", "backend": "openai", "base_url": "http://attacker.example/v1"})


TAMPERS = {"source artifact": _tamper_source, "shipped code": _tamper_code, "model_config": _tamper_config}


@pytest.mark.parametrize("what", sorted(TAMPERS))
def test_a_model_changed_after_registration_is_refused_by_every_command(mlflow_store, tmp_path, what):
    from mlflow_autotts.tracking.model import load_controller_model
    from mlflow_autotts.tracking.resolve import spec_from_model_uri

    reg, info = register_honest()
    uri = f"models:/{NAME}/{reg.version}"
    assert spec_from_model_uri(uri).params == {}  # untouched, it loads
    TAMPERS[what](store_dir(info.model_id))

    for call in (spec_from_model_uri, load_controller_model):
        with pytest.raises(ModelIntegrityError, match="do not match the digest recorded at registration"):
            call(uri)
    res = evaluate_cli(tmp_path, f"models:/{NAME}@challenger")
    assert res.exit_code == 2 and "do not match the digest recorded at registration" in res.output, res.output
    assert len(res.output.strip().splitlines()) == 1
    # loaded for serving by MLflow's own loader, in a fresh process (the model's checker is intact)
    proc = run_script(tmp_path, LOAD, uri)
    assert proc.returncode != 0 and "do not match the digest recorded at registration" in proc.stderr, \
        proc.stderr[-2000:]


def test_a_logged_model_changed_before_registration_is_not_registered(mlflow_store, tmp_path):
    import mlflow

    from mlflow_autotts.tracking.model import log_candidate_model
    from mlflow_autotts.tracking.model_registry import register_logged_model

    with mlflow.start_run():
        info = log_candidate_model(HONEST, "ReadTwo", "read_two", 0.5)
    _tamper_config(store_dir(info.model_id))
    with pytest.raises(ModelIntegrityError, match="do not match the digest recorded"):
        register_logged_model(info.model_uri, aliases=["challenger"])


def test_an_untouched_registered_model_is_served_and_a_pinned_digest_is_checked(mlflow_store, tmp_path):
    reg, info = register_honest()
    uri = f"models:/{NAME}@challenger"
    ok = run_script(tmp_path, LOAD, uri, env={"AUTOTTS_ALLOW_WEAKER_ISOLATION": "true"})
    assert ok.returncode == 0 and "loaded" in ok.stdout, ok.stderr[-2000:]
    pinned = run_script(tmp_path, LOAD, uri, env={"AUTOTTS_ALLOW_WEAKER_ISOLATION": "true",
                                                    "AUTOTTS_MODEL_SHA256": "0" * 64})
    assert pinned.returncode != 0 and "do not match the digest recorded" in pinned.stderr


def test_a_checked_local_copy_is_served_whatever_the_store_holds_later(mlflow_store, tmp_path):
    """``fetch_model(uri, dst)`` checks with the installed package before MLflow loads anything;
    the server started on the copy checks it again against the version's tag."""
    from mlflow_autotts.tracking.resolve import fetch_model

    reg, info = register_honest()
    dst = tmp_path / "served"
    dst.mkdir()
    fetched = fetch_model(f"models:/{NAME}@challenger", dst)
    assert fetched.path == dst and (dst / "registered_model_meta").is_file()
    _tamper_code(store_dir(info.model_id))
    env = {"AUTOTTS_ALLOW_WEAKER_ISOLATION": "true"}
    ok = run_script(tmp_path, LOAD, str(fetched.path), env=env)
    assert ok.returncode == 0 and "loaded" in ok.stdout, ok.stderr[-2000:]
    _tamper_config(fetched.path)
    bad = run_script(tmp_path, LOAD, str(fetched.path), env=env)
    assert bad.returncode != 0 and "do not match the digest recorded" in bad.stderr, bad.stderr[-2000:]


# ---------------------------------------------------------------- API-key variables the operator allows
LIVE = {"model": "served", "backend": "openai", "base_url": "http://127.0.0.1:9/v1"}


@pytest.mark.parametrize("env,allowed", [
    ({}, False),
    ({"AUTOTTS_ALLOWED_API_KEY_ENVS": "OPENAI_API_KEY, AWS_SECRET_ACCESS_KEY"}, True),
    ({"AUTOTTS_ALLOWED_API_KEY_ENVS": "OPENAI_API_KEY"}, False),
    ({"AUTOTTS_LIVE_API_KEY_ENV": "MY_KEY"}, True),  # the operator's own choice replaces the model's
])
def test_only_api_key_variables_the_operator_allowed_are_accepted(monkeypatch, env, allowed):
    for k in ("AUTOTTS_ALLOWED_API_KEY_ENVS", "AUTOTTS_LIVE_API_KEY_ENV"):
        monkeypatch.delenv(k, raising=False)
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    config, source = model_config_for(ControllerSpec("cmc", 0.5))
    ControllerModel().setup({**config, "live": LIVE}, source.path)  # the default variable
    ControllerModel().setup({**config, "live": {**LIVE, "api_key_env": "OPENAI_API_KEY"}}, source.path)
    hostile = {**config, "live": {**LIVE, "api_key_env": "AWS_SECRET_ACCESS_KEY"}}
    if allowed:
        ControllerModel().setup(hostile, source.path)
    else:
        with pytest.raises(ControllerError, match=r"\$AWS_SECRET_ACCESS_KEY, a variable the operator has not "
                                                  r"allowed .*AUTOTTS_ALLOWED_API_KEY_ENVS"):
            ControllerModel().setup(hostile, source.path)


def test_a_registered_model_naming_another_api_key_variable_is_refused_where_served(mlflow_store, tmp_path):
    from mlflow_autotts.tracking.model_registry import register

    reg = register(ControllerSpec("cmc", 0.5), aliases=["champion"],
                   live={**LIVE, "api_key_env": "AWS_SECRET_ACCESS_KEY"})
    uri = f"models:/{NAME}/{reg.version}"
    env = {k: v for k, v in os.environ.items() if k not in ("AUTOTTS_ALLOWED_API_KEY_ENVS", "AUTOTTS_LIVE_API_KEY_ENV")}
    proc = subprocess.run([sys.executable, "-c", LOAD, uri], capture_output=True, text=True, cwd=tmp_path, env=env,
                          timeout=300)
    assert proc.returncode != 0 and "a variable the operator has not allowed" in proc.stderr, proc.stderr[-2000:]
    allowed = subprocess.run([sys.executable, "-c", LOAD, uri], capture_output=True, text=True, cwd=tmp_path,
                             env={**env, "AUTOTTS_ALLOWED_API_KEY_ENVS": "AWS_SECRET_ACCESS_KEY"}, timeout=300)
    assert allowed.returncode == 0, allowed.stderr[-2000:]
    assert json.loads(json.dumps(reg.config["live"]))["api_key_env"] == "AWS_SECRET_ACCESS_KEY"
