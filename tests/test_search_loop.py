"""The search loop without MLflow: budgets, reproducibility, failures, LLM explorer end to end."""

from __future__ import annotations

import contextlib
import subprocess
import sys

import pytest

from mlflow_autotts.search.archive import Archive
from mlflow_autotts.search.config import build_config
from mlflow_autotts.search.evolve import EvolveExplorer
from mlflow_autotts.search.llm_explorer import LLMExplorer
from mlflow_autotts.search.loop import Scorer, run_search
from mlflow_autotts.search.types import Usage
from tests.helpers import MemoryRecorder, ScriptedExplorer, random_set
from tests.openai_stub import (  # noqa: F401  (openai_stub is a fixture)
    BROKEN_CONTROLLER,
    HOSTILE_CONTROLLER,
    LOOPING_CONTROLLER,
    VALID_CONTROLLER,
    StubReply,
    fenced,
    openai_stub,
)

DATA = [random_set(4, 12, seed=1, name="Synth/a"), random_set(4, 12, seed=2, name="Synth/b")]


def config(**kw):
    base = dict(data=("x",), max_candidates=6, population=3, workers=2, search_shuffles=2, betas=(0.0, 1.0),
                candidate_timeout_s=20)
    base.update(kw)
    return build_config(None, base)


def search(cfg, explorer, recorder=None, **kw):
    recorder = recorder or MemoryRecorder()
    out = run_search(cfg.budget, explorer, Scorer(cfg.scoring, cfg.betas, DATA), recorder,
                     lambda cs: Archive.from_candidates(cs), workers=cfg.workers,
                     progress_bar=False, **kw)
    return out, recorder


def test_evolve_search_is_reproducible_whatever_the_workers():
    runs = []
    for workers in (1, 2):
        out, rec = search(config(workers=workers), EvolveExplorer(seed=3))
        assert out.stop_reason.startswith("max_candidates")
        assert len(out.candidates) == 6 and rec.created_ids == [f"c{k:04d}" for k in range(6)]
        assert sorted(rec.scored_ids) == rec.created_ids and rec.progress_steps == list(range(1, 7))
        assert all(c.ok for c in out.candidates), [c.failure for c in out.candidates]
        runs.append([(c.proposal.source, [(s.data, s.beta, s.accuracy, s.mean_tokens) for s in c.scores])
                     for c in out.candidates])
    assert runs[0] == runs[1]
    assert out.candidates[3].proposal.generation == 1  # population 3: second generation


def test_failures_are_recorded_and_the_search_goes_on():
    cfg = config(max_candidates=4, candidate_timeout_s=2)
    explorer = ScriptedExplorer([BROKEN_CONTROLLER, HOSTILE_CONTROLLER, LOOPING_CONTROLLER, VALID_CONTROLLER])
    out, _ = search(cfg, explorer)
    failures = [c.failure for c in out.candidates]
    assert failures[0].startswith("syntax")
    assert failures[1].startswith("check") and "open" in failures[1]
    assert failures[2].startswith("timeout")
    assert failures[3] is None and out.candidates[3].ok
    assert "beta=" in out.candidates[3].feedback


@pytest.mark.parametrize("budget, expected", [
    (dict(budget_usd=0.25), 3),  # 0.1 per proposal: stops once 0.3 >= 0.25
    (dict(budget_tokens=2500), 3),  # 1000 tokens per proposal
])
def test_cost_budgets_stop_at_the_candidate_that_spends_them(budget, expected):
    out, _ = search(config(max_candidates=10, **budget),
                    ScriptedExplorer([VALID_CONTROLLER], Usage(600, 400, 0.1)))
    assert len(out.candidates) == expected
    assert "budget" in out.stop_reason


def test_time_budget_uses_the_clock():
    ticks = iter(range(0, 10_000, 50))  # every clock read advances 50 s
    out, _ = search(config(max_candidates=50, time_budget_minutes=3), ScriptedExplorer([VALID_CONTROLLER]),
                    clock=lambda: float(next(ticks)))
    assert out.stop_reason.startswith("time budget")
    assert 1 <= len(out.candidates) < 50


def test_resume_scores_only_unfinished_candidates():
    first, _ = search(config(max_candidates=3), EvolveExplorer(seed=1))
    finished = first.candidates[:2]
    unfinished = first.candidates[2]
    from mlflow_autotts.search.types import Candidate

    pending = Candidate(unfinished.id, unfinished.proposal)
    rec = MemoryRecorder(finished + [pending])
    out, rec = search(config(max_candidates=5), EvolveExplorer(seed=1), rec)
    assert rec.scored_ids[0] == pending.id and set(rec.scored_ids) == {"c0002", "c0003", "c0004"}
    assert rec.created_ids == ["c0003", "c0004"]
    assert [c.id for c in out.candidates] == [f"c{k:04d}" for k in range(5)]


@pytest.mark.parametrize("killed_after", [1, 2, 3, 4])
def test_a_search_resumed_mid_generation_proposes_what_an_uninterrupted_one_does(killed_after):
    """Killed after ``killed_after`` candidates (population 3: inside or at the end of a
    generation), the resumed search completes the generation and then goes on exactly as
    the uninterrupted search."""
    whole, _ = search(config(max_candidates=7), EvolveExplorer(seed=5))
    rec = MemoryRecorder(whole.candidates[:killed_after])
    resumed, rec = search(config(max_candidates=7), EvolveExplorer(seed=5), rec)
    assert [(c.id, c.proposal.generation, c.proposal.source) for c in resumed.candidates] == \
           [(c.id, c.proposal.generation, c.proposal.source) for c in whole.candidates]
    assert rec.created_ids == [f"c{k:04d}" for k in range(killed_after, 7)]


@pytest.mark.slow
def test_llm_explorer_drives_the_loop_and_its_budget(openai_stub):
    openai_stub.push(StubReply(fenced(BROKEN_CONTROLLER), prompt_tokens=1000, completion_tokens=200))
    openai_stub.push(StubReply(fenced(VALID_CONTROLLER), prompt_tokens=1000, completion_tokens=200))
    openai_stub.push(StubReply(fenced(HOSTILE_CONTROLLER), prompt_tokens=1000, completion_tokens=200))
    openai_stub.push(StubReply(fenced(VALID_CONTROLLER), prompt_tokens=1000, completion_tokens=200))
    # $1/M input, $5/M output: 0.002 per reply; the budget is spent by the third reply
    explorer = LLMExplorer("stub-model", base_url=openai_stub.base_url, api_key="test", max_retries=0,
                           price_input=1.0, price_output=5.0)
    out, _ = search(config(max_candidates=10, population=1, budget_usd=0.005), explorer)
    assert len(out.candidates) == 3 and "USD budget" in out.stop_reason
    assert out.candidates[0].failure.startswith("syntax")
    assert out.candidates[1].ok
    assert out.candidates[2].failure.startswith("check")
    prompts = [r.prompt for r in openai_stub.chat_requests]
    assert "syntax" in prompts[1]  # the broken proposal's error is fed back
    assert explorer.total_usage.usd == pytest.approx(0.006)


# ---------------------------------------------------------------- the whole job, no MLflow
class FakeJobRecorder:
    """A ``search.job.JobRecorder`` that notes what it is told, in order."""

    def __init__(self):
        self.calls, self.loop = [], MemoryRecorder()

    @contextlib.contextmanager
    def open(self, config):
        self.calls.append("open")
        yield "fake-run"
        self.calls.append("closed")

    def data(self, search_sets, validation_sets):
        self.calls.append("data")
        self.split = (search_sets, validation_sets)

    def references(self, references):
        self.calls.append("references")

    def exploring(self, explorer):
        self.calls.append(f"exploring {explorer.name}")

    def candidates(self):
        return self.loop

    def searched(self, outcome):
        self.calls.append(f"searched: {outcome.stop_reason}")

    def selected(self, outcome, selection, references):
        self.calls.append("selected")
        return "7"


def test_the_search_job_composes_with_any_recorder_and_no_mlflow(tmp_path):
    from mlflow_autotts.data.json_io import write_json
    from mlflow_autotts.search import job

    path = tmp_path / "Synth" / "toy.json"
    path.parent.mkdir()
    write_json(random_set(12, 16, seed=4), path)
    cfg = build_config(None, {"data": [str(path)], "max_candidates": 2, "population": 2, "search_shuffles": 1,
                              "final_shuffles": 1, "finalists": 1, "betas": [0.5], "workers": 2,
                              "candidate_timeout_s": 20})
    recorder = FakeJobRecorder()
    result = job.run(cfg, recorder, progress=False)
    assert recorder.calls == ["open", "data", "references", "exploring evolve", "searched: max_candidates (2) reached",
                              "selected", "closed"]
    assert [len(s[0]) for s in recorder.split] == [8, 4]
    assert recorder.loop.created_ids == ["c0000", "c0001"] and recorder.loop.progress_steps == [1, 2]
    assert (result.run_id, result.challenger_version) == ("fake-run", "7")
    assert result.selection.winner is not None and result.selection.winner.id in recorder.loop.scored_ids


def test_the_search_application_does_not_import_mlflow():
    code = ("import sys, mlflow_autotts.search.job, mlflow_autotts.search.explorers\n"
            "assert not [m for m in sys.modules if m.split('.')[0] == 'mlflow'], 'mlflow imported'")
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)
