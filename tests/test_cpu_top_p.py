"""The engine's top-p without a vocabulary sort keeps exactly the tokens vLLM's own keeps.

Compared with vLLM's stock ``apply_top_k_top_p_pytorch`` on random logits (hypothesis):
peaked and flat rows, nuclei inside and beyond the candidates, greedy rows (p = 1), and
logits rounded to half precision so that equal logits straddle the nucleus's edge. The
engine-level check (a real engine samples the same tokens either way) is in
``test_live_vllm.py``.
"""

from __future__ import annotations

from types import SimpleNamespace

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.live_fixtures import _require_vllm


@pytest.fixture(scope="module")
def ops():
    """torch, this project's top-p and vLLM's stock one (vLLM and torch are test dependencies)."""
    _require_vllm()
    import torch
    from vllm.v1.sample.ops import topk_topp_sampler

    from mlflow_autotts.live.backends import cpu_top_p

    return SimpleNamespace(torch=torch, cpu_top_p=cpu_top_p, module=topk_topp_sampler,
                           stock=topk_topp_sampler.apply_top_k_top_p_pytorch)


def _logits(ops, seed: int, rows: int, vocab: int, scale: float, peak: int, half: bool):
    torch = ops.torch
    gen = torch.Generator().manual_seed(seed)
    logits = torch.randn(rows, vocab, generator=gen) * scale
    logits[:, : min(peak, vocab)] += scale * 3  # a few likely tokens over a long tail
    return logits.half().float() if half else logits


@settings(max_examples=250, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(seed=st.integers(0, 2**31 - 1), rows=st.integers(1, 12), vocab=st.integers(2, 6000),
       scale=st.floats(0.05, 25.0), peak=st.integers(0, 80), half=st.booleans(),
       ps=st.lists(st.one_of(st.floats(0.01, 0.999), st.just(1.0)), min_size=12, max_size=12))
def test_top_p_keeps_the_tokens_vllms_sort_keeps(ops, seed, rows, vocab, scale, peak, half, ps):
    logits = _logits(ops, seed, rows, vocab, scale, peak, half)
    p = ops.torch.tensor(ps[:rows], dtype=ops.torch.float32)
    expected = ops.stock(logits.clone(), None, p)
    got = ops.cpu_top_p.top_p(logits.clone(), None, p, ops.stock)
    assert ops.torch.equal(got, expected)


def test_a_vocabulary_sized_batch_is_exact_and_rows_beyond_the_candidates_take_the_stock_path(ops):
    torch = ops.torch
    logits = torch.cat([_logits(ops, 1, 32, 49152, 4.0, 20, False),  # nuclei inside 64 candidates
                        _logits(ops, 2, 16, 49152, 0.3, 0, False),  # flat: the nucleus is thousands
                        _logits(ops, 3, 16, 49152, 6.0, 40, True)])  # ties at the edge
    p = torch.full((64,), 0.95)
    p[::7] = 1.0
    calls = []

    def counting_stock(x, k, q):
        calls.append(x.shape[0])
        return ops.stock(x, k, q)

    expected = ops.stock(logits.clone(), None, p)
    assert torch.equal(ops.cpu_top_p.top_p(logits.clone(), None, p, counting_stock), expected)
    kept = (~torch.isinf(expected)).sum(dim=1)
    assert (kept[:32] < 64).any() and (kept[32:48] > max(ops.cpu_top_p.CANDIDATES)).all()
    assert 0 < sum(calls) < 64  # only rows the candidates cannot settle are sorted


def test_top_k_and_no_filter_are_left_to_vllm(ops):
    torch = ops.torch
    logits = _logits(ops, 4, 4, 500, 2.0, 5, False)
    k = torch.tensor([5, 50, 500, 1])
    p = torch.full((4,), 0.9)
    marker = object()
    assert ops.cpu_top_p.top_p(logits, k, p, lambda *a: marker) is marker
    assert ops.cpu_top_p.top_p(logits, None, None, lambda *a: marker) is marker


def test_install_swaps_vllms_function_once_and_stock_sampler_restores_it(ops):
    assert ops.cpu_top_p.install() and ops.cpu_top_p.install()  # idempotent
    patched = ops.module.apply_top_k_top_p
    assert getattr(patched, "_autotts", False)
    with ops.cpu_top_p.stock_sampler():
        assert not getattr(ops.module.apply_top_k_top_p, "_autotts", False)
    assert ops.module.apply_top_k_top_p is patched


def test_install_leaves_an_unknown_sampler_or_a_non_cpu_platform_alone(ops, monkeypatch):
    assert ops.cpu_top_p.install()
    stock = ops.cpu_top_p._stock  # vLLM's own function

    def other(logits, k, p, extra):  # a vLLM whose function changed shape
        return logits

    monkeypatch.setattr(ops.module, "apply_top_k_top_p", other)
    assert not ops.cpu_top_p.install() and ops.module.apply_top_k_top_p is other
    monkeypatch.setattr(ops.module, "apply_top_k_top_p", stock)
    monkeypatch.setattr(ops.module, "current_platform", SimpleNamespace(is_cpu=lambda: False))
    assert not ops.cpu_top_p.install() and ops.module.apply_top_k_top_p is stock


def test_the_vllm_plugin_installs_only_when_the_process_asks_for_it(ops, monkeypatch):
    calls = []
    monkeypatch.setattr(ops.cpu_top_p, "install", lambda: calls.append(1) or True)
    monkeypatch.delenv(ops.cpu_top_p.PLUGIN_ENV, raising=False)
    ops.cpu_top_p.vllm_plugin()
    monkeypatch.setenv(ops.cpu_top_p.PLUGIN_ENV, "0")
    ops.cpu_top_p.vllm_plugin()
    assert calls == []
    monkeypatch.setenv(ops.cpu_top_p.PLUGIN_ENV, "1")
    ops.cpu_top_p.vllm_plugin()
    assert calls == [1]
