"""The sandbox child: runs one untrusted controller, in batch or session mode.

Started by the parent (``sandbox.child``) as ``python -s -P -B -m
mlflow_autotts.sandbox.worker RESULT_FD`` in a fresh interpreter (never forked from a
process that holds gold answers). It reads its input from stdin and writes
``protocol.Msg`` lines to ``RESULT_FD``; what the candidate prints goes to stdout, where
the parent counts it.

Order of events, which is the point of this module:

1. Read the input: the header, and the data (batch: the branches of every problem, never
   a gold answer or a file path; the MAC key first). Import everything the candidate may
   use (``policy.ALLOWED_IMPORTS``).
2. Batch: move the branches and the key into the oracle (``sandbox.oracle``), the only
   holder of branch data from then on; drop every other reference.
3. Lock down (``sandbox.lockdown``): kernel limits, chroot and uid, no signal handlers, no
   fresh modules, the audit hook. Report ``LOCKED`` and wait for the parent's ``GO``: the
   parent reads the isolation from ``/proc`` while no candidate code has run yet.
4. Compile and execute the candidate source with the import gate, build it per β, report
   ``READY``. This process is now the *zygote*: the candidate's fresh state.
5. Episodes run in forks of the zygote (``_episode_forker``). Batch: each fork plays a run
   of episodes in which no question comes twice (``episode_groups``), each episode with
   the candidate's module run again in a fresh namespace and its controller built anew,
   solved through the oracle and reported as a sealed ``EPISODE``. Session: a fork per
   ``SOLVE``, built at the β it names, each call forwarded to the parent. So an episode
   never meets state left by an episode of the same question, and what the candidate owns
   (module, classes, functions, instances, its builtins) is new for every episode. The
   zygote only forks, waits and exits: after the candidate ran it calls nothing but C
   functions bound before the candidate was imported, so the candidate cannot make it run
   code between forks; a fork closes every file descriptor the child did not hold at the
   lockdown and checks the ones it keeps, so no pipe joins two forks; and the kernel
   (``RLIMIT_NPROC`` = ``EPISODE_PROCESSES`` under the child's own uid) and the audit hook
   keep the candidate from forking itself.

Nothing this process says after step 3 is trusted: the candidate can rewrite the driver
below, write to the result descriptor, or exit. In batch mode it cannot forge a seal
without the key, which lives only in the oracle's frame; in session mode the parent
executes every episode call itself.
"""

from __future__ import annotations

import builtins
import gc
import importlib
import io
import json
import math
import os
import resource
import sys
import types
import warnings

from mlflow_autotts.controllers import base as _base
from mlflow_autotts.controllers import registry as _registry
from mlflow_autotts.controllers import voting as _voting
from mlflow_autotts.sandbox.lockdown import DENIED, ForbiddenImport, lock_down, make_hook, restricted_import
from mlflow_autotts.sandbox.oracle import SandboxEpisode, oracle
from mlflow_autotts.sandbox.policy import ALLOWED_IMPORTS
from mlflow_autotts.sandbox.protocol import (
    CANDIDATE_FILE, CANDIDATE_MODULE, KEY_BYTES, TAMPERED_EXIT, MAX_BETAS, MAX_CONFIG_CHARS, MAX_MESSAGE_CHARS, MAX_NAME_CHARS, MAX_TRACEBACK_CHARS, Data,
    FailureKind, Field, Header, Limit, Mode, Msg, Op, Where, dumps,
)

_SEAL = int(Op.SEAL)


class _Channel:
    """The result descriptor: one JSON line per message, written whole."""

    def __init__(self, fd: int):
        self.fd = fd

    def send(self, msg: dict) -> None:
        view = memoryview(dumps(msg))
        while view:
            n = os.write(self.fd, view)
            view = view[n:]


class _Reader:
    """Lines (and raw bytes) from stdin, without ``sys.stdin`` (which the candidate may replace)."""

    def __init__(self, fd: int):
        self.fd = fd
        self.buf = bytearray()
        self.scanned = 0

    def _fill(self) -> bool:
        chunk = os.read(self.fd, 1 << 20)
        if not chunk:
            return False
        self.buf += chunk
        return True

    def exact(self, n: int) -> bytes | None:
        while len(self.buf) < n:
            if not self._fill():
                return None
        out = bytes(self.buf[:n])
        del self.buf[:n]
        self.scanned = 0
        return out

    def line(self) -> bytes | None:
        while True:
            nl = self.buf.find(b"\n", self.scanned)
            if nl >= 0:
                out = bytes(self.buf[:nl])
                del self.buf[: nl + 1]
                self.scanned = 0
                return out
            self.scanned = len(self.buf)
            if not self._fill():
                return None


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
        return _safe_str(type(obj).__name__, MAX_NAME_CHARS)
    except BaseException:  # noqa: BLE001
        return "?"


def _safe_config(controller) -> dict:
    """``controller.config()`` without β if it is a small plain-JSON dict, else ``{}``."""
    try:
        cfg = controller.config()
        if type(cfg) is not dict:
            return {}
        cfg = {k: v for k, v in cfg.items() if k != "beta"}
        text = json.dumps(cfg, ensure_ascii=True, allow_nan=False)
        return json.loads(text) if len(text) <= MAX_CONFIG_CHARS and all(type(k) is str for k in cfg) else {}
    except BaseException:  # noqa: BLE001  (the candidate's config() may do anything)
        return {}


def _safe_beta(controller) -> float | None:
    try:
        b = controller.beta
        return float(b) if type(b) in (int, float) and math.isfinite(b) else None
    except BaseException:  # noqa: BLE001
        return None


def main(argv: list[str]) -> int:  # noqa: C901  (one linear protocol, kept in one place)
    chan = _Channel(int(argv[1]))
    reader = _Reader(0)
    first = reader.line()
    if first is None:
        return 3
    header = json.loads(first)
    mode = header[Header.MODE]
    key = None
    if mode == Mode.BATCH:
        key = reader.exact(KEY_BYTES)
        if key is None:
            return 3
    body = reader.line()
    if body is None:
        return 3
    data = json.loads(body)
    del first, body

    session = mode == Mode.SESSION
    run_batch = _run_batch  # bound now: the candidate may replace this module's attributes later
    limits = header[Header.LIMITS]
    source = header[Header.SOURCE]
    betas = header[Header.BETAS]
    params = header.get(Header.PARAMS) or {}
    max_answer = int(limits[Limit.MAX_ANSWER_CHARS])

    # the confidence table voting.beta_confidence uses, computed by the parent with scipy
    # (keeps numpy/scipy, and the ctypes they load, out of this process)
    _voting.install_confidence_table(data[Data.CONFIDENCE])
    # registration is meaningless in this throwaway process; allow re-registering names
    _registry.register_controller = lambda cls: cls
    for module_name in sorted(ALLOWED_IMPORTS):
        importlib.import_module(module_name)
    from mlflow_autotts.controllers.loading import pick_controller_class
    from mlflow_autotts.errors import ControllerError

    viol: list[str] = []
    window = [False, False]  # traceback frames readable; the driver forking
    send = None
    meta = None
    groups: tuple = ()
    n_seeds = 0
    if mode == Mode.BATCH:
        n_seeds = int(header[Header.N_SEEDS])
        datasets = data[Data.DATASETS]
        meta = [[(pr[Data.QUESTION], len(pr[Data.BRANCH_TOKENS]), pr[Data.INTERVAL], bool(pr.get(Data.SIGNALS)))
                 for pr in ds] for ds in datasets]
        groups = episode_groups([[m[0] for m in ds] for ds in meta], min(len(betas), MAX_BETAS), n_seeds)
        orders = {int(n): v for n, v in data[Data.ORDERS].items()}
        trace_cap = header.get(Header.FULL_ACTIONS)
        gen = oracle(datasets, orders, len(betas), n_seeds, key, trace_cap, viol)
        next(gen)
        send = gen.send
        del datasets, orders, gen
    del data, key

    # the episode forks' "finished" flag, and the descriptors a fork may keep (checked in each)
    flag_r, flag_w = os.pipe()
    os.set_blocking(flag_r, False)
    keep = (0, 1, 2, chan.fd, flag_w)
    fd_ids = tuple((fd, _fd_id(fd)) for fd in keep)

    warnings.simplefilter("ignore")  # showing a warning would read source files
    # what the candidate prints goes straight to the stdout pipe, where the parent counts it
    out = io.TextIOWrapper(io.BufferedWriter(io.FileIO(1, "w", closefd=False)), encoding="utf-8",
                           errors="replace", line_buffering=True)
    flush_out = out.flush
    sys.stdout = sys.stderr = out
    sys.stdin = None
    applied = lock_down(limits, header.get(Header.CHROOT))
    gc_disable, gc_enable, gc_isenabled = gc.disable, gc.enable, gc.isenabled
    exc_info = sys.exc_info
    hook = make_hook(viol, window)
    sys.addaudithook(hook)
    applied.append("audit_hook")
    del hook
    fork_episode, scrub = _episode_forker(window, keep, fd_ids, flag_r)
    chan.send({Field.TYPE: Msg.LOCKED, Field.APPLIED: applied})
    go = reader.line()
    if go is None or json.loads(go).get(Field.TYPE) != Msg.GO:
        os._exit(0)
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
        lines = []
        for filename, lineno, func in rows[-12:]:
            filename, func = _safe_str(filename, MAX_NAME_CHARS), _safe_str(func, MAX_NAME_CHARS)
            if filename.endswith(("sandbox/worker.py", "sandbox/oracle.py")):
                continue
            lines.append(f'  File "{filename}", line {lineno}, in {func}')
            if filename == CANDIDATE_FILE and 0 < lineno <= len(source_lines):
                lines.append("    " + source_lines[lineno - 1].strip()[:300])
        return "\n".join(lines)

    def flush() -> None:
        try:
            flush_out()
        except BaseException:  # noqa: BLE001  (the candidate may have closed it)
            pass

    def fail(kind: str, message: str, tb: str = "", where: dict | None = None) -> None:
        if viol and kind != FailureKind.FORBIDDEN:
            kind, message = FailureKind.FORBIDDEN, f"{viol[0]} is not allowed in controller code ({message})"
        flush()
        chan.send({Field.TYPE: Msg.FAIL, Field.KIND: kind, Field.MESSAGE: message[:MAX_MESSAGE_CHARS],
                   Field.TRACEBACK: tb[:MAX_TRACEBACK_CHARS], Field.WHERE: where})
        os._exit(0)

    def classify(exc: BaseException, tb, what: str, where: dict | None) -> None:
        name = _type_name(exc)
        text = f"{what} raised {name}: {_safe_str(exc)}"
        excerpt = traceback_excerpt(tb)
        if viol or isinstance(exc, DENIED):
            fail(FailureKind.FORBIDDEN, text, excerpt, where)
        if isinstance(exc, MemoryError):
            fail(FailureKind.MEMORY, f"{what} ran out of memory (limit {limits[Limit.MEMORY_MB]} MB)", excerpt, where)
        if isinstance(exc, SystemExit):
            fail(FailureKind.EXIT, f"{what} called sys.exit({_safe_str(exc.code, MAX_NAME_CHARS)})", excerpt, where)
        fail(FailureKind.EXCEPTION, text, excerpt, where)

    def check_answer(answer, where: dict | None) -> None:
        if viol:
            fail(FailureKind.FORBIDDEN, f"{viol[0]} is not allowed in controller code (attempted and denied)", "",
                 where)
        if answer is not None and type(answer) is not str:
            fail(FailureKind.BAD_RETURN, f"solve() returned {_type_name(answer)}, expected str or None: "
                 f"{_safe_str(answer, MAX_NAME_CHARS)}", "", where)
        if answer is not None and len(answer) > max_answer:
            fail(FailureKind.BAD_RETURN, f"solve() returned a string of {len(answer)} characters "
                 f"(at most {max_answer})", "", where)

    # ---- import the candidate
    restricted = dict(vars(builtins))
    restricted["__import__"] = restricted_import(builtins.__import__)
    module = types.ModuleType(CANDIDATE_MODULE)
    module.__dict__["__builtins__"] = restricted
    module.__dict__["__file__"] = CANDIDATE_FILE
    sys.modules[CANDIDATE_MODULE] = module
    try:
        code = compile(source, CANDIDATE_FILE, "exec", dont_inherit=True)
    except SyntaxError as exc:
        line = (exc.text or "").strip()
        fail(FailureKind.IMPORT_ERROR, f"syntax error at line {exc.lineno}: {exc.msg}"
             + (f": {line[:300]}" if line else ""))
    except (ValueError, MemoryError, RecursionError) as exc:
        fail(FailureKind.IMPORT_ERROR, f"cannot compile the source: {_type_name(exc)}: {_safe_str(exc)}")
    try:
        exec(code, module.__dict__)
    except BaseException as exc:  # noqa: BLE001
        tb = exc_info()[2]
        if isinstance(exc, ImportError) and not isinstance(exc, ForbiddenImport) and not viol:
            fail(FailureKind.IMPORT_ERROR, f"importing the source raised {_type_name(exc)}: {_safe_str(exc)}",
                 traceback_excerpt(tb))
        classify(exc, tb, "importing the source", None)
    try:
        cls = pick_controller_class(module, header.get(Header.CLASS_NAME), "candidate source")
    except ControllerError as exc:
        fail(FailureKind.IMPORT_ERROR, _safe_str(exc))
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
    built = []
    configs = []
    build_args = []  # per β, the keyword arguments its (checked) build took: an episode rebuilds with them
    for bi, beta in enumerate(betas[:MAX_BETAS]):
        where = {Where.BETA: bi}
        try:
            controller = _base.build_controller(cls, beta, params)
            build_args.append({**params, **({} if beta is None else {"beta": _base.check_beta(beta)})})
            built.append(_safe_beta(controller))
            configs.append(_safe_config(controller))
        except ControllerError as exc:
            fail(FailureKind.EXCEPTION, _safe_str(exc), "", where)
        except BaseException as exc:  # noqa: BLE001
            classify(exc, exc_info()[2], f"building the controller at beta={beta}", where)
    chan.send({Field.TYPE: Msg.READY, Field.NAME: name[:MAX_NAME_CHARS], Field.CLASS: cls_name[:MAX_NAME_CHARS],
               Field.USES_BETA: uses_beta, Field.BETAS: built, Field.CONFIGS: configs})

    if session:
        def one_solve() -> None:
            _solve_request(chan, reader, cls, params, betas[0], classify, check_answer, flush, exc_info)
            _flag(flag_w)

        while True:
            fork_episode(one_solve)  # returns only when the fork answered: then the next request

    # ---- batch: score every episode; a fork per run of distinct questions, a fresh module per episode
    sealed_seq = [0]
    class_wanted = header.get(Header.CLASS_NAME)

    def fresh_controller(bi: int, where: dict):
        """The candidate built anew for one episode: its module body run again in a new
        namespace with its own builtins, so nothing it owns survives the episode before."""
        fresh = types.ModuleType(CANDIDATE_MODULE)
        fresh.__dict__["__builtins__"] = dict(restricted)
        fresh.__dict__["__file__"] = CANDIDATE_FILE
        sys.modules[CANDIDATE_MODULE] = fresh
        try:
            exec(code, fresh.__dict__)
            return pick_controller_class(fresh, class_wanted, "candidate source")(**build_args[bi])
        except ControllerError as exc:
            fail(FailureKind.EXCEPTION, _safe_str(exc), "", where)
        except BaseException as exc:  # noqa: BLE001
            classify(exc, exc_info()[2], "importing and building the controller", where)

    def one_episode(bi: int, di: int, si: int, pi: int) -> None:
        question, n, interval, has_sig = meta[di][pi]
        where = {Where.BETA: bi, Where.DATASET: di, Where.SHUFFLE: si, Where.PROBLEM: pi}
        controller = fresh_controller(bi, where)
        episode = SandboxEpisode(send, question, n, interval, has_sig)
        try:
            answer = controller.solve(episode)
        except BaseException as exc:  # noqa: BLE001
            classify(exc, exc_info()[2], "solve()", where)
        check_answer(answer, where)
        try:
            sealed = send(_SEAL)
        except BaseException:  # noqa: BLE001  (the candidate closed or broke the oracle)
            sealed = None
        if type(sealed) is not tuple or sealed[0] != sealed_seq[0]:
            fail(FailureKind.FORBIDDEN, "the episode sequence was tampered with", "", where)
        sealed_seq[0] += 1
        flush()
        chan.send({Field.TYPE: Msg.EPISODE, Field.BETA_INDEX: bi, Field.DATASET_INDEX: di, Field.SHUFFLE_INDEX: si,
                   Field.PROBLEM_INDEX: pi, Field.ANSWER_GIVEN: answer, Field.VIOLATIONS: sealed[1],
                   Field.SUMMARY: sealed[2], Field.MAC: sealed[3]})

    def one_group(group: tuple) -> None:
        for bi, di, si, pi in group:
            scrub()  # no descriptor an earlier episode opened reaches this one
            one_episode(bi, di, si, pi)
        _flag(flag_w)

    run_batch(fork_episode, one_group, send, sealed_seq, groups)
    flush()
    chan.send({Field.TYPE: Msg.DONE})
    os._exit(0)


def episode_groups(questions: list[list[str]], n_betas: int, n_seeds: int) -> tuple[tuple[tuple[int, ...], ...], ...]:
    """Every episode (β, dataset, shuffle, problem) in scoring order, cut into runs in which no
    question text comes twice: one fork plays each run, so an episode never meets state
    left by an episode of the same question (another shuffle, β or dataset of it)."""
    groups, group, seen = [], [], set()
    for bi in range(n_betas):
        for di, texts in enumerate(questions):
            for si in range(n_seeds):
                for pi, text in enumerate(texts):
                    if text in seen:
                        groups.append(tuple(group))
                        group, seen = [], set()
                    group.append((bi, di, si, pi))
                    seen.add(text)
    if group:
        groups.append(tuple(group))
    return tuple(groups)


def _fd_id(fd: int) -> tuple[int, int, int]:
    st = os.fstat(fd)
    return st.st_dev, st.st_ino, st.st_mode


def _flag(fd: int) -> None:
    """Tell the zygote this fork finished its episode and said so to the parent."""
    os.write(fd, b"\x01")


def _episode_forker(window: list, keep: tuple, fd_ids: tuple, flag_r: int, *, _fork=os.fork, _wait=os.waitpid,
                    _read=os.read, _exit=os._exit, _kill=os.kill, _getpid=os.getpid, _close=os.closerange,
                    _fstat=os.fstat, _to_code=os.waitstatus_to_exitcode, _again=BlockingIOError, _oserror=OSError,
                    _freeze=gc.freeze):
    """``fork_episode(run)``: run ``run()`` in a fork of this process; return once the fork
    has exited after flagging that it finished (and ``scrub()``, which a fork also runs
    between the episodes it plays). Otherwise (the candidate exited, crashed or
    was killed in the fork) this process ends the same way, so the parent sees that death.

    Made before any candidate code runs: everything it calls is a C function bound here, so
    a candidate that replaced module attributes or builtins cannot run code in this process
    between episodes. In the fork, every descriptor outside ``keep`` is closed and the kept
    ones must be the files they were at the lockdown, before the candidate runs again."""
    top = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    top = 1024 if top < 0 or top > 1024 else top
    gaps = []
    lo = 0
    for fd in sorted(keep):
        if fd > lo:
            gaps.append((lo, fd))
        lo = fd + 1
    gaps.append((lo, top))
    gaps = tuple(gaps)

    def scrub() -> None:
        """Close every descriptor outside ``keep``; end the process if a kept one changed."""
        for lo, hi in gaps:
            _close(lo, hi)
        for fd, ident in fd_ids:
            try:
                st = _fstat(fd)
            except _oserror:
                _exit(TAMPERED_EXIT)
            if (st.st_dev, st.st_ino, st.st_mode) != ident:
                _exit(TAMPERED_EXIT)

    def fork_episode(run) -> None:
        _freeze()  # the zygote's objects stay out of the forks' collections (no copy-on-write)
        window[1] = True
        try:
            pid = _fork()
        except _oserror:  # the candidate holds the one process its uid may add
            _exit(TAMPERED_EXIT)
        window[1] = False
        if pid == 0:
            try:
                scrub()
                run()
            finally:  # a fork never returns into the zygote's loop, whatever the candidate raised
                _exit(0)
        _, status = _wait(pid, 0)
        flagged = False
        while True:
            try:
                chunk = _read(flag_r, 4096)
            except _again:
                break
            if not chunk:
                break
            flagged = True
        if flagged:
            return
        code = _to_code(status)
        if code < 0:  # die of the same signal (a CPU limit, a crash), as the parent expects
            window[1] = True
            _kill(_getpid(), -code)
        _exit(code if code > 0 else 0)

    return fork_episode, scrub


def _run_batch(fork_episode, one_group, send, sealed_seq, groups: tuple, *, _range=range, _len=len,
               _seal=_SEAL) -> None:
    """Each group of episodes in a fork, in order; this process then advances its own oracle
    past the episodes the fork played (sealing them unplayed), so the next fork starts at the
    next one. Bound before the candidate runs (see ``_episode_forker``)."""
    for group in groups:
        fork_episode(lambda: one_group(group))
        for _ in _range(_len(group)):
            send(_seal)
        sealed_seq[0] += _len(group)


def _solve_request(chan: _Channel, reader: _Reader, cls, params: dict, default_beta, classify, check_answer, flush,
                   exc_info) -> None:
    """Session mode, in an episode's fork: read one ``SOLVE``, build the controller at its β,
    solve it with every call forwarded to the parent, send the ``ANSWER``. The parent closing
    stdin ends the session (this fork exits without flagging, and so does the zygote)."""
    loads = json.loads
    probe_new = int(Op.PROBE_NEW)

    def call(op):
        """Forward one episode operation to the parent and return its answer."""
        chan.send({Field.TYPE: Msg.CALL, Field.OP: op})
        line = reader.line()
        if line is None:
            os._exit(0)
        reply = loads(line)
        if Field.ERROR in reply:
            raise ValueError(reply[Field.ERROR])
        value = reply[Field.VALUE]
        if type(value) is list and (op >= 0 or op == probe_new):
            return tuple(value)
        return value

    line = reader.line()
    if line is None:
        os._exit(0)
    msg = loads(line)
    if msg.get(Field.TYPE) != Msg.SOLVE:
        os._exit(0)
    beta = msg.get(Field.BETA, default_beta)
    try:
        controller = _base.build_controller(cls, beta, params)
    except BaseException as exc:  # noqa: BLE001
        classify(exc, exc_info()[2], f"building the controller at beta={beta}", None)
    episode = SandboxEpisode(call, msg[Field.QUESTION], msg[Field.MAX_BRANCHES], msg[Field.INTERVAL_TOKENS],
                             msg[Field.HAS_SIGNALS])
    try:
        answer = controller.solve(episode)
    except BaseException as exc:  # noqa: BLE001
        classify(exc, exc_info()[2], "solve()", None)
    check_answer(answer, None)
    flush()
    chan.send({Field.TYPE: Msg.ANSWER, Field.ANSWER: answer})


if __name__ == "__main__":
    sys.exit(main(sys.argv))
