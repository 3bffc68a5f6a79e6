"""The MLflow side of a search: MLflow is the archive.

The parent run holds the settings, progress metrics by step and, at the end, the Pareto
and progress plots, the selection table and the challenger. Each candidate is a child
run, created with its source and lineage *before* it is scored; when it finishes, its
metrics per dataset and β (or its failure), its feedback and its pyfunc model are logged
and the tag ``autotts.state`` is set last, so a search killed at any moment resumes from
what the runs say: finished candidates are taken as they are, unfinished ones are scored
again, nothing is scored twice.
"""

from __future__ import annotations

import json
import math
import tempfile
from dataclasses import asdict
from pathlib import Path
from typing import Any

from mlflow_autotts.replay.results import EvalResult
from mlflow_autotts.sandbox.limits import Isolation
from mlflow_autotts.sandbox.outcome import CandidateOutcome
from mlflow_autotts.search.loop import Progress
from mlflow_autotts.search.types import Candidate, Proposal, Usage
from mlflow_autotts.tracking.mlflow_utils import param_value
from mlflow_autotts.tracking.naming import beta_label, dataset_keys

STATE = "autotts.state"
CANDIDATE = "autotts.candidate_id"
PROPOSAL_FILE = "candidate/proposal.json"
SOURCE_FILE = "candidate/controller.py"
SCORES_FILE = "candidate/scores.json"
CONFIG_FILE = "search_config.json"


class MlflowRecorder:
    """Records a search in MLflow (implements ``search.loop.Recorder``)."""

    def __init__(self, parent_run_id: str, log_models: bool = True):
        from mlflow.tracking import MlflowClient

        self.client = MlflowClient()
        self.parent_id = parent_run_id
        self.experiment_id = self.client.get_run(parent_run_id).info.experiment_id
        self.log_models = log_models
        self.child_ids: dict[str, str] = {}

    # ------------------------------------------------------------------ resume
    def recorded(self) -> list[Candidate]:
        runs = self.client.search_runs(
            [self.experiment_id], filter_string=f"tags.mlflow.parentRunId = '{self.parent_id}'",
            max_results=50000)
        out: list[tuple[str, Candidate]] = []
        for run in runs:
            cid = run.data.tags.get(CANDIDATE)
            if not cid:
                continue
            proposal_json = self._read_text(run.info.run_id, PROPOSAL_FILE)
            if proposal_json is None:
                # killed before the candidate was written: it never existed, but its run does;
                # the resumed search proposes this id again and ``created`` reuses the run
                # (a second run for one id would leave this one orphaned in state "created")
                self.child_ids[cid] = run.info.run_id
                continue
            p = json.loads(proposal_json)
            proposal = Proposal(source=p["source"], class_name=p.get("class_name"), parents=tuple(p.get("parents", ())),
                                explorer=p.get("explorer", ""), generation=int(p.get("generation", 0)),
                                meta=p.get("meta") or {}, usage=Usage(**(p.get("usage") or {})))
            c = Candidate(cid, proposal)
            state = run.data.tags.get(STATE)
            if state == "scored":
                s = json.loads(self._read_text(run.info.run_id, SCORES_FILE) or "{}")
                c.scores = [EvalResult(**x) for x in s.get("scores", [])]
                c.feedback = s.get("feedback", "")
            elif state == "failed":
                c.failure = run.data.tags.get("autotts.failure", "failed")
            self.child_ids[cid] = run.info.run_id
            out.append((cid, c))
        return [c for _, c in sorted(out)]

    def _read_text(self, run_id: str, path: str) -> str | None:
        import mlflow

        try:
            with tempfile.TemporaryDirectory() as tmp:
                local = mlflow.artifacts.download_artifacts(run_id=run_id, artifact_path=path, dst_path=tmp)
                return Path(local).read_text(encoding="utf-8")
        except Exception:  # missing artifact: the candidate was never fully written
            return None

    # ------------------------------------------------------------------ recording
    def created(self, c: Candidate) -> None:
        p = c.proposal
        run_id = self.child_ids.get(c.id)
        if run_id is None:
            run = self.client.create_run(self.experiment_id, run_name=c.id, tags={
                "mlflow.parentRunId": self.parent_id, CANDIDATE: c.id, STATE: "created",
                "autotts.explorer": p.explorer, "autotts.generation": str(p.generation),
                "autotts.parents": ",".join(p.parents)})
            run_id = self.child_ids[c.id] = run.info.run_id
        self.client.log_text(run_id, p.source, SOURCE_FILE)
        self.client.log_batch(run_id, params=_params({"explorer": p.explorer, "generation": p.generation,
                                                      "parents": ",".join(p.parents) or "-"}))
        # written last: a candidate without this file did not exist when the search died
        self.client.log_text(run_id, json.dumps({
            "source": p.source, "class_name": p.class_name, "parents": list(p.parents), "explorer": p.explorer,
            "generation": p.generation, "meta": p.meta, "usage": asdict(p.usage)}, default=str), PROPOSAL_FILE)

    def scored(self, c: Candidate, outcome: CandidateOutcome | None) -> None:
        from mlflow.entities import Metric

        run_id = self.child_ids[c.id]
        if outcome is not None and outcome.isolation is not None:
            self.client.log_batch(run_id, tags=isolation_tags(outcome.isolation))
        if not c.ok:
            msg = (c.failure or "failed")[:4900]
            self.client.set_tag(run_id, "autotts.failure", msg)
            self.client.log_text(run_id, msg + ("\n\n" + outcome.failure.traceback if outcome and outcome.failure
                                                and outcome.failure.traceback else ""), "candidate/failure.txt")
            self.client.set_terminated(run_id, "FAILED")
            self.client.set_tag(run_id, STATE, "failed")  # last: the state tag commits the outcome
            return
        keys = dataset_keys(sorted({s.data for s in c.scores}))
        metrics = []
        for s in c.scores:
            for name, value in (("accuracy", s.accuracy), ("mean_tokens", s.mean_tokens)):
                metrics.append(Metric(f"{name}.{keys[s.data]}.{beta_label(s.beta)}", value, 0, 0))
        for k, (beta, acc, tok) in enumerate(c.curve()):
            metrics.append(Metric("accuracy.mean", acc, 0, k))
            metrics.append(Metric("mean_tokens.mean", tok, 0, k))
            metrics.append(Metric("beta", beta, 0, k))
        self.client.log_batch(run_id, metrics=metrics)  # MLflow splits it into its batch limits
        if c.feedback:
            self.client.log_text(run_id, c.feedback, "candidate/feedback.txt")
        if self.log_models and outcome is not None:
            self._log_model(run_id, c, outcome)
        self.client.log_text(run_id, json.dumps({"scores": [s.to_dict() for s in c.scores], "feedback": c.feedback}),
                             SCORES_FILE)
        self.client.set_terminated(run_id, "FINISHED")
        # last: a run tagged scored is ended, so a search killed in between rescores it on
        # resume rather than finding a scored candidate whose run never ended
        self.client.set_tag(run_id, STATE, "scored")

    def _log_model(self, run_id: str, c: Candidate, outcome: CandidateOutcome) -> None:
        from mlflow_autotts.search.extract import check_source
        from mlflow_autotts.tracking.model import log_candidate_model

        class_name = c.proposal.class_name or check_source(c.proposal.source).class_name
        best_beta = _most_accurate_beta(c)
        info = log_candidate_model(c.proposal.source, class_name, outcome.controller_name or class_name, best_beta,
                                   uses_beta=outcome.uses_beta, metrics=_curve_metrics(c), run_id=run_id)
        self.client.set_tag(run_id, "autotts.model_uri", info.model_uri)
        self.client.set_tag(run_id, "autotts.model_class", class_name)

    def progress(self, p: Progress) -> None:
        from mlflow.entities import Metric

        values = {"candidates_done": p.done, "candidates_failed": p.failed, "best_accuracy": p.best_accuracy,
                  "explorer_usd": p.usage.usd, "explorer_tokens": p.usage.input_tokens + p.usage.output_tokens,
                  "elapsed_s": p.elapsed_s}
        if math.isfinite(p.best_tokens_at_target):
            values["best_tokens_at_target"] = p.best_tokens_at_target
        if math.isfinite(p.best_objective):
            values["best_objective"] = p.best_objective
        self.client.log_batch(self.parent_id, metrics=[Metric(k, float(v), 0, p.done) for k, v in values.items()])


def _params(d: dict[str, Any]):
    from mlflow.entities import Param

    return [Param(k, param_value(v)) for k, v in d.items()]


def _most_accurate_beta(c: Candidate) -> float:
    """The β a candidate's model is logged with (its served default): the most accurate on
    the search split; the challenger is logged again at its validated β."""
    curve = c.curve()
    best = max(curve, key=lambda x: (x[1], -x[2]))
    return best[0]


def _curve_metrics(c: Candidate) -> dict[str, float]:
    out = {}
    for beta, acc, tok in c.curve():
        out[f"search.accuracy.{beta_label(beta)}"] = acc
        out[f"search.mean_tokens.{beta_label(beta)}"] = tok
    return out


__all__ = ["MlflowRecorder", "CONFIG_FILE"]


def isolation_tags(isolation: Isolation) -> list:
    """``autotts.isolation.*`` tags: the sandbox measures observed in force (network
    namespace, chroot, uid, each rlimit, audit hook; ``missing``: what the limits asked for
    and did not get)."""
    from mlflow.entities import RunTag

    return [RunTag(f"autotts.isolation.{k}", str(v)) for k, v in isolation.as_dict().items()]
