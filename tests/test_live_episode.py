"""The live episode's bookkeeping, exactly: cost rules, lookahead, recording, errors.

These tests drive ``LiveEpisode`` with a scripted backend (known branch lengths, batch-
invariant, instant), so every rule can be checked on every interleaving hypothesis finds.
The same properties are checked on a real vLLM engine in ``test_live_vllm.py``.
"""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mlflow_autotts.live.backends.base import BackendUnavailable
from mlflow_autotts.live.config import LiveConfigError
from mlflow_autotts.live.episode import LiveEpisode, LiveTimeout
from mlflow_autotts.live.recording import record_episode, record_set
from mlflow_autotts.replay.episode import RecordingEpisode, replay_cost
from tests.helpers import live_config, live_episode
from tests.live_fixtures import ScriptedBackend, char_prompts


def drive(ep, script: list[int]) -> list:
    """Play a controller's action script; returns what each action gave (or the error)."""
    out = []
    for x in script:
        op = x % 3
        try:
            if op == 0 or (op == 1 and ep.branches_opened == 0):
                out.append(ep.probe_new())
            elif op == 1:
                out.append(ep.probe_more((x // 3) % ep.branches_opened))
            else:
                out.append(ep.get_new_branch_final_answer())
        except ValueError as exc:
            out.append(("ValueError", str(exc)))
    return out


lengths_st = st.lists(st.integers(1, 30), min_size=1, max_size=6)
script_st = st.lists(st.integers(0, 60), min_size=1, max_size=40)


@settings(max_examples=150, deadline=None)
@given(lengths=lengths_st, script=script_st, lookahead=st.integers(1, 6), logprobs=st.sampled_from([0, 2]),
       limit=st.integers(1, 40), interval=st.integers(1, 6), probe_reads=st.booleans())
def test_replaying_the_recording_of_any_live_run_gives_the_same_answers_bill_and_signals(
        lengths, script, lookahead, logprobs, limit, interval, probe_reads):
    ep, _ = live_episode(lengths, lookahead=lookahead, top_logprobs=logprobs, max_tokens_per_branch=limit,
                    interval_tokens=interval, max_branches=len(lengths), probe_reads=probe_reads)
    live = drive(ep, script)
    problem = record_episode(ep, gold_answer="2")
    rep = RecordingEpisode(problem.branches)
    assert drive(rep, script) == live
    assert rep.actions == ep.actions
    assert rep.tokens_used == ep.tokens_used
    assert rep.intervals == ep.intervals
    assert replay_cost(problem.branches, range(problem.branches.n_branches), ep.actions)[0] == ep.tokens_used
    if logprobs:
        for i in range(ep.branches_opened):
            assert rep.signals(i) == ep.signals(i)
    stats = ep.stats()
    assert stats.billed_tokens == ep.tokens_used <= stats.generated_tokens
    if lookahead == 1:
        assert stats.generated_tokens == stats.billed_tokens  # nothing generated ahead


@settings(max_examples=100, deadline=None)
@given(lengths=lengths_st, script=script_st, lookahead=st.integers(2, 6))
def test_lookahead_changes_neither_answers_nor_bill_only_the_number_of_engine_calls(lengths, script, lookahead):
    seq, seq_backend = live_episode(lengths, max_branches=len(lengths))
    ahead, ahead_backend = live_episode(lengths, max_branches=len(lengths), lookahead=lookahead)
    assert drive(ahead, script) == drive(seq, script)
    assert ahead.tokens_used == seq.tokens_used
    assert ahead.stats().generation_calls <= seq.stats().generation_calls
    assert max(ahead_backend.calls, default=0) <= lookahead
    assert max(seq_backend.calls, default=0) == (1 if seq_backend.calls else 0)


def test_a_branch_ending_in_the_middle_of_an_interval_bills_its_length_once_finished():
    ep, _ = live_episode([10], interval_tokens=4)
    assert ep.probe_new()[1:] == (0, False)
    assert ep.tokens_used == 4
    assert ep.probe_more(0)[1] is False
    assert ep.tokens_used == 8
    answer, finished = ep.probe_more(0)  # tokens 9..10, EOS
    assert finished and ep.tokens_used == 10
    assert ep.probe_more(0) == (answer, True) and ep.tokens_used == 10  # free once finished


def test_a_branch_ending_exactly_at_an_interval_boundary_is_finished_at_that_step():
    ep, _ = live_episode([8], interval_tokens=4)
    assert ep.probe_new()[2] is False
    assert ep.probe_more(0)[1] is True
    assert ep.tokens_used == 8 and ep.intervals == 2
    branches = record_episode(ep).branches
    assert branches.n_probes == [1] and branches.branch_tokens == [8]


def test_the_token_limit_finishes_a_branch_and_its_last_step_may_be_short():
    ep, _ = live_episode([100], interval_tokens=4, max_tokens_per_branch=10)
    steps = [ep.probe_new()[2], ep.probe_more(0)[1], ep.probe_more(0)[1]]
    assert steps == [False, False, True]
    assert ep.tokens_used == 10 and len(ep.branches[0].ids) == 10


def test_reading_a_branch_whole_bills_its_length_and_probing_it_afterwards_is_free():
    ep, _ = live_episode([13, 30], interval_tokens=4)
    answer = ep.get_new_branch_final_answer()
    assert ep.tokens_used == 13
    assert ep.probe_more(0) == (answer, True)
    assert ep.tokens_used == 13 and ep.intervals == 1


def test_an_unfinished_branch_replays_as_unfinished_and_the_provenance_says_so():
    ep, _ = live_episode([40, 6], interval_tokens=4, lookahead=2)
    ep.probe_new()
    ep.probe_more(0)
    ep.probe_new()
    ep.probe_more(1)  # branch 1 finishes (6 tokens); branch 0 stays open after 2 steps
    ts = record_set([(ep, "1")])
    branches = ts.problems[0].branches
    rep = RecordingEpisode(branches)
    rep.probe_new()
    assert rep.probe_more(0)[1] is False  # as live: still unfinished
    assert branches.final_answers[0] == "ERR"
    assert branches.branch_tokens[0] == len(ep.branches[0].ids)
    assert ts.provenance.sampling["unfinished"] == {"0": [0]}


def test_lookahead_generates_next_branches_in_the_same_call_and_bills_only_what_is_consumed():
    ep, backend = live_episode([20] * 6, interval_tokens=4, lookahead=4)
    ep.probe_new()
    assert backend.calls[0] == 4  # branch 0 and the next three to open
    stats = ep.stats()
    assert stats.billed_tokens == 4 and stats.generated_tokens == 16
    for _ in range(3):
        ep.probe_new()
    assert ep.stats().generation_calls == 1  # branches 1..3 were already generated
    assert ep.tokens_used == ep.stats().generated_tokens == 16


def test_a_probe_cut_at_an_inner_brace_is_continued_until_the_box_closes():
    cfg = live_config(probe_tokens=16)
    backend = ScriptedBackend([20], interval=cfg.interval_tokens, probe_texts=["\\frac{1}", "{2}", "}"])
    ep = LiveEpisode("q", backend, cfg, char_prompts(cfg.probe_suffix))
    assert ep.probe_new()[0] == "\\frac{1}{2}"
    assert ep.stats().probe_calls == 3


def test_a_probe_that_never_closes_its_box_answers_ERR():
    cfg = live_config(probe_tokens=3)
    backend = ScriptedBackend([20], interval=cfg.interval_tokens, probe_texts=["12345"])
    ep = LiveEpisode("q", backend, cfg, char_prompts(cfg.probe_suffix))
    assert ep.probe_new()[0] == "ERR"


def test_errors_on_branch_indices_and_exhausted_branches_match_replay():
    ep, _ = live_episode([5, 5], max_branches=2)
    with pytest.raises(ValueError, match="branch 0 is not open"):
        ep.probe_more(0)
    ep.probe_new()
    ep.get_new_branch_final_answer()
    with pytest.raises(ValueError, match="no unopened branch left"):
        ep.probe_new()
    with pytest.raises(ValueError, match="must be an int, got bool"):
        ep.probe_more(True)


def test_signals_exist_only_with_logprobs():
    ep, _ = live_episode([12])
    assert not hasattr(ep, "signals")
    ep, _ = live_episode([12], top_logprobs=2)
    ep.probe_new()
    ep.probe_more(0)
    values = ep.signals(0)["confidence"]
    assert len(values) == 2 and all(v > 0 for v in values)


def test_a_backend_that_is_down_raises_BackendUnavailable_which_no_controller_mistakes_for_ValueError():
    ep, backend = live_episode([12])
    backend.fail_with = BackendUnavailable("http://127.0.0.1:9/v1: cannot reach the server")
    with pytest.raises(BackendUnavailable, match="cannot reach"):
        ep.probe_new()
    assert not issubclass(BackendUnavailable, ValueError)


def test_the_overall_timeout_bounds_a_question():
    ep, _ = live_episode([40], overall_timeout=1e-9)
    with pytest.raises(LiveTimeout, match="overall_timeout"):
        ep.probe_new()


def test_a_branch_limit_beyond_the_engine_context_is_refused_naming_the_field():
    cfg = live_config(max_tokens_per_branch=100)
    backend = ScriptedBackend([5], interval=4)
    backend.max_model_len = 50
    with pytest.raises(LiveConfigError, match="max_tokens_per_branch") as err:
        LiveEpisode("q", backend, cfg, char_prompts(cfg.probe_suffix))
    assert err.value.field == "max_tokens_per_branch"
