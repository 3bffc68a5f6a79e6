"""OpenAI's Responses API of ``autotts serve`` (``POST /v1/responses``), as pure functions.

The same episode as ``/v1/chat/completions`` in the Responses API's shapes: the request becomes
the chat route's ``ChatRequest`` (so ``ServedModel.answer`` runs it unchanged), and the answer
is read from the same ``EpisodeOutcome`` through ``protocol.usage`` and ``protocol.extension``,
so both routes report one set of numbers. Objects are built with MLflow's Responses types
(``mlflow.types.responses``: what MLflow's own agent server emits), which validate the output
items, statuses and events; the tests validate every object sent against the ``openai``
client's own models, which are stricter (``input_tokens_details.cache_write_tokens`` is one
field MLflow's ``ResponseUsage`` does not have yet; it is added).

What a request may say (anything else is a 400 naming the field, as on the chat route):

- ``model``: one of the served ids, else 404 ``model_not_found``;
- ``input``: the question as a string, or a list of message items ``{"role", "content"}``
  (``"type": "message"``, an ``id`` and a ``status`` may come along, so a previous
  response's message can be sent back) whose content is a string or a list of
  ``input_text`` / ``output_text`` parts (joined); roles ``user``, ``assistant``, ``system``
  and ``developer`` (which becomes ``system``: chat templates know no ``developer``); the last
  one is the user's question. Other items (function calls, reasoning, images, files) are
  refused. ``instructions`` is a system message put first. The text of all turns together is
  at most ``max_question_chars``;
- ``max_output_tokens``: the cap on *billed* tokens, a whole number in ``[1, max_token_cap]``
  (the chat route's ``max_completion_tokens``);
- ``beta`` and ``deadline_s`` at the top level (``extra_body``) or in ``metadata`` as strings,
  exactly as on the chat route (``protocol._beta``, ``_deadline``, ``_metadata``);
- ``stream``: a bool; ``stream_options``: ``{"include_obfuscation": bool}``, only with a stream
  (no obfuscation is sent either way);
- accepted, unused: ``store``, ``user``, ``safety_identifier``, ``prompt_cache_key`` (strings
  or a bool as OpenAI types them), ``parallel_tool_calls`` (a bool: no tools run),
  ``truncation`` (``auto`` or ``disabled``: nothing is truncated; a conversation too long for
  the model is a 400 either way), ``background: false``, ``include: []``, ``tools: []``,
  ``tool_choice: "none" | "auto"`` and ``text: {"format": {"type": "text"}}`` (the defaults);
- refused with a reason: sampling fields (the served model's live settings decide them),
  tools, tool choices, ``max_tool_calls``, text formats, ``reasoning`` (β is the budget knob),
  ``previous_response_id``, ``conversation`` and ``prompt`` (nothing is stored), ``include``,
  background runs.

The response (``response_body``): ``object: "response"``, an id ``resp_…``, ``status``
``completed``, or ``incomplete`` with ``incomplete_details.reason = "max_output_tokens"`` when
the token cap or the deadline cut the episode short (the answer is then the vote so far; the
extension's ``cut_short`` says which); ``output``: one ``message`` item with one
``output_text`` part holding the chat route's ``content`` (its status ``incomplete`` too when
cut short); ``usage``: ``input_tokens`` (the chat prompt), ``output_tokens`` = the billed
tokens, ``total_tokens``, ``input_tokens_details.cached_tokens`` 0 (see ``protocol``: the
engine's cache counts are kept out of it), ``output_tokens_details.reasoning_tokens`` = the
billed tokens (every billed token is the episode's reasoning; the message repeats one finished
branch among them) beside the chat route's details (``generated_tokens``, ``probe_tokens``, …);
``instructions``, ``metadata``, ``max_output_tokens`` and ``user`` echoed; and the ``autotts``
extension of the chat route (``response.model_extra["autotts"]`` in the openai client).

Streaming (``ResponseEvents``, each event with its ``sequence_number``): ``response.created``
and ``response.in_progress``; a ``reasoning`` output item (index 0) whose one summary part
receives the progress as ``response.reasoning_summary_text.delta`` events: the line saying what
runs (sent before the episode starts), one line per controller action, the last line; then the
reasoning item is done, and the ``message`` item (index 1) follows with
``response.output_item.added``, ``response.content_part.added``, the answer in
``response.output_text.delta`` pieces, ``response.output_text.done``,
``response.content_part.done``, ``response.output_item.done``; then ``response.completed`` or
``response.incomplete`` with the whole response (both items, usage, extension). A failure after
the stream started is an ``error`` event (with the chat route's error code) and a
``response.failed`` whose ``error.code`` is the nearest of OpenAI's codes (``invalid_prompt``,
``rate_limit_exceeded``, ``server_error``).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field, replace
from typing import Any, Mapping, Sequence

from mlflow.types.responses import (
    ResponsesAgentResponse,
    ResponsesAgentStreamEvent,
    create_reasoning_item,
    create_text_output_item,
)
from mlflow.types.responses_helpers import IncompleteDetails, ResponseError, ResponseUsage

from mlflow_autotts.live.prompts import Message
from mlflow_autotts.serving.endpoint.protocol import (
    CONTENT_PIECE,
    EXTENSION,
    SAMPLING_FIELDS,
    ApiError,
    ChatRequest,
    EpisodeOutcome,
    RequestLimits,
    _beta,
    _deadline,
    _metadata,
    _show,
    served_model,
    bad_request,
    extension,
    usage,
)

UNSUPPORTED = ("tools", "tool_choice", "max_tool_calls", "text", "reasoning", "previous_response_id",
               "conversation", "prompt", "background", "include", "service_tier", "context_management",
               "prompt_cache_retention")
DEFAULTS: dict[str, tuple[Any, ...]] = {
    "tools": ([],), "tool_choice": ("none", "auto"), "text": ({"format": {"type": "text"}},), "background": (False,),
    "include": ([],)}
"""Values of unsupported fields that ask for nothing (what some clients always send)."""
UNUSED = {"store": bool, "user": str, "safety_identifier": str, "prompt_cache_key": str, "parallel_tool_calls": bool}
"""Accepted and unused, with the type OpenAI gives them."""
ACCEPTED = frozenset({"model", "input", "instructions", "max_output_tokens", "metadata", "beta", "deadline_s",
                      "stream", "stream_options", "truncation", *UNUSED, *SAMPLING_FIELDS, *UNSUPPORTED})
ROLES = {"user": "user", "assistant": "assistant", "system": "system", "developer": "system"}
"""The roles of input messages, as the chat template takes them."""
TEXT_PARTS = {"input_text": {"type", "text"}, "output_text": {"type", "text", "annotations", "logprobs"}}
"""The content parts read, with the keys each may carry."""
ITEM_KEYS = {"type", "role", "content", "id", "status"}
OPENAI_ERROR_CODES = {400: "invalid_prompt", 429: "rate_limit_exceeded"}
"""``response.failed``'s ``error.code`` is one of OpenAI's; anything else is ``server_error``."""


# ----------------------------------------------------------------------------- requests
@dataclass(frozen=True)
class ResponsesRequest:
    """A Responses request: the episode's ``ChatRequest`` and what the response echoes."""

    chat: ChatRequest
    instructions: str | None = None
    metadata: dict[str, str] = field(default_factory=dict)
    user: str | None = None


def _content(content: Any, where: str) -> str:
    """The text of a message's ``content``: a string, or a list of text parts (joined)."""
    if isinstance(content, str):
        return content
    if not isinstance(content, list) or not content:
        raise bad_request(f"{where}.content must be text or a non-empty list of input_text parts, got "
                          f"{_show(content)}", "input")
    texts = []
    for k, part in enumerate(content):
        kind = part.get("type") if isinstance(part, dict) else None
        if not isinstance(kind, str) or kind not in TEXT_PARTS or not isinstance(part.get("text"), str):
            shown = f"a {_show(kind)} part" if isinstance(kind, str) else _show(part)
            raise bad_request(f"{where}.content[{k}] must be a text part {{\"type\": \"input_text\", \"text\": …}} "
                              f"(this endpoint reads text only), got {shown}", "input")
        extra = sorted(set(part) - TEXT_PARTS[kind])
        if extra:
            raise bad_request(f"{where}.content[{k}] has unsupported field(s) {', '.join(map(_show, extra))}",
                              "input")
        texts.append(part["text"])
    return "".join(texts)


def _item(item: Any, where: str) -> Message:
    if not isinstance(item, dict):
        raise bad_request(f"{where} must be a message {{\"role\": …, \"content\": …}}, got {_show(item)}", "input")
    kind = item.get("type", "message")
    if kind != "message":
        raise bad_request(f"{where} is a {_show(kind)} item; this endpoint takes message items only", "input")
    extra = sorted(str(k) for k in set(item) - ITEM_KEYS)
    if extra:
        raise bad_request(f"{where} has unsupported field(s) {', '.join(map(_show, extra))}", "input")
    role = item.get("role")
    if not isinstance(role, str) or role not in ROLES:
        raise bad_request(f"{where}.role must be \"user\", \"assistant\", \"system\" or \"developer\", got "
                          f"{_show(role)}", "input")
    return Message(ROLES[role], _content(item.get("content"), where))


def _messages(body: Mapping[str, Any], limits: RequestLimits) -> tuple[Message, ...]:
    """The conversation: ``instructions`` as a system turn, then ``input``; the last is the user's."""
    given = body.get("input")
    if isinstance(given, str):
        turns = [Message("user", given)]
    elif isinstance(given, list) and given:
        turns = [_item(item, f"input[{k}]") for k, item in enumerate(given)]
    else:
        raise bad_request(f"input must be a string or a non-empty list of messages, got {_show(given)}", "input")
    if turns[-1].role != "user":
        raise bad_request(f"the last input message must be the user's question, got role {turns[-1].role!r}",
                          "input")
    if not turns[-1].content.strip():
        raise bad_request("the user's question (the last input message) is empty", "input")
    instructions = body.get("instructions")
    if instructions is not None and not isinstance(instructions, str):
        raise bad_request(f"instructions must be a string, got {_show(instructions)}", "instructions")
    if instructions:
        turns.insert(0, Message("system", instructions))
    chars = sum(len(m.content) for m in turns)
    if chars > limits.max_question_chars:
        raise bad_request(f"the input (instructions and messages) is {chars:,} characters; this server accepts at "
                          f"most {limits.max_question_chars:,}", "input", "context_length_exceeded")
    return tuple(turns)


def _cap(body: Mapping[str, Any], limits: RequestLimits) -> int | None:
    value = body.get("max_output_tokens")
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise bad_request(f"max_output_tokens must be a whole number of tokens, got {_show(value)}",
                          "max_output_tokens")
    if not 1 <= value <= limits.max_token_cap:
        raise bad_request(f"max_output_tokens must be within [1, {limits.max_token_cap:,}] on this server, got "
                          f"{value}", "max_output_tokens")
    return value


def _stream(body: Mapping[str, Any]) -> bool:
    stream = body.get("stream")
    if stream is not None and not isinstance(stream, bool):
        raise bad_request(f"stream must be true or false, got {_show(stream)}", "stream")
    options = body.get("stream_options")
    if options is not None:
        if not stream:
            raise bad_request("stream_options is only allowed with stream: true", "stream_options")
        if not isinstance(options, dict) or set(options) - {"include_obfuscation"} or not isinstance(
                options.get("include_obfuscation", False), bool):
            raise bad_request(f"stream_options must be {{\"include_obfuscation\": true|false}}, got {_show(options)}",
                              "stream_options")
    return bool(stream)


def _unused(body: Mapping[str, Any]) -> None:
    """Fields accepted and unused must still have their type: a typo is not silently ignored."""
    for name, kind in UNUSED.items():
        value = body.get(name)
        if value is not None and not isinstance(value, kind):
            raise bad_request(f"{name} must be a {'boolean' if kind is bool else 'string'}, got {_show(value)}", name)
    if body.get("truncation") not in (None, "auto", "disabled"):
        raise bad_request(f"truncation must be \"auto\" or \"disabled\", got {_show(body['truncation'])}",
                          "truncation")


def _asks_nothing(value: Any, defaults: Sequence[Any]) -> bool:
    """``value`` is one of ``defaults`` as JSON (so ``0`` is not ``false``)."""
    shown = json.dumps(value, sort_keys=True)
    return any(shown == json.dumps(d, sort_keys=True) for d in defaults)


def parse_responses_request(body: Any, limits: RequestLimits, model_ids: Sequence[str]) -> ResponsesRequest:
    """The ``ResponsesRequest`` of a Responses body naming one of ``model_ids``; ``ApiError``
    (400, or 404 for an unknown model) for anything else, never another exception."""
    if not isinstance(body, dict):
        raise bad_request(f"request body must be a JSON object, got {_show(body)}")
    unknown = sorted(str(k) for k in body if k not in ACCEPTED)
    if unknown:
        raise bad_request(f"unsupported field(s): {', '.join(map(_show, unknown))}", unknown[0])
    for name in UNSUPPORTED:
        value = body.get(name)
        if value is not None and not _asks_nothing(value, DEFAULTS.get(name, ())):
            why = " (its budget knob is beta)" if name == "reasoning" else ""
            raise bad_request(f"{name} is not supported by a controller endpoint{why}, got {_show(value)}", name)
    for name in SAMPLING_FIELDS:  # the chat route's (top_logprobs among them)
        if body.get(name) is not None:
            raise bad_request(f"{name} cannot be set per request: the served model's live settings decide "
                              "sampling", name)
    _unused(body)
    model = served_model(body, model_ids)
    messages = _messages(body, limits)
    metadata = _metadata(body)
    chat = ChatRequest(model, messages, _beta(body, metadata, limits), _cap(body, limits),
                       _deadline(body, metadata, limits), _stream(body))
    return ResponsesRequest(chat, body.get("instructions"), metadata, body.get("user"))


def for_responses(err: ApiError) -> ApiError:
    """An error of the episode as this route names it: the chat route's ``messages`` is ``input``."""
    return replace(err, param="input") if err.param == "messages" else err


# ----------------------------------------------------------------------------- responses
def response_usage(o: EpisodeOutcome) -> dict[str, Any]:
    """The Responses ``usage`` of an episode, from the chat route's numbers (``protocol.usage``)."""
    chat = usage(o)
    out = ResponseUsage(input_tokens=chat["prompt_tokens"], output_tokens=chat["completion_tokens"],
                        total_tokens=chat["total_tokens"], input_tokens_details={"cached_tokens": 0},
                        output_tokens_details={"reasoning_tokens": chat["completion_tokens"]}).model_dump()
    out["input_tokens_details"]["cache_write_tokens"] = 0  # OpenAI's newer required field
    out["output_tokens_details"].update(chat["completion_tokens_details"])
    return out


def message_item(item_id: str, text: str, status: str) -> dict[str, Any]:
    """An assistant ``message`` output item with one ``output_text`` part."""
    return {**create_text_output_item(text, item_id), "status": status}


def reasoning_item(item_id: str, text: str | None, status: str) -> dict[str, Any]:
    """A ``reasoning`` output item whose summary is ``text`` (none yet: None)."""
    item = create_reasoning_item(item_id, text or "")
    return {**item, "summary": [] if text is None else item["summary"], "status": status}


def _status(o: EpisodeOutcome) -> str:
    return "completed" if o.cut_short is None else "incomplete"


def response_object(req: ResponsesRequest, response_id: str, created: int, output: Sequence[Mapping[str, Any]],
                    status: str, o: EpisodeOutcome | None = None, error: ApiError | None = None) -> dict[str, Any]:
    """A ``response`` object (MLflow's ``ResponsesAgentResponse``); with ``o``, its usage and the
    ``autotts`` extension."""
    incomplete = IncompleteDetails(reason="max_output_tokens") if status == "incomplete" else None
    failed = None if error is None else ResponseError(code=OPENAI_ERROR_CODES.get(error.status, "server_error"),
                                                      message=error.message)
    body = ResponsesAgentResponse(
        id=response_id, created_at=created, model=req.chat.model, status=status, output=list(output),
        incomplete_details=incomplete, error=failed, instructions=req.instructions, metadata=req.metadata or None,
        max_output_tokens=req.chat.max_tokens, user=req.user, parallel_tool_calls=False, tools=[],
        tool_choice="none", truncation="disabled",
    ).model_dump(exclude={"custom_outputs"})
    body["created_at"] = created  # OpenAI's are whole seconds
    if o is not None:
        body["usage"] = response_usage(o)
        body[EXTENSION] = extension(req.chat, o)
    return body


def response_body(req: ResponsesRequest, o: EpisodeOutcome, response_id: str, created: int,
                  message_id: str) -> dict[str, Any]:
    """The ``response`` object of a finished episode (not streamed): one message item."""
    status = _status(o)
    return response_object(req, response_id, created, [message_item(message_id, o.content, status)], status, o)


# ----------------------------------------------------------------------------- streaming
class ResponseEvents:
    """The events of one streamed response, numbered as they are made (see the module
    docstring); one instance per stream, called from the event loop only."""

    def __init__(self, req: ResponsesRequest, response_id: str, created: int, reasoning_id: str, message_id: str):
        self.req, self.response_id, self.created = req, response_id, created
        self.reasoning_id, self.message_id = reasoning_id, message_id
        self.sequence = 0
        self.summary: list[str] = []

    def event(self, kind: str, **fields: Any) -> dict[str, Any]:
        """One event as MLflow validates it, with the next sequence number."""
        out = ResponsesAgentStreamEvent(type=kind, sequence_number=self.sequence, **fields).model_dump(
            exclude={"custom_outputs"})
        self.sequence += 1
        return out

    def _reasoning(self, status: str) -> dict[str, Any]:
        return reasoning_item(self.reasoning_id, "".join(self.summary), status)

    def _delta(self, text: str) -> dict[str, Any]:
        self.summary.append(text)
        return self.event("response.reasoning_summary_text.delta", item_id=self.reasoning_id, output_index=0,
                          summary_index=0, delta=text)

    def opening(self, start: str) -> list[dict[str, Any]]:
        """Created, in progress, the reasoning item opened with ``start`` as its first line."""
        snapshot = response_object(self.req, self.response_id, self.created, [], "in_progress")
        return [self.event("response.created", response=snapshot),
                self.event("response.in_progress", response=snapshot),
                self.event("response.output_item.added", output_index=0,
                           item=reasoning_item(self.reasoning_id, None, "in_progress")),
                self.event("response.reasoning_summary_part.added", item_id=self.reasoning_id, output_index=0,
                           summary_index=0, part={"type": "summary_text", "text": ""}),
                self._delta(start)]

    def progress(self, line: str) -> list[dict[str, Any]]:
        """One line of progress (a controller action)."""
        return [self._delta(line)]

    def closing(self, o: EpisodeOutcome, end: str) -> list[dict[str, Any]]:
        """The last line, the reasoning item done, the message item with the answer, the response."""
        out = [self._delta(end)]
        text = "".join(self.summary)
        out += [self.event("response.reasoning_summary_text.done", item_id=self.reasoning_id, output_index=0,
                           summary_index=0, text=text),
                self.event("response.reasoning_summary_part.done", item_id=self.reasoning_id, output_index=0,
                           summary_index=0, part={"type": "summary_text", "text": text}),
                self.event("response.output_item.done", output_index=0, item=self._reasoning("completed"))]
        status, where = _status(o), {"item_id": self.message_id, "output_index": 1, "content_index": 0}
        out += [self.event("response.output_item.added", output_index=1,
                           item={**message_item(self.message_id, "", "in_progress"), "content": []}),
                self.event("response.content_part.added", **where,
                           part={"type": "output_text", "text": "", "annotations": []})]
        out += [self.event("response.output_text.delta", **where, delta=o.content[k: k + CONTENT_PIECE], logprobs=[])
                for k in range(0, len(o.content), CONTENT_PIECE)]
        message = message_item(self.message_id, o.content, status)
        out += [self.event("response.output_text.done", **where, text=o.content, logprobs=[]),
                self.event("response.content_part.done", **where, part=message["content"][0]),
                self.event("response.output_item.done", output_index=1, item=message)]
        final = response_object(self.req, self.response_id, self.created, [self._reasoning("completed"), message],
                                status, o)
        out.append(self.event("response.completed" if status == "completed" else "response.incomplete",
                              response=final))
        return out

    def failure(self, err: ApiError) -> list[dict[str, Any]]:
        """An ``error`` event and ``response.failed``, with the progress so far."""
        err = for_responses(err)
        failed = response_object(self.req, self.response_id, self.created, [self._reasoning("incomplete")],
                                 "failed", error=err)
        return [self.event("error", code=err.code or err.type, message=err.message, param=err.param),
                self.event("response.failed", response=failed)]


def sse_event(event: Mapping[str, Any]) -> str:
    """One server-sent event named by its type, as OpenAI sends the Responses stream."""
    return f"event: {event['type']}\ndata: {json.dumps(event, separators=(',', ':'))}\n\n"


__all__ = [
    "ResponseEvents",
    "ResponsesRequest",
    "for_responses",
    "message_item",
    "parse_responses_request",
    "reasoning_item",
    "response_body",
    "response_object",
    "response_usage",
    "sse_event",
]
