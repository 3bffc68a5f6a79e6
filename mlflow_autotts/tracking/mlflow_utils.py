"""The one home for small MLflow helpers every tracking module needs.

MLflow itself is imported inside each helper: ``tracking`` modules are imported by the CLI
at start-up, and ``import mlflow`` costs about a second that ``autotts --help`` should not pay.
"""

from __future__ import annotations

import os
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, Callable, Iterator, Mapping

from mlflow_autotts.errors import AutoTTSError

if TYPE_CHECKING:
    from mlflow import MlflowClient

REGISTER_EXPERIMENT = "autotts-register"
"""The experiment of ``autotts register``'s runs unless ``--experiment`` says otherwise (each
kind of work has its own: ``autotts-collect``, ``autotts-search``, ``autotts-evaluate`` are
their settings' defaults, ``autotts-gate`` is :data:`GATE_EXPERIMENT`)."""
GATE_EXPERIMENT = "autotts-gate"
"""The experiment of the promotion gate's runs unless ``--experiment`` says otherwise."""
EXPERIMENT_KIND_TAG = "mlflow.experimentKind"
"""The experiment tag MLflow's UI reads (and writes) to tell a model-training experiment from
a GenAI one."""
MODEL_TRAINING_KIND = "custom_model_development"
"""``EXPERIMENT_KIND_TAG``'s value for model training, what every autotts experiment is."""
UI_VIEW = "workflowType=machine_learning"
"""The query that opens MLflow's UI in its "Model training" view. MLflow 3.17's UI opens in its
GenAI view unless told otherwise, and there it lists every run that logged no model (a
collection, an evaluation, a gate) under "Evaluations" and hides the model registry from its
side bar; the links autotts writes open the view where they are runs."""
DEFAULT_MODEL_NAME = "autotts-controller"
"""The registered model name of controllers unless ``--name`` says otherwise."""
DATABASE_SCHEMES = frozenset({"sqlite", "postgresql", "mysql", "mssql"})
"""Tracking URI schemes of MLflow's SQL store (``mlflow.store.db.db_types``)."""
MAX_PARAM_VALUE = 6000
"""MLflow's longest param value (``mlflow.utils.validation.MAX_PARAM_VAL_LENGTH``)."""


def client() -> "MlflowClient":
    """A client for the current tracking and registry URIs."""
    from mlflow import MlflowClient  # lazy: see the module docstring

    return MlflowClient()


def warm_up(experiment: str) -> None:
    """Import MLflow and open the tracking store now, so that logging later starts at once.

    Both take seconds (a SQL store imports SQLAlchemy and alembic, checks the schema, and
    configures its mappers on the first query); ``autotts evaluate`` runs this while its
    replay computes in another process. Only reads, and sends no request to a tracking
    server (an unreachable one would otherwise be retried twice): nothing is created but a
    database store that does not exist yet, which logging would create anyway. Best effort:
    an error here is raised again, where it belongs, by the logging call that follows."""
    try:
        import mlflow  # lazy: see the module docstring

        c = client()
        if mlflow.get_tracking_uri().partition(":")[0].partition("+")[0] in DATABASE_SCHEMES:
            c.get_experiment_by_name(experiment)
    except Exception:  # noqa: BLE001  (see the docstring)
        pass


def experiment_id(name: str, mlflow_client: "MlflowClient | None" = None) -> str:
    """The id of experiment ``name``, created if missing (safe when another process creates
    it at the same time) and declared a model-training experiment (``mark_model_training``);
    a deleted experiment is an ``AutoTTSError`` saying how to restore it, rather than MLflow's
    refusal to start a run in it."""
    from mlflow.exceptions import MlflowException  # lazy: see the module docstring

    c = mlflow_client or client()
    exp = c.get_experiment_by_name(name)
    if exp is None:
        try:
            return c.create_experiment(name, tags={EXPERIMENT_KIND_TAG: MODEL_TRAINING_KIND})
        except MlflowException as exc:  # created concurrently
            if exc.error_code != "RESOURCE_ALREADY_EXISTS":
                raise
            exp = c.get_experiment_by_name(name)
    if exp.lifecycle_stage == "deleted":
        raise AutoTTSError(f"MLflow experiment {name!r} is deleted; restore it "
                           f"(`mlflow experiments restore`) or choose another experiment")
    mark_model_training(c, exp)
    return exp.experiment_id


def mark_model_training(mlflow_client: "MlflowClient", experiment: Any) -> None:
    """Tag ``experiment`` (an MLflow ``Experiment``) as model training unless it says what it
    is already (a kind the user chose is kept): the experiment kind MLflow's UI records, so
    that one which infers the kind from what an experiment holds (traces of an LLM explorer
    make it GenAI) does not list these runs as evaluations."""
    if EXPERIMENT_KIND_TAG not in (experiment.tags or {}):
        mlflow_client.set_experiment_tag(experiment.experiment_id, EXPERIMENT_KIND_TAG, MODEL_TRAINING_KIND)


def ui_route(experiment_id: str, run_id: str | None = None) -> str:
    """Where MLflow's UI shows an experiment or one of its runs, in its "Model training" view
    (``UI_VIEW``), relative to the UI's address (``#/…``): a link in a description then works
    in the UI of any server of this store. ``ui_url`` makes it absolute where it can."""
    from urllib.parse import quote  # lazy: see the module docstring

    route = f"#/experiments/{quote(str(experiment_id), safe='')}"
    if run_id is not None:
        route += f"/runs/{quote(run_id, safe='')}"
    return f"{route}?{UI_VIEW}"


def ui_artifact(run_id: str, path: str) -> str:
    """A run's artifact as MLflow's UI fetches it (``get-artifact?…``, relative like ``ui_route``):
    an image a description can show."""
    from urllib.parse import quote  # lazy: see the module docstring

    return f"get-artifact?path={quote(path, safe='')}&run_uuid={quote(run_id, safe='')}"


def ui_url(path: str) -> str:
    """``path`` (``ui_route``, ``ui_artifact``) as an absolute URL when the tracking URI is an
    MLflow server (http/https), which serves its UI at that address; else as it is."""
    import mlflow  # lazy: see the module docstring

    uri = mlflow.get_tracking_uri()
    if uri.startswith(("http://", "https://")):
        return uri.rstrip("/") + "/" + path
    return path


def params_beside(existing: Mapping[str, str], wanted: Mapping[str, str],
                  same: Callable[[str, str, str], bool] | None = None) -> dict[str, str]:
    """The params to log into a run that already holds ``existing`` (under ``mlflow run``,
    the ``-P`` values as MLflow logged them): a key already holding the same setting is
    skipped, a different value goes to ``<key>.resolved``. ``same(key, logged, value)``
    decides sameness (default: equal text); a ``.resolved`` clash is an ``AutoTTSError``."""
    new: dict[str, str] = {}
    for key, value in wanted.items():
        if key in existing:
            if (same or (lambda _k, a, b: a == b))(key, existing[key], value):
                continue
            key = f"{key}.resolved"
            if key in existing and existing[key] != value:
                raise AutoTTSError(f"the MLflow run already has param {key}={existing[key]!r}; cannot log "
                                   f"{value!r} (log each command to its own run)")
        if existing.get(key) != value:
            new[key] = value
    return new


@contextmanager
def target_run(client: "MlflowClient", experiment: str, run_name: str | None,
               default_name: str | None = None) -> Iterator[str]:
    """The run a command logs into: the active run, else the one ``mlflow run`` handed over
    in ``MLFLOW_RUN_ID``, else a new run in ``experiment``. A run started or resumed here is
    ended here (FAILED if the block raised); an already-active run is left active.

    ``run_name`` names the run whichever it is; without one, a run started here, or one
    ``mlflow run`` gave a generated name, is named ``default_name`` (what the command did);
    the caller's active run and a name given to ``mlflow run --run-name`` are kept."""
    import mlflow  # lazy: the CLI imports this module at start-up
    from mlflow.entities import RunStatus
    from mlflow.environment_variables import MLFLOW_RUN_ID

    active = mlflow.active_run()
    if active is not None:
        if run_name:
            client.update_run(active.info.run_id, name=run_name)
        yield active.info.run_id
        return
    if MLFLOW_RUN_ID.get():  # under `mlflow run`: start_run resumes the project's run
        given = client.get_run(MLFLOW_RUN_ID.get()).info.run_name
        run = mlflow.start_run(run_name=run_name or (default_name if is_generated_name(given) else None))
        mark_model_training(client, client.get_experiment(run.info.experiment_id))
    else:
        run = mlflow.start_run(experiment_id=experiment_id(experiment, client), run_name=run_name or default_name)
    try:
        yield run.info.run_id
    except BaseException:
        mlflow.end_run(RunStatus.to_string(RunStatus.FAILED))
        raise
    mlflow.end_run()


def is_generated_name(name: str | None) -> bool:
    """Whether ``name`` is one MLflow made up for a run nobody named (``adjective-noun-123``,
    from its own word lists): such a run may be given a name that says what it did."""
    from mlflow.utils import name_utils  # lazy: see the module docstring

    if not name:
        return True
    parts = name.split("-")
    return (len(parts) == 3 and parts[2].isdigit()
            and parts[0] in {w.lower() for w in getattr(name_utils, "_GENERATOR_PREDICATES", ())}
            and parts[1] in {w.lower() for w in getattr(name_utils, "_GENERATOR_NOUNS", ())})


def param_value(value: Any) -> str:
    """``value`` as a param string within MLflow's length limit (cut with an ellipsis)."""
    s = str(value)
    return s if len(s) <= MAX_PARAM_VALUE else s[: MAX_PARAM_VALUE - 1] + "…"


def is_not_found(exc: BaseException) -> bool:
    """True for MLflow's "no such entity" errors (any store)."""
    return getattr(exc, "error_code", "") in ("RESOURCE_DOES_NOT_EXIST", "NOT_FOUND")


@contextmanager
def quiet_downloads() -> Iterator[None]:
    """No artifact progress bars: the files fetched here are tiny, and a bar on stderr would
    break the one-line error contract."""
    key = "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR"
    old = os.environ.get(key)
    os.environ[key] = "false"
    try:
        yield
    finally:
        if old is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = old
