"""Logging an ``autotts collect`` to MLflow (``docs/architecture.md``, "MLflow conventions").

One run per collection: params are the collection settings (``live.<key>`` for the
``live`` mapping), the engine that generated and each endpoint (``endpoint.<i>``, with
``endpoint.<i>.failed`` for one taken out of rotation); metrics its throughput (questions,
branches, generated and probe tokens, prefix-cache hit rate, tokens/s) and the questions
each endpoint generated (``endpoint.<i>.questions``); the published
file is the run's dataset input (context ``collect``) and an artifact, beside the
validation report, so the data a controller is later searched on traces back to this run.
"""

from __future__ import annotations

import json
import tempfile
import time
from pathlib import Path
from typing import Any

from mlflow_autotts.collect.config import CollectConfig
from mlflow_autotts.collect.run import CollectReport
from mlflow_autotts.settings import flat, to_dict
from mlflow_autotts.tracking.datasets import log_collected_dataset
from mlflow_autotts.tracking.mlflow_utils import client, param_value, params_beside, target_run
from mlflow_autotts.tracking.naming import run_name

COMMAND_TAG = "autotts.command"
VALIDATION_FILE = "validation.json"


def collect_params(config: CollectConfig, report: CollectReport) -> dict[str, str]:
    out: dict[str, Any] = {}
    for k, v in to_dict(config).items():  # the settings only, not the live configs built from them
        if k == "live":
            out.update({f"live.{kk}": vv for kk, vv in v.items()})
        elif k == "base_url":
            out[k] = flat(v) or None
        elif k not in ("experiment", "run_name", "mlflow", "progress", "resume"):
            out[k] = v
    out.update({f"engine.{k}": v for k, v in report.backend.items()})
    for i, e in enumerate(report.endpoints):  # metrics endpoint.<i>.questions count what each served
        out[f"endpoint.{i}"] = e.name
        if e.error is not None:
            out[f"endpoint.{i}.failed"] = e.error
    return {k: param_value(v) for k, v in out.items() if v is not None}


def default_run_name(config: CollectConfig, report: CollectReport) -> str:
    """``collect-SmolLM2-135M-Instruct-40``: the model that generated and the number of questions."""
    return run_name("collect", report.dataset.provenance.model or config.model, len(report.dataset))


def log_collection(config: CollectConfig, report: CollectReport) -> str:
    """Log ``report`` to the active run, ``mlflow run``'s run, or a new run; its id."""
    from mlflow.entities import Metric, Param, RunTag  # lazy: the CLI imports this module at start-up

    c = client()
    with target_run(c, config.experiment, config.run_name, default_run_name(config, report)) as run_id:
        existing = c.get_run(run_id).data.params
        params = params_beside(existing, collect_params(config, report))
        now = int(time.time() * 1000)
        c.log_batch(run_id, params=[Param(k, v) for k, v in params.items()],
                    metrics=[Metric(k, v, now, 0) for k, v in report.metrics().items()],
                    tags=[RunTag(COMMAND_TAG, "collect")])
        log_collected_dataset(run_id, report.dataset, report.output, client=c)
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / VALIDATION_FILE
            path.write_text(json.dumps(report.validation.to_dict(), indent=2, default=str), encoding="utf-8")
            c.log_artifact(run_id, str(path))
    return run_id


__all__ = ["log_collection"]
