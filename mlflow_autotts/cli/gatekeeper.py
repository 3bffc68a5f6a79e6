"""``autotts gatekeeper serve`` and ``install``: promote in the registry UI, behind the gate.

``install`` gives the MLflow server a webhook for ``model_version_alias.created`` with a
secret; ``serve`` receives its deliveries (``promotion/receiver.py``: signature, timestamp,
journal) and decides them against the registry (``tracking/gatekeeper.py``): ``@candidate``
set on a version runs the replay gate and moves ``@champion`` when it passes; ``@champion``
set on a version the gate did not promote is moved back. Each command's settings are one
dataclass here (``GatekeeperConfig``, ``InstallConfig``), with the gate's rule
(``promotion.gate.GateConfig``), what is watched (``Watch``) and how the receiver listens
(``ReceiverConfig``) as parts, so their options are the same flat names everywhere.

The state directory holds the journal and, unless ``AUTOTTS_GATEKEEPER_SECRET`` is set, the
secret ``install`` wrote: give both commands the same ``--state-dir`` (or the same variable).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlparse

import click

from mlflow_autotts.cli.options import settings_options
from mlflow_autotts.errors import AutoTTSError
from mlflow_autotts.promotion.gate import GateConfig, load_gate_data
from mlflow_autotts.promotion.journal import Journal
from mlflow_autotts.promotion.receiver import WEBHOOK_PATH, Receiver, ReceiverConfig, build_app, serve
from mlflow_autotts.promotion.webhooks import SECRET_ENV, ensure_secret, read_secret
from mlflow_autotts.tracking.gatekeeper import Gatekeeper, Watch, install_webhook, probe_webhook
from mlflow_autotts.tracking.mlflow_utils import GATE_EXPERIMENT

SECRET_FILE = "webhook-secret"
JOURNAL_FILE = "journal.sqlite3"


def default_state_dir() -> str:
    import platformdirs

    return str(Path(platformdirs.user_state_dir("mlflow-autotts")) / "gatekeeper")


def secret_path(state_dir: str) -> Path:
    return Path(state_dir) / SECRET_FILE


def journal_path(state_dir: str) -> Path:
    return Path(state_dir) / JOURNAL_FILE


@dataclass(frozen=True)
class GatekeeperConfig:
    """The settings of ``autotts gatekeeper serve``."""

    gate: tuple[str, ...]
    """Gate dataset URIs: files, folders, autotts:<model>/<benchmark> (read again for each gate)."""
    watch: Watch = field(default_factory=Watch)
    """The model and aliases guarded."""
    rule: GateConfig = field(default_factory=lambda: GateConfig(progress=False))
    """The promotion rule and its replay, as for autotts promote."""
    receiver: ReceiverConfig = field(default_factory=ReceiverConfig)
    """Where and how deliveries are received."""
    state_dir: str = field(default_factory=default_state_dir)
    """Directory of the journal (deliveries, decisions, the versions that passed) and the secret
    file written by install."""
    experiment: str = GATE_EXPERIMENT
    """MLflow experiment of each gate's run (its numbers, data and plot; the version's
    description links to it)."""

    def __post_init__(self) -> None:
        if not self.gate:
            raise AutoTTSError("gatekeeper: --gate needs at least one dataset URI")


@dataclass(frozen=True)
class InstallConfig:
    """The settings of ``autotts gatekeeper install``."""

    url: str
    """Where the gatekeeper receives, e.g. http://127.0.0.1:5077/webhook (a bare host:port gets /webhook)."""
    watch: Watch = field(default_factory=Watch)
    """The model and aliases guarded (named in the webhook's description)."""
    webhook_name: str | None = None
    """Name of the MLflow webhook, created or updated; unset means autotts-gatekeeper-<name>."""
    state_dir: str = field(default_factory=default_state_dir)
    """Where the secret file is written if AUTOTTS_GATEKEEPER_SECRET is not set (serve reads it there)."""
    test: bool = True
    """Have MLflow send a test delivery and report whether the gatekeeper accepted it."""

    def __post_init__(self) -> None:
        parsed = urlparse(self.url)
        if parsed.scheme not in ("http", "https") or not parsed.hostname:
            raise AutoTTSError(f"gatekeeper install: --url {self.url!r} is not an http(s) URL with a host")

    @property
    def endpoint(self) -> str:
        """``url``, with ``/webhook`` when it names no path."""
        return self.url.rstrip("/") + WEBHOOK_PATH if urlparse(self.url).path in ("", "/") else self.url


@click.group("gatekeeper")
def gatekeeper_group() -> None:
    """Promote in the registry UI, behind the replay gate: a webhook receiver that gates @candidate into
    @champion and moves back a @champion the gate did not promote."""


@gatekeeper_group.command("serve")
@settings_options(GatekeeperConfig)
def serve_cmd(config: GatekeeperConfig) -> None:
    """Receive MLflow's alias webhooks (install them with `autotts gatekeeper install`) and decide them:
    @candidate set on a version runs the gate, @champion set on a version the gate did not promote is
    moved back."""
    level = config.receiver.log_level.upper()
    handler = logging.StreamHandler()
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s gatekeeper: %(message)s"))
    logger = logging.getLogger("mlflow_autotts.gatekeeper")
    logger.addHandler(handler)
    logger.setLevel(level)
    secret = read_secret(secret_path(config.state_dir))
    load_gate_data(config.gate)  # fail now on data that does not load (each gate reads it again)
    journal = Journal(journal_path(config.state_dir))
    keeper = Gatekeeper(config.watch, config.gate, config.rule, journal, config.experiment)
    receiver = Receiver(secret, journal, keeper.decide, keeper.watches, config.receiver.max_delivery_age)
    import mlflow  # lazy: the CLI starts without it

    resumed = receiver.resume()
    w, r = config.watch, config.receiver
    click.echo(f"gatekeeper for {w.name} in {mlflow.get_registry_uri()}: @{w.candidate_alias} is gated into "
               f"@{w.champion_alias} ({config.rule.rule}); receiving at http://{r.host}:{r.port}{WEBHOOK_PATH}"
               + (f"; resuming {resumed} pending deliver{'y' if resumed == 1 else 'ies'}" if resumed else ""),
               err=True)
    serve(build_app(receiver, r), r)


@gatekeeper_group.command("install")
@settings_options(InstallConfig)
def install_cmd(config: InstallConfig) -> None:
    """Create (or update) the MLflow webhook that sends alias changes to the gatekeeper at --url, signed
    with the gatekeeper's secret (MLFLOW_TRACKING_URI: the MLflow server, on a SQL database)."""
    secret, created = ensure_secret(secret_path(config.state_dir))
    w = config.watch
    name = config.webhook_name or f"autotts-gatekeeper-{w.name}"
    webhook, new = install_webhook(config.endpoint, name, secret,
                                   f"autotts gatekeeper for {w.name}: gates @{w.candidate_alias} into "
                                   f"@{w.champion_alias}, protects @{w.champion_alias}")
    if created:
        click.echo(f"wrote a new webhook secret to {secret_path(config.state_dir)} (serve reads it there)")
    elif not Path(secret_path(config.state_dir)).exists():
        click.echo(f"using the secret in ${SECRET_ENV}")
    click.echo(f"{'created' if new else 'updated'} webhook {name!r} ({webhook.webhook_id}): "
               f"model_version_alias.created -> {config.endpoint}")
    if config.test:
        ok, detail = probe_webhook(webhook.webhook_id)
        click.echo(f"test delivery: {'accepted' if ok else 'NOT accepted'} ({detail})"
                   + ("" if ok else "; is `autotts gatekeeper serve` running there with the same secret?"))
