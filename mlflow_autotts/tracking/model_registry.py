"""The model registry side: register controllers, move aliases, and the promotion gate.

Names (``docs/architecture.md``, "MLflow conventions"): registered model
``autotts-controller``; alias ``challenger`` for the best candidate of a search,
``champion`` for the one promoted behind the gate. The gate
replays both aliased versions on the same data in one process pool and moves the target
alias only when the candidate keeps accuracy (within ``max_accuracy_drop`` points) and
spends no more than ``max_token_ratio`` times the incumbent's tokens. Its numbers are
written to both versions as ``autotts.gate.*`` tags, so the registry UI shows why a
version holds its alias.

Every version carries ``autotts.model_sha256``, the digest of its model folder: checked
against the logged model's record when it is registered (``tracking.resolve.fetch_model``)
and against the version's own before any command uses it (``docs/architecture.md``, "The
trust boundary").

MLflow is imported inside the functions: the CLI imports this module at start-up.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, Mapping, Sequence

from mlflow_autotts.controllers.loading import ControllerSpec
from mlflow_autotts.data.digest import content_digest
from mlflow_autotts.data.trajectory import TrajectorySet
from mlflow_autotts.data.uris import load_datasets
from mlflow_autotts.errors import AutoTTSError, ControllerError
from mlflow_autotts.evaluation import score_specs
from mlflow_autotts.replay.results import EvalResult, mean_over_datasets
from mlflow_autotts.replay.runner import ReplayConfig
from mlflow_autotts.sandbox.limits import SandboxLimits
from mlflow_autotts.sandbox.session import SandboxedController
from mlflow_autotts.serving.integrity import MODEL_DIGEST_TAG
from mlflow_autotts.serving.model_config import candidate_config, model_config_for
from mlflow_autotts.tracking.mlflow_utils import (
    DEFAULT_EXPERIMENT,
    DEFAULT_MODEL_NAME,
    client,
    experiment_id,
    first_line,
    is_not_found,
)
from mlflow_autotts.tracking.datasets import DIGEST_CHARS
from mlflow_autotts.tracking.model import controller_tags, log_candidate_model, log_controller_model
from mlflow_autotts.tracking.naming import dataset_keys
from mlflow_autotts.tracking.resolve import fetch_model, logged_model_id, spec_from_model_uri

GATE_TAG = "autotts.gate"
_EPS = 1e-9  # float slack so that equal numbers never fail a gate by rounding


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


def _check_name(kind: str, value: str) -> str:
    if not value or not value.strip() or "/" in value or "@" in value:
        raise AutoTTSError(f"invalid {kind} {value!r}: must be non-empty, without '/' or '@'")
    return value


def register(spec: ControllerSpec, name: str = DEFAULT_MODEL_NAME, aliases: Sequence[str] = (),
             experiment: str = DEFAULT_EXPERIMENT, metrics: Mapping[str, float] | None = None,
             run_name: str | None = None, description: str | None = None,
             live: Mapping[str, Any] | None = None) -> RegisteredController:
    """Log ``spec`` as a controller model in a new run (nested when a run is active) and
    register it as a new version of ``name``, with the controller's tags; set ``aliases``.

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
    with mlflow.start_run(run_name=run_name or f"register-{label}", **run_kwargs):
        mlflow.log_params({"controller": label, "beta": config["beta"],
                           **{f"param.{k}": v for k, v in config["params"].items()}})
        if metrics:
            mlflow.log_metrics({k: float(v) for k, v in metrics.items()})
        if spec.is_builtin:
            info = log_controller_model(spec, metrics=metrics, live=live)
        else:
            info = log_candidate_model(source_text, config["class_name"], label, config["beta"], config["params"],
                                       config["uses_beta"], metrics=metrics, live=live)
        return _register(info.model_uri, name, aliases, description, metrics, {})


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
                          description: str | None = None, tags: Mapping[str, str] | None = None,
                          metrics: Mapping[str, float] | None = None) -> RegisteredController:
    """Register an already logged controller model as a new version of ``name``; set ``aliases``.

    ``model_uri`` is typically ``ModelInfo.model_uri`` (``models:/<model id>``) of a
    ``log_candidate_model`` call. Nothing is loaded or executed: the model's files are checked
    against the digest recorded when it was logged, then its ``MLmodel`` is read, to check
    that it is an autotts controller (else a one-line ``ControllerError``) and to take its
    ``model_config``; the checked digest becomes the version's ``autotts.model_sha256``. The version's tags are the logged
    model's ``autotts.*`` tags (controller, source hash, β, parameters, the metrics it was
    logged with), then ``controller_tags(config, metrics)``, then ``tags``, later ones winning."""
    _check_names(name, aliases)
    return _register(model_uri, name, aliases, description, metrics, tags or {})


def _check_names(name: str, aliases: Sequence[str]) -> None:
    _check_name("registered model name", name)
    for a in aliases:
        _check_name("alias", a)


def _logged_model_tags(model_id: str | None) -> dict[str, str]:
    """The ``autotts.*`` tags of a logged model (none without one)."""
    from mlflow.exceptions import MlflowException  # lazy: see the module docstring

    if model_id is None:
        return {}
    try:
        tags = client().get_logged_model(model_id).tags
    except MlflowException:
        return {}
    return {k: v for k, v in tags.items() if k.startswith("autotts.")}


def _register(model_uri: str, name: str, aliases: Sequence[str], description: str | None,
              metrics: Mapping[str, float] | None, tags: Mapping[str, str]) -> RegisteredController:
    """Register the logged model at ``model_uri`` after checking its files against the digest
    recorded at logging; the version records that digest (the caller's tags cannot change it)."""
    import mlflow  # lazy: see the module docstring

    fetched = fetch_model(model_uri)
    config = fetched.config
    model_id = logged_model_id(model_uri)
    version_tags = {**_logged_model_tags(model_id), **controller_tags(config, metrics), **dict(tags),
                    MODEL_DIGEST_TAG: fetched.digest}
    version = mlflow.register_model(model_uri, name, tags=version_tags)
    c = client()
    if description:
        c.update_model_version(name, version.version, description=description)
    for a in aliases:
        c.set_registered_model_alias(name, a, version.version)
    return RegisteredController(name, str(version.version), version.run_id, str(config["controller"]), dict(config),
                                tuple(aliases), getattr(version, "model_id", None) or model_id)


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
class GateConfig:
    """The promotion rule and how to replay for it."""

    max_accuracy_drop: float = 0.0
    """Points of mean accuracy (%) the candidate may lose against the incumbent."""
    max_token_ratio: float = 1.0
    """Largest allowed ratio of candidate to incumbent mean tokens."""
    shuffles: int = 100
    """Replay runs per dataset."""
    workers: int | None = None
    """Worker processes (None: all cores)."""
    progress: bool = True
    """Show a progress bar."""
    allow_weaker_isolation: bool = False
    """Run controller code that is not built in even where the sandbox cannot give its full
    isolation here (e.g. not root, no network namespace); the weaker isolation is recorded."""

    def __post_init__(self) -> None:
        if not math.isfinite(self.max_accuracy_drop):
            raise AutoTTSError(f"--max-accuracy-drop must be a finite number, got {self.max_accuracy_drop}")
        if not (math.isfinite(self.max_token_ratio) and self.max_token_ratio > 0):
            raise AutoTTSError(f"--max-token-ratio must be a positive number, got {self.max_token_ratio}")

    @property
    def rule(self) -> str:
        return (f"accuracy >= incumbent - {self.max_accuracy_drop:g} points and "
                f"tokens <= {self.max_token_ratio:g} x incumbent")


@dataclass
class GateSide:
    """One version's replay results on the gate data (one ``EvalResult`` per dataset)."""

    name: str
    version: str
    alias: str
    controller: str
    results: list[EvalResult]

    @property
    def accuracy(self) -> float:
        """Mean over datasets of accuracy (%)."""
        return mean_over_datasets(self.results)[0]

    @property
    def mean_tokens(self) -> float:
        """Mean over datasets of mean tokens per problem."""
        return mean_over_datasets(self.results)[1]

    @property
    def label(self) -> str:
        return f"v{self.version} ({self.controller})"


@dataclass
class GateDecision:
    """What the gate found and did."""

    passed: bool
    reason: str
    candidate: GateSide
    incumbent: GateSide | None
    target_alias: str
    config: GateConfig
    datasets: list[str] = field(default_factory=list)
    digests: list[str] = field(default_factory=list)
    """Content digests of the gate data (``data/digest.py``, as the runs' dataset inputs show them)."""


def decide(candidate: GateSide, incumbent: GateSide | None, config: GateConfig) -> tuple[bool, str]:
    """The rule, with the numbers that decided it."""
    if incumbent is None:
        return True, (f"no incumbent: first promotion (accuracy {candidate.accuracy:.2f}%, "
                      f"{candidate.mean_tokens:,.0f} tokens)")
    floor = incumbent.accuracy - config.max_accuracy_drop
    ceiling = config.max_token_ratio * incumbent.mean_tokens
    acc_ok = candidate.accuracy >= floor - _EPS
    tok_ok = candidate.mean_tokens <= ceiling * (1 + _EPS)
    acc_txt = (f"accuracy {candidate.accuracy:.2f}% {'>=' if acc_ok else '<'} {floor:.2f}% "
               f"(incumbent {incumbent.accuracy:.2f}% - {config.max_accuracy_drop:g})")
    tok_txt = (f"tokens {candidate.mean_tokens:,.0f} {'<=' if tok_ok else '>'} {ceiling:,.0f} "
               f"({config.max_token_ratio:g} x incumbent {incumbent.mean_tokens:,.0f})")
    if acc_ok and tok_ok:
        return True, f"{acc_txt}; {tok_txt}"
    return False, "; ".join(t for ok, t in ((acc_ok, acc_txt), (tok_ok, tok_txt)) if not ok)


def _load_gate_data(data: Sequence[Any]) -> list[TrajectorySet]:
    if all(isinstance(d, TrajectorySet) for d in data):
        return list(data)
    return load_datasets([str(d) for d in data])


def _fmt(x: float) -> str:
    return repr(round(float(x), 6))


def gate_tags(side: GateSide, other: GateSide | None, decision: GateDecision, role: str) -> dict[str, str]:
    """``autotts.gate.*`` tags: the latest gate this version took part in."""
    keys = dataset_keys([r.data for r in side.results])
    tags = {
        f"{GATE_TAG}.role": role,
        f"{GATE_TAG}.decision": "promoted" if decision.passed else "refused",
        f"{GATE_TAG}.target": decision.target_alias,
        f"{GATE_TAG}.against": f"v{other.version}" if other is not None else "none",
        f"{GATE_TAG}.rule": decision.config.rule,
        f"{GATE_TAG}.reason": decision.reason[:5000],
        f"{GATE_TAG}.data": ",".join(decision.datasets),
        f"{GATE_TAG}.digests": ",".join(decision.digests),
        f"{GATE_TAG}.shuffles": str(decision.config.shuffles),
        f"{GATE_TAG}.time": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        f"{GATE_TAG}.accuracy": _fmt(side.accuracy),
        f"{GATE_TAG}.mean_tokens": _fmt(side.mean_tokens),
    }
    for r in side.results:
        tags[f"{GATE_TAG}.accuracy.{keys[r.data]}"] = _fmt(r.accuracy)
        tags[f"{GATE_TAG}.mean_tokens.{keys[r.data]}"] = _fmt(r.mean_tokens)
    return tags


def gate_table(decision: GateDecision) -> str:
    """Side by side, per dataset and the mean: accuracy and tokens of both versions."""
    c, i = decision.candidate, decision.incumbent
    head = ["data", f"candidate {c.label} acc %", "tokens"]
    if i is not None:
        head += [f"incumbent {i.label} acc %", "tokens", "Δacc", "token ratio"]
    rows = []
    names = [r.data for r in c.results] + ["mean"]
    c_vals = [(r.accuracy, r.mean_tokens) for r in c.results] + [(c.accuracy, c.mean_tokens)]
    i_vals = ([(r.accuracy, r.mean_tokens) for r in i.results] + [(i.accuracy, i.mean_tokens)]) if i else []
    for k, name in enumerate(names):
        row = [name, f"{c_vals[k][0]:.2f}", f"{c_vals[k][1]:,.0f}"]
        if i is not None:
            ia, it = i_vals[k]
            ratio = c_vals[k][1] / it if it else float("inf")
            row += [f"{ia:.2f}", f"{it:,.0f}", f"{c_vals[k][0] - ia:+.2f}", f"{ratio:.3f}"]
        rows.append(row)
    widths = [max(len(x) for x in col) for col in zip(head, *rows)]
    lines = ["  ".join(h.ljust(w) if n == 0 else h.rjust(w) for n, (h, w) in enumerate(zip(head, widths))),
             "  ".join("-" * w for w in widths)]
    for row in rows:
        lines.append("  ".join(x.ljust(w) if n == 0 else x.rjust(w) for n, (x, w) in enumerate(zip(row, widths))))
    return "\n".join(lines)


def _description(decision: GateDecision) -> str:
    return (f"Promoted to @{decision.target_alias} by the autotts gate on "
            f"{datetime.now(timezone.utc).isoformat(timespec='seconds')}.\n\n"
            f"Rule: {decision.config.rule}. Data: {', '.join(decision.datasets)}; "
            f"{decision.config.shuffles} shuffles.\n\n"
            f"Decision: {decision.reason}.\n\n```\n{gate_table(decision)}\n```\n")


def promote(name: str = DEFAULT_MODEL_NAME, from_alias: str = "challenger", to_alias: str = "champion",
            gate_data: Sequence[Any] = (), config: GateConfig = GateConfig()) -> GateDecision:
    """Replay the ``from_alias`` version (and the ``to_alias`` one, if set) on ``gate_data``
    and move ``to_alias`` when the rule passes. Tags go on both versions either way."""
    if not gate_data:
        raise AutoTTSError("the gate needs data: pass at least one dataset URI with --gate")
    _check_name("alias", to_alias)
    cand_v = version_by_alias(name, from_alias)
    c = client()
    registered = c.get_registered_model(name)
    inc_version = registered.aliases.get(to_alias)
    inc_v = c.get_model_version(name, str(inc_version)) if inc_version is not None else None
    same = inc_v is not None and str(inc_v.version) == str(cand_v.version)

    cand_spec = spec_from_model_uri(f"models:/{name}/{cand_v.version}")
    specs = [cand_spec]
    if inc_v is not None and not same:
        specs.append(spec_from_model_uri(f"models:/{name}/{inc_v.version}"))
    datasets = _load_gate_data(gate_data)
    # versions from a search are untrusted code: score_specs replays them in the sandbox
    results = score_specs(specs, datasets, ReplayConfig(shuffles=config.shuffles, workers=config.workers,
                                                      progress=config.progress), keep_episodes=False,
                          limits=SandboxLimits(allow_weaker_isolation=config.allow_weaker_isolation))
    n = len(datasets)
    candidate = GateSide(name, str(cand_v.version), from_alias, specs[0].label, results[:n])
    incumbent = None
    if inc_v is not None:
        incumbent = candidate if same else GateSide(name, str(inc_v.version), to_alias, specs[1].label, results[n:])
    passed, reason = decide(candidate, incumbent, config)
    decision = GateDecision(passed, reason, candidate, incumbent, to_alias, config, [d.name for d in datasets],
                            [content_digest(d)[:DIGEST_CHARS] for d in datasets])

    for key, value in gate_tags(candidate, incumbent, decision, "candidate").items():
        c.set_model_version_tag(name, candidate.version, key, value)
    if incumbent is not None and not same:
        for key, value in gate_tags(incumbent, candidate, decision, "incumbent").items():
            c.set_model_version_tag(name, incumbent.version, key, value)
    if passed:
        c.set_registered_model_alias(name, to_alias, candidate.version)
        c.update_model_version(name, candidate.version, description=_description(decision))
    return decision
