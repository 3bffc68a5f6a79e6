"""One import allowlist for the lint, the sandbox's import gate and the explorer prompt; the
lint is early feedback and the sandbox is the guard.

The sandbox runs start real child processes.
"""

from __future__ import annotations

import textwrap

import pytest

from mlflow_autotts.sandbox import lockdown, policy, worker
from mlflow_autotts.sandbox.limits import SandboxLimits
from mlflow_autotts.sandbox.process import run_candidate
from mlflow_autotts.search import extract, prompts
from mlflow_autotts.search.extract import ProposalError, check_source
from tests.helpers import random_set

LIMITS = SandboxLimits(wall_seconds=20, cpu_seconds=10, memory_mb=512)
DATA = [random_set(3, 6, seed=5, name="Toy/p")]

TEMPLATE = '''
{imports}
from mlflow_autotts.controllers.base import Controller


class Probe(Controller):
    name = "probe"

    def solve(self, episode):
{body}
'''


def source(imports: str, body: str = "return episode.get_new_branch_final_answer()") -> str:
    return TEMPLATE.format(imports=imports, body=textwrap.indent(body, " " * 8))


def test_the_lint_the_runtime_gate_and_the_prompt_share_one_allowlist_object():
    assert extract.ALLOWED_IMPORTS is policy.ALLOWED_IMPORTS
    assert prompts.ALLOWED_IMPORTS is policy.ALLOWED_IMPORTS
    assert lockdown.ALLOWED_IMPORTS is policy.ALLOWED_IMPORTS  # the child's __import__ gate
    assert worker.ALLOWED_IMPORTS is policy.ALLOWED_IMPORTS  # what the child preloads
    prompt = prompts.system_prompt()
    assert all(name in prompt for name in policy.ALLOWED_IMPORTS)


def test_every_allowlisted_module_passes_the_lint_and_imports_in_the_sandbox():
    imports = "\n".join(f"import {m} as m{i}" for i, m in enumerate(sorted(policy.ALLOWED_IMPORTS))
                        if m != "__future__")
    src = "from __future__ import annotations\n" + source(imports)
    assert check_source(src).class_name == "Probe"
    out = run_candidate(src, DATA, [0.5], [0], LIMITS)
    assert out.ok, out.failure


@pytest.mark.parametrize("imports", ["import os", "from mlflow_autotts import controllers",
                                     "import mlflow_autotts.data.trajectory as t", "import importlib"])
def test_a_module_outside_the_allowlist_is_refused_by_the_lint_and_by_the_sandbox(imports):
    src = source(imports)
    with pytest.raises(ProposalError):
        check_source(src)
    out = run_candidate(src, DATA, [0.5], [0], LIMITS)
    assert out.failure.kind == "forbidden" and "not allowed" in out.failure.message


@pytest.mark.parametrize("body, expected", [
    ("g = getattr\nreturn g(episode, 'question')", "getattr() may only be called directly"),
    ("import random\nf = [getattr][0]\nreturn str(f(random, '_os'))", "getattr() may only be called directly"),
    ("import operator\nreturn str(operator.attrgetter('_os')(episode))", "attrgetter() of '_os'"),
    ("import operator\nname = 'x'\nreturn str(operator.attrgetter(name)(episode))", "literal attribute name"),
    ("import operator\nreturn str(operator.methodcaller('_send', -3)(episode))", "methodcaller() of '_send'"),
    ("import random\nreturn '{0._os.environ}'.format(random)", "format field"),
    ("import enum\nalias = enum\nreturn str(alias.bltns)", "attribute 'bltns'"),
    ("import statistics\ns = statistics\nreturn str(s.sys)", "attribute 'sys'"),
])
def test_the_lint_rejects_attribute_routes_built_at_run_time(body, expected):
    with pytest.raises(ProposalError) as err:
        check_source(source("", body))
    assert err.value.kind == "check" and expected in err.value.message


def test_the_lint_is_not_the_guard_a_source_it_accepts_is_stopped_at_run_time():
    # aliasing a package hides its submodule from a static check; the audit hook does not care
    src = source("import mlflow_autotts.controllers as pkg",
                 "alias = pkg\nreturn alias.loading.Path('/etc/hostname').read_text()")
    assert check_source(src).class_name == "Probe"
    out = run_candidate(src, DATA, [0.5], [0], LIMITS)
    assert out.failure.kind == "forbidden" and "open" in out.failure.message
