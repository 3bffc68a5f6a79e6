"""Prompts as token ids, from the model's own chat template.

Branches continue and probes read from token-id prompts, never from re-tokenised text:
decoding drops special tokens, so text round trips change the ids, miss vLLM's prefix
cache and can change what the model sees.

A question is text, never markup: its chat-template control tokens (``<|im_end|>``,
``<|im_start|>assistant``) are encoded as the ordinary text they spell, so a question
cannot close its own turn and forge an assistant's. The template is rendered once around a
placeholder; the prompt of a question is the template's own tokens up to the user's text,
that text (with the template's text on either side up to the nearest control token)
tokenised with special tokens split, and the template's tokens after it. For a question
holding no control token this gives exactly the ids of tokenising the whole rendered
template (tokenizers split text at added tokens first, and the pieces are cut there).

One ``ChatPrompts`` serves every thread of a runner; calls into the tokenizer hold a lock,
because a Rust tokenizer shared between threads can fail with "Already borrowed" when one
thread encodes while another changes its truncation settings (``apply_chat_template``).
"""

from __future__ import annotations

import json
import threading
from collections.abc import Sequence
from functools import cached_property
from pathlib import Path
from typing import Any, NamedTuple

from mlflow_autotts.errors import AutoTTSError

PLACEHOLDER = "\ue000autotts-question\ue000"
"""Stands for the user's text when the template is rendered once: private-use code points,
which no template or tokenizer gives a meaning."""


class Message(NamedTuple):
    """One turn of a conversation, as a chat template takes it."""

    role: str
    """``system``, ``user`` or ``assistant``."""
    content: str


class ChatPrompts:
    """A tokenizer with the chat template of the model being served."""

    def __init__(self, tokenizer: Any, instruction: str = "", probe_suffix: str = "",
                 model_max_len: int | None = None):
        self.tokenizer = tokenizer
        self.instruction = instruction
        self.probe_suffix = probe_suffix
        self.model_max_len = model_max_len or _declared_length(getattr(tokenizer, "model_max_length", None))
        """The model's own context length (its config, else its tokenizer's), when it gives
        one: the limit of prompts when the backend does not tell its own."""
        self._lock = threading.Lock()
        if not getattr(tokenizer, "chat_template", None):
            raise AutoTTSError(f"tokenizer {getattr(tokenizer, 'name_or_path', '?')!r} has no chat template")

    @classmethod
    def from_pretrained(cls, path: str, instruction: str = "", probe_suffix: str = "") -> ChatPrompts:
        """Load the tokenizer of a local model folder (no hub access)."""
        # transformers is heavy: imported only when prompts are actually built
        from transformers import AutoTokenizer

        try:
            tok = AutoTokenizer.from_pretrained(path, local_files_only=True)
        except (OSError, ValueError) as exc:
            raise AutoTTSError(f"cannot load the tokenizer from {path!r}: {str(exc).splitlines()[0]}") from None
        return cls(tok, instruction, probe_suffix, _config_length(Path(path) / "config.json"))

    def user_message(self, question: str) -> str:
        return f"{question}\n\n{self.instruction}" if self.instruction else question

    def _render(self, content: str) -> str:
        return self.tokenizer.apply_chat_template([{"role": "user", "content": content}],
                                                  add_generation_prompt=True, tokenize=False)

    def _encode(self, text: str, as_text: bool) -> list[int]:
        """Ids of ``text``; with ``as_text`` control-token strings in it are plain text."""
        if not text:
            return []
        if as_text:
            return list(self.tokenizer(text, add_special_tokens=False, split_special_tokens=True)["input_ids"])
        return list(self.tokenizer(text, add_special_tokens=False)["input_ids"])

    @cached_property
    def _frame(self) -> tuple[str, str, list[int], str, str, list[int]]:
        """The template around the user's text: (text before it, its opening text after
        the last control token, the ids up to there, and the same after it)."""
        with self._lock:
            shell = self._render(PLACEHOLDER)
            if shell.count(PLACEHOLDER) != 1:
                raise AutoTTSError(f"the chat template of {getattr(self.tokenizer, 'name_or_path', '?')!r} does not "
                                   "write the user's message once, as given")
            before, after = shell.split(PLACEHOLDER)
            markers = [m for m in (getattr(self.tokenizer, "get_added_vocab", dict)() or {}) if m]
            cut_before = max((before.rfind(m) + len(m) for m in markers if m in before), default=0)
            cut_after = min((after.find(m) for m in markers if m in after), default=len(after))
            return (before, before[cut_before:], self._encode(before[:cut_before], as_text=False),
                    after, after[:cut_after], self._encode(after[cut_after:], as_text=False))

    def question_ids(self, question: str) -> list[int]:
        """The chat prompt of ``question`` (one user turn, generation prompt added), with
        the question's text encoded as text (see the module docstring)."""
        before, lead, head_ids, after, trail, tail_ids = self._frame
        with self._lock:
            text = self._render(self.user_message(question))
            if not (text.startswith(before) and text.endswith(after) and len(text) >= len(before) + len(after)):
                raise AutoTTSError("the chat template changes its own text around this question, so the question "
                                   "cannot be kept as plain text")
            user = text[len(before): len(text) - len(after)]  # as the template wrote it (some trim it)
            return head_ids + self._encode(lead + user + trail, as_text=True) + tail_ids

    def conversation_ids(self, messages: Sequence[Message]) -> list[int]:
        """The chat prompt of a conversation whose last turn is the user's (generation prompt
        added), every turn's text encoded as text. One user turn only, for now."""
        if len(messages) != 1 or messages[0].role != "user":
            raise AutoTTSError("only a single user turn can be rendered")
        return self.question_ids(messages[0].content)

    @cached_property
    def bare_prompt_tokens(self) -> int:
        """Tokens of the prompt of an empty question: what the template and instruction take."""
        return len(self.question_ids(""))

    @cached_property
    def suffix_ids(self) -> list[int]:
        """The probe suffix as tokens, appended to a branch's ids."""
        with self._lock:
            return list(self.tokenizer(self.probe_suffix, add_special_tokens=False)["input_ids"])

    @cached_property
    def eos_ids(self) -> frozenset[int]:
        eos = self.tokenizer.eos_token_id
        return frozenset(eos if isinstance(eos, list) else [eos]) if eos is not None else frozenset()

    def decode(self, ids: Sequence[int]) -> str:
        with self._lock:
            return self.tokenizer.decode(list(ids), skip_special_tokens=True)


def _declared_length(value: Any) -> int | None:
    """A context length as declared; None when absent or a placeholder (transformers writes
    ~1e30 for "unknown")."""
    ok = isinstance(value, int) and not isinstance(value, bool) and 0 < value < 1 << 24
    return value if ok else None


def _config_length(path: Path) -> int | None:
    """``max_position_embeddings`` of a model folder's ``config.json``, when it has one."""
    try:
        return _declared_length(json.loads(path.read_text(encoding="utf-8")).get("max_position_embeddings"))
    except (OSError, ValueError, AttributeError):
        return None


__all__ = ["ChatPrompts", "Message"]
