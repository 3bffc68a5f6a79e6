"""``autotts serve``'s ``POST /v1/responses`` (OpenAI's Responses API) without vLLM: the request
parser (hypothesis), the objects and events checked against the ``openai`` client's own pydantic
models, and the real ``openai`` client (``responses.create``, with and without a stream, and
``responses.stream``) against the app on uvicorn over a scripted generation backend."""

from __future__ import annotations

import json
import threading
import time

import openai
import pytest
import requests
from hypothesis import given, settings
from hypothesis import strategies as st
from openai.types.responses import Response, ResponseStreamEvent
from pydantic import TypeAdapter

from mlflow_autotts.controllers.baselines import SelfConsistency
from mlflow_autotts.controllers.loading import ControllerSpec
from mlflow_autotts.errors import AutoTTSError
from mlflow_autotts.live.episode import EpisodeLimits, LiveRunner
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
from mlflow_autotts.serving.endpoint.responses import ResponseEvents, parse_responses_request, response_body
from mlflow_autotts.serving.model_config import model_config_for
from tests.endpoint_fixtures import (  # noqa: F401  (endpoint: a fixture)
    LENGTHS,
    MODEL,
    Uvicorn,
    admitted,
    client_of,
    endpoint,
    gated,
    scripted_runner,
    wait_cancelled,
    wait_released,
)
from tests.helpers import FailAfter
from tests.live_fixtures import char_prompts

MODEL_IDS = (MODEL, "models:/autotts-controller@champion")
LIMITS = RequestLimits(min_beta=0.2, max_beta=0.8, max_question_chars=200)
QUESTION = "What is 1+1?"
EVENT = TypeAdapter(ResponseStreamEvent)
"""The openai client's union of stream events: validating a dict against it checks its type's
required fields."""


def ask(input="What is 1+1?", **extra) -> dict:
    return {"model": MODEL, "input": input, **extra}


def parse(body: dict):
    return parse_responses_request(body, LIMITS, MODEL_IDS)


# ----------------------------------------------------------------------------- the parser
json_values = st.recursive(st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8),
                           lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner,
                                                                                      max_size=3), max_leaves=8)
roles = st.sampled_from(["user", "assistant", "system", "developer", "tool", "", None])
parts = st.fixed_dictionaries({"type": st.sampled_from(["input_text", "output_text", "input_image", "text"]),
                               "text": st.text(max_size=8) | st.integers()})
items = st.fixed_dictionaries({"role": roles, "content": st.text(max_size=8) | st.lists(parts, max_size=2)},
                              optional={"type": st.sampled_from(["message", "reasoning", "function_call_output"]),
                                        "id": st.text(max_size=4), "name": st.text(max_size=4)})
fields = st.sampled_from(["model", "input", "instructions", "max_output_tokens", "metadata", "beta", "deadline_s",
                          "stream", "stream_options", "store", "user", "parallel_tool_calls", "truncation",
                          "temperature", "top_p", "tools", "tool_choice", "text", "reasoning", "background",
                          "include", "previous_response_id", "max_tokens", "messages", "other"])


@settings(max_examples=400, deadline=None)
@given(st.dictionaries(fields, json_values | st.just(MODEL) | st.lists(items, min_size=1, max_size=4),
                       max_size=7) | json_values)
def test_any_json_body_parses_or_is_a_400_or_404_in_openai_shape(body):
    try:
        request = parse(body)
    except ApiError as err:
        assert err.status in (400, 404) and err.message and "\n" not in err.message
        assert err.status == 404 or err.type == "invalid_request_error"
        assert err.param is not None or not isinstance(body, dict)  # a field is named, unless the body is not an object
    else:
        chat = request.chat
        assert chat.model in MODEL_IDS and chat.messages and chat.messages[-1].role == "user"
        assert chat.question.strip() and all(m.role in ("user", "assistant", "system") for m in chat.messages)
        assert sum(len(m.content) for m in chat.messages) <= LIMITS.max_question_chars
        assert chat.beta is None or LIMITS.min_beta <= chat.beta <= LIMITS.max_beta
        assert chat.max_tokens is None or (type(chat.max_tokens) is int and chat.max_tokens >= 1)
        assert chat.deadline_s is None or 0 < chat.deadline_s <= LIMITS.max_deadline_seconds
        assert type(chat.stream) is bool and not chat.include_usage


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(["user", "assistant", "system", "developer"]), st.text(max_size=20),
                          st.booleans()), max_size=4),
       st.text(min_size=1, max_size=20).filter(str.strip), st.one_of(st.none(), st.text(max_size=20)))
def test_a_conversation_keeps_its_turns_in_order_with_instructions_first(history, question, instructions):
    turns = [{"role": role, "content": [{"type": "input_text" if role == "user" else "output_text", "text": text}]
              if as_parts else text} for role, text, as_parts in history]
    body = ask([*turns, {"type": "message", "role": "user", "content": question}])
    if instructions is not None:
        body["instructions"] = instructions
    expected = ([Message("system", instructions)] if instructions else []) + [
        Message("system" if role == "developer" else role, text) for role, text, _ in history] + [
        Message("user", question)]
    request = parse(body)
    assert request.chat.messages == tuple(expected) and request.chat.question == question
    assert request.instructions == instructions


def test_a_single_question_makes_the_same_chat_request_as_the_chat_route():
    responses = parse(ask(QUESTION, max_output_tokens=30, metadata={"beta": "0.3", "deadline_s": "20"},
                          stream=True, store=False, user="u1", parallel_tool_calls=False, truncation="disabled"))
    chat = parse_chat_request({"model": MODEL, "messages": [{"role": "user", "content": QUESTION}],
                               "max_completion_tokens": 30, "metadata": {"beta": "0.3", "deadline_s": "20"},
                               "stream": True}, LIMITS, MODEL_IDS)
    assert responses.chat == chat and responses.metadata == {"beta": "0.3", "deadline_s": "20"}
    assert responses.user == "u1"
    top = parse(ask(QUESTION, beta=0.25, deadline_s=5))  # extra_body's top-level fields
    assert (top.chat.beta, top.chat.deadline_s, top.chat.stream, top.chat.max_tokens) == (0.25, 5.0, False, None)


@pytest.mark.parametrize("body", [
    ask(tools=[]), ask(tool_choice="auto"), ask(tool_choice="none"), ask(text={"format": {"type": "text"}}),
    ask(background=False), ask(include=[]), ask(stream=True, stream_options={"include_obfuscation": False}),
    ask(truncation="auto"), ask(safety_identifier="s", prompt_cache_key="k"), ask(instructions=""),
    ask([{"type": "message", "id": "msg_1", "status": "completed", "role": "assistant",
          "content": [{"type": "output_text", "text": "2", "annotations": [], "logprobs": []}]},
         {"role": "user", "content": "and 2+2?"}]),
])
def test_what_asks_for_nothing_is_accepted(body):
    assert parse(body).chat.question


@pytest.mark.parametrize("body, status, param, words", [
    (ask(model="gpt-4o"), 404, "model", "does not exist"),
    ({"input": QUESTION}, 400, "model", "model is required"),
    (ask(None), 400, "input", "a string or a non-empty list"),
    (ask([]), 400, "input", "a string or a non-empty list"),
    (ask(5), 400, "input", "a string or a non-empty list"),
    (ask("   "), 400, "input", "empty"),
    (ask("x" * 201), 400, "input", "at most 200"),
    (ask("x" * 150, instructions="y" * 60), 400, "input", "210 characters"),
    (ask([{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]), 400, "input",
     "must be the user's question, got role 'assistant'"),
    (ask([{"role": "tool", "content": "x"}]), 400, "input", "input[0].role must be"),
    (ask([{"role": ["user"], "content": "x"}]), 400, "input", "input[0].role must be"),
    (ask(["What is 1+1?"]), 400, "input", "input[0] must be a message"),
    (ask([{"type": "function_call_output", "call_id": "c", "output": "x"}]), 400, "input",
     "\"function_call_output\" item; this endpoint takes message items only"),
    (ask([{"role": "user", "content": "x", "name": "bob"}]), 400, "input", "unsupported field(s) \"name\""),
    (ask([{"role": "user", "content": [{"type": "input_image", "image_url": "http://x/y.png"}]}]), 400, "input",
     "got a \"input_image\" part"),
    (ask([{"role": "user", "content": [{"type": ["input_text"], "text": "x"}]}]), 400, "input", "content[0]"),
    (ask([{"role": "user", "content": [{"type": "input_text", "text": 5}]}]), 400, "input", "content[0]"),
    (ask([{"role": "user", "content": [{"type": "input_text", "text": "x", "cache": 1}]}]), 400, "input",
     "content[0] has unsupported field(s) \"cache\""),
    (ask([{"role": "user", "content": []}]), 400, "input", "non-empty list"),
    (ask([{"role": "user", "content": None}]), 400, "input", "input[0].content must be text"),
    (ask(instructions=["be brief"]), 400, "instructions", "must be a string"),
    (ask(max_output_tokens=0), 400, "max_output_tokens", "[1, 1,000,000]"),
    (ask(max_output_tokens=-5), 400, "max_output_tokens", "[1, 1,000,000]"),
    (ask(max_output_tokens=10**30), 400, "max_output_tokens", "[1, 1,000,000]"),
    (ask(max_output_tokens=30.0), 400, "max_output_tokens", "whole number"),
    (ask(max_output_tokens="30"), 400, "max_output_tokens", "whole number"),
    (ask(max_output_tokens=True), 400, "max_output_tokens", "whole number"),
    (ask(beta=0.9), 400, "beta", "[0.2, 0.8]"),
    (ask(beta="0.3"), 400, "beta", "number"),
    (ask(beta=0.3, metadata={"beta": "0.4"}), 400, "beta", "differ"),
    (ask(metadata={"beta": 0.4}), 400, "metadata", "string values"),
    (ask(metadata={"deadline_s": "later"}), 400, "metadata", "number of seconds"),
    (ask(deadline_s=0), 400, "deadline_s", "more than 0"),
    (ask(deadline_s=1e9), 400, "deadline_s", "at most 3600"),
    (ask(stream="yes"), 400, "stream", "true or false"),
    (ask(stream_options={"include_obfuscation": True}), 400, "stream_options", "only allowed with stream"),
    (ask(stream=True, stream_options={"include_usage": True}), 400, "stream_options", "include_obfuscation"),
    (ask(store="yes"), 400, "store", "boolean"),
    (ask(user=5), 400, "user", "string"),
    (ask(parallel_tool_calls="no"), 400, "parallel_tool_calls", "boolean"),
    (ask(truncation="middle"), 400, "truncation", "\"auto\" or \"disabled\""),
    (ask(temperature=0.2), 400, "temperature", "live settings decide sampling"),
    (ask(top_p=0.9), 400, "top_p", "live settings decide sampling"),
    (ask(top_logprobs=3), 400, "top_logprobs", "live settings decide sampling"),
    (ask(max_tool_calls=2), 400, "max_tool_calls", "not supported"),
    (ask(tools=[{"type": "function", "name": "f"}]), 400, "tools", "not supported"),
    (ask(tool_choice="required"), 400, "tool_choice", "not supported"),
    (ask(text={"format": {"type": "json_schema", "name": "x", "schema": {}}}), 400, "text", "not supported"),
    (ask(reasoning={"effort": "high"}), 400, "reasoning", "budget knob is beta"),
    (ask(previous_response_id="resp_1"), 400, "previous_response_id", "not supported"),
    (ask(conversation="conv_1"), 400, "conversation", "not supported"),
    (ask(background=True), 400, "background", "not supported"),
    (ask(background=0), 400, "background", "not supported"),  # 0 is not false
    (ask(include=["reasoning.encrypted_content"]), 400, "include", "not supported"),
    (ask(messages=[{"role": "user", "content": "q"}]), 400, "messages", "unsupported field"),
    (ask(max_tokens=30), 400, "max_tokens", "unsupported field"),
    ([ask()], 400, None, "JSON object"),
])
def test_what_is_refused_says_why_and_names_the_field(body, status, param, words):
    with pytest.raises(ApiError) as err:
        parse(body)
    assert (err.value.status, err.value.param) == (status, param) and words in err.value.message, err.value.message


# ----------------------------------------------------------------------------- objects and events
def scripted_outcome(request):
    runner = scripted_runner()
    result = runner.solve(SelfConsistency(n=4), request.chat.messages, EpisodeLimits(request.chat.max_tokens))
    return outcome_of(result, runner.prompts.decode, "sc", 0.5)


def test_the_response_reports_the_chat_routes_numbers_and_passes_the_openai_model():
    request = parse(ask(QUESTION, metadata={"tag": "t1"}, user="u1"))
    outcome = scripted_outcome(request)
    body = response_body(request, outcome, "resp_x", 1, "msg_x")
    chat = chat_response(request.chat, outcome, "chatcmpl-x", 1)
    parsed = Response.model_validate(body)
    assert parsed.id == "resp_x" and parsed.status == "completed" and parsed.incomplete_details is None
    assert parsed.output_text == chat["choices"][0]["message"]["content"] and parsed.output[0].status == "completed"
    assert (parsed.metadata, parsed.user, parsed.max_output_tokens) == ({"tag": "t1"}, "u1", None)
    usage = chat["usage"]
    assert parsed.usage.input_tokens == usage["prompt_tokens"] == len(f"<user>{QUESTION}<assistant>")
    assert parsed.usage.output_tokens == usage["completion_tokens"] == sum(LENGTHS[:4])
    assert parsed.usage.total_tokens == usage["total_tokens"] and parsed.usage.input_tokens_details.cached_tokens == 0
    assert parsed.usage.output_tokens_details.reasoning_tokens == usage["completion_tokens"]
    assert parsed.usage.output_tokens_details.model_extra["engine_calls"] == outcome.engine_calls
    assert body["autotts"] == chat["autotts"]


def test_the_stream_events_pass_the_openai_models_in_order_and_add_up_to_the_response():
    from mlflow.pyfunc import ResponsesAgent

    request = parse(ask(QUESTION, max_output_tokens=30))
    outcome = scripted_outcome(request)
    assert outcome.cut_short == "max_tokens"
    events = ResponseEvents(request, "resp_x", 1, "rs_x", "msg_x")
    sent = events.opening("start\n") + events.progress("one\n") + events.progress("two\n") + events.closing(
        outcome, "end\n")
    parsed = [EVENT.validate_python(e) for e in sent]
    assert [e.sequence_number for e in parsed] == list(range(len(sent)))
    assert [e.type for e in parsed[:5]] == ["response.created", "response.in_progress", "response.output_item.added",
                                            "response.reasoning_summary_part.added",
                                            "response.reasoning_summary_text.delta"]
    deltas = [e.delta for e in parsed if e.type == "response.reasoning_summary_text.delta"]
    assert deltas == ["start\n", "one\n", "two\n", "end\n"]
    assert "".join(e.delta for e in parsed if e.type == "response.output_text.delta") == outcome.content
    final = parsed[-1]
    assert final.type == "response.incomplete" and final.response.incomplete_details.reason == "max_output_tokens"
    assert [item.type for item in final.response.output] == ["reasoning", "message"]
    assert final.response.output[0].summary[0].text == "start\none\ntwo\nend\n"
    assert final.response.usage.output_tokens == outcome.billed_tokens <= 30
    # MLflow's own reducer of a ResponsesAgent stream (its tracing) finds the same output items
    reduced = ResponsesAgent.responses_agent_output_reducer(sent)["output"]
    assert reduced == json.loads(json.dumps(sent[-1]["response"]["output"]))

    failing = ResponseEvents(request, "resp_y", 1, "rs_y", "msg_y")
    sent = failing.opening("start\n") + failing.failure(ApiError(400, "too long", code="context_length_exceeded",
                                                                 param="messages"))
    error, failed = (EVENT.validate_python(e) for e in sent[-2:])
    assert (error.type, error.code, error.param, error.sequence_number) == ("error", "context_length_exceeded",
                                                                            "input", 5)
    assert failed.type == "response.failed" and failed.response.error.code == "invalid_prompt"


# ----------------------------------------------------------------------------- the server
def raw_events(server, body: dict) -> list[tuple[str, dict]]:
    """The stream's server-sent events as sent: (event name, data)."""
    with requests.post(f"{server.url}/v1/responses", json=body, stream=True, timeout=30) as r:
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream"), r.text
        blocks = r.text.split("\n\n")
    assert blocks[-1] == ""
    out = []
    for block in blocks[:-1]:
        name, data = block.split("\n")
        assert name.startswith("event: ") and data.startswith("data: ")
        out.append((name[len("event: "):], json.loads(data[len("data: "):])))
    return out


def test_the_openai_client_gets_the_answer_its_usage_and_the_extension(endpoint):
    server, _ = endpoint
    client = client_of(server)
    chat = client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": QUESTION}])
    done = client.responses.create(model=MODEL, input=QUESTION)
    assert done.object == "response" and done.id.startswith("resp_") and done.status == "completed"
    assert done.output_text == chat.choices[0].message.content and done.output[0].type == "message"
    assert done.usage.output_tokens == chat.usage.completion_tokens == sum(LENGTHS[:4])
    assert done.usage.input_tokens == chat.usage.prompt_tokens > 0
    ext, chat_ext = done.model_extra["autotts"], chat.model_extra["autotts"]
    assert {k: v for k, v in ext.items() if k != "wall_seconds"} == {
        k: v for k, v in chat_ext.items() if k != "wall_seconds"}
    assert ext["controller"] == "sc" and ext["beta"] == 0.5 and ext["content_source"] == "branch"
    # the body as sent is a valid openai Response (the client itself does not validate)
    raw = requests.post(f"{server.url}/v1/responses", json=ask(), timeout=30).json()
    assert Response.model_validate(raw).output_text == done.output_text


def test_beta_per_request_and_its_bounds(endpoint):
    server, _ = endpoint
    client = client_of(server)
    low = client.responses.create(model=MODEL, input=QUESTION, extra_body={"beta": 0.2})
    tagged = client.responses.create(model=MODEL, input=QUESTION, metadata={"beta": "0.3", "tag": "x"})
    assert low.model_extra["autotts"]["beta"] == 0.2 and tagged.model_extra["autotts"]["beta"] == 0.3
    assert tagged.metadata == {"beta": "0.3", "tag": "x"}
    with pytest.raises(openai.BadRequestError) as err:
        client.responses.create(model=MODEL, input=QUESTION, extra_body={"beta": 0.95})
    assert err.value.body["param"] == "beta" and "[0.1, 0.9]" in err.value.body["message"]


def test_max_output_tokens_caps_the_bill_and_the_answer_is_the_vote(endpoint):
    server, _ = endpoint
    client = client_of(server)
    # sc reads 9, 13 and 4 tokens (26); the next branch (21) would pass the cap of 30
    capped = client.responses.create(model=MODEL, input=QUESTION, max_output_tokens=30)
    ext = capped.model_extra["autotts"]
    assert capped.status == "incomplete" and capped.incomplete_details.reason == "max_output_tokens"
    assert capped.usage.output_tokens == 26 <= 30 and capped.max_output_tokens == 30
    assert ext["cut_short"] == {"reason": "max_tokens", "vote_source": "final"} and ext["max_tokens"] == 30
    assert ext["answer"] == max(ext["votes"], key=ext["votes"].get) and sum(ext["votes"].values()) == 3
    assert capped.output_text and capped.output[0].status == "incomplete"

    events = list(client.responses.create(model=MODEL, input=QUESTION, max_output_tokens=30, stream=True))
    assert events[-1].type == "response.incomplete" and events[-1].response.usage.output_tokens == 26
    summary = "".join(e.delta for e in events if e.type == "response.reasoning_summary_text.delta")
    assert "stopped: the token cap is reached" in summary


def test_a_deadline_in_metadata_cuts_the_episode_short(endpoint):
    server, served = endpoint
    backend = gated(served)
    backend.gate.set()
    backend.delay = 0.1  # sc@4 makes 18 engine calls: far more than fit in 0.35 s
    done = client_of(server).responses.create(model=MODEL, input=QUESTION, metadata={"deadline_s": "0.35"})
    ext = done.model_extra["autotts"]
    assert done.status == "incomplete" and done.incomplete_details.reason == "max_output_tokens"
    assert ext["cut_short"]["reason"] == "deadline" and ext["deadline_s"] == 0.35
    assert done.usage.output_tokens < sum(LENGTHS[:4]) and done.metadata == {"deadline_s": "0.35"}


def test_the_stream_parses_with_the_openai_client_progress_then_answer_then_usage(endpoint):
    server, _ = endpoint
    client = client_of(server)
    plain = client.responses.create(model=MODEL, input=QUESTION)
    events = list(client.responses.create(model=MODEL, input=QUESTION, stream=True))
    assert [e.sequence_number for e in events] == list(range(len(events)))
    kinds = [e.type for e in events]
    assert kinds[:4] == ["response.created", "response.in_progress", "response.output_item.added",
                         "response.reasoning_summary_part.added"]
    pieces = kinds.count("response.output_text.delta")
    assert pieces >= 1 and kinds.count("response.reasoning_summary_text.delta") > 4
    reasoning_done = kinds.index("response.reasoning_summary_text.done")
    assert "response.reasoning_summary_text.delta" not in kinds[reasoning_done:]
    assert kinds[reasoning_done:] == [
        "response.reasoning_summary_text.done", "response.reasoning_summary_part.done", "response.output_item.done",
        "response.output_item.added", "response.content_part.added", *["response.output_text.delta"] * pieces,
        "response.output_text.done", "response.content_part.done", "response.output_item.done",
        "response.completed"]
    summary = "".join(e.delta for e in events if e.type == "response.reasoning_summary_text.delta")
    assert "controller sc at beta 0.5" in summary and "branch 0 read whole" in summary
    assert "branch 3 read whole" in summary and "leader" in summary and "done: answer" in summary
    assert "".join(e.delta for e in events if e.type == "response.output_text.delta") == plain.output_text
    final = events[-1].response
    assert final.status == "completed" and final.output_text == plain.output_text
    assert final.usage.output_tokens == plain.usage.output_tokens == sum(LENGTHS[:4])
    assert final.model_extra["autotts"]["answer"] == plain.model_extra["autotts"]["answer"]
    assert final.output[0].summary[0].text == summary

    # the openai client's stream helper accumulates the events into the final response
    with client.responses.stream(model=MODEL, input=QUESTION) as stream:
        accumulated = stream.get_final_response()
    assert accumulated.output_text == plain.output_text and accumulated.usage.output_tokens == sum(LENGTHS[:4])

    # as sent: each event named by its type, and each a valid openai event
    sent = raw_events(server, ask(stream=True))
    assert all(name == data["type"] for name, data in sent)
    assert [EVENT.validate_python(data).type for _, data in sent] == kinds


def test_the_first_event_arrives_before_any_generation_call_returns(endpoint):
    server, served = endpoint
    backend = gated(served)
    stream = client_of(server).responses.create(model=MODEL, input=QUESTION, stream=True)
    events = iter(stream)
    opening = [next(events) for _ in range(5)]
    assert backend.returned == 0 and opening[0].type == "response.created"
    assert opening[4].type == "response.reasoning_summary_text.delta" and "controller sc" in opening[4].delta
    backend.gate.set()
    rest = list(events)
    assert backend.returned > 0 and rest[-1].type == "response.completed"


def test_instructions_and_earlier_turns_reach_the_model(endpoint):
    server, served = endpoint
    client = client_of(server)
    turns = [{"role": "developer", "content": "Show your work."},
             {"role": "user", "content": "What is 2+2?"},
             {"role": "assistant", "content": [{"type": "output_text", "text": "4"}]},
             {"role": "user", "content": [{"type": "input_text", "text": QUESTION}]}]
    done = client.responses.create(model=MODEL, instructions="Answer with a number.", input=turns)
    expected = [Message("system", "Answer with a number."), Message("system", "Show your work."),
                Message("user", "What is 2+2?"), Message("assistant", "4"), Message("user", QUESTION)]
    prompt = char_prompts().conversation_ids(expected)
    assert done.usage.input_tokens == len(prompt) > len(char_prompts().question_ids(QUESTION))
    assert done.status == "completed" and done.output_text and done.instructions == "Answer with a number."
    # a previous response's output sent back as the assistant's turn
    again = client.responses.create(model=MODEL, input=[*done.output, {"role": "user", "content": QUESTION}])
    assert again.usage.input_tokens == len(char_prompts().conversation_ids(
        [Message("assistant", done.output_text), Message("user", QUESTION)]))


def test_hostile_requests_are_answered_in_openai_shape(endpoint):
    server, served = endpoint
    client = client_of(server)
    with pytest.raises(openai.NotFoundError) as err:
        client.responses.create(model="gpt-4o", input=QUESTION)
    assert err.value.body["code"] == "model_not_found" and err.value.body["param"] == "model"
    with pytest.raises(openai.BadRequestError) as err:
        client.responses.create(model=MODEL, input=QUESTION, temperature=0.3)
    assert err.value.body["param"] == "temperature" and "live settings" in err.value.body["message"]
    with pytest.raises(openai.BadRequestError) as err:
        client.responses.create(model=MODEL, input=QUESTION, tools=[{"type": "web_search"}])
    assert err.value.body["param"] == "tools"
    with pytest.raises(openai.BadRequestError) as err:
        client.responses.create(model=MODEL, input=[{"role": "user", "content": [
            {"type": "input_image", "image_url": "https://example.com/a.png", "detail": "auto"}]}])
    assert err.value.body["param"] == "input" and "input_image" in err.value.body["message"]
    with pytest.raises(openai.BadRequestError) as err:
        client.responses.create(model=MODEL, input=QUESTION, max_output_tokens=0, stream=True)
    assert err.value.body["param"] == "max_output_tokens"
    r = requests.post(f"{server.url}/v1/responses", data=b"{not json", timeout=10)
    assert r.status_code == 400 and "not valid JSON" in r.json()["error"]["message"]
    r = requests.post(f"{server.url}/v1/responses", json=ask("x" * 5000), timeout=10)
    assert r.status_code == 400 and r.json()["error"]["code"] == "request_too_large"
    r = requests.post(f"{server.url}/v1/responses", json=[1, 2], timeout=10)
    assert r.status_code == 400 and set(r.json()["error"]) == {"message", "type", "param", "code"}
    # a question too long for the model's context: 400, naming this route's field
    served.model.mode("live")._runner.backend.max_model_len = 120
    with pytest.raises(openai.BadRequestError) as err:
        client.responses.create(model=MODEL, input="v" * 100)
    assert err.value.body["code"] == "context_length_exceeded" and err.value.body["param"] == "input"
    assert admitted(server) == 0


def test_a_backend_that_goes_down_is_a_503_or_after_the_stream_started_error_and_failed_events(endpoint):
    server, served = endpoint
    live = served.model.mode("live")
    cfg = live._runner.config

    def failing():
        backend = FailAfter(LENGTHS, base_seed=cfg.seed, interval=4, ok_calls=1)
        live._runner = LiveRunner(cfg, backend=backend, prompts=char_prompts(cfg.probe_suffix))

    failing()
    client = client_of(server)
    with pytest.raises(openai.InternalServerError) as err:
        client.responses.create(model=MODEL, input=QUESTION)
    assert err.value.status_code == 503 and err.value.body["code"] == "backend_unavailable"
    failing()
    events = list(client.responses.create(model=MODEL, input=QUESTION, stream=True))
    error, failed = events[-2:]
    assert error.type == "error" and error.code == "backend_unavailable" and "went down" in error.message
    assert failed.type == "response.failed" and failed.response.status == "failed"
    assert failed.response.error.code == "server_error" and "went down" in failed.response.error.message
    assert events[0].type == "response.created" and admitted(server) == 0


def test_a_client_that_disconnects_ends_its_episode_and_frees_its_worker(endpoint):
    server, served = endpoint
    backend = gated(served)
    stream = client_of(server).responses.create(model=MODEL, input=QUESTION, stream=True)
    next(iter(stream))
    assert admitted(server) == 1
    stream.close()  # the client goes away while an engine call is in flight
    wait_cancelled(server, 1)
    backend.gate.set()  # the in-flight call returns; the episode makes no further one
    wait_released(server)
    assert backend.returned == 1 and len(backend.calls) == 1  # sc@4 would make several calls

    # the same for a plain request given up by its client
    backend.gate.clear()
    backend.returned, backend.calls = 0, []
    with pytest.raises(requests.exceptions.Timeout):
        requests.post(f"{server.url}/v1/responses", json=ask(), timeout=0.5)
    wait_cancelled(server, 2)
    backend.gate.set()
    wait_released(server)
    assert backend.returned == 1


def test_a_full_server_is_a_429_for_plain_and_streamed_requests():
    from mlflow.models import Model

    from mlflow_autotts.tracking.model import model_signature

    config, source = model_config_for(ControllerSpec("sc", 0.5, {"n": 4}))
    served = ServedModel.from_config(dict(config, live={"model": "scripted"}), source.path,
                                     Model(signature=model_signature(0.5)), (MODEL,))
    served.model.mode("live")._runner = scripted_runner()
    backend = gated(served)
    app = build_app(served, ServeConfig(model_uri="m", max_concurrent_requests=1, max_queued_requests=0))
    with Uvicorn(app) as server:
        client = client_of(server)
        holder = threading.Thread(target=lambda: client.responses.create(model=MODEL, input=QUESTION), daemon=True)
        holder.start()
        deadline = time.monotonic() + 10
        while not admitted(server):
            assert time.monotonic() < deadline, "the first request was never admitted"
            time.sleep(0.02)
        for stream in (False, True):
            with pytest.raises(openai.RateLimitError) as err:
                client.responses.create(model=MODEL, input=QUESTION, stream=stream)
            assert err.value.status_code == 429 and err.value.body["code"] == "server_full"
        backend.gate.set()
        holder.join(30)
        wait_released(server)
        assert client.responses.create(model=MODEL, input=QUESTION).status == "completed"
