"""The promotion gate decides without MLflow: its rule, decision, tags text, description and
table from two fake sides, its settings' bounds, and one replay of built-ins on toy data.
The registry around it (aliases, tags written, exit codes) is tests/test_registry_promote.py."""

from __future__ import annotations

import re
import subprocess
import sys
import textwrap

import pytest

from mlflow_autotts.controllers.loading import ControllerSpec
from mlflow_autotts.errors import AutoTTSError
from mlflow_autotts.promotion.gate import (GATE_TAG, REPORT_END, GateConfig, GateEntry, GateSide, decide, description,
                                           gate, gate_table, gate_tags, judge)
from mlflow_autotts.replay.results import EvalResult
from tests.helpers import random_set

DATA = ("M/a", "M/b")


def side(version: str, alias: str, numbers: list[tuple[float, float]], controller: str = "cmc") -> GateSide:
    """A version's gate side with the given (accuracy %, mean tokens) per dataset of ``DATA``."""
    results = [EvalResult(d, 0.5, acc, tok, controller=controller, shuffles=3) for d, (acc, tok) in zip(DATA, numbers)]
    return GateSide("autotts-controller", version, alias, controller, results)


def test_the_decision_is_made_without_mlflow():
    code = textwrap.dedent("""
        import sys
        from mlflow_autotts.promotion.gate import GateConfig, GateSide, decide, gate_table, judge
        from mlflow_autotts.replay.results import EvalResult

        def side(version, acc, tok):
            return GateSide("m", version, "a", "cmc", [EvalResult("M/a", 0.5, acc, tok)])

        decision = judge(side("2", 50.0, 900.0), side("1", 50.0, 1000.0), "champion", GateConfig())
        assert decision.passed, decision.reason
        gate_table(decision)
        assert decide(side("2", 40.0, 100.0), side("1", 50.0, 1000.0), GateConfig())[0] is False
        assert "mlflow" not in sys.modules, sorted(m for m in sys.modules if m.startswith("mlflow."))
        print("decided")
    """)
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0 and proc.stdout.strip() == "decided", proc.stdout + proc.stderr


def test_first_promotion_passes_with_the_candidates_numbers():
    passed, reason = decide(side("1", "challenger", [(40.0, 1000.0), (60.0, 3000.0)]), None, GateConfig())
    assert passed and reason == "no incumbent: first promotion (accuracy 50.00%, 2,000 tokens)"


def test_equal_numbers_pass_and_each_broken_limit_is_named_with_its_numbers():
    inc = side("1", "champion", [(40.0, 1000.0), (60.0, 3000.0)])
    assert decide(side("2", "challenger", [(40.0, 1000.0), (60.0, 3000.0)]), inc, GateConfig())[0]

    passed, reason = decide(side("2", "challenger", [(30.0, 1000.0), (60.0, 3000.0)]), inc, GateConfig())
    assert not passed and reason == "accuracy 45.00% < 50.00% (incumbent 50.00% - 0)"

    passed, reason = decide(side("2", "challenger", [(40.0, 1000.0), (60.0, 3400.0)]), inc,
                            GateConfig(max_token_ratio=1.1))
    assert passed and reason.endswith("tokens 2,200 <= 2,200 (1.1 x incumbent 2,000)")  # at the limit

    passed, reason = decide(side("2", "challenger", [(40.0, 1000.0), (60.0, 3600.0)]), inc,
                            GateConfig(max_token_ratio=1.1))
    assert not passed and reason == "tokens 2,300 > 2,200 (1.1 x incumbent 2,000)"

    passed, reason = decide(side("2", "challenger", [(30.0, 1000.0), (60.0, 6000.0)]), inc,
                            GateConfig(max_accuracy_drop=4.0, max_token_ratio=1.5))
    assert not passed and reason == ("accuracy 45.00% < 46.00% (incumbent 50.00% - 4); "
                                     "tokens 3,500 > 3,000 (1.5 x incumbent 2,000)")


def test_a_looser_rule_lets_a_cheaper_weaker_candidate_through():
    inc = side("1", "champion", [(40.0, 1000.0), (60.0, 3000.0)])
    cand = side("2", "challenger", [(38.0, 500.0), (59.0, 1500.0)])
    passed, reason = decide(cand, inc, GateConfig(max_accuracy_drop=2.0))
    assert passed
    assert reason == ("accuracy 48.50% >= 48.00% (incumbent 50.00% - 2); "
                      "tokens 1,000 <= 2,000 (1 x incumbent 2,000)")


def test_tags_are_four_short_rounded_values_and_the_table_says_what_was_decided():
    inc = side("1", "champion", [(40.0, 1000.0), (60.0, 3000.0)])
    cand = side("2", "challenger", [(50.0, 900.0), (70.0, 2000.0)], controller="sc")
    decision = judge(cand, inc, "champion", GateConfig(shuffles=3), list(DATA), ["abc", "def"])
    assert decision.passed and decision.target_alias == "champion"

    assert gate_tags(cand, inc, decision, "candidate") == {
        f"{GATE_TAG}.decision": "promoted", f"{GATE_TAG}.accuracy": "60.00%", f"{GATE_TAG}.tokens": "1,450",
        f"{GATE_TAG}.gain": "+10.00 pts, 0.72x tokens vs v1"}
    assert gate_tags(inc, cand, decision, "incumbent") == {
        f"{GATE_TAG}.decision": "replaced", f"{GATE_TAG}.accuracy": "50.00%", f"{GATE_TAG}.tokens": "2,000",
        f"{GATE_TAG}.gain": "-10.00 pts, 1.38x tokens vs v2"}
    refused = judge(inc, cand, "champion", GateConfig())  # the other way round: more tokens, less accurate
    assert gate_tags(inc, cand, refused, "candidate")[f"{GATE_TAG}.decision"] == "refused"
    assert gate_tags(cand, inc, refused, "incumbent")[f"{GATE_TAG}.decision"] == "kept"
    assert gate_tags(cand, None, judge(cand, None, "champion", GateConfig()), "candidate")[f"{GATE_TAG}.gain"] == \
        "first promotion"
    for tags in (gate_tags(cand, inc, decision, "candidate"), gate_tags(inc, cand, decision, "incumbent")):
        assert max(len(v) for v in tags.values()) <= 40  # the registry's tag column is narrow
    with pytest.raises(ValueError, match="role must be candidate or incumbent"):
        gate_tags(cand, inc, decision, "challenger")

    table = gate_table(decision).splitlines()
    assert table[0].split() == ["data", "candidate", "v2", "(sc)", "acc", "%", "tokens", "incumbent", "v1", "(cmc)",
                                "acc", "%", "tokens", "Δacc", "token", "ratio"]
    assert table[2].split() == ["M/a", "50.00", "900", "40.00", "1,000", "+10.00", "0.900"]
    assert table[4].split() == ["mean", "60.00", "1,450", "50.00", "2,000", "+10.00", "0.725"]
    alone = gate_table(judge(cand, None, "champion", GateConfig())).splitlines()
    assert alone[0].split() == ["data", "candidate", "v2", "(sc)", "acc", "%", "tokens"]


def test_the_description_is_the_full_report_in_markdown_above_what_the_version_said():
    inc = side("1", "champion", [(40.0, 1000.0), (60.0, 3000.0)])
    cand = side("2", "challenger", [(50.0, 900.0), (70.0, 2000.0)], controller="sc")
    decision = judge(cand, inc, "champion", GateConfig(shuffles=3), list(DATA), ["abc", "def"])
    run = ("gate-autotts-controller-v2", "#/experiments/7/runs/r1?workflowType=machine_learning")
    plot = "get-artifact?path=gate.png&run_uuid=r1"
    text = description(decision, "**Search winner** of a search.", run, plot, when="2025-01-01T00:00:00+00:00")
    lines = text.splitlines()
    assert lines[0] == "### Gate: v2 promoted to `@champion`, replacing v1"
    assert lines[2:9] == [
        "| data | candidate v2 accuracy | tokens | incumbent v1 accuracy | tokens | Δ accuracy | token ratio |",
        "|---|--:|--:|--:|--:|--:|--:|",
        "| M/a | 50.00% | 900 | 40.00% | 1,000 | +10.00 pts | 0.900 |",
        "| M/b | 70.00% | 2,000 | 60.00% | 3,000 | +10.00 pts | 0.667 |",
        "| **mean** | 60.00% | 1,450 | 50.00% | 2,000 | +10.00 pts | 0.725 |",
        "",
        "- **Versions:** v2 `sc` against v1 `cmc`",
    ]
    assert f"- **Rule:** {GateConfig().rule}" in lines and f"- **Decision:** {decision.reason}" in lines
    assert "- **Data:** M/a (`abc`), M/b (`def`); 3 shuffles" in lines
    assert (f"- **Gate run:** [{run[0]}]({run[1]}): every number as a metric, the data as inputs, "
            "the plot below") in lines
    assert f"![accuracy against tokens, both versions, with the rule's limits]({plot})" in lines
    assert "- **Decided:** 2025-01-01T00:00:00+00:00 by the autotts gate" in lines
    assert text.index(REPORT_END) < text.index("**Search winner** of a search.")
    assert not re.search(r"(^|\s)@\w", text)  # MLflow's UI would render an @name as a link to a GitHub user

    # gated again (refused this time): the new report replaces the old one, the rest stays once
    worse = side("2", "challenger", [(30.0, 900.0), (40.0, 2000.0)], controller="sc")
    again = description(judge(worse, inc, "champion", GateConfig()), text, run, plot)
    assert again.startswith("### Gate: v2 refused; `@champion` stays on v1\n")
    assert again.count(REPORT_END) == 1 and again.count("**Search winner** of a search.") == 1
    assert again.count("### Gate") == 1
    first = description(judge(cand, None, "champion", GateConfig()), None)
    assert first.startswith("### Gate: v2 promoted to `@champion`\n") and "Gate run" not in first
    assert first.rstrip().endswith(REPORT_END)
    # a cell never breaks the table
    piped = side("3", "challenger", [(50.0, 900.0), (70.0, 2000.0)])
    piped.results[0] = EvalResult("M|a", 0.5, 50.0, 900.0, controller="cmc", shuffles=3)
    assert "| M\\|a | 50.00% |" in description(judge(piped, None, "champion", GateConfig()), None)


@pytest.mark.parametrize("kwargs, message", [
    ({"max_accuracy_drop": float("inf")}, "--max-accuracy-drop must be a finite number, got inf"),
    ({"max_accuracy_drop": float("nan")}, "--max-accuracy-drop must be a finite number, got nan"),
    ({"max_token_ratio": float("inf")}, "--max-token-ratio must be a positive number, got inf"),
    ({"max_token_ratio": 0.0}, "--max-token-ratio must be > 0, got 0.0"),
    ({"max_token_ratio": -1.5}, "--max-token-ratio must be > 0, got -1.5"),
    ({"shuffles": 0}, "--shuffles must be >= 1, got 0"),
    ({"workers": 0}, "--workers must be >= 1, got 0"),
])
def test_gate_settings_out_of_range_are_refused_with_the_option_named(kwargs, message):
    with pytest.raises(AutoTTSError) as exc:
        GateConfig(**kwargs)
    assert str(exc.value) == message


def test_the_gate_replays_both_versions_on_the_same_data_and_once_when_they_are_one():
    data = [random_set(n_problems=4, n_branches=8, seed=3, name="Synth/gate")]
    config = GateConfig(shuffles=2, workers=1, progress=False, max_token_ratio=100.0, max_accuracy_drop=100.0)
    cand = GateEntry("2", "challenger", ControllerSpec("sc", None, {"n": 2}))
    inc = GateEntry("1", "champion", ControllerSpec("sc", None, {"n": 4}))
    decision = gate("m", cand, inc, "champion", data, config, ["d1"])
    assert decision.passed and decision.datasets == ["Synth/gate"] and decision.digests == ["d1"]
    assert (decision.candidate.version, decision.candidate.alias) == ("2", "challenger")
    assert (decision.incumbent.version, decision.incumbent.alias) == ("1", "champion")
    assert decision.candidate.mean_tokens < decision.incumbent.mean_tokens  # 2 branches read, not 4

    again = gate("m", cand, cand, "champion", data, config)
    assert again.incumbent is again.candidate and again.passed
    first = gate("m", cand, None, "champion", data, config)
    assert first.incumbent is None and first.reason.startswith("no incumbent")
