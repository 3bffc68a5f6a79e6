"""``autotts register`` and ``autotts promote`` (attached to the root group in ``mlflow_autotts.cli``).

Each command's settings are one dataclass here (``RegisterConfig``, ``PromoteConfig``; the
defaults come from ``promotion.gate``), from which their options are generated. Errors
from the user's input raise ``AutoTTSError`` and the root group prints them as one line
with exit status 2; a promotion refused by the gate prints why and exits 1.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

import click

from mlflow_autotts import settings
from mlflow_autotts.cli.options import settings_options
from mlflow_autotts.controllers.base import check_beta
from mlflow_autotts.controllers.loading import ControllerSpec, is_model_uri
from mlflow_autotts.errors import AutoTTSError
from mlflow_autotts.live.config import LiveConfig, stored_live_config
from mlflow_autotts.tracking.mlflow_utils import DEFAULT_MODEL_NAME, GATE_EXPERIMENT, REGISTER_EXPERIMENT
from mlflow_autotts.promotion.gate import GateConfig, gate_table
from mlflow_autotts.tracking.model_registry import promote, register
from mlflow_autotts.tracking.resolve import spec_from_model_uri

LIVE_FIELDS = frozenset(settings.names(LiveConfig)) - {"model", "base_url"}
"""Live settings ``--live key=value`` may give (the model and server have options of their own)."""


@dataclass(frozen=True)
class RegisterConfig:
    """The settings of ``autotts register``."""

    controller: str
    """A registered name, path.py[:Class], or a model URI to re-register."""
    beta: float | None = None
    """β in [0, 1]; unset means the controller's own (or the model's)."""
    params: dict[str, Any] = field(default_factory=dict)
    """Controller parameters as key=value, added to the model's when re-registering."""
    name: str = DEFAULT_MODEL_NAME
    """Registered model name."""
    aliases: tuple[str, ...] = ()
    """Aliases to set on the new version."""
    experiment: str = REGISTER_EXPERIMENT
    """MLflow experiment of the run the model is logged in (each kind of work has its own)."""
    description: str | None = None
    """Description of the new version."""
    live_model: str | None = None
    """Answer questions without a trajectory by generating with this model: its name on the
    vLLM server of live_base_url, or a model folder for a vLLM engine inside the server."""
    live_base_url: str | None = None
    """The server with the OpenAI completions API (e.g. vLLM's, http://127.0.0.1:8000/v1) that
    generates for live questions; unset means a vLLM engine inside the model server."""
    live: dict[str, Any] = field(default_factory=dict)
    """Other live settings as key=value (tokenizer, interval_tokens, max_tokens_per_branch,
    lookahead, temperature, seed, probe_tokens, top_logprobs, request_timeout, …); the
    AUTOTTS_LIVE_<SETTING> variables of the serving process override them."""

    def __post_init__(self) -> None:
        if self.beta is not None:
            check_beta(self.beta)
        if (self.live_base_url or self.live) and not self.live_model:
            raise AutoTTSError("register: live settings need --live-model (the model that generates)")

    def live_settings(self) -> dict[str, Any] | None:
        """The model's ``live`` section: the settings given (field name -> value), stored as
        given so the serving side's defaults and ``AUTOTTS_LIVE_<FIELD>`` variables still apply;
        checked here by building it the way serving will (``stored_live_config``, without the
        environment). None without a live model."""
        if not self.live_model:
            return None
        values: dict[str, Any] = {"model": self.live_model,
                                  "backend": "openai" if self.live_base_url else "vllm"}
        if self.live_base_url:
            values["base_url"] = self.live_base_url
        for key, value in self.live.items():
            if key not in LIVE_FIELDS:
                raise AutoTTSError(f"register: unknown live setting {key!r}; valid: {', '.join(sorted(LIVE_FIELDS))}")
            values[key] = settings.coerce(LiveConfig, key, value, where="register --live") \
                if isinstance(value, str) else value
        stored_live_config(values, environ={})  # every field checked, with the field named on error
        return values


@dataclass(frozen=True)
class PromoteConfig:
    """The settings of ``autotts promote``."""

    gate: tuple[str, ...]
    """Gate dataset URIs: files, folders, autotts:<model>/<benchmark>."""
    from_alias: str = "challenger"
    """Alias of the candidate."""
    to_alias: str = "champion"
    """Alias to move to the candidate if the gate passes."""
    shuffles: int = 100
    """Replay runs per dataset."""
    workers: int = 0
    """Worker processes; 0 means all cores."""
    max_accuracy_drop: float = 0.0
    """Points of mean accuracy the candidate may lose against the incumbent."""
    max_token_ratio: float = 1.0
    """Largest candidate/incumbent ratio of mean tokens."""
    name: str = DEFAULT_MODEL_NAME
    """Registered model name."""
    progress: bool = True
    """Show a progress bar."""
    allow_weaker_isolation: bool = False
    """Run controller code that is not built in even where the sandbox cannot give its full
    isolation here (e.g. not root, no network namespace); the weaker isolation is recorded."""
    experiment: str = GATE_EXPERIMENT
    """MLflow experiment of the gate's run (its numbers, data and plot; the version's
    description links to it)."""

    def __post_init__(self) -> None:
        if self.shuffles < 1:
            raise AutoTTSError(f"promote config: shuffles must be >= 1, got {self.shuffles}")
        if self.workers < 0:
            raise AutoTTSError(f"promote config: workers must be >= 0, got {self.workers}")

    def gate_config(self) -> GateConfig:
        return GateConfig(max_accuracy_drop=self.max_accuracy_drop, max_token_ratio=self.max_token_ratio,
                          shuffles=self.shuffles, workers=self.workers or None, progress=self.progress,
                          allow_weaker_isolation=self.allow_weaker_isolation)


@click.command("register")
@settings_options(RegisterConfig, flags={"params": "--param", "aliases": "--alias"}, arguments=("controller",))
def register_cmd(config: RegisterConfig) -> None:
    """Log CONTROLLER (a registered name, path.py[:Class], or a model URI to re-register) as an
    MLflow model and register it as a new version."""
    if is_model_uri(config.controller):
        base = spec_from_model_uri(config.controller)
        spec = replace(base, beta=base.beta if config.beta is None else config.beta,
                       params={**base.params, **config.params})
    else:
        spec = ControllerSpec(config.controller, config.beta, config.params)
    reg = register(spec, name=config.name, aliases=config.aliases, experiment=config.experiment,
                   description=config.description, live=config.live_settings())
    shown = ([f"beta {reg.config['beta']:g}"] if reg.config.get("uses_beta", True) else []) + \
        [f"{k}={v}" for k, v in reg.config["params"].items()]
    click.echo(f"registered {reg.name} version {reg.version}: {reg.controller}"
               + (f" ({', '.join(shown)})" if shown else ""))
    click.echo(f"  {reg.model_uri}  (run {reg.run_id})")
    for a in reg.aliases:
        click.echo(f"  models:/{reg.name}@{a}")


@click.command("promote")
@settings_options(PromoteConfig, flags={"from_alias": "--from", "to_alias": "--to"})
def promote_cmd(config: PromoteConfig) -> None:
    """Replay the --from and --to versions on the gate data; move --to to the candidate only if
    it keeps accuracy and tokens within the limits (exit 1 when refused)."""
    promotion = promote(config.name, config.from_alias, config.to_alias, list(config.gate), config.gate_config(),
                        config.experiment)
    decision = promotion.decision
    click.echo(gate_table(decision))
    link = promotion.run.link
    click.echo(f"gate run: {promotion.run.name} ({promotion.run.run_id}) in experiment {config.experiment}"
               + (f": {link}" if link.startswith(("http://", "https://")) else ""))
    c = decision.candidate
    if decision.passed:
        click.echo(f"promoted: {config.name} v{c.version} is now @{config.to_alias}: {decision.reason}")
        return
    inc = decision.incumbent
    click.echo(f"refused: {config.name} v{c.version} (@{config.from_alias}) does not replace "
               f"v{inc.version if inc else '?'} (@{config.to_alias}): {decision.reason}")
    click.get_current_context().exit(1)
