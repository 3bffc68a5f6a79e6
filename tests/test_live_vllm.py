"""Live generation on a real vLLM (CPU build): the in-process engine and the OpenAI server.

One engine and one server on the tiny seeded model serve the whole session (see
``live_fixtures.py``); the demo model (SmolLM2-135M) runs once, behind its own server.
"""

from __future__ import annotations

import threading
import time

import pytest

import mlflow_autotts.controllers  # noqa: F401  (registers the reference controllers)
from mlflow_autotts.controllers.loading import ControllerSpec
from mlflow_autotts.data.parquet_io import read_parquet, write_parquet
from mlflow_autotts.live.backends.base import BackendUnavailable, GenerationRequest
from mlflow_autotts.live.backends.openai_server import OpenAIServerBackend
from mlflow_autotts.live.config import LiveConfig
from mlflow_autotts.live.episode import LiveRunner
from mlflow_autotts.live.recording import record_set
from mlflow_autotts.live.server import VLLMServer, free_port
from mlflow_autotts.replay.episode import RecordingEpisode
from tests.live_fixtures import TINY_LEN

pytestmark = [pytest.mark.slow, pytest.mark.vllm]

QUESTIONS = ["Tom has 3 apples and buys 4 more. How many apples does he have?",
             "What is 7 times 8?", "A train goes 60 km/h for 2 hours. How far does it go?",
             "How many legs do 3 cats have?"]

REFERENCE = [
    ControllerSpec("sc", None, {"n": 5}),
    ControllerSpec("asc", None, {"max_samples": 6}),
    ControllerSpec("esc", None, {"max_samples": 6, "window": 2}),
    ControllerSpec("parallel_probe", None, {"chains": 4, "T": 3, "patience": 2, "warm_up": 2, "max_steps": 8}),
    ControllerSpec("cmc", 0.0),
    ControllerSpec("cmc", 0.5),
    ControllerSpec("cmc", 1.0),
    ControllerSpec("deepconf", 0.5, {"n_warmup": 2, "max_branches": 6}),  # decides on the signals
]


def tiny_config(model: str, **kw) -> LiveConfig:
    base = {"model": model, "interval_tokens": 16, "max_tokens_per_branch": 88, "max_branches": 12,
            "top_logprobs": 2, "max_model_len": TINY_LEN, "request_timeout": 120, "overall_timeout": 300}
    base.update(kw)
    return LiveConfig(**base)


@pytest.mark.parametrize("spec", REFERENCE, ids=lambda s: f"{s.ref}-{s.beta}")
def test_replaying_a_live_run_takes_the_same_actions_returns_the_same_answer_and_bills_the_same(
        spec, vllm_engine, tiny_prompts, tiny_model, tmp_path):
    runner = LiveRunner(tiny_config(tiny_model, lookahead=4), backend=vllm_engine, prompts=tiny_prompts)
    live = [runner.solve(spec.build(), q) for q in QUESTIONS[:2]]
    ts = record_set([(r.episode, "7") for r in live], benchmark="tiny")
    write_parquet(ts, tmp_path / "recording.parquet")
    loaded = read_parquet(tmp_path / "recording.parquet")
    assert loaded.provenance.sampling["unfinished"] == ts.provenance.sampling["unfinished"]
    for result, problem in zip(live, loaded.problems):
        replay = RecordingEpisode(problem.branches)
        answer = spec.build().solve(replay)
        assert replay.actions == result.episode.actions
        assert answer == result.answer
        assert replay.tokens_used == result.stats.billed_tokens > 0
        assert result.stats.generated_tokens >= result.stats.billed_tokens


def test_sequential_and_lookahead_runs_agree_and_lookahead_needs_fewer_engine_calls(
        vllm_engine, tiny_prompts, tiny_model):
    spec = ControllerSpec("parallel_probe", None, {"chains": 4, "T": 3, "patience": 2, "warm_up": 2, "max_steps": 8})
    runs = {}
    for lookahead in (1, 4):
        runner = LiveRunner(tiny_config(tiny_model, lookahead=lookahead), backend=vllm_engine, prompts=tiny_prompts)
        runs[lookahead] = runner.solve(spec.build(), QUESTIONS[0])
    seq, ahead = runs[1], runs[4]
    # seeds are per (branch, interval): the same branches whatever the batching
    assert [b.ids for b in ahead.episode.branches[: seq.stats.branches_opened]] == [b.ids for b in seq.episode.branches]
    assert ahead.episode.actions == seq.episode.actions and ahead.answer == seq.answer
    assert ahead.stats.billed_tokens == seq.stats.billed_tokens == seq.stats.generated_tokens
    assert ahead.stats.generation_calls * 2 <= seq.stats.generation_calls


def test_branches_end_at_eos_or_at_the_limit_and_probes_reuse_the_prefix_cache(vllm_engine, tiny_prompts, tiny_model):
    runner = LiveRunner(tiny_config(tiny_model, lookahead=8), backend=vllm_engine, prompts=tiny_prompts)
    result = runner.solve(ControllerSpec("sc", None, {"n": 8}).build(), QUESTIONS[2])
    branches = result.episode.branches[: result.stats.branches_opened]  # read whole: all finished
    eos = next(iter(tiny_prompts.eos_ids))
    assert len(branches) == 8 and all(b.finished for b in branches)
    assert any(len(b.ids) < 88 for b in branches), "the tiny model ends some branches early"
    for b in branches:
        assert len(b.ids) == 88 or b.ids[-1] == eos
        assert b.final is not None
    stats = result.stats
    assert stats.cached_prompt_tokens > stats.prompt_tokens / 2  # continuations and probes hit the cache


def test_one_seed_per_request_identical_seeds_identical_samples(vllm_engine, tiny_prompts):
    prompt = tuple(tiny_prompts.question_ids(QUESTIONS[0]))
    reqs = [GenerationRequest(prompt, 24, temperature=0.7, top_p=0.95, seed=s) for s in (1, 1, 2)]
    a, b, c = vllm_engine.generate(reqs, timeout=60)
    assert a.token_ids == b.token_ids != c.token_ids


def test_questions_from_several_threads_are_batched_together_by_the_engine(vllm_engine, tiny_prompts, tiny_model):
    runner = LiveRunner(tiny_config(tiny_model, lookahead=1), backend=vllm_engine, prompts=tiny_prompts)
    before = dict(vllm_engine.batch_sizes)
    results: dict[int, object] = {}

    def ask(k: int) -> None:
        results[k] = runner.solve(ControllerSpec("cmc", 0.5).build(), QUESTIONS[k])

    threads = [threading.Thread(target=ask, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=300)
    assert sorted(results) == [0, 1, 2, 3]
    new = {size: n - before.get(size, 0) for size, n in vllm_engine.batch_sizes.items()}
    # every question runs one request at a time (lookahead 1): larger batches are cross-question
    assert max(size for size, n in new.items() if n > 0) >= 3


def test_a_batch_over_its_timeout_raises_BackendUnavailable_and_is_aborted(vllm_engine, tiny_prompts):
    prompt = tuple(tiny_prompts.question_ids(QUESTIONS[1]))
    with pytest.raises(BackendUnavailable, match="did not answer"):
        vllm_engine.generate([GenerationRequest(prompt, 600, temperature=0.7, seed=s) for s in range(8)], timeout=0.05)
    ok = vllm_engine.generate([GenerationRequest(prompt, 4)], timeout=60)
    assert len(ok[0].token_ids) == 4


def test_the_server_backend_drives_the_same_episode_and_reports_cache_hits(vllm_server, tiny_prompts, tiny_model):
    backend = OpenAIServerBackend(vllm_server.base_url, tiny_model, timeout=60)
    try:
        cfg = tiny_config(tiny_model, backend="openai", base_url=vllm_server.base_url, lookahead=4)
        runner = LiveRunner(cfg, backend=backend, prompts=tiny_prompts)
        spec = ControllerSpec("cmc", 0.5)
        result = runner.solve(spec.build(), QUESTIONS[0])
        replay = RecordingEpisode(record_set([(result.episode, "7")]).problems[0].branches)
        assert spec.build().solve(replay) == result.answer
        assert replay.actions == result.episode.actions and replay.tokens_used == result.stats.billed_tokens
        assert result.stats.cached_prompt_tokens > 0

        def ask(k, out):
            out[k] = runner.solve(ControllerSpec("sc", None, {"n": 3}).build(), QUESTIONS[k])

        out: dict = {}
        threads = [threading.Thread(target=ask, args=(k, out)) for k in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=300)
        assert sorted(out) == [0, 1, 2, 3] and all(r.stats.billed_tokens > 0 for r in out.values())
    finally:
        backend.close()


def test_a_server_that_is_down_raises_BackendUnavailable_quickly(tiny_prompts, tiny_model):
    url = f"http://127.0.0.1:{free_port()}/v1"
    backend = OpenAIServerBackend(url, tiny_model, timeout=5, max_retries=0)
    try:
        runner = LiveRunner(tiny_config(tiny_model, backend="openai", base_url=url), backend=backend,
                            prompts=tiny_prompts)
        t0 = time.monotonic()
        with pytest.raises(BackendUnavailable, match="cannot reach"):
            runner.solve(ControllerSpec("cmc", 0.5).build(), QUESTIONS[0])
        assert time.monotonic() - t0 < 5
    finally:
        backend.close()


def test_the_demo_model_follows_its_chat_template_and_a_probe_answers_with_a_number(demo_model, tmp_path):
    from tests.live_fixtures import _require_vllm

    _require_vllm()
    with VLLMServer(demo_model, tmp_path / "demo.log", max_model_len=2048) as server:
        cfg = LiveConfig(model=demo_model, backend="openai", base_url=server.base_url, interval_tokens=48,
                         max_tokens_per_branch=96, max_branches=4, lookahead=4, request_timeout=120)
        with LiveRunner(cfg) as runner:
            prompt = runner.prompts.decode(runner.prompts.question_ids("What is 6 times 3?"))
            assert "SmolLM" in prompt and "What is 6 times 3?" in prompt  # the model's own template
            result = runner.solve(ControllerSpec("parallel_probe", None, {"chains": 2, "T": 1, "warm_up": 0,
                                                                           "max_steps": 1}).build(),
                                  "What is 6 times 3?")
    probes = [a for b in result.episode.branches for a in b.probes.values()]
    assert probes and all(any(ch.isdigit() for ch in a) for a in probes)
    assert result.stats.cached_prompt_tokens > 0


def test_the_engines_top_p_samples_the_same_tokens_as_vllms_stock_sampler(vllm_engine, tiny_prompts, monkeypatch):
    from mlflow_autotts.live.backends import cpu_top_p  # torch-heavy, like the engine

    assert vllm_engine.fast_top_p  # a CPU engine installs it
    calls = []
    ours = cpu_top_p.top_p
    monkeypatch.setattr(cpu_top_p, "top_p", lambda *a: calls.append(1) or ours(*a))
    prompt = tuple(tiny_prompts.question_ids(QUESTIONS[1]))
    reqs = [GenerationRequest(prompt, 48, temperature=t, top_p=p, seed=s, ignore_eos=True)
            for s, (t, p) in enumerate([(0.7, 0.95), (1.0, 0.9), (1.5, 0.5), (0.0, 1.0)] * 4)]
    fast = vllm_engine.generate(reqs, timeout=120)
    used = len(calls)
    assert used >= 48  # the engine's sampler ran it at every step
    with cpu_top_p.stock_sampler():
        stock = vllm_engine.generate(reqs, timeout=120)
    assert len(calls) == used  # and vLLM's own while swapped back
    assert [g.token_ids for g in fast] == [g.token_ids for g in stock]
    assert len({g.token_ids for g in fast}) > 8  # the seeds and settings do sample differently


def test_a_vllm_server_samples_top_p_without_the_sort_through_the_plugin(vllm_server):
    # VLLMServer passes AUTOTTS_CPU_TOP_P=1; vLLM loads the entry point in its engine process
    log = vllm_server.log_path.read_text(encoding="utf-8", errors="replace")
    assert "autotts: top-p without a vocabulary sort installed" in log
