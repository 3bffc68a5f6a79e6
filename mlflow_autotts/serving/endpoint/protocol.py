"""The OpenAI chat-completions protocol of ``autotts serve``, as pure functions.

``parse_chat_request`` turns a request body (already JSON-decoded) into a ``ChatRequest``: the
conversation (its last turn the question), the β, the token cap and deadline of one episode,
and how to answer (streamed or not). ``outcome_of`` reads a finished live episode into an
``EpisodeOutcome``; ``chat_response`` writes that as OpenAI's ``chat.completion`` object,
``stream_chunks`` as its ``chat.completion.chunk`` events (``progress_text`` is what a stream
shows of each action). ``error_body`` is OpenAI's error shape. No server, no MLflow, no
generation here: the routes (``endpoint.app``) only call these around ``LiveRunner.solve``.

What a request may say (anything else is a 400 naming the field, so a client never believes
a setting was honoured when it was not):

- ``model``: one of the served ids (``GET /v1/models``), else 404 ``model_not_found``;
- ``messages``: the conversation. ``system`` messages (``developer`` is the same) first, then
  ``user`` and ``assistant`` turns in any order; the last message is the ``user``'s question
  the controller answers, and it is not empty. Each content is text: a string, or a list of
  ``{"type": "text", "text": …}`` parts, joined; ``name`` is accepted, unused. All the
  messages' text together is at most ``max_question_chars`` characters (else a 400
  ``context_length_exceeded``; the model's context is checked after tokenising). The model's
  chat template renders the whole conversation with its generation prompt
  (``live.prompts.ChatPrompts``, every content as plain text: a content spelling
  ``<|im_end|>`` cannot close its turn), the instruction of the served model appended to the
  last user turn, and every branch continues it; one the template cannot render as given (a
  role it refuses, a content it would drop or change) is a 400 naming the message. Tool
  messages, tool calls and non-text parts are refused, naming the message
  (``messages[2].content[0] …``);
- ``beta`` (top level: ``extra_body={"beta": 0.3}`` in the openai client) or
  ``metadata={"beta": "0.3"}``: the controller's budget knob, within the operator's
  ``[min_beta, max_beta]``; absent, the model's own β;
- ``max_completion_tokens`` (or the older ``max_tokens``; both, only if equal): a hard cap on
  the *billed* tokens (``usage.completion_tokens`` never exceeds it), a whole number in
  ``[1, max_token_cap]``;
- ``deadline_s`` (top level, or ``metadata={"deadline_s": "20"}``): seconds from the request's
  arrival after which no further engine call starts, a number in ``(0, max_deadline_seconds]``.
  When the cap or the deadline stops the episode, the answer is the vote over what it saw
  (``live.episode.LiveEpisode.vote``), ``finish_reason`` is ``length`` and the extension's
  ``cut_short`` says why; anything else (a string, a bool, 0, a negative, a fraction for the
  cap, more than the operator allows) is a 400;
- ``stream``: a bool; ``stream_options``: ``{"include_usage": bool}``, only with
  ``stream: true``; ``n``: 1 or absent; ``user``, ``store``, ``metadata``'s other keys:
  accepted, unused;
- refused with a reason: sampling fields (``temperature``, ``top_p``, ``seed``, …: the served
  model's live settings decide them), tools and response formats.

The response (``chat_response``):

- ``choices[0].message.content``: the full text of the shortest branch the controller
  finished whose final answer is the chosen one (reasoning and ``\\boxed{…}``, as the model
  wrote it); when no finished branch ended in the answer (a controller may answer from probes
  of unfinished branches) it is ``\\boxed{answer}`` alone, and when there is no answer, empty;
- ``usage``: ``prompt_tokens`` (the conversation's chat prompt), ``completion_tokens`` = the
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
  ``controller``, ``beta``, ``wall_seconds``, ``max_tokens`` and ``deadline_s`` (the request's,
  or null), and ``cut_short``: null, or ``{"reason": "max_tokens" | "deadline", "vote_source":
  "final" | "probes" | "none"}`` when the episode was stopped and the answer is the vote
  (of the final answers of finished branches, else of the latest probe answers seen).

Streaming (``stream: true``; ``stream_chunks``, in the order sent): a first chunk with
``role`` and a line saying what runs, sent before the episode starts; one chunk per action
the controller took (a branch opened, advanced, finished or read whole, the leader of the
vote so far and its count, the billed tokens), all as ``delta.reasoning_content`` (the field
vLLM and DeepSeek use for reasoning; the openai client keeps unknown fields, in
``delta.model_extra``; a client may show it or ignore it); then the answer text as
``delta.content``; then a chunk with ``finish_reason`` and the ``autotts`` extension (and
``usage``); with ``stream_options.include_usage``, a last chunk with ``choices: []`` and the
``usage``, as OpenAI sends it; then ``data: [DONE]``. A failure after the stream started is
an ``{"error": …}`` event (the openai client raises it as an ``APIError``).
"""

from __future__ import annotations

import json
import math
from collections import Counter
from dataclasses import dataclass
from typing import Any, Callable, Mapping, Sequence

from mlflow_autotts.errors import AutoTTSError
from mlflow_autotts.live.episode import LiveResult
from mlflow_autotts.live.prompts import Message
from mlflow_autotts.settings import bounded, check_bounds

EXTENSION = "autotts"
"""The response's extension field."""
SAMPLING_FIELDS = ("temperature", "top_p", "seed", "stop", "presence_penalty", "frequency_penalty", "logit_bias",
                   "logprobs", "top_logprobs", "top_k", "min_p", "repetition_penalty")
"""Refused when set: the served model's live settings decide sampling."""
UNSUPPORTED = ("tools", "tool_choice", "functions", "function_call", "response_format", "audio", "modalities",
               "prediction", "web_search_options", "reasoning_effort", "service_tier", "parallel_tool_calls")
ACCEPTED = frozenset({"model", "messages", "beta", "metadata", "n", "user", "store", "stream", "stream_options",
                      "max_tokens", "max_completion_tokens", "deadline_s", *SAMPLING_FIELDS, *UNSUPPORTED})
CUT_SHORT_REASONS = ("max_tokens", "deadline")
"""What may cut an answered episode short (``live.episode``; ``cancelled`` is never answered)."""


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
    """What the operator allows one request: a part of ``ServeConfig`` (its fields are
    ``autotts serve`` options), declared once here where the parser reads them."""

    min_beta: float = bounded(0.0, ge=0.0, le=1.0)
    """The lowest β a request may ask for (``"beta"`` in the body, ``extra_body`` in the openai client)."""
    max_beta: float = bounded(1.0, ge=0.0, le=1.0)
    """The highest β a request may ask for."""
    max_token_cap: int = bounded(1_000_000, ge=1)
    """The largest cap on billed tokens a request may ask for (``max_completion_tokens`` /
    ``max_tokens``); a larger one is a 400."""
    max_deadline_seconds: float = bounded(3600.0, gt=0.0)
    """The longest deadline a request may ask for (``deadline_s``, seconds); a longer one is a 400.
    A request without one runs until its controller answers (or the live ``overall_timeout``)."""
    max_question_chars: int = bounded(100_000, ge=1)
    """Longest conversation (characters of all its messages' text, the question's and every
    earlier turn's) accepted before tokenising it; the model's context is checked after (both
    are 400)."""

    def __post_init__(self) -> None:
        check_bounds(self, bad=lambda name, why: AutoTTSError(f"serve config: {name} {why}"))
        if self.min_beta > self.max_beta:
            raise AutoTTSError(f"serve config: min_beta ({self.min_beta:g}) must be <= max_beta ({self.max_beta:g})")


@dataclass(frozen=True)
class ChatRequest:
    """One chat-completions request, as the episode needs it."""

    model: str
    """The id the request named (echoed in the response)."""
    messages: tuple[Message, ...]
    """The conversation, which the model's chat template renders; the last turn is the user's."""
    beta: float | None
    """The β asked for, within the operator's bounds; None: the model's own."""
    max_tokens: int | None = None
    """The cap on billed tokens; None: none."""
    deadline_s: float | None = None
    """Seconds from the request's arrival to stop the episode at; None: none."""
    stream: bool = False
    include_usage: bool = False
    """``stream_options.include_usage``: a last chunk with the usage."""

    @property
    def question(self) -> str:
        """The last user turn: what the controller answers."""
        return self.messages[-1].content


def _show(value: Any) -> str:
    text = json.dumps(value, default=repr)
    return text if len(text) <= 60 else text[:57] + "..."


ROLES = {"system": "system", "developer": "system", "user": "user", "assistant": "assistant"}
"""The roles a message may have, and the chat template's role each is rendered as."""


def _text_content(content: Any, where: str) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list) and content:
        texts = []
        for k, part in enumerate(content):
            if not (isinstance(part, dict) and part.get("type") == "text" and isinstance(part.get("text"), str)):
                raise bad_request(f"{where}[{k}] must be a text part {{\"type\": \"text\", \"text\": …}}, "
                                  f"got {_show(part)}", "messages")
            texts.append(part["text"])
        return "".join(texts)
    raise bad_request(f"{where} must be text or a list of text parts, got {_show(content)}", "messages")


def _message(i: int, message: Any, turns_began: bool) -> Message:
    """Message ``i`` of a request; ``turns_began``: a user or assistant message came before it."""
    where = f"messages[{i}]"
    if not isinstance(message, dict):
        raise bad_request(f"{where} must be an object with a role and a content, got {_show(message)}", "messages")
    role = message.get("role")
    if not (isinstance(role, str) and role in ROLES):
        tools = " (tools are not supported)" if role in ("tool", "function") else ""
        raise bad_request(f"{where}.role must be one of {', '.join(ROLES)}, got {_show(role)}{tools}", "messages")
    extra = sorted(str(k) for k in message if k not in ("role", "content", "name"))
    if extra:
        raise bad_request(f"{where} has unsupported field(s) {', '.join(map(_show, extra))}", "messages")
    if message.get("name") is not None and not isinstance(message["name"], str):
        raise bad_request(f"{where}.name must be a string, got {_show(message['name'])}", "messages")
    if ROLES[role] == "system" and turns_began:
        raise bad_request(f"{where} is {role!r}: a {role} message must come before the conversation's user and "
                          "assistant turns", "messages")
    return Message(ROLES[role], _text_content(message.get("content"), f"{where}.content"))


def _messages(messages: Any, limits: RequestLimits) -> tuple[Message, ...]:
    """The conversation of a request (see the module docstring); its last turn is the question."""
    if not isinstance(messages, list) or not messages:
        raise bad_request("messages must be a non-empty list of messages", "messages")
    conversation: list[Message] = []
    for i, message in enumerate(messages):
        conversation.append(_message(i, message, bool(conversation) and conversation[-1].role != "system"))
    last = len(conversation) - 1
    if conversation[-1].role != "user":
        raise bad_request(f"messages[{last}] is {messages[-1]['role']!r}: the last message must be the user's question "
                          "for the controller to answer", "messages")
    if not conversation[-1].content.strip():
        raise bad_request(f"messages[{last}].content is empty: the controller needs a question", "messages")
    chars = sum(len(m.content) for m in conversation)
    if chars > limits.max_question_chars:
        whole = "the question is" if len(conversation) == 1 else f"the conversation's {len(conversation)} messages are"
        raise bad_request(f"{whole} {chars:,} characters; this server accepts at most {limits.max_question_chars:,}",
                          "messages", "context_length_exceeded")
    return tuple(conversation)


def _metadata(body: Mapping[str, Any]) -> dict[str, str]:
    metadata = body.get("metadata")
    if metadata is not None and not (isinstance(metadata, dict) and all(
            isinstance(k, str) and isinstance(v, str) for k, v in metadata.items())):
        raise bad_request("metadata must be an object of string values", "metadata")
    return metadata or {}


def _number(body: Mapping[str, Any], metadata: Mapping[str, str], name: str, what: str) -> float | None:
    """``name`` given at the top level (a JSON number) and/or in ``metadata`` (its text); both
    must agree."""
    given: list[float] = []
    value = body.get(name)
    if value is not None:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise bad_request(f"{name} must be {what}, got {_show(value)}", name)
        given.append(float(value))
    if name in metadata:
        try:
            given.append(float(metadata[name]))
        except ValueError:
            raise bad_request(f"metadata.{name} must be {what}, got {_show(metadata[name])}", "metadata") from None
    if not given:
        return None
    if len(given) == 2 and given[0] != given[1]:
        raise bad_request(f"{name} ({given[0]:g}) and metadata.{name} ({given[1]:g}) differ; give one", name)
    return given[0]


def _beta(body: Mapping[str, Any], metadata: Mapping[str, str], limits: RequestLimits) -> float | None:
    beta = _number(body, metadata, "beta", "a number in [0, 1]")
    if beta is not None and not (math.isfinite(beta) and limits.min_beta <= beta <= limits.max_beta):
        raise bad_request(f"beta must be within [{limits.min_beta:g}, {limits.max_beta:g}] on this server, "
                          f"got {beta!r}", "beta")
    return beta


def _deadline(body: Mapping[str, Any], metadata: Mapping[str, str], limits: RequestLimits) -> float | None:
    deadline = _number(body, metadata, "deadline_s", "a number of seconds")
    if deadline is not None and not (math.isfinite(deadline) and 0 < deadline <= limits.max_deadline_seconds):
        raise bad_request(f"deadline_s must be more than 0 and at most {limits.max_deadline_seconds:g} seconds on this "
                          f"server, got {deadline!r}", "deadline_s")
    return deadline


def _cap(body: Mapping[str, Any], limits: RequestLimits) -> int | None:
    caps: dict[str, int] = {}
    for name in ("max_completion_tokens", "max_tokens"):
        value = body.get(name)
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, int):
            raise bad_request(f"{name} must be a whole number of tokens, got {_show(value)}", name)
        if not 1 <= value <= limits.max_token_cap:
            raise bad_request(f"{name} must be within [1, {limits.max_token_cap:,}] on this server, got {value}", name)
        caps[name] = value
    if len(set(caps.values())) > 1:
        raise bad_request(f"max_completion_tokens ({caps['max_completion_tokens']}) and max_tokens "
                          f"({caps['max_tokens']}) differ; give one", "max_tokens")
    return next(iter(caps.values()), None)


def _streaming(body: Mapping[str, Any]) -> tuple[bool, bool]:
    stream = body.get("stream")
    if stream is not None and not isinstance(stream, bool):
        raise bad_request(f"stream must be true or false, got {_show(stream)}", "stream")
    options = body.get("stream_options")
    if options is None:
        return bool(stream), False
    if not stream:
        raise bad_request("stream_options is only allowed with stream: true", "stream_options")
    if not isinstance(options, dict) or set(options) - {"include_usage"} or not isinstance(
            options.get("include_usage", False), bool):
        raise bad_request(f"stream_options must be {{\"include_usage\": true|false}}, got {_show(options)}",
                          "stream_options")
    return True, bool(options.get("include_usage", False))


def served_model(body: Mapping[str, Any], model_ids: Sequence[str]) -> str:
    """The body's ``model``, one of the served ids: 400 when missing, 404 when unknown (both routes)."""
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise bad_request("model is required: one of " + ", ".join(model_ids), "model")
    if model not in model_ids:
        raise ApiError(404, f"the model {_show(model)} does not exist on this server; it serves "
                            f"{', '.join(model_ids)}", "invalid_request_error", "model_not_found", "model")
    return model


def parse_chat_request(body: Any, limits: RequestLimits, model_ids: Sequence[str]) -> ChatRequest:
    """The ``ChatRequest`` of a chat-completions body naming one of ``model_ids``; ``ApiError``
    (400, or 404 for an unknown model) for anything else, never another exception (see the
    module docstring)."""
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
    if body.get("n") not in (None, 1):
        raise bad_request(f"n must be 1, got {_show(body.get('n'))}", "n")
    model = served_model(body, model_ids)
    messages = _messages(body.get("messages"), limits)
    metadata = _metadata(body)
    stream, include_usage = _streaming(body)
    return ChatRequest(model, messages, _beta(body, metadata, limits), _cap(body, limits),
                       _deadline(body, metadata, limits), stream, include_usage)


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
    cut_short: str | None = None
    """Why the episode was stopped (``max_tokens``, ``deadline``); the answer is then the vote."""
    vote_source: str | None = None
    """When cut short: ``final``, ``probes`` or ``none`` (``live.episode.Vote``)."""


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
        engine_calls=stats.engine_calls, wall_seconds=stats.wall_seconds, controller=controller, beta=beta,
        cut_short=result.stopped, vote_source=result.vote.source if result.vote is not None else None)


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


def extension(request: ChatRequest, o: EpisodeOutcome) -> dict[str, Any]:
    """The ``autotts`` extension field of a response (see the module docstring)."""
    return {
        "answer": o.answer, "votes": o.votes, "content_source": o.content_source,
        "branches": {"opened": o.branches_opened, "finished": o.branches_finished,
                     "generated": o.branches_generated},
        "controller": o.controller, "beta": o.beta, "wall_seconds": round(o.wall_seconds, 3),
        "max_tokens": request.max_tokens, "deadline_s": request.deadline_s,
        "cut_short": None if o.cut_short is None else {"reason": o.cut_short, "vote_source": o.vote_source}}


def finish_reason(o: EpisodeOutcome) -> str:
    """``length`` when the cap or the deadline cut the episode short, else ``stop``."""
    return "stop" if o.cut_short is None else "length"


def chat_response(request: ChatRequest, o: EpisodeOutcome, response_id: str, created: int) -> dict[str, Any]:
    """OpenAI's ``chat.completion`` object for one episode, with the ``autotts`` extension."""
    return {
        "id": response_id,
        "object": "chat.completion",
        "created": created,
        "model": request.model,
        "choices": [{"index": 0, "message": {"role": "assistant", "content": o.content},
                     "finish_reason": finish_reason(o), "logprobs": None}],
        "usage": usage(o),
        EXTENSION: extension(request, o),
    }


# ----------------------------------------------------------------------------- streaming
REASONING = "reasoning_content"
"""The delta field progress goes in (vLLM's and DeepSeek's reasoning field)."""
CONTENT_PIECE = 1024
"""Characters of the answer per ``delta.content`` chunk."""


def chunk(request: ChatRequest, response_id: str, created: int, delta: Mapping[str, Any] | None,
          finish: str | None = None, **extra: Any) -> dict[str, Any]:
    """One ``chat.completion.chunk``; ``delta`` None gives ``choices: []`` (the usage chunk)."""
    choices = [] if delta is None else [{"index": 0, "delta": dict(delta), "finish_reason": finish,
                                          "logprobs": None}]
    return {"id": response_id, "object": "chat.completion.chunk", "created": created, "model": request.model,
            "choices": choices, **extra}


def start_text(request: ChatRequest, controller: str, beta: float) -> str:
    """The first progress line: what runs, within which limits."""
    limits = [f"cap {request.max_tokens:,} tokens" if request.max_tokens else "",
              f"deadline {request.deadline_s:g} s" if request.deadline_s else ""]
    shown = ", ".join(x for x in limits if x)
    return f"controller {controller} at beta {beta:g}{f' ({shown})' if shown else ''}\n"


def progress_text(episode: Any, progress: Any) -> str:
    """One line per action (``live.episode.Progress``), with the vote so far and the bill."""
    p = progress
    if p.action == "read":
        what = f"branch {p.branch} read whole: {p.answer}"
    elif p.finished:
        what = f"branch {p.branch} finished after {p.step} step{'s' if p.step != 1 else ''}: {p.answer}"
    elif p.action == "probe_new":
        what = f"branch {p.branch} opened, probed: {p.answer}"
    else:
        what = f"branch {p.branch} step {p.step}, probed: {p.answer}"
    vote = episode.vote()
    leader = "" if vote.answer is None else (
        f"; leader {vote.answer} ({vote.votes[vote.answer]} of {sum(vote.votes.values())} "
        f"{'finished' if vote.source == 'final' else 'probed'})")
    return f"{what}{leader}; {p.billed:,} tokens\n"


def end_text(o: EpisodeOutcome, left_open: int) -> str:
    """The last progress line: why the episode ended, and the branches left unfinished."""
    why = {"max_tokens": "the token cap is reached", "deadline": "the deadline passed"}
    head = (f"stopped: {why.get(o.cut_short, o.cut_short)}; answering by the vote of the "
            f"{'finished branches' if o.vote_source == 'final' else 'latest probes'}"
            if o.cut_short else "done")
    pruned = f", {left_open} branch{'es' if left_open != 1 else ''} left unfinished (pruned)" if left_open else ""
    return f"{head}: answer {o.answer}{pruned}; {o.billed_tokens:,} tokens billed\n"


def stream_chunks(request: ChatRequest, o: EpisodeOutcome, response_id: str, created: int) -> list[dict[str, Any]]:
    """The chunks after the progress: the answer text, the finish (with the extension and the
    usage), and, with ``include_usage``, OpenAI's usage chunk."""
    out = [chunk(request, response_id, created, {"content": o.content[k: k + CONTENT_PIECE]})
           for k in range(0, len(o.content), CONTENT_PIECE)]
    out.append(chunk(request, response_id, created, {}, finish_reason(o), usage=usage(o),
                     **{EXTENSION: extension(request, o)}))
    if request.include_usage:
        out.append(chunk(request, response_id, created, None, usage=usage(o)))
    return out


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
    "chunk",
    "decode_body",
    "end_text",
    "extension",
    "finish_reason",
    "error_body",
    "models_list",
    "outcome_of",
    "parse_chat_request",
    "progress_text",
    "start_text",
    "stream_chunks",
    "usage",
]
