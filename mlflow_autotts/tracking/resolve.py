"""From a model URI to a replayable controller: ``spec_from_model_uri``.

``autotts evaluate --controller models:/autotts-controller@champion`` and the promotion
gate go through here. Only the model's ``MLmodel`` file and its controller source are
downloaded (not the shipped package), and the result is an ordinary ``ControllerSpec``, so
a model is replayed by the very code path that replays in-process controllers, in the same
process pool, with the same numbers.

Every way a URI can fail (no such registered model, version, alias, logged model or run;
a model that is not an autotts controller) is one ``ControllerError`` line.
"""

from __future__ import annotations

import atexit
import hashlib
import os
import re
import shutil
import tempfile
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

from mlflow_autotts.controllers.loading import ControllerSpec
from mlflow_autotts.errors import ControllerError

MODEL_URI_PREFIXES = ("models:/", "runs:/")
_MODELS = re.compile(r"^models:/(?P<name>[^/@]+)(?:@(?P<alias>[^/]+)|/(?P<version>[^/]+))?/?$")
_DOWNLOADS: Path | None = None


def is_model_uri(ref: str) -> bool:
    """True for the controller references this module resolves (``models:/…``, ``runs:/…``)."""
    return ref.startswith(MODEL_URI_PREFIXES)


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
    """The model's ``model_config`` (see ``tracking.model.model_config_for``)."""
    source_relpath: str
    """The controller source artifact, relative to the model directory."""


def _downloads() -> Path:
    """A per-process folder for downloaded sources; workers forked from this process see it."""
    global _DOWNLOADS
    if _DOWNLOADS is None or not _DOWNLOADS.is_dir():
        _DOWNLOADS = Path(tempfile.mkdtemp(prefix="autotts-models-"))
        atexit.register(shutil.rmtree, _DOWNLOADS, True)
    return _DOWNLOADS


def _first_line(exc: Exception) -> str:
    text = getattr(exc, "message", None) or str(exc)
    return text.strip().splitlines()[0] if text.strip() else type(exc).__name__


def _not_found(exc: Exception) -> bool:
    return getattr(exc, "error_code", "") in ("RESOURCE_DOES_NOT_EXIST", "NOT_FOUND")


def _client():
    from mlflow.tracking import MlflowClient

    return MlflowClient()


def locate(uri: str) -> ModelRef:
    """Resolve names, versions and aliases of ``uri`` against the registry."""
    from mlflow.exceptions import MlflowException

    client = _client()
    m = _MODELS.match(uri)
    if not uri.startswith(MODEL_URI_PREFIXES):
        raise ControllerError(f"invalid model URI {uri!r}: expected models:/… or runs:/…")
    if uri.startswith("models:/") and m is None:
        raise ControllerError(f"invalid model URI {uri!r}: expected models:/<name>@<alias>, "
                              "models:/<name>/<version> or models:/<model id>")
    if m is None:  # runs:/<run id>/<path>: the run's artifact path is the model directory
        run_id = uri[len("runs:/"):].split("/", 1)[0]
        try:
            client.get_run(run_id)
        except MlflowException as exc:
            if _not_found(exc):
                raise ControllerError(f"model URI {uri}: run {run_id!r} does not exist") from None
            raise ControllerError(f"model URI {uri}: {_first_line(exc)}") from None
        return ModelRef(uri, uri.rstrip("/"))
    name, alias, version = m.group("name"), m.group("alias"), m.group("version")
    if alias is None and version is None and name.startswith("m-"):  # a logged model id
        try:
            return ModelRef(uri, client.get_logged_model(name).artifact_location)
        except MlflowException as exc:
            if not _not_found(exc):
                raise ControllerError(f"model URI {uri}: {_first_line(exc)}") from None
    try:
        registered = client.get_registered_model(name)
    except MlflowException as exc:
        if _not_found(exc):
            what = "logged model or registered model" if alias is None and version is None and name.startswith("m-") \
                else "registered model"
            raise ControllerError(f"model URI {uri}: {what} {name!r} does not exist") from None
        raise ControllerError(f"model URI {uri}: {_first_line(exc)}") from None
    if alias is not None:
        version = registered.aliases.get(alias)
        if version is None:
            set_ = ", ".join(f"{a} -> v{v}" for a, v in sorted(registered.aliases.items())) or "none"
            raise ControllerError(f"model URI {uri}: alias {alias!r} is not set on registered model {name!r} "
                                  f"(aliases set: {set_})")
    elif version is None or version == "latest":
        versions = client.search_model_versions(f"name = '{name}'")
        if not versions:
            raise ControllerError(f"model URI {uri}: registered model {name!r} has no versions")
        version = str(max(int(v.version) for v in versions))
    try:
        client.get_model_version(name, str(version))
        artifact_uri = client.get_model_version_download_uri(name, str(version))
    except MlflowException as exc:
        if _not_found(exc):
            raise ControllerError(f"model URI {uri}: version {version} of registered model {name!r} "
                                  "does not exist") from None
        raise ControllerError(f"model URI {uri}: {_first_line(exc)}") from None
    return ModelRef(uri, artifact_uri.rstrip("/"), name, str(version))


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


def _download(artifact_uri: str, what: str, uri: str) -> Path:
    import mlflow
    from mlflow.exceptions import MlflowException

    dst = tempfile.mkdtemp(dir=_downloads())
    try:
        with quiet_downloads():
            return Path(mlflow.artifacts.download_artifacts(artifact_uri=artifact_uri, dst_path=dst))
    except (MlflowException, OSError) as exc:
        raise ControllerError(f"model URI {uri}: cannot download {what}: {_first_line(exc)}") from None


def describe_model_uri(uri: str) -> ResolvedController:
    """Locate ``uri`` and read its ``MLmodel``; a model that is not an autotts controller is
    a ``ControllerError`` naming what it is instead."""
    from mlflow.models import Model

    from mlflow_autotts.tracking.model import SOURCE_ARTIFACT, is_controller_config

    ref = locate(uri)
    mlmodel = _download(f"{ref.artifact_uri}/MLmodel", "its MLmodel file (is it an MLflow model?)", uri)
    try:
        model = Model.load(str(mlmodel))
    except Exception as exc:  # a corrupt or foreign file: say so in one line
        raise ControllerError(f"model URI {uri}: unreadable MLmodel file: {_first_line(exc)}") from None
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
    from mlflow_autotts.tracking.model import spec_from_config

    resolved = describe_model_uri(uri)
    config = resolved.config
    source = _download(f"{resolved.ref.artifact_uri}/{resolved.source_relpath}", "the controller source", uri)
    digest = hashlib.sha256(source.read_bytes()).hexdigest()
    if digest != config.get("source_sha256"):
        raise ControllerError(f"model URI {uri}: the controller source does not match its recorded sha256 "
                              f"({digest[:12]}… != {str(config.get('source_sha256'))[:12]}…)")
    return spec_from_config(config, source)
