"""The billing rule (``replay.billing``) is the one rule: replay and live bill with it, and
the sandbox's deliberate copies (the child's oracle, the parent's ``sandbox.cost``) bill
exactly as it does on any action sequence hypothesis finds."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from mlflow_autotts.data.trajectory import Branches
from mlflow_autotts.live.recording import record_episode
from mlflow_autotts.replay.billing import branch_intervals, branch_tokens
from mlflow_autotts.replay.episode import RecordingEpisode, replay_cost, shuffle_order
from mlflow_autotts.sandbox import cost
from mlflow_autotts.sandbox.oracle import oracle
from mlflow_autotts.sandbox.protocol import Data, Op
from tests.helpers import live_episode, make_branches

ANSWERS = ("1", "2", "ERR")

branch_st = st.tuples(st.lists(st.sampled_from(ANSWERS), max_size=6), st.integers(0, 4000), st.sampled_from(ANSWERS))
branches_st = st.builds(lambda specs, iv: make_branches(specs, interval=iv),
                        st.lists(branch_st, min_size=1, max_size=8), st.integers(1, 700))
script_st = st.lists(st.integers(0, 200), max_size=60)


def actions_of(script: list[int], n_branches: int) -> list[tuple[str, int]]:
    """A possible action log from a script of ints (opening with nothing left is skipped)."""
    actions: list[tuple[str, int]] = []
    opened = 0
    for x in script:
        op = x % 3
        if op == 1 and opened:
            actions.append(("probe_more", (x // 3) % opened))
        elif opened < n_branches:
            actions.append(("read" if op == 2 else "probe_new", opened))
            opened += 1
    return actions


def by_the_rule(br: Branches, order, actions) -> tuple[int, int, int]:
    """(tokens, branches opened, intervals) of ``actions``, step counts kept here by hand."""
    steps: list[int] = []
    read: list[bool] = []
    for kind, i in actions:
        if kind == "probe_more":
            if not read[i] and steps[i] <= br.n_probes[order[i]]:
                steps[i] += 1
        else:
            steps.append(1 if kind == "probe_new" else 0)
            read.append(kind == "read")
    tokens = sum(branch_tokens(br.interval_tokens, br.n_probes[order[k]], br.branch_tokens[order[k]], s, r)
                 for k, (s, r) in enumerate(zip(steps, read)))
    return tokens, len(steps), sum(branch_intervals(s, r) for s, r in zip(steps, read))


def oracle_bill(br: Branches, order, actions) -> tuple[int, int, list]:
    """(tokens, intervals, sealed step summary) the sandbox child's oracle reports."""
    ids: dict[str, int] = {}
    f_ids = [ids.setdefault(a, len(ids)) for a in br.final_answers]
    p_ids = [ids.setdefault(a, len(ids)) for a in br.probe_answers]
    problem = {Data.QUESTION: br.question, Data.INTERVAL: br.interval_tokens, Data.STRINGS: list(ids),
               Data.PROBE_IDS: p_ids, Data.OFFSETS: list(br.probe_offsets),
               Data.BRANCH_TOKENS: list(br.branch_tokens), Data.FINAL_IDS: f_ids, Data.SIGNALS: {}}
    gen = oracle([[problem]], {br.n_branches: [list(order)]}, 1, 1, b"k" * 16, None, [])
    next(gen)
    for kind, i in actions:
        out = gen.send({"probe_new": int(Op.PROBE_NEW), "read": int(Op.READ_WHOLE)}.get(kind, i))
        assert type(out) is not int, f"the oracle refused {kind} {i}"
    tokens, intervals = gen.send(int(Op.TOKENS_USED)), gen.send(int(Op.INTERVALS))
    _, _, summary, _ = gen.send(int(Op.SEAL))
    return tokens, intervals, summary


def test_the_rule_on_the_published_examples():
    # a probe step costs an interval; the finishing step brings the branch to its length
    assert branch_tokens(500, 3, 1700, 1) == 500
    assert branch_tokens(500, 3, 1700, 3) == 1500
    assert branch_tokens(500, 3, 1700, 4) == 1700
    assert branch_tokens(500, 3, 1200, 4) == 1500  # never less than the probe steps taken
    assert branch_tokens(500, 0, 80, 1) == 80
    assert branch_tokens(500, 3, 1700, 0, read=True) == 1700
    assert branch_intervals(4) == 4 and branch_intervals(0, read=True) == 1


@settings(max_examples=300, deadline=None)
@given(br=branches_st, script=script_st, seed=st.integers(-1, 5))
def test_replay_and_the_sandbox_copies_bill_exactly_as_the_rule(br, script, seed):
    order = range(br.n_branches) if seed < 0 else shuffle_order(br.n_branches, seed)
    actions = actions_of(script, br.n_branches)
    expected = by_the_rule(br, order, actions)

    ep = RecordingEpisode(br, order)
    for kind, i in actions:
        {"probe_new": ep.probe_new, "read": ep.get_new_branch_final_answer}.get(kind, lambda: ep.probe_more(i))()
    assert ep.actions == actions
    assert (ep.tokens_used, ep.branches_opened, ep.intervals) == expected
    assert replay_cost(br, order, actions) == expected

    summary = cost.summary_from_actions(br, order, actions)
    assert cost.summary_cost(br, order, summary) == expected
    tokens, intervals, _ = oracle_bill(br, order, actions)
    assert (tokens, intervals) == (expected[0], expected[2])
    assert oracle_bill(br, order, actions)[2] == summary  # the child seals what the parent bills


@settings(max_examples=100, deadline=None)
@given(lengths=st.lists(st.integers(1, 30), min_size=1, max_size=6), script=script_st,
       interval=st.integers(1, 6), limit=st.integers(1, 40), lookahead=st.integers(1, 4))
def test_live_bills_exactly_as_the_rule(lengths, script, interval, limit, lookahead):
    ep, _ = live_episode(lengths, interval_tokens=interval, max_tokens_per_branch=limit,
                         max_branches=len(lengths), lookahead=lookahead)
    for kind, i in actions_of(script, len(lengths)):
        {"probe_new": ep.probe_new, "read": ep.get_new_branch_final_answer}.get(kind, lambda: ep.probe_more(i))()
    recorded = record_episode(ep, gold_answer="2").branches  # probes and lengths as generated
    assert (ep.tokens_used, ep.branches_opened, ep.intervals) == by_the_rule(
        recorded, range(recorded.n_branches), ep.actions)
