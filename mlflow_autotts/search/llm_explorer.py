"""The ``openai:<model>`` explorer: an LLM behind any OpenAI-compatible endpoint writes controllers.

One chat-completions call per proposal. The prompt (``prompts``) holds the controller
API, the reference controllers, the archive's leaderboard, a parent's code with where it
loses, and the last failure of this explorer's proposals; the reply's code is extracted
and statically checked (``extract``).

Failures reach the next prompt by two routes, so nothing depends on the loop calling back:

- a reply without acceptable code comes back as a ``Proposal`` whose
  ``meta["check_error"]`` holds ``"kind: message"`` (kind ``extract``, ``syntax`` or
  ``check``); the explorer remembers it at once, so the next call already shows it;
- a proposal that fails later (sandbox, scoring) is learnt either from
  ``report_failure(proposal, message)`` or from the archive: a ``Candidate`` whose
  proposal carries this explorer's ``meta["proposal_id"]`` (or, after a resume, this
  explorer's name) and has ``failure`` set.

The prompt shows the failure of the most recent proposal whose outcome is known, if that
outcome was a failure. The explorer does not import MLflow: the search loop enables
``mlflow.openai.autolog()`` to trace the calls.
"""

from __future__ import annotations

import logging
import math
import os
import random
import uuid
from typing import Any, Sequence

from mlflow_autotts.errors import AutoTTSError
from mlflow_autotts.search.extract import ProposalError, check_source, extract_code
from mlflow_autotts.search.prompts import build_messages, default_reference_sources, rank_candidates
from mlflow_autotts.search.types import Candidate, Proposal, Usage

log = logging.getLogger(__name__)

NAME_PREFIX = "openai:"


class ExplorerError(AutoTTSError):
    """The explorer cannot work: bad settings, missing credentials, an endpoint that fails."""


def make_client(base_url: str | None = None, api_key: str | None = None, *, timeout: float = 600.0,
                max_retries: int = 3) -> Any:
    """An ``openai.OpenAI`` client; unset ``base_url``/``api_key`` come from ``OPENAI_BASE_URL``
    / ``OPENAI_API_KEY`` (the client's own lookup). A custom endpoint without any key gets the
    placeholder ``EMPTY``, as local servers such as vLLM accept any key. Retries (with
    backoff, on connection errors, 408/409/429 and 5xx) and timeouts are the client's."""
    import openai

    if api_key is None and not os.environ.get("OPENAI_API_KEY") and (base_url or os.environ.get("OPENAI_BASE_URL")):
        api_key = "EMPTY"
    try:
        return openai.OpenAI(base_url=base_url, api_key=api_key, timeout=timeout, max_retries=max_retries)
    except openai.OpenAIError as exc:
        raise ExplorerError(f"cannot set up the OpenAI client: {exc} (set OPENAI_API_KEY, or OPENAI_BASE_URL "
                            "for a local server)") from None


def _price(value: float, label: str) -> float:
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise ExplorerError(f"invalid {label} {value!r}: must be a number of USD per million tokens") from None
    if not math.isfinite(v) or v < 0:
        raise ExplorerError(f"invalid {label} {value!r}: must be a finite number >= 0 (USD per million tokens)")
    return v


class LLMExplorer:
    """Proposes controllers written by an LLM; see the module docstring for failure feedback.

    Not thread-safe: call ``propose`` from one thread (the loop may score concurrently).
    """

    def __init__(
        self,
        model: str,
        *,
        client: Any | None = None,
        base_url: str | None = None,
        api_key: str | None = None,
        price_input: float = 0.0,
        price_output: float = 0.0,
        temperature: float | None = None,
        max_tokens: int | None = 8192,
        timeout: float = 600.0,
        max_retries: int = 3,
        reference_sources: dict[str, str] | None = None,
        leaderboard_size: int = 8,
        feedback_chars: int = 3000,
        extra_body: dict[str, Any] | None = None,
        seed: int = 0,
    ):
        """
        Args:
            model: Model name sent to the endpoint (e.g. ``gpt-4.1``, or the model a vLLM
                server serves).
            client: A ready ``openai.OpenAI`` client; else one is built from ``base_url``,
                ``api_key``, ``timeout`` and ``max_retries`` (env vars as fallback).
            price_input: USD per million prompt tokens.
            price_output: USD per million completion tokens.
            temperature: Sampling temperature; None leaves the server's default (some
                reasoning models accept no other).
            max_tokens: Completion token limit, sent as ``max_completion_tokens``; None
                sends none.
            reference_sources: Name -> source of the reference controllers shown in the
                prompt; None uses ``baselines``, ``parallel_probe`` and ``cmc``.
            leaderboard_size: Candidates shown in the leaderboard.
            feedback_chars: Longest parent feedback shown.
            extra_body: Extra request fields for the server (e.g. vLLM's
                ``{"chat_template_kwargs": {"enable_thinking": False}}``).
            seed: Seeds the parent sampling.
        """
        if not model or not str(model).strip():
            raise ExplorerError("the explorer model name is empty: use openai:<model>")
        self.model = str(model)
        self.name = f"{NAME_PREFIX}{self.model}"
        self.client = client if client is not None else make_client(
            base_url, api_key, timeout=timeout, max_retries=max_retries)
        self.price_input = _price(price_input, "input price")
        self.price_output = _price(price_output, "output price")
        self.temperature = temperature
        self.max_tokens = max_tokens
        self.reference_sources = dict(reference_sources) if reference_sources is not None else default_reference_sources()
        self.leaderboard_size = int(leaderboard_size)
        self.feedback_chars = int(feedback_chars)
        self.extra_body = dict(extra_body) if extra_body else None
        self._rng = random.Random(seed)
        self._issued: list[str] = []
        """Proposal ids of this instance, in issue order."""
        self._outcomes: dict[str, str | None] = {}
        """Known outcomes by proposal id: the failure message, or None when it scored."""
        self._input_tokens = 0
        self._output_tokens = 0
        self._usd = 0.0

    # --------------------------------------------------------------------- bookkeeping
    @property
    def total_usage(self) -> Usage:
        """What every call so far cost, summed."""
        return Usage(self._input_tokens, self._output_tokens, self._usd)

    def usage_of(self, response: Any) -> Usage:
        """A response's token usage priced per million tokens (0 for figures it lacks)."""
        u = getattr(response, "usage", None)
        tin = int(getattr(u, "prompt_tokens", 0) or 0) if u is not None else 0
        tout = int(getattr(u, "completion_tokens", 0) or 0) if u is not None else 0
        return Usage(tin, tout, (tin * self.price_input + tout * self.price_output) / 1e6)

    def report_failure(self, proposal: Proposal, message: str) -> None:
        """Record that ``proposal`` failed (checking in the sandbox, scoring); its message
        goes into the next prompt unless a later proposal's outcome is known by then."""
        pid = proposal.meta.get("proposal_id")
        if pid is None:
            return
        if pid not in self._issued:
            self._issued.append(pid)
        self._outcomes[pid] = message

    def _sync(self, archive: Sequence[Candidate]) -> list[str]:
        """Learn outcomes from the archive; the ids of this explorer's proposals, oldest first."""
        order: list[str] = []
        for c in archive:
            p = c.proposal
            pid = p.meta.get("proposal_id")
            if p.explorer != self.name or not pid:
                continue
            order.append(pid)
            if c.failure:
                self._outcomes[pid] = c.failure
            elif c.ok:
                self._outcomes[pid] = None
        seen = set(order)
        return order + [pid for pid in self._issued if pid not in seen]

    def previous_failure(self, archive: Sequence[Candidate] = ()) -> str | None:
        """The failure of the most recent proposal whose outcome is known, if it failed."""
        for pid in reversed(self._sync(archive)):
            if pid in self._outcomes:
                return self._outcomes[pid]
        return None

    def select_parent(self, archive: Sequence[Candidate]) -> Candidate | None:
        """A scored candidate with a point on the archive's accuracy/token front, sampled
        uniformly (so no single lineage takes over); None before anything is scored."""
        ranked = rank_candidates(archive)
        if not ranked:
            return None
        front = [c for c, k in ranked if k > 0] or [ranked[0][0]]
        return front[self._rng.randrange(len(front))]

    def messages(self, archive: Sequence[Candidate], parent: Candidate | None,
                 previous_failure: str | None) -> list[dict[str, str]]:
        return build_messages(
            archive=archive, parent=parent, previous_failure=previous_failure,
            reference_sources=self.reference_sources, leaderboard_size=self.leaderboard_size,
            feedback_chars=self.feedback_chars)

    # ------------------------------------------------------------------------ proposing
    def _request(self, messages: list[dict[str, str]]) -> Any:
        kwargs: dict[str, Any] = {"model": self.model, "messages": messages}
        if self.temperature is not None:
            kwargs["temperature"] = self.temperature
        if self.max_tokens is not None:
            kwargs["max_completion_tokens"] = int(self.max_tokens)
        if self.extra_body:
            kwargs["extra_body"] = self.extra_body
        return self.client.chat.completions.create(**kwargs)

    def propose(self, archive: Sequence[Candidate], n: int, generation: int) -> list[Proposal]:
        """``n`` proposals, one LLM call each. A reply without acceptable code is still
        returned (its tokens were paid for), with ``meta["check_error"]`` set.

        An endpoint that still fails after the client's retries raises ``ExplorerError`` if
        nothing was proposed yet; otherwise the proposals made so far are returned.
        """
        import openai

        out: list[Proposal] = []
        for _ in range(n):
            parent = self.select_parent(archive)
            failure = self.previous_failure(archive)
            messages = self.messages(archive, parent, failure)
            try:
                response = self._request(messages)
            except openai.APIError as exc:
                if out:
                    log.warning("explorer %s: request failed after retries, returning %d proposal(s): %s",
                                self.name, len(out), exc)
                    break
                raise ExplorerError(f"explorer {self.name}: the chat completion request failed: "
                                    f"{type(exc).__name__}: {exc}") from None
            out.append(self._proposal(response, parent, failure, generation))
        return out

    def _proposal(self, response: Any, parent: Candidate | None, failure: str | None, generation: int) -> Proposal:
        usage = self.usage_of(response)
        self._input_tokens += usage.input_tokens
        self._output_tokens += usage.output_tokens
        self._usd += usage.usd
        choice = response.choices[0] if getattr(response, "choices", None) else None
        text = (choice.message.content if choice is not None and choice.message is not None else None) or ""
        finish = getattr(choice, "finish_reason", None)
        pid = uuid.uuid4().hex
        meta: dict[str, Any] = {
            "proposal_id": pid,
            "model": self.model,
            "response_id": getattr(response, "id", None),
            "finish_reason": finish,
            "parent": parent.id if parent is not None else None,
            "fed_back_failure": failure[:2000] if failure else None,
        }
        source, class_name, code = text, None, None
        try:
            code = extract_code(text, truncated=finish == "length")
            checked = check_source(code)
            source, class_name = checked.source, checked.class_name
        except ProposalError as exc:
            message = str(exc)
            if finish == "length" and exc.kind != "extract":
                message += " (the reply was cut off at the token limit: write shorter code)"
            meta["check_error"] = message
            if code is not None:
                source = code
            self._outcomes[pid] = message
        if code is not None and code in text:
            explanation = text.replace(code, "").replace("```python", "").replace("```", "").strip()
            meta["explanation"] = explanation[:2000]
        self._issued.append(pid)
        return Proposal(
            source=source, class_name=class_name, parents=(parent.id,) if parent is not None else (),
            explorer=self.name, generation=generation, meta=meta, usage=usage)
