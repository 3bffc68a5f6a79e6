"""``autotts serve``'s OpenAI endpoint without vLLM: the request parser (hypothesis), the
response built from a scripted live episode, and the real ``openai`` client against the
FastAPI app on uvicorn on a free loopback port, over a scripted generation backend."""

from __future__ import annotations

import json
import time
from pathlib import Path
from urllib.parse import unquote, urlparse

import pytest
import requests
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from mlflow_autotts import settings as autotts_settings
from mlflow_autotts.controllers.baselines import SelfConsistency
from mlflow_autotts.controllers.loading import ControllerSpec
from mlflow_autotts.live.episode import LiveRunner
from mlflow_autotts.live.prompts import Message
from mlflow_autotts.serving.endpoint.app import ServedModel, build_app
from mlflow_autotts.serving.endpoint.config import ServeConfig
from mlflow_autotts.serving.endpoint.protocol import (
    ApiError,
    RequestLimits,
    chat_response,
    outcome_of,
    parse_chat_request,
)
from mlflow_autotts.serving.endpoint.tracing import TraceSettings
from mlflow_autotts.serving.model_config import model_config_for
from tests.endpoint_fixtures import (  # noqa: F401  (endpoint: a fixture)
    LENGTHS,
    MODEL,
    QUESTION,
    admitted,
    client_of,
    endpoint,
    gated,
    scripted_runner,
    wait_cancelled,
)
from tests.live_fixtures import ScriptedBackend, char_prompts

MODEL_IDS = (MODEL, "models:/autotts-controller@champion")
LIMITS = RequestLimits(min_beta=0.2, max_beta=0.8, max_question_chars=200)


def ask(question: str = "What is 1+1?", **extra) -> dict:
    return {"model": MODEL, "messages": [{"role": "user", "content": question}], **extra}


# ----------------------------------------------------------------------------- the parser
json_values = st.recursive(st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8),
                           lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner,
                                                                                      max_size=3), max_leaves=8)
fields = st.sampled_from(["model", "messages", "beta", "metadata", "n", "stream", "max_tokens", "temperature",
                          "user", "tools", "seed", "other", "deadline_s", "max_completion_tokens", "stream_options"])


@settings(max_examples=300, deadline=None)
@given(st.dictionaries(fields, json_values | st.just(MODEL), max_size=6) | json_values)
def test_any_json_body_parses_or_is_a_400_or_404_in_openai_shape(body):
    try:
        request = parse_chat_request(body, LIMITS, MODEL_IDS)
    except ApiError as err:
        assert err.status in (400, 404) and err.message and "\n" not in err.message
        assert err.status == 404 or err.type == "invalid_request_error"
    else:
        assert request.model in MODEL_IDS and request.question.strip()
        assert request.beta is None or LIMITS.min_beta <= request.beta <= LIMITS.max_beta
        assert request.max_tokens is None or (type(request.max_tokens) is int and 1 <= request.max_tokens)
        assert request.deadline_s is None or 0 < request.deadline_s <= LIMITS.max_deadline_seconds
        assert type(request.stream) is bool and (request.stream or not request.include_usage)


questions = st.text(min_size=1, max_size=200).filter(str.strip)


@settings(max_examples=200, deadline=None)
@given(questions, st.one_of(st.none(), st.floats(0.2, 0.8)), st.booleans(), st.booleans())
def test_a_single_user_question_gives_its_text_and_beta(question, beta, as_parts, in_metadata):
    content = [{"type": "text", "text": question}] if as_parts else question
    body = {"model": MODEL, "messages": [{"role": "user", "content": content}], "stream": False, "n": 1}
    if beta is not None:
        body.update({"metadata": {"beta": repr(beta)}} if in_metadata else {"beta": beta})
    request = parse_chat_request(body, LIMITS, MODEL_IDS)
    assert (request.model, request.question, request.beta) == (MODEL, question, beta)


@pytest.mark.parametrize("body, status, param, words", [
    (ask(model="gpt-4o"), 404, "model", "does not exist"),
    (ask(beta=0.9), 400, "beta", "[0.2, 0.8]"),
    (ask(beta=True), 400, "beta", "number"),
    (ask(beta=0.3, metadata={"beta": "0.4"}), 400, "beta", "differ"),
    (ask(metadata={"beta": 0.4}), 400, "metadata", "string"),
    (ask(stream="yes"), 400, "stream", "true or false"),
    (ask(stream_options={"include_usage": True}), 400, "stream_options", "only allowed with stream"),
    (ask(stream=True, stream_options={"include_usage": 1}), 400, "stream_options", "include_usage"),
    (ask(max_tokens=0), 400, "max_tokens", "[1, 1,000,000]"),
    (ask(max_tokens=-5), 400, "max_tokens", "[1, 1,000,000]"),
    (ask(max_completion_tokens=10**30), 400, "max_completion_tokens", "[1, 1,000,000]"),
    (ask(max_tokens=100.5), 400, "max_tokens", "whole number"),
    (ask(max_tokens=100.0), 400, "max_tokens", "whole number"),
    (ask(max_tokens="100"), 400, "max_tokens", "whole number"),
    (ask(max_tokens=True), 400, "max_tokens", "whole number"),
    (ask(max_tokens=100, max_completion_tokens=200), 400, "max_tokens", "differ"),
    (ask(deadline_s=0), 400, "deadline_s", "more than 0"),
    (ask(deadline_s=-1), 400, "deadline_s", "more than 0"),
    (ask(deadline_s=1e9), 400, "deadline_s", "at most 3600"),
    (ask(deadline_s="soon"), 400, "deadline_s", "number of seconds"),
    (ask(metadata={"deadline_s": "nan"}), 400, "deadline_s", "more than 0"),
    (ask(metadata={"deadline_s": "later"}), 400, "metadata", "number of seconds"),
    (ask(temperature=0.2), 400, "temperature", "live settings"),
    (ask(n=2), 400, "n", "must be 1"),
    (ask(tools=[{}]), 400, "tools", "not supported"),
    (ask(frobnicate=1), 400, "frobnicate", "unsupported"),
    (ask("   "), 400, "messages", "empty"),
    (ask("x" * 201), 400, "messages", "at most 200"),
    ({"model": MODEL, "messages": [{"role": "system", "content": "be brief"}, {"role": "assistant", "content": "hi"}]},
     400, "messages", "last message must be the user's question"),
    ({"model": MODEL, "messages": [{"role": "user", "content": [{"type": "image_url"}]}]}, 400, "messages", "text"),
])
def test_what_is_refused_says_why_and_names_the_field(body, status, param, words):
    with pytest.raises(ApiError) as err:
        parse_chat_request(body, LIMITS, MODEL_IDS)
    assert (err.value.status, err.value.param) == (status, param) and words in err.value.message


# ----------------------------------------------------------------------------- the response
def test_the_response_is_the_shortest_finished_branch_with_the_answer_and_the_bill_as_usage():
    runner = scripted_runner()
    result = runner.solve(SelfConsistency(n=4), "What is 1+1?")
    chat = parse_chat_request(ask(), LIMITS, MODEL_IDS)
    outcome = outcome_of(result, runner.prompts.decode, "sc", 0.5)
    body = chat_response(chat, outcome, "chatcmpl-x", 1)
    finished = [b for b in result.episode.branches[:4] if b.final == result.answer]
    shortest = min(finished, key=lambda b: len(b.ids))
    assert body["choices"][0]["message"]["content"] == runner.prompts.decode(shortest.ids)
    ext = body["autotts"]
    assert ext["answer"] == result.answer and ext["content_source"] == "branch"
    assert sum(ext["votes"].values()) == 4 and ext["votes"][result.answer] == max(ext["votes"].values())
    assert ext["branches"] == {"opened": 4, "finished": 4, "generated": result.stats.branches_generated}
    usage = body["usage"]
    assert usage["completion_tokens"] == result.stats.billed_tokens == sum(LENGTHS[:4])
    assert usage["prompt_tokens"] == len("<user>What is 1+1?<assistant>")
    assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"]
    details = usage["completion_tokens_details"]
    assert details["generated_tokens"] >= usage["completion_tokens"] and details["probe_tokens"] > 0
    assert details["engine_calls"] == result.stats.engine_calls and details["branches_opened"] == 4


# ----------------------------------------------------------------------------- the server
def test_the_openai_client_gets_an_answer_its_usage_and_the_extension(endpoint):
    import openai

    server, served = endpoint
    client = openai.OpenAI(base_url=f"{server.url}/v1", api_key="unused", max_retries=0)
    assert [m.id for m in client.models.list().data] == [MODEL]
    done = client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "What is 1+1?"}])
    ext = done.model_extra["autotts"]
    assert done.choices[0].message.content and done.choices[0].finish_reason == "stop"
    assert ext["answer"] and ext["content_source"] == "branch" and ext["beta"] == 0.5 and ext["controller"] == "sc"
    assert done.usage.completion_tokens == sum(LENGTHS[:4]) and done.usage.prompt_tokens > 0
    assert done.usage.completion_tokens_details.model_extra["branches_opened"] == 4

    # β per request, within the operator's bounds; outside them a 400 in OpenAI's shape
    other = client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "What is 1+1?"}],
                                           extra_body={"beta": 0.2})
    assert other.model_extra["autotts"]["beta"] == 0.2
    with pytest.raises(openai.BadRequestError) as err:
        client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "q"}],
                                       extra_body={"beta": 0.95})
    assert err.value.body["param"] == "beta" and "[0.1, 0.9]" in err.value.body["message"]
    with pytest.raises(openai.NotFoundError) as err:
        client.chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": "q"}])
    assert err.value.body["code"] == "model_not_found"
    # a question too long for the scripted model's context: 400 context_length_exceeded
    served.model.mode("live")._runner.backend.max_model_len = 120
    with pytest.raises(openai.BadRequestError) as err:
        client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "v" * 100}])
    assert err.value.body["code"] == "context_length_exceeded" and "max_model_len 120" in err.value.body["message"]


def test_a_backend_that_goes_down_is_a_503_and_a_full_server_a_429(endpoint):
    import openai

    from mlflow_autotts.serving.endpoint.app import Admission
    from tests.helpers import FailAfter

    server, served = endpoint
    live = served.model.mode("live")
    cfg = live._runner.config
    live._runner = LiveRunner(cfg, backend=FailAfter(LENGTHS, base_seed=cfg.seed, interval=4, ok_calls=1),
                              prompts=char_prompts(cfg.probe_suffix))
    client = openai.OpenAI(base_url=f"{server.url}/v1", api_key="unused", max_retries=0)
    with pytest.raises(openai.InternalServerError) as err:
        client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "What is 1+1?"}])
    assert err.value.status_code == 503 and err.value.body["code"] == "backend_unavailable"
    assert "scripted backend went down" in err.value.body["message"]

    admission = Admission(1)
    with admission:
        with pytest.raises(ApiError) as full:
            with admission:
                pass
    assert full.value.status == 429 and full.value.type == "rate_limit_error" and admission.admitted == 0


def test_routes_answer_errors_in_openai_shape_and_invocations_keeps_mlflows_contract(endpoint):
    server, served = endpoint
    assert requests.get(f"{server.url}/health", timeout=10).json()["status"] == "ok"
    r = requests.get(f"{server.url}/v1/nothing", timeout=10)
    assert r.status_code == 404 and r.json()["error"]["code"] == "not_found"
    r = requests.post(f"{server.url}/v1/chat/completions", data=b"{not json", timeout=10)
    assert r.status_code == 400 and "not valid JSON" in r.json()["error"]["message"]
    r = requests.post(f"{server.url}/v1/chat/completions", json=ask("x" * 5000), timeout=10)
    assert r.status_code == 400 and r.json()["error"]["code"] == "request_too_large"

    # /invocations: the dataframe contract of mlflow models serve (a live row and a replay row)
    r = requests.post(f"{server.url}/invocations", timeout=30,
                      json={"dataframe_split": {"columns": ["question"], "data": [["What is 1+1?"]]}})
    assert r.status_code == 200, r.text
    (row,) = r.json()["predictions"]
    assert row["answer"] and row["tokens"] == sum(LENGTHS[:4]) and row["error"] is None and row["probe_tokens"] > 0
    replay = {"dataframe_split": {"columns": ["question", "trajectory"],
                                  "data": [["q", [[["7"], 700, "7"], [["7"], 600, "7"]]]]},
              "params": {"beta": 0.5}}
    r = requests.post(f"{server.url}/invocations", json=replay, timeout=30)
    assert r.status_code == 200 and r.json()["predictions"][0]["answer"] == "7", r.text
    r = requests.post(f"{server.url}/invocations", json={"dataframe_split": {"columns": ["q"], "data": [["x"]]}},
                      timeout=30)
    assert r.status_code == 400 and json.loads(r.text)["error_code"] == "INVALID_PARAMETER_VALUE", r.text


def test_the_model_beta_must_lie_within_the_operator_bounds():
    from mlflow.models import Model

    from mlflow_autotts.errors import AutoTTSError
    from mlflow_autotts.tracking.model import model_signature

    config, source = model_config_for(ControllerSpec("sc", 0.5))
    served = ServedModel.from_config(config, source.path, Model(signature=model_signature(0.5)), (MODEL,))
    with pytest.raises(AutoTTSError, match="outside"):
        build_app(served, ServeConfig(model_uri="m", request=RequestLimits(min_beta=0.6)))
    with pytest.raises(AutoTTSError, match=r"serve config: min_beta \(0.7\) must be <= max_beta \(0.6\)"):
        autotts_settings.build(ServeConfig, None, {"model_uri": "m", "min_beta": "0.7", "max_beta": "0.6"})


# ----------------------------------------------------------------------------- autotts serve's loader
def test_autotts_serve_loads_a_registered_model_checked_against_its_digest(mlflow_store):
    from mlflow_autotts.cli.serve import load_served
    from mlflow_autotts.serving.integrity import ModelIntegrityError
    from mlflow_autotts.tracking.model_registry import register
    from mlflow_autotts.tracking.resolve import locate

    reg = register(ControllerSpec("sc", 0.5, {"n": 4}), aliases=["champion"], live={"model": "scripted"})
    served = load_served(ServeConfig(model_uri="models:/autotts-controller@champion"))
    assert served.model_ids == (MODEL, "models:/autotts-controller@champion")
    assert served.info["version"] == str(reg.version) and served.info["controller"] == "sc"
    assert len(served.info["model_sha256"]) == 64 and served.default_beta == 0.5
    assert served.model.mode("live").live.model == "scripted"
    assert served.metadata.signature.params is not None  # /invocations enforces the logged signature

    folder = urlparse(locate(f"models:/{MODEL}/{reg.version}").artifact_uri)
    assert folder.scheme in ("file", "")
    mlmodel = Path(unquote(folder.path)) / "MLmodel"
    meta = yaml.safe_load(mlmodel.read_text())
    meta["flavors"]["python_function"]["config"]["live"] = {"model": "m", "base_url": "http://attacker.example/v1"}
    mlmodel.write_text(yaml.safe_dump(meta))
    with pytest.raises(ModelIntegrityError, match="do not match the digest recorded at registration"):
        load_served(ServeConfig(model_uri="models:/autotts-controller@champion", served_model_name="x"))


def test_autotts_serve_answers_the_openai_client_and_mlflows_dataframe_contract(mlflow_store, tmp_path):
    import openai

    from mlflow_autotts.tracking.model_registry import register
    from tests.servers import autotts_served

    register(ControllerSpec("sc", 0.5, {"n": 2}), aliases=["champion"])  # no live settings: replay rows only
    with autotts_served("models:/autotts-controller@champion", tmp_path, "--max-beta", "0.6") as url:
        client = openai.OpenAI(base_url=f"{url}/v1", api_key="unused", max_retries=0)
        (model,) = client.models.list().data
        assert model.id == MODEL and model.model_extra["autotts"]["beta_range"] == [0.0, 0.6]
        # no live backend registered or set: the operator's 503, in OpenAI's shape
        with pytest.raises(openai.InternalServerError) as err:
            client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "What is 1+1?"}])
        assert err.value.status_code == 503 and "no live backend" in err.value.body["message"]
        replay = {"dataframe_split": {"columns": ["question", "trajectory"],
                                      "data": [["q", [[["7"], 700, "7"], [["7"], 600, "8"]]]]}}
        r = requests.post(f"{url}/invocations", json=replay, timeout=60)
        assert r.status_code == 200, r.text
        assert r.json()["predictions"][0]["answer"] in ("7", "8") and r.json()["predictions"][0]["tokens"] == 1300


def test_a_per_request_beta_changes_the_bill_of_a_controller_that_uses_it():
    from mlflow.models import Model

    from mlflow_autotts.serving.endpoint.protocol import ChatRequest
    from mlflow_autotts.tracking.model import model_signature

    config, source = model_config_for(ControllerSpec("cmc", 0.5))
    served = ServedModel.from_config(dict(config, live={"model": "scripted"}), source.path,
                                     Model(signature=model_signature(0.5)), (MODEL,))
    served.model.mode("live")._runner = scripted_runner()
    low, high = (served.answer(ChatRequest(MODEL, (Message("user", "What is 1+1?"),), beta)) for beta in (0.0, 1.0))
    assert (low.beta, high.beta) == (0.0, 1.0) and low.branches_opened < high.branches_opened
    assert low.billed_tokens < high.billed_tokens and low.content_source == high.content_source == "branch"


# ----------------------------------------------------------------------------- caps, deadlines, streaming
def test_a_token_cap_is_honoured_and_the_answer_is_the_vote_so_far(endpoint):
    server, served = endpoint
    client = client_of(server)
    # sc reads 9, 13 and 4 tokens (26); the next branch (21) would pass the cap of 30
    done = client.chat.completions.create(model=MODEL, messages=QUESTION, max_completion_tokens=30)
    ext = done.model_extra["autotts"]
    assert done.choices[0].finish_reason == "length" and done.usage.completion_tokens == 26 <= 30
    assert ext["cut_short"] == {"reason": "max_tokens", "vote_source": "final"} and ext["max_tokens"] == 30
    assert ext["branches"]["opened"] == 3 and sum(ext["votes"].values()) == 3
    assert ext["answer"] == max(ext["votes"], key=ext["votes"].get) and done.choices[0].message.content
    # a cap the controller never reaches changes nothing
    free = client.chat.completions.create(model=MODEL, messages=QUESTION)
    roomy = client.chat.completions.create(model=MODEL, messages=QUESTION, max_tokens=free.usage.completion_tokens)
    assert roomy.choices[0].finish_reason == "stop" and roomy.model_extra["autotts"]["cut_short"] is None
    assert (roomy.choices[0].message.content, roomy.usage.completion_tokens) == \
        (free.choices[0].message.content, free.usage.completion_tokens)


@pytest.mark.parametrize("extra", [{"max_tokens": 0}, {"max_tokens": -3}, {"max_completion_tokens": 10**12},
                                   {"max_tokens": 2.5}, {"max_tokens": "64"}, {"deadline_s": 0},
                                   {"deadline_s": -1}, {"deadline_s": 1e12}, {"deadline_s": [1]},
                                   {"metadata": {"deadline_s": "inf"}}])
def test_a_hostile_cap_or_deadline_is_a_400(endpoint, extra):
    import openai

    server, _ = endpoint
    with pytest.raises(openai.BadRequestError) as err:
        client_of(server).chat.completions.create(model=MODEL, messages=QUESTION, extra_body=extra)
    assert err.value.body["param"] in (*extra, "metadata", "deadline_s")
    assert requests.get(f"{server.url}/health", timeout=10).json()["requests_admitted"] == 0


def test_a_deadline_is_honoured(endpoint):
    server, served = endpoint
    backend = gated(served)
    backend.gate.set()
    backend.delay = 0.1
    t0 = time.monotonic()
    done = client_of(server).chat.completions.create(model=MODEL, messages=QUESTION, extra_body={"deadline_s": 0.35})
    took = time.monotonic() - t0
    ext = done.model_extra["autotts"]
    assert done.choices[0].finish_reason == "length" and ext["cut_short"]["reason"] == "deadline"
    assert took < 0.35 + 0.1 + 0.5 and ext["deadline_s"] == 0.35  # at most one engine call past it
    assert ext["branches"]["opened"] < 4 and done.usage.completion_tokens < sum(LENGTHS[:4])


def test_the_stream_parses_with_the_openai_client_progress_then_answer_then_usage(endpoint):
    server, _ = endpoint
    client = client_of(server)
    plain = client.chat.completions.create(model=MODEL, messages=QUESTION)
    chunks = list(client.chat.completions.create(model=MODEL, messages=QUESTION, stream=True,
                                                 stream_options={"include_usage": True}))
    assert chunks[0].choices[0].delta.role == "assistant" and chunks[-1].choices == []
    kinds = []
    for c in chunks[:-1]:
        delta = c.choices[0].delta
        if (delta.model_extra or {}).get("reasoning_content"):
            kinds.append("progress")
        if delta.content:
            kinds.append("content")
    assert kinds.index("content") > 4 and "progress" not in kinds[kinds.index("content"):]
    progress = "".join((c.choices[0].delta.model_extra or {}).get("reasoning_content") or "" for c in chunks[:-1])
    assert "controller sc at beta 0.5" in progress and "branch 0 read whole" in progress
    assert "branch 3 read whole" in progress and "leader" in progress and "done: answer" in progress
    content = "".join(c.choices[0].delta.content or "" for c in chunks[:-1])
    assert content == plain.choices[0].message.content
    finish = chunks[-2]
    assert finish.choices[0].finish_reason == "stop"
    assert finish.model_extra["autotts"]["answer"] == plain.model_extra["autotts"]["answer"]
    assert chunks[-1].usage.completion_tokens == plain.usage.completion_tokens == sum(LENGTHS[:4])
    assert chunks[-1].usage.completion_tokens_details.model_extra["engine_calls"] > 0

    # cut short, streamed: finish_reason length, and the stream says why
    capped = list(client.chat.completions.create(model=MODEL, messages=QUESTION, stream=True, max_tokens=30))
    finish = [c for c in capped if c.choices and c.choices[0].finish_reason][0]
    assert finish.choices[0].finish_reason == "length" and finish.usage.completion_tokens == 26
    assert "stopped: the token cap is reached" in "".join(
        (c.choices[0].delta.model_extra or {}).get("reasoning_content") or "" for c in capped if c.choices)


def test_the_first_event_arrives_before_any_generation_call_returns(endpoint):
    server, served = endpoint
    backend = gated(served)
    stream = client_of(server).chat.completions.create(model=MODEL, messages=QUESTION, stream=True)
    first = next(iter(stream))
    assert backend.returned == 0 and first.choices[0].delta.role == "assistant"
    assert "controller sc" in first.choices[0].delta.model_extra["reasoning_content"]
    backend.gate.set()
    rest = list(stream)
    assert backend.returned > 0 and rest[-1].choices[0].finish_reason == "stop"


def test_a_client_that_disconnects_ends_its_episode_and_frees_its_worker(endpoint):
    server, served = endpoint
    backend = gated(served)
    stream = client_of(server).chat.completions.create(model=MODEL, messages=QUESTION, stream=True)
    next(iter(stream))
    assert admitted(server) == 1
    stream.close()  # the client goes away while an engine call is in flight
    wait_cancelled(server, 1)
    backend.gate.set()  # the in-flight call returns; the episode makes no further one
    deadline = time.monotonic() + 10
    while admitted(server):
        assert time.monotonic() < deadline, "the disconnected request was never released"
        time.sleep(0.05)
    assert backend.returned == 1 and len(backend.calls) == 1  # sc@4 would make several calls

    # the same for a plain (non-streaming) request given up by its client
    backend.gate.clear()
    backend.returned, backend.calls = 0, []
    with pytest.raises(requests.exceptions.Timeout):
        requests.post(f"{server.url}/v1/chat/completions", json=ask(), timeout=0.5)
    wait_cancelled(server, 2)
    backend.gate.set()
    deadline = time.monotonic() + 10
    while admitted(server):
        assert time.monotonic() < deadline, "the abandoned request was never released"
        time.sleep(0.05)
    assert backend.returned == 1


# ----------------------------------------------------------------------------- conversations
def test_a_conversation_parses_into_its_turns_and_its_question_is_the_last_user_turn():
    body = {"model": MODEL, "messages": [
        {"role": "developer", "content": "Answer briefly."},
        {"role": "system", "content": [{"type": "text", "text": "Use "}, {"type": "text", "text": "\\boxed{}."}]},
        {"role": "user", "content": "What is 1+1?", "name": "ada"},
        {"role": "assistant", "content": "\\boxed{2}"},
        {"role": "assistant", "content": ""},
        {"role": "user", "content": "And 2+2?"}]}
    chat = parse_chat_request(body, LIMITS, MODEL_IDS)
    assert chat.messages == (Message("system", "Answer briefly."), Message("system", "Use \\boxed{}."),
                             Message("user", "What is 1+1?"), Message("assistant", "\\boxed{2}"),
                             Message("assistant", ""), Message("user", "And 2+2?"))
    assert chat.question == "And 2+2?"


turn_texts = st.text(max_size=40)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(["system", "developer"]), turn_texts), max_size=2),
       st.lists(st.tuples(st.sampled_from(["user", "assistant"]), turn_texts), max_size=5), questions,
       st.booleans())
def test_any_well_formed_conversation_parses_to_its_turns_within_the_total_length(systems, turns, question, as_parts):
    def content(text: str):
        return [{"type": "text", "text": text[:3]}, {"type": "text", "text": text[3:]}] if as_parts else text

    given_turns = [*systems, *turns, ("user", question)]
    body = {"model": MODEL, "messages": [{"role": r, "content": content(t)} for r, t in given_turns]}
    expected = tuple(Message("system" if r == "developer" else r, t) for r, t in given_turns)
    total = sum(len(t) for _, t in given_turns)
    try:
        chat = parse_chat_request(body, LIMITS, MODEL_IDS)
    except ApiError as err:
        assert total > LIMITS.max_question_chars and err.code == "context_length_exceeded"
        assert f"{total:,} characters" in err.message and err.param == "messages"
    else:
        assert total <= LIMITS.max_question_chars
        assert chat.messages == expected and chat.question == question


def conversation(*turns, **extra) -> dict:
    return {"model": MODEL, "messages": list(turns), **extra}


def said(role: str, content) -> dict:
    return {"role": role, "content": content}


@pytest.mark.parametrize("body, words", [
    (conversation(said("user", "hi"), said("system", "be brief"), said("user", "q")),
     "messages[1] is 'system': a system message must come before the conversation's user and assistant turns"),
    (conversation(said("assistant", "hello"), said("developer", "be brief"), said("user", "q")),
     "messages[1] is 'developer'"),
    (conversation(said("system", "s"), said("user", "q"), said("assistant", "a")),
     "messages[2] is 'assistant': the last message must be the user's question"),
    (conversation(said("system", "s"), said("developer", "t")), "messages[1] is 'developer': the last message must"),
    (conversation(said("user", "q"), said("assistant", "a"), said("user", " \n ")),
     "messages[2].content is empty: the controller needs a question"),
    (conversation(said("user", "q"), said("tool", "42"), said("user", "q")),
     "messages[1].role must be one of system, developer, user, assistant, got \"tool\" (tools are not supported)"),
    (conversation(said("user", "q"), said("function", "42"), said("user", "q")), "(tools are not supported)"),
    (conversation(said("user", "q"), said(["user"], "q")), "messages[1].role must be one of"),
    (conversation(said("user", "q"), {"role": "assistant", "content": None, "tool_calls": []}, said("user", "q")),
     "messages[1] has unsupported field(s) \"tool_calls\""),
    (conversation(said("user", "q"), said("assistant", None), said("user", "q")),
     "messages[1].content must be text or a list of text parts, got null"),
    (conversation(said("system", [{"type": "text", "text": "s"}, {"type": "image_url", "image_url": {"url": "x"}}]),
                  said("user", "q")), "messages[0].content[1] must be a text part"),
    (conversation(said("system", []), said("user", "q")), "messages[0].content must be text"),
    (conversation({"role": "user", "content": "q", "name": 7}), "messages[0].name must be a string"),
    (conversation(said("user", "q"), "assistant: hi", said("user", "q")), "messages[1] must be an object"),
    (conversation(said("system", "s" * 80), said("user", "u" * 80), said("assistant", "a" * 30),
                  said("user", "q" * 11)),
     "the conversation's 4 messages are 201 characters; this server accepts at most 200"),
    (conversation(said("user", "q" * 201)), "the question is 201 characters; this server accepts at most 200"),
])
def test_a_hostile_conversation_is_a_400_naming_the_message(body, words):
    with pytest.raises(ApiError) as err:
        parse_chat_request(body, LIMITS, MODEL_IDS)
    assert (err.value.status, err.value.param) == (400, "messages") and words in err.value.message, err.value.message
    assert err.value.code == ("context_length_exceeded" if "characters" in words else None)


class Recording(ScriptedBackend):
    """The scripted backend, keeping the prompt of every request it is sent."""

    def __post_init__(self) -> None:
        super().__post_init__()
        self.prompts: list[tuple[int, ...]] = []

    def generate(self, requests, timeout=None, cancel=None):
        self.prompts += [tuple(r.prompt) for r in requests]
        return super().generate(requests, timeout, cancel)


def test_a_conversation_reaches_the_engine_through_the_chat_template_and_branches_continue_it(endpoint):
    import openai

    server, served = endpoint
    live = served.model.mode("live")
    cfg = live._runner.config
    backend = Recording(LENGTHS, base_seed=cfg.seed, interval=cfg.interval_tokens)
    live._runner = LiveRunner(cfg, backend=backend, prompts=char_prompts(cfg.probe_suffix))
    turns = [{"role": "system", "content": "Answer briefly."}, {"role": "user", "content": "What is 1+1?"},
             {"role": "assistant", "content": "\\boxed{2}"},
             {"role": "user", "content": [{"type": "text", "text": "And 2+2?"}]}]
    done = client_of(server).chat.completions.create(model=MODEL, messages=turns)
    prompt = tuple(map(ord, "<system>Answer briefly.<user>What is 1+1?<assistant>\\boxed{2}<user>And 2+2?<assistant>"))
    assert prompt == tuple(live._runner.prompts.conversation_ids([Message(t["role"], t["content"] if isinstance(
        t["content"], str) else t["content"][0]["text"]) for t in turns]))
    assert backend.prompts and all(p[: len(prompt)] == prompt for p in backend.prompts)
    assert done.usage.prompt_tokens == len(prompt) and done.model_extra["autotts"]["answer"]
    # a hostile conversation is the caller's 400, naming the message, before any engine call
    backend.prompts.clear()
    with pytest.raises(openai.BadRequestError) as err:
        client_of(server).chat.completions.create(model=MODEL, messages=[*turns, {"role": "tool", "content": "4",
                                                                                   "tool_call_id": "x"}])
    assert err.value.body["param"] == "messages" and "messages[4]" in err.value.body["message"]
    assert not backend.prompts


def test_a_conversation_the_chat_template_refuses_is_a_400_naming_the_turn(endpoint, monkeypatch):
    import openai

    from mlflow_autotts.live.prompts import ConversationRefused

    server, served = endpoint
    prompts = served.model.mode("live")._runner.prompts

    def refuse(messages):
        raise ConversationRefused("messages[0] (system): the chat template of 'x' refuses it (System role not "
                                  "supported)", 0)

    monkeypatch.setattr(prompts, "conversation_ids", refuse)
    with pytest.raises(openai.BadRequestError) as err:
        client_of(server).chat.completions.create(model=MODEL, messages=[
            {"role": "system", "content": "Be brief."}, {"role": "user", "content": "What is 1+1?"}])
    assert err.value.body["param"] == "messages" and err.value.body["code"] == "invalid_conversation"
    assert err.value.body["message"].startswith("messages[0] (system): the chat template")
    assert admitted(server) == 0
