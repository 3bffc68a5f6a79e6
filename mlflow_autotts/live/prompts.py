"""Prompts as token ids, from the model's own chat template.

Branches continue and probes read from token-id prompts, never from re-tokenised text:
decoding drops special tokens, so text round trips change the ids, miss vLLM's prefix
cache and can change what the model sees.

A prompt is a conversation (system, user and assistant turns, the last one the user's) that
the template renders with its generation prompt; a question alone is a conversation of one
user turn. Every turn's content is text, never markup: its chat-template control tokens
(``<|im_end|>``, ``<|im_start|>assistant``) are encoded as the ordinary text they spell, so
no turn can close itself and forge another. The template is rendered twice: as given, and
with each content between two markers (private-use code points, outside its leading and
trailing whitespace, so a template that trims contents trims them alike) that say where the
template wrote it. The prompt is then the template's own text, split at its control tokens
and tokenised as usual, and between them the text that holds contents: each content with
the template's text on either side of it up to the nearest control token (all of it when a
piece of the template's text between two contents holds none), tokenised with special
tokens split. For contents holding no control token this gives exactly the ids of
tokenising the whole rendered template (tokenizers split text at added tokens first, and
the pieces are cut there). A conversation the template cannot render as given (it refuses a
role or an order of roles, drops a content, writes it twice, or changes it beyond trimming
its whitespace) is refused as ``ConversationRefused``, naming the turn.

One ``ChatPrompts`` serves every thread of a runner; calls into the tokenizer hold a lock,
because a Rust tokenizer shared between threads can fail with "Already borrowed" when one
thread encodes while another changes its truncation settings (``apply_chat_template``).
"""

from __future__ import annotations

import json
import re
import threading
from collections.abc import Sequence
from functools import cached_property
from pathlib import Path
from typing import Any, NamedTuple

from mlflow_autotts.errors import AutoTTSError, safe_text

ROLES = ("system", "user", "assistant")
"""The roles a turn may have."""
MARK = "\ue000"
"""Markers around each content in the marked rendering are a run of this private-use code
point (longer than any run of it in the contents and the template), the turn's number and
``OPENS`` or ``CLOSES``: no template or tokenizer gives them a meaning (nor a case, for a
template that changes it), and no content can spell one."""
OPENS, CLOSES = "\ue001", "\ue002"
_SEGMENT_CACHE, _SEGMENT_CHARS = 512, 1024
"""Pieces of template text (of at most so many characters) whose control-token cut and ids
are remembered (per ``ChatPrompts``)."""


class Message(NamedTuple):
    """One turn of a conversation, as a chat template takes it."""

    role: str
    """``system``, ``user`` or ``assistant``."""
    content: str


class ConversationRefused(AutoTTSError):
    """A conversation that cannot be rendered as given (a role out of place, or a chat
    template that refuses it or would change a content): the caller's input; ``index`` is
    the turn at fault (serving answers 400 naming ``messages[index]``)."""

    def __init__(self, message: str, index: int):
        self.index = index
        super().__init__(message)

    def __reduce__(self):  # its own arguments, so it crosses a process as itself
        return type(self), (str(self), self.index)


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
        self._segments: dict[str, tuple[int, list[int], int] | None] = {}
        if not getattr(tokenizer, "chat_template", None):
            raise AutoTTSError(f"tokenizer {self.name!r} has no chat template")

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

    @property
    def name(self) -> str:
        return str(getattr(self.tokenizer, "name_or_path", "?"))

    def user_message(self, question: str) -> str:
        return f"{question}\n\n{self.instruction}" if self.instruction else question

    def question_ids(self, question: str) -> list[int]:
        """The chat prompt of ``question``: a conversation of one user turn."""
        return self.conversation_ids([Message("user", question)])

    def conversation_ids(self, messages: Sequence[Message]) -> list[int]:
        """The chat prompt of a conversation whose last turn is the user's (the instruction
        appended to it, the generation prompt added), every turn's content encoded as text
        (see the module docstring); ``ConversationRefused`` naming the turn when it cannot be
        rendered as given."""
        turns = self._turns(messages)
        contents = [t["content"] for t in turns]
        mark = MARK * (1 + max(_longest_run(text, MARK) for text in (*contents, str(self.tokenizer.chat_template))))
        opens = [f"{mark}{i}{OPENS}" for i in range(len(turns))]
        closes = [f"{mark}{i}{CLOSES}" for i in range(len(turns))]
        marked = [dict(t, content=_marked(t["content"], o, c)) for t, o, c in zip(turns, opens, closes)]
        text = self._render_or_refuse(turns)
        shown = self._render_or_refuse(marked)
        template, written = self._unmark(turns, shown, mark, opens, closes)
        if "".join(_interleave(template, written)) != text:
            raise self._refused(turns, _first_difference(template, written, text),
                                "renders it differently when its content is marked, so the content cannot be "
                                "told from the template's text")
        return self._encode_pieces(template, written)

    # ------------------------------------------------------------------ rendering
    def _turns(self, messages: Sequence[Message]) -> list[dict[str, str]]:
        if not messages:
            raise AutoTTSError("a conversation needs at least one turn: the user's question")
        turns = []
        for i, m in enumerate(messages):
            role, content = m
            if role not in ROLES:
                raise ConversationRefused(f"messages[{i}]: role {safe_text(role, 40)!r} is not one of "
                                          f"{', '.join(ROLES)}", i)
            if not isinstance(content, str):
                raise ConversationRefused(f"messages[{i}] ({role}): content must be text, got "
                                          f"{type(content).__name__}", i)
            turns.append({"role": role, "content": content})
        if turns[-1]["role"] != "user":
            raise ConversationRefused(f"messages[{len(turns) - 1}] ({turns[-1]['role']}): the last turn must be the "
                                      "user's: the controller answers it", len(turns) - 1)
        turns[-1]["content"] = self.user_message(turns[-1]["content"])
        return turns

    def _render(self, turns: list[dict[str, str]], generation_prompt: bool = True) -> str:
        return self.tokenizer.apply_chat_template(turns, add_generation_prompt=generation_prompt, tokenize=False)

    def _render_or_refuse(self, turns: list[dict[str, str]]) -> str:
        """The rendered template; a template that raises is refused, naming the first turn
        whose conversation up to it does not render."""
        with self._lock:
            try:
                return self._render(turns)
            except Exception as exc:  # noqa: BLE001  (a template raises what it likes: raise_exception, jinja errors)
                reason = safe_text(str(exc) or type(exc).__name__, 300)
                failing = self._failing_turn(turns)
        raise self._refused(turns, failing, f"refuses it ({reason})")

    def _failing_turn(self, turns: list[dict[str, str]]) -> int:
        """The first turn ending a conversation the template does not render (without a
        generation prompt); the last turn when each renders. A binary search, so a long
        conversation costs a few renders. The lock is held."""
        def fails(k: int) -> bool:
            try:
                self._render(turns[:k], generation_prompt=False)
            except Exception:  # noqa: BLE001
                return True
            return False

        if not fails(len(turns)):
            return len(turns) - 1
        low, high = 1, len(turns)
        while low < high:
            mid = (low + high) // 2
            if fails(mid):
                high = mid
            else:
                low = mid + 1
        return low - 1

    def _refused(self, turns: list[dict[str, str]], index: int, why: str) -> ConversationRefused:
        return ConversationRefused(f"messages[{index}] ({turns[index]['role']}): the chat template of {self.name!r} "
                                   f"{why}", index)

    def _unmark(self, turns: list[dict[str, str]], shown: str, mark: str, opens: list[str], closes: list[str]
                ) -> tuple[list[str], list[str]]:
        """The template's text around the contents (one more piece than contents) and the
        contents as the template wrote them, read off the marked rendering."""
        expected = [m for pair in zip(opens, closes) for m in pair]
        found = [(m.group(0), m.start(), m.end()) for m in
                 re.finditer(re.escape(mark) + f"[0-9]+[{OPENS}{CLOSES}]", shown)]
        got = [f[0] for f in found]
        if got != expected:
            k = next((k for k, (a, b) in enumerate(zip(got, expected)) if a != b), min(len(got), len(expected)))
            wrong = expected[k] if k < len(expected) else got[k]  # the turn expected there, else the one written again
            index = min(int(re.sub("[^0-9]", "", wrong)), len(turns) - 1)
            raise self._refused(turns, index, "does not write this turn's content once and in its place, so the "
                                              "content cannot be kept as plain text")
        template, written, at = [], [], 0
        for i in range(len(turns)):
            (_, o_start, o_end), (_, c_start, c_end) = found[2 * i], found[2 * i + 1]
            template.append(shown[at:o_start])
            written.append(shown[o_end:c_start])
            at = c_end
            if written[-1] != turns[i]["content"].strip():
                raise self._refused(turns, i, "changes this turn's content (beyond trimming its whitespace), so it "
                                              "cannot be kept as plain text")
        template.append(shown[at:])
        return template, written

    # ------------------------------------------------------------------ tokenising
    @cached_property
    def _control(self) -> re.Pattern[str] | None:
        """The tokenizer's added tokens (its chat template's control tokens among them), as a
        pattern; None when it has none."""
        markers = sorted((m for m in (getattr(self.tokenizer, "get_added_vocab", dict)() or {}) if m),
                         key=len, reverse=True)
        return re.compile("|".join(map(re.escape, markers))) if markers else None

    def _segment(self, piece: str) -> tuple[int, list[int], int] | None:
        """A piece of the template's text: where its first control token starts, the ids from
        there to the end of its last one, and where that ends; None without one."""
        with self._lock:
            control = self._control
        if control is None:
            return None
        if piece in self._segments:
            return self._segments[piece]
        spans = [m.span() for m in control.finditer(piece)]
        cut = None
        if spans:
            first, last = spans[0][0], max(end for _, end in spans)
            cut = (first, self._encode(piece[first:last], as_text=False), last)
        if len(self._segments) < _SEGMENT_CACHE and len(piece) <= _SEGMENT_CHARS:
            self._segments[piece] = cut
        return cut

    def _encode(self, text: str, as_text: bool) -> list[int]:
        """Ids of ``text``; with ``as_text`` control-token strings in it are plain text."""
        if not text:
            return []
        with self._lock:
            if as_text:
                return list(self.tokenizer(text, add_special_tokens=False, split_special_tokens=True)["input_ids"])
            return list(self.tokenizer(text, add_special_tokens=False)["input_ids"])

    def _encode_pieces(self, template: list[str], written: list[str]) -> list[int]:
        """The prompt's ids: the template's control-token spans as usual, the text between
        them (contents and the template's text next to them) as text. The lock is taken per
        tokenizer call, so a long conversation does not hold up other threads' prompts."""
        ids: list[int] = []
        text: list[str] = []
        for k, piece in enumerate(template):
            cut = self._segment(piece)
            if cut is None:
                text.append(piece)
            else:
                first, control_ids, last = cut
                ids += self._encode("".join(text) + piece[:first], as_text=True)
                ids += control_ids
                text = [piece[last:]]
            if k < len(written):
                text.append(written[k])
        ids += self._encode("".join(text), as_text=True)
        return ids

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


def _longest_run(text: str, char: str) -> int:
    """The longest run of ``char`` in ``text``."""
    if char not in text:
        return 0
    return max(map(len, re.findall(f"{re.escape(char)}+", text)))


def _marked(content: str, opening: str, closing: str) -> str:
    """``content`` with its text between two markers, its leading and trailing whitespace
    outside them (all of it before them when it is only whitespace)."""
    core = content.strip()
    lead = len(content) - len(content.lstrip())
    return content[:lead] + opening + core + closing + content[lead + len(core):]


def _interleave(template: list[str], written: list[str]) -> list[str]:
    out = [template[0]]
    for content, piece in zip(written, template[1:]):
        out += [content, piece]
    return out


def _first_difference(template: list[str], written: list[str], text: str) -> int:
    """The turn of the first character where the template's pieces and the contents, put
    together, differ from ``text``: the content it falls in or ends right before, else the
    turn whose opening the template's piece is."""
    joined = "".join(_interleave(template, written))
    differs = next((k for k, (a, b) in enumerate(zip(joined, text)) if a != b), min(len(joined), len(text)))
    at = 0
    for k, piece in enumerate(_interleave(template, written)):
        at += len(piece)
        if (differs <= at) if k % 2 else (differs < at):
            return min(k // 2, len(written) - 1)
    return len(written) - 1


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


__all__ = ["ChatPrompts", "ConversationRefused", "Message"]
