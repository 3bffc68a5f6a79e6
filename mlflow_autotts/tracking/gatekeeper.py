"""The gatekeeper's decisions against the registry, and its webhook (``autotts gatekeeper``).

``Gatekeeper.decide`` takes one journaled alias change (``promotion/receiver.py`` calls it,
one model's changes at a time) and acts on the registry as it is *now*, so a decision
resumed after a restart, or one that arrives after later changes, still does the right thing:

- ``@candidate`` on version v: if ``@candidate`` still points at v, the replay gate runs
  (``model_registry.gate_versions``: both models fetched and checked against their digests,
  the candidate's code only in the sandbox) against the version the gate last promoted
  (else the current ``@champion``, else none: a first promotion). Passed: the pass is
  journaled, then ``@champion`` moves (``apply_promotion``). Refused: ``@champion`` stays.
  Either way the gate is recorded as ``autotts promote`` records it (``record_gate``: its run
  in ``experiment``, the short ``autotts.gate.*`` tags on both versions, the report as the
  candidate's description). A gate that cannot run (data missing, the sandbox
  refuses, a model fails its digest check) leaves ``@champion`` alone and says so.
- ``@champion`` on version v: kept if v is the version the gate last promoted (the journal's
  record, which UI users cannot edit, unlike tags); else moved back to that version, or
  removed when nothing has passed yet.

Every decision about a version is written on it as ``autotts.gatekeeper.*`` tags
(``decision``, ``reason``, ``delivery``, ``time``), the reason a sentence that says what to do.
A delivery whose decision was interrupted ``MAX_ATTEMPTS`` times is given up with a note.

``install_webhook`` creates (or updates, by name) the MLflow webhook with the shared secret.
MLflow is imported inside the functions: the CLI imports this module at start-up.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, Sequence

from mlflow_autotts.errors import AutoTTSError, first_line, safe_text
from mlflow_autotts.promotion.gate import GateConfig
from mlflow_autotts.promotion.journal import Entry, Journal, Outcome
from mlflow_autotts.promotion.webhooks import ALIAS_CREATED, AliasChange
from mlflow_autotts.tracking.mlflow_utils import DEFAULT_MODEL_NAME, GATE_EXPERIMENT, client, is_not_found
from mlflow_autotts.tracking.model_registry import apply_promotion, check_name, gate_versions, record_gate

GATEKEEPER_TAG = "autotts.gatekeeper"
"""Prefix of the tags the gatekeeper leaves on a version it decided about."""
MAX_ATTEMPTS = 3
"""Attempts at deciding one delivery (each start of a gate counts) before it is given up."""


@dataclass(frozen=True)
class Watch:
    """What the gatekeeper guards: a part of its settings (flat options)."""

    name: str = DEFAULT_MODEL_NAME
    """Registered model whose aliases are guarded (deliveries about other models are ignored)."""
    candidate_alias: str = "candidate"
    """Setting this alias on a version (in the UI, or register --alias) asks the gate to promote it."""
    champion_alias: str = "champion"
    """The alias only the gate moves: set on a version the gate has not promoted, it is moved back."""

    def __post_init__(self) -> None:
        for option, kind, value in (("--name", "registered model name", self.name),
                                    ("--candidate-alias", "alias", self.candidate_alias),
                                    ("--champion-alias", "alias", self.champion_alias)):
            try:
                check_name(kind, value)
            except AutoTTSError as exc:
                raise AutoTTSError(f"{option}: {exc}") from None
        if self.candidate_alias == self.champion_alias:
            raise AutoTTSError(f"--candidate-alias and --champion-alias are both {self.champion_alias!r}: "
                               "the gate moves one to the other")


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


class Gatekeeper:
    """Decides journaled alias changes of ``watch.name`` (see the module docstring)."""

    def __init__(self, watch: Watch, gate_data: Sequence[str], rule: GateConfig, journal: Journal,
                 experiment: str = GATE_EXPERIMENT):
        if not gate_data:
            raise AutoTTSError("the gatekeeper needs gate data: pass at least one dataset URI with --gate")
        self.watch = watch
        self.gate_data = tuple(gate_data)
        self.rule = rule
        self.journal = journal
        self.experiment = experiment
        """The MLflow experiment of the gates' runs."""

    def watches(self, change: AliasChange) -> bool:
        w = self.watch
        return change.name == w.name and change.alias in (w.candidate_alias, w.champion_alias)

    def decide(self, entry: Entry) -> Outcome:
        """Act on one journaled change; the outcome is what the journal records."""
        w = self.watch
        if entry.attempts > MAX_ATTEMPTS:
            reason = (f"given up after {MAX_ATTEMPTS} interrupted attempts (last error: "
                      f"{entry.last_error or 'the gatekeeper stopped mid-decision'}); @{w.champion_alias} is "
                      f"unchanged. Set @{entry.alias} again to retry.")
            self._note(entry.version, "error", reason, entry.id)
            return Outcome("error", reason, entry.version)
        if entry.alias == w.candidate_alias:
            return self._gate(entry)
        return self._guard(entry)

    # -------------------------------------------------------------------- @candidate
    def _gate(self, entry: Entry) -> Outcome:
        w = self.watch
        aliases = self._aliases()
        now_at = aliases.get(w.candidate_alias)
        if now_at != entry.version:
            where = f"now points at v{now_at}" if now_at else "was removed"
            return Outcome("superseded", f"@{w.candidate_alias} {where}: v{entry.version} is not gated for this "
                                         "delivery")
        incumbent = self._last_passed() or aliases.get(w.champion_alias)
        stays = f"@{w.champion_alias} stays on v{incumbent}" if incumbent else f"@{w.champion_alias} stays unset"
        try:
            decision = gate_versions(w.name, entry.version, w.candidate_alias, incumbent, w.champion_alias,
                                     self.gate_data, self.rule)
        except Exception as exc:  # noqa: BLE001  (any reason the gate cannot run is said on the version)
            reason = (f"the gate could not run: {safe_text(first_line(exc), 1500)}. {stays}; set "
                      f"@{w.candidate_alias} again to retry.")
            self._note(entry.version, "error", reason, entry.id)
            return Outcome("error", reason, entry.version)
        record_gate(decision, self.experiment)
        if decision.passed:
            self.journal.record_pass(w.name, w.champion_alias, entry.version, entry.id)  # before the alias moves
            apply_promotion(decision)
            reason = f"promoted to @{w.champion_alias}: {decision.reason}"
        else:
            reason = f"refused: {stays}: {decision.reason}"
        self._note(entry.version, "promoted" if decision.passed else "refused", reason, entry.id)
        return Outcome("promoted" if decision.passed else "refused", reason, entry.version)

    # --------------------------------------------------------------------- @champion
    def _guard(self, entry: Entry) -> Outcome:
        w = self.watch
        holder = self._aliases().get(w.champion_alias)
        if holder is None:
            return Outcome("kept", f"@{w.champion_alias} is not set")
        legit = self._last_passed()
        if holder == legit:
            return Outcome("kept", f"v{holder} is the version the gate last promoted to @{w.champion_alias}", holder)
        why = (f"passed the gate before v{legit} did" if holder in self.journal.passed(w.name, w.champion_alias)
               else "has not passed the gate")
        c = client()
        if legit is None:
            c.delete_registered_model_alias(w.name, w.champion_alias)
            reason = (f"@{w.champion_alias} was set on v{holder}, which {why}; no version has passed, so "
                      f"@{w.champion_alias} was removed. Set @{w.candidate_alias} on v{holder} to gate it.")
            decision = "removed"
        else:
            c.set_registered_model_alias(w.name, w.champion_alias, legit)
            reason = (f"@{w.champion_alias} was set on v{holder}, which {why}; moved back to v{legit}, the "
                      f"version the gate last promoted. Set @{w.candidate_alias} on v{holder} to gate it.")
            decision = "reverted"
        self._note(holder, decision, reason, entry.id)
        return Outcome(decision, reason, holder)

    # ------------------------------------------------------------------- registry
    def _aliases(self) -> dict[str, str]:
        return {a: str(v) for a, v in client().get_registered_model(self.watch.name).aliases.items()}

    def _last_passed(self) -> str | None:
        """The version the gate last promoted that still exists."""
        for version in self.journal.passed(self.watch.name, self.watch.champion_alias):
            if self._exists(version):
                return version
        return None

    def _exists(self, version: str) -> bool:
        from mlflow.exceptions import MlflowException  # lazy: see the module docstring

        try:
            client().get_model_version(self.watch.name, version)
        except MlflowException as exc:
            if is_not_found(exc):
                return False
            raise
        return True

    def _note(self, version: str, decision: str, reason: str, delivery_id: str) -> None:
        c = client()
        for key, value in (("decision", decision), ("reason", reason[:5000]), ("delivery", delivery_id),
                           ("time", _now())):
            c.set_model_version_tag(self.watch.name, version, f"{GATEKEEPER_TAG}.{key}", value)


# ----------------------------------------------------------------------- webhook
def install_webhook(url: str, webhook_name: str, secret: str, description: str) -> tuple[Any, bool]:
    """(the MLflow webhook, whether it was created): ``webhook_name`` created for
    ``model_version_alias.created`` deliveries to ``url`` signed with ``secret``, or updated
    to that if it exists (one webhook per name, so events are not delivered twice)."""
    from mlflow.exceptions import MlflowException  # lazy: see the module docstring

    try:
        c = client()
        found, token = None, None
        while found is None:
            page = c.list_webhooks(max_results=100, page_token=token)
            found = next((h for h in page if h.name == webhook_name), None)
            token = page.token
            if not token:
                break
        if found is not None:
            return c.update_webhook(found.webhook_id, url=url, events=[ALIAS_CREATED], secret=secret,
                                    description=description, status="ACTIVE"), False
        return c.create_webhook(webhook_name, url, [ALIAS_CREATED], description=description, secret=secret), True
    except (MlflowException, NotImplementedError) as exc:
        raise AutoTTSError(f"cannot install webhook {webhook_name!r} for {url}: {first_line(exc)} (webhooks need an "
                           "MLflow server on a SQL database; a loopback or private URL needs the server started "
                           "with MLFLOW_WEBHOOK_ALLOW_PRIVATE_IPS=true, http needs "
                           "MLFLOW_WEBHOOK_ALLOWED_SCHEMES=http,https)") from None


def probe_webhook(webhook_id: str) -> tuple[bool, str]:
    """(whether the receiver answered MLflow's test delivery with a success, what happened)."""
    result = client().test_webhook(webhook_id)
    if result.success:
        return True, f"HTTP {result.response_status}"
    detail = result.error_message or f"HTTP {result.response_status}: {(result.response_body or '')[:300]}"
    return False, safe_text(detail, 500)


__all__ = ["GATEKEEPER_TAG", "Gatekeeper", "MAX_ATTEMPTS", "Watch", "install_webhook", "probe_webhook"]
