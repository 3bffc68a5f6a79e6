"""Collection as a live episode: SC@N reads every branch whole, every interval probed.

Collection writes no engine loop of its own: it is the live episode run with the
controller that opens every branch and reads it whole (``sc`` with ``n`` = the branches per
question), with ``probe_reads`` on so every interval boundary is probed by the same
protocol, extractor and normaliser as a live controller's probes, and ``lookahead`` = the
branches, so one engine call advances every unfinished branch of the question. The
recording (``live/recording.py``) turns the episode into the replay form.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace

from mlflow_autotts.controllers.baselines import SelfConsistency
from mlflow_autotts.data.trajectory import Problem
from mlflow_autotts.live.answers import normalize_answer
from mlflow_autotts.live.config import LiveConfig
from mlflow_autotts.live.episode import LiveEpisode, LiveRunner, LiveStats, QuestionTooLong
from mlflow_autotts.live.recording import record_branches


def collection_config(config: LiveConfig, branches: int) -> LiveConfig:
    """``config`` set up to collect ``branches`` whole, probed branches per question."""
    return replace(config, max_branches=branches, lookahead=branches, probe_reads=True)


@dataclass(frozen=True)
class Collected:
    """One question's branches in replay form, with what collecting them cost."""

    problem: Problem
    stats: LiveStats
    majority: str | None
    """SC@N's answer over the collected branches (the collection controller's own)."""
    episode: LiveEpisode
    """The live episode the problem was recorded from."""


def check_questions(runners: Iterable[LiveRunner], questions: Sequence[str], source: str) -> None:
    """Refuse a question too long for any runner's model context before anything is
    generated: ``QuestionTooLong`` naming ``source`` and the question's row (1-based, as
    question files count them) and the limit."""
    for runner in runners:
        for n, question in enumerate(questions):
            try:
                runner.check_question(question)
            except QuestionTooLong as exc:
                raise QuestionTooLong(f"{source}: row {n + 1}: {exc}", exc.prompt_tokens, exc.room, exc.limit) from None


def collect_question(runner: LiveRunner, question: str, gold: str) -> Collected:
    """Generate and probe every branch of ``question`` (``runner`` from ``collection_config``)."""
    cfg = runner.config
    if not (cfg.probe_reads and cfg.lookahead == cfg.max_branches):
        raise ValueError("collect_question needs a runner built from collection_config(...)")
    result = runner.solve(SelfConsistency(n=cfg.max_branches), question)
    branches, unfinished, missing = record_branches(result.episode)
    if unfinished or missing:  # reading whole with probe_reads leaves neither
        raise RuntimeError(f"collection left branches unfinished {unfinished} or unprobed {missing}")
    return Collected(Problem(branches, normalize_answer(gold) if gold else ""), result.stats, result.answer,
                     result.episode)


__all__ = ["Collected", "check_questions", "collect_question", "collection_config"]
