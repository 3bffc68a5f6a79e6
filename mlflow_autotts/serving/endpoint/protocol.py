"""The OpenAI chat-completions protocol of ``autotts serve``, as pure functions.

``parse_chat_request`` turns a request body (already JSON-decoded) into a ``ChatRequest``: the
question and the β of one episode. ``outcome_of`` reads a finished live episode into an
``EpisodeOutcome``; ``chat_response`` writes that as OpenAI's ``chat.completion`` object.
``error_body`` is OpenAI's error shape. No server, no MLflow, no generation here: the routes
(``endpoint.app``) only call these around ``LiveRunner.solve``.

What a request may say (anything else is a 400 naming the field, so a client never believes
a setting was honoured when it was not):

- ``model``: one of the served ids (``GET /v1/models``), else 404 ``model_not_found``;
- ``messages``: exactly one ``user`` message whose content is text (a string, or a list of
  ``{"type": "text", "text": …}`` parts, joined). The model's chat template is applied by
  ``live.prompts.ChatPrompts``, which renders a single user turn; system prompts and earlier
  turns are refused until it renders whole conversations;
- ``beta`` (top level: ``extra_body={"beta": 0.3}`` in the openai client) or
  ``metadata={"beta": "0.3"}``: the controller's budget knob, within the operator's
  ``[min_beta, max_beta]``; absent, the model's own β;
- ``stream``: false or absent; ``n``: 1 or absent; ``user``, ``store``, ``metadata``'s other
  keys: accepted, unused;
- refused with a reason: ``stream: true`` and ``max_tokens`` / ``max_completion_tokens`` (not
  implemented yet), sampling fields (``temperature``, ``top_p``, ``seed``, …: the served
  model's live settings decide them), tools and response formats.

The response (``chat_response``):

- ``choices[0].message.content``: the full text of the shortest branch the controller
  finished whose final answer is the chosen one (reasoning and ``\\boxed{…}``, as the model
  wrote it); when no finished branch ended in the answer (a controller may answer from probes
  of unfinished branches) it is ``\\boxed{answer}`` alone, and when there is no answer, empty;
- ``usage``: ``prompt_tokens`` (the question's chat prompt), ``completion_tokens`` = the
  episode's billed branch tokens (the replay's billing rule), ``total_tokens``; in
  ``completion_tokens_details`` beside OpenAI's own keys: ``generated_tokens`` (with lookahead
  never consumed), ``probe_tokens``, ``engine_prompt_tokens`` and ``cached_prompt_tokens``
  (over every engine call: each branch continues the prompt, so these exceed ``prompt_tokens``;
  they are kept out of ``prompt_tokens_details.cached_tokens`` so that a cost computed as
  prompt minus cached never goes negative), ``branches_opened``, ``engine_calls``;
- ``autotts`` (the extension field; ``completion.model_extra["autotts"]`` in the openai
  client): ``answer`` (the extracted answer or null), ``votes`` (final answers of the branches
  the controller finished, with counts, in the order first seen), ``branches`` (``opened``,
  ``finished``, ``generated``), ``content_source`` (``branch`` | ``answer`` | ``none``),
  ``controller``, ``beta``, ``wall_seconds``.
"""

from __future__ import annotations

import json
import math
from collections import Counter
from dataclasses import dataclass
from typing import Any, Callable, Mapping, Sequence

from mlflow_autotts.live.episode import LiveResult

EXTENSION = "autotts"
"""The response's extension field."""
SAMPLING_FIELDS = ("temperature", "top_p", "seed", "stop", "presence_penalty", "frequency_penalty", "logit_bias",
                   "logprobs", "top_logprobs", "top_k", "min_p", "repetition_penalty")
"""Refused when set: the served model's live settings decide sampling."""
NOT_YET = {"stream": "streaming (stream: true) is not supported yet",
           "max_tokens": "a token cap (max_tokens) is not supported yet",
           "max_completion_tokens": "a token cap (max_completion_tokens) is not supported yet"}
UNSUPPORTED = ("tools", "tool_choice", "functions", "function_call", "response_format", "audio", "modalities",
               "prediction", "web_search_options", "reasoning_effort", "service_tier", "parallel_tool_calls")
ACCEPTED = frozenset({"model", "messages", "beta", "metadata", "n", "user", "store", "stream_options",
                      *NOT_YET, *SAMPLING_FIELDS, *UNSUPPORTED})


# ----------------------------------------------------------------------------- errors
@dataclass(frozen=True)
class ApiError(Exception):
    """An error answered in OpenAI's shape (``error_body``) with HTTP ``status``."""

    status: int
    message: str
    type: str = "invalid_request_error"
    code: str | None = None
    param: str | None = None

    def __str__(self) -> str:
        return self.message


def bad_request(message: str, param: str | None = None, code: str | None = None) -> ApiError:
    return ApiError(400, message, "invalid_request_error", code, param)


def error_body(err: ApiError) -> dict[str, Any]:
    """OpenAI's error object: ``{"error": {"message", "type", "param", "code"}}``."""
    return {"error": {"message": err.message, "type": err.type, "param": err.param, "code": err.code}}


def decode_body(raw: bytes, max_bytes: int) -> Any:
    """The JSON value of a request body; 400 when too large or not JSON."""
    if len(raw) > max_bytes:
        raise bad_request(f"request body is {len(raw):,} bytes; this server accepts at most {max_bytes:,}",
                          code="request_too_large")
    try:
        return json.loads(raw)
    except (UnicodeDecodeError, ValueError) as exc:
        raise bad_request(f"request body is not valid JSON: {exc}") from None


# ----------------------------------------------------------------------------- requests
@dataclass(frozen=True)
class RequestLimits:
    """What the operator allows a request (from ``ServeConfig``) and the ids it may name."""

    model_ids: tuple[str, ...]
    min_beta: float = 0.0
    max_beta: float = 1.0
    max_question_chars: int = 100_000


@dataclass(frozen=True)
class ChatRequest:
    """One chat-completions request, as the episode needs it."""

    model: str
    """The id the request named (echoed in the response)."""
    question: str
    """The user's text, which the model's chat template wraps."""
    beta: float | None
    """The β asked for, within the operator's bounds; None: the model's own."""


def _show(value: Any) -> str:
    text = json.dumps(value, default=repr)
    return text if len(text) <= 60 else text[:57] + "..."


def _text_content(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list) and content:
        texts = []
        for k, part in enumerate(content):
            if not (isinstance(part, dict) and part.get("type") == "text" and isinstance(part.get("text"), str)):
                raise bad_request(f"messages[0].content[{k}] must be a text part {{\"type\": \"text\", \"text\": …}}, "
                                  f"got {_show(part)}", "messages")
            texts.append(part["text"])
        return "".join(texts)
    raise bad_request(f"messages[0].content must be text or a list of text parts, got {_show(content)}", "messages")


def _question(messages: Any, limits: RequestLimits) -> str:
    if not isinstance(messages, list) or not messages:
        raise bad_request("messages must be a non-empty list of messages", "messages")
    roles = [m.get("role") if isinstance(m, dict) else None for m in messages]
    if len(messages) != 1 or roles != ["user"]:
        raise bad_request(f"this endpoint answers one question: messages must be a single user message (got roles "
                          f"{_show(roles)}); system prompts and earlier turns are not supported yet", "messages")
    message = messages[0]
    extra = sorted(set(message) - {"role", "content", "name"})
    if extra:
        raise bad_request(f"messages[0] has unsupported field(s) {', '.join(map(_show, extra))}", "messages")
    question = _text_content(message.get("content"))
    if not question.strip():
        raise bad_request("the user message is empty: the controller needs a question", "messages")
    if len(question) > limits.max_question_chars:
        raise bad_request(f"the question is {len(question):,} characters; this server accepts at most "
                          f"{limits.max_question_chars:,}", "messages", "context_length_exceeded")
    return question


def _beta(body: Mapping[str, Any], limits: RequestLimits) -> float | None:
    metadata = body.get("metadata")
    if metadata is not None and not (isinstance(metadata, dict) and all(
            isinstance(k, str) and isinstance(v, str) for k, v in metadata.items())):
        raise bad_request("metadata must be an object of string values", "metadata")
    given: list[float] = []
    value = body.get("beta")
    if value is not None:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise bad_request(f"beta must be a number in [0, 1], got {_show(value)}", "beta")
        given.append(float(value))
    if metadata and "beta" in metadata:
        try:
            given.append(float(metadata["beta"]))
        except ValueError:
            raise bad_request(f"metadata.beta must be a number in [0, 1], got {_show(metadata['beta'])}",
                              "metadata") from None
    if not given:
        return None
    if len(given) == 2 and given[0] != given[1]:
        raise bad_request(f"beta ({given[0]:g}) and metadata.beta ({given[1]:g}) differ; give one", "beta")
    beta = given[0]
    if not math.isfinite(beta) or not limits.min_beta <= beta <= limits.max_beta:
        raise bad_request(f"beta must be within [{limits.min_beta:g}, {limits.max_beta:g}] on this server, "
                          f"got {beta!r}", "beta")
    return beta


def parse_chat_request(body: Any, limits: RequestLimits) -> ChatRequest:
    """The ``ChatRequest`` of a chat-completions body; ``ApiError`` (400, or 404 for an
    unknown model) for anything else, never another exception (see the module docstring)."""
    if not isinstance(body, dict):
        raise bad_request(f"request body must be a JSON object, got {_show(body)}")
    unknown = sorted(str(k) for k in body if k not in ACCEPTED)
    if unknown:
        raise bad_request(f"unsupported field(s): {', '.join(map(_show, unknown))}", unknown[0])
    for name in UNSUPPORTED:
        if body.get(name) is not None:
            raise bad_request(f"{name} is not supported by a controller endpoint", name)
    for name in SAMPLING_FIELDS:
        if body.get(name) is not None:
            raise bad_request(f"{name} cannot be set per request: the served model's live settings decide "
                              "sampling", name)
    for name, why in NOT_YET.items():
        if body.get(name) not in (None, False):
            raise bad_request(why, name)
    if body.get("n") not in (None, 1):
        raise bad_request(f"n must be 1, got {_show(body.get('n'))}", "n")
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise bad_request("model is required: one of " + ", ".join(limits.model_ids), "model")
    if model not in limits.model_ids:
        raise ApiError(404, f"the model {model!r} does not exist on this server; it serves "
                            f"{', '.join(limits.model_ids)}", "invalid_request_error", "model_not_found", "model")
    question = _question(body.get("messages"), limits)
    return ChatRequest(model, question, _beta(body, limits))


# ----------------------------------------------------------------------------- outcomes
@dataclass(frozen=True)
class EpisodeOutcome:
    """What a response reports of one episode."""

    answer: str | None
    content: str
    content_source: str
    """``branch``: the text of a finished branch; ``answer``: ``\\boxed{answer}``; ``none``."""
    votes: dict[str, int]
    branches_opened: int
    branches_finished: int
    branches_generated: int
    prompt_tokens: int
    billed_tokens: int
    generated_tokens: int
    probe_tokens: int
    engine_prompt_tokens: int
    cached_prompt_tokens: int
    engine_calls: int
    wall_seconds: float
    controller: str
    beta: float


def outcome_of(result: LiveResult, decode: Callable[[Sequence[int]], str], controller: str, beta: float
               ) -> EpisodeOutcome:
    """Read a finished live episode: the answer's branch text (``decode`` of its token ids),
    the votes of the branches the controller finished, the counts and the usage."""
    answer = result.answer if result.answer is None or type(result.answer) is str else repr(result.answer)
    episode, stats = result.episode, result.stats
    finished = [b for b in episode.branches[: episode.branches_opened] if b.done and b.final is not None]
    votes = dict(Counter(b.final for b in finished))
    matching = [b for b in finished if b.final == answer]
    if matching:
        content, source = decode(min(matching, key=lambda b: len(b.ids)).ids), "branch"
    elif answer is not None:
        content, source = f"\\boxed{{{answer}}}", "answer"
    else:
        content, source = "", "none"
    return EpisodeOutcome(
        answer=answer, content=content, content_source=source, votes=votes,
        branches_opened=stats.branches_opened, branches_finished=len(finished),
        branches_generated=stats.branches_generated, prompt_tokens=episode.prompt_tokens,
        billed_tokens=stats.billed_tokens, generated_tokens=stats.generated_tokens, probe_tokens=stats.probe_tokens,
        engine_prompt_tokens=stats.prompt_tokens, cached_prompt_tokens=stats.cached_prompt_tokens,
        engine_calls=stats.engine_calls, wall_seconds=stats.wall_seconds, controller=controller, beta=beta)


def usage(o: EpisodeOutcome) -> dict[str, Any]:
    """OpenAI's ``usage`` object of an episode (see the module docstring)."""
    return {
        "prompt_tokens": o.prompt_tokens,
        "completion_tokens": o.billed_tokens,
        "total_tokens": o.prompt_tokens + o.billed_tokens,
        "completion_tokens_details": {
            "generated_tokens": o.generated_tokens, "probe_tokens": o.probe_tokens,
            "engine_prompt_tokens": o.engine_prompt_tokens, "cached_prompt_tokens": o.cached_prompt_tokens,
            "branches_opened": o.branches_opened, "engine_calls": o.engine_calls},
    }


def chat_response(request: ChatRequest, o: EpisodeOutcome, response_id: str, created: int) -> dict[str, Any]:
    """OpenAI's ``chat.completion`` object for one episode, with the ``autotts`` extension."""
    return {
        "id": response_id,
        "object": "chat.completion",
        "created": created,
        "model": request.model,
        "choices": [{"index": 0, "message": {"role": "assistant", "content": o.content},
                     "finish_reason": "stop", "logprobs": None}],
        "usage": usage(o),
        EXTENSION: {
            "answer": o.answer, "votes": o.votes, "content_source": o.content_source,
            "branches": {"opened": o.branches_opened, "finished": o.branches_finished,
                         "generated": o.branches_generated},
            "controller": o.controller, "beta": o.beta, "wall_seconds": round(o.wall_seconds, 3)},
    }


def models_list(model_ids: Sequence[str], created: int, info: Mapping[str, Any]) -> dict[str, Any]:
    """``GET /v1/models``: the served ids, each with what is served (``info``) as the extension."""
    return {"object": "list", "data": [{"id": m, "object": "model", "created": created, "owned_by": "autotts",
                                        EXTENSION: dict(info)} for m in model_ids]}


__all__ = [
    "ApiError",
    "ChatRequest",
    "EpisodeOutcome",
    "RequestLimits",
    "chat_response",
    "decode_body",
    "error_body",
    "models_list",
    "outcome_of",
    "parse_chat_request",
    "usage",
]
