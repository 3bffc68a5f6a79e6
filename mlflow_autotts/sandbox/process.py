"""The trusted side of the sandbox: scoring untrusted controller source in replay (batch mode).

``ProcessSandbox(limits).score(source, datasets, betas, seeds)`` starts one fresh
interpreter per candidate (``python -m mlflow_autotts.sandbox.worker``, never a fork of
this process, which holds the gold answers), sends it the branches of every problem and the
shuffle orders, and reads sealed per-episode summaries back. The child runs all β values and
shuffles in one go. The gold answers, file paths and this process's environment (API keys,
``AUTOTTS_DATA_DIR``) never reach it. ``sandbox.session`` runs the same child interactively
(serving), ``sandbox.scoring`` wraps this for commands that need numbers or an error.

Threat model (``docs/architecture.md``, "The trust boundary"). The candidate is hostile: it
may try to read gold answers, files or credentials, reach the network, start processes,
exhaust resources, switch off limits, read branches without paying, rewrite its bill, forge
results, or confuse this process. Defences, outermost first:

- **Process** (``child``, ``lockdown``): a new session (killed as a group), a clean
  environment, cwd in an empty directory, a network namespace of its own (``unshare``),
  rlimits on address space, CPU time, processes, file size (0), core size (0) and
  descriptors; as root a chroot into the empty directory and an unprivileged uid of its
  own. All are set by the child before the candidate's source is compiled, in the kernel,
  where the candidate cannot undo them.
- **Observed isolation**: the child then stops and waits; this process reads its network
  namespace, root directory, uids and rlimits from ``/proc`` (``Isolation``) and refuses
  to go on (``SandboxIsolationError``) when any measure the limits ask for is missing,
  unless ``SandboxLimits.allow_weaker_isolation``. Every outcome carries that record.
- **Limits this process enforces**: the wall clock, the output volume (stdout and stderr
  are counted on the pipes; past ``max_output_bytes`` the child is killed), the size of
  every message (a line longer than the largest legitimate message is a violation, so at
  most ``max_line`` bytes are ever buffered), and answer lengths. No limit lives in an
  object the candidate can reach.
- **Interpreter** (``lockdown``): a PEP 578 audit hook installed before the candidate is
  compiled denies opening files, processes, sockets, ``ctypes``, new imports, ``gc``
  object walking, frame access, code object construction and every other audited event
  not in ``policy.ALLOWED_AUDIT_EVENTS``; ``_signal``'s handler functions and the module
  constructors are removed; the candidate's ``__import__`` knows only
  ``policy.ALLOWED_IMPORTS``. The static check of ``search.extract`` is a lint for early
  feedback, not part of this boundary.
- **Cost integrity** (``oracle``, ``cost``): the branches live only inside a generator the
  candidate cannot introspect through the denied routes, which seals each episode's
  per-branch step summary with a keyed MAC whose key never leaves its frame. This process
  checks every MAC, **recomputes** tokens, branches opened and intervals from the summary,
  and checks answers against the gold itself. As a last line: an answer must be ``None``
  or one of the answers the paid-for steps revealed; any other answer is an
  ``unrevealed_answer``, counted wrong, and fails the candidate as ``forbidden``.
- **Protocol** (``protocol``): nothing from the child is unpickled; its JSON is validated
  strictly (fields, types, lengths, order) and any deviation fails the candidate as
  ``forbidden``.
- **Failure kinds** are decided here from what this process observes (its clock, the
  exit status or signal, ``wait4`` CPU time, peak memory read from ``/proc``, the pipes),
  never from what the child prints; a ``FAIL`` report from the child only describes Python-level failures
  (exception, bad return, ``MemoryError``, denied operation), which any candidate could
  cause on purpose anyway.

A failure (``outcome.FAILURE_KINDS``) is the candidate's, with a message and a traceback
excerpt; nothing is raised to the caller for anything the candidate does.

Use (the search loop)::

    sandbox = ProcessSandbox(SandboxLimits(wall_seconds=120))
    outcome = sandbox.score(source, search_sets, betas, seeds)
    if outcome.ok:
        outcome.results            # EvalResult per (β, dataset): accuracy %, mean tokens
    else:
        outcome.failure            # kind, message, traceback excerpt, episode
    outcome.isolation              # what was in force, as observed
    outcome.output                 # the start of what the candidate printed

Thread-safe: score several candidates from a thread pool, each gets its own child. Pass
the same ``TrajectorySet`` objects and seeds every time: their encoding is cached. Traces:
``candidate_actions`` (sandboxed, one episode) or ``cost.controller_actions`` (trusted).
"""

from __future__ import annotations

import hmac
import json
import os
import threading
import time
from array import array
from dataclasses import replace
from hashlib import blake2b
from typing import Any, Sequence

from mlflow_autotts.controllers.base import check_beta
from mlflow_autotts.data.trajectory import Branches, Problem, Provenance, TrajectorySet
from mlflow_autotts.errors import ControllerError
from mlflow_autotts.replay.episode import Action, replay_cost, shuffle_order
from mlflow_autotts.replay.results import EvalResult, shuffle_means
from mlflow_autotts.sandbox.cost import decode_log, revealing_cost, summary_from_actions
from mlflow_autotts.sandbox.interface import Sandbox
from mlflow_autotts.sandbox.limits import Isolation, SandboxLimits
from mlflow_autotts.sandbox.outcome import CandidateFailure, CandidateOutcome, EpisodeRow, SandboxTimings
from mlflow_autotts.sandbox.child import READY_FIELDS, Child, Violation, expect_fields, reported_failure
from mlflow_autotts.sandbox.protocol import (
    KEY_BYTES, MAC_HEX, MAX_BETAS, MAX_NAME_CHARS, Data, Field, Header, Mode, Msg, Where, episode_bytes,
    control_bytes, dumps, trace_action_cap,
)


class ProcessSandbox(Sandbox):
    """One fresh, locked-down interpreter process per candidate (see the module docstring)."""

    def __init__(self, limits: SandboxLimits = SandboxLimits()):
        self.limits = limits

    def score(self, source: str, datasets: Sequence[TrajectorySet], betas: Sequence[float | None],
              seeds: Sequence[int], *, class_name: str | None = None, params: dict[str, Any] | None = None,
              full_actions: bool = False) -> CandidateOutcome:
        if not isinstance(source, str):
            raise ValueError(f"source must be a str, got {type(source).__name__}")
        datasets, seeds, betas = list(datasets), [int(s) for s in seeds], list(betas)
        if not datasets or not seeds or not betas:
            raise ValueError("scoring in the sandbox needs at least one dataset, one β and one seed")
        if any(s < 0 for s in seeds):
            raise ValueError(f"seeds must be >= 0, got {seeds}")
        if len(betas) > MAX_BETAS:
            raise ValueError(f"at most {MAX_BETAS} β values per candidate, got {len(betas)}")
        try:
            betas = [None if b is None else check_beta(b) for b in betas]
        except ControllerError as exc:
            raise ValueError(str(exc)) from None
        try:
            json.dumps(params or {})
        except (TypeError, ValueError):
            raise ValueError(f"params must be JSON-serialisable, got {params!r}") from None
        prep = _prepared(datasets, seeds)
        return _Run(source, prep, betas, self.limits, class_name, params or {}, full_actions).run()

    def isolation(self) -> Isolation:
        return probe_isolation(self.limits)


def run_candidate(source: str, datasets: Sequence[TrajectorySet], betas: Sequence[float | None], seeds: Sequence[int],
                  limits: SandboxLimits = SandboxLimits(), class_name: str | None = None,
                  params: dict[str, Any] | None = None, full_actions: bool = False) -> CandidateOutcome:
    """``ProcessSandbox(limits).score(...)`` in one call."""
    return ProcessSandbox(limits).score(source, datasets, betas, seeds, class_name=class_name, params=params,
                                        full_actions=full_actions)


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


def probe_isolation(limits: SandboxLimits) -> Isolation:
    """The isolation a child gets under ``limits`` here: a child that loads no candidate is
    started, locks itself down and is observed, then killed."""
    child = Child(limits, control_bytes(limits.max_answer_chars))
    applied: list = []

    def handle(msg: dict) -> bool:
        if msg[Field.TYPE] != Msg.LOCKED:
            raise Violation("protocol: expected the lockdown report")
        applied.append(msg.get(Field.APPLIED))
        return True

    try:
        header = _header(child, "", None, [], {}, 0, None)
        child.send(dumps(header) + os.urandom(KEY_BYTES) + dumps({Data.DATASETS: [], Data.ORDERS: {},
                                                                    Data.CONFIDENCE: [[0.0]]}))
        stop = child.pump(handle, time.monotonic() + limits.wall_seconds)
        if not applied or not isinstance(applied[0], list):
            raise child.start_failure(stop)
        return child.observe(applied[0])
    finally:
        child.finish()


def _header(child: Child, source: str, class_name: str | None, betas: list, params: dict, n_seeds: int,
            trace_cap: int | None) -> dict:
    return child.header(Mode.BATCH, source, class_name, params, betas,
                        **{Header.N_SEEDS: n_seeds, Header.FULL_ACTIONS: trace_cap})


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
        self.shapes: list[list[tuple[int, int]]] = []
        """Per dataset, per problem: (branches, most probes of one branch), for message bounds."""
        enc_sets = []
        for ds in self.datasets:
            tables, enc, shapes = [], [], []
            for p in ds.problems:
                br = p.branches
                tables.append((br.n_probes, br.branch_tokens, br.interval_tokens, br.probe_answers, br.probe_offsets,
                               br.final_answers, p.gold_answer, br))
                shapes.append((br.n_branches, max(br.n_probes, default=0)))
                ids: dict[str, int] = {}
                f_ids = [ids.setdefault(a, len(ids)) for a in br.final_answers]
                p_ids = [ids.setdefault(a, len(ids)) for a in br.probe_answers]
                enc.append({Data.QUESTION: br.question, Data.INTERVAL: br.interval_tokens, Data.STRINGS: list(ids),
                            Data.PROBE_IDS: p_ids, Data.OFFSETS: list(br.probe_offsets),
                            Data.BRANCH_TOKENS: list(br.branch_tokens), Data.FINAL_IDS: f_ids,
                            Data.SIGNALS: {k: list(v) for k, v in br.signals.items()}})
            self.tables.append(tables)
            self.shapes.append(shapes)
            enc_sets.append(enc)
        size = max([130] + [n + 2 for n in ns])
        conf = voting.confidence_table(size)  # tabulated with scipy, as in-process runs do
        self.blob = dumps({Data.DATASETS: enc_sets, Data.ORDERS: {str(n): v for n, v in self.orders.items()},
                           Data.CONFIDENCE: conf})


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


# ---------------------------------------------------------------------------- run
def _valid_beta(v: Any) -> bool:
    return type(v) in (int, float) and 0.0 <= v <= 1.0


class _Run:
    """One child process: spawn, feed, observe, read, verify, score."""

    def __init__(self, source, prep: _Prepared, betas, limits: SandboxLimits, class_name, params, full):
        self.source, self.class_name, self.params = source, class_name, params
        self.prep, self.betas, self.limits, self.full = prep, betas, limits, full
        self.key = os.urandom(KEY_BYTES)
        self.trace_cap = trace_action_cap([s for shapes in prep.shapes for s in shapes]) if full else None
        self.max_line = max([control_bytes(limits.max_answer_chars)] + [
            episode_bytes(shapes, limits.max_answer_chars, self.trace_cap) for shapes in prep.shapes])
        self.schedule = [(b, d, s) for b in range(len(betas)) for d in range(len(prep.datasets))
                         for s in range(len(prep.seeds))]
        self.next_block = 0
        self.seq = 0
        self.episodes: list[EpisodeRow] = []
        self.actions: list[list[Action]] | None = [] if full else None
        self.results: list[EvalResult] = []
        self.group: list[tuple[int, int]] = []  # (correct, tokens) per seed of the current (β, dataset)
        self.block_rows: list[EpisodeRow] = []  # the current block's episodes so far
        self.failure: CandidateFailure | None = None
        self.applied: list | None = None
        self.ready: dict | None = None
        self.configs: list[dict] = []
        self.done = False
        self.parent_time = 0.0
        self.t_ready = 0.0

    def run(self) -> CandidateOutcome:
        lim = self.limits
        child = Child(lim, self.max_line)
        t0 = child.t0
        deadline = t0 + lim.wall_seconds
        try:
            header = _header(child, self.source, self.class_name, self.betas, self.params, len(self.prep.seeds),
                             self.trace_cap)
            child.send(dumps(header) + self.key + self.prep.blob)
            stop = child.pump(self._handle, deadline)
            if self.applied is None:
                raise child.start_failure(stop)
            child.go(self.applied)
            child.close_stdin()
            stop = child.pump(self._handle, deadline)
            if stop == "handled" or stop == "closed":
                child.exit_gracefully(deadline)
            else:
                child.finish()
        finally:
            child.finish()
        if self.failure is None:
            self.failure = self._stopped(stop, child)
        name = uses_beta = None
        if self.ready:
            name = self.ready["name"] or self.ready["cls"]
            uses_beta = self.ready["uses_beta"]
        cpu = child.cpu_seconds
        timings = SandboxTimings(startup=(self.t_ready - t0) if self.t_ready else 0.0, total=time.monotonic() - t0,
                                 child_cpu=cpu, child_max_rss_mb=child.peak_rss / 2**20,
                                 parent=self.parent_time, episodes=len(self.episodes))
        return CandidateOutcome(self.failure, self.results, self.episodes, self.actions, name or "",
                                True if uses_beta is None else uses_beta, child.output.text(), child.isolation, timings)

    def _stopped(self, stop: str, child: Child) -> CandidateFailure | None:
        """The failure, if any, for a child that stopped with ``stop`` (decided from observations)."""
        where = self._where_now()
        failure = child.stop_failure(stop, where, "finish (wall clock)")
        if failure is not None or self.done:
            return failure
        return child.death(where)

    def _where_now(self) -> dict | None:
        if self.next_block >= len(self.schedule):
            return None
        b, d, s = self.schedule[self.next_block]
        return {"beta": self.betas[b], "data": self.prep.names[d], "shuffle": self.prep.seeds[s]}

    # ------------------------------------------------------------------ protocol
    def _handle(self, msg: dict) -> bool:
        t = time.monotonic()
        try:
            return self._dispatch(msg)
        finally:
            self.parent_time += time.monotonic() - t

    def _dispatch(self, msg: dict) -> bool:
        t = msg[Field.TYPE]
        if self.applied is None:
            if t != Msg.LOCKED:
                raise Violation("protocol: expected the lockdown report first")
            expect_fields(msg, {Field.TYPE: str, Field.APPLIED: list})
            self.applied = msg[Field.APPLIED]
            return True
        if self.done:
            raise Violation("protocol: output after the end of the run")
        if t == Msg.EPISODE:
            if self.ready is None:
                raise Violation("protocol: scores before the controller was ready")
            self._episode(msg)
            return False
        if t == Msg.READY:
            if self.ready is not None:
                raise Violation("protocol: repeated ready message")
            expect_fields(msg, READY_FIELDS)
            built, configs = msg[Field.BETAS], msg[Field.CONFIGS]
            if len(built) != len(self.betas) or len(configs) != len(self.betas):
                raise Violation("protocol: ready message with the wrong number of β values")
            if not all(isinstance(c, dict) for c in configs):
                raise Violation("protocol: a controller configuration is not an object")
            self.configs = configs
            for i, b in enumerate(self.betas):
                if b is None:
                    if not _valid_beta(built[i]):
                        raise Violation("protocol: the controller's default β is not a number in [0, 1]")
                    self.betas[i] = float(built[i])
            self.ready = {"name": msg[Field.NAME][:MAX_NAME_CHARS], "cls": msg[Field.CLASS][:MAX_NAME_CHARS],
                          "uses_beta": msg[Field.USES_BETA]}
            self.t_ready = time.monotonic()
            return False
        if t == Msg.FAIL:
            failure = reported_failure(msg)  # checks the fields first
            self.failure = replace(failure, where=self._where_from(msg[Field.WHERE]))
            return True
        if t == Msg.DONE:
            expect_fields(msg, {Field.TYPE: str})
            if self.next_block != len(self.schedule):
                raise Violation(f"protocol: done after {self.next_block} of {len(self.schedule)} score blocks")
            self.done = True
            return True
        raise Violation(f"protocol: unexpected message type {t[:40]!r}")

    def _where_from(self, w: dict | None) -> dict | None:
        if not w:
            return None
        out: dict[str, Any] = {}
        try:
            if Where.BETA in w:
                out["beta"] = self.betas[_idx(w[Where.BETA], len(self.betas))]
            if Where.DATASET in w:
                d = _idx(w[Where.DATASET], len(self.prep.datasets))
                out["data"] = self.prep.names[d]
                if Where.PROBLEM in w:
                    out["problem"] = _idx(w[Where.PROBLEM], len(self.prep.datasets[d]))
            if Where.SHUFFLE in w:
                out["shuffle"] = self.prep.seeds[_idx(w[Where.SHUFFLE], len(self.prep.seeds))]
        except ValueError:
            return None
        return out

    def _episode(self, msg: dict) -> None:
        """One sealed episode, from the fork that played it, checked as it arrives (order,
        seal, cost, revealed answer); a block (β, dataset, shuffle) is scored once all its
        problems are in."""
        expect_fields(msg, {Field.TYPE: str, Field.BETA_INDEX: int, Field.DATASET_INDEX: int, Field.SHUFFLE_INDEX: int,
                      Field.PROBLEM_INDEX: int, Field.ANSWER_GIVEN: (str, type(None)), Field.SUMMARY: list,
                      Field.VIOLATIONS: int, Field.MAC: str})
        at = (msg[Field.BETA_INDEX], msg[Field.DATASET_INDEX], msg[Field.SHUFFLE_INDEX])
        p = msg[Field.PROBLEM_INDEX]
        if self.next_block >= len(self.schedule) or at != self.schedule[self.next_block] or p != len(self.block_rows):
            raise Violation("protocol: episodes out of order")
        bi, di, si = at
        tables = self.prep.tables[di]
        beta, name, seed = self.betas[bi], self.prep.names[di], self.prep.seeds[si]
        where = {"beta": beta, "data": name, "problem": p, "shuffle": seed}
        answer, summary, nviol, mac = msg[Field.ANSWER_GIVEN], msg[Field.SUMMARY], msg[Field.VIOLATIONS], msg[Field.MAC]
        if answer is not None and len(answer) > self.limits.max_answer_chars:
            raise Violation("protocol: an answer is not a short string or null", where)
        if len(mac) != MAC_HEX or not 0 <= nviol < (1 << 62):
            raise Violation("protocol: malformed episode seal", where)
        if not all(type(x) is int and 0 <= x < (1 << 62) for x in summary):
            raise Violation("protocol: malformed episode summary", where)
        expect = blake2b(array("q", [self.seq, nviol, len(summary)] + summary).tobytes(), key=self.key,
                         digest_size=16).hexdigest()
        if not hmac.compare_digest(expect, mac):
            raise Violation("the episode's action record failed its integrity check (forged or altered)", where)
        self.seq += 1
        if nviol:
            raise Violation("a forbidden operation was attempted (and denied)", where)
        nprobes, btok, iv, probes, offs, finals, gold, br = tables[p]
        order = self.prep.orders[len(btok)][si]
        try:
            if self.full:
                actions = decode_log(summary)
                steps = summary_from_actions(br, order, actions)
                tokens, opened, intervals = replay_cost(br, order, actions)
                t2, i2, revealed = revealing_cost(nprobes, btok, iv, probes, offs, finals, order, steps, answer)
                if (t2, i2) != (tokens, intervals):  # pragma: no cover  (the two cost paths must agree)
                    raise ValueError(f"cost mismatch: replay {tokens}/{intervals}, summary {t2}/{i2}")
                self.actions.append(actions)
            else:
                tokens, intervals, revealed = revealing_cost(nprobes, btok, iv, probes, offs, finals, order, summary,
                                                             answer)
                opened = len(summary)
        except ValueError as exc:
            raise Violation(f"protocol: impossible action record ({exc})", where) from None
        if not revealed:
            self.episodes.extend(self.block_rows)
            self.episodes.append(EpisodeRow(name, beta, p, seed, answer, False, tokens, opened, intervals))
            raise Violation(f"unrevealed_answer: solve() returned {answer[:80]!r}, which none of the "
                            "actions it paid for revealed", where)
        self.block_rows.append(EpisodeRow(name, beta, p, seed, answer, answer == gold, tokens, opened, intervals))
        if len(self.block_rows) < len(tables):
            return
        rows, self.block_rows = self.block_rows, []
        self.episodes.extend(rows)
        self.group.append((sum(r.correct for r in rows), sum(r.tokens for r in rows)))
        self.next_block += 1
        if si == len(self.prep.seeds) - 1:
            self._close_group(bi, di, len(tables))

    def _close_group(self, bi: int, di: int, n: int) -> None:
        accuracy, mean_tokens = shuffle_means(self.group, n)  # the runner's formula, identical floats
        self.results.append(EvalResult(
            data=self.prep.names[di], controller=self.ready["name"] or self.ready["cls"], beta=self.betas[bi],
            params=self.configs[bi], shuffles=len(self.prep.seeds), n_problems=n, accuracy=accuracy,
            mean_tokens=mean_tokens))
        self.group = []


def _idx(v: Any, n: int) -> int:
    if type(v) is not int or not 0 <= v < n:
        raise ValueError("index out of range")
    return v
