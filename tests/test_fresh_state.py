"""Every episode starts from the same fresh state: a controller that remembers questions and
answers across episodes scores exactly as its stateless twin, in batch scoring (search,
evaluate, the gate) and in serving, and callers never see each other's questions.

Each memoriser keeps its memory in a different place a controller can reach in-process
(its module, its class, the base class, an allowed module, the builtins, a function
default, a library's class, a pipe it opened). In batch scoring an episode never shares a
process with an earlier episode of its question, and what the candidate owns is rebuilt for
every episode; in serving every solve is a fresh fork. Every test starts real sandbox
children.
"""

from __future__ import annotations

import pytest

from mlflow_autotts.replay.episode import RecordingEpisode, shuffle_order
from mlflow_autotts.sandbox.limits import SandboxLimits
from mlflow_autotts.sandbox.outcome import CandidateFailedError
from mlflow_autotts.sandbox.process import run_candidate
from mlflow_autotts.sandbox.session import SandboxedController
from mlflow_autotts.sandbox.worker import episode_groups
from tests.helpers import random_set

LIMITS = SandboxLimits(wall_seconds=60, cpu_seconds=30, memory_mb=512)
DATA = [random_set(6, 16, seed=5, name="Toy/m")]

# The twin reads branches whole until two agree, then answers. The memoriser does the same on a
# question it has not seen; on one it has, it probes new branches only until one shows the answer
# it remembered, which costs a fraction of the twin's bill: scores bought with memory.
TEMPLATE = '''
import collections, math, random
from mlflow_autotts.controllers.base import Controller

SETUP

def remembered(question):
    return RECALL

def remember(question, answer):
    STORE

class Memoriser(Controller):
    name = "memoriser"

    def solve(self, episode):
        known = remembered(episode.question)
        if known is not None:
            while True:
                try:
                    answer, _, _ = episode.probe_new()
                except ValueError:
                    break
                if answer == known:
                    return answer
        seen = collections.Counter()
        while True:
            try:
                answer = episode.get_new_branch_final_answer()
            except ValueError:
                break
            seen[answer] += 1
            if seen[answer] == 2:
                break
        answer = seen.most_common(1)[0][0] if seen else None
        if answer is not None:
            remember(episode.question, answer)
        return answer
'''

CHANNELS = {
    "module_global": ("MEMO = {}", "MEMO.get(question)", "MEMO[question] = answer"),
    "class_attribute": ("class Box:\n    memo = {}", "Box.memo.get(question)", "Box.memo[question] = answer"),
    "base_class": ("", "getattr(Controller, 'memo', {}).get(question)",
                   "Controller.memo = {**getattr(Controller, 'memo', {}), question: answer}"),
    "allowed_module": ("", "getattr(math, 'memo', {}).get(question)",
                       "math.memo = {**getattr(math, 'memo', {}), question: answer}"),
    "builtins": ("import collections as _c\nB = _c.__builtins__ if isinstance(_c.__builtins__, dict) "
                 "else vars(_c.__builtins__)", "B.get('memo', {}).get(question)",
                 "B['memo'] = {**B.get('memo', {}), question: answer}"),
    "function_default": ("def _box(memo={}):\n    return memo", "_box().get(question)", "_box()[question] = answer"),
    "library_state": ("", "getattr(random.Random, 'memo', {}).get(question)",
                      "random.Random.memo = {**getattr(random.Random, 'memo', {}), question: answer}"),
}

STATELESS = TEMPLATE.replace("SETUP", "").replace("RECALL", "None").replace("STORE", "pass")


def memoriser(channel: str) -> str:
    setup, recall, store = CHANNELS[channel]
    return TEMPLATE.replace("SETUP", setup).replace("RECALL", recall).replace("STORE", store)


def _scores(outcome):
    assert outcome.ok, outcome.failure
    return [(r.beta, r.accuracy, r.mean_tokens) for r in outcome.results], \
        [(e.problem, e.shuffle, e.answer, e.tokens, e.branches_opened) for e in outcome.episodes]


@pytest.mark.parametrize("channel", sorted(CHANNELS))
def test_a_memorising_controller_scores_exactly_as_its_stateless_twin(channel):
    seeds = range(4)  # every question comes back in three later shuffles, and under a second β
    twin = _scores(run_candidate(STATELESS, DATA, [0.3, 0.7], seeds, LIMITS))
    assert _scores(run_candidate(memoriser(channel), DATA, [0.3, 0.7], seeds, LIMITS)) == twin


def test_what_the_candidate_owns_is_new_for_every_episode_of_any_question():
    # a module-level counter that changes the strategy after the first episode it sees: every
    # episode is its first, so it plays exactly as the twin on every question
    source = TEMPLATE.replace("SETUP", "SEEN = []").replace("RECALL", "None").replace("STORE", "pass").replace(
        "        known = remembered(episode.question)",
        "        SEEN.append(1)\n        known = None\n        if len(SEEN) > 1:\n            return None")
    twin = _scores(run_candidate(STATELESS, DATA, [0.5], range(2), LIMITS))
    assert _scores(run_candidate(source, DATA, [0.5], range(2), LIMITS)) == twin


def test_episodes_of_one_question_never_share_a_process():
    texts = [["a", "b", "c"], ["b", "d"]]  # two datasets sharing question "b"
    groups = episode_groups(texts, n_betas=2, n_seeds=2)
    episodes = [e for g in groups for e in g]
    assert episodes == [(b, d, s, p) for b in range(2) for d in range(2) for s in range(2) for p in range(len(texts[d]))]
    for g in groups:
        questions = [texts[d][p] for _, d, _, p in g]
        assert len(questions) == len(set(questions))
    assert max(len(g) for g in groups) <= 3


def test_a_pipe_opened_before_the_episodes_does_not_join_them():
    # the module body runs once, before any episode: a pipe it opens would let one episode's
    # process hand its answers to the next; each episode's process starts without it
    source = memoriser("module_global").replace("MEMO = {}", '''
MEMO = {}
_os = random._os
R, W = _os.pipe()
_os.set_blocking(R, False)

def _load():
    try:
        for line in _os.read(R, 1 << 16).decode().splitlines():
            q, _, a = line.partition("\\t")
            MEMO[q] = a
    except OSError:
        pass

def _save(q, a):
    try:
        _os.write(W, (q + "\\t" + a + "\\n").encode())
    except OSError:
        pass
''').replace("return MEMO.get(question)", "_load()\n    return MEMO.get(question)").replace(
        "MEMO[question] = answer", "MEMO[question] = answer\n    _save(question, answer)")
    twin = _scores(run_candidate(STATELESS, DATA, [0.5], range(3), LIMITS))
    assert _scores(run_candidate(source, DATA, [0.5], range(3), LIMITS)) == twin


def test_a_kept_descriptor_swapped_for_a_pipe_is_refused():
    # a pipe put in place of the child's stdin before the episodes would join them: refused
    source = STATELESS.replace("SETUP", "") + '''
_os = random._os
_r, _w = _os.pipe()
_os.dup2(_r, 0)
'''
    out = run_candidate(source, DATA, [0.5], range(2), LIMITS)
    assert not out.ok and out.failure.kind == "forbidden"
    assert "isolated from the others" in out.failure.message


def test_the_candidate_cannot_fork_itself():
    source = STATELESS.replace("SETUP", "").replace(
        "        known = remembered(episode.question)", "        random._os.fork()\n        known = None")
    out = run_candidate(source, DATA, [0.5], range(1), LIMITS)
    assert not out.ok and out.failure.kind == "forbidden" and "os.fork" in str(out.failure)


# ----------------------------------------------------------------------------- serving
def _episodes(seeds=range(3)):
    return [(p.branches, shuffle_order(p.branches.n_branches, s)) for s in seeds for p in DATA[0].problems]


@pytest.mark.parametrize("channel", ["module_global", "allowed_module", "builtins"])
def test_a_served_memoriser_answers_and_bills_as_its_twin(channel):
    with SandboxedController(memoriser(channel), "Memoriser", 0.5, limits=LIMITS, max_children=1) as mem, \
            SandboxedController(STATELESS, "Memoriser", 0.5, limits=LIMITS, max_children=1) as twin:
        for br, order in _episodes():
            mine, ref = RecordingEpisode(br, order), RecordingEpisode(br, order)
            assert mem.solve(mine) == twin.solve(ref)
            assert (mine.actions, mine.tokens_used) == (ref.actions, ref.tokens_used)
        assert mem.children_started == 1  # one child served them all, a fresh fork each time


GOSSIP = '''
from mlflow_autotts.controllers.base import Controller

class Gossip(Controller):
    heard = []

    def solve(self, episode):
        Gossip.heard.append(episode.question)
        if len(Gossip.heard) > 1:
            raise RuntimeError("earlier callers asked: " + " | ".join(Gossip.heard[:-1]))
        return episode.get_new_branch_final_answer()
'''


def test_callers_never_see_each_others_questions():
    secret = DATA[0].problems[0].branches
    other = DATA[0].problems[1].branches
    with SandboxedController(GOSSIP, "Gossip", 0.5, limits=LIMITS, max_children=1) as served:
        first = served.solve(RecordingEpisode(secret, shuffle_order(secret.n_branches, 0)))
        second = served.solve(RecordingEpisode(other, shuffle_order(other.n_branches, 0)))
        third = served.solve(RecordingEpisode(other, shuffle_order(other.n_branches, 1)), beta=0.9)
    assert None not in (first, second, third)  # never raised: each solve saw only its own question


def test_a_failed_solve_carries_only_its_own_question():
    source = GOSSIP.replace("if len(Gossip.heard) > 1:", "if True:")
    with SandboxedController(source, "Gossip", 0.5, limits=LIMITS, max_children=1) as served:
        for k in range(2):
            br = DATA[0].problems[k].branches
            with pytest.raises(CandidateFailedError) as err:
                served.solve(RecordingEpisode(br, shuffle_order(br.n_branches, 0)))
            others = [p.branches.question for j, p in enumerate(DATA[0].problems) if j != k]
            assert not any(q in str(err.value) for q in others)
