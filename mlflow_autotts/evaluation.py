"""``autotts evaluate`` without the CLI: load data, replay, compare with SC@64.

Built-in controllers (the evaluated one, SC@64 and, when several β are compared, the other
reference controllers) run in one ``evaluate_many`` call so they share a single process
pool. Any other code (a source file, a registered model's source) is never imported here:
``score_specs`` replays it in the sandbox, which recomputes its costs and checks its
answers on this side (``docs/architecture.md``, "The trust boundary"). The caller hands
over the controller as a ``ControllerSpec``: the command layer resolves model URIs
(through MLflow) before calling here, so this module needs nothing above it.

``run_evaluation`` is ``plan_evaluation`` (checks and data loading: milliseconds, and every
input error) followed by ``EvaluationPlan.replay`` (the expensive part), so that the command
line can replay in a child process while MLflow starts in its own.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any, Sequence

from mlflow_autotts.cluster.choice import chunk_executor, check_executor, sandbox
from mlflow_autotts.controllers.base import check_beta
from mlflow_autotts.controllers.loading import ControllerSpec
from mlflow_autotts.controllers.reference import REFERENCE_POINTS, SC64
from mlflow_autotts.data.uris import load_datasets
from mlflow_autotts.errors import AutoTTSError
from mlflow_autotts.replay.report import EvaluationReport
from mlflow_autotts.replay.results import EvalResult
from mlflow_autotts.replay.runner import ReplayConfig, episode_flags, evaluate_many
from mlflow_autotts.sandbox.limits import SandboxLimits
from mlflow_autotts.sandbox.scoring import score_source
from mlflow_autotts.settings import bounded, check_bounds

EVALUATE_EXPERIMENT = "autotts-evaluate"
"""The MLflow experiment of evaluations unless ``--experiment`` names another."""


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
    shuffles: int = bounded(100, ge=1)
    """Runs per dataset; run s visits branches in random.Random(s).shuffle order."""
    workers: int = bounded(0, ge=0)
    """Worker processes; 0 means all cores (on Ray: all the cluster's CPUs)."""
    executor: str = "local"
    """Where the replay runs: ``local`` (this machine's processes) or ``ray`` (the cluster at
    RAY_ADDRESS, else a local Ray instance); the numbers are the same."""
    references: bool | None = None
    """Also replay asc, esc and parallel_probe as plot points; unset means when several β are given."""
    output_json: str | None = None
    """Write the results here as JSON."""
    experiment: str = EVALUATE_EXPERIMENT
    """MLflow experiment of the run (each kind of work has its own)."""
    run_name: str | None = None
    """MLflow run name; unset means one that says what was evaluated, e.g. evaluate-cmc-aime24."""
    mlflow: bool = True
    """Log the evaluation to MLflow (MLFLOW_TRACKING_URI)."""
    progress: bool = True
    """Show a progress bar."""
    allow_weaker_isolation: bool = False
    """Replay a controller that is not built in even where the sandbox cannot give its full
    isolation here (e.g. not root, no network namespace); the weaker isolation is reported."""

    def __post_init__(self) -> None:
        if not self.data:
            raise AutoTTSError("evaluate config: data needs at least one dataset URI")
        if not self.controller.strip():
            raise AutoTTSError("evaluate config: controller must not be empty")
        for b in self.beta:
            check_beta(b)
        check_bounds(self)  # "evaluate config: shuffles must be >= 1, got 0"
        check_executor(self.executor, "evaluate config")

    def mlflow_params(self) -> dict[str, Any]:
        """What the run's own params (controller, β, shuffles, dataset names) do not say."""
        return {"controller_ref": self.controller, "data_uris": ",".join(self.data), "executor": self.executor}


def local_controller(ref: str) -> ControllerSpec:
    """The spec of a registered name or source file, checked now without running anything:
    an unknown name or an unreadable file fails with a clear message before any data is
    loaded (a source file's own errors come back from the sandbox)."""
    spec = ControllerSpec(ref)
    if spec.is_builtin:
        spec.controller_class()
    else:
        spec.source()
    return spec


def controller_specs(base: ControllerSpec, betas: list[float] | None, params: dict[str, Any]) -> list[ControllerSpec]:
    """One spec per β (just one when a built-in controller ignores β; the sandbox reports
    that for other code and ``score_specs`` keeps the first β then)."""
    merged = {**base.params, **params}
    if not betas:
        return [replace(base, params=merged)]
    if base.is_builtin and not getattr(base.controller_class(), "uses_beta", True):
        betas = betas[:1]
    return [replace(base, beta=b, params=merged) for b in dict.fromkeys(betas)]


def score_specs(specs: list[ControllerSpec], datasets: list, config: ReplayConfig,
                keep_episodes: bool | Sequence[bool] = True, limits: SandboxLimits | None = None,
                executor: str = "local") -> list[EvalResult]:
    """Every spec on every dataset, in (spec, dataset) order, on the trusted side: built-ins
    in one shared replay run, other code in the sandbox (consecutive specs of one source
    in one sandbox run over their β values), both on ``executor`` (``cluster.choice``).
    Specs of a source that ignores β collapse to one result per dataset. ``keep_episodes``
    is one flag or one per spec."""
    keep = episode_flags(keep_episodes, len(specs))
    builtin = [k for k, s in enumerate(specs) if s.is_builtin]
    pooled = iter(evaluate_many([specs[k] for k in builtin], datasets, config, [keep[k] for k in builtin],
                                chunk_executor(executor, config.workers)) if builtin else [])
    box = None
    seeds = list(range(config.first_seed, config.first_seed + config.shuffles))
    out: list[EvalResult] = []
    k = 0
    while k < len(specs):
        spec = specs[k]
        if spec.is_builtin:
            out.extend(next(pooled) for _ in datasets)
            k += 1
            continue
        group = [spec]
        while k + len(group) < len(specs) and _same_code(specs[k + len(group)], spec):
            group.append(specs[k + len(group)])
        source, class_name = spec.source()
        box = box or sandbox(executor, limits or SandboxLimits(), config.workers)
        results = score_source(source, datasets, [s.beta for s in group], seeds, class_name=class_name,
                               params=spec.params, sandbox=box)
        for r in results:
            r.shuffles = config.shuffles
            if not keep[k]:
                r.episodes = None
        out.extend(results)
        k += len(group)
    return out


def _same_code(a: ControllerSpec, b: ControllerSpec) -> bool:
    return a.ref == b.ref and a.params == b.params


@dataclass
class EvaluationPlan:
    """An evaluation checked and ready to replay: specs built, data loaded. Making it takes
    milliseconds and raises every input error; :meth:`replay` is the expensive part (the
    command line runs it in a child process while MLflow starts, ``cli/evaluate.py``)."""

    specs: list[ControllerSpec]
    """The evaluated controller, one spec per β."""
    extra: list[ControllerSpec]
    """SC@64, then the reference controllers when they are plotted."""
    datasets: list
    """The loaded trajectory sets."""
    eval_config: ReplayConfig
    """Shuffles, workers and progress of the replay."""
    limits: SandboxLimits
    """The sandbox's limits, for controller code that is not built in."""
    executor: str = "local"
    """Where the replay runs (``cluster.choice.EXECUTORS``)."""

    @property
    def trusted(self) -> bool:
        """True when every spec is built-in code (nothing goes through the sandbox)."""
        return all(s.is_builtin for s in self.specs + self.extra)

    def replay(self) -> list[EvalResult]:
        """Every spec on every dataset (``score_specs`` order); only the evaluated
        controller's episode tables are built."""
        return score_specs(self.specs + self.extra, self.datasets, self.eval_config,
                           keep_episodes=[True] * len(self.specs) + [False] * len(self.extra), limits=self.limits,
                           executor=self.executor)

    def report(self, results: list[EvalResult]) -> EvaluationReport:
        """The report of ``results`` (from :meth:`replay`)."""
        n_extra = len(self.extra) * len(self.datasets)
        main, base_results = results[:-n_extra], results[-n_extra:]
        sc64 = {r.data: r for r in base_results[: len(self.datasets)]}
        return EvaluationReport(results=main, sc64=sc64, references=base_results[len(self.datasets):],
                                trajectories=self.datasets)


def plan_evaluation(config: EvaluateConfig, controller: ControllerSpec) -> EvaluationPlan:
    """Check ``controller`` (the resolved ``config.controller``) and load the data."""
    specs = controller_specs(controller, list(config.beta), config.params)
    for s in specs:
        if s.is_builtin:
            s.build()  # bad parameters fail here, before any data is loaded
    datasets = load_datasets(list(config.data))
    with_refs = config.references if config.references is not None else len(specs) > 1
    extra = [SC64] + (list(REFERENCE_POINTS) if with_refs else [])
    eval_config = ReplayConfig(shuffles=config.shuffles, workers=config.workers or None, progress=config.progress)
    limits = SandboxLimits(allow_weaker_isolation=config.allow_weaker_isolation)
    return EvaluationPlan(specs, extra, datasets, eval_config, limits, config.executor)


def run_evaluation(config: EvaluateConfig, controller: ControllerSpec) -> EvaluationReport:
    """Replay ``controller`` (the resolved ``config.controller``) as ``config`` says."""
    plan = plan_evaluation(config, controller)
    return plan.report(plan.replay())
