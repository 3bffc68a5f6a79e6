"""``autotts evaluate`` without the CLI: load data, replay, compare with SC@64.

The evaluated controller, SC@64 and (when several β are compared) the other reference
controllers run in one ``evaluate_many`` call so they share a single process pool. The
caller hands over the controller as a ``ControllerSpec``: the command layer resolves model
URIs (through MLflow) before calling here, so this module needs nothing above it.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

from mlflow_autotts.controllers.base import check_beta
from mlflow_autotts.controllers.loading import ControllerSpec
from mlflow_autotts.controllers.reference import REFERENCE_POINTS, SC64
from mlflow_autotts.data.uris import load_datasets
from mlflow_autotts.errors import AutoTTSError
from mlflow_autotts.replay.report import EvaluationReport
from mlflow_autotts.replay.runner import EvalConfig, evaluate_many


@dataclass(frozen=True)
class EvaluateConfig:
    """The settings of ``autotts evaluate``: its CLI options, ``--config`` YAML keys and
    MLproject parameters are derived from these fields."""

    data: tuple[str, ...]
    """Dataset URIs: local .json/.parquet files, folders of them, autotts:<model>/<benchmark>."""
    controller: str
    """Registered name (sc, asc, esc, parallel_probe, cmc, …), path.py[:Class], or a model URI
    (models:/name@alias, runs:/…)."""
    beta: tuple[float, ...] = ()
    """β values in [0, 1]; none means the controller's own (its class default, or the model's)."""
    params: dict[str, Any] = field(default_factory=dict)
    """Controller parameters as key=value, overriding its defaults (or the model's); values
    read as JSON where they parse."""
    shuffles: int = 100
    """Runs per dataset; run s visits branches in random.Random(s).shuffle order."""
    workers: int = 0
    """Worker processes; 0 means all cores."""
    references: bool | None = None
    """Also replay asc, esc and parallel_probe as plot points; unset means when several β are given."""
    output_json: str | None = None
    """Write the results here as JSON."""
    experiment: str = "autotts"
    """MLflow experiment of the run."""
    run_name: str | None = None
    """MLflow run name."""
    mlflow: bool = True
    """Log the evaluation to MLflow (MLFLOW_TRACKING_URI)."""
    progress: bool = True
    """Show a progress bar."""

    def __post_init__(self) -> None:
        if not self.data:
            raise AutoTTSError("evaluate config: data needs at least one dataset URI")
        if not self.controller.strip():
            raise AutoTTSError("evaluate config: controller must not be empty")
        for b in self.beta:
            check_beta(b)
        if self.shuffles < 1:
            raise AutoTTSError(f"evaluate config: shuffles must be >= 1, got {self.shuffles}")
        if self.workers < 0:
            raise AutoTTSError(f"evaluate config: workers must be >= 0, got {self.workers}")

    def mlflow_params(self) -> dict[str, Any]:
        """What the run's own params (controller, β, shuffles, dataset names) do not say."""
        return {"controller_ref": self.controller, "data_uris": ",".join(self.data)}


def local_controller(ref: str) -> ControllerSpec:
    """The spec of a registered name or source file, checked now: an unknown name or a bad
    file fails with a clear message before any data is loaded."""
    spec = ControllerSpec(ref)
    spec.controller_class()
    return spec


def controller_specs(base: ControllerSpec, betas: list[float] | None, params: dict[str, Any]) -> list[ControllerSpec]:
    """One spec per β (just one when the controller ignores β)."""
    merged = {**base.params, **params}
    if not betas:
        return [replace(base, params=merged)]
    if not getattr(base.controller_class(), "uses_beta", True):
        betas = betas[:1]
    return [replace(base, beta=b, params=merged) for b in dict.fromkeys(betas)]


def run_evaluation(config: EvaluateConfig, controller: ControllerSpec) -> EvaluationReport:
    """Replay ``controller`` (the resolved ``config.controller``) as ``config`` says."""
    specs = controller_specs(controller, list(config.beta), config.params)
    for s in specs:
        s.build()  # bad parameters fail here, before any data is loaded
    datasets = load_datasets(list(config.data))
    with_refs = config.references if config.references is not None else len(specs) > 1
    extra = [SC64] + (list(REFERENCE_POINTS) if with_refs else [])
    eval_config = EvalConfig(shuffles=config.shuffles, workers=config.workers or None, progress=config.progress)
    results = evaluate_many(specs + extra, datasets, eval_config)
    n_main = len(specs) * len(datasets)
    main, base_results = results[:n_main], results[n_main:]
    sc64 = {r.data: r for r in base_results[: len(datasets)]}
    refs = base_results[len(datasets):]
    for r in refs + list(sc64.values()):
        r.episodes = None  # only the evaluated controller's episodes are kept
    return EvaluationReport(results=main, sc64=sc64, references=refs)
