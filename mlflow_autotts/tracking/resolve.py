"""From a model URI to a replayable controller: ``spec_from_model_uri``.

``autotts evaluate --controller models:/autotts-controller@champion``, promote's gate and
registration go through here. ``fetch_model`` downloads the whole model folder and checks
it against the digest recorded in the registry (``serving.integrity``: the version's
``autotts.model_sha256`` tag, or the logged model's) before its ``MLmodel`` is even parsed,
so nothing the artifact store holds is used unchecked. The result is an ordinary
``ControllerSpec``, so a model is replayed by the very code path that replays in-process
controllers, in the same process pool, with the same numbers.

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
from mlflow_autotts.errors import ControllerError, first_line
from mlflow_autotts.serving.integrity import MODEL_DIGEST_TAG, verify
from mlflow_autotts.serving.model_config import SOURCE_ARTIFACT, is_builtin, is_controller_config, spec_from_config
from mlflow_autotts.tracking.mlflow_utils import client, is_not_found, quiet_downloads

_MODELS = re.compile(r"^models:/(?P<name>[^/@]+)(?:@(?P<alias>[^/]+)|/(?P<version>[^/]+))?/?$")
_FORMS = "models:/<name>@<alias>, models:/<name>/<version>, models:/<model id> or runs:/<run id>/<path>"
_DOWNLOADS: Path | None = None

__all__ = ["FetchedModel", "describe_model_uri", "fetch_model", "locate", "logged_model_id", "recorded_digest",
           "spec_from_model_uri"]


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


def _download(artifact_uri: str, what: str, uri: str, dst: str | Path | None = None) -> Path:
    import mlflow  # lazy: see the module docstring
    from mlflow.exceptions import MlflowException

    dst = tempfile.mkdtemp(dir=_downloads()) if dst is None else str(dst)
    try:
        with quiet_downloads():
            return Path(mlflow.artifacts.download_artifacts(artifact_uri=artifact_uri, dst_path=dst))
    except (MlflowException, OSError) as exc:
        raise ControllerError(f"model URI {uri}: cannot download {what}: {first_line(exc)}") from None


def _controller_config(model: Any, uri: str) -> tuple[dict[str, Any], str]:
    """(model_config, source artifact path) of a parsed ``MLmodel``, or a ``ControllerError``
    naming what the model is instead."""
    pyfunc = model.flavors.get("python_function") or {}
    config = pyfunc.get("config")
    if not is_controller_config(config):
        flavors = ", ".join(sorted(model.flavors)) or "none"
        raise ControllerError(f"model URI {uri} is not an autotts controller model (flavors: {flavors}; "
                              "no autotts model_config): log controllers with `autotts register`")
    artifact = (pyfunc.get("artifacts") or {}).get(SOURCE_ARTIFACT) or {}
    if not artifact.get("path"):
        raise ControllerError(f"model URI {uri}: the controller model has no {SOURCE_ARTIFACT} artifact")
    return dict(config), artifact["path"]


def _load_mlmodel(path: Path, uri: str) -> Any:
    from mlflow.models import Model  # lazy: see the module docstring

    try:
        return Model.load(str(path))
    except Exception as exc:  # a corrupt or foreign file: say so in one line
        raise ControllerError(f"model URI {uri}: unreadable MLmodel file: {first_line(exc)}") from None


def describe_model_uri(uri: str) -> ResolvedController:
    """Locate ``uri`` and read its ``MLmodel`` (unchecked: for messages; anything that uses
    the model goes through ``fetch_model``); a model that is not an autotts controller is a
    ``ControllerError`` naming what it is instead."""
    ref = locate(uri)
    mlmodel = _download(f"{ref.artifact_uri}/MLmodel", "its MLmodel file (is it an MLflow model?)", uri)
    config, source = _controller_config(_load_mlmodel(mlmodel, uri), uri)
    return ResolvedController(ref, config, source)


@dataclass(frozen=True)
class FetchedModel:
    """A local copy of a model, checked against the digest recorded in the registry."""

    ref: ModelRef
    path: Path
    """The local model folder (``MLmodel`` at its top)."""
    config: dict[str, Any]
    """Its ``model_config``."""
    source_path: Path
    """Its controller source, inside ``path``."""
    digest: str
    """Its files' digest (``serving.integrity.model_digest``), equal to the recorded one."""


def recorded_digest(ref: ModelRef, model_id: str | None) -> str | None:
    """The digest the tracking store holds for the model ``ref`` points at: the registered
    version's tag, else the logged model's (``model_id``, as a ``models:/<id>`` URI names
    it or, for ``runs:/`` URIs, as the downloaded ``MLmodel`` says, which the digest then
    covers), else None."""
    from mlflow.exceptions import MlflowException  # lazy: see the module docstring

    c = client()
    try:
        if ref.name is not None and ref.version is not None:
            return c.get_model_version(ref.name, ref.version).tags.get(MODEL_DIGEST_TAG)
        if model_id:
            return c.get_logged_model(model_id).tags.get(MODEL_DIGEST_TAG)
    except MlflowException as exc:
        if is_not_found(exc):
            return None
        raise ControllerError(f"model URI {ref.uri}: cannot read its recorded digest: {first_line(exc)}") from None
    return None


def fetch_model(uri: str, dst: str | Path | None = None) -> FetchedModel:
    """Download the model at ``uri`` (into the existing folder ``dst``, else a temporary one
    removed at exit) and check every file against the digest recorded in the registry before
    reading anything from it; then check that it is a controller model whose config claims
    no built-in it is not. Each failure is one ``ControllerError`` line. A checked ``dst`` is
    what ``mlflow models serve -m`` can serve safely (``docs/architecture.md``, "The trust
    boundary")."""
    ref = locate(uri)
    # a registered version is downloaded by its registry URI, so MLflow notes its name and
    # version beside it and a server started on the copy checks it again (serving.pyfunc)
    registered = ref.name is not None and ref.version is not None
    source_uri = f"models:/{ref.name}/{ref.version}" if registered else ref.artifact_uri
    local = _download(source_uri, "the model", uri, dst)
    if not (local / "MLmodel").is_file():
        raise ControllerError(f"model URI {uri}: no MLmodel file (is it an MLflow model?)")
    model_id = logged_model_id(uri)
    if model_id is None and not registered:  # runs:/…: the logged model it holds names itself
        model_id = getattr(_load_mlmodel(local / "MLmodel", uri), "model_id", None)
    expected = recorded_digest(ref, model_id)
    if not expected:  # say first what a foreign model is (parsing the file runs nothing)
        _controller_config(_load_mlmodel(local / "MLmodel", uri), uri)
    digest = verify(local, expected, f"model URI {uri}")
    config, relpath = _controller_config(_load_mlmodel(local / "MLmodel", uri), uri)
    is_builtin(config)  # refuses a config claiming a built-in that is not in the registry
    source = (local / relpath).resolve()
    if not source.is_file() or not source.is_relative_to(local.resolve()):
        raise ControllerError(f"model URI {uri}: its {SOURCE_ARTIFACT} artifact {relpath!r} is not a file of the model")
    return FetchedModel(ref, local, config, source, digest)


def spec_from_model_uri(uri: str) -> ControllerSpec:
    """The ``ControllerSpec`` of the controller logged at ``uri``, from a checked copy
    (``fetch_model``).

    A source-file controller's spec points at the downloaded ``.py`` (``path.py:Class``),
    also checked against the sha256 recorded at logging; a built-in's spec is its registry
    name, with β and the parameters from ``model_config`` in both cases.
    """
    fetched = fetch_model(uri)
    config = fetched.config
    digest = hashlib.sha256(fetched.source_path.read_bytes()).hexdigest()
    if digest != config.get("source_sha256"):
        raise ControllerError(f"model URI {uri}: the controller source does not match its recorded sha256 "
                              f"({digest[:12]}… != {str(config.get('source_sha256'))[:12]}…)")
    return spec_from_config(config, fetched.source_path)
