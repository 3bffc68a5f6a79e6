"""One sandbox child seen from the trusted side: spawn, pipes, isolation, death.

Shared by the batch runner (``sandbox.process``) and the session (``sandbox.session``).
Everything the candidate could influence is bounded here: a result line longer than the
largest legitimate message is a violation (``Child.max_line``), its stdout and stderr are
counted and only a prefix kept, and the kind of a death is decided from what this process
observes (exit status or signal, ``wait4`` CPU time, the child's peak memory from
``/proc``, its own clock), never from what the child wrote (``docs/architecture.md``, "The trust boundary").
"""

from __future__ import annotations

import atexit
import functools
import json
import os
import resource
import selectors
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any, Callable

from mlflow_autotts.sandbox.limits import Isolation, SandboxLimits, missing_measures
from mlflow_autotts.sandbox.outcome import CandidateFailure, SandboxError, SandboxIsolationError
from mlflow_autotts.sandbox.protocol import (
    CHILD_REPORTED_KINDS, MAX_MESSAGE_CHARS, MAX_TRACEBACK_CHARS, TAMPERED_EXIT, FailureKind, Field, Header, Limit, Mode, Msg,
    dumps,
)

MEMORY_NEAR_LIMIT = 0.9
"""A child killed with its peak resident memory at this share of its address-space limit or
more ran out of memory (resident memory is always below the address space)."""
PEAK_SAMPLE_SECONDS = 0.2
"""How often the child's peak resident memory (``VmHWM``) is read while it runs. ``wait4``'s
``ru_maxrss`` cannot serve: Linux carries the spawning process's peak across ``exec``, so it
reports this (large) process's memory for a small child."""
EXIT_GRACE_SECONDS = 2.0
"""After its last message, how long a child may take to exit before it is killed."""

_READ_CHUNK = 1 << 16


class Violation(Exception):
    """The child broke the protocol or the rules (a ``forbidden`` failure)."""

    def __init__(self, message: str, where: dict | None = None):
        super().__init__(message)
        self.where = where


def expect_fields(msg: dict, shape: dict[str, Any]) -> None:
    """``Violation`` unless ``msg`` has exactly the fields of ``shape``, of those types."""
    if set(msg) != set(shape):
        raise Violation(f"protocol: unexpected fields in a {str(msg.get(Field.TYPE))[:40]!r} message")
    for k, typ in shape.items():
        if not isinstance(msg[k], typ) or (typ is int and isinstance(msg[k], bool)):
            raise Violation(f"protocol: field {k!r} of a {str(msg.get(Field.TYPE))[:40]!r} message has the wrong type")


READY_FIELDS = {Field.TYPE: str, Field.NAME: str, Field.CLASS: str, Field.USES_BETA: bool, Field.BETAS: list,
                Field.CONFIGS: list}


def reported_failure(msg: dict, where: dict | None = None) -> CandidateFailure:
    """The candidate's failure from a ``FAIL`` message (only the kinds a child may report)."""
    expect_fields(msg, {Field.TYPE: str, Field.KIND: str, Field.MESSAGE: str, Field.TRACEBACK: str,
                        Field.WHERE: (dict, type(None))})
    if msg[Field.KIND] not in CHILD_REPORTED_KINDS:
        raise Violation(f"protocol: a failure of kind {msg[Field.KIND][:40]!r} cannot come from the child")
    return CandidateFailure(msg[Field.KIND], msg[Field.MESSAGE][:MAX_MESSAGE_CHARS],
                            msg[Field.TRACEBACK][:MAX_TRACEBACK_CHARS], where)


# --------------------------------------------------------------------------- spawning
@functools.lru_cache(maxsize=1)
def netns_prefix() -> tuple[tuple[str, ...], str]:
    """(``unshare`` command prefix for a new network namespace, why none) for this machine."""
    exe = shutil.which("unshare")
    if not exe:
        return (), "no unshare command"
    args = [exe, "--net"] if os.geteuid() == 0 else [exe, "--net", "--map-root-user"]
    try:
        run = subprocess.run(args + ["--", "true"], capture_output=True, timeout=10)
    except (OSError, subprocess.SubprocessError) as exc:
        return (), f"unshare failed: {exc}"
    if run.returncode != 0:
        return (), "unshare failed: " + run.stderr.decode("utf-8", "replace").strip()[:200]
    return (*args, "--"), ""


_LOCK = threading.Lock()
_EMPTY_DIR: list[str] = []


def empty_dir() -> str:
    """An empty directory for the children's cwd and chroot, removed at exit."""
    with _LOCK:
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


class _Output:
    """The child's stdout and stderr: counted in full, a prefix kept."""

    def __init__(self, limit: int, keep: int):
        self.limit, self.keep = limit, keep
        self.total = 0
        self.kept = bytearray()

    def reset(self) -> None:
        self.total = 0
        self.kept.clear()

    def add(self, chunk: bytes) -> None:
        self.total += len(chunk)
        room = self.keep - len(self.kept)
        if room > 0:
            self.kept += chunk[:room]

    @property
    def over(self) -> bool:
        return self.total > self.limit

    def text(self) -> str:
        return self.kept.decode("utf-8", "replace")


class Child:
    """A sandbox child process (``python -m mlflow_autotts.sandbox.worker``) and its pipes.

    ``pump`` moves bytes until the handler says stop, the deadline passes, the result pipe
    closes, the output limit is crossed or the child breaks the protocol; it buffers at
    most ``max_line`` bytes of an unfinished result line.
    """

    def __init__(self, limits: SandboxLimits, max_line: int):
        self.limits = limits
        self.max_line = max_line
        prefix, self.netns_note = netns_prefix() if limits.isolate_network else ((), "")
        self.chroot_dir = empty_dir() if limits.drop_privileges else None
        r_fd, w_fd = os.pipe()
        cmd = [*prefix, sys.executable, "-s", "-P", "-B", "-m", "mlflow_autotts.sandbox.worker", str(w_fd)]
        self.t0 = time.monotonic()
        try:
            self.proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                         pass_fds=(w_fd,), start_new_session=True, cwd=empty_dir(), env=_child_env())
        except BaseException:
            os.close(r_fd)
            raise
        finally:
            os.close(w_fd)
        self.pid = self.proc.pid
        self.result_fd = r_fd
        self.stdin_fd = self.proc.stdin.fileno()
        os.set_blocking(self.stdin_fd, False)
        self.sel = selectors.DefaultSelector()
        self.sel.register(r_fd, selectors.EVENT_READ, "result")
        self.sel.register(self.proc.stdout.fileno(), selectors.EVENT_READ, "output")
        self.sel.register(self.proc.stderr.fileno(), selectors.EVENT_READ, "output")
        self.pending = bytearray()
        self.close_when_sent = False
        self.stdin_open = True
        self.buf = bytearray()
        self.scanned = 0
        self.output = _Output(int(limits.max_output_bytes), int(limits.keep_output_bytes))
        self.result_open = True
        self.violation: Violation | None = None
        self.status: int | None = None
        self.rusage: Any = None
        self.isolation: Isolation | None = None
        self.killed = False
        self.peak_rss = 0
        """The child's own peak resident memory in bytes, as last read from ``/proc``."""
        self._sampled = 0.0

    def header(self, mode: Mode, source: str, class_name: str | None, params: dict, betas: list, **extra) -> dict:
        """The first line for the child: what to load and the limits it applies to itself."""
        lim = self.limits
        return {Header.MODE: mode, Header.SOURCE: source, Header.CLASS_NAME: class_name, Header.PARAMS: params,
                Header.BETAS: betas, Header.CHROOT: self.chroot_dir, **extra,
                Header.LIMITS: {Limit.MEMORY_MB: lim.memory_mb, Limit.CPU_SECONDS: lim.cpu_rlimit,
                                Limit.MAX_OPEN_FILES: lim.max_open_files, Limit.MAX_ANSWER_CHARS: lim.max_answer_chars}}

    # ------------------------------------------------------------------ writing
    def send(self, msg: dict | bytes) -> None:
        """Queue a message (or raw bytes) for the child's stdin; ``pump`` writes it."""
        if not self.stdin_open or self.status is not None:
            return
        first = not self.pending
        self.pending += msg if isinstance(msg, (bytes, bytearray)) else dumps(msg)
        if first:
            self._write()

    def close_stdin(self) -> None:
        """Close the child's stdin once everything queued is written."""
        self.close_when_sent = True
        if not self.pending:
            self._write()

    def _write(self) -> None:
        if self.status is not None:  # reaped: the pipes are closed
            return
        if self.pending:
            try:
                n = os.write(self.stdin_fd, self.pending[:1 << 20])
                del self.pending[:n]
            except BlockingIOError:
                pass
            except OSError:  # the child is gone or closed its stdin
                self.pending.clear()
        key = self.sel.get_map().get(self.stdin_fd)
        if self.pending and key is None:
            self.sel.register(self.stdin_fd, selectors.EVENT_WRITE, "stdin")
        elif not self.pending:
            if key is not None:
                self.sel.unregister(self.stdin_fd)
            if self.close_when_sent and self.stdin_open:
                self.stdin_open = False
                try:
                    self.proc.stdin.close()
                except OSError:
                    pass

    # ------------------------------------------------------------------ reading
    def pump(self, handle: Callable[[dict], bool], deadline: float) -> str:
        """Move bytes until ``handle(message)`` returns True; then, or else, say why it stopped:
        ``handled``, ``deadline``, ``closed`` (the result pipe), ``output`` (over the limit)
        or ``violation`` (``self.violation`` says which)."""
        while True:
            if self.violation is not None:
                return "violation"
            if self.output.over:
                return "output"
            if not self.result_open:
                return "closed"
            now = time.monotonic()
            if now - self._sampled >= PEAK_SAMPLE_SECONDS:
                self.sample_memory()
            remaining = deadline - now
            if remaining <= 0:
                return "deadline"
            for key, _ in self.sel.select(timeout=min(remaining, PEAK_SAMPLE_SECONDS)):
                if key.data == "stdin":
                    self._write()
                    continue
                try:
                    chunk = os.read(key.fd, _READ_CHUNK)
                except OSError:
                    chunk = b""
                if not chunk:
                    self.sel.unregister(key.fd)
                    if key.data == "result":
                        self.result_open = False
                    continue
                if key.data == "output":
                    self.output.add(chunk)
                    continue
                self.buf += chunk
                if self._lines(handle):
                    return "handled"
                if len(self.buf) > self.max_line:
                    self.violation = Violation(f"protocol: a message exceeded {self.max_line} bytes")

    def _lines(self, handle: Callable[[dict], bool]) -> bool:
        while self.violation is None:
            nl = self.buf.find(b"\n", self.scanned)
            if nl < 0:
                self.scanned = len(self.buf)
                return False
            line = bytes(self.buf[:nl])
            del self.buf[: nl + 1]
            self.scanned = 0
            if nl > self.max_line:
                self.violation = Violation(f"protocol: a message exceeded {self.max_line} bytes")
                return False
            try:
                msg = json.loads(line)
            except (ValueError, RecursionError):
                self.violation = Violation("protocol: a result line is not valid JSON")
                return False
            if not isinstance(msg, dict) or not isinstance(msg.get(Field.TYPE), str):
                self.violation = Violation("protocol: a result line is not a message")
                return False
            try:
                if handle(msg):
                    return True
            except Violation as v:
                self.violation = v
        return False

    def drain(self, deadline: float) -> None:
        """Read the rest of stdout/stderr (bounded by the output limit) until EOF or ``deadline``."""
        for key in list(self.sel.get_map().values()):
            if key.data in ("result", "stdin"):
                self.sel.unregister(key.fd)
        while self.sel.get_map() and not self.output.over:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return
            for key, _ in self.sel.select(timeout=min(remaining, 1.0)):
                try:
                    chunk = os.read(key.fd, _READ_CHUNK)
                except OSError:
                    chunk = b""
                if chunk:
                    self.output.add(chunk)
                else:
                    self.sel.unregister(key.fd)

    def sample_memory(self) -> None:
        """Read the child's peak resident memory (``VmHWM``; gone once it has exited)."""
        self._sampled = time.monotonic()
        try:
            with open(f"/proc/{self.pid}/status", "rb") as f:
                for line in f:
                    if line.startswith(b"VmHWM:"):
                        self.peak_rss = max(self.peak_rss, int(line.split()[1]) * 1024)
                        return
        except (OSError, ValueError, IndexError):
            pass

    # --------------------------------------------------------------- isolation
    def observe(self, applied: list) -> Isolation:
        """The isolation in force now (the child waits for ``GO``, no candidate code ran)."""
        names = tuple(str(x)[:40] for x in applied[:40] if isinstance(x, str))
        iso = observe_isolation(self.pid, self.chroot_dir, names)
        return Isolation(**{**iso.__dict__, "missing": missing_measures(self.limits, iso)})

    def go(self, applied: Any) -> Isolation:
        """Check the isolation and let the candidate run, or raise ``SandboxIsolationError``."""
        if not isinstance(applied, list):
            raise SandboxError("sandbox: the child's lockdown report is malformed")
        iso = self.isolation = self.observe(applied)
        self.sample_memory()  # the child's baseline: interpreter and data loaded
        if iso.missing and not self.limits.allow_weaker_isolation:
            raise SandboxIsolationError(iso, self.netns_note if "network_namespace" in iso.missing else "")
        self.send({Field.TYPE: Msg.GO})
        return iso

    def start_failure(self, stop: str) -> SandboxError:
        """The error for a child that never reached its lockdown (no candidate code ran)."""
        self.finish()
        tail = self.output.text().strip().splitlines()
        detail = tail[-1][:300] if tail else ""
        if stop == "deadline":
            return SandboxError(f"the sandbox child did not start within {self.limits.wall_seconds:g} s")
        return SandboxError(f"the sandbox child failed to start (status {self.status})" + (f": {detail}" if detail else ""))

    # ------------------------------------------------------------------- ending
    def finish(self) -> None:
        """Kill the child's process group, reap the child (status and rusage), close the pipes.
        ``killed`` says whether the child was still running (so its status is our SIGKILL)."""
        if self.status is not None:
            return
        self.sample_memory()
        try:
            pid, status, usage = os.wait4(self.pid, os.WNOHANG)
        except ChildProcessError:
            pid = 0
        self.killed = not pid
        for kill in (os.killpg, os.kill):
            try:
                kill(self.pid, signal.SIGKILL)
            except OSError:
                pass
        try:
            if not pid:
                _, status, usage = os.wait4(self.pid, 0)
            self.rusage = usage
            self.status = self.proc.returncode = os.waitstatus_to_exitcode(status)
        except ChildProcessError:
            self.proc.wait()
            self.status = self.proc.returncode
        self.sel.close()
        for f in (self.proc.stdin, self.proc.stdout, self.proc.stderr):
            try:
                f.close()
            except OSError:
                pass
        os.close(self.result_fd)

    def exit_gracefully(self, deadline: float) -> None:
        """Give a child that said its last word a moment to exit (keeping its output), then
        kill and reap it; a child that already exited keeps its own exit status."""
        self.drain(min(deadline, time.monotonic() + EXIT_GRACE_SECONDS))
        self.finish()

    @property
    def cpu_seconds(self) -> float:
        """CPU time of the child and of the episode forks it has reaped: from ``wait4`` once
        reaped, else from ``/proc`` (utime, stime, cutime, cstime)."""
        if self.rusage is not None:
            return self.rusage.ru_utime + self.rusage.ru_stime
        try:
            fields = Path(f"/proc/{self.pid}/stat").read_text().rsplit(")", 1)[1].split()
            return sum(int(f) for f in fields[11:15]) / os.sysconf("SC_CLK_TCK")
        except (OSError, ValueError, IndexError):
            return 0.0

    def stop_failure(self, stop: str, where: dict | None, wall: str) -> CandidateFailure | None:
        """The failure a ``pump`` stop reason means by itself (a violation, the output limit,
        the deadline, described by ``wall``), else None."""
        if stop == "violation":
            return CandidateFailure(FailureKind.FORBIDDEN, str(self.violation), where=self.violation.where or where)
        if stop == "output":
            return CandidateFailure(FailureKind.OUTPUT_LIMIT, f"the child wrote more than {self.limits.max_output_bytes} "
                                    "bytes to its standard output/error", where=where)
        if stop == "deadline":
            return CandidateFailure(FailureKind.TIMEOUT, f"did not {wall} within {self.limits.wall_seconds:g} s", where=where)
        return None

    def death(self, where: dict | None) -> CandidateFailure:
        """Why the (reaped) child stopped before finishing: its status, its CPU time from
        ``wait4`` and its peak memory as sampled (a memory death between two samples of a
        fast-growing child shows as a crash)."""
        lim = self.limits
        status, cpu, rss = self.status, self.cpu_seconds, self.peak_rss
        near_memory = rss >= MEMORY_NEAR_LIMIT * lim.memory_bytes
        memory = CandidateFailure(FailureKind.MEMORY, f"ran out of memory (limit {lim.memory_mb} MB, peak resident "
                                  f"{rss / 2**20:.0f} MB)", where=where)
        if status is None:
            return CandidateFailure(FailureKind.CRASH, "the child could not be reaped", where=where)
        if self.killed and status == -signal.SIGKILL and cpu < lim.cpu_rlimit and not near_memory:
            return CandidateFailure(FailureKind.EXIT, "the child closed its result channel before finishing",
                                    where=where)
        if status < 0:
            sig = -status
            if sig == signal.SIGXCPU or (sig == signal.SIGKILL and cpu >= lim.cpu_rlimit):
                return CandidateFailure(FailureKind.TIMEOUT, f"CPU time limit of {lim.cpu_seconds:g} s exceeded",
                                        where=where)
            if sig == signal.SIGXFSZ:
                return CandidateFailure(FailureKind.FORBIDDEN, "tried to write a file", where=where)
            if near_memory:
                return memory
            name = signal.Signals(sig).name if sig in signal.Signals._value2member_map_ else str(sig)
            return CandidateFailure(FailureKind.CRASH, f"the interpreter died with {name}", where=where)
        if status == TAMPERED_EXIT:
            return CandidateFailure(FailureKind.FORBIDDEN, "an episode could not start isolated from the others (the "
                                    "child's file descriptors or process count were tampered with)", where=where)
        if cpu >= lim.cpu_rlimit:
            return CandidateFailure(FailureKind.TIMEOUT, f"CPU time limit of {lim.cpu_seconds:g} s exceeded",
                                    where=where)
        if near_memory:
            return memory
        return CandidateFailure(FailureKind.EXIT, f"the process exited with status {status} before finishing "
                                "(os._exit or sys.exit)", where=where)


# ------------------------------------------------------------------ observation
_RLIMITS = (("rlimit_as", "RLIMIT_AS", "Max address space"), ("rlimit_cpu", "RLIMIT_CPU", "Max cpu time"),
            ("rlimit_fsize", "RLIMIT_FSIZE", "Max file size"), ("rlimit_nofile", "RLIMIT_NOFILE", "Max open files"),
            ("rlimit_nproc", "RLIMIT_NPROC", "Max processes"), ("rlimit_core", "RLIMIT_CORE", "Max core file size"))


def _soft_limits(pid: int) -> dict[str, int | None]:
    """Soft rlimits of ``pid`` (None: unlimited or unreadable), from ``/proc/<pid>/limits``
    (readable without privileges), else ``prlimit``."""
    out: dict[str, int | None] = {field: None for field, _, _ in _RLIMITS}
    try:
        text = Path(f"/proc/{pid}/limits").read_text()
    except OSError:
        for field, name, _ in _RLIMITS:
            try:
                soft, _ = resource.prlimit(pid, getattr(resource, name))
                out[field] = None if soft == resource.RLIM_INFINITY else int(soft)
            except (OSError, AttributeError, ValueError):
                pass
        return out
    for line in text.splitlines():
        for field, _, label in _RLIMITS:
            if line.startswith(label + "  "):
                soft = line[len(label):].split()[0]
                out[field] = int(soft) if soft.isdigit() else None
    return out


def observe_isolation(pid: int, chroot_dir: str | None, applied: tuple[str, ...]) -> Isolation:
    """Read process ``pid``'s isolation from ``/proc`` (``missing`` left empty); where this
    system has no ``/proc``, fall back to the child's own report ``applied``."""
    limits = _soft_limits(pid)
    hook = "audit_hook" in applied
    if not os.path.isdir("/proc/self/ns"):
        return Isolation("child", False, "chroot" in applied, None, "own_uid" in applied, audit_hook=hook,
                         missing=(), **limits)
    try:
        netns = os.readlink(f"/proc/{pid}/ns/net") != os.readlink("/proc/self/ns/net")
    except OSError:
        netns = False
    try:
        root = os.readlink(f"/proc/{pid}/root")
        chroot = chroot_dir is not None and root == os.path.realpath(chroot_dir)
    except OSError:
        chroot = False
    uid = None
    own_uid = False
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("Uid:"):
                uids = {int(x) for x in line.split()[1:]}
                uid = int(line.split()[2])
                own_uid = len(uids) == 1 and uid not in (0, os.getuid())
                break
    except (OSError, ValueError, IndexError):
        pass
    return Isolation("parent", netns, chroot, uid, own_uid, audit_hook=hook, missing=(), **limits)
