"""The model registry side: register controllers, move aliases, and record the promotion gate.

Names (``docs/architecture.md``, "MLflow conventions"): registered model
``autotts-controller``; alias ``challenger`` for the best candidate of a search,
``champion`` for the one promoted behind the gate. What the gate decides and how
(``GateConfig``, the replay, ``decide``, the report's texts) is ``promotion.gate``, free of
MLflow; ``promote`` here finds the aliased versions and what they hold, calls it, and
records its result (``record_gate``): the gate's run (``tracking.gate_run``), four short
``autotts.gate.*`` tags on both versions, the report as the candidate's description; when
it passes, the alias moves (``apply_promotion``).

The registry page stays readable: a version carries a few short tags (``version_tags``:
the controller and β; a search's winner adds its validation numbers; a gate its decision,
accuracy, tokens and gain), the registered model a description of what it is and how to
serve it (``tracking.model_card``); the full numbers live in the runs the pages link to.

Every version carries ``autotts.model_sha256``, the digest of its model folder: checked
against the logged model's record when it is registered (``tracking.resolve.fetch_model``)
and against the version's own before any command uses it (``docs/architecture.md``, "The
trust boundary").

MLflow is imported inside the functions: the CLI imports this module at start-up.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping, Sequence

from mlflow_autotts.controllers.loading import ControllerSpec
from mlflow_autotts.data.digest import content_digest
from mlflow_autotts.errors import AutoTTSError, ControllerError, first_line
from mlflow_autotts.promotion.gate import (GATE_TAG, GateConfig, GateDecision, GateEntry, description, gate,
                                           gate_tags, load_gate_data)
from mlflow_autotts.sandbox.session import SandboxedController
from mlflow_autotts.serving.integrity import MODEL_DIGEST_TAG
from mlflow_autotts.serving.model_config import candidate_config, model_config_for
from mlflow_autotts.tracking.mlflow_utils import (
    DEFAULT_MODEL_NAME,
    GATE_EXPERIMENT,
    REGISTER_EXPERIMENT,
    client,
    experiment_id,
    is_not_found,
)
from mlflow_autotts.tracking.datasets import DIGEST_CHARS
from mlflow_autotts.tracking.gate_run import GateRun, log_gate_run
from mlflow_autotts.tracking.model import log_candidate_model, log_controller_model, version_tags
from mlflow_autotts.tracking.model_card import is_autotts_description, model_description, model_tags
from mlflow_autotts.tracking.naming import run_name as make_run_name
from mlflow_autotts.tracking.resolve import fetch_model, logged_model_id, spec_from_model_uri


# ------------------------------------------------------------------------ register
@dataclass(frozen=True)
class RegisteredController:
    """A registered controller version."""

    name: str
    """Registered model name."""
    version: str
    """Its version number, as MLflow returns it (a string)."""
    run_id: str
    """The run the model was logged in."""
    controller: str
    """The controller's label (registry name or class)."""
    config: dict[str, Any]
    """The model's ``model_config``."""
    aliases: tuple[str, ...] = ()
    """Aliases set on this version by ``register``."""
    model_id: str | None = None
    """The MLflow logged model behind the version (``models:/<model_id>``)."""

    @property
    def model_uri(self) -> str:
        return f"models:/{self.name}/{self.version}"


def check_name(kind: str, value: str) -> str:
    if not value or not value.strip() or "/" in value or "@" in value:
        raise AutoTTSError(f"invalid {kind} {value!r}: must be non-empty, without '/' or '@'")
    return value


def register(spec: ControllerSpec, name: str = DEFAULT_MODEL_NAME, aliases: Sequence[str] = (),
             experiment: str = REGISTER_EXPERIMENT, metrics: Mapping[str, float] | None = None,
             run_name: str | None = None, description: str | None = None,
             live: Mapping[str, Any] | None = None) -> RegisteredController:
    """Log ``spec`` as a controller model in a new run (nested when a run is active) and
    register it as a new version of ``name``, with the controller's tags; set ``aliases``.
    ``metrics`` go to the run and the logged model, not to the version's tags.

    A built-in is imported and built here; any other code (a source file) is never imported
    in this process: the sandbox builds it and reports its name, class, β and parameters,
    and the model is logged from its source text (``docs/architecture.md``, "The trust
    boundary")."""
    import mlflow  # lazy: see the module docstring

    _check_names(name, aliases)
    config, source_text = _checked_config(spec)  # validates before a run is created
    label = config["controller"]
    active = mlflow.active_run()
    run_kwargs: dict[str, Any] = {"nested": True} if active else {"experiment_id": experiment_id(experiment)}
    with mlflow.start_run(run_name=run_name or make_run_name("register", label), **run_kwargs):
        mlflow.log_params({"controller": label, "beta": config["beta"],
                           **{f"param.{k}": v for k, v in config["params"].items()}})
        if metrics:
            mlflow.log_metrics({k: float(v) for k, v in metrics.items()})
        if spec.is_builtin:
            info = log_controller_model(spec, metrics=metrics, live=live)
        else:
            info = log_candidate_model(source_text, config["class_name"], label, config["beta"], config["params"],
                                       config["uses_beta"], metrics=metrics, live=live)
        return _register(info.model_uri, name, aliases, description, {})


def _checked_config(spec: ControllerSpec) -> tuple[dict[str, Any], str]:
    """(model_config, source text) of ``spec``, validated: in process for a built-in, in the
    sandbox for anything else (its reported class is checked against the source's AST)."""
    if spec.is_builtin:
        config, source = model_config_for(spec)
        return config, source.text
    text, class_name = spec.source()
    with SandboxedController(text, class_name, spec.beta, spec.params, max_children=1) as probe:
        config = candidate_config(text, probe.reported_class, probe.name, probe.beta, probe.config_params(),
                                  probe.uses_beta)
    return config, text


def register_logged_model(model_uri: str, name: str = DEFAULT_MODEL_NAME, aliases: Sequence[str] = (),
                          description: str | None = None, tags: Mapping[str, str] | None = None
                          ) -> RegisteredController:
    """Register an already logged controller model as a new version of ``name``; set ``aliases``.

    ``model_uri`` is typically ``ModelInfo.model_uri`` (``models:/<model id>``) of a
    ``log_candidate_model`` call. Nothing is loaded or executed: the model's files are checked
    against the digest recorded when it was logged, then its ``MLmodel`` is read, to check
    that it is an autotts controller (else a one-line ``ControllerError``) and to take its
    ``model_config``; the checked digest becomes the version's ``autotts.model_sha256``. The
    version's tags are ``version_tags(config)`` then ``tags`` (a few short ones: the logged
    model keeps the full record, its source hash, parameters and metrics)."""
    _check_names(name, aliases)
    return _register(model_uri, name, aliases, description, tags or {})


def _check_names(name: str, aliases: Sequence[str]) -> None:
    check_name("registered model name", name)
    for a in aliases:
        check_name("alias", a)


def _register(model_uri: str, name: str, aliases: Sequence[str], description: str | None,
              tags: Mapping[str, str]) -> RegisteredController:
    """Register the logged model at ``model_uri`` after checking its files against the digest
    recorded at logging; the version records that digest (the caller's tags cannot change it).
    The registered model's description and tags are written or refreshed (``describe_model``)."""
    import mlflow  # lazy: see the module docstring

    fetched = fetch_model(model_uri)
    config = fetched.config
    model_id = logged_model_id(model_uri)
    tags = {**version_tags(config), **dict(tags), MODEL_DIGEST_TAG: fetched.digest}
    version = mlflow.register_model(model_uri, name, tags=tags)
    c = client()
    describe_model(c, name)
    if description:
        c.update_model_version(name, version.version, description=description)
    for a in aliases:
        c.set_registered_model_alias(name, a, version.version)
    return RegisteredController(name, str(version.version), version.run_id, str(config["controller"]), dict(config),
                                tuple(aliases), getattr(version, "model_id", None) or model_id)


def describe_model(c: Any, name: str) -> None:
    """The registered model's tags and description (``tracking.model_card``), written with
    client ``c``: the tags always, the description unless someone wrote their own in the UI."""
    for key, value in model_tags(name).items():
        c.set_registered_model_tag(name, key, value)
    if is_autotts_description(c.get_registered_model(name).description):
        c.update_registered_model(name, description=model_description(name))


def version_by_alias(name: str, alias: str):
    """The ``ModelVersion`` holding ``alias``, or a ``ControllerError`` saying what is missing."""
    from mlflow.exceptions import MlflowException  # lazy: see the module docstring

    c = client()
    try:
        registered = c.get_registered_model(name)
    except MlflowException as exc:
        if is_not_found(exc):
            raise ControllerError(f"registered model {name!r} does not exist") from None
        raise ControllerError(f"registered model {name!r}: {first_line(exc)}") from None
    version = registered.aliases.get(alias)
    if version is None:
        set_ = ", ".join(f"{a} -> v{v}" for a, v in sorted(registered.aliases.items())) or "none"
        raise ControllerError(f"alias {alias!r} is not set on registered model {name!r} (aliases set: {set_})")
    return c.get_model_version(name, str(version))


# ---------------------------------------------------------------------------- gate
@dataclass(frozen=True)
class Promotion:
    """What ``promote`` decided and where it was logged."""

    decision: GateDecision
    run: GateRun


def promote(name: str = DEFAULT_MODEL_NAME, from_alias: str = "challenger", to_alias: str = "champion",
            gate_data: Sequence[Any] = (), config: GateConfig = GateConfig(),
            experiment: str = GATE_EXPERIMENT) -> Promotion:
    """Replay the ``from_alias`` version (and the ``to_alias`` one, if set) on ``gate_data``
    and move ``to_alias`` when the rule passes; the gate is recorded either way (``record_gate``:
    its run in ``experiment``, the tags, the candidate's description).

    The registry's part only: which versions hold the aliases and what they hold; the
    replay and the decision are ``promotion.gate``'s."""
    if not gate_data:
        raise AutoTTSError("the gate needs data: pass at least one dataset URI with --gate")
    check_name("alias", to_alias)
    cand_v = version_by_alias(name, from_alias)
    inc_version = client().get_registered_model(name).aliases.get(to_alias)
    decision = gate_versions(name, str(cand_v.version), from_alias,
                             str(inc_version) if inc_version is not None else None, to_alias, gate_data, config)
    run = record_gate(decision, experiment)
    if decision.passed:
        apply_promotion(decision)
    return Promotion(decision, run)


def gate_versions(name: str, candidate: str, from_alias: str, incumbent: str | None, to_alias: str,
                  gate_data: Sequence[Any], config: GateConfig) -> GateDecision:
    """The gate's decision on version ``candidate`` of ``name`` against version ``incumbent``
    (None: a first promotion) for ``to_alias``; nothing is written. Each version's model is
    fetched and checked against its recorded digest; the candidate's code runs only in the
    sandbox (``promotion.gate.replay_sides``)."""
    cand = GateEntry(candidate, from_alias, spec_from_model_uri(f"models:/{name}/{candidate}"))
    inc = None
    if incumbent is not None:  # the candidate's own version is not loaded twice
        inc = cand if incumbent == candidate else \
            GateEntry(incumbent, to_alias, spec_from_model_uri(f"models:/{name}/{incumbent}"))
    datasets = load_gate_data(gate_data)
    return gate(name, cand, inc, to_alias, datasets, config, [content_digest(d)[:DIGEST_CHARS] for d in datasets])


def record_gate(decision: GateDecision, experiment: str = GATE_EXPERIMENT) -> GateRun:
    """Write what the gate decided, whichever way: its run (``tracking.gate_run``: every
    number, the data, the plot) in ``experiment``; on both versions the four short
    ``autotts.gate.*`` tags, any other ``autotts.gate.*`` tag (an earlier autotts wrote dozens)
    removed; on the candidate the report as its description, linking to the run and showing
    its plot, above the description it had. The alias is ``apply_promotion``'s."""
    c = client()
    cand, inc = decision.candidate, decision.incumbent
    versions = {cand.version: c.get_model_version(cand.name, cand.version)}
    if inc is not None and inc.version != cand.version:
        versions[inc.version] = c.get_model_version(inc.name, inc.version)
    run = log_gate_run(decision, experiment, {v: version_model_id(mv) for v, mv in versions.items()})
    sides = [(cand, inc, "candidate")] + ([(inc, cand, "incumbent")] if inc is not None and inc.version != cand.version
                                          else [])
    for side, other, role in sides:
        tags = gate_tags(side, other, decision, role)
        for key in versions[side.version].tags:
            if key.startswith(f"{GATE_TAG}.") and key not in tags:
                c.delete_model_version_tag(side.name, side.version, key)
        for key, value in tags.items():
            c.set_model_version_tag(side.name, side.version, key, value)
    c.update_model_version(cand.name, cand.version, description=description(
        decision, versions[cand.version].description, (run.name, run.link), run.plot))
    return run


def version_model_id(version: Any) -> str | None:
    """The logged model behind a ``ModelVersion``: its ``model_id``, else the id its source
    (``models:/<model id>``) names."""
    return getattr(version, "model_id", None) or logged_model_id(version.source or "")


def apply_promotion(decision: GateDecision) -> None:
    """A passed gate's effect: the target alias moves to the candidate."""
    client().set_registered_model_alias(decision.candidate.name, decision.target_alias, decision.candidate.version)
