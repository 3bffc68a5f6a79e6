"""From a model URI to a replayable controller: ``spec_from_model_uri``.

``autotts evaluate --controller models:/autotts-controller@champion`` and the promotion
gate go through here. Only the model's ``MLmodel`` file and its controller source are
downloaded (not the shipped package), and the result is an ordinary ``ControllerSpec``, so
a model is replayed by the very code path that replays in-process controllers, in the same
process pool, with the same numbers.

Every way a URI can fail (a malformed URI, such as ``models:name`` without the slash that
MLflow requires; no such registered model, version, alias, logged model or run; a model
that is not an autotts controller) is one ``ControllerError`` line. Whether a reference is
a model URI at all is ``controllers.loading.is_model_uri``, not here.

MLflow is imported inside the functions: the CLI imports this module at start-up.
"""

from __future__ import annotations

import atexit
import hashlib
import re
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mlflow_autotts.controllers.loading import ControllerSpec
from mlflow_autotts.errors import ControllerError
from mlflow_autotts.serving.model_config import SOURCE_ARTIFACT, is_controller_config, spec_from_config
from mlflow_autotts.tracking.mlflow_utils import client, first_line, is_not_found, quiet_downloads

_MODELS = re.compile(r"^models:/(?P<name>[^/@]+)(?:@(?P<alias>[^/]+)|/(?P<version>[^/]+))?/?$")
_FORMS = "models:/<name>@<alias>, models:/<name>/<version>, models:/<model id> or runs:/<run id>/<path>"
_DOWNLOADS: Path | None = None

__all__ = ["describe_model_uri", "locate", "logged_model_id", "spec_from_model_uri"]


def logged_model_id(uri: str) -> str | None:
    """The logged model id of a ``models:/<model id>`` URI (ids start with ``m-``), else None."""
    m = _MODELS.match(uri)
    if m is None or m.group("alias") is not None or m.group("version") is not None:
        return None
    return m.group("name") if m.group("name").startswith("m-") else None


@dataclass(frozen=True)
class ModelRef:
    """Where a model URI points."""

    uri: str
    """The URI as given."""
    artifact_uri: str
    """The model's artifact directory (``MLmodel`` lives right under it)."""
    name: str | None = None
    """Registered model name, for ``models:/<name>…`` URIs."""
    version: str | None = None
    """Registered version, for ``models:/<name>…`` URIs."""


@dataclass(frozen=True)
class ResolvedController:
    """A controller model's identity and what it needs to be rebuilt."""

    ref: ModelRef
    config: dict[str, Any]
    """The model's ``model_config`` (layout in ``serving.model_config``)."""
    source_relpath: str
    """The controller source artifact, relative to the model directory."""


def _downloads() -> Path:
    """A per-process folder for downloaded sources; workers forked from this process see it."""
    global _DOWNLOADS
    if _DOWNLOADS is None or not _DOWNLOADS.is_dir():
        _DOWNLOADS = Path(tempfile.mkdtemp(prefix="autotts-models-"))
        atexit.register(shutil.rmtree, _DOWNLOADS, True)
    return _DOWNLOADS


def locate(uri: str) -> ModelRef:
    """Resolve names, versions and aliases of ``uri`` against the registry."""
    from mlflow.exceptions import MlflowException  # lazy: see the module docstring

    c = client()
    if uri.startswith("runs:/"):  # runs:/<run id>/<path>: the run's artifact path is the model directory
        run_id = uri[len("runs:/"):].split("/", 1)[0]
        try:
            c.get_run(run_id)
        except MlflowException as exc:
            if is_not_found(exc):
                raise ControllerError(f"model URI {uri}: run {run_id!r} does not exist") from None
            raise ControllerError(f"model URI {uri}: {first_line(exc)}") from None
        return ModelRef(uri, uri.rstrip("/"))
    m = _MODELS.match(uri)
    if m is None:  # also models:name without the slash, which MLflow does not take either
        raise ControllerError(f"invalid model URI {uri!r}: expected {_FORMS}")
    name, alias, version = m.group("name"), m.group("alias"), m.group("version")
    if alias is None and version is None and name.startswith("m-"):  # a logged model id
        try:
            return ModelRef(uri, c.get_logged_model(name).artifact_location)
        except MlflowException as exc:
            if not is_not_found(exc):
                raise ControllerError(f"model URI {uri}: {first_line(exc)}") from None
    try:
        registered = c.get_registered_model(name)
    except MlflowException as exc:
        if is_not_found(exc):
            what = "logged model or registered model" if alias is None and version is None and name.startswith("m-") \
                else "registered model"
            raise ControllerError(f"model URI {uri}: {what} {name!r} does not exist") from None
        raise ControllerError(f"model URI {uri}: {first_line(exc)}") from None
    if alias is not None:
        version = registered.aliases.get(alias)
        if version is None:
            set_ = ", ".join(f"{a} -> v{v}" for a, v in sorted(registered.aliases.items())) or "none"
            raise ControllerError(f"model URI {uri}: alias {alias!r} is not set on registered model {name!r} "
                                  f"(aliases set: {set_})")
    elif version is None or version == "latest":
        versions = c.search_model_versions(f"name = '{name}'")
        if not versions:
            raise ControllerError(f"model URI {uri}: registered model {name!r} has no versions")
        version = str(max(int(v.version) for v in versions))
    try:
        c.get_model_version(name, str(version))
        artifact_uri = c.get_model_version_download_uri(name, str(version))
    except MlflowException as exc:
        if is_not_found(exc):
            raise ControllerError(f"model URI {uri}: version {version} of registered model {name!r} "
                                  "does not exist") from None
        raise ControllerError(f"model URI {uri}: {first_line(exc)}") from None
    return ModelRef(uri, artifact_uri.rstrip("/"), name, str(version))


def _download(artifact_uri: str, what: str, uri: str) -> Path:
    import mlflow  # lazy: see the module docstring
    from mlflow.exceptions import MlflowException

    dst = tempfile.mkdtemp(dir=_downloads())
    try:
        with quiet_downloads():
            return Path(mlflow.artifacts.download_artifacts(artifact_uri=artifact_uri, dst_path=dst))
    except (MlflowException, OSError) as exc:
        raise ControllerError(f"model URI {uri}: cannot download {what}: {first_line(exc)}") from None


def describe_model_uri(uri: str) -> ResolvedController:
    """Locate ``uri`` and read its ``MLmodel``; a model that is not an autotts controller is
    a ``ControllerError`` naming what it is instead."""
    from mlflow.models import Model  # lazy: see the module docstring

    ref = locate(uri)
    mlmodel = _download(f"{ref.artifact_uri}/MLmodel", "its MLmodel file (is it an MLflow model?)", uri)
    try:
        model = Model.load(str(mlmodel))
    except Exception as exc:  # a corrupt or foreign file: say so in one line
        raise ControllerError(f"model URI {uri}: unreadable MLmodel file: {first_line(exc)}") from None
    pyfunc = model.flavors.get("python_function") or {}
    config = pyfunc.get("config")
    if not is_controller_config(config):
        flavors = ", ".join(sorted(model.flavors)) or "none"
        raise ControllerError(f"model URI {uri} is not an autotts controller model (flavors: {flavors}; "
                              "no autotts model_config): log controllers with `autotts register`")
    artifact = (pyfunc.get("artifacts") or {}).get(SOURCE_ARTIFACT) or {}
    if not artifact.get("path"):
        raise ControllerError(f"model URI {uri}: the controller model has no {SOURCE_ARTIFACT} artifact")
    return ResolvedController(ref, dict(config), artifact["path"])


def spec_from_model_uri(uri: str) -> ControllerSpec:
    """The ``ControllerSpec`` of the controller logged at ``uri``.

    A source-file controller's spec points at the downloaded ``.py`` (``path.py:Class``),
    checked against the sha256 recorded at logging; a built-in's spec is its registry
    name, with β and the parameters from ``model_config`` in both cases.
    """
    resolved = describe_model_uri(uri)
    config = resolved.config
    source = _download(f"{resolved.ref.artifact_uri}/{resolved.source_relpath}", "the controller source", uri)
    digest = hashlib.sha256(source.read_bytes()).hexdigest()
    if digest != config.get("source_sha256"):
        raise ControllerError(f"model URI {uri}: the controller source does not match its recorded sha256 "
                              f"({digest[:12]}… != {str(config.get('source_sha256'))[:12]}…)")
    return spec_from_config(config, source)
