"""Prompts as token ids, from the model's own chat template.

Branches continue and probes read from token-id prompts, never from re-tokenised text:
decoding drops special tokens, so text round trips change the ids, miss vLLM's prefix
cache and can change what the model sees.

One ``ChatPrompts`` serves every thread of a runner; calls into the tokenizer hold a lock,
because a Rust tokenizer shared between threads can fail with "Already borrowed" when one
thread encodes while another changes its truncation settings (``apply_chat_template``).
"""

from __future__ import annotations

from collections.abc import Sequence
import threading
from functools import cached_property
from typing import Any

from mlflow_autotts.errors import AutoTTSError


class ChatPrompts:
    """A tokenizer with the chat template of the model being served."""

    def __init__(self, tokenizer: Any, instruction: str = "", probe_suffix: str = ""):
        self.tokenizer = tokenizer
        self.instruction = instruction
        self.probe_suffix = probe_suffix
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
        return cls(tok, instruction, probe_suffix)

    def user_message(self, question: str) -> str:
        return f"{question}\n\n{self.instruction}" if self.instruction else question

    def question_ids(self, question: str) -> list[int]:
        """The chat prompt of ``question`` (one user turn, generation prompt added)."""
        with self._lock:
            enc = self.tokenizer.apply_chat_template(
                [{"role": "user", "content": self.user_message(question)}],
                add_generation_prompt=True, tokenize=True, return_dict=True)
        return list(enc["input_ids"])

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


__all__ = ["ChatPrompts"]
