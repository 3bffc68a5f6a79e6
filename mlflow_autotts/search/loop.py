"""The search loop: propose → check → score in a sandbox → record → select parents → repeat.

This module knows nothing of MLflow: it reports to a ``Recorder`` (``tracking.search_run``
implements one), so the loop can be tested with an in-memory recorder and the MLflow side
with real runs.

Reproducibility: proposals are requested one at a time with every earlier candidate
(scored or still pending) in view, and candidates join the archive in creation order, so a
seeded explorer proposes the same candidates whatever the number of workers.
"""

from __future__ import annotations

import math
import time
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field, replace
from typing import Callable, Protocol, Sequence

from mlflow_autotts.data.trajectory import TrajectorySet
from mlflow_autotts.replay.results import EvalResult
from mlflow_autotts.sandbox.interface import Sandbox
from mlflow_autotts.sandbox.limits import Isolation, SandboxLimits
from mlflow_autotts.sandbox.outcome import CandidateOutcome
from mlflow_autotts.sandbox.process import ProcessSandbox
from mlflow_autotts.search.archive import Archive
from mlflow_autotts.search.config import BudgetConfig, ScoringConfig
from mlflow_autotts.search.extract import ProposalError, check_source
from mlflow_autotts.search.types import Candidate, Explorer, Proposal, Usage


class Recorder(Protocol):
    """Where the loop reports; MLflow in production (``tracking.search_run.MlflowRecorder``)."""

    def recorded(self) -> list[Candidate]:
        """Candidates of an interrupted search, in creation order (empty for a new one);
        those with neither scores nor failure were never finished and are scored again."""
        ...

    def created(self, candidate: Candidate) -> None:
        """A candidate exists (its source is known) and is about to be scored."""
        ...

    def scored(self, candidate: Candidate, outcome: CandidateOutcome | None) -> None:
        """A candidate is finished: scores or failure set (outcome None: the lint rejected
        it). ``outcome.isolation`` is the isolation it ran under, as observed."""
        ...

    def progress(self, progress: "Progress") -> None:
        """Called after every finished candidate."""
        ...


class NullRecorder:
    """A recorder that keeps nothing: a search run without MLflow (benchmarks, experiments)."""

    def recorded(self) -> list[Candidate]:
        return []

    def created(self, candidate: Candidate) -> None:
        pass

    def scored(self, candidate: Candidate, outcome: CandidateOutcome | None) -> None:
        pass

    def progress(self, progress: "Progress") -> None:
        pass


@dataclass
class Progress:
    """Where the search stands; logged as step metrics of the parent run."""

    done: int = 0
    failed: int = 0
    best_tokens_at_target: float = math.inf
    """Fewest search-split tokens at which a candidate reaches the target accuracy."""
    best_accuracy: float = 0.0
    best_objective: float = -math.inf
    """The best candidate's objective (the archive's leading number: with a reference curve,
    its gain over CMC's β-curve in accuracy points)."""
    objective_mode: str = ""
    """What ``best_objective`` measures (``Objective.mode``)."""
    usage: Usage = Usage()
    elapsed_s: float = 0.0


@dataclass
class SearchOutcome:
    candidates: list[Candidate]
    archive: Archive
    stop_reason: str
    progress: Progress = field(default_factory=Progress)
    isolation: Isolation | None = None
    """The sandbox's isolation on this machine, observed before the first candidate (each
    candidate's own is on its ``CandidateOutcome``)."""


class Budget:
    """The stopping rules; whichever is reached first ends the proposing."""

    def __init__(self, config: BudgetConfig, start: float, clock: Callable[[], float]):
        self.config, self.start, self.clock = config, start, clock
        self.usage = Usage()

    def charge(self, usage: Usage) -> None:
        u = self.usage
        self.usage = Usage(u.input_tokens + usage.input_tokens, u.output_tokens + usage.output_tokens,
                           u.usd + usage.usd)

    def exhausted(self, n_candidates: int) -> str | None:
        c = self.config
        if n_candidates >= c.max_candidates:
            return f"max_candidates ({c.max_candidates}) reached"
        if self.clock() - self.start >= 60.0 * c.time_budget_minutes:
            return f"time budget ({c.time_budget_minutes:g} min) spent"
        if c.budget_usd is not None and self.usage.usd >= c.budget_usd:
            return f"USD budget ({c.budget_usd:g}) spent: {self.usage.usd:.4f}"
        tokens = self.usage.input_tokens + self.usage.output_tokens
        if c.budget_tokens is not None and tokens >= c.budget_tokens:
            return f"token budget ({c.budget_tokens}) spent: {tokens}"
        return None


def candidate_id(n: int) -> str:
    return f"c{n:04d}"


def scores_of(outcome: CandidateOutcome) -> list[EvalResult]:
    """The outcome's results without their episode tables (candidates keep only numbers)."""
    return [replace(r, episodes=None) for r in outcome.results]


def feedback_of(outcome: CandidateOutcome, betas: Sequence[float]) -> str:
    """Where a candidate loses, compactly: per dataset at the middle β, its most-missed
    questions and its costliest ones (for LLM explorers; search split only)."""
    if not outcome.episodes:
        return ""
    mid = min(betas, key=lambda b: abs(b - 0.5))
    lines = [f"at beta={mid:g}:"]
    by_data: dict[str, dict[int, list]] = {}
    for e in outcome.episodes:
        if e.beta == mid:
            by_data.setdefault(e.dataset, {}).setdefault(e.problem, []).append(e)
    for data, problems in by_data.items():
        wrong = sorted(((sum(not e.correct for e in eps) / len(eps), p) for p, eps in problems.items()), reverse=True)
        costly = sorted(((sum(e.tokens for e in eps) / len(eps), p) for p, eps in problems.items()), reverse=True)
        missed = ", ".join(f"q{p} wrong {w:.0%}" for w, p in wrong[:3] if w > 0) or "none"
        dear = ", ".join(f"q{p} {t / 1000:.0f}k tokens" for t, p in costly[:3])
        lines.append(f"- {data}: most missed: {missed}; costliest: {dear}")
    return "\n".join(lines)


def search_limits(config: ScoringConfig, scale: float = 1.0) -> SandboxLimits:
    """The sandbox limits of one candidate's scoring (``scale`` times the per-candidate timeout)."""
    return SandboxLimits(wall_seconds=config.candidate_timeout_s * scale, cpu_seconds=config.candidate_timeout_s * scale,
                         memory_mb=config.candidate_memory_mb, allow_weaker_isolation=config.allow_weaker_isolation)


class Scorer:
    """Lints a proposal and scores it in the sandbox on the search split, over ``betas``."""

    def __init__(self, config: ScoringConfig, betas: Sequence[float], datasets: Sequence[TrajectorySet],
                 sandbox: Sandbox | None = None):
        self.betas = tuple(betas)
        self.datasets = list(datasets)
        self.seeds = list(range(config.search_shuffles))
        self.sandbox = sandbox or ProcessSandbox(search_limits(config))

    def check(self, proposal: Proposal) -> str | None:
        """The failure text of a proposal the lint rejects (not worth running), else None."""
        if proposal.meta.get("check_error"):
            return str(proposal.meta["check_error"])
        try:
            check_source(proposal.source, proposal.class_name)
        except ProposalError as exc:
            return f"{exc.kind}: {exc}"
        return None

    def score(self, proposal: Proposal) -> CandidateOutcome:
        return self.sandbox.score(proposal.source, self.datasets, self.betas, self.seeds,
                                  class_name=proposal.class_name)


def _finish(candidate: Candidate, outcome: CandidateOutcome, betas: Sequence[float]) -> None:
    if outcome.ok:
        candidate.scores = scores_of(outcome)
        candidate.feedback = feedback_of(outcome, betas)
    else:
        candidate.failure = str(outcome.failure)


def run_search(config: BudgetConfig, explorer: Explorer, scorer: Scorer, recorder: Recorder,
               archive_factory: Callable[[list[Candidate]], Archive], workers: int = 0,
               clock: Callable[[], float] = time.monotonic, progress_bar: bool = True) -> SearchOutcome:
    """Propose and score candidates until a budget is spent; returns everything scored.
    ``workers`` candidates are scored at once (0: as many as the sandbox runs in parallel).

    Raises ``SandboxIsolationError`` before proposing anything when the sandbox's isolation
    is weaker than its limits ask (and that was not allowed)."""
    from tqdm import tqdm

    isolation = scorer.sandbox.checked_isolation()
    start = clock()
    budget = Budget(config, start, clock)
    candidates = list(recorder.recorded())
    for c in candidates:
        budget.charge(c.proposal.usage)
    stats = Progress()
    workers = workers or scorer.sandbox.parallelism()
    betas = scorer.betas
    bar = tqdm(total=config.max_candidates, initial=sum(1 for c in candidates if c.ok or c.failure),
               unit="cand", desc="search", disable=not progress_bar)
    # a search killed mid-generation resumes by completing that generation, so that it
    # proposes what an uninterrupted search would have (proposals depend on the generation)
    last = max((c.proposal.generation for c in candidates), default=-1)
    made_in_last = sum(1 for c in candidates if c.proposal.generation == last)
    generation, made = (last, made_in_last) if 0 < made_in_last < config.population else (last + 1, 0)

    def finished(c: Candidate, outcome: CandidateOutcome | None) -> None:
        recorder.scored(c, outcome)
        stats.done += 1
        stats.failed += 0 if c.ok else 1
        stats.usage = budget.usage
        stats.elapsed_s = clock() - start
        arch = archive_factory([x for x in candidates if x.ok or x.failure])
        best = arch.best()
        if best is not None:
            obj = arch.objectives[best]
            stats.best_tokens_at_target = obj.tokens_at_target
            stats.best_objective, stats.objective_mode = obj.value, obj.mode
            stats.best_accuracy = max(o.best_accuracy for o in arch.objectives.values())
        recorder.progress(stats)
        bar.update(1)
        bar.set_postfix(failed=stats.failed, usd=f"{budget.usage.usd:.3f}")

    stop_reason = ""
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="sandbox") as pool:
        running: dict[Future, Candidate] = {}
        pending = [c for c in candidates if not c.ok and not c.failure]  # interrupted: score again

        def launch(c: Candidate) -> None:
            failure = scorer.check(c.proposal)
            if failure:
                c.failure = failure
                finished(c, None)
            else:
                running[pool.submit(scorer.score, c.proposal)] = c

        for c in pending:
            launch(c)
        _drain(running, finished, betas, wait_all=True)
        while True:
            # one generation: propose `population` candidates (each seeing all earlier ones)
            while made < config.population:
                stop_reason = budget.exhausted(len(candidates)) or ""
                if stop_reason:
                    break
                # this generation's candidates are shown unscored, whatever has finished
                view = [c if c.proposal.generation < generation else Candidate(c.id, c.proposal) for c in candidates]
                proposals = explorer.propose(view, 1, generation)
                if not proposals:
                    stop_reason = "the explorer has nothing new to propose"
                    break
                p = proposals[0]
                if p.generation != generation:
                    p = replace(p, generation=generation)
                budget.charge(p.usage)
                c = Candidate(candidate_id(len(candidates)), p)
                candidates.append(c)
                recorder.created(c)
                made += 1
                while len(running) >= workers:
                    _drain(running, finished, betas, wait_all=False)
                launch(c)
            _drain(running, finished, betas, wait_all=True)
            if stop_reason:
                break
            generation, made = generation + 1, 0
    bar.close()
    scored = [c for c in candidates if c.ok or c.failure]
    return SearchOutcome(scored, archive_factory(scored), stop_reason, stats, isolation)


def _drain(running: dict[Future, Candidate], finished: Callable, betas: Sequence[float], wait_all: bool) -> None:
    while running:
        done, _ = wait(list(running), return_when=FIRST_COMPLETED)
        for fut in done:
            c = running.pop(fut)
            outcome = fut.result()
            _finish(c, outcome, betas)
            finished(c, outcome)
        if not wait_all:
            return

