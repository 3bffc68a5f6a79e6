"""The sandbox child: scores one untrusted controller on branches it cannot peek at.

Started by ``mlflow_autotts.sandbox.parent`` as ``python -s -P -m
mlflow_autotts.sandbox.worker RESULT_FD`` in a fresh interpreter (never forked from a
process that holds gold answers). It reads, from stdin, a 32-byte MAC key and then one JSON
message: a header line (source, class name, β values, limits) and the branches of every
problem (question, interval, probe and final answers, token counts, optional signals; never
a gold answer, never a file path). It writes JSON lines to ``RESULT_FD``.

Order of events, which is the point of this module:

1. Import everything the candidate may use (the import allowlist), read the message.
2. Move the branches and the key into the *oracle*, a generator that is the only holder of
   the branch data from then on (see ``_oracle``); drop every other reference.
3. Lock down: resource limits (address space, CPU, no new processes, no file writes, few
   descriptors, no core dumps), and when running as root a chroot into an empty directory
   and a switch to an unprivileged per-process uid; remove ``_signal``'s handler functions
   and ``_imp``'s module constructors; redirect ``sys.stdout``/``sys.stderr`` into a bounded
   buffer; install the PEP 578 audit hook (``_make_hook``).
4. Compile and execute the candidate source with an import allowlist, build it per β, and
   solve every episode through ``SandboxEpisode``, a thin proxy onto the oracle.

Why a generator: a controller runs in this very interpreter, and Python has no private
attributes, so an episode object holding the branches would hand them over
(``episode._final``). A suspended generator's locals are reachable only through
``gi_frame``, frame objects (``sys._getframe``, ``tb_frame``, trace and signal handlers) or
``gc.get_referents``; the audit hook denies the first ones, ``_signal`` and
``sys.settrace`` are gone or denied, and ``gc`` introspection is denied. The oracle binds
every builtin it calls as a local before the candidate is imported, checks that indices are
exact ``int``, and never calls an object the candidate made, so monkeypatching builtins or
modules cannot run candidate code inside it.

What the oracle reports: when an episode ends it seals, with a keyed BLAKE2b MAC, the
episode's sequence number, the number of forbidden operations the audit hook has seen so
far, and a per-branch step summary (0 for a branch read whole, else the number of charged
steps). Costs are order-independent per branch, so this summary fixes tokens, branches
opened, intervals and the set of revealed answers; the parent recomputes all of them and
checks the MAC. Nothing else this process says is trusted: the candidate can rewrite the
driver below, write to the result descriptor, or exit, but it cannot forge a seal without
the key, which lives only in the oracle's frame.
"""

from __future__ import annotations

import array
import builtins
import gc
import hashlib
import importlib
import json
import math
import operator
import os
import resource
import sys
import types
import warnings

from mlflow_autotts.controllers import base as _base
from mlflow_autotts.controllers import registry as _registry
from mlflow_autotts.controllers import voting as _voting

KEY_BYTES = 32
CANDIDATE_MODULE = "autotts_candidate"
CANDIDATE_FILE = "<candidate>"

ALLOWED_IMPORTS = frozenset({
    "__future__", "abc", "bisect", "collections", "collections.abc", "copy", "dataclasses",
    "decimal", "enum", "fractions", "functools", "heapq", "itertools", "math", "numbers",
    "operator", "random", "re", "statistics", "typing",
    "mlflow_autotts", "mlflow_autotts.controllers", "mlflow_autotts.controllers.base",
    "mlflow_autotts.controllers.voting", "mlflow_autotts.controllers.registry",
    "mlflow_autotts.controllers.cmc", "mlflow_autotts.controllers.baselines",
    "mlflow_autotts.controllers.parallel_probe", "mlflow_autotts.errors",
})
"""Modules controller code may import; all are loaded before the lockdown, so importing
them later only reads ``sys.modules`` and never touches the file system."""

# Audit events a controller may raise after the lockdown. Everything else is denied and
# counted as a forbidden operation, except ``sys._getframe`` which is denied with a
# ValueError (the stdlib's namedtuple/TypeVar/Enum fall back gracefully on it) and only
# counts when that error escapes the controller.
_ALLOWED_EVENTS = frozenset({
    "exec", "compile", "builtins.id", "time.sleep", "array.__new__", "sys.unraisablehook",
    "object.__getattr__", "object.__setattr__", "object.__delattr__",
})
_FRAME_ATTRS = frozenset({"tb_frame", "gi_frame", "cr_frame", "ag_frame"})
_ERRORS = {1: "no unopened branch left", 3: "branch index must be an int"}

# The exceptions the hook raises. They subclass the errors callers already expect
# (OSError for files and sockets, ImportError for imports, ValueError for frames).


class ForbiddenOperation(PermissionError):
    """A denied operation: files, processes, sockets, introspection of other objects' frames."""


class ForbiddenImport(ImportError):
    """An import outside the allowlist."""


class ForbiddenFrameAccess(ValueError):
    """``sys._getframe`` in controller code."""


class OutputLimitExceeded(Exception):
    """The controller printed more than the sandbox allows."""


# ----------------------------------------------------------------------------- the oracle
def _resolve(datasets: list) -> list:
    """Per problem: (probe answers, offsets, probe counts, tokens, final answers, interval, signals)."""
    problems = []
    for ds in datasets:
        resolved = []
        for pr in ds:
            strings = pr["s"]
            offs = pr["o"]
            resolved.append(([strings[j] for j in pr["p"]], offs, [offs[b + 1] - offs[b] for b in range(len(offs) - 1)],
                             pr["t"], [strings[j] for j in pr["f"]], pr["iv"], pr.get("g") or None))
        problems.append(resolved)
    return problems


def _oracle(datasets, orders, betas_n, seeds_n, key, full, viol,
            _type=type, _int=int, _len=len, _range=range, _array=array.array,
            _mac=hashlib.blake2b, _list=list, _dict=dict):
    """The replay episodes of the whole run, as one generator (see the module docstring).

    Ops sent in (exact ints): ``i >= 0`` probe_more(i); -1 probe_new; -2 read a new branch
    whole; -3 tokens used; -4 branches opened; -5 intervals; -6 end the episode and seal it;
    ``<= -100`` signals of branch ``-op - 100``. Errors come back as small ints (1: no branch
    left, 2: branch not open, 3: bad op); answers as str or tuples. Nothing in the loop calls
    code that controller code could have replaced.
    """
    problems = _resolve(datasets)  # before any controller code runs
    del datasets
    seq = 0
    op = yield None
    for _b in _range(betas_n):
        for d in _range(_len(problems)):
            for s in _range(seeds_n):
                for probes, offs, nprobes, btok, finals, iv, sig in problems[d]:
                    order = orders[_len(btok)][s]
                    n = _len(order)
                    opened = []
                    taken = []
                    done = []
                    whole = []
                    log = []
                    tokens = 0
                    intervals = 0
                    while True:
                        if _type(op) is not _int:
                            out = 3
                        elif op >= 0:  # probe_more
                            if op < _len(opened):
                                b = opened[op]
                                if full:
                                    log.append(op * 3 + 1)
                                if done[op]:
                                    out = (finals[b], True)
                                else:
                                    t = taken[op]
                                    intervals += 1
                                    if t < nprobes[b]:
                                        taken[op] = t + 1
                                        tokens += iv
                                        out = (probes[offs[b] + t], False)
                                    else:
                                        rest = btok[b] - iv * t
                                        if rest > 0:
                                            tokens += rest
                                        done[op] = True
                                        out = (finals[b], True)
                            else:
                                out = 2
                        elif op == -1:  # probe_new
                            k = _len(opened)
                            if k >= n:
                                out = 1
                            else:
                                b = order[k]
                                opened.append(b)
                                whole.append(False)
                                intervals += 1
                                if full:
                                    log.append(k * 3)
                                if nprobes[b] > 0:
                                    taken.append(1)
                                    done.append(False)
                                    tokens += iv
                                    out = (probes[offs[b]], k, False)
                                else:
                                    taken.append(0)
                                    done.append(True)
                                    if btok[b] > 0:
                                        tokens += btok[b]
                                    out = (finals[b], k, True)
                        elif op == -2:  # read whole
                            k = _len(opened)
                            if k >= n:
                                out = 1
                            else:
                                b = order[k]
                                opened.append(b)
                                whole.append(True)
                                taken.append(nprobes[b])
                                done.append(True)
                                tokens += btok[b]
                                intervals += 1
                                if full:
                                    log.append(k * 3 + 2)
                                out = finals[b]
                        elif op == -3:
                            out = tokens
                        elif op == -4:
                            out = _len(opened)
                        elif op == -5:
                            out = intervals
                        elif op == -6:
                            break
                        elif op <= -100:
                            i = -op - 100
                            if sig is None:
                                out = 3
                            elif i < _len(opened):
                                lo = offs[opened[i]]
                                hi = lo + taken[i]
                                out = _dict((name, vals[lo:hi]) for name, vals in sig.items())
                            else:
                                out = 2
                        else:
                            out = 3
                        op = yield out
                    if full:
                        summary = log
                    else:
                        summary = [0 if whole[k] else taken[k] + done[k] for k in _range(_len(opened))]
                    nviol = _len(viol)
                    msg = _array("q", [seq, nviol, _len(summary)] + summary).tobytes()
                    mac = _mac(msg, key=key, digest_size=16).hexdigest()
                    op = yield (seq, nviol, _list(summary), mac)
                    seq += 1
    while True:  # the schedule is over: every further op is an error
        op = yield 3


class SandboxEpisode:
    """The episode a sandboxed controller sees: the DESIGN §3 API, forwarded to the oracle."""

    __slots__ = ("_send", "_question", "_n", "_interval", "_signals")

    def __init__(self, send, question: str, n: int, interval: int, has_signals: bool):
        self._send = send
        self._question = question
        self._n = n
        self._interval = interval
        self._signals = has_signals

    @property
    def question(self) -> str:
        return self._question

    @property
    def max_branches(self) -> int:
        return self._n

    @property
    def interval_tokens(self) -> int:
        return self._interval

    @property
    def tokens_used(self) -> int:
        return self._send(-3)

    @property
    def branches_opened(self) -> int:
        return self._send(-4)

    @property
    def intervals(self) -> int:
        return self._send(-5)

    @property
    def signals(self):
        if not self._signals:
            raise AttributeError("this episode's data carries no per-interval signals")
        return self._branch_signals

    def _branch_signals(self, i):
        out = self._send(-100 - _index(i))
        if type(out) is int:
            raise ValueError(f"branch {i} is not open")
        return out

    def probe_new(self):
        out = self._send(-1)
        if type(out) is int:
            raise ValueError(_ERRORS[out])
        return out

    def probe_more(self, i):
        out = self._send(i if type(i) is int and i >= 0 else _index(i))
        if type(out) is int:
            raise ValueError(_ERRORS.get(out) or f"branch {i} is not open")
        return out

    def get_new_branch_final_answer(self):
        out = self._send(-2)
        if type(out) is int:
            raise ValueError(_ERRORS[out])
        return out


def _index(i) -> int:
    """``i`` as an exact non-negative int, or ValueError (as ReplayEpisode._check_open)."""
    if isinstance(i, bool):
        raise ValueError("branch index must be an int, got bool")
    try:
        i = operator.index(i)
    except TypeError:
        raise ValueError(f"branch index must be an int, got {type(i).__name__}") from None
    i = int.__add__(0, i)
    if i < 0:
        raise ValueError(f"branch {i} is not open")
    return i


# ------------------------------------------------------------------------ the lockdown
def _make_hook(viol: list, window: list):
    """The audit hook. ``viol`` collects denied events (the oracle seals its length);
    ``window[0]`` lets the driver read traceback frames. Both are reachable only from this
    closure, the oracle's frame and ``main``'s frame."""
    allowed = _ALLOWED_EVENTS
    frame_attrs = _FRAME_ATTRS
    append = viol.append
    Forbidden, FImport, FFrame = ForbiddenOperation, ForbiddenImport, ForbiddenFrameAccess
    _len = len
    _type, _str, _int = type, str, int
    write_flags = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_APPEND | os.O_TRUNC
    roots = tuple({os.path.join(os.path.realpath(p), "") for p in (sys.prefix, sys.base_prefix, _package_root())})

    def quiet_open(args) -> bool:
        """Read-only opens of Python sources or ``<...>`` pseudo-files: what tracebacks,
        SyntaxError and unraisable-exception display do. Denied, but not held against the
        candidate."""
        if _len(args) < 3 or _type(args[0]) is not _str:
            return False
        path, mode, flags = args[0], args[1], args[2]
        if _type(mode) is _str:
            if "w" in mode or "a" in mode or "x" in mode or "+" in mode:
                return False
        elif _type(flags) is not _int or flags & write_flags:
            return False
        if path.startswith("<") and path.endswith(">"):
            return True
        return path.endswith((".py", ".pyc")) and path.startswith(roots) and ".." not in path

    def hook(event, args):
        if event == "open" and quiet_open(args):
            raise Forbidden("sandbox: opening files is not allowed in controller code")
        if event in allowed:
            # CPython names the sensitive attributes with exact str built from C strings;
            # anything else (e.g. a str subclass from controller code) is not one of them,
            # and is not compared here, so no controller code runs inside this hook
            name = args[1] if _len(args) > 1 else None
            if _type(name) is not _str:
                return
            if event == "object.__getattr__":
                if name in frame_attrs and not (window[0] and name == "tb_frame"):
                    append(event + ":" + name)
                    raise Forbidden(f"sandbox: reading {name} is not allowed in controller code")
            elif event == "object.__setattr__" and name == "__code__":
                append("object.__setattr__:__code__")
                raise Forbidden("sandbox: replacing __code__ is not allowed in controller code")
            return
        if event == "sys._getframe":
            raise FFrame("sandbox: sys._getframe is not allowed in controller code")
        append(event)
        if event == "import":
            raise FImport(f"sandbox: import of {args[0]!r} is not allowed in controller code")
        raise Forbidden(f"sandbox: {event} is not allowed in controller code")

    return hook


def _package_root() -> str:
    return os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _disabled(*_args, **_kwargs):
    raise ForbiddenImport("sandbox: creating modules is not allowed in controller code")


def _lock_down(limits: dict, chroot_dir: str | None) -> list[str]:
    """OS-level limits; returns the names of the measures that took effect."""
    applied = []

    def limit(which, value):
        try:
            resource.setrlimit(which, (value, value))
            return True
        except (ValueError, OSError):
            return False

    mem = int(limits["memory_mb"]) * 1024 * 1024
    if limit(resource.RLIMIT_AS, mem):
        applied.append("rlimit_as")
    cpu = max(1, int(math.ceil(limits["cpu_seconds"])))
    try:
        resource.setrlimit(resource.RLIMIT_CPU, (cpu, cpu + 2))  # SIGXCPU, then SIGKILL
        applied.append("rlimit_cpu")
    except (ValueError, OSError):
        pass
    if limit(resource.RLIMIT_FSIZE, 0):
        applied.append("rlimit_fsize")
    limit(resource.RLIMIT_CORE, 0)
    if limit(resource.RLIMIT_NOFILE, int(limits["max_open_files"])):
        applied.append("rlimit_nofile")
    for name in ("RLIMIT_MEMLOCK", "RLIMIT_MSGQUEUE"):
        if hasattr(resource, name):
            limit(getattr(resource, name), 0)
    if chroot_dir and os.geteuid() == 0:
        try:
            os.chroot(chroot_dir)
            os.chdir("/")
            applied.append("chroot")
            uid = 2_000_000_000 + os.getpid()  # one unprivileged uid per sandbox process
            os.setgroups([])
            os.setgid(uid)
            os.setuid(uid)
            applied.append("setuid")
        except OSError:
            pass
    if limit(resource.RLIMIT_NPROC, 0) and os.geteuid() != 0:  # root ignores RLIMIT_NPROC
        applied.append("rlimit_nproc")
    # no Python-level signal handlers (they receive the interrupted frame)
    sig = sys.modules.pop("_signal", None)
    if sig is not None:
        for name in ("signal", "setitimer", "alarm", "set_wakeup_fd", "siginterrupt", "pthread_kill",
                     "pthread_sigmask", "raise_signal", "sigwait", "sigwaitinfo", "sigtimedwait",
                     "pidfd_send_signal"):
            if hasattr(sig, name):
                delattr(sig, name)
        applied.append("no_signal_handlers")
    # no fresh builtin/extension modules (those bypass the "import" audit event)
    imp = sys.modules.get("_imp")
    if imp is not None:
        for name in ("create_builtin", "create_dynamic", "exec_builtin", "exec_dynamic"):
            if hasattr(imp, name):
                setattr(imp, name, _disabled)
    return applied


class _Capture:
    """``sys.stdout``/``sys.stderr`` of the controller: keeps a prefix, counts the rest."""

    __slots__ = ("limit", "keep", "count", "parts", "kept", "over")

    def __init__(self, limit: int, keep: int):
        self.limit, self.keep = limit, keep
        self.count = self.kept = 0
        self.parts: list[str] = []
        self.over = False

    def write(self, s):
        if type(s) is not str:
            raise TypeError(f"write() argument must be str, not {type(s).__name__}")
        n = len(s)
        self.count += n
        if self.kept < self.keep:
            part = s[: self.keep - self.kept]
            self.parts.append(part)
            self.kept += len(part)
        if self.count > self.limit:
            self.over = True
            raise OutputLimitExceeded(f"sandbox: controller output exceeded {self.limit} characters")
        return n

    def flush(self):
        pass

    def isatty(self):
        return False

    def text(self) -> str:
        return "".join(self.parts)


def _restricted_import(real_import):
    allowed = ALLOWED_IMPORTS
    modules = sys.modules

    def __import__(name, globals=None, locals=None, fromlist=(), level=0):
        if level != 0:
            raise ForbiddenImport("sandbox: relative imports are not allowed in controller code")
        if name not in allowed:
            raise ForbiddenImport(
                f"sandbox: import of {name!r} is not allowed in controller code; "
                f"allowed: {', '.join(sorted(m for m in allowed if not m.startswith('mlflow_autotts')))}, "
                "mlflow_autotts.controllers.{base,voting,registry,cmc,baselines,parallel_probe}")
        for item in fromlist or ():
            sub = f"{name}.{item}"
            if sub in modules and sub not in allowed:
                raise ForbiddenImport(f"sandbox: import of {sub!r} is not allowed in controller code")
        return real_import(name, globals, locals, fromlist, level)

    return __import__


# ---------------------------------------------------------------------------- driver
class _Channel:
    def __init__(self, fd: int):
        self.fd = fd

    def send(self, msg: dict) -> None:
        data = (json.dumps(msg, ensure_ascii=True, separators=(",", ":")) + "\n").encode("utf-8", "replace")
        view = memoryview(data)
        while view:
            n = os.write(self.fd, view)
            view = view[n:]


def _safe_str(obj, limit: int = 2000) -> str:
    try:
        s = str(obj)
        if type(s) is not str:
            s = "<unprintable>"
    except BaseException:  # noqa: BLE001  (the candidate's __str__ may do anything)
        s = "<unprintable>"
    return s if len(s) <= limit else s[:limit] + "…"


def _type_name(obj) -> str:
    try:
        return _safe_str(type(obj).__name__, 200)
    except BaseException:  # noqa: BLE001
        return "?"


def main(argv: list[str]) -> int:  # noqa: C901  (one linear protocol, kept in one place)
    chan = _Channel(int(argv[1]))
    key = b""
    while len(key) < KEY_BYTES:
        chunk = os.read(0, KEY_BYTES - len(key))
        if not chunk:
            return 3
        key += chunk
    chunks = []
    while True:
        chunk = os.read(0, 1 << 20)
        if not chunk:
            break
        chunks.append(chunk)
    raw = b"".join(chunks)
    del chunks, chunk
    head, _, body = raw.partition(b"\n")
    del raw
    header = json.loads(head)
    data = json.loads(body)
    del head, body

    limits = header["limits"]
    source = header["source"]
    betas = header["betas"]
    n_seeds = int(header["n_seeds"])
    params = header.get("params") or {}
    full = bool(header.get("full"))

    # the confidence table voting.beta_confidence uses, computed by the parent with scipy
    # (keeps numpy/scipy, and the ctypes they load, out of this process)
    _voting.install_confidence_table(data["conf"])
    # registration is meaningless in this throwaway process; allow re-registering names
    _registry.register_controller = lambda cls: cls
    for module_name in sorted(ALLOWED_IMPORTS):
        importlib.import_module(module_name)
    from mlflow_autotts.controllers.loading import pick_controller_class
    from mlflow_autotts.errors import ControllerError

    meta = [[(pr["q"], len(pr["t"]), pr["iv"], bool(pr.get("g"))) for pr in ds] for ds in data["datasets"]]
    orders = {int(n): v for n, v in data["orders"].items()}
    viol: list[str] = []
    window = [False]
    oracle = _oracle(data["datasets"], orders, len(betas), n_seeds, key, full, viol)
    next(oracle)
    send = oracle.send
    del data, orders, key, oracle

    warnings.simplefilter("ignore")  # showing a warning would read source files
    capture = _Capture(int(limits["max_output_bytes"]), int(limits["keep_output_bytes"]))
    sys.stdout = sys.stderr = capture
    sys.stdin = None
    isolation = _lock_down(limits, header.get("chroot"))
    gc_disable, gc_enable, gc_isenabled = gc.disable, gc.enable, gc.isenabled
    exc_info = sys.exc_info
    hook = _make_hook(viol, window)
    sys.addaudithook(hook)
    isolation.append("audit_hook")
    del hook
    source_lines = source.splitlines()

    def traceback_excerpt(tb) -> str:
        """file:line in function for each frame of ``tb``.

        Frames are readable (``tb_frame``) only inside the window, so no controller code
        may run there: no name is looked up in a module or in builtins (the controller could
        have replaced it), the collector is off (no ``__del__`` or gc callback) and nothing
        is freed (no weakref callback).
        """
        rows = []
        add = rows.append
        count = 0
        was_enabled = gc_isenabled()
        gc_disable()
        window[0] = True
        try:
            while tb is not None and count < 64:
                code = tb.tb_frame.f_code
                add((code.co_filename, tb.tb_lineno, code.co_name))
                tb = tb.tb_next
                count += 1
        finally:
            window[0] = False
            if was_enabled:
                gc_enable()
        out = []
        for filename, lineno, func in rows[-12:]:
            filename, func = _safe_str(filename, 200), _safe_str(func, 200)
            if filename.endswith("sandbox/worker.py"):
                continue
            out.append(f'  File "{filename}", line {lineno}, in {func}')
            if filename == CANDIDATE_FILE and 0 < lineno <= len(source_lines):
                out.append("    " + source_lines[lineno - 1].strip()[:300])
        return "\n".join(out)

    def fail(kind: str, message: str, tb: str = "", where: dict | None = None) -> None:
        if viol and kind != "forbidden":
            kind, message = "forbidden", f"{viol[0]} is not allowed in controller code ({message})"
        chan.send({"t": "fail", "kind": kind, "message": message, "traceback": tb, "where": where,
                   "output": capture.text(), "isolation": isolation})
        os._exit(0)

    def classify(exc: BaseException, tb, what: str, where: dict | None) -> None:
        name = _type_name(exc)
        text = f"{what} raised {name}: {_safe_str(exc)}"
        excerpt = traceback_excerpt(tb)
        if viol or isinstance(exc, (ForbiddenOperation, ForbiddenImport, ForbiddenFrameAccess)):
            fail("forbidden", text, excerpt, where)
        if capture.over or isinstance(exc, OutputLimitExceeded):
            fail("output_limit", f"{what} printed more than {capture.limit} characters", excerpt, where)
        if isinstance(exc, MemoryError):
            fail("memory", f"{what} ran out of memory (limit {limits['memory_mb']} MB)", excerpt, where)
        if isinstance(exc, SystemExit):
            fail("exit", f"{what} called sys.exit({_safe_str(exc.code, 200)})", excerpt, where)
        fail("exception", text, excerpt, where)

    # ---- import the candidate
    restricted = dict(vars(builtins))
    restricted["__import__"] = _restricted_import(builtins.__import__)
    module = types.ModuleType(CANDIDATE_MODULE)
    module.__dict__["__builtins__"] = restricted
    module.__dict__["__file__"] = CANDIDATE_FILE
    sys.modules[CANDIDATE_MODULE] = module
    try:
        code = compile(source, CANDIDATE_FILE, "exec", dont_inherit=True)
    except SyntaxError as exc:
        line = (exc.text or "").strip()
        fail("import_error", f"syntax error at line {exc.lineno}: {exc.msg}" + (f": {line[:300]}" if line else ""))
    except (ValueError, MemoryError, RecursionError) as exc:
        fail("import_error", f"cannot compile the source: {_type_name(exc)}: {_safe_str(exc)}")
    try:
        exec(code, module.__dict__)
    except BaseException as exc:  # noqa: BLE001
        tb = exc_info()[2]
        if isinstance(exc, ImportError) and not isinstance(exc, ForbiddenImport) and not viol:
            fail("import_error", f"importing the source raised {_type_name(exc)}: {_safe_str(exc)}",
                 traceback_excerpt(tb))
        classify(exc, tb, "importing the source", None)
    try:
        cls = pick_controller_class(module, header.get("class_name"), "candidate source")
    except ControllerError as exc:
        fail("import_error", _safe_str(exc))
    except BaseException as exc:  # noqa: BLE001
        classify(exc, exc_info()[2], "finding the controller class", None)
    try:
        name = getattr(cls, "name", "")
        name = name if type(name) is str else ""
        uses_beta = getattr(cls, "uses_beta", True)
        uses_beta = uses_beta if type(uses_beta) is bool else True
        cls_name = cls.__name__ if type(cls.__name__) is str else "?"
    except BaseException as exc:  # noqa: BLE001
        classify(exc, exc_info()[2], "reading the controller class", None)
    chan.send({"t": "ready", "name": name[:200], "cls": cls_name[:200], "uses_beta": uses_beta,
               "isolation": isolation})

    # ---- score
    max_answer = int(limits["max_answer_chars"])
    seq = 0
    for bi, beta in enumerate(betas):
        where = {"beta": bi}
        try:
            controller = _base.build_controller(cls, beta, params)
            solve = controller.solve
        except ControllerError as exc:
            fail("exception", _safe_str(exc), "", where)
        except BaseException as exc:  # noqa: BLE001
            classify(exc, exc_info()[2], f"building the controller at beta={beta}", where)
        for di, ds_meta in enumerate(meta):
            for si in range(n_seeds):
                answers, sums, macs, nviols = [], [], [], []
                for pi, (question, n, interval, has_sig) in enumerate(ds_meta):
                    episode = SandboxEpisode(send, question, n, interval, has_sig)
                    try:
                        answer = solve(episode)
                    except BaseException as exc:  # noqa: BLE001
                        classify(exc, exc_info()[2], "solve()",
                                 {"beta": bi, "dataset": di, "shuffle": si, "problem": pi})
                    where = {"beta": bi, "dataset": di, "shuffle": si, "problem": pi}
                    if viol:
                        fail("forbidden", f"{viol[0]} is not allowed in controller code (attempted and denied)",
                             "", where)
                    if capture.over:
                        fail("output_limit", f"solve() printed more than {capture.limit} characters", "", where)
                    if answer is not None and type(answer) is not str:
                        fail("bad_return", f"solve() returned {_type_name(answer)}, expected str or None: "
                             f"{_safe_str(answer, 200)}", "", where)
                    if answer is not None and len(answer) > max_answer:
                        fail("bad_return", f"solve() returned a string of {len(answer)} characters "
                             f"(at most {max_answer})", "", where)
                    try:
                        sealed = send(-6)
                    except BaseException:  # noqa: BLE001  (the candidate closed or broke the oracle)
                        sealed = None
                    if type(sealed) is not tuple or sealed[0] != seq:
                        fail("forbidden", "the episode sequence was tampered with", "", where)
                    seq += 1
                    answers.append(answer)
                    nviols.append(sealed[1])
                    sums.append(sealed[2])
                    macs.append(sealed[3])
                chan.send({"t": "block", "b": bi, "d": di, "s": si, "a": answers, "x": sums, "v": nviols, "m": macs})
    chan.send({"t": "done", "output": capture.text()})
    os._exit(0)


if __name__ == "__main__":
    sys.exit(main(sys.argv))
