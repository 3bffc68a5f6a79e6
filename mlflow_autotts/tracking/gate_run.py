"""The promotion gate's MLflow run: every number the gate decided on, where a version links.

One run per gate, in experiment ``autotts-gate`` unless another is named, called
``gate-<model>-v<candidate>``: params (the versions, the rule, the shuffles), metrics (each
version's accuracy and mean tokens per dataset and their mean, the accuracy gain, the token
ratio, whether it passed), the gate data as dataset inputs (context ``gate``) and both
versions' logged models as model inputs, tags saying what was decided, and ``gate.png``
(``plots.gate_figure``). The registry page keeps only short tags and the report; this run
keeps the rest. Written with the client, not the fluent API, so the gatekeeper's threads can
log gates concurrently.

MLflow is imported inside the functions: the CLI imports this module at start-up.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from mlflow_autotts.promotion.gate import GateDecision, GateSide
from mlflow_autotts.tracking import plots
from mlflow_autotts.tracking.datasets import dataset_input
from mlflow_autotts.tracking.mlflow_utils import client, experiment_id, param_value, ui_artifact, ui_route, ui_url
from mlflow_autotts.tracking.naming import MEAN_KEY, dataset_keys, metric_key, run_name

PLOT_FILE = "gate.png"
COMMAND_TAG = "autotts.command"


@dataclass(frozen=True)
class GateRun:
    """Where a gate was logged."""

    run_id: str
    experiment_id: str
    name: str

    @property
    def link(self) -> str:
        """The run in MLflow's UI (relative to the UI, or absolute for a tracking server)."""
        return ui_url(ui_route(self.experiment_id, self.run_id))

    @property
    def plot(self) -> str:
        """The run's plot as an image URL."""
        return ui_url(ui_artifact(self.run_id, PLOT_FILE))


def gate_run_name(decision: GateDecision) -> str:
    """``gate-autotts-controller-v3``: the model and the candidate version."""
    return run_name("gate", decision.candidate.name, f"v{decision.candidate.version}")


def gate_metrics(decision: GateDecision) -> dict[str, float]:
    """``candidate.accuracy.<dataset>``, ``….mean``, ``candidate.mean_tokens.…``, the same for
    the incumbent, and ``passed``, ``accuracy_gain`` (points) and ``token_ratio`` when there is one."""
    keys = dataset_keys(r.data for r in decision.candidate.results)
    sides: list[tuple[str, GateSide]] = [("candidate", decision.candidate)]
    if decision.incumbent is not None:
        sides.append(("incumbent", decision.incumbent))
    out: dict[str, float] = {"passed": float(decision.passed)}
    for role, side in sides:
        for r in side.results:
            out[metric_key(f"{role}.accuracy", keys[r.data])] = r.accuracy
            out[metric_key(f"{role}.mean_tokens", keys[r.data])] = r.mean_tokens
        out[metric_key(f"{role}.accuracy", MEAN_KEY)] = side.accuracy
        out[metric_key(f"{role}.mean_tokens", MEAN_KEY)] = side.mean_tokens
    inc = decision.incumbent
    if inc is not None:
        out["accuracy_gain"] = decision.candidate.accuracy - inc.accuracy
        if inc.mean_tokens:
            out["token_ratio"] = decision.candidate.mean_tokens / inc.mean_tokens
    return out


def gate_params(decision: GateDecision) -> dict[str, str]:
    c, i, cfg = decision.candidate, decision.incumbent, decision.config
    params = {"model": c.name, "candidate": f"v{c.version}", "candidate_controller": c.controller,
              "incumbent": f"v{i.version}" if i is not None else "none", "target_alias": decision.target_alias,
              "rule": cfg.rule, "max_accuracy_drop": f"{cfg.max_accuracy_drop:g}",
              "max_token_ratio": f"{cfg.max_token_ratio:g}", "shuffles": str(cfg.shuffles),
              "data": ",".join(decision.datasets)}
    if i is not None:
        params["incumbent_controller"] = i.controller
    return {k: param_value(v) for k, v in params.items()}


def log_gate_run(decision: GateDecision, experiment: str, model_ids: dict[str, str | None] | None = None) -> GateRun:
    """Log ``decision`` as a finished run in ``experiment`` (created if missing); ``model_ids``
    maps each version to its logged model, recorded as the run's model inputs."""
    from mlflow.entities import LoggedModelInput, Metric, Param, RunStatus, RunTag  # lazy: see the module docstring

    c = client()
    exp = experiment_id(experiment, c)
    name = gate_run_name(decision)
    verdict = "promoted" if decision.passed else "refused"
    run = c.create_run(exp, run_name=name, tags={COMMAND_TAG: "gate", "autotts.decision": verdict})
    run_id = run.info.run_id
    try:
        now = int(time.time() * 1000)
        c.log_batch(run_id, params=[Param(k, v) for k, v in gate_params(decision).items()],
                    metrics=[Metric(k, float(v), now, 0) for k, v in gate_metrics(decision).items()],
                    tags=[RunTag("autotts.reason", decision.reason[:5000])])
        models = [LoggedModelInput(m) for m in dict.fromkeys((model_ids or {}).values()) if m]
        datasets = [dataset_input(ts, "gate") for ts in decision.trajectories if ts.provenance.source]
        if datasets or models:
            c.log_inputs(run_id, datasets=datasets or None, models=models or None)
        c.log_figure(run_id, plots.gate_figure(decision), PLOT_FILE)
    except BaseException:
        c.set_terminated(run_id, RunStatus.to_string(RunStatus.FAILED))
        raise
    c.set_terminated(run_id)
    return GateRun(run_id, exp, name)


__all__ = ["GateRun", "PLOT_FILE", "gate_metrics", "gate_params", "gate_run_name", "log_gate_run"]
