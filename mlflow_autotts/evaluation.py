"""``autotts evaluate`` without the CLI: resolve the controller, load data, replay, compare.

The evaluated controller, SC@64 and (when several β are compared) the other reference
controllers run in one ``evaluate_many`` call so they share a single process pool.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

from mlflow_autotts.controllers.loading import ControllerSpec
from mlflow_autotts.controllers.reference import REFERENCE_POINTS, SC64
from mlflow_autotts.replay.report import EvaluationReport
from mlflow_autotts.replay.runner import EvalConfig, evaluate_many

MODEL_URI_PREFIXES = ("models:/", "runs:/", "models:", "runs:")


@dataclass(frozen=True)
class EvaluateRequest:
    """What to evaluate (mirrors the CLI options)."""

    data: list[str]
    """Dataset URIs."""
    controller: str
    """Registered name, ``path.py[:Class]`` or a model URI."""
    betas: list[float] | None = None
    """β values; None means the controller's own (its class default, or the model's)."""
    params: dict[str, Any] = field(default_factory=dict)
    """Controller parameters overriding the defaults (or the model's)."""
    shuffles: int = 100
    """Runs per dataset."""
    workers: int | None = None
    """Worker processes; None means all cores."""
    progress: bool = True
    """Show a progress bar."""
    references: bool | None = None
    """Also evaluate asc/esc/parallel_probe as plot points; None means when several β are given."""

    def mlflow_params(self) -> dict[str, Any]:
        """What the run's own params (controller, β, shuffles, dataset names) do not say."""
        return {"controller_ref": self.controller, "data_uris": ",".join(self.data)}


def resolve_controller(ref: str) -> ControllerSpec:
    """A spec for a name or source file, or (through MLflow) for a logged/registered model."""
    if ref.startswith(MODEL_URI_PREFIXES):
        from mlflow_autotts.tracking.resolve import spec_from_model_uri

        return spec_from_model_uri(ref)
    spec = ControllerSpec(ref)
    spec.controller_class()  # fail now, with a clear message, on an unknown name or bad file
    return spec


def controller_specs(base: ControllerSpec, betas: list[float] | None, params: dict[str, Any]) -> list[ControllerSpec]:
    """One spec per β (just one when the controller ignores β)."""
    merged = {**base.params, **params}
    if not betas:
        return [replace(base, params=merged)]
    if not getattr(base.controller_class(), "uses_beta", True):
        betas = betas[:1]
    return [replace(base, beta=b, params=merged) for b in dict.fromkeys(betas)]


def run_evaluation(request: EvaluateRequest) -> EvaluationReport:
    from mlflow_autotts.data.uris import load_datasets

    base = resolve_controller(request.controller)
    specs = controller_specs(base, request.betas, request.params)
    for s in specs:
        s.build()  # bad parameters fail here, before any data is loaded
    datasets = load_datasets(request.data)
    with_refs = request.references if request.references is not None else len(specs) > 1
    extra = [SC64] + (list(REFERENCE_POINTS) if with_refs else [])
    config = EvalConfig(shuffles=request.shuffles, workers=request.workers, progress=request.progress)
    results = evaluate_many(specs + extra, datasets, config)
    n_main = len(specs) * len(datasets)
    main, base_results = results[:n_main], results[n_main:]
    sc64 = {r.data: r for r in base_results[: len(datasets)]}
    refs = base_results[len(datasets):]
    for r in refs + list(sc64.values()):
        r.episodes = None  # only the evaluated controller's episodes are kept
    return EvaluationReport(results=main, sc64=sc64, references=refs)
