"""DeepConf signals: token confidence, interval means and sliding-window group confidence."""

from __future__ import annotations

import math
import subprocess
import sys

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mlflow_autotts.live.signals import (
    CONFIDENCE,
    GROUP_CONFIDENCE,
    LOGPROB_FLOOR,
    TokenConfidences,
    branch_interval_signals,
    interval_signals,
    token_confidence,
)

confs = st.lists(st.floats(0.0, 30.0, allow_nan=False), min_size=1, max_size=80)
sizes = st.integers(1, 12)


def brute(conf, interval, k, window):
    """The definition, spelled out: every window ending inside interval k."""
    lo, hi = (k - 1) * interval, min(k * interval, len(conf))
    windows = [conf[max(0, t - window + 1): t + 1] for t in range(lo, hi)]
    return sum(conf[lo:hi]) / (hi - lo), min(sum(w) / len(w) for w in windows)


def intervals(n, interval):
    return range(1, (n - 1) // interval + 2)


@given(confs, sizes, sizes)
def test_both_signals_equal_the_brute_force_definition(conf, interval, window):
    for k in intervals(len(conf), interval):
        got = interval_signals(conf, interval, k, window)
        mean, group = brute(conf, interval, k, window)
        assert got[CONFIDENCE] == pytest.approx(mean, abs=1e-9)
        assert got[GROUP_CONFIDENCE] == pytest.approx(group, abs=1e-9)


@given(confs, sizes, st.integers(1, 5), sizes)
def test_group_confidence_does_not_depend_on_where_intervals_cut(conf, interval, m, window):
    fine = branch_interval_signals(conf, interval, window)[GROUP_CONFIDENCE]
    coarse = branch_interval_signals(conf, interval * m, window)[GROUP_CONFIDENCE]
    # a coarse interval is m fine ones: its lowest window is theirs, to the bit
    assert coarse == [min(fine[j: j + m]) for j in range(0, len(fine), m)]
    assert min(coarse) == min(fine) == min(branch_interval_signals(conf, 1, window)[GROUP_CONFIDENCE])


@given(confs, sizes, sizes)
def test_signals_lie_within_the_values_they_average(conf, interval, window):
    for k in intervals(len(conf), interval):
        lo, hi = (k - 1) * interval, min(k * interval, len(conf))
        got = interval_signals(conf, interval, k, window)
        seen = conf[max(0, lo - window + 1): hi]  # every token some window ending here holds
        assert min(conf[lo:hi]) - 1e-9 <= got[CONFIDENCE] <= max(conf[lo:hi]) + 1e-9
        assert min(seen) - 1e-9 <= got[GROUP_CONFIDENCE] <= max(seen) + 1e-9
        last = conf[max(0, hi - window): hi]
        assert got[GROUP_CONFIDENCE] <= sum(last) / len(last) + 1e-9  # the interval's last window is one of them


@given(confs, st.lists(st.integers(1, 9), min_size=1), sizes, sizes)
def test_growing_branch_and_whole_branch_give_identical_floats(conf, chunks, interval, window):
    grown = TokenConfidences()
    pos = 0
    for c in chunks * len(conf):  # tokens arrive in chunks, as engine calls return them
        grown.extend(conf[pos: pos + c])
        pos += c
        if pos >= len(conf):
            break
    assert list(grown) == conf and len(grown) == len(conf)
    at_once = branch_interval_signals(conf, interval, window)
    for k in intervals(len(conf), interval):
        live = interval_signals(grown, interval, k, window)
        assert live == interval_signals(conf, interval, k, window)
        assert live == {name: at_once[name][k - 1] for name in (CONFIDENCE, GROUP_CONFIDENCE)}


def test_a_short_branch_uses_the_tokens_so_far_and_windows_reach_back_across_intervals():
    conf = [4.0, 2.0, 6.0, 8.0, 1.0, 9.0]
    # window 4, interval 2: interval 1's windows are [4], [4, 2]; interval 3 reaches back to token 2
    assert interval_signals(conf, 2, 1, 4) == {CONFIDENCE: 3.0, GROUP_CONFIDENCE: 3.0}
    # windows [2, 6, 8, 1] and [6, 8, 1, 9]
    assert interval_signals(conf, 2, 3, 4) == {CONFIDENCE: 5.0, GROUP_CONFIDENCE: 4.25}
    assert branch_interval_signals(conf, 4, 4) == {CONFIDENCE: [5.0, 5.0], GROUP_CONFIDENCE: [3.0, 4.25]}


@given(st.lists(st.floats(-50.0, 0.0, allow_nan=False), min_size=1, max_size=20))
def test_token_confidence_is_minus_the_mean_logprob(lps):
    assert token_confidence(lps) == pytest.approx(-sum(lps) / len(lps))
    assert token_confidence(lps) >= 0.0


def test_token_confidence_edge_cases():
    assert token_confidence([]) == 0.0 and str(token_confidence([0.0, 0.0])) == "0.0"
    assert token_confidence([-0.5, -1.5]) == 1.0
    # -inf (in-process vLLM) and the server's -9999.0 give the same, finite value
    assert token_confidence([0.0, -math.inf]) == token_confidence([0.0, LOGPROB_FLOOR]) == 9999.0 / 2
    assert math.isfinite(token_confidence([math.nan]))


@pytest.mark.parametrize("call, message", [
    (lambda: interval_signals([1.0] * 5, 2, 4, 3), "interval 4 has no tokens: the branch has 5 tokens"),
    (lambda: interval_signals([1.0] * 5, 2, 0, 3), "k must be an int >= 1"),
    (lambda: interval_signals([1.0] * 5, 0, 1, 3), "interval must be an int >= 1"),
    (lambda: branch_interval_signals([1.0], 2, 0), "window must be an int >= 1"),
    (lambda: interval_signals([1.0, math.nan], 2, 1, 3), "token confidence 1 is nan"),
    (lambda: TokenConfidences([1.0, 2.0]).extend([math.inf]), "token confidence 2 is inf"),
])
def test_bad_input_is_a_value_error_naming_it(call, message):
    with pytest.raises(ValueError, match=message):
        call()


def test_an_empty_branch_has_no_intervals():
    assert branch_interval_signals([], 500, 2048) == {CONFIDENCE: [], GROUP_CONFIDENCE: []}


def test_importing_the_signals_loads_no_engine():
    code = ("import sys, mlflow_autotts.live.signals; "
            "print(sorted(m for m in ('vllm', 'torch', 'numpy', 'transformers') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
