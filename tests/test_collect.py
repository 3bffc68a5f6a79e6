"""``collect`` without a model: question files, the work folder, resume and publication,
on the scripted backend (exact and fast). The real-vLLM runs are in test_collect_vllm.py."""

from __future__ import annotations

import json
import threading
import time
from dataclasses import replace
from pathlib import Path

import pandas as pd
import pytest
import yaml

from click.testing import CliRunner

from mlflow_autotts import settings
from mlflow_autotts.cli.main import main
from mlflow_autotts.collect.config import CollectConfig, CollectConfigError
from mlflow_autotts.collect.questions import QuestionFileError, read_questions
from mlflow_autotts.collect.endpoints import WorkQueue
from mlflow_autotts.collect.run import CollectError, EndpointWarning, collect
from mlflow_autotts.collect.shards import SERVED, ResumeError, work_dir
from mlflow_autotts.controllers.baselines import SelfConsistency
from mlflow_autotts.data.arithmetic import arithmetic_questions, sum_questions
from mlflow_autotts.data.parquet_io import read_parquet
from mlflow_autotts.live.backends.base import BackendError, Generation
from mlflow_autotts.live.collection import collection_config
from mlflow_autotts.live.config import LiveConfig
from mlflow_autotts.live.episode import LiveRunner
from mlflow_autotts.replay.episode import ReplayEpisode
from mlflow_autotts.tracking.collect_run import collect_params
from tests.helpers import COLLECT_LENGTHS, COLLECT_QUESTIONS, FailAfter, collect_config, write_jsonl
from tests.live_fixtures import ScriptedBackend, char_prompts


def scripted() -> ScriptedBackend:
    return ScriptedBackend(COLLECT_LENGTHS, interval=4)


# ------------------------------------------------------------------ question files
@pytest.mark.parametrize("suffix", [".jsonl", ".csv", ".parquet"])
def test_question_files_of_each_format_read_alike(tmp_path, suffix):
    df = pd.DataFrame({"problem": ["Q one", "Q two"], "solution": [7, 12]})
    path = tmp_path / f"q{suffix}"
    if suffix == ".jsonl":
        df.to_json(path, orient="records", lines=True)
    elif suffix == ".csv":
        df.to_csv(path, index=False)
    else:
        df.to_parquet(path)
    qf = read_questions(path, "problem", "solution")
    assert [(q.text, q.gold) for q in qf.questions] == [("Q one", "7"), ("Q two", "12")]
    assert len(qf.sha256) == 64
    assert [q.text for q in read_questions(path, "problem", "solution", limit=1).questions] == ["Q one"]


def test_question_file_errors_name_the_file_and_what_is_wrong(tmp_path):
    path = write_jsonl(tmp_path / "q.jsonl", [{"prompt": "x", "answer": "1"}])
    with pytest.raises(QuestionFileError, match=r"q\.jsonl: no question column 'question'; the file has columns prompt, answer"):
        read_questions(path)
    (tmp_path / "empty.csv").write_text("")
    with pytest.raises(QuestionFileError, match=r"empty\.csv: the file is empty"):
        read_questions(tmp_path / "empty.csv")
    (tmp_path / "header.csv").write_text("question,answer\n")
    with pytest.raises(QuestionFileError, match=r"header\.csv: the file holds no questions"):
        read_questions(tmp_path / "header.csv")
    bad = write_jsonl(tmp_path / "b.jsonl", [{"question": "ok", "answer": "1"}, {"question": " ", "answer": "2"}])
    with pytest.raises(QuestionFileError, match=r"b\.jsonl: row 2: empty 'question'"):
        read_questions(bad)
    with pytest.raises(QuestionFileError, match=r"unknown question file type '\.txt'"):
        read_questions(tmp_path / "q.txt")
    with pytest.raises(QuestionFileError, match="no such file"):
        read_questions(tmp_path / "nope.jsonl")
    (tmp_path / "broken.jsonl").write_text("{not json\n")
    with pytest.raises(QuestionFileError, match=r"broken\.jsonl: cannot read it as jsonl"):
        read_questions(tmp_path / "broken.jsonl")


def test_collect_settings_are_checked_before_anything_runs(tmp_path):
    with pytest.raises(CollectConfigError, match="live.lookahead is set by collection itself"):
        collect_config(tmp_path, live={"lookahead": 2})
    with pytest.raises(CollectConfigError, match="live.seed: use the seed setting"):
        collect_config(tmp_path, live={"seed": 2})
    with pytest.raises(CollectConfigError, match="live.bogus is not a live setting"):
        collect_config(tmp_path, live={"bogus": 2})
    with pytest.raises(CollectConfigError, match="top_logprobs must be <= 20, got 50"):
        collect_config(tmp_path, top_logprobs=50)
    with pytest.raises(CollectConfigError, match="output must be a .parquet file"):
        collect_config(tmp_path, output=str(tmp_path / "x.json"))


# ------------------------------------------------------------------ collection
def test_collect_writes_every_branch_probed_at_every_interval(tmp_path):
    cfg = collect_config(tmp_path)
    report = collect(cfg, backend=ScriptedBackend(COLLECT_LENGTHS, interval=4), prompts=char_prompts())
    out = Path(cfg.output)
    assert report.output == out and out.is_file() and not work_dir(out).exists()
    ts = read_parquet(out)
    assert len(ts) == len(COLLECT_QUESTIONS) and report.validation.passed
    for p, q in zip(ts.problems, COLLECT_QUESTIONS):
        br = p.branches
        assert p.question == q["question"] and p.gold_answer == q["answer"]
        assert br.branch_tokens == COLLECT_LENGTHS and br.interval_tokens == 4
        # every interval boundary before the end is probed, the final one answers
        assert br.n_probes == [(n - 1) // 4 for n in COLLECT_LENGTHS]
        assert all(a in {"1", "2", "3"} for a in br.probe_answers + br.final_answers)
        assert set(br.signals) == {"confidence", "group_confidence"}
        assert all(len(v) == len(br.probe_answers) for v in br.signals.values())
    s = ts.provenance.sampling
    assert ts.provenance.benchmark == "q" and ts.provenance.model == "scripted"
    assert s["branches"] == 4 and s["interval_tokens"] == 4 and s["top_logprobs"] == 3 and s["group_window"] == 3
    assert s["question_file_sha256"] == read_questions(cfg.questions).sha256 and len(s["chat_template_sha256"]) == 64
    t = report.totals
    assert t.questions == 5 and t.branches == 20 and t.generated_tokens == 5 * sum(COLLECT_LENGTHS)
    assert t.probe_tokens > 0 and 0 < t.cache_hit_rate < 1


def test_replay_of_the_collection_reads_back_each_branch_answer(tmp_path):
    """The controller that reads everything gets, in replay, the live episode's answers."""
    cfg = collect_config(tmp_path, limit=1)
    backend, prompts = ScriptedBackend(COLLECT_LENGTHS, interval=4), char_prompts()
    collect(cfg, backend=backend, prompts=prompts)
    problem = read_parquet(cfg.output).problems[0]
    live = LiveRunner(cfg.generation, backend=backend, prompts=prompts).solve(
        SelfConsistency(n=len(COLLECT_LENGTHS)), COLLECT_QUESTIONS[0]["question"])
    replay = ReplayEpisode(problem.branches, list(range(len(COLLECT_LENGTHS))))
    answers = [replay.get_new_branch_final_answer() for _ in COLLECT_LENGTHS]
    assert answers == [b.final for b in live.episode.branches]
    assert replay.tokens_used == live.stats.billed_tokens == sum(COLLECT_LENGTHS)
    for j, b in enumerate(live.episode.branches):
        assert problem.branches.probes(j) == [b.probes[k] for k in range(1, len(b.probes) + 1)]


class ProbeToTheEnd(SelfConsistency):
    """Opens every branch in probe mode and steps each to its end."""

    def solve(self, episode):
        for _ in range(self.n):
            _, i, done = episode.probe_new()
            while not done:
                _, done = episode.probe_more(i)


def test_collected_branches_are_those_a_probing_controller_gets(tmp_path):
    """A seed per interval: the collected branches are token for token those of a live
    controller stepping them by probes, with the same probe and final answers."""
    cfg, q = collect_config(tmp_path), COLLECT_QUESTIONS[0]["question"]
    got = LiveRunner(cfg.generation, backend=scripted(), prompts=char_prompts()).solve(
        SelfConsistency(n=len(COLLECT_LENGTHS)), q)
    assert got.stats.generation_calls == max((n - 1) // 4 + 1 for n in COLLECT_LENGTHS)  # one call per interval
    stepped = LiveRunner(cfg.generation, backend=scripted(), prompts=char_prompts()).solve(
        ProbeToTheEnd(n=len(COLLECT_LENGTHS)), q)
    for mine, theirs in zip(got.episode.branches, stepped.episode.branches):
        assert mine.ids == theirs.ids and mine.probes == theirs.probes and mine.final == theirs.final


def test_a_failed_collection_keeps_finished_questions_and_resume_finishes_without_repeating(tmp_path):
    cfg = collect_config(tmp_path, concurrency=1)
    with pytest.raises(CollectError, match=r"every endpoint failed \(in-process: scripted backend went down\); "
                                           r"2 of 5 questions are done .* --resume"):
        collect(cfg, backend=FailAfter(COLLECT_LENGTHS, interval=4, ok_calls=25), prompts=char_prompts(),
                warn=lambda m: None)
    out = Path(cfg.output)
    assert not out.exists()
    kept = sorted(p.name for p in work_dir(out).glob("q*.parquet"))
    assert 0 < len(kept) < len(COLLECT_QUESTIONS)
    with pytest.raises(ResumeError, match="pass --resume to continue it"):
        collect(cfg, backend=ScriptedBackend(COLLECT_LENGTHS, interval=4), prompts=char_prompts())
    with pytest.raises(ResumeError, match=r"cannot resume with other settings \(temperature: 0.7 then, 0.5 now\)"):
        collect(collect_config(tmp_path, concurrency=1, resume=True, temperature=0.5),
                backend=ScriptedBackend(COLLECT_LENGTHS, interval=4), prompts=char_prompts())
    manifest = next(p for p in work_dir(out).iterdir() if p.suffix == ".json")  # as written before several servers
    manifest.write_text(json.dumps({**json.loads(manifest.read_text()), "base_url": "http://127.0.0.1:9/v1"}))
    report = collect(collect_config(tmp_path, concurrency=1, resume=True), backend=scripted(), prompts=char_prompts())
    assert report.resumed == len(kept) and report.totals.questions == len(COLLECT_QUESTIONS) - len(kept)
    (tmp_path / "fresh").mkdir()
    fresh = collect_config(tmp_path / "fresh")
    collect(fresh, backend=ScriptedBackend(COLLECT_LENGTHS, interval=4), prompts=char_prompts())
    a, b = read_parquet(out), read_parquet(fresh.output)
    for pa, pb in zip(a.problems, b.problems):  # resumed = uninterrupted, question by question
        assert pa.branches.triples() == pb.branches.triples() and pa.branches.signals == pb.branches.signals


def test_an_existing_output_is_never_overwritten(tmp_path):
    cfg = collect_config(tmp_path)
    Path(cfg.output).parent.mkdir()
    Path(cfg.output).write_text("precious")
    with pytest.raises(Exception, match="already exists"):
        collect(cfg, backend=ScriptedBackend(COLLECT_LENGTHS, interval=4), prompts=char_prompts())
    assert Path(cfg.output).read_text() == "precious" and not work_dir(cfg.output).exists()


# ------------------------------------------------------------------ the recipe's questions
def test_arithmetic_questions_are_deterministic_and_the_recipe_holds_them(tmp_path):
    rows = sum_questions(40, seed=0)
    assert rows == sum_questions(40, seed=0) != sum_questions(40, seed=1)
    pairs = [tuple(map(int, r["question"].removeprefix("What is ").removesuffix("?").split(" + "))) for r in rows]
    assert len(set(pairs)) == 40 and all(1 <= a <= 9 and 1 <= b <= 9 for a, b in pairs)
    assert [r["answer"] for r in rows] == [str(a + b) for a, b in pairs]
    recipe = Path(__file__).resolve().parent.parent / "projects" / "smollm2-arithmetic" / "questions.jsonl"
    assert [json.loads(line) for line in recipe.read_text().splitlines()] == rows
    out = tmp_path / "q.jsonl"
    res = CliRunner().invoke(main, ["data", "arithmetic", str(out), "-n", "40"])
    assert res.exit_code == 0, res.output
    assert out.read_bytes() == recipe.read_bytes()
    res = CliRunner().invoke(main, ["data", "arithmetic", str(out), "-n", "3"])
    assert res.exit_code == 2 and "already exists" in res.output
    res = CliRunner().invoke(main, ["data", "arithmetic", str(tmp_path / "all.jsonl"), "-n", "82"])
    assert res.exit_code == 2 and "at most 81" in res.output
    # the word problems stay: larger models, and the collection tests and benchmarks
    words = tmp_path / "words.jsonl"
    res = CliRunner().invoke(main, ["data", "arithmetic", str(words), "-n", "5", "--kind", "word"])
    assert res.exit_code == 0, res.output
    assert [json.loads(line) for line in words.read_text().splitlines()] == arithmetic_questions(5, seed=0)
    assert all(r["answer"].isdigit() and r["question"].endswith("?") for r in arithmetic_questions(40, seed=0))


class NoLogprobs(ScriptedBackend):
    """A server that ignores the logprobs request."""

    def generate(self, requests, timeout=None, cancel=None):
        return [Generation(o.token_ids, o.text, o.finish_reason, o.stopped_by_string, (), o.prompt_tokens)
                for o in super().generate(requests, timeout)]


def test_a_backend_without_logprobs_is_a_clear_error_not_missing_signals(tmp_path):
    cfg = collect_config(tmp_path)
    with pytest.raises(BackendError, match=r"returned top-k logprobs for 0 of \d+ generated tokens"):
        collect(cfg, backend=NoLogprobs(COLLECT_LENGTHS, interval=4), prompts=char_prompts())
    assert not Path(cfg.output).exists()


# ------------------------------------------------------------------ several endpoints
class Slow(ScriptedBackend):
    """A slower server: every engine call takes ``delay`` seconds more."""

    def __init__(self, *a, delay: float, **kw):
        super().__init__(*a, **kw)
        self.delay = delay

    def generate(self, requests, timeout=None, cancel=None):
        time.sleep(self.delay)
        return super().generate(requests, timeout)


def same_problems(a: Path | str, b: Path | str) -> None:
    ta, tb = read_parquet(a), read_parquet(b)
    assert [p.question for p in ta.problems] == [p.question for p in tb.problems]
    for pa, pb in zip(ta.problems, tb.problems):
        assert pa.branches.triples() == pb.branches.triples() and pa.branches.signals == pb.branches.signals


@pytest.fixture
def reference(tmp_path) -> Path:
    """The collection on one scripted backend, to compare the others with."""
    (tmp_path / "ref").mkdir()
    cfg = collect_config(tmp_path / "ref")
    collect(cfg, backend=scripted(), prompts=char_prompts())
    return Path(cfg.output)


def test_questions_go_to_whichever_endpoint_is_free_and_the_result_is_one_endpoints(tmp_path, reference):
    cfg = collect_config(tmp_path, concurrency=1)
    report = collect(cfg, endpoints={"http://fast:1/v1": scripted(),
                                     # 0.6 s a call: slower than the scripted one even on a loaded machine
                                     "http://slow:2/v1": Slow(COLLECT_LENGTHS, interval=4, delay=0.6)},
                     prompts=char_prompts())
    fast, slow = report.endpoints
    assert fast.served + slow.served == len(COLLECT_QUESTIONS) and fast.served > slow.served  # work stealing
    assert fast.error is slow.error is None
    same_problems(cfg.output, reference)
    sampling = read_parquet(cfg.output).provenance.sampling
    assert sampling["endpoints"] == ["http://fast:1/v1", "http://slow:2/v1"] and "base_url" not in sampling
    # counted from the shards written (over every run), so an endpoint that finished none is absent
    served = {"http://fast:1/v1": fast.served, "http://slow:2/v1": slow.served}
    assert sampling[SERVED] == {url: n for url, n in served.items() if n}
    m = report.metrics()
    assert (m["endpoints"], m["endpoints_failed"]) == (2, 0)
    assert (m["endpoint.0.questions"], m["endpoint.1.questions"]) == (fast.served, slow.served)


def test_a_failing_endpoint_leaves_rotation_and_its_question_is_done_by_another(tmp_path, reference):
    cfg, warned = collect_config(tmp_path, concurrency=2), []
    report = collect(cfg, endpoints={"a": FailAfter(COLLECT_LENGTHS, interval=4, ok_calls=8),
                                     "b": Slow(COLLECT_LENGTHS, interval=4, delay=0.01)},
                     prompts=char_prompts(), warn=warned.append)
    a, b = report.endpoints
    assert a.error == "a: scripted backend went down" and b.error is None
    assert warned == ["endpoint a failed and is out of rotation (a: scripted backend went down); its questions go to b"]
    assert a.served + b.served == len(COLLECT_QUESTIONS) and b.served > 0
    same_problems(cfg.output, reference)  # nothing half-written: each question whole, once
    assert report.metrics()["endpoints_failed"] == 1


def test_the_default_warning_is_an_endpoint_warning(tmp_path):
    with pytest.warns(EndpointWarning, match="endpoint a failed and is out of rotation"):
        collect(collect_config(tmp_path),
                endpoints={"a": FailAfter(COLLECT_LENGTHS, interval=4, ok_calls=0), "b": scripted()},
                prompts=char_prompts())


def test_every_endpoint_failing_stops_naming_each_and_resume_finishes_on_other_endpoints(tmp_path, reference):
    cfg = collect_config(tmp_path, concurrency=1)
    with pytest.raises(CollectError) as err:
        collect(cfg, endpoints={"a": FailAfter(COLLECT_LENGTHS, interval=4, ok_calls=12),
                                "b": FailAfter(COLLECT_LENGTHS, interval=4, ok_calls=6)}, prompts=char_prompts(),
                warn=lambda m: None)
    line = str(err.value)
    assert "\n" not in line and line.startswith("every endpoint failed (")
    assert "a: scripted backend went down" in line and "b: scripted backend went down" in line and "--resume" in line
    out = Path(cfg.output)
    kept = len(list(work_dir(out).glob("q*.parquet")))
    assert not out.exists() and 0 < kept < len(COLLECT_QUESTIONS)
    assert f"{kept} of {len(COLLECT_QUESTIONS)} questions are done" in line
    report = collect(collect_config(tmp_path, concurrency=1, resume=True), endpoints={"c": scripted()},
                     prompts=char_prompts())
    assert report.resumed == kept and report.endpoints[0].served == len(COLLECT_QUESTIONS) - kept
    same_problems(out, reference)
    served = read_parquet(out).provenance.sampling[SERVED]
    assert sum(served.values()) == len(COLLECT_QUESTIONS) and served["c"] == len(COLLECT_QUESTIONS) - kept


def test_an_error_that_is_not_the_endpoints_stops_the_collection(tmp_path):
    """A refused request would be refused anywhere: no rotation, the error itself."""
    cfg = collect_config(tmp_path)
    with pytest.raises(BackendError, match="returned top-k logprobs for 0"):
        collect(cfg, endpoints={"a": NoLogprobs(COLLECT_LENGTHS, interval=4), "b": scripted()}, prompts=char_prompts())
    assert not Path(cfg.output).exists()


class ObservedCondition(threading.Condition):
    """A condition that says when a thread has started waiting on it."""

    def __init__(self):
        super().__init__()
        self.waiting = threading.Event()

    def wait(self, timeout=None):
        self.waiting.set()
        return super().wait(timeout)


def test_work_queue_waits_for_items_in_flight_and_hands_back_a_returned_one():
    q = WorkQueue([1, 2])
    q._cond = ObservedCondition()  # noqa: SLF001  (to see the taker wait, not guess it from a sleep)
    a, b = q.take(), q.take()
    got = []
    t = threading.Thread(target=lambda: got.append(q.take()))
    t.start()
    assert q._cond.waiting.wait(5)  # noqa: SLF001
    assert got == [] and t.is_alive()  # nothing pending, but 2 in flight: it waits
    q.put_back(a)
    t.join(5)
    assert got == [a]
    q.done(a)
    q.done(b)
    assert q.take() is None and q.pending() == []


def test_server_urls_one_or_several_each_checked(tmp_path):
    one = collect_config(tmp_path, backend="openai", base_url="http://127.0.0.1:8000/v1/")
    assert one.base_url == ("http://127.0.0.1:8000/v1",) and one.generation.base_url == "http://127.0.0.1:8000/v1"
    two = collect_config(tmp_path, backend="openai", base_url="http://a:1/v1,http://b:2/v1")
    assert two.base_url == ("http://a:1/v1", "http://b:2/v1")
    assert [c.base_url for c in two.endpoints] == list(two.base_url)
    assert two.fingerprint() == one.fingerprint()  # a resume may use other servers
    with pytest.raises(CollectConfigError, match=r"base_url 'htp://b:2/v1' \(URL 2 of 2\) is not an http\(s\) server URL"):
        collect_config(tmp_path, backend="openai", base_url=("http://a:1/v1", "htp://b:2/v1"))
    with pytest.raises(CollectConfigError, match=r"base_url 'http://a:port/v1' is not an http\(s\) server URL"):
        collect_config(tmp_path, backend="openai", base_url="http://a:port/v1")
    with pytest.raises(CollectConfigError, match=r"base_url 'http://a:1/v1/' \(URL 2 of 2\) is listed twice"):
        collect_config(tmp_path, backend="openai", base_url=("http://a:1/v1", "http://a:1/v1/"))
    with pytest.raises(CollectConfigError, match="the openai backend needs a server URL"):
        collect_config(tmp_path, backend="openai")
    with pytest.raises(CollectConfigError, match="base_url is for the openai backend"):
        collect_config(tmp_path, base_url="http://a:1/v1")


def _cli(tmp_path, *args):
    q = write_jsonl(tmp_path / "q.jsonl", COLLECT_QUESTIONS)
    return CliRunner().invoke(main, ["collect", "-q", str(q), "-o", str(tmp_path / "new" / "c.parquet"), "--model",
                                     "served-name", "--backend", "openai", "--no-progress", "--no-mlflow", *args])


def test_cli_takes_several_urls_and_names_a_bad_one(tmp_path):
    res = _cli(tmp_path, "--base-url", "http://a:1/v1", "--base-url", "http://b:2/v1,http://c:3/v1", "--print-config")
    assert res.exit_code == 0, res.output
    assert "base_url:\n- http://a:1/v1\n- http://b:2/v1\n- http://c:3/v1\n" in res.output
    res = _cli(tmp_path, "--base-url", "http://a:1/v1,http:/b/v1")
    assert res.exit_code == 2 and res.output.strip().count("\n") == 0
    assert "base_url 'http:/b/v1' (URL 2 of 2) is not an http(s) server URL" in res.output


def test_no_endpoint_reachable_is_one_line_naming_each_and_writes_nothing(tmp_path):
    from mlflow_autotts.live.server import free_port

    urls = [f"http://127.0.0.1:{free_port()}/v1" for _ in range(2)]
    res = _cli(tmp_path, "--base-url", ",".join(urls), "--live", "max_retries=0")
    assert res.exit_code == 2, res.output
    line = res.output.strip()
    assert line.startswith("error: no endpoint is reachable: ") and "\n" not in line
    assert all(f"{u}: cannot reach the server" in line for u in urls)
    assert not (tmp_path / "new").exists()


def test_the_live_settings_are_built_once_from_file_and_options(tmp_path):
    """YAML + options give one LiveConfig, equal to what the flat settings say, shared by every
    endpoint but for its URL; the MLflow params stay the flat settings (not the built config)."""
    f = tmp_path / "c.yaml"
    f.write_text(yaml.safe_dump({"questions": "q.jsonl", "output": "o.parquet", "model": "m", "backend": "openai",
                                 "temperature": 0.3, "live": {"max_model_len": 1024}}))
    cfg = settings.build(CollectConfig, f, {"base_url": ("http://a:1/v1,http://b:2/v1",), "seed": "7"})
    want = collection_config(LiveConfig("m", backend="openai", base_url="http://a:1/v1", temperature=0.3, seed=7,
                                        top_logprobs=5, max_model_len=1024), cfg.branches)
    assert cfg.generation == want and cfg.endpoints[0] is cfg.generation
    assert cfg.endpoints[1] == replace(want, base_url="http://b:2/v1")
    assert "generation" not in settings.to_dict(cfg) and "endpoints" not in settings.names(CollectConfig)
    report = type("R", (), {"backend": {}, "endpoints": []})()
    params = collect_params(cfg, report)
    assert params["base_url"] == "http://a:1/v1,http://b:2/v1" and params["live.max_model_len"] == "1024"
    assert not any(k.startswith(("generation", "endpoints")) for k in params)
