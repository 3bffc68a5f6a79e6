"""A live episode's per-request limits (a cap on billed tokens, a deadline, a cancel event) and
its observer: the episode refuses steps by raising ``EpisodeStopped``, the runner answers by
the vote so far, the bill stays the replay's rule, and without limits nothing changes."""

from __future__ import annotations

import inspect
import threading
import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mlflow_autotts.controllers import cmc
from mlflow_autotts.controllers.base import Controller
from mlflow_autotts.controllers.baselines import SelfConsistency
from mlflow_autotts.controllers.loading import ControllerSpec
from mlflow_autotts.live.backends.base import BackendUnavailable, GenerationCancelled
from mlflow_autotts.live.episode import (
    CANCELLED,
    DEADLINE,
    MAX_TOKENS,
    EpisodeLimits,
    EpisodeStopped,
    LiveRunner,
)
from tests.helpers import live_config
from tests.live_fixtures import ScriptedBackend, char_prompts

LENGTHS = [9, 13, 4, 21, 6, 17, 30, 11]


class Slow(ScriptedBackend):
    """Each engine call takes ``delay`` seconds."""

    delay: float = 0.05

    def generate(self, requests, timeout=None, cancel=None):
        time.sleep(self.delay)
        return super().generate(requests, timeout)


def runner(backend_cls=ScriptedBackend, **kw) -> LiveRunner:
    cfg = live_config(max_branches=8, **kw)
    return LiveRunner(cfg, backend=backend_cls(LENGTHS, base_seed=cfg.seed, interval=cfg.interval_tokens),
                      prompts=char_prompts(cfg.probe_suffix))


def cmc_at(beta: float = 0.8):
    return ControllerSpec("cmc", beta).build()


def test_without_limits_or_with_limits_never_reached_nothing_changes():
    plain = runner().solve(cmc_at(), "q")
    for limits in (EpisodeLimits(), EpisodeLimits(plain.stats.billed_tokens, time.monotonic() + 60,
                                                  threading.Event())):
        got = runner().solve(cmc_at(), "q", limits)
        assert got.stopped is None and got.vote is None
        assert (got.answer, got.episode.actions, got.stats.billed_tokens, got.stats.generated_tokens) == \
            (plain.answer, plain.episode.actions, plain.stats.billed_tokens, plain.stats.generated_tokens)


def test_a_cap_on_reads_stops_before_the_read_that_would_pass_it_and_answers_by_the_vote():
    # SC reads 9, 13, 4 (26 tokens); the 4th branch (21) would take the bill to 47 > 30
    result = runner().solve(SelfConsistency(n=8), "q", EpisodeLimits(max_billed_tokens=30))
    ep = result.episode
    assert result.stopped == MAX_TOKENS and ep.stopped == MAX_TOKENS
    assert result.stats.billed_tokens == ep.tokens_used == 26 and ep.branches_opened == 3
    finals = [b.final for b in ep.branches[:3]]
    assert result.vote.source == "final" and result.vote.votes == {a: finals.count(a) for a in finals}
    assert result.answer == max(finals, key=finals.count)
    assert [a for a, _ in ep.actions] == ["read"] * 3  # the refused read left no trace
    assert ep.branches[3].mode is None and ep.intervals == 3


@pytest.mark.parametrize("cap", [1, 3, 4, 5, 8, 12, 17, 25, 40, 64, 100])
def test_a_cap_is_never_exceeded_by_a_probing_controller(cap):
    plain = runner().solve(cmc_at(), "q")
    result = runner().solve(cmc_at(), "q", EpisodeLimits(max_billed_tokens=cap))
    assert result.stats.billed_tokens <= cap
    if cap >= plain.stats.billed_tokens:
        assert result.stopped is None and result.answer == plain.answer
    else:
        assert result.stopped == MAX_TOKENS and result.answer == result.vote.answer
        # one more interval would have passed the cap (the cost of a step not generated yet)
        assert result.stats.billed_tokens + 4 > cap or result.episode.branches_opened == 8
    if cap < 4:  # not even one step: no answer, nothing billed
        assert result.answer is None and result.vote.source == "none" and result.stats.billed_tokens == 0


def test_the_vote_falls_back_on_the_latest_probes_when_no_branch_finished():
    result = runner().solve(cmc_at(1.0), "q", EpisodeLimits(max_billed_tokens=8))
    ep = result.episode
    assert result.stopped == MAX_TOKENS and not any(b.done for b in ep.branches[: ep.branches_opened])
    latest = [b.probes[b.consumed] for b in ep.branches[: ep.branches_opened] if b.consumed]
    assert result.vote.source == "probes" and result.answer == max(latest, key=latest.count)


def test_a_deadline_stops_between_engine_calls():
    r = runner(Slow)
    t0 = time.monotonic()
    result = r.solve(SelfConsistency(n=8), "q", EpisodeLimits(deadline=time.monotonic() + 0.3))
    took = time.monotonic() - t0
    assert result.stopped == DEADLINE and 0.3 <= took < 0.3 + 0.2
    assert result.stats.billed_tokens == result.episode.tokens_used
    assert result.answer == result.vote.answer


def test_a_cancel_event_stops_the_episode_at_its_next_action_and_every_action_after():
    cancel = threading.Event()
    seen = []

    def observer(ep, progress):
        seen.append(progress)
        if len(seen) == 2:
            cancel.set()

    r = runner()
    result = r.solve(SelfConsistency(n=8), "q", EpisodeLimits(cancelled=cancel), observer)
    assert result.stopped == CANCELLED and result.episode.branches_opened == 2
    assert [(p.action, p.branch, p.finished) for p in seen] == [("read", 0, True), ("read", 1, True)]
    assert seen[-1].billed == LENGTHS[0] + LENGTHS[1]
    calls = len(r.backend.calls)
    with pytest.raises(EpisodeStopped):
        result.episode.get_new_branch_final_answer()
    with pytest.raises(EpisodeStopped):
        result.episode.probe_more(0)
    assert len(r.backend.calls) == calls


class Swallower(Controller):
    """Catches everything, even the stop, and answers on its own."""

    name = "swallower"

    def solve(self, episode):
        for _ in range(20):
            try:
                episode.probe_new()
            except BaseException:  # noqa: BLE001  (what a careless controller might write)
                pass
        return "mine"


class Careful(Controller):
    """Guards its own code with ``except Exception``, as controllers do."""

    name = "careful"

    def solve(self, episode):
        answers = []
        while True:
            try:
                answers.append(episode.probe_new()[0])
            except Exception:  # noqa: BLE001
                break
        return answers[-1] if answers else None


def test_a_controller_cannot_swallow_the_stop():
    result = runner().solve(Careful(), "q", EpisodeLimits(max_billed_tokens=10))
    assert result.stopped == MAX_TOKENS and result.stats.billed_tokens <= 10
    result = runner().solve(Swallower(), "q", EpisodeLimits(max_billed_tokens=10))
    assert result.stopped == MAX_TOKENS and result.answer == result.vote.answer != "mine"
    assert result.stats.billed_tokens <= 10


def test_a_sandboxed_controller_is_stopped_on_the_trusted_side_and_its_child_is_freed():
    from mlflow_autotts.sandbox.session import SandboxedController

    source = inspect.getsource(cmc).replace("@register_controller\n", "")
    with SandboxedController(source, "ConfidenceMomentum", 0.8, max_children=1) as ctrl:
        free = runner().solve(ctrl, "q")
        capped = runner().solve(ctrl, "q", EpisodeLimits(max_billed_tokens=12))
        assert capped.stopped == MAX_TOKENS and capped.stats.billed_tokens <= 12
        assert capped.answer == capped.vote.answer
        # the child waiting for its reply was killed; the next solve gets a fresh one
        assert ctrl.live_children == 0
        again = runner().solve(ctrl, "q")
        assert (again.answer, again.stats.billed_tokens) == (free.answer, free.stats.billed_tokens)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.integers(1, 40), min_size=8, max_size=8), st.integers(1, 200),
       st.sampled_from([("sc", {"n": 8}), ("cmc", {}), ("asc", {}), ("parallel_probe", {"chains": 6})]),
       st.floats(0.0, 1.0), st.sampled_from([1, 2, 4]))
def test_no_controller_bills_past_the_cap_and_an_unreached_cap_changes_nothing(lengths, cap, spec, beta, lookahead):
    def run(limits=None):
        cfg = live_config(max_branches=8, lookahead=lookahead)
        backend = ScriptedBackend(lengths, base_seed=cfg.seed, interval=cfg.interval_tokens)
        r = LiveRunner(cfg, backend=backend, prompts=char_prompts(cfg.probe_suffix))
        return r.solve(ControllerSpec(spec[0], beta, spec[1]).build(), "q", limits)

    plain, capped = run(), run(EpisodeLimits(max_billed_tokens=cap))
    assert capped.stats.billed_tokens <= cap
    ep = capped.episode
    assert sum(len(b.ids) for b in ep.branches[: ep.branches_opened] if b.mode == "read") <= capped.stats.billed_tokens
    if capped.stopped is None:
        assert (capped.answer, capped.episode.actions, capped.stats.billed_tokens) == \
            (plain.answer, plain.episode.actions, plain.stats.billed_tokens)
    else:
        assert cap < plain.stats.billed_tokens and capped.answer == capped.vote.answer


class TimesOut(ScriptedBackend):
    """A call takes 1 s; given less time, it gives up at its timeout (as the HTTP backend does)."""

    def generate(self, requests, timeout=None, cancel=None):
        if timeout is not None and timeout < 1.0:
            time.sleep(timeout)
            raise BackendUnavailable(f"no answer within {timeout:.2f} s")
        return super().generate(requests, timeout)


def test_an_engine_call_cut_by_the_deadline_is_a_stop_not_a_backend_failure():
    t0 = time.monotonic()
    result = runner(TimesOut).solve(cmc_at(), "q", EpisodeLimits(deadline=time.monotonic() + 0.2))
    assert result.stopped == DEADLINE and time.monotonic() - t0 < 0.5
    assert result.answer is None and result.stats.billed_tokens == 0 and result.episode.branches_opened == 0
    # a backend that fails before the deadline is still the backend's failure
    with pytest.raises(BackendUnavailable):
        runner(TimesOut, request_timeout=0.1).solve(cmc_at(), "q", EpisodeLimits(deadline=time.monotonic() + 5))


class HangsUntilCancelled(ScriptedBackend):
    """The third engine call hangs until the caller cancels, then is aborted (as the HTTP and
    in-process backends do: ``GenerationCancelled``)."""

    calls = 0

    def generate(self, requests, timeout=None, cancel=None):
        type(self).calls += 1
        if type(self).calls == 3:
            assert cancel is not None, "the episode must hand its cancel event to the backend"
            if not cancel.wait(10):
                raise AssertionError("never cancelled")
            raise GenerationCancelled("aborted: the caller cancelled")
        return super().generate(requests, timeout)


def test_a_cancel_during_an_engine_call_aborts_it_and_stops_the_episode():
    HangsUntilCancelled.calls = 0
    cancel = threading.Event()
    threading.Timer(0.3, cancel.set).start()
    t0 = time.monotonic()
    result = runner(HangsUntilCancelled).solve(cmc_at(), "q", EpisodeLimits(cancelled=cancel))
    assert result.stopped == CANCELLED and time.monotonic() - t0 < 2
    calls = result.episode.calls
    assert len(calls) == 3 and calls[-1].error == "cancelled" and calls[-1].generated_tokens == 0
    assert [c.error for c in calls[:2]] == [None, None] and all(c.seconds >= 0 for c in calls)
    # what each recorded call generated adds up to the episode's own counts
    stats = result.stats
    assert sum(c.generated_tokens for c in calls if c.kind == "generate") == stats.generated_tokens
    assert sum(c.generated_tokens for c in calls if c.kind == "probe") == stats.probe_tokens
    assert [c.kind for c in calls[:2]] == ["generate", "probe"] and calls[0].branches
