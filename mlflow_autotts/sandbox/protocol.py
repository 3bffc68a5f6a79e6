"""The wire between the trusted parent and a sandbox child: every message, field and operation.

Both sides import this module (the child before its lockdown), so it imports nothing but
the standard library. The wire stays compact (short keys, small ints); the names live here
and nowhere else (``docs/architecture.md``, "The trust boundary").

Channels of one child:

- parent -> child, the child's stdin: in batch mode first ``KEY_BYTES`` raw bytes (the MAC
  key), then JSON lines: the header (``Header``), the data (``Data``), and later ``GO``,
  ``SOLVE`` and ``REPLY`` messages.
- child -> parent, a pipe of its own (its number is the worker's only argument): JSON
  lines, one message each, ``Field.TYPE`` saying which (``Msg``).
- the child's stdout/stderr: whatever the candidate prints; the parent counts it, keeps a
  prefix and kills the child past the limit.

Sizes: a legitimate message has a size the parent can bound before it reads it (answers
are capped, summaries have one entry per branch), so the parent buffers at most
``max_line`` bytes of a line (``episode_bytes`` and friends) and calls anything longer a
violation.
"""

from __future__ import annotations

import json
from enum import IntEnum, StrEnum
from typing import Any

EPISODE_PROCESSES = 2
"""Processes a sandbox child's uid may have (``RLIMIT_NPROC``): the child itself and the one
process it forks per episode. Every episode (batch) and every solve (session) runs in a fresh
fork of the child taken after the candidate was built and before any episode ran, so nothing
an episode stores reaches the next one (``docs/architecture.md``, "The trust boundary")."""
TAMPERED_EXIT = 75
"""Exit status of an episode process that found the child's file descriptors not as they
were at the lockdown (a channel between episodes); the parent reports it as forbidden."""
KEY_BYTES = 32
"""Length of the per-child MAC key that seals batch-mode episode summaries."""
MAC_HEX = 32
"""Length of a seal: a 16-byte keyed BLAKE2b digest in hex."""
CANDIDATE_MODULE = "autotts_candidate"
"""Module name the candidate source is executed as."""
CANDIDATE_FILE = "<candidate>"
"""File name in the candidate's code objects and tracebacks."""


class Mode(StrEnum):
    """What a child does after loading the candidate."""

    BATCH = "batch"
    """Score every (β, dataset, shuffle) on replay branches held by the child's oracle."""
    SESSION = "session"
    """Solve one episode per ``SOLVE``; the parent owns the episode and answers each call."""


class Msg(StrEnum):
    """Message types (``Field.TYPE``)."""

    # child -> parent
    LOCKED = "locked"
    """The lockdown is in place and no candidate code has run; the child waits for ``GO``."""
    READY = "ready"
    """The candidate is imported and built: its names and β values."""
    EPISODE = "episode"
    """Batch: one sealed episode, from the process that ran it (see ``EPISODE_PROCESSES``)."""
    DONE = "done"
    """Batch: every block was sent."""
    FAIL = "fail"
    """The candidate failed at the Python level (exception, bad return, denied operation)."""
    CALL = "call"
    """Session: an episode operation for the parent to execute."""
    ANSWER = "answer"
    """Session: ``solve`` returned."""
    # parent -> child
    GO = "go"
    """The parent observed the isolation and lets the candidate run."""
    SOLVE = "solve"
    """Session: solve one episode (its read-only facts attached)."""
    REPLY = "reply"
    """Session: the result of a ``CALL`` (a value or an episode error)."""


class Field(StrEnum):
    """Keys of the messages (not of the header or the data, see ``Header`` and ``Data``)."""

    TYPE = "t"
    # LOCKED
    APPLIED = "applied"
    """The measures the child applied to itself, in its own words (the parent observes them too)."""
    # READY
    NAME = "name"
    CLASS = "cls"
    USES_BETA = "uses_beta"
    BETAS = "betas"
    """β of the controller built per requested β (the class default where None was requested)."""
    CONFIGS = "configs"
    """Per requested β, the built controller's ``config()`` without β (a label, as the
    runner reports it; ``{}`` when it is not small, plain JSON)."""
    # EPISODE
    BETA_INDEX = "b"
    DATASET_INDEX = "d"
    SHUFFLE_INDEX = "s"
    PROBLEM_INDEX = "p"
    ANSWER_GIVEN = "a"
    SUMMARY = "x"
    VIOLATIONS = "v"
    MAC = "m"
    # FAIL
    KIND = "kind"
    MESSAGE = "message"
    TRACEBACK = "traceback"
    WHERE = "where"
    # CALL / REPLY / ANSWER
    OP = "op"
    VALUE = "value"
    ERROR = "error"
    ANSWER = "answer"
    # SOLVE
    QUESTION = "question"
    MAX_BRANCHES = "max_branches"
    INTERVAL_TOKENS = "interval_tokens"
    HAS_SIGNALS = "has_signals"
    BETA = "beta"
    """Session: the β to build the controller at for this solve (absent: the header's)."""


class Where(StrEnum):
    """Keys of ``Field.WHERE``: indices into the run's β values, datasets, problems, seeds."""

    BETA = "beta"
    DATASET = "dataset"
    PROBLEM = "problem"
    SHUFFLE = "shuffle"


class Header(StrEnum):
    """Keys of the header line the parent sends first."""

    MODE = "mode"
    SOURCE = "source"
    CLASS_NAME = "class_name"
    PARAMS = "params"
    BETAS = "betas"
    N_SEEDS = "n_seeds"
    FULL_ACTIONS = "full"
    CHROOT = "chroot"
    """The empty directory to chroot into (None: no chroot)."""
    LIMITS = "limits"
    """The ``SandboxLimits`` fields the child applies to itself (see ``Limit``)."""


class Limit(StrEnum):
    """Keys of ``Header.LIMITS``. The child applies them before any candidate code runs;
    the parent then reads the result from ``/proc`` and enforces the rest itself."""

    MEMORY_MB = "memory_mb"
    CPU_SECONDS = "cpu_seconds"
    MAX_OPEN_FILES = "max_open_files"
    MAX_ANSWER_CHARS = "max_answer_chars"


class Data(StrEnum):
    """Keys of the data line (batch: branches of every problem; session: the vote table)."""

    DATASETS = "datasets"
    ORDERS = "orders"
    CONFIDENCE = "conf"
    # one problem
    QUESTION = "q"
    INTERVAL = "iv"
    STRINGS = "s"
    """Distinct answer strings of the problem; the lists below index into it."""
    PROBE_IDS = "p"
    OFFSETS = "o"
    BRANCH_TOKENS = "bt"
    FINAL_IDS = "f"
    SIGNALS = "g"


class Op(IntEnum):
    """Episode operations, as exact ints (the child's oracle and the parent both decode them).

    A non-negative op ``i`` is ``probe_more(i)``; ``signals(i)`` is ``SIGNALS - i``.
    """

    PROBE_NEW = -1
    READ_WHOLE = -2
    """``get_new_branch_final_answer()``."""
    TOKENS_USED = -3
    BRANCHES_OPENED = -4
    INTERVALS = -5
    SEAL = -6
    """Batch: end the episode; the oracle answers with its sealed summary."""
    SIGNALS = -100


def probe_more_op(i: int) -> int:
    return i


def signals_op(i: int) -> int:
    return Op.SIGNALS - i


def decode_op(code: Any) -> tuple[Op | None, int | None]:
    """(operation, branch index) of a wire op; ``(None, None)`` for anything else.
    ``Op`` None with an index means ``probe_more(index)``."""
    if type(code) is not int:
        return None, None
    if code >= 0:
        return None, code
    if code <= Op.SIGNALS:
        return Op.SIGNALS, Op.SIGNALS - code
    try:
        return Op(code), None
    except ValueError:
        return None, None


class EpisodeError(IntEnum):
    """Errors an episode operation answers with (raised as ``ValueError`` in the candidate)."""

    NO_BRANCH_LEFT = 1
    NOT_OPEN = 2
    BAD_OP = 3
    TRACE_FULL = 4
    """Batch mode with full action logs: the episode took more actions than a trace keeps."""


EPISODE_ERROR_TEXT = {
    EpisodeError.NO_BRANCH_LEFT: "no unopened branch left",
    EpisodeError.NOT_OPEN: "branch is not open",
    EpisodeError.BAD_OP: "branch index must be an int",
    EpisodeError.TRACE_FULL: "the episode took more actions than a trace records",
}


class FailureKind(StrEnum):
    """Why a candidate failed (``CandidateFailure.kind``)."""

    IMPORT_ERROR = "import_error"
    """The source does not compile, an import fails, no (or no unique) controller class."""
    EXCEPTION = "exception"
    """``__init__`` or ``solve`` raised (message and traceback excerpt attached)."""
    BAD_RETURN = "bad_return"
    """``solve`` returned something other than ``str`` or ``None`` (or a huge string)."""
    TIMEOUT = "timeout"
    """Wall-clock limit (the parent's clock) or CPU limit (the child's rusage, SIGXCPU)."""
    MEMORY = "memory"
    """``MemoryError`` under the address-space limit, or killed with its peak resident
    memory near that limit (read by the parent from ``/proc``)."""
    CRASH = "crash"
    """The interpreter died by a signal."""
    EXIT = "exit"
    """``sys.exit`` or ``os._exit`` before finishing."""
    FORBIDDEN = "forbidden"
    """A denied operation (files, processes, sockets, frames, gc, imports outside the
    allowlist), an answer no paid action revealed, or a tampered protocol."""
    OUTPUT_LIMIT = "output_limit"
    """Printed more than ``SandboxLimits.max_output_bytes`` (counted by the parent)."""


CHILD_REPORTED_KINDS = frozenset({FailureKind.IMPORT_ERROR, FailureKind.EXCEPTION, FailureKind.BAD_RETURN,
                                  FailureKind.MEMORY, FailureKind.EXIT, FailureKind.FORBIDDEN})
"""Kinds a ``FAIL`` message may carry: Python-level facts about the candidate. Timeouts,
crashes and the output limit are decided by the parent alone."""


# ------------------------------------------------------------------ action logs (traces)
ACTION_KINDS = ("probe_new", "probe_more", "read")
"""Batch mode with full action logs encodes action ``(kind, k)`` as ``k * 3 + index(kind)``."""


def encode_action(kind_index: int, k: int) -> int:
    return k * len(ACTION_KINDS) + kind_index


def decode_action(code: Any) -> tuple[str, int]:
    if type(code) is not int or code < 0:
        raise ValueError("bad action code")
    k, kind = divmod(code, len(ACTION_KINDS))
    return ACTION_KINDS[kind], k


# ------------------------------------------------------------------------- framing
def dumps(msg: dict) -> bytes:
    """One message as a JSON line (ASCII only, so a line is never split by a newline inside)."""
    return (json.dumps(msg, ensure_ascii=True, separators=(",", ":")) + "\n").encode("ascii")


MAX_NAME_CHARS = 200
MAX_MESSAGE_CHARS = 4000
MAX_TRACEBACK_CHARS = 8000
MAX_APPLIED = 20
MAX_CONFIG_CHARS = 2000
"""Longest JSON of one controller configuration in ``READY``."""
MAX_BETAS = 64
"""Most β values one child is built for."""
"""At most this many names of up to ``MAX_NAME_CHARS`` in ``Field.APPLIED``."""


def json_str_bytes(chars: int) -> int:
    """Upper bound of a JSON string of ``chars`` characters with ``ensure_ascii`` (a
    character outside the BMP becomes a 12-byte surrogate pair)."""
    return 12 * chars + 2


def _int_bytes(largest: int) -> int:
    return len(str(largest)) + 1  # digits and a comma


_OVERHEAD = 256
"""Keys, brackets and small fields of any message."""


def control_bytes(max_answer_chars: int) -> int:
    """Bound of every message but ``EPISODE``: ``LOCKED``, ``READY``, ``FAIL``, ``DONE``,
    ``CALL``, ``ANSWER`` (the worker truncates its texts to the ``MAX_*`` sizes)."""
    fail = json_str_bytes(MAX_MESSAGE_CHARS) + json_str_bytes(MAX_TRACEBACK_CHARS) + 4 * _int_bytes(1 << 62)
    applied = MAX_APPLIED * json_str_bytes(MAX_NAME_CHARS)
    ready = 2 * json_str_bytes(MAX_NAME_CHARS) + MAX_BETAS * (32 + MAX_CONFIG_CHARS + 2)
    return _OVERHEAD + max(fail, applied, ready, json_str_bytes(max_answer_chars))


def episode_bytes(problems: list[tuple[int, int]], max_answer_chars: int, trace_actions: int | None) -> int:
    """Bound of one ``EPISODE`` message for the largest of problems given as (branches, most
    steps of one branch): an answer, a summary of one int per branch opened (or, with full
    action logs, up to ``trace_actions`` action codes), the indices, the violation count and
    the seal."""
    largest = 0
    for n_branches, max_steps in problems:
        if trace_actions is None:
            summary = n_branches * _int_bytes(max_steps + 1)
        else:
            summary = trace_actions * _int_bytes(len(ACTION_KINDS) * n_branches)
        largest = max(largest, summary)
    return _OVERHEAD + json_str_bytes(max_answer_chars) + largest + 5 * _int_bytes(1 << 62) + MAC_HEX + 8


def trace_action_cap(problems: list[tuple[int, int]]) -> int:
    """Most actions a traced episode may take: four times every charged step of the
    largest problem, plus slack (free ``probe_more`` calls on finished branches count)."""
    steps = max((n * (s + 1) for n, s in problems), default=0)
    return 4 * steps + 1024
