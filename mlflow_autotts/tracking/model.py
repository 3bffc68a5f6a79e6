"""Logging controllers as MLflow models: ``log_controller_model``, ``log_candidate_model``,
``save_controller_model``, ``load_controller_model``.

The model is the serving layer's ``ControllerModel`` (``mlflow_autotts.serving``), logged
*from code*: nothing is pickled. What makes one model differ from another is data, its
``model_config`` (``serving.model_config``) and the controller's source as a readable
``.py`` artifact. The ``mlflow_autotts`` modules ``predict`` needs travel with the model as
``code_paths`` (the package is not on PyPI): only the import closure of the serving entry
and of the controller's source (``tracking.code_closure``), not the whole package. The
pinned requirements cover the rest, so ``log_model`` never infers them.

Every file of the model folder is hashed before it is uploaded (``serving.integrity``) and the
digest becomes the logged model's ``autotts.model_sha256`` tag, which registration checks
and copies to the version: what is checked later is what this process wrote.

MLflow is imported inside the functions that log: the CLI imports this module at start-up.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping

from mlflow_autotts.controllers.loading import ControllerSpec
from mlflow_autotts.errors import ControllerError, first_line
from mlflow_autotts.serving.columns import RESPONSE_COLUMNS
from mlflow_autotts.serving.integrity import MODEL_DIGEST_TAG, model_digest
from mlflow_autotts.serving.model_config import MODEL_FORMAT, SOURCE_ARTIFACT, candidate_config, model_config_for
from mlflow_autotts.serving.payload import DEFAULT_INTERVAL, DEFAULT_MODE, INTERVAL, LEGACY_MODE_PARAM, QUESTION, TRAJECTORY
from mlflow_autotts.serving.shipping import ENTRY_FILE, code_roots, loading_refused
from mlflow_autotts.tracking.code_closure import copy_modules, module_closure
from mlflow_autotts.tracking.mlflow_utils import client, quiet_downloads
from mlflow_autotts.tracking.resolve import fetch_model

if TYPE_CHECKING:
    import pandas as pd
    from mlflow.models import ModelSignature


# ------------------------------------------------------------------- signature, example
def model_signature(beta: float) -> "ModelSignature":
    """Inputs, outputs and params; ``trajectory`` is optional so that live backends (which
    generate instead of replaying) fit the same schema, and the outputs are every column a
    response can hold (``serving/columns.py``), each optional."""
    from mlflow.models import ModelSignature  # lazy: see the module docstring
    from mlflow.types.schema import AnyType, ColSpec, ParamSchema, ParamSpec, Schema

    inputs = Schema([
        ColSpec("string", QUESTION),
        ColSpec(AnyType(), TRAJECTORY, required=False),
        ColSpec("long", INTERVAL, required=False),
    ])
    # what `mlflow models serve` returns: every row's columns, then actions and the live ones
    outputs = Schema([ColSpec(kind, name, required=False) for name, kind in RESPONSE_COLUMNS.items()])
    params = ParamSchema([
        ParamSpec("beta", "double", float(beta)),
        ParamSpec("mode", "string", DEFAULT_MODE),
        ParamSpec(LEGACY_MODE_PARAM, "string", ""),  # the earlier name of ``mode``, still accepted
        ParamSpec("shuffle_seed", "long", -1),
        ParamSpec("return_actions", "boolean", False),
    ])
    return ModelSignature(inputs=inputs, outputs=outputs, params=params)


def input_example() -> "pd.DataFrame":
    """A tiny replay request: one question, three short branches."""
    import pandas as pd  # lazy: see the module docstring

    return pd.DataFrame({
        QUESTION: ["What is 6 * 7?"],
        TRAJECTORY: [[[["42"], 700, "42"], [["41", "42"], 1200, "42"], [[], 300, "ERR"]]],
        INTERVAL: [DEFAULT_INTERVAL],
    })


def pinned_requirements() -> list[str]:
    """The model's runtime dependencies at the installed versions (mlflow_autotts itself
    ships as code)."""
    from importlib.metadata import version

    return [f"{pkg}=={version(pkg)}" for pkg in ("mlflow", "pandas", "numpy", "scipy")]


# ------------------------------------------------------------------------- tags
def _tag_value(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value)


def controller_tags(config: Mapping[str, Any], metrics: Mapping[str, float] | None = None) -> dict[str, str]:
    """Tags for a logged model or a registered version: what the controller is, its source
    hash, its parameters and the replay metrics it was logged with."""
    tags = {
        "autotts.controller": str(config["controller"]),
        "autotts.source_sha256": str(config["source_sha256"]),
        "autotts.beta": _tag_value(config["beta"]),
        "autotts.params": json.dumps(config.get("params") or {}, sort_keys=True),
    }
    if config.get("registry_name"):
        tags["autotts.registry_name"] = str(config["registry_name"])
    for key, value in (metrics or {}).items():
        tags[f"autotts.metric.{key}"] = _tag_value(value)
    return tags


def version_tags(config: Mapping[str, Any]) -> dict[str, str]:
    """The few tags a registered version carries from its model: the controller and, when it
    uses one, its β. The source hash, parameters and replay metrics stay on the logged model
    (``controller_tags``), which the version's page links to: the registry's list of versions
    shows a version's tags in one narrow column."""
    tags = {"autotts.controller": str(config["controller"])}
    if config.get("uses_beta", True) and config.get("beta") is not None:
        tags["autotts.beta"] = f"{float(config['beta']):g}"
    return tags


# ------------------------------------------------------------------------- logging
def shipped_modules(config: Mapping[str, Any], source_text: str) -> list[str]:
    """The ``mlflow_autotts`` modules a model with this config and controller source ships:
    the closure of the serving entry, of what its runner starts by name, and of the
    package modules the controller's source imports."""
    return module_closure(code_roots(config), [source_text])


def _model_kwargs(config: Mapping[str, Any], source_text: str, workdir: Path) -> dict[str, Any]:
    """What ``save_model`` takes for a controller model, with its source and the shipped
    modules staged in ``workdir``."""
    staged_source = workdir / "source" / config["source_file"]
    staged_source.parent.mkdir()
    staged_source.write_text(source_text, encoding="utf-8")
    package = copy_modules(shipped_modules(config, source_text), workdir / "code")
    return dict(
        python_model=str(ENTRY_FILE),
        artifacts={SOURCE_ARTIFACT: str(staged_source)},
        model_config=dict(config),
        code_paths=[str(package)],
        signature=model_signature(config["beta"]),
        input_example=input_example(),
        pip_requirements=pinned_requirements(),
        metadata={"autotts_controller": config["controller"], "autotts_format": MODEL_FORMAT},
    )


class _PyfuncFlavor:
    """``mlflow.pyfunc`` as the flavor of ``Model.log``, with two of its side effects removed.

    1. ``Model.log`` checks the input example by *loading the model and predicting with it
       in this process* (``mlflow.models.utils._validate_serving_input``): that would import
       the controller's source and run its ``__init__`` and ``solve``. For explorer-written
       candidates, logged by a search process that holds the gold answers, this must not
       happen, so ``_log_model`` passes ``validate_serving_input=False`` (the switch the
       ``transformers`` flavor uses), which ``mlflow.pyfunc.save_model`` does not take. The
       example is still checked against the signature by ``save_model``, without the model.
       (So ``Model.log`` rewrites no file after ``save_model``: the digest taken here, into
       ``digest_out``, is of the folder it uploads.)
    2. ``Model.log`` copies a ``model_config`` argument into the run's params, which fails
       (a warning, nothing logged) once a run holds two controllers or its own ``beta``; the
       config travels as ``controller_config`` instead, so the run's params stay the caller's.
    """

    __name__ = "mlflow.pyfunc"

    @staticmethod
    def save_model(validate_serving_input: bool = True, controller_config: Mapping[str, Any] | None = None,
                   digest_out: dict[str, str] | None = None, **kwargs: Any) -> Any:
        import mlflow  # lazy: see the module docstring

        saved = mlflow.pyfunc.save_model(model_config=controller_config, **kwargs)
        for pycache in Path(kwargs["path"]).rglob("__pycache__"):  # as Model.log does next
            shutil.rmtree(pycache, ignore_errors=True)
        if digest_out is not None:
            digest_out["digest"] = model_digest(kwargs["path"])
        return saved


def _log_model(config: Mapping[str, Any], source_text: str, name: str, metrics: Mapping[str, float] | None,
               tags: Mapping[str, str] | None, registered_model_name: str | None, run_id: str | None):
    """Log a controller model from its config and source text, never executing the source
    here; the one code path behind ``log_controller_model`` and ``log_candidate_model``."""
    from mlflow.models import Model  # lazy: see the module docstring

    # loading_refused: belt and braces, should MLflow load the model anyway, it refuses
    with loading_refused(), tempfile.TemporaryDirectory(prefix="autotts-model-") as tmp, quiet_downloads():
        kwargs = _model_kwargs(config, source_text, Path(tmp))
        kwargs["controller_config"] = kwargs.pop("model_config")
        digest: dict[str, str] = {}
        info = Model.log(artifact_path=None, name=name, flavor=_PyfuncFlavor, flavor_name="pyfunc.ModelFromCode",
                         run_id=run_id, registered_model_name=registered_model_name, validate_serving_input=False,
                         tags={**controller_tags(config, metrics), **dict(tags or {})}, digest_out=digest, **kwargs)
    c = client()
    c.set_logged_model_tags(info.model_id, {MODEL_DIGEST_TAG: digest["digest"]})
    if registered_model_name and info.registered_model_version is not None:
        c.set_model_version_tag(registered_model_name, str(info.registered_model_version), MODEL_DIGEST_TAG,
                                digest["digest"])
    return info


def log_controller_model(spec: ControllerSpec, name: str = "controller", metrics: Mapping[str, float] | None = None,
                         tags: Mapping[str, str] | None = None, registered_model_name: str | None = None,
                         run_id: str | None = None, live: Mapping[str, Any] | None = None):
    """Log ``spec`` as a models-from-code pyfunc (a logged model, linked to ``run_id`` or
    else the active run, if any); returns MLflow's ``ModelInfo``. ``metrics`` are replay
    metrics to record as tags; ``live`` the validated live settings it serves questions with.

    Imports and builds the controller to validate it: built-ins only; any other code goes
    through ``log_candidate_model``."""
    config, source = model_config_for(spec)
    return _log_model(with_live(config, live), source.text, name, metrics, tags, registered_model_name, run_id)


def log_candidate_model(source: str, class_name: str, label: str, beta: float, params: dict | None = None,
                        uses_beta: bool = True, metrics: Mapping[str, float] | None = None,
                        tags: Mapping[str, str] | None = None, name: str = "controller",
                        registered_model_name: str | None = None, run_id: str | None = None,
                        live: Mapping[str, Any] | None = None):
    """Log an untrusted candidate's source as a controller model without importing or
    running it in this process; returns MLflow's ``ModelInfo``.

    ``label`` and ``uses_beta`` are what the sandbox reported for the class; ``params`` and
    ``beta`` are what the candidate was scored with. The model is the same as one logged by
    ``log_controller_model`` (same config layout, artifacts, signature, tags); it runs the
    source only where it is loaded (a fresh process, ``mlflow models serve``). ``run_id``
    links it to that run without making it active (safe from worker threads)."""
    config = candidate_config(source, class_name, label, beta, params, uses_beta)
    return _log_model(with_live(config, live), source, name, metrics, tags, registered_model_name, run_id)


def with_live(config: dict[str, Any], live: Mapping[str, Any] | None) -> dict[str, Any]:
    """``config`` with its ``live`` section (what the ``live`` backend generates with)."""
    return {**config, "live": dict(live)} if live else config


def save_controller_model(spec: ControllerSpec, path: str | Path) -> Path:
    """Write the same model to a local folder (no tracking server), e.g. for benchmarks."""
    import mlflow  # lazy: see the module docstring

    config, source = model_config_for(spec)
    with tempfile.TemporaryDirectory(prefix="autotts-model-") as tmp:
        mlflow.pyfunc.save_model(path=str(path), **_model_kwargs(config, source.text, Path(tmp)))
    return Path(path)


def load_controller_model(model_uri: str):
    """``mlflow.pyfunc.load_model`` with autotts errors, of a copy of the model checked first:
    a URI that does not resolve, a model that is not a controller, or one whose files differ
    from the digest recorded at registration gives a one-line ``ControllerError``, before
    any of its code runs here."""
    import mlflow  # lazy: see the module docstring
    from mlflow.exceptions import MlflowException

    fetched = fetch_model(model_uri)
    try:
        return mlflow.pyfunc.load_model(str(fetched.path))
    except MlflowException as exc:
        raise ControllerError(f"cannot load {model_uri}: {first_line(exc)}") from None


__all__ = [
    "controller_tags",
    "version_tags",
    "input_example",
    "load_controller_model",
    "log_candidate_model",
    "log_controller_model",
    "model_signature",
    "save_controller_model",
    "shipped_modules",
]
