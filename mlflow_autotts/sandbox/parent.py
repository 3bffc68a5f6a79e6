"""Scoring untrusted controller source in replay, in a separate locked-down process (DESIGN §8).

``run_candidate(source, datasets, betas, seeds, limits)`` starts one fresh interpreter per
candidate (``python -m mlflow_autotts.sandbox.worker``, never a fork of this process,
which holds the gold answers), sends it the branches of every problem and the shuffle orders
as compact JSON over stdin, and reads JSON lines back from a separate pipe. The child runs
all β values and shuffles in one go. The gold answers, file paths and this process's
environment (API keys, ``AUTOTTS_DATA_DIR``) never reach it.

Threat model and defences, outermost first:

- **Process**: a new session (killed as a group), a clean environment, cwd in an empty
  directory, no network namespace when ``unshare`` works, rlimits on address space, CPU time,
  processes (0), file size (0) and descriptors; as root also a chroot into that empty
  directory and an unprivileged uid of its own. A wall-clock deadline is enforced here.
- **Interpreter**: a PEP 578 audit hook installed before the candidate is compiled denies
  opening files, processes (``os.system``, ``subprocess``, fork, exec, spawn), sockets,
  ``ctypes``, new imports, ``gc`` object walking, frame access (``sys._getframe``,
  ``tb_frame``, ``gi_frame``, trace/profile hooks), code object construction and every
  other audited event not on a short allowlist; ``_signal``'s handler functions and the
  builtin/extension module constructors are removed. Controller code also gets an
  ``__import__`` that only knows the allowlist (``sandbox_worker.ALLOWED_IMPORTS``).
- **Cost integrity**: the candidate shares the interpreter with whatever records its
  actions, so it could try to rewrite that code, read the branches for free, or write a
  forged result line. The branches therefore live only inside a generator (the worker's
  "oracle") that the candidate cannot introspect through the denied routes above, and the
  oracle seals each episode's step summary with a keyed MAC whose key never leaves its
  frame. This process checks every MAC, **recomputes** tokens, branches opened and
  intervals from the summary (``summary_cost``, equal to ``replay_cost`` on the full log;
  costs are per branch and independent of the order of actions), and checks answers against
  the gold itself. As a last line, should the in-process isolation ever be broken: an
  answer must be ``None`` or one of the answers the paid-for steps revealed; any other
  answer is an ``unrevealed_answer``, counted wrong, and fails the candidate as
  ``forbidden`` (this also catches answers hard-coded into the source).
- **Protocol**: nothing from the child is unpickled; its JSON is validated strictly (types,
  lengths, order, sizes) and any deviation fails the candidate as ``forbidden``.

A failure (see ``FAILURE_KINDS``) is the candidate's, with a message and a traceback
excerpt; nothing is raised to the caller for anything the candidate does.

Use (the search loop)::

    outcome = run_candidate(source, search_sets, betas, seeds, SandboxLimits(wall_seconds=120))
    if outcome.ok:
        outcome.results            # CandidateResult per (β, dataset): accuracy %, mean tokens
        outcome.as_eval_results()  # the same as replay.runner.EvalResult, for reports/MLflow
    else:
        outcome.failure            # kind, message, traceback excerpt, episode; log it, feed it back
    outcome.output                 # the start of what the candidate printed

``run_candidate`` is thread-safe: score several candidates from a thread pool, each gets
its own child. Pass the same ``TrajectorySet`` objects and seeds every time: their
encoding is cached. Traces: ``candidate_actions`` (sandboxed, one episode) or
``controller_actions`` (trusted controller objects, in this process).
"""

from __future__ import annotations

import atexit
import functools
import hmac
import json
import os
import selectors
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from array import array
from dataclasses import dataclass, field
from hashlib import blake2b
from pathlib import Path
from typing import Any, NamedTuple, Sequence

from mlflow_autotts.controllers.base import check_beta
from mlflow_autotts.data.trajectory import Branches, Problem, Provenance, TrajectorySet
from mlflow_autotts.errors import ControllerError
from mlflow_autotts.replay.episode import Action, RecordingEpisode, replay_cost, shuffle_order
from mlflow_autotts.replay.results import shuffle_means

FAILURE_KINDS = ("import_error", "exception", "bad_return", "timeout", "memory", "crash", "exit",
                 "forbidden", "output_limit")
"""Why a candidate failed:

- ``import_error``: the source does not compile, an import fails, no (or no unique) controller class;
- ``exception``: ``__init__`` or ``solve`` raised (message and traceback excerpt attached);
- ``bad_return``: ``solve`` returned something other than ``str`` or ``None`` (or a huge string);
- ``timeout``: wall-clock or CPU limit; ``memory``: address-space limit;
- ``crash``: the interpreter died (signal); ``exit``: ``sys.exit``/``os._exit`` before finishing;
- ``forbidden``: a denied operation (files, processes, sockets, frames, gc, imports outside
  the allowlist), an answer no paid action revealed, or a tampered protocol;
- ``output_limit``: printed more than ``SandboxLimits.max_output_bytes``.
"""

EPISODE_COLUMNS = ("dataset", "beta", "problem", "shuffle", "answer", "correct", "tokens", "branches_opened",
                   "intervals")
"""Columns of ``CandidateOutcome.episodes`` (``shuffle`` is the seed, as in the runner)."""

_KEY_BYTES = 32
_MAC_HEX = 32
_MAX_LINE = 64 << 20


@dataclass(frozen=True)
class SandboxLimits:
    """Resource limits of one candidate's sandbox process."""

    wall_seconds: float = 300.0
    """Wall-clock time for the whole candidate (start-up, every β and shuffle); enforced by
    the parent, which kills the child's process group."""
    cpu_seconds: float = 240.0
    """CPU time of the child (``RLIMIT_CPU``); SIGXCPU then SIGKILL."""
    memory_mb: int = 1024
    """Address space of the child in MiB (``RLIMIT_AS``); includes the branches (~10-40 MB)."""
    max_output_bytes: int = 1 << 20
    """What the candidate may print (characters to ``sys.stdout``/``sys.stderr``, bytes to
    the raw descriptors) before it fails with ``output_limit``."""
    keep_output_bytes: int = 8192
    """How much of the printed output is kept in ``CandidateOutcome.output``."""
    max_answer_chars: int = 1000
    """Longest answer string ``solve`` may return."""
    max_open_files: int = 16
    """``RLIMIT_NOFILE`` of the child."""
    isolate_network: bool = True
    """Run the child in a new network namespace (``unshare --net``) where that works."""
    drop_privileges: bool = True
    """When running as root: chroot the child into an empty directory and switch it to an
    unprivileged uid of its own (so ``RLIMIT_NPROC`` applies)."""

    def __post_init__(self) -> None:
        for name in ("wall_seconds", "cpu_seconds"):
            if not getattr(self, name) > 0:
                raise ValueError(f"SandboxLimits.{name} must be > 0, got {getattr(self, name)!r}")
        for name in ("memory_mb", "max_output_bytes", "max_answer_chars", "max_open_files"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"SandboxLimits.{name} must be >= 1, got {getattr(self, name)!r}")
        if self.keep_output_bytes < 0:
            raise ValueError(f"SandboxLimits.keep_output_bytes must be >= 0, got {self.keep_output_bytes!r}")


@dataclass(frozen=True)
class CandidateFailure:
    """Why a candidate could not be scored; logged with the candidate, fed back to explorers."""

    kind: str
    """One of ``FAILURE_KINDS``."""
    message: str
    """One line saying what went wrong."""
    traceback: str = ""
    """Excerpt of the candidate's traceback (``File "<candidate>", line N, in f`` + source)."""
    where: dict[str, Any] | None = None
    """The episode it happened on (``beta``, ``data``, ``problem``, ``shuffle``), when known."""

    def __str__(self) -> str:
        at = ""
        if self.where:
            at = " (" + ", ".join(f"{k}={v}" for k, v in self.where.items()) + ")"
        return f"{self.kind}: {self.message}{at}"


@dataclass(frozen=True)
class CandidateResult:
    """One (β, dataset) of a candidate, with the replay runner's formulas."""

    data: str
    beta: float
    accuracy: float
    """Mean over shuffles of the share answered correctly, in percent."""
    mean_tokens: float
    """Mean over shuffles of the mean tokens per problem."""
    n_problems: int
    shuffles: int

    def summary(self) -> dict[str, Any]:
        return {"data": self.data, "beta": self.beta, "accuracy": self.accuracy,
                "mean_tokens": self.mean_tokens, "shuffles": self.shuffles}


class EpisodeRow(NamedTuple):
    """One episode as scored by the parent (see ``EPISODE_COLUMNS``)."""

    dataset: str
    beta: float
    problem: int
    shuffle: int
    answer: str | None
    correct: bool
    tokens: int
    branches_opened: int
    intervals: int


@dataclass(frozen=True)
class SandboxTimings:
    """Where the time of one candidate went (seconds)."""

    startup: float = 0.0
    """Spawn until the candidate was imported and ready to score."""
    total: float = 0.0
    """Spawn until the child was reaped."""
    child_cpu: float = 0.0
    """CPU time of the child (user + system)."""
    parent: float = 0.0
    """Time this process spent checking and scoring the child's reports."""
    episodes: int = 0
    """Episodes scored."""


@dataclass
class CandidateOutcome:
    """A candidate's scores, or its failure (``ok`` says which)."""

    failure: CandidateFailure | None
    results: list[CandidateResult] = field(default_factory=list)
    """Per (β, dataset), β-major; on failure only the groups finished before it."""
    episodes: list[EpisodeRow] = field(default_factory=list)
    """Per episode, in scoring order; on failure the episodes scored before it."""
    actions: list[list[Action]] | None = None
    """Per episode (aligned with ``episodes``), the full action log; only with ``full_actions``."""
    controller_name: str = ""
    """The candidate class's ``name`` (or its class name); untrusted text, capped at 200 chars."""
    uses_beta: bool = True
    output: str = ""
    """The start of what the candidate printed."""
    isolation: tuple[str, ...] = ()
    """The measures that took effect in the child (``rlimit_as``, ``chroot``, ``netns``, …)."""
    timings: SandboxTimings = field(default_factory=SandboxTimings)

    @property
    def ok(self) -> bool:
        return self.failure is None

    def episodes_frame(self):
        """``episodes`` as a pandas DataFrame with ``EPISODE_COLUMNS``."""
        import pandas as pd

        return pd.DataFrame(self.episodes, columns=list(EPISODE_COLUMNS))

    def as_eval_results(self, label: str | None = None) -> list:
        """``results`` as ``replay.runner.EvalResult`` objects (for reports and tracking)."""
        from mlflow_autotts.replay.results import EvalResult

        frame = self.episodes_frame()
        out = []
        for r in self.results:
            eps = frame[(frame["dataset"] == r.data) & (frame["beta"] == r.beta)].drop(columns="beta")
            out.append(EvalResult(data=r.data, controller=label or self.controller_name, beta=r.beta if self.uses_beta else None,
                                  params={}, shuffles=r.shuffles, n_problems=r.n_problems, accuracy=r.accuracy,
                                  mean_tokens=r.mean_tokens, episodes=eps.reset_index(drop=True)))
        return out


# ------------------------------------------------------------------- trusted cost rules
def summary_cost(branches: Branches, order: Sequence[int], summary: Sequence[int]) -> tuple[int, int, int]:
    """(tokens, branches opened, intervals) of an episode from its per-branch step summary.

    ``summary[k]`` describes the k-th branch opened: 0 if it was read whole, else the number
    of charged steps (1..n_probes + 1; the last one reveals the final answer). Each branch's
    cost depends only on its own steps, so this equals ``replay_cost`` on any action log
    with that summary, in O(branches opened). Raises ``ValueError`` on an impossible summary.
    """
    tokens, intervals, _ = _summary_cost(branches.n_probes, branches.branch_tokens, branches.interval_tokens,
                                         None, None, None, order, summary, None)
    return tokens, len(summary), intervals


def _summary_cost(nprobes, btok, iv, probes, offs, finals, order, summary, answer):
    """Cost of a summary and whether ``answer`` was revealed (True when ``answer`` is None)."""
    if len(summary) > len(order):
        raise ValueError(f"{len(summary)} branches opened, only {len(order)} exist")
    tokens = intervals = 0
    revealed = answer is None
    for k, s in enumerate(summary):
        if type(s) is not int:
            raise ValueError(f"step count of branch {k} is not an int")
        b = order[k]
        npb = nprobes[b]
        if s == 0:
            tokens += btok[b]
            intervals += 1
            if not revealed and finals[b] == answer:
                revealed = True
            continue
        if not 1 <= s <= npb + 1:
            raise ValueError(f"branch {k}: {s} steps, at most {npb + 1} possible")
        intervals += s
        if s > npb:
            tokens += iv * npb
            rest = btok[b] - iv * npb
            if rest > 0:
                tokens += rest
            if not revealed and finals[b] == answer:
                revealed = True
            s = npb
        else:
            tokens += iv * s
        if not revealed and s:
            lo = offs[b]
            if answer in probes[lo:lo + s]:
                revealed = True
    return tokens, intervals, revealed


def summary_from_actions(branches: Branches, order: Sequence[int], actions: Sequence[Action]) -> list[int]:
    """The step summary of an action log (free ``probe_more`` calls on finished branches
    count nothing). Raises ``ValueError`` on an impossible log."""
    steps: list[int] = []
    for kind, k in actions:
        if type(k) is not int or k < 0:
            raise ValueError(f"bad branch index {k!r}")
        if kind in ("probe_new", "read"):
            if k != len(steps) or k >= len(order):
                raise ValueError(f"{kind} opened branch {k}, expected {len(steps)}")
            steps.append(1 if kind == "probe_new" else 0)
        elif kind == "probe_more":
            if k >= len(steps):
                raise ValueError(f"probe_more on unopened branch {k}")
            if steps[k] and steps[k] <= branches.n_probes[order[k]]:
                steps[k] += 1
        else:
            raise ValueError(f"unknown action {kind!r}")
    return steps


_KINDS = ("probe_new", "probe_more", "read")


def _decode_log(codes: list) -> list[Action]:
    out = []
    for c in codes:
        if type(c) is not int or c < 0:
            raise ValueError("bad action code")
        k, kind = divmod(c, 3)
        out.append((_KINDS[kind], k))
    return out


def controller_actions(controller: Any, branches: Branches, order: Sequence[int] | None = None
                       ) -> tuple[Any, list[Action], tuple[int, int, int]]:
    """Run a *trusted* controller on one episode in this process, for traces:
    (answer, actions, (tokens, branches opened, intervals)). Untrusted source: use
    ``candidate_actions``."""
    ep = RecordingEpisode(branches, order)
    answer = controller.solve(ep)
    return answer, list(ep.actions), (ep.tokens_used, ep.branches_opened, ep.intervals)


# -------------------------------------------------------------------- prepared data
class _Prepared:
    """Datasets and seeds encoded once for many candidates, and the trusted side's tables."""

    def __init__(self, datasets: Sequence[TrajectorySet], seeds: Sequence[int]):
        from mlflow_autotts.controllers import voting

        self.datasets = tuple(datasets)
        self.seeds = tuple(seeds)
        self.names = _unique_names(self.datasets)
        ns = sorted({p.branches.n_branches for ds in self.datasets for p in ds.problems})
        self.orders = {n: [shuffle_order(n, s) for s in self.seeds] for n in ns}
        self.tables = []
        enc_sets = []
        for ds in self.datasets:
            tables, enc = [], []
            for p in ds.problems:
                br = p.branches
                tables.append((br.n_probes, br.branch_tokens, br.interval_tokens, br.probe_answers, br.probe_offsets,
                               br.final_answers, p.gold_answer, br))
                ids: dict[str, int] = {}
                f_ids = [ids.setdefault(a, len(ids)) for a in br.final_answers]
                p_ids = [ids.setdefault(a, len(ids)) for a in br.probe_answers]
                enc.append({"q": br.question, "iv": br.interval_tokens, "s": list(ids), "p": p_ids,
                            "o": list(br.probe_offsets), "t": list(br.branch_tokens), "f": f_ids,
                            "g": {k: list(v) for k, v in br.signals.items()}})
            self.tables.append(tables)
            enc_sets.append(enc)
        size = max([130] + [n + 2 for n in ns])
        conf = voting.confidence_table(size)  # tabulated with scipy, as in-process runs do
        self.blob = json.dumps({"datasets": enc_sets, "orders": {str(n): v for n, v in self.orders.items()},
                                "conf": conf}, ensure_ascii=True, separators=(",", ":")).encode("utf-8")


def _unique_names(datasets: Sequence[TrajectorySet]) -> list[str]:
    names, seen = [], {}
    for ds in datasets:
        n = ds.name
        if n in seen:
            seen[n] += 1
            n = f"{n}#{seen[n]}"
        else:
            seen[n] = 0
        names.append(n)
    return names


_CACHE: list[_Prepared] = []
_CACHE_LOCK = threading.Lock()
_CACHE_SIZE = 4


def _prepared(datasets: Sequence[TrajectorySet], seeds: Sequence[int]) -> _Prepared:
    datasets, seeds = tuple(datasets), tuple(seeds)
    with _CACHE_LOCK:
        for p in _CACHE:
            if p.seeds == seeds and len(p.datasets) == len(datasets) and all(a is b for a, b in zip(p.datasets, datasets)):
                _CACHE.remove(p)
                _CACHE.insert(0, p)
                return p
    prep = _Prepared(datasets, seeds)
    with _CACHE_LOCK:
        _CACHE.insert(0, prep)
        del _CACHE[_CACHE_SIZE:]
    return prep


# ------------------------------------------------------------------------ spawning
@functools.lru_cache(maxsize=1)
def _netns_prefix() -> tuple[str, ...]:
    """``unshare --net --`` if it works here (root, or unprivileged user namespaces)."""
    exe = shutil.which("unshare")
    if not exe:
        return ()
    args = [exe, "--net"] if os.geteuid() == 0 else [exe, "--net", "--map-root-user"]
    try:
        ok = subprocess.run(args + ["--", "true"], capture_output=True, timeout=10).returncode == 0
    except (OSError, subprocess.SubprocessError):
        ok = False
    return (*args, "--") if ok else ()


_EMPTY_DIR: list[str] = []


def _empty_dir() -> str:
    """An empty directory for the children's cwd and chroot, removed at exit."""
    with _CACHE_LOCK:
        if not _EMPTY_DIR or not os.path.isdir(_EMPTY_DIR[0]):
            d = tempfile.mkdtemp(prefix="autotts-sandbox-")
            _EMPTY_DIR[:] = [d]
            atexit.register(shutil.rmtree, d, True)
        return _EMPTY_DIR[0]


def _child_env() -> dict[str, str]:
    import mlflow_autotts

    pkg_root = str(Path(mlflow_autotts.__file__).resolve().parent.parent)
    return {"PATH": "/usr/bin:/bin", "LC_ALL": "C.UTF-8", "PYTHONHASHSEED": "0", "PYTHONIOENCODING": "utf-8",
            "PYTHONDONTWRITEBYTECODE": "1", "PYTHONPATH": pkg_root}


# ---------------------------------------------------------------------------- run
def run_candidate(source: str, datasets: Sequence[TrajectorySet], betas: Sequence[float], seeds: Sequence[int],
                  limits: SandboxLimits = SandboxLimits(), class_name: str | None = None,
                  params: dict[str, Any] | None = None, full_actions: bool = False) -> CandidateOutcome:
    """Score controller ``source`` on every (β, dataset) over ``seeds``, in a sandbox.

    ``source`` defines one ``Controller`` subclass (or name it with ``class_name``);
    ``params`` are extra JSON-serialisable constructor arguments. ``full_actions`` also
    returns each episode's action log (slower; for traces). Bad arguments from the caller
    raise ``ValueError``; everything the candidate does becomes ``outcome.failure``.
    """
    if not isinstance(source, str):
        raise ValueError(f"source must be a str, got {type(source).__name__}")
    datasets, seeds = list(datasets), [int(s) for s in seeds]
    if not datasets or not seeds or not list(betas):
        raise ValueError("run_candidate needs at least one dataset, one β and one seed")
    if any(s < 0 for s in seeds):
        raise ValueError(f"seeds must be >= 0, got {seeds}")
    try:
        betas = [check_beta(b) for b in betas]
    except ControllerError as exc:
        raise ValueError(str(exc)) from None
    try:
        json.dumps(params or {})
    except (TypeError, ValueError):
        raise ValueError(f"params must be JSON-serialisable, got {params!r}") from None
    prep = _prepared(datasets, seeds)
    return _Run(source, prep, betas, limits, class_name, params or {}, full_actions).run()


def candidate_actions(source: str, branches: Branches, seed: int, beta: float,
                      limits: SandboxLimits = SandboxLimits(), class_name: str | None = None,
                      params: dict[str, Any] | None = None) -> tuple[str | None, list[Action], CandidateOutcome]:
    """One episode of untrusted ``source`` in the sandbox, for traces: (answer, actions, outcome).

    The answer is None and the actions empty when ``outcome.failure`` is set.
    """
    ts = TrajectorySet([Problem(branches, "")], Provenance(source="trace"))
    out = run_candidate(source, [ts], [beta], [seed], limits, class_name, params, full_actions=True)
    if not out.ok or not out.episodes:
        return None, [], out
    return out.episodes[0].answer, out.actions[0], out


class _Violation(Exception):
    """The child broke the protocol or the rules (becomes a ``forbidden`` failure)."""

    def __init__(self, message: str, where: dict | None = None):
        super().__init__(message)
        self.where = where


class _Run:
    """One child process: spawn, feed, read, verify, score."""

    def __init__(self, source, prep: _Prepared, betas, limits: SandboxLimits, class_name, params, full):
        self.prep, self.betas, self.limits, self.full = prep, betas, limits, full
        self.key = os.urandom(_KEY_BYTES)
        header = {"source": source, "class_name": class_name, "params": params, "betas": betas,
                  "n_seeds": len(prep.seeds), "full": full,
                  "chroot": _empty_dir() if limits.drop_privileges and os.geteuid() == 0 else None,
                  "limits": {"memory_mb": limits.memory_mb, "cpu_seconds": limits.cpu_seconds,
                             "max_output_bytes": limits.max_output_bytes,
                             "keep_output_bytes": limits.keep_output_bytes,
                             "max_answer_chars": limits.max_answer_chars, "max_open_files": limits.max_open_files}}
        self.message = self.key + json.dumps(header, ensure_ascii=True).encode("utf-8") + b"\n" + prep.blob
        self.schedule = [(b, d, s) for b in range(len(betas)) for d in range(len(prep.datasets))
                         for s in range(len(prep.seeds))]
        self.next_block = 0
        self.seq = 0
        self.episodes: list[EpisodeRow] = []
        self.actions: list[list[Action]] | None = [] if full else None
        self.results: list[CandidateResult] = []
        self.group: list[tuple[int, int]] = []  # (correct, tokens) per seed of the current (β, dataset)
        self.failure: CandidateFailure | None = None
        self.ready: dict | None = None
        self.done = False
        self.output = ""
        self.isolation: tuple[str, ...] = ()
        self.parent_time = 0.0
        self.t_ready = 0.0

    # ---------------------------------------------------------------- process handling
    def run(self) -> CandidateOutcome:
        lim = self.limits
        prefix = _netns_prefix() if lim.isolate_network else ()
        r_fd, w_fd = os.pipe()
        cmd = [*prefix, sys.executable, "-s", "-P", "-B", "-m", "mlflow_autotts.sandbox.worker", str(w_fd)]
        t0 = time.monotonic()
        try:
            proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                    pass_fds=(w_fd,), start_new_session=True, cwd=_empty_dir(), env=_child_env())
        except BaseException:
            os.close(r_fd)
            raise
        finally:
            os.close(w_fd)
        deadline = t0 + lim.wall_seconds
        raw = {"stdout": bytearray(), "stderr": bytearray()}
        raw_total = 0
        timed_out = overflow = False
        buf = bytearray()
        sel = selectors.DefaultSelector()
        os.set_blocking(proc.stdin.fileno(), False)
        sel.register(proc.stdin.fileno(), selectors.EVENT_WRITE, "stdin")
        sel.register(r_fd, selectors.EVENT_READ, "result")
        sel.register(proc.stdout.fileno(), selectors.EVENT_READ, "stdout")
        sel.register(proc.stderr.fileno(), selectors.EVENT_READ, "stderr")
        pending = memoryview(self.message)
        open_fds = 4
        try:
            while open_fds:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    timed_out = True
                    break
                if (self.done or self.failure) and remaining > 2.0:
                    deadline = time.monotonic() + 2.0  # grace for the child to exit
                for sk, _ in sel.select(timeout=min(remaining, 1.0)):
                    tag = sk.data
                    if tag == "stdin":
                        try:
                            n = os.write(sk.fd, pending[:1 << 16])
                            pending = pending[n:]
                        except BlockingIOError:
                            continue
                        except (BrokenPipeError, OSError):
                            pending = pending[:0]
                        if not pending:
                            sel.unregister(sk.fd)
                            proc.stdin.close()
                            open_fds -= 1
                        continue
                    try:
                        chunk = os.read(sk.fd, 1 << 16)
                    except OSError:
                        chunk = b""
                    if not chunk:
                        sel.unregister(sk.fd)
                        open_fds -= 1
                        continue
                    if tag == "result":
                        buf += chunk
                        if not self.failure:
                            self._consume(buf, t0)
                        else:
                            buf.clear()
                        if len(buf) > _MAX_LINE and not self.failure:
                            self._fail_violation(_Violation("a result line exceeded the size limit"))
                    else:
                        raw_total += len(chunk)
                        keep = raw[tag]
                        if len(keep) < lim.keep_output_bytes:
                            keep += chunk[: lim.keep_output_bytes - len(keep)]
                        if raw_total > lim.max_output_bytes:
                            overflow = True
                            open_fds = 0
                            break
                if self.failure and not self.done and self.failure.kind == "forbidden":
                    break  # no need to hear more from a child that broke the rules
        finally:
            sel.close()
            _kill(proc)
            status, cpu = _reap(proc)
            for f in (proc.stdin, proc.stdout, proc.stderr):
                try:
                    f.close()
                except OSError:
                    pass
            os.close(r_fd)
        t_end = time.monotonic()
        stderr_text = raw["stderr"].decode("utf-8", "replace")
        if self.failure is None:
            if overflow:
                self.failure = CandidateFailure("output_limit", f"the child wrote more than {lim.max_output_bytes} "
                                                "bytes to its standard output/error")
            elif timed_out and not self.done:
                self.failure = CandidateFailure("timeout", f"did not finish within {lim.wall_seconds:g} s "
                                                "(wall clock)", where=self._where_now())
            elif not self.done:
                self.failure = self._death(status, stderr_text, cpu)
        output = self.output
        extra = (raw["stdout"] + raw["stderr"]).decode("utf-8", "replace")
        if extra and (self.failure is not None or extra.strip()):
            output = (output + ("\n" if output else "") + extra)[: lim.keep_output_bytes]
        name = ""
        uses_beta = True
        if self.ready:
            name = self.ready["name"] or self.ready["cls"]
            uses_beta = self.ready["uses_beta"]
        timings = SandboxTimings(startup=(self.t_ready - t0) if self.t_ready else 0.0, total=t_end - t0,
                                 child_cpu=cpu, parent=self.parent_time, episodes=len(self.episodes))
        return CandidateOutcome(self.failure, self.results, self.episodes, self.actions, name, uses_beta, output,
                                self.isolation + (("netns",) if prefix else ()), timings)

    def _death(self, status: int | None, stderr: str, cpu: float) -> CandidateFailure:
        where = self._where_now()
        tail = stderr.strip().splitlines()[-1][:300] if stderr.strip() else ""
        if status is None:
            return CandidateFailure("crash", "the child could not be reaped", where=where)
        if status < 0:
            sig = -status
            name = signal.Signals(sig).name if sig in signal.Signals._value2member_map_ else str(sig)
            if sig == signal.SIGXCPU or (sig == signal.SIGKILL and cpu >= self.limits.cpu_seconds):
                return CandidateFailure("timeout", f"CPU time limit of {self.limits.cpu_seconds:g} s exceeded",
                                        where=where)
            if sig == signal.SIGXFSZ:
                return CandidateFailure("forbidden", "tried to write a file", where=where)
            if "MemoryError" in stderr:
                return CandidateFailure("memory", f"ran out of memory (limit {self.limits.memory_mb} MB)", where=where)
            return CandidateFailure("crash", f"the interpreter died with {name}" + (f": {tail}" if tail else ""),
                                    where=where)
        if "MemoryError" in stderr:
            return CandidateFailure("memory", f"ran out of memory (limit {self.limits.memory_mb} MB)", where=where)
        if self.ready is None and status != 0 and tail:
            return CandidateFailure("crash", f"the sandbox failed to start (status {status}): {tail}", where=where)
        return CandidateFailure("exit", f"the process exited with status {status} before finishing "
                                "(os._exit or sys.exit)", where=where)

    def _where_now(self) -> dict | None:
        if self.next_block >= len(self.schedule):
            return None
        b, d, s = self.schedule[self.next_block]
        return {"beta": self.betas[b], "data": self.prep.names[d], "shuffle": self.prep.seeds[s]}

    # ------------------------------------------------------------------ protocol
    def _consume(self, buf: bytearray, t0: float) -> None:
        while not self.failure:
            nl = buf.find(b"\n")
            if nl < 0:
                return
            line = bytes(buf[:nl])
            del buf[: nl + 1]
            t = time.monotonic()
            try:
                self._handle(line, t0)
            except _Violation as v:
                self._fail_violation(v)
            finally:
                self.parent_time += time.monotonic() - t

    def _fail_violation(self, v: _Violation) -> None:
        self.failure = CandidateFailure("forbidden", str(v), where=v.where)

    def _handle(self, line: bytes, t0: float) -> None:
        if self.done:
            raise _Violation("protocol: output after the end of the run")
        try:
            msg = json.loads(line)
        except (ValueError, RecursionError):
            raise _Violation("protocol: a result line is not valid JSON") from None
        if not isinstance(msg, dict) or not isinstance(msg.get("t"), str):
            raise _Violation("protocol: a result line is not a message")
        t = msg["t"]
        if t == "block":
            if self.ready is None:
                raise _Violation("protocol: scores before the controller was ready")
            self._block(msg)
        elif t == "ready":
            if self.ready is not None or self.next_block:
                raise _Violation("protocol: repeated ready message")
            _expect(msg, {"t": str, "name": str, "cls": str, "uses_beta": bool, "isolation": list})
            self.ready = {"name": msg["name"][:200], "cls": msg["cls"][:200], "uses_beta": msg["uses_beta"]}
            self.isolation = _str_tuple(msg["isolation"])
            self.t_ready = time.monotonic()
        elif t == "fail":
            _expect(msg, {"t": str, "kind": str, "message": str, "traceback": str, "where": (dict, type(None)),
                          "output": str, "isolation": list})
            kind = msg["kind"] if msg["kind"] in FAILURE_KINDS else "crash"
            self.output = msg["output"][: self.limits.keep_output_bytes]
            self.isolation = self.isolation or _str_tuple(msg["isolation"])
            self.failure = CandidateFailure(kind, msg["message"][:4000], msg["traceback"][:8000],
                                            self._where_from(msg["where"]))
        elif t == "done":
            _expect(msg, {"t": str, "output": str})
            if self.next_block != len(self.schedule):
                raise _Violation(f"protocol: done after {self.next_block} of {len(self.schedule)} score blocks")
            self.output = msg["output"][: self.limits.keep_output_bytes]
            self.done = True
        else:
            raise _Violation(f"protocol: unknown message type {t[:40]!r}")

    def _where_from(self, w: dict | None) -> dict | None:
        if not w:
            return None
        out: dict[str, Any] = {}
        try:
            if "beta" in w:
                out["beta"] = self.betas[_idx(w["beta"], len(self.betas))]
            if "dataset" in w:
                d = _idx(w["dataset"], len(self.prep.datasets))
                out["data"] = self.prep.names[d]
                if "problem" in w:
                    out["problem"] = _idx(w["problem"], len(self.prep.datasets[d]))
            if "shuffle" in w:
                out["shuffle"] = self.prep.seeds[_idx(w["shuffle"], len(self.prep.seeds))]
        except ValueError:
            return None
        return out

    def _block(self, msg: dict) -> None:
        _expect(msg, {"t": str, "b": int, "d": int, "s": int, "a": list, "x": list, "v": list, "m": list})
        if self.next_block >= len(self.schedule) or (msg["b"], msg["d"], msg["s"]) != self.schedule[self.next_block]:
            raise _Violation("protocol: score blocks out of order")
        bi, di, si = self.schedule[self.next_block]
        tables = self.prep.tables[di]
        n = len(tables)
        answers, sums, nviols, macs = msg["a"], msg["x"], msg["v"], msg["m"]
        if not len(answers) == len(sums) == len(nviols) == len(macs) == n:
            raise _Violation("protocol: a score block has the wrong number of episodes")
        beta, name, seed = self.betas[bi], self.prep.names[di], self.prep.seeds[si]
        order_of = self.prep.orders
        key = self.key
        max_answer = self.limits.max_answer_chars
        correct_n = tok_sum = 0
        rows = []
        for p in range(n):
            where = {"beta": beta, "data": name, "problem": p, "shuffle": seed}
            answer, summary, nviol, mac = answers[p], sums[p], nviols[p], macs[p]
            if not (answer is None or (type(answer) is str and len(answer) <= max_answer)):
                raise _Violation("protocol: an answer is not a short string or null", where)
            if type(nviol) is not int or type(summary) is not list or type(mac) is not str or len(mac) != _MAC_HEX:
                raise _Violation("protocol: malformed episode seal", where)
            if not all(type(x) is int and 0 <= x < (1 << 62) for x in summary):
                raise _Violation("protocol: malformed episode summary", where)
            if not 0 <= nviol < (1 << 62):
                raise _Violation("protocol: malformed episode seal", where)
            expect = blake2b(array("q", [self.seq, nviol, len(summary)] + summary).tobytes(), key=key,
                             digest_size=16).hexdigest()
            if not hmac.compare_digest(expect, mac):
                raise _Violation("the episode's action record failed its integrity check (forged or altered)", where)
            self.seq += 1
            if nviol:
                raise _Violation("a forbidden operation was attempted (and denied)", where)
            nprobes, btok, iv, probes, offs, finals, gold, br = tables[p]
            order = order_of[len(btok)][si]
            try:
                if self.full:
                    actions = _decode_log(summary)
                    steps = summary_from_actions(br, order, actions)
                    tokens, opened, intervals = replay_cost(br, order, actions)
                    t2, i2, revealed = _summary_cost(nprobes, btok, iv, probes, offs, finals, order, steps, answer)
                    if (t2, i2) != (tokens, intervals):  # pragma: no cover  (the two cost paths must agree)
                        raise ValueError(f"cost mismatch: replay {tokens}/{intervals}, summary {t2}/{i2}")
                    self.actions.append(actions)
                else:
                    tokens, intervals, revealed = _summary_cost(nprobes, btok, iv, probes, offs, finals, order,
                                                                summary, answer)
                    opened = len(summary)
            except ValueError as exc:
                raise _Violation(f"protocol: impossible action record ({exc})", where) from None
            correct = answer == gold
            if not revealed:
                correct = False
                rows.append(EpisodeRow(name, beta, p, seed, answer, correct, tokens, opened, intervals))
                self.episodes.extend(rows)
                raise _Violation(f"unrevealed_answer: solve() returned {answer[:80]!r}, which none of the "
                                 "actions it paid for revealed", where)
            correct_n += correct
            tok_sum += tokens
            rows.append(EpisodeRow(name, beta, p, seed, answer, correct, tokens, opened, intervals))
        self.episodes.extend(rows)
        self.group.append((correct_n, tok_sum))
        self.next_block += 1
        if si == len(self.prep.seeds) - 1:
            self._close_group(bi, di, n)

    def _close_group(self, bi: int, di: int, n: int) -> None:
        accuracy, mean_tokens = shuffle_means(self.group, n)  # the runner's formula, identical floats
        self.results.append(CandidateResult(
            data=self.prep.names[di], beta=self.betas[bi], accuracy=accuracy, mean_tokens=mean_tokens,
            n_problems=n, shuffles=len(self.prep.seeds)))
        self.group = []


def _expect(msg: dict, shape: dict[str, Any]) -> None:
    if set(msg) != set(shape):
        raise _Violation(f"protocol: unexpected fields in a {msg.get('t')!r} message")
    for k, typ in shape.items():
        if not isinstance(msg[k], typ) or (typ is int and isinstance(msg[k], bool)):
            raise _Violation(f"protocol: field {k!r} of a {msg.get('t')!r} message has the wrong type")


def _idx(v: Any, n: int) -> int:
    if type(v) is not int or not 0 <= v < n:
        raise ValueError("index out of range")
    return v


def _str_tuple(v: list) -> tuple[str, ...]:
    return tuple(str(x)[:40] for x in v[:20] if isinstance(x, str))


def _kill(proc: subprocess.Popen) -> None:
    """SIGKILL the child's process group and the child (not yet reaped, so the pid is its)."""
    for kill in (os.killpg, os.kill):
        try:
            kill(proc.pid, signal.SIGKILL)
        except OSError:
            pass


def _reap(proc: subprocess.Popen) -> tuple[int | None, float]:
    """Wait for the child; (exit code as Popen reports it, CPU seconds used)."""
    try:
        _, status, usage = os.wait4(proc.pid, 0)
    except ChildProcessError:
        proc.wait()
        return proc.returncode, 0.0
    proc.returncode = os.waitstatus_to_exitcode(status)
    return proc.returncode, usage.ru_utime + usage.ru_stime
