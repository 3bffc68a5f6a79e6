"""The openai:<model> explorer against a real local OpenAI-compatible server (scripted replies).

Server-backed tests go through the real ``openai`` client over HTTP; the extraction and
prompt tests are pure functions.
"""

from __future__ import annotations

import collections
import re

import pytest

from mlflow_autotts.controllers.base import Controller, build_controller
from mlflow_autotts.data.trajectory import Branches
from mlflow_autotts.replay.episode import ReplayEpisode
from mlflow_autotts.replay.results import EvalResult as Score
from mlflow_autotts.search.extract import ProposalError, check_source, extract_code
from mlflow_autotts.search.llm_explorer import ExplorerError, LLMExplorer
from mlflow_autotts.search.prompts import default_reference_sources, format_leaderboard, front_points, rank_candidates
from mlflow_autotts.search.types import Candidate, Proposal
from tests.helpers import import_source
from tests.openai_stub import (  # noqa: F401  (openai_stub is a fixture)
    BROKEN_CONTROLLER,
    FORBIDDEN_IMPORT_CONTROLLER,
    HOSTILE_CONTROLLER,
    LOOPING_CONTROLLER,
    NO_CODE_REPLY,
    VALID_CONTROLLER,
    StubReply,
    fenced,
    openai_stub,
)

server = pytest.mark.slow  # starts the local OpenAI-compatible server (fast: a thread)


def explorer(stub, **kw) -> LLMExplorer:
    kw.setdefault("max_retries", 0)
    return LLMExplorer("stub-model", base_url=stub.base_url, api_key="test", **kw)


def synthetic_branches() -> Branches:
    """Eight branches; '42' is the plurality of final answers (5 of 8)."""
    finals = ["42", "7", "42", "42", "7", "42", "13", "42"]
    probes = [["ERR", a] if k % 2 else ["ERR", "ERR", a] for k, a in enumerate(finals)]
    tokens = [1200 + 300 * k for k in range(len(finals))]
    return Branches.from_lists("What is six times seven?", 500, probes, tokens, finals)


def candidate(cid: str, points: dict[str, list[tuple[float, float, float]]], *, source: str = VALID_CONTROLLER,
              feedback: str = "", explorer: str = "evolve", meta: dict | None = None) -> Candidate:
    scores = [Score(data, beta, acc, tok) for data, rows in points.items() for beta, acc, tok in rows]
    prop = Proposal(source=source, class_name="AgreementStop", explorer=explorer, meta=dict(meta or {}))
    return Candidate(id=cid, proposal=prop, scores=scores, feedback=feedback)


# ----------------------------------------------------------------------- server tests

@server
def test_valid_proposal_compiles_to_a_controller_that_runs(openai_stub, tmp_path):
    openai_stub.push(StubReply(fenced(VALID_CONTROLLER), prompt_tokens=1500, completion_tokens=400))
    ex = explorer(openai_stub, temperature=0.7, max_tokens=2048)
    [p] = ex.propose([], 1, generation=3)

    assert "check_error" not in p.meta
    assert (p.class_name, p.explorer, p.generation, p.parents) == ("AgreementStop", "openai:stub-model", 3, ())
    assert p.meta["finish_reason"] == "stop" and p.meta["explanation"].startswith("Idea:")
    [req] = openai_stub.chat_requests
    assert req.body["model"] == "stub-model"
    assert req.body["temperature"] == 0.7 and req.body["max_completion_tokens"] == 2048
    assert [m["role"] for m in req.messages] == ["system", "user"]

    path = tmp_path / "candidate.py"
    path.write_text(p.source)
    cls = import_source(path, p.class_name)
    assert issubclass(cls, Controller)
    spent = {}
    for beta in (0.0, 1.0):
        ep = ReplayEpisode(synthetic_branches())
        answer = build_controller(cls, beta).solve(ep)
        assert answer in {"42", "7", "13"}
        spent[beta] = ep.tokens_used
    ep = ReplayEpisode(synthetic_branches())
    assert build_controller(cls, 1.0).solve(ep) == "42"  # reads all 8 branches: the plurality
    assert 0 < spent[0.0] <= spent[1.0]


@server
def test_check_failures_reach_the_next_prompt(openai_stub):
    openai_stub.push(fenced(BROKEN_CONTROLLER), fenced(FORBIDDEN_IMPORT_CONTROLLER), fenced(HOSTILE_CONTROLLER),
                     NO_CODE_REPLY, fenced(VALID_CONTROLLER))
    ex = explorer(openai_stub)
    props = ex.propose([], 5, generation=0)

    errors = [p.meta.get("check_error") for p in props]
    assert [e.split(":")[0] if e else None for e in errors] == ["syntax", "check", "check", "extract", None]
    assert "line 7" in errors[0] and "expected ':'" in errors[0]
    assert "'os'" in errors[1]
    assert "'open'" in errors[2] and "'_final'" in errors[2]
    assert props[0].source.strip() == BROKEN_CONTROLLER.strip()  # the code, not the prose, for the record
    assert props[3].source == NO_CODE_REPLY  # no code: the reply itself
    prompts = [r.prompt for r in openai_stub.chat_requests]
    assert "failed" not in prompts[0].split("## Task")[0].split("## Leaderboard")[1]
    for k in range(1, 5):
        assert "## Your previous proposal failed" in prompts[k]
        assert errors[k - 1] in prompts[k]
    assert props[4].meta["fed_back_failure"] == errors[3]


@server
def test_later_failures_come_from_the_archive_or_report_failure(openai_stub):
    openai_stub.push(*[fenced(VALID_CONTROLLER)] * 4)
    ex = explorer(openai_stub)
    [p1] = ex.propose([], 1, 0)

    # the loop recorded it as a failed candidate (e.g. the sandbox timed out)
    failed = Candidate(id="c1", proposal=p1, failure="timeout: solve exceeded 5 s on Qwen3-4B/aime24 problem 3")
    [p2] = ex.propose([failed], 1, 1)
    assert "timeout: solve exceeded 5 s on Qwen3-4B/aime24 problem 3" in openai_stub.chat_requests[-1].prompt

    # the loop reports instead of recording: the newest known outcome wins
    ex.report_failure(p2, "error: ZeroDivisionError: division by zero in solve")
    ex.propose([failed], 1, 1)
    last = openai_stub.chat_requests[-1].prompt
    assert "ZeroDivisionError" in last and "timeout: solve exceeded" not in last

    # once the newest proposal scored, there is no failure to show
    ok = candidate("c2", {"A/x": [(0.5, 60.0, 9000.0)]}, explorer=ex.name, meta=p2.meta)
    ex.propose([failed, ok], 1, 2)
    assert "## Your previous proposal failed" not in openai_stub.chat_requests[-1].prompt


@server
def test_usage_and_cost_from_the_responses(openai_stub):
    openai_stub.push(StubReply(fenced(VALID_CONTROLLER), prompt_tokens=12_000, completion_tokens=3_000),
                     StubReply(fenced(BROKEN_CONTROLLER), prompt_tokens=12_500, completion_tokens=1_000),
                     StubReply(fenced(VALID_CONTROLLER), include_usage=False))
    ex = explorer(openai_stub, price_input=2.5, price_output=10.0)
    props = ex.propose([], 3, 0)

    got = [(p.usage.input_tokens, p.usage.output_tokens) for p in props]
    assert got == [(12_000, 3_000), (12_500, 1_000), (0, 0)]
    assert props[0].usage.usd == pytest.approx((12_000 * 2.5 + 3_000 * 10.0) / 1e6)
    assert props[1].usage.usd == pytest.approx((12_500 * 2.5 + 1_000 * 10.0) / 1e6)  # failed checks cost too
    assert props[2].usage.usd == 0.0
    total = ex.total_usage
    assert (total.input_tokens, total.output_tokens) == (24_500, 4_000)
    assert total.usd == pytest.approx(sum(p.usage.usd for p in props))


@server
def test_prompt_holds_leaderboard_parent_feedback_and_references(openai_stub):
    good_src = VALID_CONTROLLER.replace("agreement_stop", "agreement_stop_v2")
    good = candidate("cand-good", {
        "Qwen3-4B/aime24": [(0.0, 61.25, 8200.0), (0.5, 70.0, 15400.0), (1.0, 73.3, 31000.0)],
        "Qwen3-8B/aime24": [(0.0, 66.0, 7100.0), (0.5, 74.5, 13900.0), (1.0, 76.0, 29500.0)],
    }, source=good_src, feedback="Wrong on problems 4, 17; spends 40% of its tokens on problem 22.")
    dominated = candidate("cand-bad", {
        "Qwen3-4B/aime24": [(0.0, 50.0, 9000.0), (0.5, 60.0, 20000.0), (1.0, 65.0, 40000.0)],
        "Qwen3-8B/aime24": [(0.0, 55.0, 8000.0), (0.5, 62.0, 19000.0), (1.0, 70.0, 38000.0)],
    }, source=VALID_CONTROLLER.replace("agreement_stop", "dominated_one"))
    broken = Candidate(id="cand-crash", proposal=Proposal(source="x"), failure="error: boom")
    archive = [dominated, broken, good]

    openai_stub.push(*[fenced(VALID_CONTROLLER)] * 3)
    props = explorer(openai_stub, seed=1).propose(archive, 3, 4)
    assert all(p.parents == ("cand-good",) for p in props)  # the dominated one is never a parent
    prompt = openai_stub.chat_requests[0].prompt

    board = prompt.split("## Leaderboard")[1].split("## Parent")[0]
    assert "2 scored candidate(s), 1 failed" in board
    assert board.index("cand-good") < board.index("cand-bad")
    for cell in ("61.2/8.2k", "74.5/13.9k", "Qwen3-8B/aime24", "50.0/9.0k"):
        assert cell in board, cell
    assert "63.6/7.7k" in board  # the mean over data sets at β=0 of cand-good
    parent = prompt.split("## Parent")[1]
    assert "agreement_stop_v2" in parent and "dominated_one" not in parent
    assert "Wrong on problems 4, 17" in parent
    for ref in ("class ConfidenceMomentum(Controller)", "class ParallelProbe(Controller)",
                "class SelfConsistency(Controller)", "mlflow_autotts.controllers.voting"):
        assert ref in prompt, ref
    assert "@register_controller" not in prompt
    system = openai_stub.chat_requests[0].messages[0]["content"]
    assert "monotone function of β" in system and "At most 64 branches" in system


@server
def test_client_from_environment(openai_stub, monkeypatch):
    openai_stub.push(fenced(VALID_CONTROLLER), fenced(VALID_CONTROLLER))
    monkeypatch.setenv("OPENAI_BASE_URL", openai_stub.base_url)
    monkeypatch.setenv("OPENAI_API_KEY", "sk-from-env")
    [p] = LLMExplorer("env-model").propose([], 1, 0)
    assert p.class_name == "AgreementStop"
    req = openai_stub.chat_requests[-1]
    assert req.headers.get("authorization") == "Bearer sk-from-env" and req.body["model"] == "env-model"

    monkeypatch.delenv("OPENAI_API_KEY")  # a local server (vLLM) needs no key
    LLMExplorer("env-model").propose([], 1, 0)
    assert openai_stub.chat_requests[-1].headers.get("authorization") == "Bearer EMPTY"


@server
def test_client_retries_then_errors_clearly(openai_stub):
    openai_stub.push(StubReply(status=503), fenced(VALID_CONTROLLER))
    [p] = explorer(openai_stub, max_retries=2).propose([], 1, 0)
    assert p.class_name == "AgreementStop" and len(openai_stub.chat_requests) == 2

    openai_stub.push(StubReply(status=500))
    with pytest.raises(ExplorerError, match="chat completion request failed"):
        explorer(openai_stub, max_retries=0).propose([], 1, 0)

    openai_stub.push(fenced(VALID_CONTROLLER), StubReply(status=500))
    props = explorer(openai_stub, max_retries=0).propose([], 3, 0)
    assert len(props) == 1  # what was paid for is kept; the error surfaces on the next call


@server
def test_autolog_traces_explorer_calls(openai_stub, mlflow_store):
    import mlflow

    openai_stub.push(StubReply(fenced(VALID_CONTROLLER), prompt_tokens=900, completion_tokens=300))
    mlflow.openai.autolog(silent=True)
    try:
        explorer(openai_stub).propose([], 1, 0)
        mlflow.flush_trace_async_logging()
        traces = mlflow.search_traces(return_type="list")
    finally:
        mlflow.openai.autolog(disable=True, silent=True)
    assert len(traces) == 1
    assert traces[0].info.token_usage == {"input_tokens": 900, "output_tokens": 300, "total_tokens": 1200}


# every constructor option but these is a search setting (llm_* and the shared ones)
NOT_SETTINGS = {"self", "model", "client", "api_key", "reference_sources"}
"""model: the argument of openai:<model>; client: tests' own; api_key: only by the NAME of its
environment variable (llm_api_key_env); reference_sources: controller source code."""


@server
def test_every_llm_explorer_option_reaches_the_explorer_from_the_search_settings(openai_stub, monkeypatch):
    import inspect

    from mlflow_autotts.search.config import build_config
    from mlflow_autotts.search.explorers import make_explorer
    from mlflow_autotts.search.references import References

    given = {"llm_base_url": openai_stub.base_url, "llm_temperature": 0.3, "llm_max_tokens": 123,
             "llm_timeout_s": 7.0, "llm_max_retries": 0, "llm_leaderboard_size": 2, "llm_feedback_chars": 50,
             "llm_extra_body": {"top_k": 5}, "price_input": 1.0, "price_output": 2.0, "seed": 4,
             "llm_api_key_env": "STUB_KEY"}
    setting_of = {"timeout": "llm_timeout_s", "price_input": "price_input", "price_output": "price_output",
                  "seed": "seed"}
    options = set(inspect.signature(LLMExplorer.__init__).parameters) - NOT_SETTINGS
    assert {setting_of.get(n, f"llm_{n}") for n in options} | {"llm_api_key_env"} == set(given)
    monkeypatch.setenv("STUB_KEY", "key-from-named-variable")
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    cfg = build_config(None, {"explorer": "openai:stub-model", **given})
    ex = make_explorer(cfg.exploration, References(50.0, 1000.0, ((0.5, 40.0, 500.0),)))
    assert isinstance(ex, LLMExplorer) and ex.model == "stub-model"
    assert (ex.price_input, ex.price_output, ex.leaderboard_size, ex.feedback_chars) == (1.0, 2.0, 2, 50)
    assert (ex.client.timeout, ex.client.max_retries) == (7.0, 0)
    openai_stub.push(fenced(VALID_CONTROLLER))
    [p] = ex.propose([], 1, 0)
    assert p.class_name == "AgreementStop"
    req = openai_stub.chat_requests[-1]
    assert req.headers.get("authorization") == "Bearer key-from-named-variable"
    assert (req.body["temperature"], req.body["max_completion_tokens"], req.body["top_k"]) == (0.3, 123, 5)

    monkeypatch.delenv("STUB_KEY")
    with pytest.raises(ExplorerError, match="llm_api_key_env names STUB_KEY, which is not set"):
        make_explorer(cfg.exploration, References(50.0, 1000.0, ((0.5, 40.0, 500.0),)))

def test_settings_are_checked():
    with pytest.raises(ExplorerError, match="input price"):
        LLMExplorer("m", client=object(), price_input=-1)
    with pytest.raises(ExplorerError, match="output price"):
        LLMExplorer("m", client=object(), price_output="cheap")
    with pytest.raises(ExplorerError, match="model name is empty"):
        LLMExplorer(" ", client=object())


# ------------------------------------------------------------------ extraction, checks

def test_extract_prefers_the_last_complete_controller_block():
    first = VALID_CONTROLLER.replace("AgreementStop", "First")
    reply = ("<think>maybe ```python\nclass Nope(Controller): pass\n```</think>\n"
             + fenced(first) + "\nA helper:\n```python\ndef helper(x):\n    return x\n```\n"
             + "```text\nnot code\n```\n" + fenced(VALID_CONTROLLER, before="Final version:"))
    code = extract_code(reply)
    assert check_source(code).class_name == "AgreementStop"
    assert check_source(extract_code("Earlier:\n" + fenced(first) + "\nhelper:\n```py\nx = 1\n```\n")).class_name == "First"
    assert check_source(extract_code(VALID_CONTROLLER)).class_name == "AgreementStop"  # no fence, parses


def test_extract_failures_are_named():
    with pytest.raises(ProposalError, match="^extract: the reply was empty"):
        extract_code("   ")
    with pytest.raises(ProposalError, match="^extract: .*no ```python code block"):
        extract_code(NO_CODE_REPLY)
    cut = "Here:\n```python\n" + VALID_CONTROLLER[: len(VALID_CONTROLLER) // 2]
    code = extract_code(cut, truncated=True)
    with pytest.raises(ProposalError, match="^syntax: line"):
        check_source(code)


@pytest.mark.parametrize("snippet, expected", [
    ("import os", "import of 'os'"),
    ("import subprocess as sp", "import of 'subprocess'"),
    ("from pathlib import Path", "import from 'pathlib'"),
    ("from typing import sys", "'sys' from 'typing' is a module"),
    ("from mlflow_autotts.controllers.base import inspect", "is a module"),
    ("import typing\nS = typing.sys", "access to the attribute 'sys'"),
    ("import dataclasses as d\nC = d.copy", "'dataclasses.copy' is a module"),
    ("import mlflow_autotts.controllers.voting", "instead of 'import mlflow_autotts.controllers.voting'"),
    ("from math import *", "import *"),
    ("from .x import y", "relative imports"),
    ("from mlflow_autotts.data.trajectory import Branches", "import from 'mlflow_autotts.data.trajectory'"),
    ("from random import _os", "private name '_os'"),
    ("X = eval('1')", "'eval' is not allowed"),
    ("X = __builtins__", "the name '__builtins__'"),
    ("X = (1).__class__.__bases__", "dunder attribute '__class__'"),
    ("def f(g):\n    return g.gi_frame.f_back", "attribute 'gi_frame'"),
    ("def f(d):\n    return d.__getitem__.__self__", "dunder attribute '__self__'"),
    ("def f(e, n):\n    return getattr(e, n)", "literal attribute name"),
    ("def f(e):\n    return getattr(e, '_final')", "getattr() of '_final'"),
    ("def f(e):\n    return e._final", "private attribute '_final'"),
    ("def f():\n    global X", "'global' is not allowed"),
    ("print('hi')", "'print' is not allowed"),
])
def test_static_check_rejects(snippet, expected):
    with pytest.raises(ProposalError) as err:
        check_source(snippet + "\n" + VALID_CONTROLLER)
    assert err.value.kind == "check" and expected in err.value.message


def test_static_check_accepts_ordinary_controllers():
    src = '''
from __future__ import annotations

import math
import collections.abc
from collections import Counter, deque
from dataclasses import dataclass
from mlflow_autotts.controllers import voting
from mlflow_autotts.controllers.base import Controller
from mlflow_autotts.controllers.voting import Tally, beta_confidence, plurality


@dataclass
class Arm:
    index: int
    latest: str


class Probe(Controller):
    name = "probe"

    def __init__(self, beta: float = 0.5, *, width: int = 4):
        super().__init__(beta)
        self._n = max(2, round(2 + 6 * self.beta))

    def solve(self, episode):
        sig = episode.signals if hasattr(episode, "signals") else None
        arms = []
        for _ in range(self._n):
            answer, i, done = episode.probe_new()
            arms.append(Arm(i, answer))
        counts = Counter(a.latest for a in arms)
        order = sorted(counts, key=counts.__getitem__, reverse=True)
        return voting.plurality([a.latest for a in arms]) or order[0]
'''
    assert check_source(src).class_name == "Probe"
    src2 = VALID_CONTROLLER.replace("(Controller)", "(base.Controller)").replace(
        "from mlflow_autotts.controllers.base import Controller",
        "import mlflow_autotts.controllers.base as base")
    assert check_source(src2).class_name == "AgreementStop"
    # the reference CMC, as the prompt shows it, passes: the filter does not reject real controllers
    cmc = default_reference_sources()["mlflow_autotts.controllers.cmc"]
    assert check_source(cmc).class_name == "ConfidenceMomentum"


@pytest.mark.parametrize("mutate, expected", [
    (lambda s: s.replace("class AgreementStop(Controller)", "class AgreementStop"), "no class deriving from Controller"),
    (lambda s: s + "\n\nclass Other(AgreementStop):\n    name = 'other'\n", "several Controller subclasses"),
    (lambda s: s.replace("    def solve(self, episode):", "    def run(self, episode):"), "no 'solve(self, episode)'"),
    (lambda s: s.replace('    name = "agreement_stop"\n', ""), "needs a class attribute name"),
    (lambda s: s.replace("def __init__(self, beta: float = 0.5)", "def __init__(self, budget=0.5)"), "__init__(self, beta=0.5"),
    (lambda s: s.replace("def __init__(self, beta: float = 0.5)", "def __init__(self, beta, k)"), "needs a default"),
])
def test_static_check_controller_shape(mutate, expected):
    with pytest.raises(ProposalError, match=re.escape(expected)):
        check_source(mutate(VALID_CONTROLLER))


def test_static_check_names_the_class_and_passes_sandbox_cases():
    two = VALID_CONTROLLER + VALID_CONTROLLER.replace("AgreementStop", "Second").replace("agreement_stop", "second")
    assert check_source(two, class_name="Second").class_name == "Second"
    with pytest.raises(ProposalError, match="no Controller subclass named 'Third'"):
        check_source(two, class_name="Third")
    # a static filter cannot stop everything: an endless loop is the sandbox's job
    assert check_source(LOOPING_CONTROLLER).class_name == "Forever"


# ------------------------------------------------------------------------ leaderboard

def test_front_and_ranking():
    pts = [(70.0, 10.0), (70.0, 10.0), (60.0, 12.0), (80.0, 30.0), (75.0, 30.0), (50.0, 5.0)]
    assert front_points(pts) == {(70.0, 10.0), (80.0, 30.0), (50.0, 5.0)}
    a = candidate("a", {"d": [(0.0, 50.0, 5.0), (1.0, 80.0, 30.0)]})
    b = candidate("b", {"d": [(0.0, 60.0, 12.0), (1.0, 75.0, 30.0)]})
    c = candidate("c", {"d": [(0.5, 70.0, 10.0)]})
    ranked = rank_candidates([b, c, a, Candidate(id="f", proposal=Proposal(source=""), failure="check: x")])
    assert [(x.id, k) for x, k in ranked] == [("a", 2), ("c", 1), ("b", 0)]
    board = format_leaderboard([a, b, c], limit=2)
    assert "best 2 shown" in board and "\n  b (" not in board
    assert collections.Counter(line[:2] for line in board.splitlines() if " (AgreementStop" in line) == {"* ": 2}
    assert format_leaderboard([]) == "No candidate has been scored yet."
